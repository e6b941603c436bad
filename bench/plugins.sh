#!/usr/bin/env bash
# Channel plugins per language, side by side in one invocation: the Rust
# Mailgun plugin (plugins/mailgun.wasm), the Python webhook
# (plugins/webhook.wasm, componentize-py) and the JavaScript webhook
# (tests/plugins/js-webhook.wasm, jco), each as the e-mail channel.
#
#   1. start-up, `notify-host check-config` on a config with only that
#      channel, cold (an empty plugins.cache_dir) then cached (the same dir
#      again), REPEATS times, interleaved across plugins: seconds and peak
#      RSS from /usr/bin/time, and the compile / cache-load ms the host prints;
#   2. start-up, `notify-host run` until /health/live and /health/ready
#      answer 200, cold and cached: notify-bench --runs startup (it runs the
#      tansu broker the host needs);
#   3. throughput, notify-bench --runs throughput --events EVENTS for each
#      plugin x {fresh, reuse} at the host's default max_in_flight (512),
#      ROUNDS rounds, interleaved: events/s, dead letters, duplicates, the
#      host's plugin call p50/p99 (estimated from its histogram buckets) and
#      peak RSS (its hosts start from a compile cache notify-bench fills
#      first with `notify-host plugin compile`). The host times a call from before its wait at the
#      max_concurrent_calls gate, so with 512 events in flight those times
#      are mostly queueing; the same invocation's sequential run
#      (max_in_flight = 1, SEQ_EVENTS events) gives them without the queue;
#
# then one markdown table with the raw numbers, medians and ratios against
# the Rust plugin (fresh). Nothing here asserts a speed: the machine is
# shared, read the numbers with `uptime` (printed before and after).
#
# Usage: bench/plugins.sh            (from anywhere)
# Env:   EVENTS (2000), SEQ_EVENTS (200), REPEATS (3), ROUNDS (3), LATENCY_MS (50),
#        PLUGINS ("rust python js"), PHASES ("check startup throughput":
#        the sections to run; with OUT naming an earlier run's dir the others
#        are kept from it), OUT (results dir, default
#        target-bench/plugins-bench-TIMESTAMP), CARGO_TARGET_DIR
#        (target-bench), BUILD_PLUGINS=1 runs
#        ./scripts/build-plugins.sh --with-test-plugins first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-bench}"
EVENTS="${EVENTS:-2000}"
SEQ_EVENTS="${SEQ_EVENTS:-200}"
REPEATS="${REPEATS:-3}"
ROUNDS="${ROUNDS:-3}"
LATENCY_MS="${LATENCY_MS:-50}"
PLUGINS="${PLUGINS:-rust python js}"
PHASES="${PHASES:-check startup throughput}"
OUT="${OUT:-$CARGO_TARGET_DIR/plugins-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { echo "==> $*" >&2; }

# /usr/bin/time (GNU time, for %M): the Debian `time` package.
if [[ ! -x /usr/bin/time ]]; then
  log "installing GNU time (apt-get install time)"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y time >/dev/null || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
  else
    sudo apt-get install -y time >/dev/null
  fi
fi

if [[ "${BUILD_PLUGINS:-0}" == 1 ]]; then
  log "./scripts/build-plugins.sh --with-test-plugins"
  ./scripts/build-plugins.sh --with-test-plugins
fi

log "cargo build --release -p notify-host -p notify-bench (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p notify-host -p notify-bench
host_bin="$CARGO_TARGET_DIR/release/notify-host"
bench_bin="$CARGO_TARGET_DIR/release/notify-bench"
tansu=$(./scripts/ensure-tansu.sh)

plugin_path() {
  case $1 in
    rust) echo "$root/plugins/mailgun.wasm" ;;
    python) echo "$root/plugins/webhook.wasm" ;;
    js) echo "$root/tests/plugins/js-webhook.wasm" ;;
    *) echo "unknown plugin $1" >&2; return 1 ;;
  esac
}

