#!/usr/bin/env bash
# Prints a directory holding kube-apiserver and etcd, building them first if needed.
#
# KUBEBUILDER_ASSETS (the envtest convention) wins when it holds both binaries.
# Otherwise they are built from the pinned Go modules in tools/controlplane/ into a
# cache outside the checkout, keyed by those pins, and reused on later runs.
set -euo pipefail

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
src="$root/tools/controlplane"
out=$(cache_dir controlplane-etcd "$src/etcd")
go_build "$src/etcd" . "$out/etcd"
apiserver=$(cache_dir controlplane-apiserver "$src/kube-apiserver")/kube-apiserver
go_build "$src/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$apiserver"
# One directory holding both, like envtest's assets directory.
ln -sf "$apiserver" "$out/kube-apiserver"
echo "$out"
