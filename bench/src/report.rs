//! The summary: a table for people, the same numbers as JSON for machines.

use std::fmt::Write;

use serde::Serialize;

use crate::host::{EmailAuth, Instances};
use crate::runs::{ByChannel, Cores, OutageResult, Percentiles, PluginCall, RunResult};
use crate::standin::Capacity;
use crate::startup::{StartupResult, StartupStats};

/// The targets, checked in the summary.
const TARGET_EVENTS_PER_SECOND: f64 = 5_000.0;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_OFFERED_RATE: f64 = 1_000.0;
/// Issue 10: requests into an outage, per second per channel.
const TARGET_OUTAGE_REQUESTS_PER_SECOND: f64 = 1.0;
/// Issue 10: the drain after an outage as a share of normal throughput.
const TARGET_DRAIN_SHARE: f64 = 0.8;
/// Issue 10's outage is at this offered rate.
const TARGET_OUTAGE_RATE: f64 = 100.0;
const NO_NORMAL_RATE: &str = "n/a (run with --runs throughput,outage)";

/// The plugin set-up every run of the invocation shares.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub email_plugin: String,
    pub email_auth: EmailAuth,
    /// None: the host's default (fresh).
    pub email_instances: Option<Instances>,
    /// None: the host's default (its CPU cores).
    pub max_concurrent_calls: Option<u64>,
    /// None: sized by the host.
    pub plugin_instances: Option<u64>,
    /// Host processes per event run, in one group.
    pub hosts: usize,
    /// Partitions of the events topic.
    pub partitions: i32,
    /// A backlog was published once the hosts were ready.
    pub ready_first: bool,
    /// `embedded`, or `postgres (URL without password)`.
    pub ledger: String,
    /// None: the host's default.
    pub ledger_pool_size: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub provider_latency_ms: u64,
    pub keys: u64,
    pub cores: usize,
    pub standin_capacity: Capacity,
    pub setup: Setup,
    pub runs: Vec<RunResult>,
    pub startup: Option<StartupResult>,
    /// Throughput run events/s ÷ sequential run events/s.
    pub concurrency_speedup: Option<f64>,
}

