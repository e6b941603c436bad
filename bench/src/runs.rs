//! One measured run: fresh topics and group, events published, a host
//! started with the run's config, and the wait until every event's offset is
//! committed; then the numbers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::broker::{self, Broker, OffsetReader, Published};
use crate::events::EventRef;
use crate::host::{Host, HostConfig};
use crate::standin::{Channel, Received, StandIn};
use crate::sys;

/// What every run shares.
pub struct Bench<'a> {
    pub rt: &'a Runtime,
    pub standin: &'a StandIn,
    pub broker: &'a Broker,
    pub host_bin: &'a Path,
    pub mailgun_wasm: &'a Path,
    pub twilio_wasm: &'a Path,
    pub workdir: &'a Path,
    pub log_level: &'a str,
    pub kafka_client: &'a [(String, String)],
    pub plugin_instances: Option<u64>,
    pub keys: u64,
    pub stall_timeout: Duration,
    pub clock_ticks: f64,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
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
    pub requests_received: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Requests without an event id of this run (should be none).
    pub foreign: u64,
    pub duplicate_examples: Vec<String>,
    pub missing_examples: Vec<String>,
    pub host_peak_rss_mib: f64,
    /// utime + stime over the host's whole life (start-up included).
    pub host_cpu_seconds: f64,
    /// Host CPU within the window, per event.
    pub host_cpu_ms_per_event: f64,
    pub host_cores: Cores,
    pub broker_cores: Cores,
    /// The bench process: the stand-in, the offset reader, and in a paced run
    /// the producer.
    pub bench_cores: Cores,
    /// Busy cores of the whole machine.
    pub machine_cores: Cores,
    pub host_exit: String,
}

/// CPU counters at one moment.
#[derive(Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    host: u64,
    broker: u64,
    bench: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSnapshot {
    fn take(host_pid: u32, broker_pid: u32) -> Result<CpuSnapshot> {
        let (machine_busy, machine_total) = sys::machine_ticks()?;
        Ok(CpuSnapshot {
            at: Instant::now(),
            host: sys::cpu_ticks(Some(host_pid))?,
            broker: sys::cpu_ticks(Some(broker_pid))?,
            bench: sys::cpu_ticks(None)?,
            machine_busy,
            machine_total,
        })
    }

    /// Cores used between `self` and `later`: (host, broker, bench, machine).
    fn cores(&self, later: &CpuSnapshot, ticks: f64) -> [f64; 4] {
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
        ]
    }
}

