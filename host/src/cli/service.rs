//! `notify-host run`: the service.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify_host::admin::{self, AdminState, Readiness};
use notify_host::channels::LiveChannels;
use notify_host::config::{Config, LedgerBackend, ProcessEnv};
use notify_host::dlq::DeadLetters;
use notify_host::health::Health;
use notify_host::kafka::{HostContext, TopicCheck};
use notify_host::ledger::{embedded::Embedded, postgres::Postgres, Ledger, LedgerError};
use notify_host::metrics::Metrics;
use notify_host::offsets::OffsetTracker;
use notify_host::pipeline::{self, Shared};
use notify_host::reminders::scheduler::{system_clock, Scheduler};
use notify_host::transport::Transport;
use notify_host::{kafka, reload, telemetry};
use tokio_util::sync::CancellationToken;

use super::load_config;

/// The ledger drops buckets past the retention this often (a bucket is an
/// eighth of the retention, so this is at most a bucket's width late).
fn sweep_interval(retention: Duration) -> Duration {
    (retention / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

pub fn run(config_path: &Path) -> Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    telemetry::init(&config.log);
    // A panic (a bug) is one JSON log line like any other, not text on
    // stderr that log pipelines drop; event work catches its own panics
    // (see `pipeline`), so this line is what the operator sees.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(
            panic = info.payload_as_str().unwrap_or("a panic without a message"),
            location = location.as_deref(),
            "panic"
        );
    }));
    let channels = match super::load_channels(config_path, &config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    for c in config.channels.values().filter(|c| !c.enabled) {
        match c.mode {
            notify_host::config::ChannelMode::Hold => {
                tracing::info!(channel = %c.name, mode = "hold", "channel on hold: requests for it are kept in the ledger for `notify-host deliveries release`")
            }
            _ => {
                tracing::info!(channel = %c.name, mode = "off", "channel off: requests for it are skipped")
            }
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ledger = match runtime.block_on(open_ledger(&config.ledger)) {
        Ok(l) => l,
        // A database that refuses this host (a wrong password, no such
        // database) is fixed in the config, like a missing topic.
        Err(e) if matches!(config.ledger.backend, LedgerBackend::Postgres(_)) => {
            return Ok(refuse_start(&format!("{e} (ledger.url)")))
        }
        Err(e) => return Err(e.into()),
    };
    let transport = Transport::new(
        config.plugins.response_body_limit,
        config.enabled_channels(),
    )?;
    let producer = kafka::producer(&config.kafka)?;
    // A dead letter that can never be written would hold its partition for
    // good: a topic the broker says is missing or denied refuses the start.
    // No answer (the broker is still starting) is not a refusal: readiness
    // and the first write report it.
    match kafka::check_topic(&producer, &config.kafka.dlq_topic, DLQ_CHECK_TIMEOUT) {
        TopicCheck::Exists => {}
        TopicCheck::Missing => {
            return Ok(refuse_start(&format!(
                "the dead-letter topic `{}` (kafka.dlq_topic) does not exist on {}; create it (e.g. kafka-topics.sh --create --topic {}) or set kafka.dlq_topic",
                config.kafka.dlq_topic, config.kafka.bootstrap_servers, config.kafka.dlq_topic
            )))
        }
        TopicCheck::Denied(reason) => {
            return Ok(refuse_start(&format!(
                "the dead-letter topic `{}` (kafka.dlq_topic) may not be used by this client: {reason}; grant it Describe and Write",
                config.kafka.dlq_topic
            )))
        }
        TopicCheck::Unknown(reason) => tracing::warn!(dlq_topic = %config.kafka.dlq_topic, error = %reason, "cannot check the dead-letter topic yet (no answer from the broker); starting anyway"),
    }
    let dlq = DeadLetters::new(producer.clone(), config.kafka.dlq_topic.clone());
    let tracker = Arc::new(std::sync::Mutex::new(OffsetTracker::new()));
    let metrics = Arc::new(Metrics::for_config(
        config.channels.keys().map(String::as_str),
    ));
    reload::announce(&channels, &metrics, "channel ready");
    let readiness = Arc::new(Readiness::default());
    admin::set(&readiness.plugins_loaded, true);
    let health = Arc::new(Health::new(&config, &metrics));

    let scheduler = Scheduler::new();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin_listen))?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_state = AdminState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            ledger: ledger.clone(),
            health: health.clone(),
            dlq: dlq.health().clone(),
            config: Arc::new(config.clone()),
            producer: Some(producer.clone()),
            scheduler: Some(scheduler.clone()),
        };
        let admin = tokio::spawn(admin::serve(listener, admin_state, async move {
            let _ = admin_stopped.await;
        }));
        tracing::info!(listen = %config.admin_listen, "admin server: /health/live, /health/ready, /metrics");

        let context = HostContext {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        };
        let consumer = Arc::new(kafka::consumer(&config.kafka, context)?);
        let sweeper = ledger.clone();
        let every = sweep_interval(config.ledger.retention);
        let gauges = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match sweeper.sweep().await {
                    Ok(s) if s.buckets_dropped > 0 => tracing::info!(
                        records = s.records_dropped,
                        buckets = s.buckets_dropped,
                        held_writer_ms = s.held_writer.as_millis() as u64,
                        "ledger records past the retention dropped"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "ledger retention pass failed; retried at the next"),
                }
                if let Ok(stats) = sweeper.stats().await {
                    gauges.ledger_records.set(stats.records as i64);
                    gauges.ledger_file_bytes.set(stats.file_bytes as i64);
                }
            }
        });
        tracing::info!(
            bootstrap_servers = %config.kafka.bootstrap_servers,
            topic = %config.kafka.topic,
            dlq_topic = %config.kafka.dlq_topic,
            group_id = %config.kafka.group_id,
            ledger = %ledger.info().location,
            ledger_backend = ledger.info().kind,
            "notify-host running; waiting for SIGTERM or Ctrl-C"
        );
        let ledger_at_exit = ledger.clone();
        let shared = Arc::new(Shared {
            config: Arc::new(config.clone()),
            channels: Arc::new(LiveChannels::new(channels)),
            transport,
            ledger,
            dlq,
            metrics,
            health,
            scheduler: scheduler.clone(),
        });
        // Reminders fire beside the pipeline; both stop on the same signal.
        let stop = CancellationToken::new();
        let timers = {
            let shared = shared.clone();
            let stop = stop.clone();
            let fire_stop = stop.clone();
            let fire_shared = shared.clone();
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                let fire = move |record| pipeline::fire(fire_shared.clone(), record, fire_stop.clone());
                scheduler
                    .run(
                        shared.ledger.clone(),
                        shared.config.scheduler.max_in_flight,
                        system_clock(),
                        fire,
                        stop,
                    )
                    .await;
            })
        };
        {
            let ledger = shared.ledger.clone();
            let gauges = shared.metrics.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while !stop.is_cancelled() {
                    tick.tick().await;
                    if let Ok(n) = ledger.timer_count().await {
                        gauges.reminders_scheduled.set(n as i64);
                    }
                    if let Some(pool) = ledger.pool() {
                        gauges.set_pool(pool);
                    }
                }
            });
        }
        tokio::spawn(reloads(
            config_path.to_path_buf(),
            config.clone(),
            shared.channels.clone(),
            shared.metrics.clone(),
            stop.clone(),
        ));
        let signalled = stop.clone();
        pipeline::run(shared, consumer, tracker, async move {
            shutdown_signal().await;
            signalled.cancel();
        })
        .await;
        stop.cancel();
        if timers.await.is_err() {
            tracing::warn!("the reminder scheduler ended with a panic");
        }
        // Another host may take this one's work at once, not after its lease.
        match ledger_at_exit.release_all().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(claims = n, "claims given up"),
            Err(e) => tracing::warn!(error = %e, "cannot give up this host's claims; other hosts take them over once its lease runs out"),
        }
        let _ = stop_admin.send(());
        if let Ok(Err(e)) = admin.await {
            tracing::warn!(error = %e, "admin server stopped with an error");
        }
        tracing::info!("shut down");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reloads config.toml and the plugins on SIGHUP, and with `plugins.watch`
