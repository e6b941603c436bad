//! Reminders at size, against the real host binary and plugin.
//!
//! 1. Pending: fills a ledger with N scheduled reminders (default 1,000,000,
//!    `NOTIFY_BENCH_PENDING`) spread over the next 30 days, each keeping its
//!    booking, as the pipeline writes them. Prints the fill rate, the file
//!    size per reminder, then starts `notify-host run` on that file and
//!    prints the time until its scheduler's first pass (from
//!    `/health/ready`) and the host's RSS.
//! 2. Burst: a fresh ledger with M reminders (default 100,000,
//!    `NOTIFY_BENCH_BURST`) all due in the same second, a Mailgun stand-in
//!    answering after 50 ms (`NOTIFY_BENCH_LATENCY_MS`). Starts the host and
//!    prints the time to fire them all, the reminders per second, and the
//!    lateness (arrival at the stand-in minus due) p50/p99/max.
//!
//! No broker is needed: reminders fire without Kafka (the host's start-up
//! check of the dead-letter topic gives up after 5 s and starts anyway, so
//! start-up times below include those 5 s; the line says so).
//!
//! `cargo bench -p notify-host --bench reminders` (release). Under
//! `cargo test` it runs 2,000 pending and 500 due as a smoke test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use notify_host::ledger::embedded::Embedded;
use notify_host::ledger::{
    Delivery, DeliveryKey, HeldMessage, Ledger, Purpose, Recipient, Record, State,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A scheduled reminder as the pipeline writes it, with its booking.
fn reminder(i: u64, due: DateTime<Utc>, appointment: DateTime<Utc>) -> Record {
    let event_id = format!("{:08x}-5b1e-4c0a-9f3e-{:012x}", i >> 20, i);
    let appointment_id = format!("a-{i}");
    let mut key = DeliveryKey::new(&event_id, "email", Purpose::Reminder);
    key.reminder = Some("day-before".into());
    let mut d = Delivery::new(
        &key,
        &appointment_id,
        Recipient {
            email: Some("u***@example.com".into()),
            phone: None,
        },
    );
    d.state = State::Scheduled;
    d.due_at = Some(due);
    d.useful_until = Some(appointment);
    let payload = serde_json::json!({
        "event_id": event_id,
        "event_type": "appointments.created",
        "occurred_at": rfc3339(Utc::now()),
        "notify": { "email": true },
        "appointment": {
            "appointment_id": appointment_id,
            "user_id": i,
            "time": rfc3339(appointment),
            "email": "user@example.com",
        }
    })
    .to_string();
    Record {
        delivery: d,
        held: Some(HeldMessage {
            topic: "appointments.created".into(),
            key_b64: None,
            payload,
            headers: vec![],
        }),
    }
}

async fn fill(ledger: &Ledger, n: u64, due: impl Fn(u64) -> (DateTime<Utc>, DateTime<Utc>)) {
    let mut pending = Vec::with_capacity(1024);
    for i in 0..n {
        let (d, a) = due(i);
        pending.push(ledger.put(reminder(i, d, a)));
        if pending.len() == 1024 {
            for r in futures_util::future::join_all(pending.drain(..)).await {
                r.expect("put");
            }
        }
    }
    for r in futures_util::future::join_all(pending).await {
        r.expect("put");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A host config on `ledger` sending e-mail to `provider`; no broker.
fn config(dir: &Path, ledger: &Path, provider: &str, admin: u16) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:1"
topic = "bench.reminders"
dlq_topic = "bench.reminders.dlq"
group_id = "bench-reminders"

[ledger]
path = "{ledger}"

[admin]
listen = "127.0.0.1:{admin}"

[log]
format = "json"
level = "warn"

[plugins]
max_instances = 1024

[scheduler]
max_in_flight = 1024

[channels.email]
plugin = "{plugin}"
base_url = "{provider}"
timeout_seconds = 10
auth = {{ type = "basic", username = "api", password = "key-bench-0123456789" }}
settings = {{ domain = "mg.example.com", from = "noreply@mg.example.com" }}

[[reminders]]
name = "day-before"
before = "24h"
channels = ["email"]
"#,
        ledger = ledger.display(),
        plugin = root().join("plugins/mailgun.wasm").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_host(config: &Path) -> HostProcess {
    HostProcess(
        Command::new(env!("CARGO_BIN_EXE_notify-host"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start notify-host"),
    )
}

/// Waits until the host's scheduler has made its first pass.
fn wait_first_tick(
    runtime: &tokio::runtime::Runtime,
    admin: u16,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::new();
    runtime.block_on(async {
        while started.elapsed() < limit {
            let answer = client
                .get(format!("http://127.0.0.1:{admin}/health/ready"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = answer {
                if let Ok(text) = r.text().await {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["scheduler"]["last_tick_age_ms"].is_number() {
                        return Some(started.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
}

/// A Mailgun stand-in that answers after `latency`, recording arrivals.
struct Provider {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<SystemTime>>>,
    _runtime: tokio::runtime::Runtime,
}

fn provider(latency: Duration) -> Provider {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let arrivals: Arc<Mutex<Vec<SystemTime>>> = Arc::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            if let Ok(mut a) = seen.lock() {
                a.push(SystemTime::now());
            }
            tokio::time::sleep(latency).await;
            (
                [("content-type", "application/json")],
                r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#,
            )
        }
    });
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Provider {
        addr,
        arrivals,
        _runtime: runtime,
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env_n = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let pending_n = env_n(
        "NOTIFY_BENCH_PENDING",
        if benching { 1_000_000 } else { 2_000 },
    );
    let burst_n = env_n("NOTIFY_BENCH_BURST", if benching { 100_000 } else { 500 });
    let latency = Duration::from_millis(env_n("NOTIFY_BENCH_LATENCY_MS", 50));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let retention = Duration::from_secs(168 * 3600);

    // 1. Pending.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pending.redb");
    let now = Utc::now();
    let fill_time = runtime.block_on(async {
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&path, retention, 16 << 20).expect("open"),
        ));
        let started = Instant::now();
        // Due from a day ahead over the next 30 days.
        fill(&ledger, pending_n, |i| {
            let due = now
                + TimeDelta::hours(24)
                + TimeDelta::seconds((i * 2_592_000 / pending_n.max(1)) as i64);
            (due, due + TimeDelta::hours(24))
        })
        .await;
        let took = started.elapsed();
        assert_eq!(ledger.timer_count().await.expect("count"), pending_n);
        took
    });
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "pending: {pending_n} reminders written in {:.1} s ({:.0}/s); ledger {:.1} MiB = {:.0} bytes per reminder",
        fill_time.as_secs_f64(),
        pending_n as f64 / fill_time.as_secs_f64(),
        bytes as f64 / 1048576.0,
        bytes as f64 / pending_n.max(1) as f64
    );
    let admin = free_port();
    let nowhere = provider(latency);
    let cfg = config(
        dir.path(),
        &path,
        &format!("http://{}", nowhere.addr),
        admin,
    );
    let started = Instant::now();
    let host = start_host(&cfg);
    match wait_first_tick(&runtime, admin, Duration::from_secs(120)) {
        Some(t) => {
            // Settled: a few passes after the first.
            std::thread::sleep(Duration::from_secs(3));
            println!(
                "pending: host start to the scheduler's first pass {:.2} s (includes the 5 s dead-letter topic check without a broker); host RSS {:.1} MiB with {pending_n} pending",
                t.as_secs_f64(),
                rss_mib(host.0.id())
            );
        }
        None => println!(
            "pending: the scheduler did not report a pass within {:?}",
            started.elapsed()
        ),
    }
    drop(host);

    // 2. Burst.
    let path = dir.path().join("burst.redb");
    let due = Utc::now() + TimeDelta::seconds(if benching { 30 } else { 10 });
    let due = DateTime::<Utc>::from_timestamp(due.timestamp(), 0).unwrap_or(due);
    runtime.block_on(async {
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&path, retention, 16 << 20).expect("open"),
        ));
        fill(&ledger, burst_n, |_| (due, due + TimeDelta::hours(1))).await;
    });
    let stand_in = provider(latency);
    let admin = free_port();
    let cfg = config(
        dir.path(),
        &path,
        &format!("http://{}", stand_in.addr),
        admin,
    );
    let host = start_host(&cfg);
    if wait_first_tick(&runtime, admin, Duration::from_secs(60)).is_none() {
        println!("burst: the host did not start");
        return;
    }
    let started = Instant::now();
    let limit = Duration::from_secs(600);
    loop {
        let n = stand_in.arrivals.lock().map(|a| a.len()).unwrap_or(0) as u64;
        if n >= burst_n || started.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let arrivals = stand_in
        .arrivals
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    drop(host);
    let due_sys: SystemTime = due.into();
    let mut late: Vec<f64> = arrivals
        .iter()
        .map(|a| match a.duration_since(due_sys) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
        .collect();
    late.sort_by(|a, b| a.total_cmp(b));
    let span = late.last().copied().unwrap_or(0.0) - late.first().copied().unwrap_or(0.0);
    println!(
        "burst: {} of {burst_n} reminders due at {} reached the provider ({} ms latency); first to last {:.2} s = {:.0} reminders/s; lateness p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        arrivals.len(),
        rfc3339(due),
        latency.as_millis(),
        span,
        arrivals.len() as f64 / span.max(1e-9),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    assert_eq!(arrivals.len() as u64, burst_n, "every reminder fired once");
}
