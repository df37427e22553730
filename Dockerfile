# jwtgate container image.
#
#   docker build -t ghcr.io/jwtgate/jwtgate:0.1.0 \
#     --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Stages:
#   planner  copies the whole context and keeps only what cargo needs to
#            resolve and build the dependencies: Cargo.toml, Cargo.lock and a
#            stub for every target root (cargo refuses a manifest whose declared
#            [[bench]]/[[example]]/[[test]] targets have no file). Its output
#            only changes when the manifest, the lockfile or the set of target
#            roots changes.
#   builder  compiles the dependencies against the stubs (a layer that stays
#            cached while only the code changes), then the real sources.
#   final    distroless cc (glibc + libgcc + CA certificates, no shell, no
#            package manager), running as the numeric non-root user 65532.
#
# Base images are pinned by tag. To pin by digest as well (recommended for
# releases), resolve the digests with network access, e.g.
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and write FROM <image>:<tag>@sha256:<digest>; we cannot resolve (or verify)
# a digest from the offline machines this file was written on.

# ---------------------------------------------------------------------------
FROM rust:1.88.0-bookworm AS planner
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# Stub out the target roots cargo discovers (src/main.rs, src/lib.rs,
# src/bin/, benches/, tests/, examples/: *.rs and */main.rs) and every target
# `path = "....rs"` declared in Cargo.toml. Test helper modules are not roots,
# so adding one does not invalidate the dependency layer. build.rs is kept as is.
RUN set -eu; shopt -s nullglob; \
    stub() { \
      [ -f "$1" ] || return 0; \
      mkdir -p "/skeleton/$(dirname "$1")"; \
      if [ "$1" = src/lib.rs ]; then : > "/skeleton/$1"; \
      else echo 'fn main() {}' > "/skeleton/$1"; fi; \
    }; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    if [ -f build.rs ]; then cp build.rs /skeleton/; fi; \
    for f in src/main.rs src/lib.rs src/bin/*.rs src/bin/*/main.rs \
             benches/*.rs benches/*/main.rs tests/*.rs tests/*/main.rs \
             examples/*.rs examples/*/main.rs; do \
      stub "$f"; \
    done; \
    sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' Cargo.toml \
      | while read -r f; do stub "$f"; done; \
    find /skeleton -type f | sort

# ---------------------------------------------------------------------------
FROM rust:1.88.0-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1) Dependencies only (cached until Cargo.toml / Cargo.lock / target set change).
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked

# 2) The real sources. COPY keeps the context's mtimes, which may be older than
#    the stub build, so make sure cargo cannot take the stubs for up to date:
#    drop the jwtgate crate's own artefacts and touch its sources.
COPY . .
RUN rm -rf target/release/.fingerprint/jwtgate-* \
           target/release/build/jwtgate-* \
           target/release/deps/jwtgate-* \
           target/release/deps/libjwtgate-* \
           target/release/jwtgate \
 && find src -name '*.rs' -exec touch {} + \
 && if [ -f build.rs ]; then touch build.rs; fi \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/jwtgate /out/jwtgate

# ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="jwtgate" \
      org.opencontainers.image.description="JWT verification for nginx auth_request / ingress-nginx auth-url" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/jwtgate/jwtgate" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/jwtgate /usr/local/bin/jwtgate

# distroless "nonroot" user; numeric so Kubernetes runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080

# The image has no shell and no HTTP client, so Docker cannot run a health
# check command in it. Health is checked by the orchestrator instead: the Helm
# chart sets Kubernetes liveness (/healthz), readiness (/readyz) and startup
# probes. NONE states this explicitly (and overrides any inherited check).
HEALTHCHECK NONE

ENTRYPOINT ["/usr/local/bin/jwtgate"]
CMD ["serve", "--config", "/etc/jwtgate/config.yaml"]
