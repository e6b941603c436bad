#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/test-deps.sh: wasm
# target, tansu broker, promtool; scripts/plugin-toolchains.sh: componentize-py
# and jco), builds the plugins (Rust, Python, JavaScript; real and hostile) as
# WebAssembly components, runs the Python plugin's unit tests, then the unit
# and integration tests of the whole workspace. Extra arguments go to `cargo test` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(./scripts/test-deps.sh)"
# componentize-py and jco (under .tools/): the Python and JavaScript plugins,
# and `plugin new` for those languages in tests/integration/authoring.rs.
eval "$(./scripts/plugin-toolchains.sh)"
./scripts/build-plugins.sh --with-test-plugins

echo "==> python3 -m unittest (plugins/webhook)" >&2
# The Python webhook plugin's logic, tested without the component toolchain.
python3 -m unittest discover -q -s plugins/webhook

echo "==> cargo test --workspace" >&2
# `failpoints` arms the host's fail points (only in this build), so a test
# can make event work panic; see host/Cargo.toml.
cargo test --workspace --all-targets --features notify-host/failpoints "$@"
