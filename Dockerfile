# syntax=docker/dockerfile:1
# The Skiff image: the proxy (`skiff`) and the control plane (`skiff-xds`), both in
# /usr/local/bin, on Debian bookworm-slim with the iptables and nftables tools `skiff init`
# drives. Runs as uid 1337, the proxy's uid that `skiff init` keeps out of the redirect; the
# injected skiff-init container runs as root through its securityContext instead.
#
#   docker build -t skiff:0.1.0 .
#
# The tag is what k8s/ and the injector expect: skiff:<version of Cargo.toml>.

# The toolchain of rust-version in Cargo.toml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds; the binaries are copied out of the
# cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p skiff -p skiff-xds --features skiff-xds/kubernetes \
    && install -m 0755 target/dist/skiff target/dist/skiff-xds /usr/local/bin/

FROM debian:bookworm-slim
# Not pinned to package versions: bookworm's security updates replace them, and a pinned
# version disappears from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates iptables nftables \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1337 skiff \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin skiff
COPY --from=build /usr/local/bin/skiff /usr/local/bin/skiff-xds /usr/local/bin/
USER 1337:1337
# skiff: admin, outbound, inbound. skiff-xds: discovery (gRPC), admin, admission webhook.
EXPOSE 15000 15001 15006 15010 15014 15017
CMD ["skiff", "version"]
