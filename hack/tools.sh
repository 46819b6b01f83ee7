#!/usr/bin/env bash
# Prints a directory holding `helm` and `healthcheck`, building them first if needed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
helm=$(cache_dir helm "$root/tools/helm")/helm
go_build "$root/tools/helm" helm.sh/helm/v3/cmd/helm "$helm"
out=$(cache_dir healthcheck "$root/tools/healthcheck")
go_build "$root/tools/healthcheck" . "$out/healthcheck"
ln -sf "$helm" "$out/helm"
echo "$out"
