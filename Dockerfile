# syntax=docker/dockerfile:1
# skycanary's container image: a static (musl) binary on distroless, non-root, no shell.
#   docker build -t REGISTRY/skycanary:TAG .
# Multi-arch (one manifest list for amd64 and arm64; buildx runs the build stage once per
# platform, natively or under QEMU emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/skycanary:TAG --push .
# Alpine's Rust targets musl natively, so the binary is statically linked on either
# architecture; rustls + ring need no OpenSSL. The binary is built with `cargo auditable`,
# which embeds the exact dependency list (crate names and versions from Cargo.lock) in a
# `.dep-v0` section, so scanners (`cargo audit bin`, syft, trivy) can audit the image without
# the source.

FROM rust:1-alpine AS build
# Set by buildx for each platform of --platform (a plain `docker build` sets it too).
ARG TARGETARCH
RUN apk add --no-cache musl-dev \
 && cargo install --locked cargo-auditable
WORKDIR /src
# The whole workspace (crates/ too; every target the manifests declare must exist);
# .dockerignore drops target/.
COPY . .
# Without the `demo` feature: a cluster's daemon needs neither the simulator nor the demo.
RUN case "${TARGETARCH:-$(uname -m)}" in \
      amd64|x86_64) triple=x86_64-unknown-linux-musl ;; \
      arm64|aarch64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && cargo auditable build --release --locked --no-default-features --bin skycanary --target "$triple" \
 && cp "target/$triple/release/skycanary" /skycanary

# distroless/static: CA certificates, /etc/passwd with `nonroot` (65532), tzdata; nothing else.
# Multi-arch itself: buildx picks the image of each target platform.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /skycanary /usr/local/bin/skycanary
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/skycanary"]
CMD ["run", "--kube"]
