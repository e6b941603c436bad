//! One measured run: fresh topics and group, events published, the hosts
//! (one, or `--hosts N` in one consumer group) started with the run's
//! config, and the wait until every event's offset is committed; then the
//! numbers, summed over the hosts.
//!
//! With `--ready-first` (always with several hosts) a backlog is published
//! only once every host is ready and the group's assignment has settled
//! (each host holds partitions and the split stands still for 2 s), so a
//! run with several hosts measures them working side by side, not the
//! rebalances of their start. Publishing then overlaps the first second or
//! so of the window.
//!
//! An outage run is a paced run during which the stand-in's providers go
//! down and come back (see [`OutagePlan`]); the wait then also samples the
//! host's `/metrics` and keeps the committed offset's history, from which
//! the drain after recovery is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::broker::{self, Broker, OffsetReader, Published};
use crate::events::EventRef;
use crate::host::{self, EmailChannel, Host, HostConfig, PostgresLedger, LEDGER_URL_VAR};
use crate::ledger::{LedgerChoice, RunDatabase};
use crate::standin::{Channel, OutageSwitch, Received, StandIn};
use crate::sys;

/// The host's default `pipeline.max_in_flight` (host/src/config): the limit
/// a run without `--max-in-flight` expects intake to stop at.
const HOST_DEFAULT_MAX_IN_FLIGHT: u64 = 512;

/// The host's default `circuits.probe_backoff_max`: after the providers come
/// back, the next probe may be this far off, and until it goes out nothing
/// moves; the stall clock must not count that wait.
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How long the host's consumed count must stand still during an outage to
/// say its intake stopped: three 1-second samples, at an offered rate that
/// brings new events every few milliseconds.
const INTAKE_QUIET: Duration = Duration::from_secs(3);

/// What every run shares.
pub struct Bench<'a> {
    pub rt: &'a Runtime,
    pub standin: &'a StandIn,
    pub broker: &'a Broker,
    pub host_bin: &'a Path,
    pub email: &'a EmailChannel,
    pub twilio_wasm: &'a Path,
    pub workdir: &'a Path,
    pub log_level: &'a str,
    pub kafka_client: &'a [(String, String)],
    pub plugin_instances: Option<u64>,
    pub max_concurrent_calls: Option<u64>,
    /// `plugins.cache_dir` of the event runs; filled by [`Bench::precompile`]
    /// unless `--cold-plugin-cache`.
    pub plugin_cache: &'a Path,
    pub keys: u64,
    pub stall_timeout: Duration,
    pub clock_ticks: f64,
    /// Host processes per run, in one consumer group.
    pub hosts: usize,
    /// Partitions of each run's events topic.
    pub partitions: i32,
    /// Start the hosts and wait for the group to settle before publishing
    /// a backlog (see the module doc).
    pub ready_first: bool,
    pub ledger: &'a LedgerChoice,
    /// Keep each run's database (with the work dir).
    pub keep_databases: bool,
    /// The PostgreSQL server's postmaster, for its CPU (`--db-pid`).
    pub db_pid: Option<u32>,
}

pub struct RunSpec {
    /// Short name: file names and the report's column.
    pub label: &'static str,
    pub events: u64,
    pub max_in_flight: Option<u64>,
    /// None: publish everything first, then start the host (a backlog it
    /// drains as fast as it can). Some: start the host, wait until it is
    /// ready, then publish at this many events per second.
    pub offered_rate: Option<f64>,
    /// Some: an outage run (needs an offered rate).
    pub outage: Option<OutagePlan>,
}

/// The phases of an outage run, all at the run's offered rate.
#[derive(Debug, Clone, Copy)]
pub struct OutagePlan {
    /// Healthy providers first, so the host is delivering when they fail.
    pub warmup: Duration,
    /// Both providers answer every request 503 for this long.
    pub down_for: Duration,
    /// Offering goes on this long after they are back.
    pub tail: Duration,
}

impl OutagePlan {
    pub fn total(&self) -> Duration {
        self.warmup + self.down_for + self.tail
    }
}

/// A value for each channel.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ByChannel<T> {
    pub email: T,
    pub sms: T,
}

impl<T> ByChannel<T> {
    fn get_mut(&mut self, channel: Channel) -> &mut T {
        match channel {
            Channel::Email => &mut self.email,
            Channel::Sms => &mut self.sms,
        }
    }
}

/// The outage run's numbers (issue 10's benchmark).
#[derive(Debug, Clone, Serialize)]
pub struct OutageResult {
    pub offered_rate: f64,
    pub warmup_seconds: f64,
    /// From the providers going down to their coming back, as it happened.
    pub outage_seconds: f64,
    pub tail_seconds: f64,
    pub events_offered: u64,
    /// Handed to the producer while the providers were down.
    pub events_offered_during_outage: u64,
    /// Requests that reached the stand-in while it was down (each answered
    /// 503).
    pub requests_during_outage: ByChannel<u64>,
    pub requests_per_second_during_outage: ByChannel<f64>,
    /// The most requests of one channel within one second of the outage
    /// (seconds counted from its start).
    pub busiest_outage_second: ByChannel<u64>,
    /// The highest `notify_in_flight` sampled (about once a second).
    pub peak_in_flight: Option<u64>,
    pub in_flight_limit: u64,
    /// Seconds into the outage after which the host read no more events
    /// (`notify_events_consumed_total` stood still until recovery); None
    /// when it kept reading.
    pub intake_stopped_after_seconds: Option<f64>,
    /// The host's consumed count sampled last before recovery.
    pub consumed_at_recovery: Option<u64>,
    /// Events handed to the producer before recovery.
    pub offered_at_recovery: u64,
    /// `/metrics` reads that failed while sampling.
    pub metric_scrape_failures: u64,
    /// From recovery to the first request the stand-in accepted, per
    /// channel: the wait for that channel's next probe. Each channel has its
    /// own circuit, and an event asking for both is done only when both
    /// have closed, so the later of the two holds the drain.
    pub recovery_to_first_accepted_seconds: ByChannel<Option<f64>>,
    /// Events published before recovery and not yet committed at recovery.
    pub backlog_events: u64,
    /// From recovery to the commit of every event published before it.
    pub recovery_to_drained_seconds: Option<f64>,
    /// `backlog_events` over `recovery_to_drained_seconds`.
    pub drain_events_per_second: Option<f64>,
    /// The throughput run's events/s, when it ran in the same invocation.
    pub normal_events_per_second: Option<f64>,
    pub drain_share_of_normal: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// One plugin call's time from the host's `notify_plugin_call_duration_seconds`
/// histogram at the end of a run: p50/p99 estimated from its buckets (×3
/// apart, linear within a bucket). The host times the call from before it
/// waits at the `max_concurrent_calls` gate, so the wait is included.
#[derive(Debug, Clone, Serialize)]
pub struct PluginCall {
    pub channel: String,
    pub call: String,
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The highest finite bucket bound: a quantile equal to it lies at or
    /// above it (in the `+Inf` bucket), so it is a lower bound only.
    pub top_bucket_ms: Option<f64>,
    /// Sum over count: exact, unlike the quantiles.
    pub mean_ms: Option<f64>,
}

/// One of the host's plain histograms (summed over the hosts): the count,
/// p50/p99 estimated from its buckets, and the exact mean.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramStat {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// See [`PluginCall::top_bucket_ms`].
    pub top_bucket_ms: Option<f64>,
}

