# syntax=docker/dockerfile:1
# osgate container image: a multi-stage build.
#
#   docker build -t osgate .
#   docker run -d --name osgate -e OSGATE_API_KEY="$(openssl rand -hex 16)" \
#     -v "$PWD/osgate.json:/etc/osgate/osgate.json:ro" -v osgate-state:/var/lib/osgate osgate
#
# Stage `build` compiles the gateway with the `dist` cargo profile in the official Rust image;
# the final stage is a slim Debian (glibc for DNS and the OPC-UA/TLS stack, CA certificates,
# a non-root user) with nothing else in it. docs/deployment.md, "Container", says more.
#
# Build arguments (all optional):
#   RUST_IMAGE     the builder image                       (rust:1-bookworm)
#   RUNTIME_IMAGE  the base of the final image             (debian:bookworm-slim)
#   BINARY         where the binary comes from: `build` compiles it in RUST_IMAGE; `prebuilt`
#                  copies a binary built on the host (glibc no newer than the runtime's), e.g.
#                  `cargo build --profile dist` then
#                  `docker build --build-arg BINARY=prebuilt .`             (build)
#   PREBUILT       the host binary for BINARY=prebuilt, relative to the context
#                                                          (target/dist/osgate)
#   FEATURES       cargo features to build, comma-separated (default: every default feature)
#
# The image keeps its HEALTHCHECK only in the Docker image format (`buildah bud --format docker`;
# `docker build` always uses it).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY=build

FROM ${RUST_IMAGE} AS build
ARG FEATURES=""
# .git is not in the build context: `--build-arg OSGATE_GIT_COMMIT=$(git rev-parse --short=12
# HEAD)` lets `osgate --version` name the commit (build.rs reads it).
ARG OSGATE_GIT_COMMIT=""
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit, buildah); the binary is
# copied out of the cache mount into /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    if [ -n "$FEATURES" ]; then set -- --no-default-features --features "$FEATURES"; fi; \
    cargo build --locked --profile dist --bin osgate "$@"; \
    install -D -m 0755 target/dist/osgate /out/osgate

FROM scratch AS prebuilt
ARG PREBUILT=target/dist/osgate
COPY ${PREBUILT} /out/osgate

FROM ${BINARY} AS binary

FROM ${RUNTIME_IMAGE}
# ca-certificates: osgate verifies brokers against its compiled-in roots, but operators point
# `tls.ca_file` at the system bundle too. It is installed only when the base lacks it, so a
# base prepared offline (with it) builds without network.
RUN set -eux; \
    if ! dpkg-query -W -f '${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed'; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 osgate; \
    useradd --uid 10001 --gid osgate --no-log-init --home-dir /var/lib/osgate --no-create-home \
        --shell /usr/sbin/nologin osgate; \
    install -d -o osgate -g osgate -m 0750 /var/lib/osgate; \
    install -d -m 0755 /etc/osgate
COPY --from=binary /out/osgate /usr/local/bin/osgate
COPY examples/docker/osgate.json /etc/osgate/osgate.json
# The licences of the crates built into the binary (scripts/licenses third-party).
COPY THIRD-PARTY /usr/share/doc/osgate/THIRD-PARTY

# State: the remote configuration's cache, OPC-UA certificates. The working directory is the
# state volume, so the relative defaults (`remote.cache` = osgate.cache.json, the OPC-UA
# `pki_dir` = osgate-pki) land in it too.
VOLUME ["/var/lib/osgate"]
WORKDIR /var/lib/osgate
USER 10001:10001

# `osgate health` (the HEALTHCHECK) asks this gateway's JSON-RPC `gateway.status`; the API key
# comes from OSGATE_API_KEY, the same variable the example config's `rpc.api_keys` reads.
ENV OSGATE_RPC_URL=http://127.0.0.1:8580
EXPOSE 8580
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["osgate", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["osgate"]
CMD ["-c", "/etc/osgate/osgate.json"]
