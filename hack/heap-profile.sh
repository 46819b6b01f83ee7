#!/usr/bin/env bash
# `make heap-profile`: where the operator's heap goes with 10,000 children cached. Builds the
# operator with dhat (profile `heap`: release, with symbols), runs the full preset's unthrottled
# cold start with it (the operator writes a profile on each SIGTERM: after the cold start, and
# after the restart), and groups the live bytes by function into bench/results/heap-10k.json.
# The run's timings are dhat's, not the operator's, so its bench results are deleted.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo build --locked --profile heap -p secretbundle-operator --features dhat-heap
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
SB_OPERATOR_BIN="$root/target/heap/secretbundle-operator" SB_HEAP_PROFILE="$out" \
  cargo run --release --locked -p secretbundle-tests --bin bench -- \
  full --only=cold_unthrottled --label=heap --repeats=1 >/dev/null
rm -f bench/results/full-heap.json bench/results/full-heap.md
# shellcheck disable=SC2046 # one argument per profile, oldest first
python3 hack/heap-summary.py 10000 $(ls -tr "$out"/dhat-heap-*.json) > bench/results/heap-10k.json
python3 - <<'PY'
import json
for p in json.load(open("bench/results/heap-10k.json"))["profiles"]:
    print(f"{p['live_bytes_per_child']:.0f} B live per child ({p['live_bytes']/2**20:.1f} MiB)")
    for r in p["by_function"][:12]:
        print(f"  {r['bytes_per_child']:8.1f} B/child  {r['function']}")
PY
