#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are here, idempotently, for the
# tests that run the ledger on a real PostgreSQL (scripts/test.sh starts one
# server for the run; tests/integration/pg_harness.rs starts more).
#   - Debian's `postgresql` package (apt-get, needs root) when no
#     /usr/lib/postgresql/*/bin/initdb is found. The cluster the package
#     creates and starts is stopped again: the tests never use it, they run
#     their own servers in temp dirs.
#   - As root, an unprivileged system user (notify-pg) to run the servers:
#     postgres refuses to run as root.
# Prints on stdout, for the caller to eval:
#   export NOTIFY_PG_BIN=/usr/lib/postgresql/NN/bin
#   export NOTIFY_PG_USER=notify-pg   (empty when not root)
# Progress goes to stderr.
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

# The newest installed server's bin directory, if any.
find_bin() {
  local initdb
  initdb="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n $initdb ]] && dirname "$initdb"
}

bin="$(find_bin || true)"
if [[ -z $bin ]]; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb) are missing; install them (Debian/Ubuntu: apt-get install postgresql) and run again"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  candidate="$(apt-cache policy postgresql | awk '/Candidate:/ { print $2 }')"
  if [[ -z $candidate || $candidate == "(none)" ]]; then
    log "no postgresql package in the apt sources (apt-cache policy postgresql)"
    exit 1
  fi
  log "installing postgresql $candidate (apt-get)"
  apt-get install -y -qq --no-install-recommends postgresql >&2
  bin="$(find_bin || true)"
  if [[ -z $bin ]]; then
    log "postgresql $candidate is installed but no /usr/lib/postgresql/*/bin/initdb was found"
    exit 1
  fi
  # The package's own cluster (main, port 5432) may have been started: the
  # tests do not use it, so it does not hold a port and memory for nothing.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
      if [[ $status == online* ]]; then
        log "stopping the package's cluster $version/$cluster (the tests run their own)"
        pg_ctlcluster "$version" "$cluster" stop >&2 || true
      fi
    done
  fi
fi
log "PostgreSQL server binaries: $bin ($("$bin/postgres" --version))"

user=""
if [[ $(id -u) -eq 0 ]]; then
  user="notify-pg"
  if ! id -u "$user" >/dev/null 2>&1; then
    log "creating the system user $user (postgres does not run as root)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user" >&2
  fi
  if ! command -v runuser >/dev/null 2>&1; then
    log "runuser (util-linux) is missing: it runs the servers as $user"
    exit 1
  fi
fi

printf 'export NOTIFY_PG_BIN=%q\n' "$bin"
printf 'export NOTIFY_PG_USER=%q\n' "$user"
