//! notify-bench: end-to-end throughput, latency and provider-outage
//! behaviour of the real notify-host.
//!
//! One process holds a Mailgun/Twilio stand-in (fixed latency) and the
//! publisher; it starts a tansu broker and the release `notify-host` binary
//! with the bundled plugins as children, and measures:
//!
//! 1. the stand-in's own capacity (so the host's provider call rate can be
//!    read as a share of what this machine can serve at all);
//! 2. throughput: N events published first, then the host drains them with
//!    the default concurrency; events/s from the first provider request to
//!    the commit of the last event;
//! 3. the same with `pipeline.max_in_flight = 1` (the sequential design) on a
//!    smaller N, and the ratio of the two rates;
//! 4. latency: the host running, events published at an offered rate; the
//!    time from produce to the provider receiving the request is the latency
//!    the host adds (the stand-in records a request before its latency
//!    sleep);
//! 5. outage (issue 10; not in the default `--runs`): the host running with
//!    the default config (circuit probes back off 1 s doubling to 60 s),
//!    events offered at `--outage-rate` (100/s) throughout: a few seconds
//!    healthy, then both providers answer every request 503 (Mailgun- and
//!    Twilio-shaped JSON errors) for `--outage-seconds` (600), then they
//!    come back and offering goes on for `--outage-tail-seconds`; the run
//!    ends when every event is committed. It reports dead letters (target
//!    0, from the host's `notify_dlq_events_total`), the requests sent into
//!    the outage per channel (target ≤ 1/s per channel), the host's peak
//!    in-flight and whether its intake stopped (`/metrics`, sampled each
//!    second), the time from recovery to the commit of everything published
//!    before it, and that drain's events/s as a share of the throughput
//!    run's (target ≥ 80 %; run `--runs throughput,outage` for it). The
//!    stall timeout is suspended from the outage's start until 60 s (the
//!    longest probe wait) after its end, since nothing moves by design.
//!
//! 6. startup (not in the default `--runs`): `notify-host run` with only the
//!    e-mail channel, from process start until `/health/live` (plugins
//!    loaded, admin server up) and `/health/ready` (partitions assigned too),
//!    with an empty compile cache and again with the one that start filled,
//!    `--startup-repeats` times; medians and peak RSS.
//!
//! The e-mail channel runs the Mailgun plugin unless `--email-plugin` names
//! another one (a webhook such as plugins/webhook.wasm, Python, or
//! tests/plugins/js-webhook.wasm, JavaScript): the stand-in takes a webhook
//! request (a POST of JSON with `event_id`, any path) for an e-mail and
//! counts it the same way. `--email-instances fresh|reuse` and
//! `--max-concurrent-calls` set the host's plugin instance mode and call
//! gate; the summary has the host's plugin call times from its `/metrics`.
//!
//! Reading the numbers: every process shares one machine, so the rows with
//! each process's CPU (host, broker, this process) and the machine's busy
//! cores say which one, or something else on the machine, ran out. Against
//! tansu a caught-up consumer's fetch is answered only after the client's
//! `fetch.wait.max.ms` (librdkafka: 500 ms), not when data arrives as Kafka
//! does, so the host is run with `fetch.wait.max.ms=10`;
//! `--kafka-client fetch.wait.max.ms=500` shows tansu's own behaviour.
//!
//! Several hosts and the shared ledger (issue 15): `--hosts N` runs N host
//! processes in one consumer group on a topic of `--partitions` partitions
//! (2 per host by default); `--ledger-url postgres://...` (or `--ledger
//! postgres` with `NOTIFY_BENCH_PG_URL`) runs them on the PostgreSQL ledger,
//! a fresh database per run. The numbers are the group's: events/s over all
//! hosts, host CPU and memory added up; with `--db-pid` the database
//! server's CPU too. On one machine this shows what sharing costs, not how
//! far more hosts scale. `bench/replicas.sh` runs redb x1, postgres x1 and
//! postgres x3 side by side.
//!
//! `cargo run --release -p notify-bench -- --help` for the flags.

mod broker;
mod events;
mod host;
mod ledger;
mod report;
mod runs;
mod standin;
mod startup;
mod sys;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::host::{EmailAuth, EmailChannel, Instances};
use crate::ledger::{LedgerChoice, PgLedger};
use crate::runs::{Bench, OutagePlan, RunSpec};

