# syntax=docker/dockerfile:1
# Static secretbundle-operator on distroless, non-root. CI builds the same static target
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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /secretbundle-operator /secretbundle-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/secretbundle-operator"]
CMD ["run"]
