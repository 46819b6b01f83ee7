#!/usr/bin/env bash
# Prints a directory holding a previous release: `src/` (its source tree: chart, manifests, CRD)
# and `bin/secretbundle-operator`, building it first if needed.
#
#   hack/release.sh [VERSION]     VERSION as in RELEASES.md (default: the newest row)
#
# The source is that commit's tree (git archive: nothing is registered in the repository), built
# once into ~/.cache/secretbundle/releases/<commit>/ with its own target directory, at the lowest
# CPU priority. SB_RELEASE_PROFILE=release builds it optimised (default: dev, like the tests).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=${1:-}
# Rows of the releases table: | vX.Y.Z | <40 hex> | date | notes |
row=$(awk -F'|' -v v="$version" '
  { gsub(/ /, "", $2); gsub(/ /, "", $3) }
  $2 ~ /^v[0-9]/ && $3 ~ /^[0-9a-f]+$/ && length($3) == 40 {
    if (v == "" || $2 == v) { print $2, $3; exit } }' "$root/RELEASES.md")
if [[ -z "$row" ]]; then
  echo "release '${version:-newest}' is not in $root/RELEASES.md" >&2
  exit 1
fi
read -r version commit <<<"$row"
if ! git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "$version: commit $commit is not in this repository (fetch its history)" >&2
  exit 1
fi

profile=${SB_RELEASE_PROFILE:-dev}
dir="${XDG_CACHE_HOME:-$HOME/.cache}/secretbundle/releases/$commit"
bin="$dir/bin/$profile/secretbundle-operator"
if [[ ! -x "$bin" ]]; then
  echo "building $version ($commit, profile $profile) into $dir" >&2
  mkdir -p "$dir"
  if [[ ! -f "$dir/src/.complete" ]]; then
    rm -rf "$dir/src" && mkdir -p "$dir/src"
    git -C "$root" archive "$commit" | tar -x -C "$dir/src"
    touch "$dir/src/.complete"
  fi
  # That release's own toolchain pin, if it had one; the running toolchain otherwise.
  (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" CARGO_INCREMENTAL=0 \
    nice -n 19 cargo build --locked --profile "$profile" -p secretbundle-operator >&2)
  out=$([[ $profile == dev ]] && echo debug || echo "$profile")
  mkdir -p "$(dirname "$bin")"
  cp "$dir/target/$out/secretbundle-operator" "$bin.tmp" && mv "$bin.tmp" "$bin"
fi
echo "$dir"
