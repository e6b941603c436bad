#!/usr/bin/env bash
# The shared PostgreSQL ledger against the embedded one (issue 15), side by
# side in one invocation on this machine:
#
#   1. throughput, notify-bench --runs throughput --events EVENTS on a topic
#      of PARTITIONS partitions, the backlog published once the hosts are
#      ready (--ready-first, so every variant is measured the same way):
#        redb x1       one host, the embedded ledger (the default);
#        postgres x1   one host on the PostgreSQL ledger;
#        postgres x3   three hosts in one consumer group on one database;
#      ROUNDS rounds, interleaved, each run on a fresh database: events/s
#      (the group's), host CPU per event (all hosts), the database server's
#      cores, the hosts' ledger claim and final-write p50/p99 (from their
#      histograms), dead letters, duplicates and how the events split;
#   2. the ledger_claims bench in release (host/benches/ledger_claims.rs):
#      the Ledger calls of a delivery from 256 tasks, embedded vs postgres x1
#      vs postgres x3, with exact claim and delivered-record p50/p99.
#
# then one markdown table with medians, ratios against redb x1 and the raw
# numbers. All hosts, tansu, PostgreSQL and the provider stand-in share this
# machine, so three hosts show what sharing one database costs, not how far
# more machines scale. Nothing here asserts a speed: read the numbers with
# `uptime` (printed before and after).
#
# PostgreSQL: Debian's server binaries (scripts/ensure-postgres.sh installs
# them), one private server for the invocation in a temp dir (initdb +
# pg_ctl, 127.0.0.1, a free port, password login, as the unprivileged
# NOTIFY_PG_USER when run as root), stopped and removed on exit.
#
# Usage: bench/replicas.sh            (from anywhere)
# Env:   EVENTS (10000), ROUNDS (3), PARTITIONS (6), LATENCY_MS (50),
#        VARIANTS ("redb1 pg1 pg3"), CLAIMS=0 skips part 2, CLAIMS_DELIVERIES
#        (20000), OUT (results dir, default
#        target-bench/replicas-bench-TIMESTAMP), CARGO_TARGET_DIR
#        (target-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-bench}"
EVENTS="${EVENTS:-10000}"
ROUNDS="${ROUNDS:-3}"
PARTITIONS="${PARTITIONS:-6}"
LATENCY_MS="${LATENCY_MS:-50}"
VARIANTS="${VARIANTS:-redb1 pg1 pg3}"
CLAIMS="${CLAIMS:-1}"
CLAIMS_DELIVERIES="${CLAIMS_DELIVERIES:-20000}"
OUT="${OUT:-$CARGO_TARGET_DIR/replicas-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { echo "==> $*" >&2; }

# --- build, once ---------------------------------------------------------------

log "cargo build --release -p notify-host -p notify-bench (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p notify-host -p notify-bench
if [[ $CLAIMS == 1 ]]; then
  log "cargo bench -p notify-host --bench ledger_claims --no-run"
  cargo bench -p notify-host --bench ledger_claims --no-run
fi
host_bin="$CARGO_TARGET_DIR/release/notify-host"
bench_bin="$CARGO_TARGET_DIR/release/notify-bench"
tansu=$(./scripts/ensure-tansu.sh)

# --- a private PostgreSQL ------------------------------------------------------

eval "$(./scripts/ensure-postgres.sh)"
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/notify-bench-pg.XXXXXX")"
pg_password="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
source ./scripts/pg-server.sh
stop_postgres() {
  pg_stop "$pg_dir"
  # Its log is worth keeping beside the results.
  cp "$pg_dir/server.log" "$OUT/postgres.log" 2>/dev/null || true
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log "PostgreSQL for the bench ($pg_dir)"
# Three hosts with a pool of 8 each, and the bench's own connections.
pg_start "$pg_dir" "$pg_password" 100
pg_pid=$(head -n1 "$pg_dir/data/postmaster.pid")
pg_url="postgres://notify:$pg_password@127.0.0.1:$pg_port/postgres"
"$NOTIFY_PG_BIN/postgres" --version | tee "$OUT/postgres-version.txt" >&2

# notify-bench and ledger_claims read the server from here (not from their
# command lines, where `ps` would show the password).
export NOTIFY_BENCH_PG_URL="$pg_url"
{ echo "before: $(uptime)"; } | tee "$OUT/uptime.txt" >&2

# --- 1. throughput -------------------------------------------------------------

variant_args() {
  case $1 in
    redb1) args=(--ledger embedded) ;;
    pg1) args=(--ledger postgres) ;;
    pg3) args=(--ledger postgres --hosts 3) ;;
    *) echo "unknown variant $1" >&2; return 1 ;;
  esac
}