#[derive(Parser, Debug)]
#[command(
    name = "notify-bench",
    about = "End-to-end throughput, latency and provider-outage behaviour of notify-host against a provider stand-in and a tansu broker"
)]
struct Args {
    /// Events in the throughput run [default: 50000; --quick: 2000]
    #[arg(long)]
    events: Option<u64>,
    /// Distinct appointment ids (the ordering keys) the events are spread over
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// The stand-in's fixed answer latency, in ms
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// pipeline.max_in_flight for the throughput, latency and outage runs
    /// [default: the host's default, 512]
    #[arg(long)]
    max_in_flight: Option<u64>,
    /// Events in the sequential run (max_in_flight = 1) [default: 500; --quick: 200]
    #[arg(long)]
    sequential_events: Option<u64>,
    /// Offered rate of the latency run, events/s
    #[arg(long, default_value_t = 1000.0)]
    offered_rate: f64,
    /// Duration of the latency run's publishing, s [default: 10; --quick: 2]
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Offered rate of the outage run, events/s (before, during and after the
    /// outage)
    #[arg(long, default_value_t = 100.0)]
    outage_rate: f64,
    /// Healthy offering before the outage run's providers go down, s
    /// [default: 5; --quick: 2]
    #[arg(long)]
    outage_warmup_seconds: Option<f64>,
    /// How long both providers answer 503 in the outage run, s [default:
    /// 600; --quick: 20]
    #[arg(long)]
    outage_seconds: Option<f64>,
    /// Offering after the providers are back, s [default: 10; --quick: 3]
    #[arg(long)]
    outage_tail_seconds: Option<f64>,
    /// Duration of the stand-in capacity measurement, s [default: 3; --quick: 1]
    #[arg(long)]
    capacity_seconds: Option<f64>,
    /// Requests in flight during the stand-in capacity measurement
    #[arg(long, default_value_t = 1000)]
    capacity_concurrency: usize,
    /// The host's log.level (a tracing filter)
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// plugins.max_instances for the host [default: the host's, sized from
    /// the loaded plugins and the call gate]; fewer than needed is refused
    #[arg(long)]
    plugin_instances: Option<u64>,
    /// plugins.max_concurrent_calls for the host [default: the host's, its
    /// CPU cores]
    #[arg(long)]
    max_concurrent_calls: Option<u64>,
    /// The e-mail channel's plugin [default: plugins/mailgun.wasm]; a
    /// webhook plugin's requests (JSON with `event_id`) are counted like
    /// Mailgun's
    #[arg(long, value_name = "PATH")]
    email_plugin: Option<PathBuf>,
    /// channels.email.settings as KEY=VALUE,... [default: Mailgun's domain
    /// and from for the Mailgun plugin, `path=/hook` for any other]
    #[arg(long, value_name = "K=V,...")]
    email_settings: Option<String>,
    /// channels.email.auth [default: basic for the Mailgun plugin, hmac
    /// (secret ${WEBHOOK_SECRET}, set for the host) for any other]
    #[arg(long, value_enum)]
    email_auth: Option<EmailAuth>,
    /// channels.email.instances [default: the host's, fresh]
    #[arg(long, value_enum)]
    email_instances: Option<Instances>,
    /// Start each event run's host with the compile cache empty, as the
    /// bench did before (the run's peak RSS then includes the compile);
    /// by default `notify-host plugin compile` fills it first
    #[arg(long)]
    cold_plugin_cache: bool,
    /// Cold/cached start pairs in the startup run
    #[arg(long, default_value_t = 3)]
    startup_repeats: u32,
    /// A librdkafka setting for the host's clients (kafka.client), repeatable
    #[arg(long = "kafka-client", value_name = "KEY=VALUE")]
    kafka_client: Vec<String>,
    /// The notify-host binary; without it the bench runs
    /// `cargo build --release -p notify-host` and uses what that builds
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// The tansu binary; without it scripts/ensure-tansu.sh installs/finds it
    #[arg(long, env = "NOTIFY_TANSU")]
    tansu: Option<PathBuf>,
    /// Fail a run when neither the committed offset nor the provider request
    /// count moves for this long, s (not counted in the outage run from the
    /// outage's start until 60 s after its end)
    #[arg(long, default_value_t = 60)]
    stall_timeout_seconds: u64,
    /// Small sizes for a smoke run (explicit size flags still win)
    #[arg(long)]
    quick: bool,
    /// Which runs, in this order (outage is not in the default: it takes
    /// over ten minutes; nor is startup)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,sequential,latency"
    )]
    runs: Vec<Run>,
    /// Host processes per event run, in one consumer group (not the startup
    /// run, which starts one)
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// Partitions of each run's events topic [default: 1 for one host, 2
    /// per host for several]; at least --hosts
    #[arg(long)]
    partitions: Option<i32>,
    /// Start the hosts, and wait until the group has settled, before a
    /// backlog is published (always so with --hosts above 1): runs compare
    /// alike whatever the host count
    #[arg(long)]
    ready_first: bool,
    /// The hosts' ledger [default: postgres with --ledger-url, else
    /// embedded]
    #[arg(long, value_enum)]
    ledger: Option<LedgerKind>,
    /// The PostgreSQL server for --ledger postgres, as a URL of a user that
    /// may create databases (each run gets a fresh one, dropped after it
    /// unless --keep-workdir) [env: NOTIFY_BENCH_PG_URL]
    #[arg(long, value_name = "URL")]
    ledger_url: Option<String>,
    /// Use the database of --ledger-url itself for every run, not a fresh
    /// one per run
    #[arg(long)]
    ledger_same_database: bool,
    /// ledger.pool_size of each host [default: the host's, 8]
    #[arg(long)]
    ledger_pool_size: Option<u64>,
    /// The PostgreSQL server's postmaster pid: its CPU (and its backends')
    /// is reported beside the hosts'
    #[arg(long, value_name = "PID")]
    db_pid: Option<u32>,
    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Keep the temp dir (configs, host and broker logs) for inspection
    #[arg(long)]
    keep_workdir: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LedgerKind {
    /// redb, a file per host
    Embedded,
    /// The shared PostgreSQL ledger (needs a URL)
    Postgres,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// A backlog of --events drained with the default concurrency
    Throughput,
    /// A backlog of --sequential-events with max_in_flight = 1
    Sequential,
    /// --offered-rate events/s for --latency-seconds, host already running
    Latency,
    /// --outage-rate events/s while both providers are down for
    /// --outage-seconds, then the drain after recovery
    Outage,
    /// `notify-host run` until ready, cold and cached compile cache,
    /// --startup-repeats times (only the e-mail channel)
    Startup,
}

