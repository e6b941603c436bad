//! The summary: a table for people, the same numbers as JSON for machines.

use std::fmt::Write;

use serde::Serialize;

use crate::runs::{Cores, Percentiles, RunResult};
use crate::standin::Capacity;

/// The targets, checked in the summary.
const TARGET_EVENTS_PER_SECOND: f64 = 5_000.0;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_OFFERED_RATE: f64 = 1_000.0;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub provider_latency_ms: u64,
    pub keys: u64,
    pub cores: usize,
    pub standin_capacity: Capacity,
    pub runs: Vec<RunResult>,
    /// Throughput run events/s ÷ sequential run events/s.
    pub concurrency_speedup: Option<f64>,
}

impl Summary {
    pub fn new(latency_ms: u64, keys: u64, capacity: Capacity, runs: Vec<RunResult>) -> Summary {
        let rate = |label: &str| {
            runs.iter()
                .find(|r| r.label == label)
                .map(|r| r.events_per_second)
        };
        let concurrency_speedup = match (rate("throughput"), rate("sequential")) {
            (Some(c), Some(s)) if s > 0.0 => Some(c / s),
            _ => None,
        };
        Summary {
            provider_latency_ms: latency_ms,
            keys,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            standin_capacity: capacity,
            runs,
            concurrency_speedup,
        }
    }

    pub fn table(&self) -> String {
        let cap = &self.standin_capacity;
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "notify-bench: {} cores, provider latency {} ms, {} keys",
            self.cores, self.provider_latency_ms, self.keys
        );
        let _ = writeln!(
            out,
            "stand-in capacity: {:.0} requests/s ({} concurrent, {} s, {} errors)",
            cap.requests_per_second, cap.concurrency, cap.seconds, cap.errors
        );
        let _ = writeln!(out);

        type Cell = fn(&RunResult, f64) -> String;
        let rows: &[(&str, Cell)] = &[
            ("max_in_flight", |r, _| {
                r.max_in_flight
                    .map_or("default".to_string(), |n| n.to_string())
            }),
            ("events", |r, _| r.events.to_string()),
            ("offered rate (events/s)", |r, _| {
                r.offered_rate
                    .map_or("backlog".to_string(), |x| format!("{x:.0}"))
            }),
            ("publish time (s)", |r, _| {
                format!("{:.2}", r.publish_seconds)
            }),
            ("window (s)", |r, _| format!("{:.2}", r.window_seconds)),
            ("events/s end to end", |r, _| {
                format!("{:.0}", r.events_per_second)
            }),
            ("provider calls/s", |r, _| {
                format!("{:.0}", r.provider_calls_per_second)
            }),
            ("  share of stand-in capacity", |r, cap| {
                if cap > 0.0 {
                    format!("{:.1}%", 100.0 * r.provider_calls_per_second / cap)
                } else {
                    "-".to_string()
                }
            }),
            ("latency from ack p50/p99 (ms)", |r, _| {
                pair(&r.latency_from_ack_ms)
            }),
            ("latency from send p50/p99 (ms)", |r, _| {
                pair(&r.latency_from_send_ms)
            }),
            ("latency from ack max (ms)", |r, _| {
                format!("{:.1}", r.latency_from_ack_ms.max)
            }),
            ("provider requests recv/expected", |r, _| {
                format!("{}/{}", r.requests_received, r.requests_expected)
            }),
            ("  duplicates/missing/foreign", |r, _| {
                format!("{}/{}/{}", r.duplicates, r.missing, r.foreign)
            }),
            ("host peak RSS (MiB)", |r, _| {
                format!("{:.1}", r.host_peak_rss_mib)
            }),
            ("host CPU (s, whole life)", |r, _| {
                format!("{:.2}", r.host_cpu_seconds)
            }),
            ("host CPU per event (ms, window)", |r, _| {
                format!("{:.3}", r.host_cpu_ms_per_event)
            }),
            ("host cores avg/max", |r, _| cores(r.host_cores)),
            ("broker cores avg/max", |r, _| cores(r.broker_cores)),
            ("bench (stand-in) cores avg/max", |r, _| {
                cores(r.bench_cores)
            }),
            ("machine busy cores avg/max", |r, _| cores(r.machine_cores)),
            ("host exit", |r, _| r.host_exit.clone()),
        ];
        let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|(_, f)| {
                self.runs
                    .iter()
                    .map(|r| f(r, cap.requests_per_second))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..self.runs.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|row| row[i].len())
                    .chain(std::iter::once(self.runs[i].label.len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = write!(out, "{:label_width$}", "");
        for (r, w) in self.runs.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", r.label);
        }
        let _ = writeln!(out);
        for ((label, _), row) in rows.iter().zip(&cells) {
            let _ = write!(out, "{label:label_width$}");
            for (cell, w) in row.iter().zip(&widths) {
                let _ = write!(out, "  {cell:>w$}");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);

        for r in &self.runs {
            if !r.duplicate_examples.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: duplicates, e.g. {}",
                    r.label,
                    r.duplicate_examples.join(", ")
                );
            }
            if !r.missing_examples.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: missing, e.g. {}",
                    r.label,
                    r.missing_examples.join(", ")
                );
            }
        }
        if let Some(x) = self.concurrency_speedup {
            let _ = writeln!(out, "throughput ÷ sequential events/s: {x:.1}×");
        }
        if let Some(t) = self.runs.iter().find(|r| r.label == "throughput") {
            let _ = writeln!(
                out,
                "target ≥ {TARGET_EVENTS_PER_SECOND:.0} events/s: {} ({:.0} events/s)",
                verdict(t.events_per_second >= TARGET_EVENTS_PER_SECOND),
                t.events_per_second
            );
        }
        if let Some(l) = self.runs.iter().find(|r| r.label == "latency") {
            let rate = l.offered_rate.unwrap_or(0.0);
            let note = if (rate - TARGET_OFFERED_RATE).abs() > f64::EPSILON {
                format!(
                    " (measured at {rate:.0} events/s, the target is at {TARGET_OFFERED_RATE:.0})"
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "target p99 added latency ≤ {TARGET_P99_MS:.0} ms at {TARGET_OFFERED_RATE:.0} events/s: {} (p99 {:.1} ms from ack, {:.1} ms from send){note}",
                verdict(l.latency_from_ack_ms.p99 <= TARGET_P99_MS),
                l.latency_from_ack_ms.p99,
                l.latency_from_send_ms.p99
            );
        }
        out
    }
}

fn pair(p: &Percentiles) -> String {
    format!("{:.1}/{:.1}", p.p50, p.p99)
}

fn cores(c: Cores) -> String {
    format!("{:.2}/{:.2}", c.avg, c.max)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
