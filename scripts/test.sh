#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/test-deps.sh: wasm
# target, tansu broker, promtool; scripts/plugin-toolchains.sh: componentize-py
# and jco; scripts/ensure-postgres.sh: PostgreSQL's server binaries), builds
# the plugins (Rust, Python, JavaScript; real and hostile) as WebAssembly
# components, runs the Python plugin's unit tests, starts one PostgreSQL
# server for the run (stopped on exit), then runs the unit and integration
# tests of the whole workspace. Extra arguments go to `cargo test` (e.g. a
# test filter).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(./scripts/test-deps.sh)"
# componentize-py and jco (under .tools/): the Python and JavaScript plugins,
# and `plugin new` for those languages in tests/integration/authoring.rs.
eval "$(./scripts/plugin-toolchains.sh)"
# PostgreSQL's binaries (NOTIFY_PG_BIN) and, when we are root, the user that
# runs the servers (NOTIFY_PG_USER).
eval "$(./scripts/ensure-postgres.sh)"
./scripts/build-plugins.sh --with-test-plugins

echo "==> python3 -m unittest (plugins/webhook)" >&2
# The Python webhook plugin's logic, tested without the component toolchain.
python3 -m unittest discover -q -s plugins/webhook

# One PostgreSQL server for the whole run: the ledger tests each take a fresh
# database on it (`fresh_database` in tests/integration/pg_harness.rs); tests
# that stop or restart the database start servers of their own. It listens on
# 127.0.0.1 only, at a free port, with password login (scram-sha-256) for the
# superuser `notify`; the password is PG_PASSWORD of pg_harness.rs (tests check
# it never shows up in logs). Stopped and removed on exit, whatever the tests
# did.
pg_password="notify-pg-test-secret-5d21e8"
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/notify-test-pg.XXXXXX")"
source ./scripts/pg-server.sh
stop_postgres() {
  pg_stop "$pg_dir"
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT
# A signal ends the script through its EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM
echo "==> PostgreSQL for the tests ($pg_dir)" >&2
# Tests run in parallel, each with a pool or two of its own.
pg_start "$pg_dir" "$pg_password" 300
export NOTIFY_TEST_PG_URL="postgres://notify:$pg_password@127.0.0.1:$pg_port/postgres"

echo "==> cargo test --workspace" >&2
# `failpoints` arms the host's fail points (only in this build), so a test
# can make event work panic; see host/Cargo.toml.
cargo test --workspace --all-targets --features notify-host/failpoints "$@"
