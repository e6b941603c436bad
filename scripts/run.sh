#!/usr/bin/env bash
# Builds the plugins and the host (release), then runs the service with
# config.toml. Credentials come from the environment (see .env.example);
# extra arguments go to `notify-host run`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-plugins.sh
cargo build --quiet --release -p notify-host
exec "${CARGO_TARGET_DIR:-target}/release/notify-host" run --config "${NOTIFY_CONFIG:-config.toml}" "$@"