/// Sizes after --quick and the explicit flags.
struct Sizes {
    events: u64,
    sequential_events: u64,
    latency_seconds: f64,
    capacity_seconds: f64,
    outage_warmup_seconds: f64,
    outage_seconds: f64,
    outage_tail_seconds: f64,
}

impl Args {
    fn sizes(&self) -> Sizes {
        let pick = |given: Option<f64>, full: f64, quick: f64| {
            given.unwrap_or(if self.quick { quick } else { full })
        };
        Sizes {
            events: pick(self.events.map(|v| v as f64), 50_000.0, 2_000.0) as u64,
            sequential_events: pick(self.sequential_events.map(|v| v as f64), 500.0, 200.0) as u64,
            latency_seconds: pick(self.latency_seconds, 10.0, 2.0),
            capacity_seconds: pick(self.capacity_seconds, 3.0, 1.0),
            // A few seconds of delivery first, so the outage meets a host
            // with sends in flight, as a real one would.
            outage_warmup_seconds: pick(self.outage_warmup_seconds, 5.0, 2.0),
            // Issue 10's outage: ten minutes, long enough for the probe
            // backoff to reach its 60 s cap and stay there.
            outage_seconds: pick(self.outage_seconds, 600.0, 20.0),
            outage_tail_seconds: pick(self.outage_tail_seconds, 10.0, 3.0),
        }
    }