impl Bench<'_> {
    pub fn run(&self, spec: &RunSpec) -> Result<RunResult> {
        let run = fastrand::u32(..);
        let topic = format!("appointments.created.bench-{}.{run:08x}", spec.label);
        let dlq = format!("appointments.created.dlq.bench-{}.{run:08x}", spec.label);
        let group = format!("notify-bench-{}-{run:08x}", spec.label);
        self.rt
            .block_on(self.broker.create_topics(&[&topic, &dlq]))?;

        let admin_port = sys::free_port()?;
        let dedup: PathBuf = self
            .workdir
            .join(format!("{}-{run:08x}-dedup.redb", spec.label));
        let config = HostConfig {
            bootstrap: &self.broker.bootstrap,
            topic: &topic,
            dlq: &dlq,
            group: &group,
            provider_url: &self.standin.url(),
            mailgun_wasm: self.mailgun_wasm,
            twilio_wasm: self.twilio_wasm,
            max_in_flight: spec.max_in_flight,
            log_level: self.log_level,
            dedup_path: &dedup,
            admin_port,
            kafka_client: self.kafka_client,
            plugin_instances: self.plugin_instances,
        };
        let config_path = self
            .workdir
            .join(format!("{}-{run:08x}-config.toml", spec.label));
        std::fs::write(&config_path, config.render())
            .with_context(|| format!("write {}", config_path.display()))?;
        let log = self
            .workdir
            .join(format!("{}-{run:08x}-host.log", spec.label));
        // Anything left over (capacity test, an earlier run) is not this run's.
        let _ = self.standin.take();

        let bootstrap = self.broker.bootstrap.clone();
        let publish = broker::publish(
            bootstrap,
            topic.clone(),
            run,
            spec.events,
            self.keys,
            spec.offered_rate,
        );
        let (mut host, mut publishing) = match spec.offered_rate {
            None => {
                eprintln!(
                    "notify-bench: [{}] publishing {} events",
                    spec.label, spec.events
                );
                let published = self.rt.block_on(publish)?;
                eprintln!(
                    "notify-bench: [{}] published in {:.1} s ({:.0} events/s); starting the host",
                    spec.label,
                    published.seconds,
                    spec.events as f64 / published.seconds
                );
                let host = Host::start(self.host_bin, &config_path, &log, admin_port)?;
                (host, Publishing::Done(published))
            }
            Some(rate) => {
                let mut host = Host::start(self.host_bin, &config_path, &log, admin_port)?;
                self.rt.block_on(host.wait_ready(Duration::from_secs(60)))?;
                eprintln!(
                    "notify-bench: [{}] host ready after {:.1} s; publishing {} events at {rate} events/s",
                    spec.label,
                    host.started.elapsed().as_secs_f64(),
                    spec.events
                );
                // On the runtime, so the main thread samples CPU and reads
                // offsets while the events go out.
                (host, Publishing::Running(self.rt.spawn(publish)))
            }
        };

        let reader = self.broker.offset_reader(&group, &topic)?;
        let waited = self.wait_committed(spec, &mut host, &reader, &mut publishing)?;
        let Publishing::Done(published) = publishing else {
            bail!("[{}] finished before publishing did", spec.label);
        };
        // Read before SIGTERM: once the process is gone so is /proc/PID.
        let peak_rss_kib = sys::peak_rss_kib(host.pid)?;
        let host_ticks = sys::cpu_ticks(Some(host.pid))?;
        let host_exit = host.stop()?;
        let received = self.standin.take();
        Ok(self.analyse(
            spec,
            run,
            &published,
            &received,
            &waited,
            peak_rss_kib,
            host_ticks,
            host_exit,
        ))
    }

    /// Polls the committed offset until publishing is done and the offset
    /// reaches the end of what was published, failing when the host exits or
    /// nothing moves for `stall_timeout`. Samples CPU from the first provider
    /// request on.
    fn wait_committed(
        &self,
        spec: &RunSpec,
        host: &mut Host,
        reader: &OffsetReader,
        publishing: &mut Publishing,
    ) -> Result<Waited> {
        let mut first: Option<CpuSnapshot> = None;
        let mut last_sample: Option<CpuSnapshot> = None;
        let mut peaks = [0.0f64; 4];
        let mut committed: i64 = 0;
        let mut requests = self.standin.count();
        let mut progress_at = Instant::now();
        let mut report_at = Instant::now() + Duration::from_secs(5);
        loop {
            host.check_running()?;
            let now_requests = self.standin.count();
            if first.is_none() && now_requests > 0 {
                let s = CpuSnapshot::take(host.pid, self.broker.pid)?;
                first = Some(s);
                last_sample = Some(s);
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
            if now_committed >= target {
                let done = CpuSnapshot::take(host.pid, self.broker.pid)?;
                let first = first.context("every event committed but no provider request seen")?;
                let avg = first.cores(&done, self.clock_ticks);
                let cores = |i: usize| Cores {
                    avg: avg[i],
                    max: peaks[i].max(avg[i]),
                };
                return Ok(Waited {
                    done_at: done.at,
                    host_window_ticks: done.host.saturating_sub(first.host),
                    host: cores(0),
                    broker: cores(1),
                    bench: cores(2),
                    machine: cores(3),
                });
            }
            if now_committed != committed || now_requests != requests {
                committed = now_committed;
                requests = now_requests;
                progress_at = Instant::now();
            } else if progress_at.elapsed() > self.stall_timeout {
                bail!(
                    "[{}] no progress for {:?}: committed offset {committed} of {}, {requests} provider requests; end of the host log:\n{}",
                    spec.label,
                    self.stall_timeout,
                    if target == i64::MAX { "(publishing)".to_string() } else { target.to_string() },
                    sys::tail(&host.log, 30)
                );
            }
            if let Some(prev) = last_sample {
                if prev.at.elapsed() >= Duration::from_secs(1) {
                    let s = CpuSnapshot::take(host.pid, self.broker.pid)?;
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
                eprintln!(
                    "notify-bench: [{}] committed {committed}/{target}, provider requests {requests}",
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
        for r in received {
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
            host_peak_rss_mib: peak_rss_kib as f64 / 1024.0,
            host_cpu_seconds: host_ticks as f64 / self.clock_ticks,
            host_cpu_ms_per_event: waited.host_window_ticks as f64 / self.clock_ticks * 1000.0
                / spec.events.max(1) as f64,
            host_cores: waited.host,
            broker_cores: waited.broker,
            bench_cores: waited.bench,
            machine_cores: waited.machine,
            host_exit,
        }
    }
}

/// The events of a run: being published (paced run), or out.
enum Publishing {
    Running(JoinHandle<Result<Published>>),
    Done(Published),
}

struct Waited {
    done_at: Instant,
    host_window_ticks: u64,
    host: Cores,
    broker: Cores,
    bench: Cores,
    machine: Cores,
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
}