present=()
rm -f "$OUT/skipped" "$OUT/failed"
: > "$OUT/plugins.txt"
for p in $PLUGINS; do
  if [[ -f $(plugin_path "$p") ]]; then
    present+=("$p")
  else
    log "skipping $p: no $(plugin_path "$p") (BUILD_PLUGINS=1 builds it)"
    echo "$p" >> "$OUT/skipped"
  fi
done
if [[ ${#present[@]} -eq 0 ]]; then
  echo "bench/plugins.sh: no plugin to measure" >&2
  exit 1
fi
for p in "${present[@]}"; do
  f=$(plugin_path "$p")
  printf '%s %s %s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" >> "$OUT/plugins.txt"
done

export MAILGUN_API_KEY=key-bench-mailgun
export WEBHOOK_SECRET=notify-bench-webhook-secret-0032

{ echo "before: $(uptime)"; } | tee "$OUT/uptime.txt" >&2

# --- 1. check-config, cold and cached ---------------------------------------

# check_config_toml PLUGIN CACHE_DIR: a config with only the e-mail channel.
check_config_toml() {
  local p=$1 cache=$2 plugin
  plugin=$(plugin_path "$p")
  cat <<EOF
[kafka]
bootstrap_servers = "127.0.0.1:9"
topic = "appointments.created"
dlq_topic = "appointments.created.dlq"
group_id = "notify-bench-check"

[ledger]
path = "$OUT/check-$p-ledger.redb"

[plugins]
cache_dir = "$cache"

[channels.email]
plugin = "$plugin"
base_url = "http://127.0.0.1:9"
EOF
  if [[ $p == rust ]]; then
    echo 'auth = { type = "basic", username = "api", password = "${MAILGUN_API_KEY}" }'
    echo 'settings = { domain = "mg.example.com", from = "noreply@mg.example.com" }'
  else
    echo 'auth = { type = "hmac", secret = "${WEBHOOK_SECRET}" }'
    echo 'settings = { path = "/hook" }'
  fi
}

# One line per start: plugin kind rep seconds max_rss_kib load_source load_ms
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

has_phase check && : > "$OUT/check-config.txt"
has_phase check && for rep in $(seq 1 "$REPEATS"); do
  for p in "${present[@]}"; do
    cache="$OUT/check-cache-$p-$rep"
    rm -rf "$cache"
    check_config_toml "$p" "$cache" > "$OUT/check-$p.toml"
    for kind in cold cached; do
      outf="$OUT/check-$p-$rep-$kind.out"
      if ! /usr/bin/time -f '%e %M' -o "$outf.time" \
        "$host_bin" check-config --config "$OUT/check-$p.toml" > "$outf" 2>&1; then
        log "check-config failed for $p ($kind #$rep):"
        cat "$outf" >&2
        exit 1
      fi
      read -r secs rss < <(tail -n1 "$outf.time")
      load=$(grep -oE '(compiled|from the compile cache) in [0-9]+ ms' "$outf" | head -n1 || true)
      src=$(case $load in compiled*) echo compiled ;; from*) echo cache ;; *) echo '?' ;; esac)
      ms=$(grep -oE '[0-9]+ ms' <<<"$load" | grep -oE '[0-9]+' || echo '?')
      echo "$p $kind $rep $secs $rss $src $ms" | tee -a "$OUT/check-config.txt" >&2
    done
  done
done
echo "after check-config: $(uptime)" | tee -a "$OUT/uptime.txt" >&2

# --- notify-bench runs ------------------------------------------------------

