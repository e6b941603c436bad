//! The ledger's cost per delivery under load, embedded (redb) against the
//! shared PostgreSQL backend, one replica and three.
//!
//! Each delivery goes through the `Ledger` calls the pipeline makes for it
//! (`pipeline/worker.rs`): claim, read the record (the dedup check), write
//! `pending` without awaiting it, a simulated send (`NOTIFY_BENCH_SEND_MS`,
//! 1 ms: long enough that the pending and the final write usually land in
//! different group commits, as they do in the host), then the `delivered`
//! record, awaited (it must be durable before the offset is committed).
//! `NOTIFY_BENCH_IN_FLIGHT` (256) deliveries run at once from as many tasks;
//! `NOTIFY_BENCH_DELIVERIES` (20,000) are measured per variant after a
//! warm-up of a tenth as many (at most 1,000), which opens the pools and
//! creates the first time partition.
//!
//! Variants, interleaved over `NOTIFY_BENCH_ROUNDS` (3) rounds:
//! - `embedded`: one redb file;
//! - `postgres x1`: one `Postgres` backend (one host's pool and writer);
//! - `postgres x3`: three `Postgres` backends with different owners on the
//!   same database (three replicas), each working every third delivery; the
//!   same deliveries in flight in total, so it shows what sharing one
//!   database costs, not what more hosts gain.
//!
//! Every PostgreSQL variant gets a fresh database (created, then dropped) on
//! the server of `NOTIFY_BENCH_PG_URL`, else `NOTIFY_TEST_PG_URL` (the server
//! `scripts/test.sh` starts), as a superuser URL of any database there.
//! Without either the PostgreSQL variants are skipped with a note.
//! `ledger.pool_size` is `NOTIFY_BENCH_POOL_SIZE` (the host's default, 8).
//!
//! Printed per variant and round: deliveries/s, and p50/p99/max of the
//! claim, the read, the delivered record (the awaited write) and the whole
//! delivery, with the sample counts; then medians over the rounds and the
//! ratios to the embedded ledger. Latencies are from the caller's side, so
//! they include the wait for a pool connection or for the writer's batch.
//!
//! `cargo bench -p notify-host --bench ledger_claims` (release build; under
//! `cargo test` it runs 300 deliveries, 32 in flight, one round).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use notify_host::config::{
    PostgresLedger, Secret, DEFAULT_LEDGER_CONNECT_TIMEOUT_SECONDS, DEFAULT_LEDGER_LEASE_SECONDS,
    DEFAULT_LEDGER_POOL_SIZE,
};
use notify_host::ledger::embedded::Embedded;
use notify_host::ledger::postgres::Postgres;
use notify_host::ledger::{
    AttemptRecord, Claim, Delivery, DeliveryKey, Ledger, Purpose, Recipient, Record, State,
};
use sqlx::Connection as _;

/// The host's default retention (a week): the bucket width follows it.
const RETENTION: Duration = Duration::from_secs(168 * 3600);
/// The host's default page cache for the embedded ledger (16 MiB).
const CACHE_BYTES: usize = 16 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One run's caller-side times, one sample per delivery.
#[derive(Default)]
struct Samples {
    claim: Vec<Duration>,
    read: Vec<Duration>,
    delivered: Vec<Duration>,
    whole: Vec<Duration>,
    /// Claims answered `Busy` (none expected: every key is new and worked
    /// by one replica).
    busy: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.claim.extend(other.claim);
        self.read.extend(other.read);
        self.delivered.extend(other.delivered);
        self.whole.extend(other.whole);
        self.busy += other.busy;
    }

    fn sort(&mut self) {
        self.claim.sort();
        self.read.sort();
        self.delivered.sort();
        self.whole.sort();
    }
}

/// p50, p99, max (ms) and the sample count of one kind of call.
struct Quantiles {
    p50: f64,
    p99: f64,
    max: f64,
    count: usize,
}

impl Quantiles {
    fn of(sorted: &[Duration]) -> Quantiles {
        Quantiles {
            p50: ms(percentile(sorted, 0.50)),
            p99: ms(percentile(sorted, 0.99)),
            max: ms(sorted.last().copied().unwrap_or_default()),
            count: sorted.len(),
        }
    }