/// when a plugin file changes, until `stop`. One reload at a time; each
/// compiles on a blocking thread so the pipeline's threads keep working.
async fn reloads(
    path: std::path::PathBuf,
    mut running: Config,
    live: Arc<LiveChannels>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restarting");
            None
        }
    };
    let mut watched = reload::Watched::of(&running);
    let mut tick = tokio::time::interval(reload::WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signal = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<()>();
        let trigger = tokio::select! {
            _ = stop.cancelled() => return,
            _ = signal => "SIGHUP",
            _ = tick.tick(), if running.plugins.watch => {
                if !watched.changed() {
                    continue;
                }
                "plugin file changed"
            }
        };
        tracing::info!(trigger, config = %path.display(), "reloading config and plugins");
        let job = {
            let (path, current, live, metrics) =
                (path.clone(), running.clone(), live.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || {
                reload::reload(&path, &ProcessEnv, &current, &live, &metrics, trigger)
            })
        };
        match job.await {
            Ok(Some(config)) => {
                running = config;
                watched = reload::Watched::of(&running);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the reload ended with a panic; the running config and plugins stay")
            }
        }
    }
}

/// Opens the configured ledger. A shared database that does not answer yet
/// (it is starting beside the host) is waited for, saying so; one that
/// refuses (a wrong password, a missing database) refuses the start.
async fn open_ledger(config: &notify_host::config::LedgerConfig) -> Result<Ledger, LedgerError> {
    match &config.backend {
        LedgerBackend::Embedded => Ok(Ledger::new(Arc::new(Embedded::open(
            &config.path,
            config.retention,
            config.cache_bytes,
        )?))),
        LedgerBackend::Postgres(pg) => {
            let mut wait = Duration::from_millis(250);
            let mut tries = 0u32;
            loop {
                match Postgres::connect(pg, config.retention).await {
                    Ok(backend) => {
                        tracing::info!(ledger = %pg.url_shown, owner = %backend.owner(), lease_seconds = pg.lease.as_secs_f64(), "shared ledger ready (PostgreSQL)");
                        return Ok(Ledger::new(Arc::new(backend)));
                    }
                    Err(LedgerError::Unavailable(reason)) => {
                        tries += 1;
                        if tries == 1 || tries.is_multiple_of(10) {
                            tracing::warn!(ledger = %pg.url_shown, reason = %reason, tries, "the ledger database does not answer yet; waiting for it");
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// A broker that answers metadata at all does so in milliseconds; one that
/// does not answer in 5 s is still starting, and start-up goes on.
const DLQ_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs and prints why the service will not start; exit 2 like a config
/// error, since the fix is in the config or the cluster, not a restart.
fn refuse_start(message: &str) -> ExitCode {
    tracing::error!(reason = %message, "refusing to start");
    eprintln!("error: {message}");
    ExitCode::from(super::EXIT_CONFIG)
}

/// Resolves on SIGTERM (what container runtimes send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
