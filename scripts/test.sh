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
as_pg() {
  if [[ -n $NOTIFY_PG_USER ]]; then
    (cd "$pg_dir" && runuser -u "$NOTIFY_PG_USER" -- "$@")
  else
    (cd "$pg_dir" && "$@")
  fi
}
stop_postgres() {
  if [[ -f $pg_dir/data/postmaster.pid ]]; then
    as_pg "$NOTIFY_PG_BIN/pg_ctl" -D "$pg_dir/data" stop -m fast >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT
# A signal ends the script through its EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM
printf '%s\n' "$pg_password" >"$pg_dir/pwfile"
if [[ -n $NOTIFY_PG_USER ]]; then
  chown -R "$NOTIFY_PG_USER:" "$pg_dir"
fi
echo "==> PostgreSQL for the tests ($pg_dir)" >&2
if ! as_pg "$NOTIFY_PG_BIN/initdb" -D "$pg_dir/data" -U notify --pwfile="$pg_dir/pwfile" \
  --auth=scram-sha-256 -E UTF8 --no-locale >"$pg_dir/initdb.log" 2>&1; then
  cat "$pg_dir/initdb.log" >&2
  exit 1
fi
rm -f "$pg_dir/pwfile"
pg_port=""
for _ in 1 2 3 4 5; do
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # Appended settings override the ones above them (the last one wins), so a
  # retry on another port just appends again.
  cat >>"$pg_dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pg_dir/data'
# Tests run in parallel, each with a pool or two of its own.
max_connections = 300
EOF
  if as_pg "$NOTIFY_PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 start >/dev/null; then
    pg_port=$port
    break
  fi
  echo "PostgreSQL did not start on port $port; trying another" >&2
done
if [[ -z $pg_port ]]; then
  cat "$pg_dir/server.log" >&2 || true
  exit 1
fi
export NOTIFY_TEST_PG_URL="postgres://notify:$pg_password@127.0.0.1:$pg_port/postgres"

echo "==> cargo test --workspace" >&2
# `failpoints` arms the host's fail points (only in this build), so a test
# can make event work panic; see host/Cargo.toml.
cargo test --workspace --all-targets --features notify-host/failpoints "$@"
