#!/usr/bin/env bash
# Builds the operator's OCI image from the static binary (`make static`) without a Docker
# engine, and prints a directory holding it as an OCI layout (layout/), the cargo dependency
# list it carries (dependencies.txt) and `crane`, to push, pull and inspect it.
# The image is the final stage of the Dockerfile, read by tools/image (one source of truth).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/hack/gocache.sh"
# SB_STATIC_BIN: another static build of the binary.
bin=${SB_STATIC_BIN:-$root/target/x86_64-unknown-linux-gnu/release/secretbundle-operator}
if [[ ! -x $bin ]]; then
  echo "image: no static binary at ${bin#"$root"/}: run \`make static\` first" >&2
  exit 1
fi
if readelf -d "$bin" | grep -q NEEDED; then
  echo "image: ${bin#"$root"/} needs shared libraries; the image has none: run \`make static\`" >&2
  exit 1
fi
tools=$(cache_dir image "$root/tools/image")
go_build "$root/tools/image" github.com/google/go-containerregistry/cmd/crane "$tools/crane"
go_build "$root/tools/image" . "$tools/oci-image"

out=$root/target/image
mkdir -p "$out"
# What the binary links: normal dependencies for the image's target, without proc-macros and
# build scripts (they run at compile time and are not in the binary).
(cd "$root" && cargo tree --locked -p secretbundle-operator -e normal,no-proc-macro \
  --target x86_64-unknown-linux-gnu --prefix none) |
  awk '{ print $1 " " $2 }' | sort -u >"$out/dependencies.txt"
version=$("$bin" --version | awk '{ print $2 }')
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
"$tools/oci-image" -dockerfile "$root/Dockerfile" -binary "$bin" -out "$out/layout" \
  -build-arg "VERSION=$version" -build-arg "REVISION=$revision" \
  -annotation-file "io.ameide.secretbundle.cargo-dependencies=$out/dependencies.txt" >"$out/digest"
ln -sf "$tools/crane" "$out/crane"
ln -sf "$tools/oci-image" "$out/oci-image"
echo "image $(cut -d' ' -f1 "$out/digest") for $version at $revision" >&2
echo "$out"