/// Histogram `name` of a `/metrics` text (of one host or several joined),
/// every series added up; None when it has no observations.
pub fn histogram_stat(metrics: &str, name: &str) -> Option<HistogramStat> {
    let mut merged = host::HistogramSeries {
        labels: Vec::new(),
        buckets: Vec::new(),
    };
    for series in host::histogram(metrics, name) {
        for (le, count) in series.buckets {
            match merged.buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += count,
                None => merged.buckets.push((le, count)),
            }
        }
    }
    merged.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = merged.count();
    if count <= 0.0 {
        return None;
    }
    let ms = |s: f64| s * 1000.0;
    Some(HistogramStat {
        count: count as u64,
        p50_ms: merged.quantile(0.50).map(ms),
        p99_ms: merged.quantile(0.99).map(ms),
        mean_ms: host::metric_sum(metrics, &format!("{name}_sum")).map(|s| ms(s / count)),
        top_bucket_ms: merged
            .buckets
            .iter()
            .rev()
            .find(|b| b.0.is_finite())
            .map(|b| ms(b.0)),
    })
}

/// Average and busiest 1-second share of the run's window, in cores.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cores {
    pub avg: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    /// Host processes in the group.
    pub hosts: usize,
    pub partitions: i32,
    /// `embedded` or `postgres`.
    pub ledger: String,
    pub max_in_flight: Option<u64>,
    pub events: u64,
    pub offered_rate: Option<f64>,
    pub publish_seconds: f64,
    /// From the first provider request received to the committed offset
    /// reaching the last event.
    pub window_seconds: f64,
    pub events_per_second: f64,
    /// Requests received over first-to-last request.
    pub provider_calls_per_second: f64,
    /// Received − acknowledged by the broker, every request (ms).
    pub latency_from_ack_ms: Percentiles,
    /// Received − handed to the producer, every request (ms).
    pub latency_from_send_ms: Percentiles,
    pub requests_expected: u64,
    /// Every request, those refused during an outage included; duplicates
    /// and missing count only accepted ones.
    pub requests_received: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Requests without an event id of this run (should be none).
    pub foreign: u64,
    pub duplicate_examples: Vec<String>,
    pub missing_examples: Vec<String>,
    /// VmHWM over the host's whole life (start-up included: compiling a
    /// large plugin without a cache peaks far above running it); with
    /// several hosts, their peaks added up (so is every host figure below:
    /// CPU, cores).
    pub host_peak_rss_mib: f64,
    /// VmHWM at the first provider request (start-up and plugin loading).
    pub host_startup_peak_rss_mib: Option<f64>,
    /// The peak from the first provider request to the end (VmHWM reset
    /// there); None when the reset failed.
    pub host_window_peak_rss_mib: Option<f64>,
    /// utime + stime over the host's whole life (start-up included).
    pub host_cpu_seconds: f64,
    /// Host CPU within the window, per event.
    pub host_cpu_ms_per_event: f64,
    pub host_cores: Cores,
    /// The PostgreSQL server (its postmaster and backends), with `--db-pid`.
    pub db_cores: Option<Cores>,
    pub broker_cores: Cores,
    /// The bench process: the stand-in, the offset reader, and in a paced run
    /// the producer.
    pub bench_cores: Cores,
    /// Busy cores of the whole machine.
    pub machine_cores: Cores,
    pub host_exit: String,
    /// `notify_dlq_events_total` read from the host's /metrics at the end;
    /// None when it could not be read.
    pub dead_letters: Option<u64>,
    /// The same by reason (the metric's label), when there are any.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// `notify_channel_retries_total`, by channel.
    pub retries: BTreeMap<String, u64>,
    /// Render and classify time by channel (empty when /metrics could not
    /// be read).
    pub plugin_calls: Vec<PluginCall>,
    /// Lines of the host's log at WARN or ERROR, and those among all lines
    /// that mention a deadline (a plugin stopped at its deadline, say).
    pub host_log_warnings: u64,
    pub host_log_deadline_lines: u64,
    /// How each channel's plugin was loaded, from the host's "plugin
    /// loaded" line: "cache" or "compiled", and the ms it took.
    pub plugin_loads: BTreeMap<String, (String, f64)>,
    /// `notify_ledger_claim_seconds`: claiming a delivery before its work
    /// (embedded: no round trip).
    pub ledger_claim: Option<HistogramStat>,
    /// `notify_ledger_write_seconds`: a final record made durable.
    pub ledger_write: Option<HistogramStat>,
    /// `notify_ledger_claim_conflicts_total`: deliveries met while another
    /// live host held their claim.
    pub claim_conflicts: Option<u64>,
    /// `notify_events_consumed_total` of each host (None: its /metrics could
    /// not be read).
    pub consumed_by_host: Vec<Option<u64>>,
    pub outage: Option<OutageResult>,
}