    /// The e-mail channel: the Mailgun plugin and its settings unless
    /// `--email-plugin` names another.
    fn email(&self, mailgun: &Path) -> Result<EmailChannel> {
        let plugin = match &self.email_plugin {
            Some(p) => {
                std::path::absolute(p).with_context(|| format!("--email-plugin {}", p.display()))?
            }
            None => mailgun.to_path_buf(),
        };
        if !plugin.is_file() {
            bail!("--email-plugin: no file at {}", plugin.display());
        }
        let is_mailgun = plugin.canonicalize().ok() == mailgun.canonicalize().ok()
            || plugin
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("mailgun"));
        let settings = match &self.email_settings {
            Some(text) => EmailChannel::parse_settings(text)?,
            None if is_mailgun => EmailChannel::mailgun_settings(),
            None => EmailChannel::webhook_settings(),
        };
        let auth = self.email_auth.unwrap_or(if is_mailgun {
            EmailAuth::Basic
        } else {
            EmailAuth::Hmac
        });
        Ok(EmailChannel {
            plugin,
            settings,
            auth,
            instances: self.email_instances,
        })
    }

    /// The ledger the hosts run with.
    fn ledger(&self) -> Result<LedgerChoice> {
        let url = self.ledger_url.clone().or_else(|| {
            std::env::var("NOTIFY_BENCH_PG_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
        });
        let kind = self.ledger.unwrap_or(if self.ledger_url.is_some() {
            LedgerKind::Postgres
        } else {
            LedgerKind::Embedded
        });
        match kind {
            LedgerKind::Embedded => {
                if self.ledger_url.is_some() {
                    bail!("--ledger embedded with --ledger-url: drop one");
                }
                Ok(LedgerChoice::Embedded)
            }
            LedgerKind::Postgres => {
                let url = url
                    .context("--ledger postgres needs --ledger-url URL (or NOTIFY_BENCH_PG_URL)")?;
                Ok(LedgerChoice::Postgres(PgLedger::parse(
                    &url,
                    !self.ledger_same_database,
                    self.ledger_pool_size,
                )?))
            }
        }
    }

    /// The events topic's partitions.
    fn partitions(&self) -> i32 {
        self.partitions.unwrap_or(if self.hosts <= 1 {
            1
        } else {
            i32::try_from(2 * self.hosts).unwrap_or(i32::MAX)
        })
    }

    fn kafka_client(&self) -> Result<Vec<(String, String)>> {
        self.kafka_client
            .iter()
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--kafka-client {kv}: expected KEY=VALUE"))?;
                Ok((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notify-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, where scripts/ and plugins/ are: this crate's parent.
fn workspace_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize()
        .with_context(|| format!("the workspace root {} is gone", root.display()))
}

fn run(args: &Args) -> Result<()> {
    let sizes = args.sizes();
    let kafka_client = args.kafka_client()?;
    if sizes.events == 0 || sizes.sequential_events == 0 || args.keys == 0 {
        bail!("--events, --sequential-events and --keys must be at least 1");
    }
    if !(args.offered_rate > 0.0 && sizes.latency_seconds > 0.0 && sizes.capacity_seconds > 0.0) {
        bail!("--offered-rate, --latency-seconds and --capacity-seconds must be positive");
    }
    if !(args.outage_rate > 0.0
        && sizes.outage_seconds > 0.0
        && sizes.outage_warmup_seconds >= 0.0
        && sizes.outage_tail_seconds >= 0.0)
    {
        bail!("--outage-rate and --outage-seconds must be positive, --outage-warmup-seconds and --outage-tail-seconds not negative");
    }
    let ledger = args.ledger()?;
    let partitions = args.partitions();
    if args.hosts == 0 || partitions < 1 {
        bail!("--hosts and --partitions must be at least 1");
    }
    if (partitions as usize) < args.hosts {
        bail!(
            "--partitions {partitions} with --hosts {}: a host beyond the partition count gets none and idles; give at least one partition per host",
            args.hosts
        );
    }
    if args.runs.contains(&Run::Outage) && (args.hosts > 1 || partitions > 1) {
        bail!("the outage run measures one host on one partition: run it without --hosts and --partitions");
    }
    let root = workspace_root()?;

    // The slow, CPU-heavy preparation comes first, before anything is
    // measured or any child runs.
    let host_bin = match &args.host_bin {
        Some(p) => p.clone(),
        None => host::build_host(&root)?,
    };
    if !host_bin.exists() {
        bail!("no host binary at {}", host_bin.display());
    }
    let (mailgun_wasm, twilio_wasm) = host::ensure_plugins(&root)?;
    let email = args.email(&mailgun_wasm)?;
    if args.startup_repeats == 0 && args.runs.contains(&Run::Startup) {
        bail!("--startup-repeats must be at least 1");
    }
    let tansu = broker::locate_tansu(&root, args.tansu.clone())?;
    let workdir = sys::Workdir::new(args.keep_workdir)?;

    // Multi-thread: the stand-in must keep answering on the workers while
    // the main thread blocks on Kafka calls and sleeps between polls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let standin = standin::StandIn::start(&rt, Duration::from_millis(args.latency_ms))?;
    eprintln!(
        "notify-bench: stand-in on {} ({} ms latency); measuring its capacity for {} s at {} concurrent requests",
        standin.url(),
        args.latency_ms,
        sizes.capacity_seconds,
        args.capacity_concurrency
    );
    let capacity = rt.block_on(standin::measure_capacity(
        &standin,
        args.capacity_concurrency,
        sizes.capacity_seconds,
        args.latency_ms,
    ))?;
    let _ = standin.take();
    eprintln!(
        "notify-bench: stand-in capacity {:.0} requests/s ({} errors)",
        capacity.requests_per_second, capacity.errors
    );

    let broker = broker::Broker::start(&tansu, &workdir.path)?;
    eprintln!("notify-bench: tansu on {}", broker.bootstrap);
    let plugin_cache = workdir.path.join("plugin-cache");
    let bench = Bench {
        rt: &rt,
        standin: &standin,
        broker: &broker,
        host_bin: &host_bin,
        email: &email,
        twilio_wasm: &twilio_wasm,
        workdir: &workdir.path,
        log_level: &args.log_level,
        kafka_client: &kafka_client,
        plugin_instances: args.plugin_instances,
        max_concurrent_calls: args.max_concurrent_calls,
        plugin_cache: &plugin_cache,
        keys: args.keys,
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds),
        clock_ticks: sys::clock_ticks_per_second(),
        hosts: args.hosts,
        partitions,
        ready_first: args.ready_first || args.hosts > 1,
        ledger: &ledger,
        keep_databases: args.keep_workdir,
        db_pid: args.db_pid,
    };
    eprintln!(
        "notify-bench: {} per event run on a topic of {partitions} partition(s), ledger {}{}",
        if args.hosts == 1 {
            "1 host".to_string()
        } else {
            format!("{} hosts in one group", args.hosts)
        },
        ledger.name(),
        match &ledger {
            LedgerChoice::Postgres(pg) => format!(
                " on {}{}",
                pg.shown(),
                if pg.fresh {
                    " (a fresh database per run)"
                } else {
                    ""
                }
            ),
            LedgerChoice::Embedded => String::new(),
        }
    );

    eprintln!(
        "notify-bench: e-mail channel: {} (auth {:?}, instances {}, settings {:?})",
        email.plugin.display(),
        email.auth,
        email.instances.map_or("default", Instances::name),
        email.settings
    );
    if !args.cold_plugin_cache && args.runs.iter().any(|r| *r != Run::Startup) {
        bench.precompile()?;
    }
    let mut results = Vec::new();
    let mut startup = None;
    for run in &args.runs {
        let spec = match run {
            Run::Startup => {
                startup = Some(bench.startup(args.startup_repeats)?);
                continue;
            }
            Run::Throughput => RunSpec {
                label: "throughput",
                events: sizes.events,
                max_in_flight: args.max_in_flight,
                offered_rate: None,
                outage: None,
            },
            Run::Sequential => RunSpec {
                label: "sequential",
                events: sizes.sequential_events,
                max_in_flight: Some(1),
                offered_rate: None,
                outage: None,
            },
            Run::Latency => RunSpec {
                label: "latency",
                events: ((args.offered_rate * sizes.latency_seconds).round() as u64).max(1),
                max_in_flight: args.max_in_flight,
                offered_rate: Some(args.offered_rate),
                outage: None,
            },
            Run::Outage => {
                let plan = OutagePlan {
                    warmup: Duration::from_secs_f64(sizes.outage_warmup_seconds),
                    down_for: Duration::from_secs_f64(sizes.outage_seconds),
                    tail: Duration::from_secs_f64(sizes.outage_tail_seconds),
                };
                RunSpec {
                    label: "outage",
                    events: ((args.outage_rate * plan.total().as_secs_f64()).round() as u64).max(1),
                    max_in_flight: args.max_in_flight,
                    offered_rate: Some(args.outage_rate),
                    outage: Some(plan),
                }
            }
        };
        results.push(bench.run(&spec)?);
    }

    let setup = report::Setup {
        email_plugin: email.plugin.display().to_string(),
        email_auth: email.auth,
        email_instances: email.instances,
        max_concurrent_calls: args.max_concurrent_calls,
        plugin_instances: args.plugin_instances,
        hosts: args.hosts,
        partitions,
        ready_first: args.ready_first || args.hosts > 1,
        ledger: match &ledger {
            LedgerChoice::Embedded => "embedded".to_string(),
            LedgerChoice::Postgres(pg) => format!("postgres ({})", pg.shown()),
        },
        ledger_pool_size: args.ledger_pool_size,
    };
    let summary = report::Summary::new(
        args.latency_ms,
        args.keys,
        capacity,
        setup,
        results,
        startup,
    );
    print!("{}", summary.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).context("summary as JSON")?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        eprintln!("notify-bench: wrote {}", path.display());
    }
    // Children go down in reverse order of creation (bench, broker, then the
    // stand-in and runtime), each by its own guard.
    Ok(())
}
