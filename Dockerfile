# syntax=docker/dockerfile:1
# Static secretbundle-operator, non-root, FROM scratch. CI builds the same static target
# (`make static`) without Docker, so the binary this image ships is exercised there too.

# The same release rust-toolchain.toml pins (a test checks that they agree).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
# glibc, linked statically: no libc in the final image, and the same target CI builds.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p secretbundle-operator --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/secretbundle-operator /secretbundle-operator

# The binary and nothing else: no shell, no libc, no /etc/passwd (so USER is numeric). `make image`
# builds this stage without Docker (tools/image reads it), and tests/tests/image.rs checks the
# pushed image against it.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
COPY --from=build /secretbundle-operator /secretbundle-operator
USER 65532:65532
# glibc's malloc without its per-size free lists (fastbins, tcache), so freed blocks coalesce
# and are reused: 1.4 instead of 1.55 KiB of RSS per cached child (bench/README.md, "The last tail and the last bytes").
ENV GLIBC_TUNABLES=glibc.malloc.mxfast=0:glibc.malloc.tcache_count=0
EXPOSE 8080/tcp
LABEL org.opencontainers.image.source="https://github.com/ameideio/secretbundle-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.title="secretbundle-operator"
ENTRYPOINT ["/secretbundle-operator"]
CMD ["run"]