/// CPU counters at one moment.
#[derive(Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    /// Every host of the run.
    host: u64,
    broker: u64,
    bench: u64,
    /// The database server (0 without `--db-pid`).
    db: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSnapshot {
    fn take(host_pids: &[u32], broker_pid: u32, db_pid: Option<u32>) -> Result<CpuSnapshot> {
        let (machine_busy, machine_total) = sys::machine_ticks()?;
        let mut host = 0;
        for pid in host_pids {
            host += sys::cpu_ticks(Some(*pid))?;
        }
        Ok(CpuSnapshot {
            at: Instant::now(),
            host,
            broker: sys::cpu_ticks(Some(broker_pid))?,
            bench: sys::cpu_ticks(None)?,
            db: match db_pid {
                Some(pid) => sys::tree_cpu_ticks(pid)?,
                None => 0,
            },
            machine_busy,
            machine_total,
        })
    }

    /// Cores used between `self` and `later`: (hosts, broker, bench,
    /// machine, database).
    fn cores(&self, later: &CpuSnapshot, ticks: f64) -> [f64; 5] {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / ticks / secs;
        let machine = if later.machine_total > self.machine_total {
            // /proc/stat counts ticks of every core: busy share × cores.
            let share = later.machine_busy.saturating_sub(self.machine_busy) as f64
                / (later.machine_total - self.machine_total) as f64;
            share * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
        } else {
            0.0
        };
        [
            per(self.host, later.host),
            per(self.broker, later.broker),
            per(self.bench, later.bench),
            machine,
            per(self.db, later.db),
        ]
    }
}

