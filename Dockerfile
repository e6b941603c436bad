# syntax=docker/dockerfile:1
#
# notify-host container image.
#
#   build stage:   the same build commands as scripts/run.sh (and the CI test
#                  command's plugin step): ./scripts/build-plugins.sh, then
#                  cargo build --release -p notify-host
#   runtime stage: debian slim, the binary, the three channel plugins and
#                  config.toml; runs as uid 10001, never root.
#
# Build:  docker build -t notify-host .      (or: docker compose build)
# Run:    see docker-compose.yml; secrets come from the environment (.env).

# ---------------------------------------------------------------------------
# Build stage. The tag follows rust-version in Cargo.toml; the Debian release
# (bookworm) must match the runtime stage's so the binary finds its glibc.
FROM rust:1.95-bookworm AS build

# rdkafka builds a bundled librdkafka with the C toolchain and links zlib
# (libz-sys finds it with pkg-config). No OpenSSL: reqwest uses rustls and
# librdkafka's SSL/SASL features are not enabled. python3-venv: the webhook
# plugin is Python, built with componentize-py from PyPI
# (scripts/plugin-toolchains.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
      python3-venv \
 && rm -rf /var/lib/apt/lists/*

# Its own layer, so it is cached: build-plugins.sh adds it only when missing.
RUN rustup target add wasm32-wasip2

WORKDIR /src
# The whole workspace: cargo loads every member listed in Cargo.toml (the test
# plugins under tests/ included) before it builds any one of them, and the
# plugins and the host generate their bindings from wit/.
COPY Cargo.toml Cargo.lock ./
COPY wit wit
COPY host host
COPY plugins plugins
COPY tests tests
COPY bench bench
COPY scripts scripts

# The registry and target/ live in BuildKit caches, so rebuilds after a
# source change recompile only what changed; the results are copied to /out
# because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    ./scripts/build-plugins.sh \
 && cargo build --release -p notify-host --locked \
 && mkdir -p /out/plugins \
 && cp target/release/notify-host /out/notify-host \
 && cp plugins/mailgun.wasm plugins/twilio.wasm plugins/webhook.wasm /out/plugins/

# ---------------------------------------------------------------------------
# Runtime stage: glibc, libz.so.1 and libgcc_s (all in bookworm-slim), plus CA
# certificates for HTTPS to the providers.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 notify \
 && useradd --system --uid 10001 --gid notify --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin notify

WORKDIR /app
# Binary, plugins and config belong to root and are read-only for the service
# user: a compromised process cannot swap a plugin or edit its own config.
COPY --from=build /out/notify-host /app/notify-host
COPY --from=build /out/plugins/ /app/plugins/
COPY config.toml /app/config.toml

# The ledger (config: ledger.path = "${NOTIFY_DATA_DIR:-data}/ledger.redb").
# Created here, owned by the service user, so a fresh named volume mounted on
# it inherits that owner.
RUN mkdir -p /app/data && chown notify:notify /app/data

# The admin server (metrics, /health/live, /health/ready) listens on every
# interface inside the container so other containers can scrape it; compose
# publishes no port for it.
ENV NOTIFY_DATA_DIR=/app/data \
    NOTIFY_ADMIN_ADDR=0.0.0.0:9090

USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 9090

# No curl in the image: the binary probes its own readiness endpoint.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/app/notify-host", "health", "--url", "http://127.0.0.1:9090/health/ready"]

ENTRYPOINT ["/app/notify-host"]
CMD ["run", "--config", "/app/config.toml"]
