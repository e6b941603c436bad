#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/test-deps.sh: wasm
# target, tansu broker, promtool), builds the plugins (real and hostile) as
# WebAssembly components, then runs the unit and integration tests of the
# whole workspace. Extra arguments go to `cargo test` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(./scripts/test-deps.sh)"
./scripts/build-plugins.sh --with-test-plugins

echo "==> cargo test --workspace" >&2
# `failpoints` arms the host's fail points (only in this build), so a test
# can make event work panic; see host/Cargo.toml.
cargo test --workspace --all-targets --features notify-host/failpoints "$@"