    fn show(&self) -> String {
        format!(
            "p50 {:.2} / p99 {:.2} / max {:.2} ms ({})",
            self.p50, self.p99, self.max, self.count
        )
    }
}

/// One variant's result in one round.
struct Outcome {
    deliveries: u64,
    seconds: f64,
    claim: Quantiles,
    read: Quantiles,
    delivered: Quantiles,
    whole: Quantiles,
    busy: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds.max(1e-9)
    }
}

/// The knobs of a run.
#[derive(Clone, Copy)]
struct Load {
    in_flight: usize,
    send: Duration,
}

/// A delivery's key: unique per run (`tag`) and index; e-mail and SMS
/// alternate, as an event asking for both would.
fn key(tag: &str, i: u64) -> DeliveryKey {
    let channel = if i.is_multiple_of(2) { "email" } else { "sms" };
    DeliveryKey::new(
        &format!("{tag}-{:08x}-4c0a-9f3e-{i:012x}", i >> 1),
        channel,
        Purpose::Confirmation,
    )
}

/// One delivery as the pipeline records it; panics on a ledger error (the
/// bench measures a working ledger).
async fn deliver(ledger: &Ledger, tag: &str, i: u64, load: Load, samples: &mut Samples) {
    let key = key(tag, i);
    let started = Instant::now();
    match ledger.claim(&key).await.expect("claim") {
        Claim::Granted => {}
        Claim::Busy { .. } => {
            samples.busy += 1;
            return;
        }
    }
    let claimed = Instant::now();
    let existing = ledger.get(&key).await.expect("read the record");
    let read = Instant::now();
    let mut d = existing.unwrap_or_else(|| {
        Delivery::new(
            &key,
            &format!("a-{}", i / 2),
            Recipient {
                email: Some("u***@example.com".into()),
                phone: Some("+1******0123".into()),
            },
        )
    });
    // In-between state: queued, not awaited (`note` in the worker).
    drop(ledger.put(Record {
        delivery: d.clone(),
        held: None,
    }));
    if !load.send.is_zero() {
        tokio::time::sleep(load.send).await;
    }
    let message_id = format!("<20261202.{i:016x}@mg.example.com>");
    d.push_attempt(AttemptRecord {
        number: 1,
        at: Utc::now(),
        outcome: "delivered".into(),
        provider_status: Some(200),
        latency_ms: Some(load.send.as_millis() as u64),
        snippet: Some(format!(
            r#"{{"id":"{message_id}","message":"Queued. Thank you."}}"#
        )),
    });
    d.provider_message_id = Some(message_id);
    d.set(State::Delivered, None);
    let sent = Instant::now();
    ledger
        .put(Record {
            delivery: d,
            held: None,
        })
        .await
        .expect("write the delivered record");
    let done = Instant::now();
    samples.claim.push(claimed - started);
    samples.read.push(read - claimed);
    samples.delivered.push(done - sent);
    samples.whole.push(done - started);
}

/// Deliveries `0..n` of run `tag`, `load.in_flight` at a time, delivery `i`
/// by replica `i % ledgers.len()`; the wall time and the samples.
async fn drive(ledgers: &[Ledger], tag: &str, n: u64, load: Load) -> (Duration, Samples) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.in_flight);
    for _ in 0..load.in_flight {
        let next = next.clone();
        let ledgers = ledgers.to_vec();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return samples;
                }
                let ledger = &ledgers[(i % ledgers.len() as u64) as usize];
                deliver(ledger, &tag, i, load, &mut samples).await;
            }
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.expect("delivery task"));
    }
    (started.elapsed(), all)
}