rm -f "$OUT/failed"
for round in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    name="throughput-$v-$round"
    variant_args "$v"
    log "notify-bench $name: ${args[*]}"
    if ! "$bench_bin" --host-bin "$host_bin" --tansu "$tansu" --latency-ms "$LATENCY_MS" \
      --runs throughput --events "$EVENTS" --partitions "$PARTITIONS" --ready-first \
      --db-pid "$pg_pid" --json "$OUT/$name.json" "${args[@]}" \
      > "$OUT/$name.txt" 2> "$OUT/$name.log"; then
      log "notify-bench $name failed; end of its log:"
      tail -n 30 "$OUT/$name.log" >&2
      echo "$name" >> "$OUT/failed"
    fi
  done
done
echo "after throughput: $(uptime)" | tee -a "$OUT/uptime.txt" >&2

# --- 2. the ledger calls alone -------------------------------------------------

if [[ $CLAIMS == 1 ]]; then
  log "cargo bench -p notify-host --bench ledger_claims ($CLAIMS_DELIVERIES deliveries, $ROUNDS rounds)"
  if ! NOTIFY_BENCH_DELIVERIES="$CLAIMS_DELIVERIES" \
    NOTIFY_BENCH_ROUNDS="$ROUNDS" cargo bench -p notify-host --bench ledger_claims \
    > "$OUT/ledger-claims.txt" 2> "$OUT/ledger-claims.log"; then
    log "ledger_claims failed; end of its log:"
    tail -n 30 "$OUT/ledger-claims.log" >&2
    echo "ledger-claims" >> "$OUT/failed"
  fi
  echo "after ledger_claims: $(uptime)" | tee -a "$OUT/uptime.txt" >&2
fi

# --- the table -----------------------------------------------------------------

python3 - "$OUT" "$ROUNDS" $VARIANTS > "$OUT/results.md" <<'PY'
import json, os, statistics, sys

out, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
names = {"redb1": "redb x1", "pg1": "postgres x1", "pg3": "postgres x3"}

def run_of(v, i):
    try:
        with open(os.path.join(out, "throughput-{}-{}.json".format(v, i))) as f:
            j = json.load(f)
    except OSError:
        return None
    return next((r for r in j.get("runs", []) if r["label"] == "throughput"), None)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)

def raw(xs, fmt="{:.2f}"):
    return " / ".join(f(x, fmt) for x in xs)

def hist(r, key, q):
    h = (r or {}).get(key) or {}
    return h.get(q)

def qf(v, top):
    # A quantile at the top finite bucket lies in +Inf: a lower bound.
    if v is not None and top is not None and v >= top:
        return ">{:.0f}".format(top)
    return f(v)

with open(os.path.join(out, "postgres-version.txt")) as fh:
    version = fh.read().strip()