impl Summary {
    pub fn new(
        latency_ms: u64,
        keys: u64,
        capacity: Capacity,
        setup: Setup,
        mut runs: Vec<RunResult>,
        startup: Option<StartupResult>,
    ) -> Summary {
        let rate = |label: &str| {
            runs.iter()
                .find(|r| r.label == label)
                .map(|r| r.events_per_second)
        };
        let concurrency_speedup = match (rate("throughput"), rate("sequential")) {
            (Some(c), Some(s)) if s > 0.0 => Some(c / s),
            _ => None,
        };
        // The normal throughput an outage's drain is held against: the
        // backlog run of the same invocation, same machine and host.
        let normal = rate("throughput").filter(|r| *r > 0.0);
        for o in runs.iter_mut().filter_map(|r| r.outage.as_mut()) {
            o.normal_events_per_second = normal;
            o.drain_share_of_normal = normal.zip(o.drain_events_per_second).map(|(n, d)| d / n);
        }
        Summary {
            provider_latency_ms: latency_ms,
            keys,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            standin_capacity: capacity,
            setup,
            runs,
            startup,
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
        let setup = &self.setup;
        let _ = writeln!(
            out,
            "e-mail plugin: {} (auth {}, instances {}); plugins.max_concurrent_calls {}, plugins.max_instances {}",
            setup.email_plugin,
            match setup.email_auth {
                EmailAuth::None => "none",
                EmailAuth::Basic => "basic",
                EmailAuth::Hmac => "hmac",
            },
            setup
                .email_instances
                .map_or("default (fresh)", Instances::name),
            setup
                .max_concurrent_calls
                .map_or(format!("default ({})", self.cores), |n| n.to_string()),
            setup
                .plugin_instances
                .map_or("sized by the host".to_string(), |n| n.to_string()),
        );
        let _ = writeln!(
            out,
            "hosts: {} in one group, topic of {} partition(s){}; ledger {}{}",
            setup.hosts,
            setup.partitions,
            if setup.ready_first {
                ", backlog published once they were ready"
            } else {
                ""
            },
            setup.ledger,
            setup
                .ledger_pool_size
                .map_or(String::new(), |n| format!(", pool_size {n}"))
        );
        let _ = writeln!(out);
        if let Some(s) = &self.startup {
            startup_table(&mut out, s);
        }
        if self.runs.is_empty() {
            return out;
        }

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
            ("  start-up / window peak (MiB)", |r, _| {
                let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                format!(
                    "{}/{}",
                    mib(r.host_startup_peak_rss_mib),
                    mib(r.host_window_peak_rss_mib)
                )
            }),
            ("host CPU (s, whole life)", |r, _| {
                format!("{:.2}", r.host_cpu_seconds)
            }),
            ("host CPU per event (ms, window)", |r, _| {
                format!("{:.3}", r.host_cpu_ms_per_event)
            }),
            ("host cores avg/max", |r, _| cores(r.host_cores)),
            ("database cores avg/max", |r, _| {
                r.db_cores.map_or("-".to_string(), cores)
            }),
            ("events consumed per host", |r, _| {
                r.consumed_by_host
                    .iter()
                    .map(|c| c.map_or("?".to_string(), |n| n.to_string()))
                    .collect::<Vec<_>>()
                    .join("/")
            }),
            ("ledger claim p50/p99 est. (ms)", |r, _| {
                r.ledger_claim.as_ref().map_or("-".to_string(), |h| {
                    format!(
                        "{}/{}",
                        quantile_ms(h.p50_ms, h.top_bucket_ms),
                        quantile_ms(h.p99_ms, h.top_bucket_ms)
                    )
                })
            }),
            ("  mean (ms) / claims", |r, _| {
                r.ledger_claim.as_ref().map_or("-".to_string(), |h| {
                    format!("{}/{}", ms(h.mean_ms), h.count)
                })
            }),
            ("ledger final write p50/p99 est. (ms)", |r, _| {
                r.ledger_write.as_ref().map_or("-".to_string(), |h| {
                    format!(
                        "{}/{}",
                        quantile_ms(h.p50_ms, h.top_bucket_ms),
                        quantile_ms(h.p99_ms, h.top_bucket_ms)
                    )
                })
            }),
            ("  mean (ms) / writes", |r, _| {
                r.ledger_write.as_ref().map_or("-".to_string(), |h| {
                    format!("{}/{}", ms(h.mean_ms), h.count)
                })
            }),
            ("claim conflicts", |r, _| {
                r.claim_conflicts.map_or("0".to_string(), |n| n.to_string())
            }),
            ("broker cores avg/max", |r, _| cores(r.broker_cores)),
            ("bench (stand-in) cores avg/max", |r, _| {
                cores(r.bench_cores)
            }),
            ("machine busy cores avg/max", |r, _| cores(r.machine_cores)),
            ("dead letters", |r, _| {
                r.dead_letters
                    .map_or("unknown".to_string(), |n| n.to_string())
            }),
            ("retries email/sms", |r, _| {
                let of = |c: &str| r.retries.get(c).map_or("-".to_string(), u64::to_string);
                format!("{}/{}", of("email"), of("sms"))
            }),
            ("host log WARN+ / deadline lines", |r, _| {
                format!("{}/{}", r.host_log_warnings, r.host_log_deadline_lines)
            }),
            ("plugins loaded email/sms (ms)", |r, _| {
                let of = |c: &str| {
                    r.plugin_loads
                        .get(c)
                        .map_or("?".to_string(), |(source, ms)| format!("{source} {ms:.0}"))
                };
                format!("{}/{}", of("email"), of("sms"))
            }),
            ("host exit", |r, _| r.host_exit.clone()),
        ];
        type OutageCell = fn(&OutageResult) -> String;
        let outage_rows: &[(&str, OutageCell)] = &[
            ("outage: warm-up/down/tail (s)", |o| {
                format!(
                    "{:.0}/{:.1}/{:.0}",
                    o.warmup_seconds, o.outage_seconds, o.tail_seconds
                )
            }),
            ("  events offered (while down)", |o| {
                format!("{} ({})", o.events_offered, o.events_offered_during_outage)
            }),
            ("  requests while down email/sms", |o| {
                by_channel(o.requests_during_outage, |n| n.to_string())
            }),
            ("  per second email/sms", |o| {
                by_channel(o.requests_per_second_during_outage, |x| format!("{x:.3}"))
            }),
            ("  busiest second email/sms", |o| {
                by_channel(o.busiest_outage_second, |n| n.to_string())
            }),
            ("  peak in flight/limit", |o| {
                format!(
                    "{}/{}",
                    o.peak_in_flight
                        .map_or("unknown".to_string(), |n| n.to_string()),
                    o.in_flight_limit
                )
            }),
            ("  intake stopped", |o| {
                match o.intake_stopped_after_seconds {
                    Some(s) => format!("after {s:.0} s"),
                    None => "no".to_string(),
                }
            }),
            ("  consumed/offered at recovery", |o| {
                format!(
                    "{}/{}",
                    o.consumed_at_recovery
                        .map_or("unknown".to_string(), |n| n.to_string()),
                    o.offered_at_recovery
                )
            }),
            ("  recovery → first accepted email/sms (s)", |o| {
                by_channel(o.recovery_to_first_accepted_seconds, seconds)
            }),
            ("  backlog at recovery (events)", |o| {
                o.backlog_events.to_string()
            }),
            ("  recovery → drained (s)", |o| {
                seconds(o.recovery_to_drained_seconds)
            }),
            ("  drain rate (events/s)", |o| {
                o.drain_events_per_second
                    .map_or("-".to_string(), |x| format!("{x:.0}"))
            }),
            ("  drain ÷ throughput run", |o| {
                match (o.drain_share_of_normal, o.normal_events_per_second) {
                    (Some(share), Some(n)) => format!("{:.1}% of {n:.0}", 100.0 * share),
                    (None, Some(_)) => "-".to_string(),
                    _ => NO_NORMAL_RATE.to_string(),
                }
            }),
        ];
        let mut lines: Vec<(&str, Vec<String>)> = rows
            .iter()
            .map(|(label, f)| {
                let row = self
                    .runs
                    .iter()
                    .map(|r| f(r, cap.requests_per_second))
                    .collect();
                (*label, row)
            })
            .collect();
        // Plugin call times, one row per channel and call any run has.
        let mut calls: Vec<(String, String)> = Vec::new();
        for c in self.runs.iter().flat_map(|r| &r.plugin_calls) {
            if !calls
                .iter()
                .any(|(ch, call)| *ch == c.channel && *call == c.call)
            {
                calls.push((c.channel.clone(), c.call.clone()));
            }
        }
        let mut call_labels: Vec<String> = Vec::new();
        let mut call_rows: Vec<Vec<String>> = Vec::new();
        for (channel, call) in &calls {
            let find = |r: &RunResult| -> Option<PluginCall> {
                r.plugin_calls
                    .iter()
                    .find(|c| c.channel == *channel && c.call == *call)
                    .cloned()
            };
            call_labels.push(format!("plugin {channel} {call} p50/p99 est. (ms)"));
            call_rows.push(
                self.runs
                    .iter()
                    .map(|r| {
                        find(r).map_or("-".to_string(), |c| {
                            format!(
                                "{}/{}",
                                quantile_ms(c.p50_ms, c.top_bucket_ms),
                                quantile_ms(c.p99_ms, c.top_bucket_ms)
                            )
                        })
                    })
                    .collect(),
            );
            call_labels.push("  mean (ms) / calls".to_string());
            call_rows.push(
                self.runs
                    .iter()
                    .map(|r| {
                        find(r).map_or("-".to_string(), |c| {
                            format!("{}/{}", ms(c.mean_ms), c.count)
                        })
                    })
                    .collect(),
            );
        }
        // Outage rows only when an outage ran, so the other reports keep
        // their shape.
        if self.runs.iter().any(|r| r.outage.is_some()) {
            lines.extend(outage_rows.iter().map(|(label, f)| {
                let row = self
                    .runs
                    .iter()
                    .map(|r| r.outage.as_ref().map_or("-".to_string(), f))
                    .collect();
                (*label, row)
            }));
        }
        let call_lines = call_labels.iter().map(String::as_str).zip(call_rows);
        lines.extend(call_lines);
        let label_width = lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..self.runs.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|(_, row)| row[i].chars().count())
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
        for (label, row) in &lines {
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
        if !calls.is_empty() {
            let _ = writeln!(
                out,
                "plugin call p50/p99: estimated from the host's notify_plugin_call_duration_seconds buckets (x3 apart: 10 us, 30 us, 90 us, ... 590 ms; linear within a bucket; >X: in the +Inf bucket); the host's timing includes the wait at the max_concurrent_calls gate; the mean is exact"
            );
        }
        if self
            .runs
            .iter()
            .any(|r| r.ledger_claim.is_some() || r.ledger_write.is_some())
        {
            let _ = writeln!(
                out,
                "ledger claim / final write p50/p99: estimated from the hosts' notify_ledger_claim_seconds and notify_ledger_write_seconds buckets (x2 apart: 0.1, 0.2, 0.4, ... 6553.6 ms; linear within a bucket), every host's added up; the mean is exact"
            );
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
        for r in &self.runs {
            if let Some(o) = &r.outage {
                outage_verdicts(&mut out, r, o);
            }
        }
        out
    }
}

/// Issue 10's targets for one outage run.
fn outage_verdicts(out: &mut String, r: &RunResult, o: &OutageResult) {
    let note = if (o.offered_rate - TARGET_OUTAGE_RATE).abs() > f64::EPSILON
        || o.outage_seconds < 599.0
    {
        format!(
            " (a {:.0} s outage at {:.0} events/s; the target is for 600 s at {TARGET_OUTAGE_RATE:.0})",
            o.outage_seconds, o.offered_rate
        )
    } else {
        String::new()
    };
    let _ = writeln!(out, "outage run{note}:");
    match r.dead_letters {
        Some(n) => {
            let reasons = if r.dead_letter_reasons.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = r
                    .dead_letter_reasons
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                format!(": {}", list.join(", "))
            };
            let _ = writeln!(
                out,
                "  target 0 dead letters: {} ({n}{reasons})",
                verdict(n == 0)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  target 0 dead letters: unknown (the host's /metrics could not be read)"
            );
        }
    }
    let rates = o.requests_per_second_during_outage;
    let _ = writeln!(
        out,
        "  target ≤ {TARGET_OUTAGE_REQUESTS_PER_SECOND:.0} request/s per channel while down: {} (email {:.3}/s, sms {:.3}/s: {} and {} requests in {:.0} s)",
        verdict(rates.email <= TARGET_OUTAGE_REQUESTS_PER_SECOND && rates.sms <= TARGET_OUTAGE_REQUESTS_PER_SECOND),
        rates.email,
        rates.sms,
        o.requests_during_outage.email,
        o.requests_during_outage.sms,
        o.outage_seconds
    );
    let _ = writeln!(
        out,
        "  recovery to backlog drained: {} s ({} events; the first accepted request {} s after recovery for email, {} s for sms: each channel's next probe)",
        seconds(o.recovery_to_drained_seconds),
        o.backlog_events,
        seconds(o.recovery_to_first_accepted_seconds.email),
        seconds(o.recovery_to_first_accepted_seconds.sms)
    );
    let drain = match (o.drain_share_of_normal, o.normal_events_per_second) {
        (Some(share), Some(normal)) => format!(
            "{} ({:.0} events/s, {:.1}% of the throughput run's {normal:.0})",
            verdict(share >= TARGET_DRAIN_SHARE),
            o.drain_events_per_second.unwrap_or(0.0),
            100.0 * share
        ),
        (None, Some(_)) => "NOT met (the backlog was not seen to drain)".to_string(),
        _ => NO_NORMAL_RATE.to_string(),
    };
    let _ = writeln!(
        out,
        "  target drain ≥ {:.0}% of normal throughput: {drain}",
        100.0 * TARGET_DRAIN_SHARE
    );
}

/// The start-up run: cold and cached medians, then every start.
fn startup_table(out: &mut String, s: &StartupResult) {
    let _ = writeln!(
        out,
        "start-up (`notify-host run`, only the e-mail channel; {} cold/cached pairs; medians):",
        s.repeats
    );
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>9} {:>10} {:>14} {:>15}  plugin source",
        "cache", "starts", "live (s)", "ready (s)", "peak RSS (MiB)", "plugin load (ms)"
    );
    let row = |out: &mut String, name: &str, st: &StartupStats| {
        let _ = writeln!(
            out,
            "{name:<8} {:>6} {:>9.3} {:>10.3} {:>14.1} {:>15}  {}",
            st.starts,
            st.live_seconds,
            st.ready_seconds,
            st.peak_rss_mib,
            st.plugin_load_ms
                .map_or("?".to_string(), |m| format!("{m:.0}")),
            if st.sources_as_expected {
                "as expected"
            } else {
                "NOT as expected (see the samples)"
            }
        );
    };
    row(out, "cold", &s.cold);
    row(out, "cached", &s.cached);
    let samples: Vec<String> = s
        .samples
        .iter()
        .map(|x| {
            format!(
                "#{} {} live {:.3} ready {:.3} rss {:.1} load {} {}",
                x.repeat,
                if x.cold { "cold" } else { "cached" },
                x.live_seconds,
                x.ready_seconds,
                x.peak_rss_mib,
                x.plugin_load_ms
                    .map_or("?".to_string(), |m| format!("{m:.0}")),
                x.plugin_source.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let _ = writeln!(out, "raw: {}", samples.join("; "));
    let _ = writeln!(
        out,
        "live: /health/live answers (config, plugins, ledger, DLQ check done); ready: /health/ready (partitions assigned too: the consumer group join, about half the 6 s session timeout against tansu)"
    );
    let _ = writeln!(out);
}

/// A quantile estimate; `>X` when it is the top finite bucket bound (the
/// rank fell in `+Inf`).
fn quantile_ms(v: Option<f64>, top: Option<f64>) -> String {
    match (v, top) {
        (Some(v), Some(t)) if v >= t => format!(">{}", ms(Some(t))),
        _ => ms(v),
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 1.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.2}"),
        None => "-".to_string(),
    }
}

fn by_channel<T: Copy>(v: ByChannel<T>, f: fn(T) -> String) -> String {
    format!("{}/{}", f(v.email), f(v.sms))
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.1}"))
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