/// Warm-up, then the measured run.
async fn measure(ledgers: &[Ledger], tag: &str, n: u64, load: Load) -> Outcome {
    let warm = (n / 10).clamp(1, 1000);
    drive(ledgers, &format!("{tag}-warm"), warm, load).await;
    let (wall, mut samples) = drive(ledgers, tag, n, load).await;
    samples.sort();
    Outcome {
        deliveries: samples.whole.len() as u64,
        seconds: wall.as_secs_f64(),
        claim: Quantiles::of(&samples.claim),
        read: Quantiles::of(&samples.read),
        delivered: Quantiles::of(&samples.delivered),
        whole: Quantiles::of(&samples.whole),
        busy: samples.busy,
    }
}

/// The server to create databases on, as a superuser URL.
struct Server {
    admin: url::Url,
    pool_size: u32,
}

impl Server {
    fn from_env() -> Option<Server> {
        let raw = ["NOTIFY_BENCH_PG_URL", "NOTIFY_TEST_PG_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))?;
        let admin = url::Url::parse(raw.trim()).expect("NOTIFY_BENCH_PG_URL is not a URL");
        Some(Server {
            admin,
            pool_size: env_u64("NOTIFY_BENCH_POOL_SIZE", DEFAULT_LEDGER_POOL_SIZE) as u32,
        })
    }

    fn url_of(&self, database: &str) -> url::Url {
        let mut u = self.admin.clone();
        u.set_path(&format!("/{database}"));
        u
    }

    async fn sql(&self, statement: &str) -> Result<(), sqlx::Error> {
        let mut conn = sqlx::PgConnection::connect(self.admin.as_str()).await?;
        sqlx::query(statement).execute(&mut conn).await?;
        conn.close().await
    }

    /// A fresh database and `replicas` backends on it, each its own host.
    async fn replicas(&self, database: &str, replicas: usize) -> Vec<Ledger> {
        self.sql(&format!("CREATE DATABASE \"{database}\""))
            .await
            .expect("CREATE DATABASE");
        let url = self.url_of(database);
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        let mut ledgers = Vec::new();
        for r in 0..replicas {
            let config = PostgresLedger {
                url: Secret::new(url.to_string()),
                url_shown: shown.to_string(),
                pool_size: self.pool_size,
                lease: Duration::from_secs_f64(DEFAULT_LEDGER_LEASE_SECONDS),
                connect_timeout: Duration::from_secs_f64(DEFAULT_LEDGER_CONNECT_TIMEOUT_SECONDS),
                owner: format!("bench-replica-{r}"),
            };
            let backend = Postgres::connect(&config, RETENTION)
                .await
                .expect("connect the PostgreSQL ledger");
            ledgers.push(Ledger::new(Arc::new(backend)));
        }
        ledgers
    }

    /// Drops a variant's database (its backends are gone; FORCE closes
    /// what their pools still hold).
    async fn drop_database(&self, database: &str) {
        if let Err(e) = self
            .sql(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .await
        {
            println!("note: cannot drop the bench database {database}: {e}");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Embedded,
    Postgres(usize),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Embedded => "embedded (redb)".to_string(),
            Variant::Postgres(n) => format!("postgres x{n}"),
        }
    }
}

async fn run_variant(
    variant: Variant,
    server: Option<&Server>,
    dir: &std::path::Path,
    tag: &str,
    n: u64,
    load: Load,
) -> Outcome {
    match variant {
        Variant::Embedded => {
            let path = dir.join(format!("{tag}.redb"));
            let ledger = Ledger::new(Arc::new(
                Embedded::open(&path, RETENTION, CACHE_BYTES).expect("open the redb ledger"),
            ));
            let outcome = measure(std::slice::from_ref(&ledger), tag, n, load).await;
            drop(ledger);
            let _ = std::fs::remove_file(&path);
            outcome
        }
        Variant::Postgres(replicas) => {
            let server = server.expect("a PostgreSQL variant without a server");
            let database = format!(
                "notify_bench_{tag}_{}_{:08x}",
                std::process::id(),
                fastrand::u32(..)
            );
            let ledgers = server.replicas(&database, replicas).await;
            let outcome = measure(&ledgers, tag, n, load).await;
            drop(ledgers);
            // The writers drain and the heartbeats stop on drop; let them.
            tokio::time::sleep(Duration::from_millis(200)).await;
            server.drop_database(&database).await;
            outcome
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // too, as a smoke test of a second or two.
    let benching = std::env::args().any(|a| a == "--bench");
    let n = env_u64(
        "NOTIFY_BENCH_DELIVERIES",
        if benching { 20_000 } else { 300 },
    )
    .max(1);
    let load = Load {
        in_flight: env_u64("NOTIFY_BENCH_IN_FLIGHT", if benching { 256 } else { 32 }).max(1)
            as usize,
        send: Duration::from_millis(env_u64("NOTIFY_BENCH_SEND_MS", 1)),
    };
    let rounds = env_u64("NOTIFY_BENCH_ROUNDS", if benching { 3 } else { 1 }).max(1);
    let server = Server::from_env();
    let mut variants = vec![Variant::Embedded];
    match &server {
        Some(s) => {
            variants.push(Variant::Postgres(1));
            variants.push(Variant::Postgres(3));
            let mut shown = s.admin.clone();
            let _ = shown.set_password(None);
            println!(
                "PostgreSQL server: {shown} (a fresh database per variant and round; pool_size {})",
                s.pool_size
            );
        }
        None => println!(
            "note: no NOTIFY_BENCH_PG_URL or NOTIFY_TEST_PG_URL: the PostgreSQL variants are skipped (bench/replicas.sh starts a server and sets it)"
        ),
    }
    println!(
        "{n} deliveries per variant and round, {} in flight, {} ms simulated send, {rounds} round(s); load average {}",
        load.in_flight,
        load.send.as_millis(),
        load_average()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results: Vec<(Variant, Vec<Outcome>)> =
        variants.iter().map(|v| (*v, Vec::new())).collect();
    runtime.block_on(async {
        for round in 1..=rounds {
            for (variant, outcomes) in &mut results {
                let tag = match variant {
                    Variant::Embedded => format!("r{round}_embedded"),
                    Variant::Postgres(k) => format!("r{round}_pg{k}"),
                };
                let o = run_variant(*variant, server.as_ref(), dir.path(), &tag, n, load).await;
                println!(
                    "round {round} {}: {} deliveries in {:.2} s = {:.0}/s{}\n  claim {}\n  read {}\n  delivered record {}\n  whole delivery {}",
                    variant.name(),
                    o.deliveries,
                    o.seconds,
                    o.rate(),
                    if o.busy > 0 { format!(" ({} claims busy!)", o.busy) } else { String::new() },
                    o.claim.show(),
                    o.read.show(),
                    o.delivered.show(),
                    o.whole.show(),
                );
                outcomes.push(o);
            }
        }
    });

    println!();
    println!("Medians over {rounds} round(s) (ms; raw rounds in brackets):");
    println!("| variant | deliveries/s | vs embedded | claim p50 | claim p99 | delivered record p50 | delivered record p99 | read p50/p99 | whole p50/p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let base = median(results[0].1.iter().map(Outcome::rate).collect());
    for (variant, outcomes) in &results {
        let col = |f: &dyn Fn(&Outcome) -> f64, fmt: fn(f64) -> String| {
            let raw: Vec<String> = outcomes.iter().map(|o| fmt(f(o))).collect();
            format!(
                "{} [{}]",
                fmt(median(outcomes.iter().map(f).collect())),
                raw.join(" / ")
            )
        };
        let rate = median(outcomes.iter().map(Outcome::rate).collect());
        let two = |v: f64| format!("{v:.2}");
        println!(
            "| {} | {} | {:.2}x | {} | {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} |",
            variant.name(),
            col(&|o| o.rate(), |v| format!("{v:.0}")),
            rate / base,
            col(&|o| o.claim.p50, two),
            col(&|o| o.claim.p99, two),
            col(&|o| o.delivered.p50, two),
            col(&|o| o.delivered.p99, two),
            median(outcomes.iter().map(|o| o.read.p50).collect()),
            median(outcomes.iter().map(|o| o.read.p99).collect()),
            median(outcomes.iter().map(|o| o.whole.p50).collect()),
            median(outcomes.iter().map(|o| o.whole.p99).collect()),
        );
    }
    println!("load average after: {}", load_average());
}
