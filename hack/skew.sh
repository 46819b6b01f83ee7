#!/usr/bin/env bash
# Usage: hack/skew.sh [MINOR...]   (default: every pinned minor, oldest first)
#
# The version matrix: for each Kubernetes minor, builds its control plane from the pins in
# tools/controlplane/<minor>/ and runs the matrix's suites on it (tests/src/bin/skew.rs does the
# running and writes bench/results/skew.json and docs/compatibility.md). Refuses an unpinned
# minor before building anything.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mapfile -t pinned < <(hack/controlplane.sh --list)
for minor in "$@"; do
  if ! printf '%s\n' "${pinned[@]}" | grep -qxF -- "$minor"; then
    echo "hack/skew.sh: Kubernetes $minor is not pinned; pinned minors: ${pinned[*]}" >&2
    exit 2
  fi
done
# The end-to-end suite runs the real ESO controller; build it once, on the machine's spare time.
nice -n 19 hack/eso.sh >/dev/null
# Built, then run directly: under `cargo run` the suites' own cargo would inherit its environment
# and rebuild the dependencies once more.
cargo build --quiet --locked -p secretbundle-tests --bin skew
exec "${CARGO_TARGET_DIR:-$root/target}/debug/skew" "$@"
