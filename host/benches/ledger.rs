//! The ledger at size: fills an embedded ledger with N deliveries (default
//! 1,000,000; `NOTIFY_BENCH_DELIVERIES`), then prints the file size per
//! delivery, the process's RSS, list and lookup latencies (p50/p99 over
//! repeated requests), and one retention pass over the whole file (its
//! write-lock hold).
//!
//! `cargo bench -p notify-host --bench ledger` (release build; under
//! `cargo test` it runs 2,000 deliveries as a smoke test). Keep the
//! file for an HTTP measurement against a real host with
//! `NOTIFY_BENCH_KEEP=/path/ledger.redb`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use notify_host::ledger::embedded::Embedded;
use notify_host::ledger::{
    AttemptRecord, Delivery, DeliveryKey, Filter, Ledger, Purpose, Recipient, Record, State,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A delivered record as the pipeline writes it: one attempt with a
/// Mailgun-sized answer snippet.
fn delivered(i: u64) -> Record {
    let channel = if i.is_multiple_of(3) { "sms" } else { "email" };
    let key = DeliveryKey {
        event_id: format!("{:08x}-5b1e-4c0a-9f3e-{:012x}", i >> 20, i),
        channel: channel.to_string(),
        purpose: Purpose::Confirmation,
        reminder: None,
    };
    let mut d = Delivery::new(
        &key,
        &format!("a-{}", i / 2),
        Recipient {
            email: Some("u***@example.com".into()),
            phone: Some("+1******0123".into()),
        },
    );
    d.push_attempt(AttemptRecord {
        number: 1,
        at: Utc::now(),
        outcome: "delivered".into(),
        provider_status: Some(200),
        latency_ms: Some(42),
        snippet: Some(format!(
            r#"{{"id":"<20261202.{i:016x}@mg.example.com>","message":"Queued. Thank you."}}"#
        )),
    });
    d.provider_message_id = Some(format!("<20261202.{i:016x}@mg.example.com>"));
    d.state = if i.is_multiple_of(50) {
        State::DeadLettered
    } else {
        State::Delivered
    };
    Record {
        delivery: d,
        held: None,
    }
}

/// Writes `n` delivered records as the pipeline does: many writers at
/// once, group-committed.
async fn fill(ledger: &Ledger, n: u64) {
    let mut pending = Vec::with_capacity(1024);
    for i in 0..n {
        pending.push(ledger.put(delivered(i)));
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

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // too, as a smoke test at a size that takes a second.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("NOTIFY_BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 2_000 });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = match std::env::var("NOTIFY_BENCH_KEEP") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => dir.path().join("ledger.redb"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let retention = Duration::from_secs(168 * 3600);
    runtime.block_on(async {
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&path, retention, 16 << 20).expect("open"),
        ));
        let started = Instant::now();
        fill(&ledger, n).await;
        let fill_time = started.elapsed();
        let stats = ledger.stats().await.expect("stats");
        println!(
            "filled {n} deliveries in {:.1} s ({:.0}/s); file {:.1} MiB = {:.0} bytes per delivery; {} buckets; RSS {:.1} MiB",
            fill_time.as_secs_f64(),
            n as f64 / fill_time.as_secs_f64(),
            stats.file_bytes as f64 / 1048576.0,
            stats.file_bytes as f64 / n as f64,
            stats.buckets,
            rss_mib()
        );

        let time = |label: &str, samples: &mut Vec<Duration>| {
            samples.sort();
            println!(
                "{label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
                percentile(samples, 0.5).as_secs_f64() * 1e3,
                percentile(samples, 0.99).as_secs_f64() * 1e3,
                samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
                samples.len()
            );
        };
        let filters = [
            ("list newest 100", Filter::default()),
            (
                "list channel=sms 100",
                Filter {
                    channel: Some("sms".into()),
                    ..Filter::default()
                },
            ),
            (
                "list state=dead_lettered 100 (1 in 50)",
                Filter {
                    state: Some(State::DeadLettered),
                    ..Filter::default()
                },
            ),
        ];
        for (label, filter) in filters {
            let mut samples = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..500 {
                let t = Instant::now();
                let page = ledger
                    .list(&filter, 100, cursor.as_deref())
                    .await
                    .expect("list");
                samples.push(t.elapsed());
                // Walk on, so deep pages are measured too.
                cursor = page.next_cursor;
            }
            time(label, &mut samples);
        }
        let mut samples = Vec::new();
        for k in 0..2000u64 {
            let i = (k * 7919) % n;
            let key = delivered(i).delivery.key();
            let t = Instant::now();
            let found = ledger.get(&key).await.expect("get");
            samples.push(t.elapsed());
            assert!(found.is_some());
        }
        time("lookup by key (dedup check)", &mut samples);
        println!("RSS after reads {:.1} MiB", rss_mib());
        drop(ledger);

        if std::env::var("NOTIFY_BENCH_KEEP").is_ok() {
            println!("kept {}", path.display());
            return;
        }
        // The retention pass: the same deliveries written again with an
        // 8 s retention (1 s buckets: about 20 while filling, as a sweep
        // would keep it to 9), then, once all are past it, one pass drops
        // every bucket.
        let path = dir.path().join("sweep.redb");
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&path, Duration::from_secs(8), 16 << 20).expect("open"),
        ));
        fill(&ledger, n).await;
        let before = ledger.stats().await.expect("stats");
        tokio::time::sleep(Duration::from_secs(9)).await;
        let t = Instant::now();
        let sweep = ledger.sweep().await.expect("sweep");
        println!(
            "retention pass: {} of {} records in {} buckets dropped, one bucket per transaction; longest writer hold {:.1} ms ({:.1} ms end to end)",
            sweep.records_dropped,
            before.records,
            sweep.buckets_dropped,
            sweep.held_writer.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    });
}
