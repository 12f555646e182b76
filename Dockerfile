# syntax=docker/dockerfile:1
# skycanary's container image: a static (musl) binary on distroless, non-root, no shell.
#   docker build -t REGISTRY/skycanary:TAG .
# Alpine's Rust targets musl natively, so the binary is statically linked on any architecture
# the builder runs on (amd64, arm64); rustls + ring need no OpenSSL.

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# The whole crate (every target the manifest declares must exist); .dockerignore drops target/.
COPY . .
# Without the `demo` feature: a cluster's daemon needs neither the simulator nor the demo.
RUN cargo build --release --locked --no-default-features --bin skycanary \
 && cp target/release/skycanary /skycanary

# distroless/static: CA certificates, /etc/passwd with `nonroot` (65532), tzdata; nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /skycanary /usr/local/bin/skycanary
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/skycanary"]
CMD ["run", "--kube"]
