#!/usr/bin/env bash
# Prints the path of the External Secrets Operator controller binary, building it first if needed.
# ESO_BINARY, when set to an executable, is used as it is.
set -euo pipefail

if [[ -n "${ESO_BINARY:-}" && -x "$ESO_BINARY" ]]; then
  echo "$ESO_BINARY"
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
bin=$(cache_dir eso "$root/tools/eso")/external-secrets
go_build "$root/tools/eso" . "$bin"
echo "$bin"
