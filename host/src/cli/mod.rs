//! Command-line interface: the service itself and the tools a plugin author
//! and an operator use to check their work.

mod deliveries;
mod dlq;
mod plugin_cmd;
mod plugin_compile;
mod publish;
mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use notify_host::config::{self, Config, ConfigError, ProcessEnv};

/// Exit code for a failure at run time (a plugin trapped, the broker is gone).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a config file that does not validate or load.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for `plugin render`/`send` when the event cannot be sent:
/// the plugin rejected it or the host refused the request.
pub const EXIT_REJECTED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "notify-host",
    version,
    about = "Turns appointment events from Kafka into e-mail and SMS through sandboxed WebAssembly channel plugins.",
    after_help = "Exit codes: 0 success, 1 run-time failure, 2 invalid configuration (or a missing dead-letter topic), 3 event rejected or request refused."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: load the config and every enabled plugin, then serve
    /// until SIGTERM or Ctrl-C.
    Run(ConfigArg),
    /// Validate the config and load every enabled plugin; exit 0 when all is
    /// well, 2 with every problem (key and file named) when not.
    CheckConfig(ConfigArg),
    /// Probe a health endpoint: exit 0 on HTTP 200, 1 otherwise (for
    /// container healthchecks; the image has no curl).
    Health {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:9090/health/ready")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5.0)]
        timeout_seconds: f64,
    },
    /// Publish test events to Kafka (acks=all), printing each event_id.
    Publish(publish::PublishArgs),
    /// Tools for plugin authors: new, test, render, classify, send, compile.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// The dead-letter topic: list dead letters, replay them after fixing
    /// the cause.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// The delivery ledger of a running host, through its status API
    /// (token in NOTIFY_ADMIN_TOKEN): show an event, list, release a
    /// held channel.
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the config file.
    #[arg(
        long,
        short = 'c',
        env = "NOTIFY_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => service::run(&args.config),
        Command::CheckConfig(args) => check_config(&args.config),
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
        Command::Publish(args) => publish::run(args),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Deliveries(cmd) => deliveries::run(cmd),
        Command::Health {
            url,
            timeout_seconds,
        } => health(&url, timeout_seconds),
    }
}

/// Loads and validates the config, printing every problem on failure.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path, &ProcessEnv).map_err(|e| report_config_error(&e))
}

/// Loads the config's enabled channels (their plugins), printing every
/// problem, keyed like config problems, on failure.
pub fn load_channels(
    path: &Path,
    config: &Config,
) -> Result<notify_host::channels::Channels, ExitCode> {
    notify_host::channels::Channels::load(config).map_err(|problems| {
        report_config_error(&ConfigError {
            file: path.to_path_buf(),
            problems,
        })
    })
}

pub fn report_config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

fn check_config(path: &Path) -> Result<ExitCode> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let channels = match load_channels(path, &config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    println!("{}: ok", path.display());
    for c in config.channels.values() {
        match channels.get(&c.name) {
            Some(loaded) => {
                let info = loaded.plugin.info();
                let allowed: Vec<String> = c.allowed.iter().map(ToString::to_string).collect();
                let compiled = loaded.plugin.compiled();
                println!(
                    "  channel {}: enabled, plugin {} {} (notify:channel@{}, {}), sends to {}",
                    c.name,
                    info.name,
                    info.version,
                    loaded.plugin.contract_version(),
                    c.plugin_path.display(),
                    allowed.join(", ")
                );
                println!(
                    "    sha256 {}; instances {}; {} in {} ms",
                    loaded.plugin.sha256(),
                    match c.instances {
                        notify_host::config::InstanceMode::Fresh => "fresh".to_string(),
                        notify_host::config::InstanceMode::Reuse { keep, calls } =>
                            format!("reuse (keep {keep}, {calls} calls each)"),
                    },
                    if compiled.from_cache { "from the compile cache" } else { "compiled" },
                    compiled.took.as_millis()
                );
            }
            None if c.mode == notify_host::config::ChannelMode::Hold => println!(
                "  channel {}: on hold (requests kept in the ledger for `notify-host deliveries release`; no plugin loaded)",
                c.name
            ),
            None => println!("  channel {}: off (requests skipped)", c.name),
        }
    }
    match &config.ledger.backend {
        notify_host::config::LedgerBackend::Embedded => println!(
            "  ledger: embedded (one host), {}; retention {} h",
            config.ledger.path.display(),
            config.ledger.retention.as_secs_f64() / 3600.0
        ),
        notify_host::config::LedgerBackend::Postgres(pg) => println!(
            "  ledger: postgres (shared by every replica), {}; pool {} connections, lease {} s, owner {}; retention {} h (the database is not contacted here)",
            pg.url_shown,
            pg.pool_size,
            pg.lease.as_secs_f64(),
            pg.owner,
            config.ledger.retention.as_secs_f64() / 3600.0
        ),
    }
    let runtime = channels.runtime();
    let pool = runtime.pool();
    let each = pool.per_instance;
    println!(
        "  plugin calls: at most {} at once (plugins.max_concurrent_calls); pool: {} instances of up to {} core instances, {} memories, {} tables each (the largest plugin's needs)",
        config.plugins.max_concurrent_calls,
        pool.instances,
        each.core_instances,
        each.memories,
        each.tables
    );
    match runtime.cache_dir() {
        Some(dir) => println!("  compile cache: {}", dir.display()),
        None => match runtime.cache_problem() {
            Some(why) => println!("  compile cache: NOT IN USE (plugins.cache_dir): {why}"),
            None => println!("  compile cache: off (plugins.cache = false)"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn health(url: &str, timeout_seconds: f64) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = std::time::Duration::from_secs_f64(timeout_seconds.clamp(0.1, 300.0));
    let result = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(url).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    });
    match result {
        Ok((status, body)) => {
            println!("{status} {body}");
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            })
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}
