# Sourced, not run: a throwaway PostgreSQL server for scripts/test.sh and
# bench/replicas.sh. initdb in a temp dir (owned by NOTIFY_PG_USER when we
# are root: postgres refuses to run as root), 127.0.0.1 only, a free port,
# password login (scram-sha-256) for the superuser `notify`. Needs
# NOTIFY_PG_BIN and NOTIFY_PG_USER from scripts/ensure-postgres.sh.

# pg_as DIR COMMAND...: runs COMMAND in DIR as the server's user.
pg_as() {
  local dir=$1
  shift
  if [[ -n $NOTIFY_PG_USER ]]; then
    (cd "$dir" && runuser -u "$NOTIFY_PG_USER" -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

# pg_start DIR PASSWORD MAX_CONNECTIONS: a server with its data in DIR/data;
# sets pg_port. Fails with the server's log on stderr.
pg_start() {
  local dir=$1 password=$2 max_connections=$3 port
  printf '%s\n' "$password" >"$dir/pwfile"
  if [[ -n $NOTIFY_PG_USER ]]; then
    chown -R "$NOTIFY_PG_USER:" "$dir"
  fi
  if ! pg_as "$dir" "$NOTIFY_PG_BIN/initdb" -D "$dir/data" -U notify --pwfile="$dir/pwfile" \
    --auth=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
    rm -f "$dir/pwfile"
    cat "$dir/initdb.log" >&2
    return 1
  fi
  rm -f "$dir/pwfile"
  pg_port=""
  for _ in 1 2 3 4 5; do
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # Appended settings override the ones above them (the last one wins), so
    # a retry on another port just appends again. Everything else is the
    # package's default (fsync on).
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/data'
max_connections = $max_connections
CONF
    if pg_as "$dir" "$NOTIFY_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      pg_port=$port
      return 0
    fi
    echo "PostgreSQL did not start on port $port; trying another" >&2
  done
  cat "$dir/server.log" >&2 || true
  return 1
}

# pg_stop DIR: stops the server of DIR, if it runs (fast: sessions are cut).
pg_stop() {
  local dir=$1
  if [[ -f $dir/data/postmaster.pid ]]; then
    pg_as "$dir" "$NOTIFY_PG_BIN/pg_ctl" -D "$dir/data" stop -m fast >/dev/null 2>&1 || true
  fi
}
