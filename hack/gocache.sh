# Sourced by the build scripts: build Go commands from a pinned tool module into a cache
# outside the checkout, keyed by the module's go.mod/go.sum/sources, and reuse them.

# cache_dir NAME MODULE_DIR [SALT] -> prints the keyed cache directory for that module (SALT:
# anything else that changes the binaries, such as the linker flags).
cache_dir() {
  local key
  key=$( (cat "$2"/go.mod "$2"/go.sum "$2"/*.go; [[ -z "${3:-}" ]] || echo "$3") | sha256sum | cut -c1-16)
  echo "${XDG_CACHE_HOME:-$HOME/.cache}/secretbundle/$1/$key"
}

# go_build MODULE_DIR PACKAGE OUT_FILE [LDFLAGS] -> builds a static, trimmed binary unless OUT_FILE
# exists (LDFLAGS are added to the linker flags, e.g. -X to stamp a version).
go_build() {
  [[ -x "$3" ]] && return 0
  mkdir -p "$(dirname "$3")"
  # One build per binary: a second caller (CI builds these in the background while cargo
  # compiles) waits for the first, then finds the binary there.
  local lock
  exec {lock}>"$3.lock"
  flock "$lock"
  [[ -x "$3" ]] && { exec {lock}>&-; return 0; }
  echo "building $(basename "$3") from $(basename "$1")/go.mod (first run takes several minutes)..." >&2
  local start=$SECONDS log
  log=$(mktemp)
  # -v lists packages as they compile: print a progress line every 200 of them.
  # (Callers run with pipefail, so a failed build fails the pipeline.)
  if ! (cd "$1" && CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly" \
    go build -v -ldflags "-s -w ${4:-}" -o "$3.tmp" "$2") 2>&1 | tee "$log" |
    awk '{ n++ } n % 200 == 0 { printf "  ... %d packages compiled\n", n; fflush() }' >&2; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    exec {lock}>&-
    return 1
  fi
  rm -f "$log"
  mv "$3.tmp" "$3"
  exec {lock}>&-
  echo "built $(basename "$3") in $((SECONDS - start))s" >&2
}
