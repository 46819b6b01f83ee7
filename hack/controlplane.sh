#!/usr/bin/env bash
# Usage: hack/controlplane.sh [MINOR]   (e.g. 1.34; default: the newest pinned minor)
#
# Prints a directory holding etcd, kube-apiserver and kube-controller-manager of that Kubernetes
# minor, building them first if needed. Each supported minor has its pins in
# tools/controlplane/<minor>/: kubernetes/ (k8s.io/kubernetes) and etcd/ (the etcd that minor
# ships with). Built binaries go to a cache outside the checkout keyed by those pins and are reused.
#
# KUBEBUILDER_ASSETS (the envtest convention) wins for etcd and kube-apiserver when it holds both
# and no minor is asked for (envtest's assets carry their own version, so `make skew` must not
# pick them up). envtest ships no kube-controller-manager, so that one is taken from there only if
# present and is otherwise built from the newest minor's pins.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
pins="$root/tools/controlplane"

# The pinned minors, oldest first.
mapfile -t minors < <(cd "$pins" && ls -d [0-9]*.[0-9]* 2>/dev/null | sort -t. -k1,1n -k2,2n)
if [[ ${#minors[@]} -eq 0 ]]; then
  echo "hack/controlplane.sh: no pinned minors under $pins" >&2
  exit 1
fi
newest=${minors[-1]}

if [[ $# -gt 1 ]]; then
  echo "usage: hack/controlplane.sh [MINOR]   (pinned: ${minors[*]})" >&2
  exit 2
fi
minor=${1:-}
if [[ "$minor" == "--list" ]]; then
  printf '%s\n' "${minors[@]}"
  exit 0
fi

assets=${KUBEBUILDER_ASSETS:-}
if [[ -z "$minor" && -n "$assets" && -x "$assets/kube-apiserver" && -x "$assets/etcd" ]]; then
  if [[ -x "$assets/kube-controller-manager" ]]; then
    echo "$assets"
    exit 0
  fi
  # A directory of our own that links envtest's binaries beside the built controller manager.
  k8s=$(cache_dir controlplane-k8s "$pins/$newest/kubernetes")
  go_build "$pins/$newest/kubernetes" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s/kube-controller-manager"
  out="$k8s/with-envtest-$(echo "$assets" | sha256sum | cut -c1-12)"
  mkdir -p "$out"
  ln -sf "$assets/etcd" "$out/etcd"
  ln -sf "$assets/kube-apiserver" "$out/kube-apiserver"
  ln -sf "$k8s/kube-controller-manager" "$out/kube-controller-manager"
  echo "$out"
  exit 0
fi

minor=${minor:-$newest}
if [[ ! -f "$pins/$minor/kubernetes/go.mod" || ! -f "$pins/$minor/etcd/go.mod" ]]; then
  echo "hack/controlplane.sh: Kubernetes $minor is not pinned; pinned minors: ${minors[*]}" \
    "(add tools/controlplane/$minor/{kubernetes,etcd} to support it)" >&2
  exit 2
fi

# A module build leaves the version at v0.0.0-master; stamp the pinned release the way the
# Kubernetes release build does, so /version (and anything reading it) tells the minor.
release=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$pins/$minor/kubernetes/go.mod")
if [[ ! "$release" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ || "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}" != "$minor" ]]; then
  echo "hack/controlplane.sh: tools/controlplane/$minor/kubernetes/go.mod requires k8s.io/kubernetes" \
    "'$release', not a $minor release" >&2
  exit 1
fi
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=${BASH_REMATCH[1]}"
  stamp+=" -X $pkg.gitMinor=${BASH_REMATCH[2]} -X $pkg.gitTreeState=clean"
done

etcd=$(cache_dir controlplane-etcd "$pins/$minor/etcd")
k8s=$(cache_dir controlplane-k8s "$pins/$minor/kubernetes" "$stamp")
go_build "$pins/$minor/etcd" . "$etcd/etcd"
# Both commands from one module: the second build reuses most of the first one's compiled packages.
go_build "$pins/$minor/kubernetes" k8s.io/kubernetes/cmd/kube-apiserver "$k8s/kube-apiserver" "$stamp"
go_build "$pins/$minor/kubernetes" k8s.io/kubernetes/cmd/kube-controller-manager \
  "$k8s/kube-controller-manager" "$stamp"
# One directory holding all three, like envtest's assets directory, keyed by both pins.
out="${XDG_CACHE_HOME:-$HOME/.cache}/secretbundle/controlplane/$minor-$(basename "$etcd")-$(basename "$k8s")"
mkdir -p "$out"
ln -sfn "$etcd/etcd" "$out/etcd"
ln -sfn "$k8s/kube-apiserver" "$out/kube-apiserver"
ln -sfn "$k8s/kube-controller-manager" "$out/kube-controller-manager"
echo "$out"
