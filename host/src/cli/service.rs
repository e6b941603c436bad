//! `notify-host run`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use notify_host::channels::Channels;
use notify_host::config::ConfigError;
use notify_host::telemetry;

use super::{load_config, report_config_error};

pub fn run(config_path: &Path) -> Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    telemetry::init(&config.log);
    let channels = match Channels::load(&config) {
        Ok(c) => c,
        Err(problems) => {
            return Ok(report_config_error(&ConfigError {
                file: config_path.to_path_buf(),
                problems,
            }))
        }
    };
    for c in channels.iter() {
        let info = c.plugin.info();
        tracing::info!(channel = c.name(), plugin = %info.name, version = %info.version, path = %c.config.plugin_path.display(), "channel ready");
    }
    for c in config.channels.values().filter(|c| !c.enabled) {
        tracing::info!(channel = %c.name, "channel disabled in config: requests for it are skipped");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        tracing::info!(config = %config_path.display(), "notify-host running; waiting for SIGTERM or Ctrl-C");
        shutdown_signal().await;
        tracing::info!("shutting down");
    });
    Ok(ExitCode::SUCCESS)
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
        _ = ctrl_c => {},
        _ = term => {},
    }
}