impl Bench<'_> {
    pub fn run(&self, spec: &RunSpec) -> Result<RunResult> {
        let run = fastrand::u32(..);
        let topic = format!("appointments.created.bench-{}.{run:08x}", spec.label);
        let dlq = format!("appointments.created.dlq.bench-{}.{run:08x}", spec.label);
        let group = format!("notify-bench-{}-{run:08x}", spec.label);
        self.rt.block_on(
            self.broker
                .create_topics_with(&[(&topic, self.partitions), (&dlq, 1)]),
        )?;
        let database = match self.ledger {
            LedgerChoice::Embedded => None,
            LedgerChoice::Postgres(pg) => {
                let db = pg.database(self.rt, &format!("{}_{run:08x}", spec.label))?;
                if let Some(name) = &db.created {
                    eprintln!(
                        "notify-bench: [{}] ledger: database {name} on {}",
                        spec.label,
                        pg.shown()
                    );
                }
                Some(db)
            }
        };
        let result = self.run_on(spec, run, &topic, &dlq, &group, database.as_ref());
        if let (LedgerChoice::Postgres(pg), Some(db)) = (self.ledger, &database) {
            if self.keep_databases {
                if let Some(name) = &db.created {
                    eprintln!("notify-bench: [{}] kept the database {name}", spec.label);
                }
            } else {
                pg.drop_database(self.rt, db);
            }
        }
        result
    }

    /// A run on its topics and (shared ledger) database.
    fn run_on(
        &self,
        spec: &RunSpec,
        run: u32,
        topic: &str,
        dlq: &str,
        group: &str,
        database: Option<&RunDatabase>,
    ) -> Result<RunResult> {
        let log_level = self.host_log_level();
        let owners: Vec<String> = (0..self.hosts)
            .map(|k| format!("notify-bench-{}-{run:08x}-host{k}", spec.label))
            .collect();
        let mut planned = Vec::with_capacity(self.hosts);
        let mut ports = Vec::with_capacity(self.hosts);
        for (k, owner) in owners.iter().enumerate() {
            // free_port drops its listener: two calls may see the same port.
            let admin_port = loop {
                let p = sys::free_port()?;
                if !ports.contains(&p) {
                    break p;
                }
            };
            ports.push(admin_port);
            let name = if self.hosts == 1 {
                format!("{}-{run:08x}", spec.label)
            } else {
                format!("{}-{run:08x}-host{k}", spec.label)
            };
            let dedup: PathBuf = self.workdir.join(format!("{name}-ledger.redb"));
            let config = HostConfig {
                bootstrap: &self.broker.bootstrap,
                topic,
                dlq,
                group,
                provider_url: &self.standin.url(),
                email: self.email,
                twilio_wasm: Some(self.twilio_wasm),
                max_in_flight: spec.max_in_flight,
                log_level: &log_level,
                dedup_path: &dedup,
                admin_port,
                kafka_client: self.kafka_client,
                plugin_instances: self.plugin_instances,
                max_concurrent_calls: self.max_concurrent_calls,
                cache_dir: Some(self.plugin_cache),
                postgres: match (self.ledger, database) {
                    (LedgerChoice::Postgres(pg), Some(_)) => Some(PostgresLedger {
                        owner,
                        pool_size: pg.pool_size,
                    }),
                    _ => None,
                },
            };
            let config_path = self.workdir.join(format!("{name}-config.toml"));
            std::fs::write(&config_path, config.render())
                .with_context(|| format!("write {}", config_path.display()))?;
            let log = self.workdir.join(format!("{name}-host.log"));
            planned.push((config_path, log, admin_port));
        }
        let env: Vec<(&str, &str)> = database
            .map(|db| vec![(LEDGER_URL_VAR, db.url.as_str())])
            .unwrap_or_default();
        let start_hosts = || -> Result<Vec<Host>> {
            planned
                .iter()
                .map(|(config, log, port)| {
                    Host::start_with_env(self.host_bin, config, log, *port, &env)
                })
                .collect()
        };
        // Anything left over (capacity test, an earlier run) is not this run's.
        let _ = self.standin.take();

        let bootstrap = self.broker.bootstrap.clone();
        let publish = broker::publish(
            bootstrap,
            topic.to_string(),
            self.partitions,
            run,
            spec.events,
            self.keys,
            spec.offered_rate,
        );
        if spec.outage.is_some() && spec.offered_rate.is_none() {
            bail!("[{}] an outage run needs an offered rate", spec.label);
        }
        let (mut hosts, mut publishing, outage) = match spec.offered_rate {
            None if !self.ready_first => {
                eprintln!(
                    "notify-bench: [{}] publishing {} events",
                    spec.label, spec.events
                );
                let published = self.rt.block_on(publish)?;
                eprintln!(
                    "notify-bench: [{}] published in {:.1} s ({:.0} events/s); starting {}",
                    spec.label,
                    published.seconds,
                    spec.events as f64 / published.seconds,
                    hosts_noun(self.hosts)
                );
                (start_hosts()?, Publishing::Done(published), None)
            }
            None => {
                let mut hosts = start_hosts()?;
                self.wait_settled(spec, &mut hosts, topic)?;
                eprintln!(
                    "notify-bench: [{}] publishing {} events to {} ready",
                    spec.label,
                    spec.events,
                    hosts_noun(self.hosts)
                );
                (hosts, Publishing::Running(self.rt.spawn(publish)), None)
            }
            Some(rate) => {
                let mut hosts = start_hosts()?;
                self.wait_settled(spec, &mut hosts, topic)?;
                eprintln!(
                    "notify-bench: [{}] {} ready after {:.1} s; publishing {} events at {rate} events/s",
                    spec.label,
                    hosts_noun(self.hosts),
                    hosts[0].started.elapsed().as_secs_f64(),
                    spec.events
                );
                // The publisher paces from its own start, a moment after
                // this; the outage phases are timed from here.
                let start = Instant::now();
                // On the runtime, so the main thread samples CPU and reads
                // offsets while the events go out.
                let publishing = Publishing::Running(self.rt.spawn(publish));
                let outage = spec.outage.map(|plan| {
                    OutageRun::start(self.rt, self.standin.outage_switch(), start, plan)
                });
                (hosts, publishing, outage)
            }
        };

        let reader = self.broker.offset_reader(group, topic, self.partitions)?;
        let waited =
            self.wait_committed(spec, &mut hosts, &reader, &mut publishing, outage.as_ref())?;
        let Publishing::Done(published) = publishing else {
            bail!("[{}] finished before publishing did", spec.label);
        };
        let outage = match outage {
            Some(o) => Some(o.finish(self.rt)?),
            None => None,
        };
        let metrics: Vec<Option<String>> = hosts.iter().map(|h| self.final_metrics(h)).collect();
        // Read before SIGTERM: once a process is gone so is /proc/PID.
        let mut peak_rss_kib = 0;
        let mut host_ticks = 0;
        for h in &hosts {
            peak_rss_kib += sys::peak_rss_kib(h.pid)?;
            host_ticks += sys::cpu_ticks(Some(h.pid))?;
        }
        let mut exits = Vec::with_capacity(hosts.len());
        for h in &mut hosts {
            exits.push(h.stop()?);
        }
        exits.dedup();
        let received = self.standin.take();
        let mut result = self.analyse(
            spec,
            run,
            &published,
            &received,
            &waited,
            peak_rss_kib,
            host_ticks,
            exits.join(", "),
        );
        result.consumed_by_host = metrics
            .iter()
            .map(|m| {
                m.as_deref()
                    .and_then(|t| host::metric_sum(t, "notify_events_consumed_total"))
                    .map(|v| v as u64)
            })
            .collect();
        let joined: String = metrics.iter().flatten().map(String::as_str).collect();
        if !joined.is_empty() {
            let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
            for (labels, v) in host::metric_series(&joined, "notify_dlq_events_total") {
                *reasons
                    .entry(host::label_value(labels, "reason"))
                    .or_default() += v as u64;
            }
            // No series yet: the host registers one at its first dead letter.
            // A host whose /metrics could not be read leaves it unknown.
            result.dead_letters = metrics
                .iter()
                .all(Option::is_some)
                .then(|| reasons.values().sum());
            result.dead_letter_reasons = reasons;
            for (labels, v) in host::metric_series(&joined, "notify_channel_retries_total") {
                *result
                    .retries
                    .entry(host::label_value(labels, "channel"))
                    .or_default() += v as u64;
            }
            result.plugin_calls = plugin_calls(&joined);
            result.ledger_claim = histogram_stat(&joined, "notify_ledger_claim_seconds");
            result.ledger_write = histogram_stat(&joined, "notify_ledger_write_seconds");
            result.claim_conflicts =
                host::metric_sum(&joined, "notify_ledger_claim_conflicts_total").map(|v| v as u64);
        }
        for (_, log, _) in &planned {
            let (warnings, deadline) = log_counts(log);
            result.host_log_warnings += warnings;
            result.host_log_deadline_lines += deadline;
        }
        if let Ok(text) = std::fs::read_to_string(&planned[0].1) {
            for channel in ["email", "sms"] {
                if let Some(loaded) = crate::startup::plugin_loaded(&text, channel) {
                    result
                        .plugin_loads
                        .insert(channel.to_string(), (loaded.1, loaded.0));
                }
            }
        }
        if let (Some(times), Some(rate)) = (outage, spec.offered_rate) {
            let limit = spec.max_in_flight.unwrap_or(HOST_DEFAULT_MAX_IN_FLIGHT);
            result.outage = Some(outage_result(
                rate, &times, limit, &published, &received, &waited,
            ));
        }
        Ok(result)
    }

    /// Waits until every host is ready and, together, they hold every
    /// partition of `topic`, each some (when there are enough), with the
    /// split unchanged over four looks half a second apart. A host's
    /// partitions are its `notify_oldest_unfinished_seconds` series (one per
    /// assigned partition, exported at each commit tick).
    fn wait_settled(&self, spec: &RunSpec, hosts: &mut [Host], topic: &str) -> Result<()> {
        for h in hosts.iter_mut() {
            self.rt.block_on(h.wait_ready(Duration::from_secs(60)))?;
        }
        let client = reqwest::Client::new();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let want = usize::try_from(self.partitions).unwrap_or(1);
        let mut last: Option<Vec<usize>> = None;
        let mut stable = 0;
        loop {
            let mut split = Vec::with_capacity(hosts.len());
            for h in hosts.iter_mut() {
                h.check_running()?;
                let text = self
                    .rt
                    .block_on(h.metrics(&client, Duration::from_secs(2)))
                    .unwrap_or_default();
                split.push(
                    host::metric_series(&text, "notify_oldest_unfinished_seconds")
                        .iter()
                        .filter(|(labels, _)| host::label_value(labels, "topic") == topic)
                        .count(),
                );
            }
            let settled = split.iter().sum::<usize>() == want
                && (want < hosts.len() || split.iter().all(|&n| n > 0));
            stable = if settled && last.as_ref() == Some(&split) {
                stable + 1
            } else {
                0
            };
            if stable >= 3 {
                eprintln!(
                    "notify-bench: [{}] group settled after {:.1} s: partitions per host {split:?}",
                    spec.label,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "[{}] the group did not settle within 120 s: partitions per host {split:?}, want {want} in all",
                    spec.label
                );
            }
            last = Some(split);
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The host's log.level: the bench's, plus the plugin loader's info
    /// line (compiled or from the cache, and how long it took).
    pub fn host_log_level(&self) -> String {
        format!("{},notify_host::plugin::runtime=info", self.log_level)
    }

    /// Compiles the plugins into [`Bench::plugin_cache`] with `notify-host
    /// plugin compile`, on the config the runs use.
    pub fn precompile(&self) -> Result<()> {
        let config = HostConfig {
            bootstrap: &self.broker.bootstrap,
            topic: "appointments.created.bench-precompile",
            dlq: "appointments.created.dlq.bench-precompile",
            group: "notify-bench-precompile",
            provider_url: &self.standin.url(),
            email: self.email,
            twilio_wasm: Some(self.twilio_wasm),
            max_in_flight: None,
            log_level: self.log_level,
            dedup_path: &self.workdir.join("precompile-ledger.redb"),
            admin_port: 9,
            kafka_client: self.kafka_client,
            plugin_instances: self.plugin_instances,
            max_concurrent_calls: self.max_concurrent_calls,
            cache_dir: Some(self.plugin_cache),
            postgres: None,
        };
        let path = self.workdir.join("precompile-config.toml");
        std::fs::write(&path, config.render())
            .with_context(|| format!("write {}", path.display()))?;
        let started = Instant::now();
        host::precompile(self.host_bin, &path)?;
        eprintln!(
            "notify-bench: plugins compiled into {} in {:.1} s (notify-host plugin compile)",
            self.plugin_cache.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The host's /metrics once everything is committed, with a few tries: a
    /// host that just drained a backlog may be slow to answer, and losing
    /// the dead-letter count of a long run to one timeout would be a pity.
    fn final_metrics(&self, host: &Host) -> Option<String> {
        let client = reqwest::Client::new();
        for attempt in 1..=3 {
            match self
                .rt
                .block_on(host.metrics(&client, Duration::from_secs(5)))
            {
                Ok(text) => return Some(text),
                Err(e) => {
                    eprintln!("notify-bench: reading the host's metrics ({attempt}/3): {e:#}")
                }
            }
        }
        None
    }

    /// Polls the committed offset until publishing is done and the offset
    /// reaches the end of what was published, failing when a host exits or
    /// nothing moves for `stall_timeout`. Samples CPU from the first provider
    /// request on. An outage run has one host (`main` refuses more).
    fn wait_committed(
        &self,
        spec: &RunSpec,
        hosts: &mut [Host],
        reader: &OffsetReader,
        publishing: &mut Publishing,
        outage: Option<&OutageRun>,
    ) -> Result<Waited> {
        let mut first: Option<CpuSnapshot> = None;
        let mut last_sample: Option<CpuSnapshot> = None;
        let mut peaks = [0.0f64; 5];
        let pids: Vec<u32> = hosts.iter().map(|h| h.pid).collect();
        let mut committed: i64 = 0;
        let mut requests = self.standin.count();
        let mut progress_at = Instant::now();
        let mut report_at = Instant::now() + Duration::from_secs(5);
        let mut commits = vec![(Instant::now(), 0i64)];
        // Only an outage run reads /metrics as it goes: the other runs
        // measure the host without the extra requests.
        let client = reqwest::Client::new();
        let mut samples = Vec::new();
        let mut sample_at = Instant::now();
        let mut scrape_failures = 0u64;
        let mut startup_peak_rss_kib = None;
        let mut peak_reset = false;
        loop {
            for h in hosts.iter_mut() {
                h.check_running()?;
            }
            let now_requests = self.standin.count();
            if first.is_none() && now_requests > 0 {
                let s = CpuSnapshot::take(&pids, self.broker.pid, self.db_pid)?;
                first = Some(s);
                last_sample = Some(s);
                // The start-up's peak, then the window's from here.
                startup_peak_rss_kib = pids
                    .iter()
                    .map(|pid| sys::peak_rss_kib(*pid).ok())
                    .sum::<Option<u64>>();
                peak_reset = true;
                for pid in &pids {
                    if let Err(e) = sys::reset_peak_rss(*pid) {
                        eprintln!("notify-bench: [{}] cannot reset the host's peak RSS ({e:#}); only its whole-life peak is reported", spec.label);
                        peak_reset = false;
                    }
                }
            }
            if let Publishing::Running(task) = publishing {
                if task.is_finished() {
                    let published = self.rt.block_on(task).context("publish task")??;
                    *publishing = Publishing::Done(published);
                }
            }
            let target = match publishing {
                Publishing::Done(p) => p.end_offset,
                // Not known yet; no offset reaches this.
                Publishing::Running(_) => i64::MAX,
            };
            let now_committed = reader.committed()?.unwrap_or(0);
            if now_committed != committed {
                commits.push((Instant::now(), now_committed));
            }
            if outage.is_some() && Instant::now() >= sample_at {
                sample_at = Instant::now() + Duration::from_secs(1);
                match self
                    .rt
                    .block_on(hosts[0].metrics(&client, Duration::from_secs(1)))
                {
                    Ok(text) => samples.push(MetricSample {
                        at: Instant::now(),
                        in_flight: host::metric_sum(&text, "notify_in_flight"),
                        consumed: host::metric_sum(&text, "notify_events_consumed_total"),
                    }),
                    Err(_) => scrape_failures += 1,
                }
            }
            if now_committed >= target {
                let done = CpuSnapshot::take(&pids, self.broker.pid, self.db_pid)?;
                let first = first.context("every event committed but no provider request seen")?;
                let avg = first.cores(&done, self.clock_ticks);
                let cores = |i: usize| Cores {
                    avg: avg[i],
                    max: peaks[i].max(avg[i]),
                };
                return Ok(Waited {
                    startup_peak_rss_kib,
                    peak_reset,
                    done_at: done.at,
                    commits,
                    samples,
                    scrape_failures,
                    host_window_ticks: done.host.saturating_sub(first.host),
                    host: cores(0),
                    broker: cores(1),
                    bench: cores(2),
                    machine: cores(3),
                    db: self.db_pid.map(|_| cores(4)),
                });
            }
            if now_committed != committed || now_requests != requests {
                committed = now_committed;
                requests = now_requests;
                progress_at = Instant::now();
            } else if outage.is_some_and(|o| o.by_design_still(Instant::now())) {
                // Nothing moves during an outage, by design: the stall clock
                // starts when the host may be expected to move again.
                progress_at = Instant::now();
            } else if progress_at.elapsed() > self.stall_timeout {
                bail!(
                    "[{}] no progress for {:?}: committed offset {committed} of {}, {requests} provider requests; end of the host log:\n{}",
                    spec.label,
                    self.stall_timeout,
                    if target == i64::MAX { "(publishing)".to_string() } else { target.to_string() },
                    hosts
                        .iter()
                        .map(|h| format!("{}:\n{}", h.log.display(), sys::tail(&h.log, 30)))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            if let Some(prev) = last_sample {
                if prev.at.elapsed() >= Duration::from_secs(1) {
                    let s = CpuSnapshot::take(&pids, self.broker.pid, self.db_pid)?;
                    for (peak, c) in peaks.iter_mut().zip(prev.cores(&s, self.clock_ticks)) {
                        *peak = peak.max(c);
                    }
                    last_sample = Some(s);
                }
            }
            if Instant::now() >= report_at {
                let target = match publishing {
                    Publishing::Done(p) => p.end_offset.to_string(),
                    Publishing::Running(_) => "(publishing)".to_string(),
                };
                let phase =
                    outage.map_or(String::new(), |o| format!(" ({})", o.phase(Instant::now())));
                eprintln!(
                    "notify-bench: [{}] committed {committed}/{target}, provider requests {requests}{phase}",
                    spec.label
                );
                report_at += Duration::from_secs(5);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn analyse(
        &self,
        spec: &RunSpec,
        run: u32,
        published: &Published,
        received: &[Received],
        waited: &Waited,
        peak_rss_kib: u64,
        host_ticks: u64,
        host_exit: String,
    ) -> RunResult {
        let n = spec.events as usize;
        // Requests per (event, channel); latency from the first of each.
        let mut seen = vec![[0u32; 2]; n];
        let mut from_ack = Vec::with_capacity(2 * n);
        let mut from_send = Vec::with_capacity(2 * n);
        let mut foreign = 0u64;
        for r in received.iter().filter(|r| !r.refused) {
            let index = match r.event {
                Some(EventRef { run: tag, index }) if tag == run && (index as usize) < n => {
                    index as usize
                }
                _ => {
                    foreign += 1;
                    continue;
                }
            };
            let count = &mut seen[index][r.channel as usize];
            *count += 1;
            if *count == 1 {
                from_ack.push(ms_between(published.acked_at[index], r.at));
                from_send.push(ms_between(published.sent_at[index], r.at));
            }
        }
        let mut duplicates = 0u64;
        let mut missing = 0u64;
        let mut duplicate_examples = Vec::new();
        let mut missing_examples = Vec::new();
        for (index, counts) in seen.iter().enumerate() {
            for channel in [Channel::Email, Channel::Sms] {
                let c = counts[channel as usize];
                let name = || {
                    format!(
                        "{}/{}",
                        EventRef {
                            run,
                            index: index as u64
                        },
                        channel.name()
                    )
                };
                if c == 0 {
                    missing += 1;
                    if missing_examples.len() < 5 {
                        missing_examples.push(name());
                    }
                } else if c > 1 {
                    duplicates += u64::from(c - 1);
                    if duplicate_examples.len() < 5 {
                        duplicate_examples.push(format!("{} ×{c}", name()));
                    }
                }
            }
        }

        let first = received.iter().map(|r| r.at).min();
        let last = received.iter().map(|r| r.at).max();
        let window = first.map_or(0.0, |f| {
            waited.done_at.saturating_duration_since(f).as_secs_f64()
        });
        let request_span = match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        RunResult {
            label: spec.label.to_string(),
            hosts: self.hosts,
            partitions: self.partitions,
            ledger: self.ledger.name().to_string(),
            max_in_flight: spec.max_in_flight,
            events: spec.events,
            offered_rate: spec.offered_rate,
            publish_seconds: published.seconds,
            window_seconds: window,
            events_per_second: per_second(spec.events as f64, window),
            provider_calls_per_second: per_second(received.len() as f64, request_span),
            latency_from_ack_ms: percentiles(from_ack),
            latency_from_send_ms: percentiles(from_send),
            requests_expected: 2 * spec.events,
            requests_received: received.len() as u64,
            duplicates,
            missing,
            foreign,
            duplicate_examples,
            missing_examples,
            host_peak_rss_mib: peak_rss_kib.max(waited.startup_peak_rss_kib.unwrap_or(0)) as f64
                / 1024.0,
            host_startup_peak_rss_mib: waited.startup_peak_rss_kib.map(|k| k as f64 / 1024.0),
            host_window_peak_rss_mib: waited.peak_reset.then_some(peak_rss_kib as f64 / 1024.0),
            host_cpu_seconds: host_ticks as f64 / self.clock_ticks,
            host_cpu_ms_per_event: waited.host_window_ticks as f64 / self.clock_ticks * 1000.0
                / spec.events.max(1) as f64,
            host_cores: waited.host,
            db_cores: waited.db,
            broker_cores: waited.broker,
            bench_cores: waited.bench,
            machine_cores: waited.machine,
            host_exit,
            dead_letters: None,
            dead_letter_reasons: BTreeMap::new(),
            retries: BTreeMap::new(),
            plugin_calls: Vec::new(),
            host_log_warnings: 0,
            host_log_deadline_lines: 0,
            plugin_loads: BTreeMap::new(),
            ledger_claim: None,
            ledger_write: None,
            claim_conflicts: None,
            consumed_by_host: Vec::new(),
            outage: None,
        }
    }
}

/// The task that takes the providers down and brings them back on the
/// plan's schedule. Dropped before it finished (a run that failed), it
/// brings them back, so a later run does not start into an outage.
struct OutageRun {
    plan: OutagePlan,
    /// When the switch is due to flip; the task sleeps until these.
    down_due: Instant,
    up_due: Instant,
    switch: OutageSwitch,
    task: Option<JoinHandle<OutageTimes>>,
}

/// When the providers actually went down and came back.
#[derive(Debug, Clone, Copy)]
struct OutageTimes {
    plan: OutagePlan,
    down_at: Instant,
    up_at: Instant,
}

impl OutageRun {
    fn start(rt: &Runtime, switch: OutageSwitch, start: Instant, plan: OutagePlan) -> OutageRun {
        let down_due = start + plan.warmup;
        let up_due = down_due + plan.down_for;
        let task_switch = switch.clone();
        let task = rt.spawn(async move {
            tokio::time::sleep_until(down_due.into()).await;
            task_switch.set_down(true);
            let down_at = Instant::now();
            eprintln!(
                "notify-bench: [outage] providers down for {:.0} s",
                plan.down_for.as_secs_f64()
            );
            tokio::time::sleep_until(up_due.into()).await;
            task_switch.set_down(false);
            let up_at = Instant::now();
            eprintln!("notify-bench: [outage] providers back");
            OutageTimes {
                plan,
                down_at,
                up_at,
            }
        });
        OutageRun {
            plan,
            down_due,
            up_due,
            switch,
            task: Some(task),
        }
    }

    /// Whether nothing needs to move now: from the outage's start until the
    /// longest probe wait after its end.
    fn by_design_still(&self, now: Instant) -> bool {
        now >= self.down_due && now < self.up_due + PROBE_BACKOFF_MAX
    }

    fn phase(&self, now: Instant) -> String {
        if now < self.down_due {
            "warm-up".to_string()
        } else if now < self.up_due {
            format!(
                "providers down, {:.0} of {:.0} s",
                now.duration_since(self.down_due).as_secs_f64(),
                self.plan.down_for.as_secs_f64()
            )
        } else {
            format!(
                "providers back for {:.0} s",
                now.duration_since(self.up_due).as_secs_f64()
            )
        }
    }

    /// The times, once the providers are back (the run ends after that).
    fn finish(mut self, rt: &Runtime) -> Result<OutageTimes> {
        let task = self
            .task
            .take()
            .context("outage switch task already taken")?;
        rt.block_on(task).context("outage switch task")
    }
}

impl Drop for OutageRun {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.switch.set_down(false);
    }
}

/// The numbers of an outage run, from the stand-in's records, the
/// publisher's offsets, the committed offset's history and the host's
/// sampled metrics.
fn outage_result(
    rate: f64,
    times: &OutageTimes,
    in_flight_limit: u64,
    published: &Published,
    received: &[Received],
    waited: &Waited,
) -> OutageResult {
    let OutageTimes {
        plan,
        down_at,
        up_at,
    } = *times;
    let outage_seconds = up_at.duration_since(down_at).as_secs_f64();

    let mut requests = ByChannel::<u64>::default();
    let seconds = outage_seconds.ceil() as usize + 1;
    let mut by_second = ByChannel {
        email: vec![0u64; seconds],
        sms: vec![0u64; seconds],
    };
    for r in received.iter().filter(|r| r.refused) {
        *requests.get_mut(r.channel) += 1;
        let second = (r.at.saturating_duration_since(down_at).as_secs() as usize).min(seconds - 1);
        by_second.get_mut(r.channel)[second] += 1;
    }
    let busiest = |v: &[u64]| v.iter().copied().max().unwrap_or(0);

    let offered_at = |t: Instant| published.sent_at.iter().filter(|&&s| s < t).count() as u64;
    let offered_at_recovery = offered_at(up_at);
    // The offset after the last event published before recovery: once the
    // committed offset reaches it, the outage's backlog is drained.
    let backlog_end = published
        .sent_at
        .iter()
        .zip(&published.offsets)
        .filter(|(sent, _)| **sent < up_at)
        .map(|(_, offset)| offset + 1)
        .max()
        .unwrap_or(0);
    let committed_at = |t: Instant| {
        waited
            .commits
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, c)| *c)
    };
    let committed_at_recovery = committed_at(up_at);
    let drained_at = waited
        .commits
        .iter()
        .find(|(_, c)| *c >= backlog_end)
        .map(|(at, _)| *at);
    let backlog_events = (backlog_end - committed_at_recovery).max(0) as u64;
    let recovery_to_drained = drained_at.map(|d| d.saturating_duration_since(up_at).as_secs_f64());
    let first_accepted = |channel: Channel| {
        received
            .iter()
            .filter(|r| r.channel == channel && !r.refused && r.at >= up_at)
            .map(|r| r.at)
            .min()
            .map(|f| f.duration_since(up_at).as_secs_f64())
    };

    let peak_in_flight = waited
        .samples
        .iter()
        .filter_map(|s| s.in_flight)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        .map(|v| v as u64);
    let during: Vec<(Instant, f64)> = waited
        .samples
        .iter()
        .filter(|s| s.at >= down_at && s.at <= up_at)
        .filter_map(|s| Some((s.at, s.consumed?)))
        .collect();
    // The first sample after the last growth bounds when intake stopped.
    let last_growth = during
        .windows(2)
        .rev()
        .find(|w| w[1].1 > w[0].1)
        .map(|w| w[1].0)
        .or_else(|| during.first().map(|s| s.0));
    let intake_stopped_after_seconds = last_growth
        .filter(|t| up_at.saturating_duration_since(*t) >= INTAKE_QUIET)
        .map(|t| t.saturating_duration_since(down_at).as_secs_f64());

    OutageResult {
        offered_rate: rate,
        warmup_seconds: plan.warmup.as_secs_f64(),
        outage_seconds,
        tail_seconds: plan.tail.as_secs_f64(),
        events_offered: published.sent_at.len() as u64,
        events_offered_during_outage: offered_at_recovery - offered_at(down_at),
        requests_during_outage: requests,
        requests_per_second_during_outage: ByChannel {
            email: per_second(requests.email as f64, outage_seconds),
            sms: per_second(requests.sms as f64, outage_seconds),
        },
        busiest_outage_second: ByChannel {
            email: busiest(&by_second.email),
            sms: busiest(&by_second.sms),
        },
        peak_in_flight,
        in_flight_limit,
        intake_stopped_after_seconds,
        consumed_at_recovery: during.last().map(|s| s.1 as u64),
        offered_at_recovery,
        metric_scrape_failures: waited.scrape_failures,
        recovery_to_first_accepted_seconds: ByChannel {
            email: first_accepted(Channel::Email),
            sms: first_accepted(Channel::Sms),
        },
        backlog_events,
        recovery_to_drained_seconds: recovery_to_drained,
        drain_events_per_second: recovery_to_drained
            .filter(|s| *s > 0.0)
            .map(|s| backlog_events as f64 / s),
        normal_events_per_second: None,
        drain_share_of_normal: None,
    }
}

/// The host's plugin call times (see [`PluginCall`]).
pub fn plugin_calls(metrics: &str) -> Vec<PluginCall> {
    const NAME: &str = "notify_plugin_call_duration_seconds";
    let sums = host::metric_series(metrics, &format!("{NAME}_sum"));
    host::histogram(metrics, NAME)
        .into_iter()
        .map(|h| {
            let channel = h.label("channel").unwrap_or("?").to_string();
            let call = h.label("call").unwrap_or("?").to_string();
            let count = h.count();
            let sum = sums
                .iter()
                .find(|(labels, _)| {
                    host::label_value(labels, "channel") == channel
                        && host::label_value(labels, "call") == call
                })
                .map(|(_, v)| *v);
            let ms = |s: f64| s * 1000.0;
            PluginCall {
                mean_ms: sum.filter(|_| count > 0.0).map(|s| ms(s / count)),
                p50_ms: h.quantile(0.50).map(ms),
                p99_ms: h.quantile(0.99).map(ms),
                top_bucket_ms: h
                    .buckets
                    .iter()
                    .rev()
                    .find(|b| b.0.is_finite())
                    .map(|b| ms(b.0)),
                count: count as u64,
                channel,
                call,
            }
        })
        .collect()
}

/// (WARN or ERROR lines, lines mentioning a deadline) of a host log; the
/// host logs JSON lines (`"level":"WARN"`), or text.
pub fn log_counts(log: &Path) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return (0, 0);
    };
    let mut warnings = 0;
    let mut deadline = 0;
    for line in text.lines() {
        if line.contains("\"level\":\"WARN\"")
            || line.contains("\"level\":\"ERROR\"")
            || line.contains(" WARN ")
            || line.contains(" ERROR ")
        {
            warnings += 1;
        }
        if line.to_ascii_lowercase().contains("deadline") {
            deadline += 1;
        }
    }
    (warnings, deadline)
}

/// The events of a run: being published (paced run), or out.
enum Publishing {
    Running(JoinHandle<Result<Published>>),
    Done(Published),
}

/// The host's /metrics at one moment (outage runs).
struct MetricSample {
    at: Instant,
    in_flight: Option<f64>,
    consumed: Option<f64>,
}

struct Waited {
    /// VmHWM when the first provider request arrived.
    startup_peak_rss_kib: Option<u64>,
    /// VmHWM was reset then, so the final reading is the window's peak.
    peak_reset: bool,
    done_at: Instant,
    /// The committed offset each time it was seen to change, from 0 at the
    /// start of the wait.
    commits: Vec<(Instant, i64)>,
    samples: Vec<MetricSample>,
    scrape_failures: u64,
    host_window_ticks: u64,
    host: Cores,
    broker: Cores,
    bench: Cores,
    machine: Cores,
    db: Option<Cores>,
}

fn hosts_noun(n: usize) -> String {
    if n == 1 {
        "the host".to_string()
    } else {
        format!("{n} hosts")
    }
}

/// `later − earlier` in ms; negative if the request somehow came first.
fn ms_between(earlier: Instant, later: Instant) -> f64 {
    if later >= earlier {
        later.duration_since(earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier.duration_since(later).as_secs_f64() * 1000.0)
    }
}

fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// Nearest-rank percentiles; NaN when there are no samples.
fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            p50: f64::NAN,
            p99: f64::NAN,
            max: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles {
        p50: rank(0.50),
        p99: rank(0.99),
        max: v[v.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let one = percentiles(vec![7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(percentiles(vec![]).p50.is_nan());
    }

    #[test]
    fn outage_numbers_come_from_the_records() {
        let base = Instant::now();
        let t = |s: f64| base + Duration::from_secs_f64(s);
        let plan = OutagePlan {
            warmup: Duration::from_secs(1),
            down_for: Duration::from_secs(10),
            tail: Duration::from_secs(2),
        };
        // Down at 1 s, back at 11.05 s (off the 0.1 s grid of the sends).
        let times = OutageTimes {
            plan,
            down_at: t(1.0),
            up_at: t(11.05),
        };
        // 130 events at 10/s, event i at offset i.
        let sent_at: Vec<Instant> = (0..130).map(|i| t(f64::from(i) * 0.1)).collect();
        let published = Published {
            acked_at: sent_at.clone(),
            sent_at,
            offsets: (0..130).collect(),
            end_offset: 130,
            seconds: 13.0,
        };
        let request = |at: f64, channel: Channel, refused: bool| Received {
            at: t(at),
            channel,
            event: None,
            refused,
        };
        let received = vec![
            request(0.5, Channel::Email, false),
            request(1.05, Channel::Email, true),
            request(1.1, Channel::Email, true),
            request(1.05, Channel::Sms, true),
            request(2.0, Channel::Email, true),
            request(3.0, Channel::Sms, true),
            request(9.0, Channel::Email, true),
            request(12.0, Channel::Email, false),
            request(12.1, Channel::Sms, false),
        ];
        // Consumed grows until 4 s, then stands still until recovery.
        let samples = (1..=11)
            .map(|s| MetricSample {
                at: t(f64::from(s)),
                in_flight: Some(f64::from(s.min(4)) * 10.0),
                consumed: Some(f64::from(s.min(4)) * 10.0),
            })
            .collect();
        let waited = Waited {
            startup_peak_rss_kib: None,
            peak_reset: false,
            done_at: t(15.0),
            commits: vec![
                (t(0.0), 0),
                (t(1.0), 10),
                (t(12.5), 50),
                (t(14.0), 111),
                (t(15.0), 130),
            ],
            samples,
            scrape_failures: 0,
            host_window_ticks: 0,
            host: Cores::default(),
            broker: Cores::default(),
            bench: Cores::default(),
            machine: Cores::default(),
            db: None,
        };
        let o = outage_result(10.0, &times, 512, &published, &received, &waited);
        assert_eq!(
            (o.requests_during_outage.email, o.requests_during_outage.sms),
            (4, 2)
        );
        assert_eq!(
            (o.busiest_outage_second.email, o.busiest_outage_second.sms),
            (2, 1)
        );
        assert!((o.requests_per_second_during_outage.email - 4.0 / 10.05).abs() < 1e-9);
        assert_eq!(
            (
                o.events_offered,
                o.events_offered_during_outage,
                o.offered_at_recovery
            ),
            (130, 101, 111)
        );
        // Offsets 0..=110 were sent before recovery; 10 were committed then.
        assert_eq!(o.backlog_events, 101);
        let drained = o.recovery_to_drained_seconds.unwrap_or(f64::NAN);
        assert!((drained - 2.95).abs() < 1e-6, "{drained}");
        let rate = o.drain_events_per_second.unwrap_or(f64::NAN);
        assert!((rate - 101.0 / 2.95).abs() < 1e-3, "{rate}");
        let first = o.recovery_to_first_accepted_seconds;
        let email = first.email.unwrap_or(f64::NAN);
        let sms = first.sms.unwrap_or(f64::NAN);
        assert!((email - 0.95).abs() < 1e-6, "{email}");
        assert!((sms - 1.05).abs() < 1e-6, "{sms}");
        assert_eq!(o.peak_in_flight, Some(40));
        assert_eq!(o.consumed_at_recovery, Some(40));
        let stopped = o.intake_stopped_after_seconds.unwrap_or(f64::NAN);
        assert!((stopped - 3.0).abs() < 1e-6, "{stopped}");
    }
}
