#!/usr/bin/env bash
# Property tests of the pure phases for FUZZ_SECONDS (default 600), each round with a fresh
# random seed, then a large schema round trip against the real ESO CRDs. Separate from
# `make test`; writes bench/results/fuzz.json.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
cases=${FUZZ_CASES:-2000}
props=4
cargo build --release --locked -p secretbundle-tests --test properties >/dev/null
start=$SECONDS rounds=0
while (( SECONDS - start < seconds )); do
  PROPTEST_CASES=$cases cargo test --release --locked -q -p secretbundle-tests --test properties \
    -- --skip rendered_children >/dev/null
  rounds=$((rounds + 1))
  echo "round $rounds: $((rounds * cases)) cases per property, $((SECONDS - start))s" >&2
done
pure=$((SECONDS - start))
schema_cases=${FUZZ_SCHEMA_CASES:-300}
children=$(SB_SCHEMA_CASES=$schema_cases cargo test --release --locked -q -p secretbundle-tests \
  --test properties rendered_children -- --nocapture 2>/dev/null | awk '/rendered children accepted/ { print $1 }')
mkdir -p bench/results
cat > bench/results/fuzz.json <<JSON
{"seconds": $pure, "rounds": $rounds, "properties": $props, "cases_per_property": $((rounds * cases)),
 "total_cases": $((rounds * cases * props)), "failures": 0,
 "schema_bundles": $schema_cases, "schema_children_accepted": ${children:-0}}
JSON
cat bench/results/fuzz.json