# bench NAME ARGS...: one notify-bench invocation, JSON to $OUT/NAME.json,
# its stderr to $OUT/NAME.log, its work dir kept (host logs) and noted.
bench() {
  local name=$1
  shift
  log "notify-bench $name: $*"
  if ! "$bench_bin" --host-bin "$host_bin" --tansu "$tansu" --latency-ms "$LATENCY_MS" \
    --keep-workdir --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.log"; then
    log "notify-bench $name failed; end of its log:"
    tail -n 30 "$OUT/$name.log" >&2
    echo "$name" >> "$OUT/failed"
    return 0
  fi
  local kept
  kept=$(sed -n 's/^notify-bench: kept //p' "$OUT/$name.log" | tail -n1)
  if [[ -n $kept ]]; then
    echo "$kept" > "$OUT/$name.workdir"
    # What the hosts logged about deadlines and dead letters.
    { grep -rhi 'deadline' "$kept" --include='*host.log' || true; } > "$OUT/$name.deadline.txt"
    { grep -rhi 'dead letter\|dead-letter\|dlq' "$kept" --include='*host.log' || true; } > "$OUT/$name.deadletter.txt"
  fi
}

# --- 2. run until ready, cold and cached -------------------------------------

has_phase startup && for p in "${present[@]}"; do
  bench "startup-$p" --runs startup --startup-repeats "$REPEATS" \
    --capacity-seconds 0.5 --email-plugin "$(plugin_path "$p")"
done
echo "after startup: $(uptime)" | tee -a "$OUT/uptime.txt" >&2

# --- 3. throughput, fresh and reuse -----------------------------------------

has_phase throughput && for round in $(seq 1 "$ROUNDS"); do
  for p in "${present[@]}"; do
    for mode in fresh reuse; do
      bench "throughput-$p-$mode-$round" --runs throughput,sequential --events "$EVENTS" \
        --sequential-events "$SEQ_EVENTS" --email-plugin "$(plugin_path "$p")" --email-instances "$mode"
    done
  done
done
echo "after: $(uptime)" | tee -a "$OUT/uptime.txt" >&2

# --- the table --------------------------------------------------------------

python3 - "$OUT" "$ROUNDS" "${present[@]}" > "$OUT/results.md" <<'PY'
import json, os, statistics, sys

out, rounds, plugins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
names = {"rust": "Rust (mailgun.wasm)", "python": "Python (webhook.wasm)", "js": "JS (js-webhook.wasm)"}

def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except OSError:
        return None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)

def raw(xs, fmt="{:.2f}"):
    return " / ".join(f(x, fmt) for x in xs)

def ratio(x, base):
    return "-" if x is None or not base else "{:.2f}x".format(x / base)

def lines(name):
    try:
        with open(os.path.join(out, name)) as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None

print("## Plugins")
print()
with open(os.path.join(out, "plugins.txt")) as fh:
    for line in fh:
        p, size, sha = line.split()
        print("- {}: {:.1f} MiB, sha256 {}...".format(names[p], int(size) / 2**20, sha))
if os.path.exists(os.path.join(out, "skipped")):
    print("- skipped (file missing): " + open(os.path.join(out, "skipped")).read().replace("\n", " "))
print()

# 1. check-config
checks = {}
with open(os.path.join(out, "check-config.txt") if os.path.exists(os.path.join(out, "check-config.txt")) else os.devnull) as fh:
    for line in fh:
        p, kind, rep, secs, rss, src, ms = line.split()
        checks.setdefault((p, kind), []).append(
            (float(secs), int(rss) / 1024, src, None if ms == "?" else int(ms)))