print("## Throughput: notify-bench --runs throughput (backlog published once the hosts were ready; {})".format(version))
print()
print("| variant | events/s | vs redb x1 | host CPU ms/event (all hosts) | database cores avg | other load (cores) | ledger claim p50/p99 ms (est.) | claim mean ms | ledger final write p50/p99 ms (est.) | final write mean ms | claim conflicts | dead letters | duplicates | missing | events per host |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
base = med([(run_of("redb1", i) or {}).get("events_per_second") for i in range(1, rounds + 1)])
for v in variants:
    rs = [run_of(v, i) for i in range(1, rounds + 1)]
    ok = [r for r in rs if r]
    if not ok:
        print("| {} | failed (see throughput-{}-*.log) |||||||||||| ".format(names.get(v, v), v))
        continue
    rates = [r["events_per_second"] for r in ok]
    rate = med(rates)
    cpu = [r["host_cpu_ms_per_event"] for r in ok]
    db = [(r.get("db_cores") or {}).get("avg") for r in ok]
    # Busy cores of the machine not used by the hosts, the database, the
    # broker or the bench: other work on the machine.
    other = [r["machine_cores"]["avg"] - r["host_cores"]["avg"] - r["broker_cores"]["avg"]
             - r["bench_cores"]["avg"] - ((r.get("db_cores") or {}).get("avg") or 0) for r in ok]
    def q(key, p):
        return med([hist(r, key, p) for r in ok])
    def top(key):
        return med([hist(r, key, "top_bucket_ms") for r in ok])
    def qraw(key):
        return " / ".join("{}/{}".format(qf(hist(r, key, "p50_ms"), hist(r, key, "top_bucket_ms")),
                                         qf(hist(r, key, "p99_ms"), hist(r, key, "top_bucket_ms"))) for r in ok)
    def mean(key):
        xs = [hist(r, key, "mean_ms") for r in ok]
        return "{} [{}]".format(f(med(xs)), raw(xs))
    print("| {} | {} [{}] | {} | {} [{}] | {} [{}] | {} [{}] | {}/{} [{}] | {} | {}/{} [{}] | {} | {} | {} | {} | {} | {} |".format(
        names.get(v, v), f(rate, "{:.0f}"), raw(rates, "{:.0f}"),
        "-" if not base or rate is None else "{:.2f}x".format(rate / base),
        f(med(cpu), "{:.3f}"), raw(cpu, "{:.3f}"),
        f(med(db)), raw(db), f(med(other)), raw(other),
        qf(q("ledger_claim", "p50_ms"), top("ledger_claim")), qf(q("ledger_claim", "p99_ms"), top("ledger_claim")), qraw("ledger_claim"),
        mean("ledger_claim"),
        qf(q("ledger_write", "p50_ms"), top("ledger_write")), qf(q("ledger_write", "p99_ms"), top("ledger_write")), qraw("ledger_write"),
        mean("ledger_write"),
        "/".join(str(r.get("claim_conflicts") or 0) for r in ok),
        "/".join("?" if r.get("dead_letters") is None else str(r["dead_letters"]) for r in ok),
        "/".join(str(r["duplicates"]) for r in ok),
        "/".join(str(r["missing"]) for r in ok),
        "; ".join("/".join("?" if c is None else str(c) for c in r.get("consumed_by_host", [])) for r in ok)))
print()
print("Medians over the rounds, raw rounds in brackets (a/b: p50/p99 of one round). "
      "Ledger claim and final write: the hosts' notify_ledger_claim_seconds and notify_ledger_write_seconds, "
      "estimated from buckets x2 apart (0.1 ms ... 6553.6 ms; >6554: in the +Inf bucket), all hosts added up; the means are exact; "
      "the embedded ledger's claim makes no round trip. Other load: the machine's busy cores minus the hosts', database's, broker's and bench's. "
      "Database cores: the postmaster and its backends (fsync on). Host CPU and cores are summed over the hosts.")
print()
claims = os.path.join(out, "ledger-claims.txt")
if os.path.exists(claims):
    print("## The ledger calls alone: cargo bench -p notify-host --bench ledger_claims")
    print()
    with open(claims) as fh:
        text = fh.read()
    table = text[text.find("Medians over"):] if "Medians over" in text else text
    print(table.strip())
    print()
    print("(per round: ledger-claims.txt)")
PY

cat "$OUT/results.md"
echo
cat "$OUT/uptime.txt"
if [[ -f $OUT/failed ]]; then
  echo "failed: $(tr '\n' ' ' < "$OUT/failed")"
fi
echo "results: $OUT"
