#!/usr/bin/env bash
# Makes the toolchain rust-toolchain.toml pins available without a download: where rustup
# lacks it by that name but has a toolchain of exactly that release (say `stable` at 1.95.0),
# that one is linked under the pinned name (as `toolchains/<release>-<host>`). Any other mismatch is an error saying what to do.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pin=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")
[[ -n "$pin" ]] || { echo "no channel in $root/rust-toolchain.toml" >&2; exit 1; }
command -v rustup >/dev/null || exit 0 # plain cargo: it is what it is; `cargo --version` says
# Outside the checkout, so the pin itself does not make rustup resolve (and fetch) it.
cd /
installed=$(rustup toolchain list | awk '{print $1}')
if grep -qx "$pin\(-.*\)\?" <<<"$installed"; then
  exit 0
fi
for t in $installed; do
  if rustup run "$t" rustc -vV 2>/dev/null | grep -qx "release: $pin"; then
    dir=$(rustup run "$t" rustc --print sysroot)
    host=$(rustup run "$t" rustc -vV | sed -n 's/^host: //p')
    # `rustup toolchain link` refuses release names, so the link is made the way rustup
    # keeps toolchains: a directory (here a symlink) named <release>-<host>.
    link="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pin-$host"
    echo "linking toolchain $t (rustc $pin) as $pin: $link" >&2
    ln -sfn "$dir" "$link"
    exit 0
  fi
done
echo "rust-toolchain.toml pins Rust $pin, and no installed toolchain is that release" >&2
echo "installed: $(tr '\n' ' ' <<<"$installed"); run 'rustup toolchain install $pin'" >&2
exit 1
