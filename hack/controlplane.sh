#!/usr/bin/env bash
# Prints a directory holding etcd, kube-apiserver and kube-controller-manager, building them first
# if needed.
#
# KUBEBUILDER_ASSETS (the envtest convention) wins for etcd and kube-apiserver when it holds both.
# envtest ships no kube-controller-manager, so that one is taken from there only if present and is
# otherwise built. Everything built comes from the pinned Go modules in tools/controlplane/, into a
# cache outside the checkout keyed by those pins, and is reused on later runs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
src="$root/tools/controlplane"
k8s=$(cache_dir controlplane-k8s "$src/kube-apiserver")

assets=${KUBEBUILDER_ASSETS:-}
if [[ -n "$assets" && -x "$assets/kube-apiserver" && -x "$assets/etcd" ]]; then
  if [[ -x "$assets/kube-controller-manager" ]]; then
    echo "$assets"
    exit 0
  fi
  # A directory of our own that links envtest's binaries beside the built controller manager.
  go_build "$src/kube-apiserver" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s/kube-controller-manager"
  out="$k8s/with-envtest-$(echo "$assets" | sha256sum | cut -c1-12)"
  mkdir -p "$out"
  ln -sf "$assets/etcd" "$out/etcd"
  ln -sf "$assets/kube-apiserver" "$out/kube-apiserver"
  ln -sf "$k8s/kube-controller-manager" "$out/kube-controller-manager"
  echo "$out"
  exit 0
fi

out=$(cache_dir controlplane-etcd "$src/etcd")
go_build "$src/etcd" . "$out/etcd"
# Both commands from one module: the second build reuses most of the first one's compiled packages.
go_build "$src/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$k8s/kube-apiserver"
go_build "$src/kube-apiserver" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s/kube-controller-manager"
# One directory holding all three, like envtest's assets directory.
ln -sf "$k8s/kube-apiserver" "$out/kube-apiserver"
ln -sf "$k8s/kube-controller-manager" "$out/kube-controller-manager"
echo "$out"
