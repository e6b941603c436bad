#!/usr/bin/env bash
# Runs every test: builds the plugins (real and hostile) as WebAssembly
# components, then the unit and integration tests of the whole workspace.
# Needs only a Rust toolchain with rustup; the wasm32-wasip2 target is added
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-plugins.sh --with-test-plugins

echo "==> cargo test --workspace" >&2
cargo test --workspace --all-targets "$@"