print("## Start-up: `notify-host check-config` (only that channel; medians, raw in brackets)")
print()
print("| plugin | cold s | cached s | cached / cold | cold vs Rust | cached vs Rust | cold peak RSS MiB | cached peak RSS MiB | compile ms (cold) | cache load ms (cached) | sources |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
base = {k: med([s[0] for s in checks.get(("rust", k), [])]) for k in ("cold", "cached")}
for p in plugins:
    cold, cached = checks.get((p, "cold"), []), checks.get((p, "cached"), [])
    mc, mk = med([s[0] for s in cold]), med([s[0] for s in cached])
    srcs = ",".join(sorted({s[2] for s in cold})) + " / " + ",".join(sorted({s[2] for s in cached}))
    print("| {} | {} [{}] | {} [{}] | {} | {} | {} | {} [{}] | {} [{}] | {} [{}] | {} [{}] | {} |".format(
        names[p], f(mc), raw([s[0] for s in cold]), f(mk), raw([s[0] for s in cached]),
        ratio(mk, mc), ratio(mc, base["cold"]), ratio(mk, base["cached"]),
        f(med([s[1] for s in cold]), "{:.0f}"), raw([s[1] for s in cold], "{:.0f}"),
        f(med([s[1] for s in cached]), "{:.0f}"), raw([s[1] for s in cached], "{:.0f}"),
        f(med([s[3] for s in cold]), "{:.0f}"), raw([s[3] for s in cold], "{:.0f}"),
        f(med([s[3] for s in cached]), "{:.0f}"), raw([s[3] for s in cached], "{:.0f}"),
        srcs))
print()

# 2. run until ready
print("## Start-up: `notify-host run` until /health/live and /health/ready (notify-bench --runs startup; medians, raw in brackets)")
print()
print("| plugin | live cold s | live cached s | ready cold s | ready cached s | cached live vs Rust | peak RSS cold / cached MiB | plugin load ms cold / cached |")
print("|---|---|---|---|---|---|---|---|")
rows = []
for p in plugins:
    j = load("startup-" + p)
    if not j or not j.get("startup"):
        rows.append((p, None, None))
        continue
    s = j["startup"]
    cols = {(cold, key): [x[key] for x in s["samples"] if x["cold"] == cold]
            for cold in (True, False) for key in ("live_seconds", "ready_seconds")}
    rows.append((p, s, cols))
rust_live = next((s["cached"]["live_seconds"] for p, s, _ in rows if p == "rust" and s), None)
for p, s, cols in rows:
    if s is None:
        print("| {} | failed (see startup-{}.log) |||||||".format(names[p], p))
        continue
    print("| {} | {} [{}] | {} [{}] | {} [{}] | {} [{}] | {} | {} / {} | {} / {} |".format(
        names[p],
        f(s["cold"]["live_seconds"], "{:.3f}"), raw(cols[(True, "live_seconds")], "{:.3f}"),
        f(s["cached"]["live_seconds"], "{:.3f}"), raw(cols[(False, "live_seconds")], "{:.3f}"),
        f(s["cold"]["ready_seconds"], "{:.3f}"), raw(cols[(True, "ready_seconds")], "{:.3f}"),
        f(s["cached"]["ready_seconds"], "{:.3f}"), raw(cols[(False, "ready_seconds")], "{:.3f}"),
        ratio(s["cached"]["live_seconds"], rust_live),
        f(s["cold"]["peak_rss_mib"], "{:.0f}"), f(s["cached"]["peak_rss_mib"], "{:.0f}"),
        f(s["cold"]["plugin_load_ms"], "{:.0f}"), f(s["cached"]["plugin_load_ms"], "{:.0f}")))
print()
print("live: the admin server is up, after config, plugins, ledger and the DLQ check; "
      "ready: partitions assigned too (the consumer group join, about 3 s against tansu whatever the plugin).")
print()

# 3. throughput
print("## Throughput: notify-bench --runs throughput (backlog, max_in_flight 512; e-mail via the plugin, SMS via twilio.wasm)")
print()
def run_of(p, mode, rnd, label="throughput"):
    j = load("throughput-{}-{}-{}".format(p, mode, rnd))
    if not j or not j.get("runs"):
        return None
    return next((r for r in j["runs"] if r["label"] == label), None)
def qfmt(v, top):
    if v is not None and top is not None and v >= top:
        return ">{:.0f}".format(top)
    return f(v, "{:.3f}")

def call(r, c):
    for x in r.get("plugin_calls", []):
        if x["channel"] == "email" and x["call"] == c:
            return x
    return None
base_rate = med([(run_of("rust", "fresh", i) or {}).get("events_per_second") for i in range(1, rounds + 1)])
print("| plugin | instances | events/s | vs Rust fresh | dead letters | duplicates | missing | email render p50/p99 ms (est.), 512 in flight | email classify p50/p99 ms (est.), 512 in flight | render/classify mean ms, 512 in flight | host peak RSS MiB, whole life | host peak RSS MiB, window | host CPU ms/event | deadline lines in host log | other load (cores) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for p in plugins:
    for mode in ("fresh", "reuse"):
        rs = [run_of(p, mode, i) for i in range(1, rounds + 1)]
        ok = [r for r in rs if r]
        if not ok:
            print("| {} | {} | failed (see throughput-{}-{}-*.log) ||||||||||| ".format(names[p], mode, p, mode))
            continue
        rates = [r["events_per_second"] for r in ok]
        rate = med(rates)
        def q(c, k):
            return med([(call(r, c) or {}).get(k) for r in ok])
        dl = [r.get("dead_letters") for r in ok]
        dlines = [lines("throughput-{}-{}-{}.deadline.txt".format(p, mode, i)) for i in range(1, rounds + 1)]
        # Busy cores of the machine not used by the host, broker or bench:
        # other engineers' builds, say.
        other = [r["machine_cores"]["avg"] - r["host_cores"]["avg"] - r["broker_cores"]["avg"] - r["bench_cores"]["avg"] for r in ok]
        wpeak = [r.get("host_window_peak_rss_mib") for r in ok]
        print("| {} | {} | {} [{}] | {} | {} | {} | {} | {}/{} | {}/{} | {}/{} | {} [{}] | {} [{}] | {} | {} | {} |".format(
            names[p], mode, f(rate, "{:.0f}"), raw(rates, "{:.0f}"), ratio(rate, base_rate),
            "/".join("?" if x is None else str(x) for x in dl),
            "/".join(str(r["duplicates"]) for r in ok),
            "/".join(str(r["missing"]) for r in ok),
            qfmt(q("render", "p50_ms"), q("render", "top_bucket_ms")), qfmt(q("render", "p99_ms"), q("render", "top_bucket_ms")),
            qfmt(q("classify", "p50_ms"), q("classify", "top_bucket_ms")), qfmt(q("classify", "p99_ms"), q("classify", "top_bucket_ms")),
            f(q("render", "mean_ms"), "{:.3f}"), f(q("classify", "mean_ms"), "{:.3f}"),
            f(med([r["host_peak_rss_mib"] for r in ok]), "{:.0f}"), raw([r["host_peak_rss_mib"] for r in ok], "{:.0f}"),
            f(med(wpeak), "{:.0f}"), raw(wpeak, "{:.0f}"),
            f(med([r["host_cpu_ms_per_event"] for r in ok]), "{:.3f}"),
            "/".join("?" if x is None else str(x) for x in dlines),
            raw(other, "{:.2f}")))
print()
print("### Plugin call time without the queue: the sequential run (max_in_flight = 1, {} events) of the same invocations".format(
    (run_of(plugins[0], "fresh", 1, "sequential") or {}).get("events", "?")))
print()
print("| plugin | instances | email render p50/p99 ms (est.) | email classify p50/p99 ms (est.) | render / classify mean ms | sequential events/s | dead letters | duplicates |")
print("|---|---|---|---|---|---|---|---|")
for p in plugins:
    for mode in ("fresh", "reuse"):
        ok = [r for r in (run_of(p, mode, i, "sequential") for i in range(1, rounds + 1)) if r]
        if not ok:
            print("| {} | {} | failed |||||| ".format(names[p], mode))
            continue
        def q(c, k):
            return med([(call(r, c) or {}).get(k) for r in ok])
        print("| {} | {} | {}/{} | {}/{} | {} / {} | {} | {} | {} |".format(
            names[p], mode,
            qfmt(q("render", "p50_ms"), q("render", "top_bucket_ms")), qfmt(q("render", "p99_ms"), q("render", "top_bucket_ms")),
            qfmt(q("classify", "p50_ms"), q("classify", "top_bucket_ms")), qfmt(q("classify", "p99_ms"), q("classify", "top_bucket_ms")),
            f(q("render", "mean_ms"), "{:.3f}"), f(q("classify", "mean_ms"), "{:.3f}"),
            raw([r["events_per_second"] for r in ok], "{:.1f}"),
            "/".join("?" if r.get("dead_letters") is None else str(r["dead_letters"]) for r in ok),
            "/".join(str(r["duplicates"]) for r in ok)))
print()
print("## The issue's targets (informational; nothing here fails on them)")
print()
for p in plugins:
    cached = med([x[0] for x in checks.get((p, "cached"), [])])
    st = next((s for q, s, _ in rows if q == p and s), None)
    live = st["cached"]["live_seconds"] if st else None
    ready = st["cached"]["ready_seconds"] if st else None
    print("- {}: cached start-up <= 1 s: check-config {} s, run until live {} s ({}), until ready {} s (the group join)".format(
        names[p], f(cached), f(live, "{:.3f}"),
        "met" if cached is not None and live is not None and cached <= 1 and live <= 1 else "NOT met",
        f(ready, "{:.3f}")))
rates = {(p, m): med([(run_of(p, m, i) or {}).get("events_per_second") for i in range(1, rounds + 1)])
         for p in plugins for m in ("fresh", "reuse")}
for p in plugins:
    if p == "rust":
        continue
    r = rates.get((p, "reuse"))
    for m in ("fresh", "reuse"):
        b = rates.get(("rust", m))
        if r and b:
            print("- {} reuse within 2x of Rust {} events/s: {} ({:.0f} vs {:.0f}, {:.2f}x)".format(
                names[p], m, "met" if r * 2 >= b else "NOT met", r, b, r / b))
bad = []
for p in plugins:
    for m in ("fresh", "reuse"):
        for i in range(1, rounds + 1):
            for label in ("throughput", "sequential"):
                r = run_of(p, m, i, label)
                if r and ((r.get("dead_letters") or 0) > 0 or r["duplicates"] > 0 or r["missing"] > 0 or r.get("dead_letters") is None):
                    bad.append("{} {} #{} {}: dead letters {}, duplicates {}, missing {}".format(
                        p, m, i, label, r.get("dead_letters"), r["duplicates"], r["missing"]))
cold = []
for p in plugins:
    for m in ("fresh", "reuse"):
        for i in range(1, rounds + 1):
            for label in ("throughput", "sequential"):
                r = run_of(p, m, i, label)
                if r:
                    loads = r.get("plugin_loads") or {}
                    if any(v[0] != "cache" for v in loads.values()) or len(loads) < 2:
                        cold.append("{} {} #{} {}: {}".format(p, m, i, label, loads))
print("- (set-up) every throughput/sequential host took both plugins from the compile cache (notify-bench compiles them first): "
      + ("yes" if not cold else "NO: " + "; ".join(cold)))
print("- 0 dead letters, 0 duplicates (and none missing) in every run: " + ("met" if not bad else "NOT met: " + "; ".join(bad)))
print()
print("Plugin call p50/p99 are estimated from the host's notify_plugin_call_duration_seconds buckets "
      "(x3 apart, linear within a bucket; >590: in the +Inf bucket) and include the wait at the max_concurrent_calls gate; the mean is exact. "
      "Several values separated by / are the rounds; medians are over the rounds. "
      "Peak RSS, window: from the first provider request on (VmHWM reset there), without the start-up's plugin compile. "
      "Other load: the machine's busy cores minus the host's, broker's and bench's during the run (others' builds).")
PY

cat "$OUT/results.md"
echo
cat "$OUT/uptime.txt"
if [[ -f $OUT/failed ]]; then
  echo "failed: $(tr '\n' ' ' < "$OUT/failed")"
fi
echo "results: $OUT"
