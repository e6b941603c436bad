//! `notify-host plugin render|classify|send|new|test`: what a plugin author
//! runs to start a plugin, test it against recorded cases, and see exactly
//! what the host would do with it.
//!
//! `render`, `classify` and `send` load only the channel they are asked
//! about, so the other channels' plugins and credentials need not be there.
//!
//! Nothing printed here carries a credential: requests are shown with auth
//! values redacted, a provider's answer (headers and body) is scrubbed of
//! every configured credential before it is printed, and every JSON
//! document goes through the same scrubber once more on its way out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use futures_executor::block_on;
use notify_host::attempt::{self, Observed};
use notify_host::channels::{Channel, Channels, RenderError};
use notify_host::config::{Config, ConfigError, LogConfig, LogFormat};
use notify_host::plugin::{Disposition, Header, HttpResponse, Purpose};
use notify_host::transport::Transport;
use notify_host::{event, scrub, telemetry};
use serde_json::{json, Value};

use super::{load_config, report_config_error, ConfigArg, EXIT_FAILURE, EXIT_REJECTED};

// The authoring kit's two commands, in files of their own next to this one.
#[path = "plugin_new.rs"]
mod plugin_new;
#[path = "plugin_test.rs"]
mod plugin_test;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print, as JSON, the exact HTTP request(s) the host would send for an
    /// event, credentials redacted. Nothing is sent.
    Render {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        target: Target,
    },
    /// Print how the channel's plugin classifies a provider answer.
    Classify {
        #[command(flatten)]
        config: ConfigArg,
        /// The channel (a key under [channels] in the config).
        #[arg(long)]
        channel: String,
        /// HTTP status code of the answer.
        #[arg(long)]
        status: u16,
        /// A response header, `Name: value`; repeat for more.
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// A file holding the response body.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Which attempt this answer is for (1 = the first send).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
    },
    /// Render an event and really send it, once (no retries, no Kafka), then
    /// print the answer and its classification. Uses real credentials.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        target: Target,
    },
    /// Compile every enabled channel's plugin into the compile cache
    /// (plugins.cache_dir) ahead of time, e.g. while building an image, and
    /// print each plugin's SHA-256 for `channels.NAME.sha256`.
    Compile {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a new webhook-style plugin skeleton (Rust, Python or
    /// JavaScript) with its build script, the contract's WIT and test cases.
    New(plugin_new::NewArgs),
    /// Run recorded cases (a directory of JSON files) against a plugin,
    /// without a config file: exit 0 when every step passes, 1 when one
    /// fails, 2 when a case file or the plugin cannot be used.
    Test(plugin_test::TestArgs),
}

#[derive(Debug, Args)]
pub struct Target {
    /// The channel (a key under [channels] in the config).
    #[arg(long)]
    channel: String,
    /// A file holding one event as JSON, as it would arrive on Kafka.
    #[arg(long)]
    event: PathBuf,
}

pub fn run(cmd: PluginCommand) -> Result<ExitCode> {
    // Plugin output (their println! debugging) is logged at info: show it.
    telemetry::init(&LogConfig {
        format: LogFormat::Text,
        level: "info".into(),
    });
    match cmd {
        PluginCommand::Render { config, target } => {
            with_channel(&config.config, &target.channel, |ch, _| {
                render(ch, &target.event)
            })
        }
        PluginCommand::Classify {
            config,
            channel,
            status,
            headers,
            body,
            attempt,
        } => with_channel(&config.config, &channel, |ch, _| {
            classify(ch, status, &headers, body.as_deref(), attempt)
        }),
        PluginCommand::Send { config, target } => {
            with_channel(&config.config, &target.channel, |ch, config| {
                send(ch, &target.event, config.plugins.response_body_limit)
            })
        }
        PluginCommand::Compile { config } => super::plugin_compile::run(&config.config),
        PluginCommand::Test(args) => plugin_test::run(&args),
        PluginCommand::New(args) => plugin_new::run(&args),
    }
}

fn with_channel(
    config_path: &Path,
    name: &str,
    f: impl FnOnce(&Channel, &Config) -> Result<ExitCode>,
) -> Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match config.channels.get(name) {
        None => {
            let known: Vec<&str> = config.channels.keys().map(String::as_str).collect();
            bail!(
                "no channel `{name}` in {} (channels: {})",
                config_path.display(),
                known.join(", ")
            );
        }
        Some(c) if !c.enabled => bail!("channel `{name}` is disabled in {}", config_path.display()),
        Some(_) => {}
    }
    // Only the channel asked about: the others' plugin files and
    // credentials are not needed to render, classify or send on this one.
    let channels = match Channels::load_only(&config, &[name]) {
        Ok(c) => c,
        Err(problems) => {
            return Ok(report_config_error(&ConfigError {
                file: config_path.to_path_buf(),
                problems,
            }))
        }
    };
    let channel = channels
        .get(name)
        .context("channel vanished after loading")?;
    f(channel, &config)
}

fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{}", scrub::known().scrub(&text));
    Ok(())
}

fn read_event(path: &Path) -> Result<Result<event::AppointmentEvent, event::ContractViolation>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read event file {}", path.display()))?;
    Ok(event::parse(&bytes))
}

fn plugin_json(ch: &Channel) -> Value {
    let info = ch.plugin.info();
    json!({ "name": info.name, "version": info.version, "contract": ch.plugin.contract_version() })
}

/// Prints why an event cannot go out; exit 3 for the event's or plugin's
/// fault as the host would dead-letter it, exit 1 when the plugin crashed.
fn report_unsendable(ch: &Channel, e: &RenderError) -> Result<ExitCode> {
    let (kind, code) = match e {
        RenderError::MissingField { .. } => ("missing_field", EXIT_REJECTED),
        RenderError::Rejected { .. } => ("rejected", EXIT_REJECTED),
        RenderError::Empty { .. } => ("rejected", EXIT_REJECTED),
        RenderError::Refused(_) => ("refused", EXIT_REJECTED),
        RenderError::Plugin(_) => ("plugin_error", EXIT_FAILURE),
    };
    print_json(&json!({ "channel": ch.name(), "plugin": plugin_json(ch), kind: e.to_string() }))?;
    eprintln!("error: {e}");
    Ok(ExitCode::from(code))
}

fn render(ch: &Channel, event_path: &Path) -> Result<ExitCode> {
    let event = match read_event(event_path)? {
        Ok(e) => e,
        Err(v) => {
            print_json(&json!({ "channel": ch.name(), "invalid_event": v.to_string() }))?;
            eprintln!(
                "error: {} breaks the event contract: {v}",
                event_path.display()
            );
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
    };
    match block_on(ch.render(&event)) {
        Ok(requests) => {
            let requests: Vec<_> = requests.iter().map(|r| r.redacted()).collect();
            print_json(
                &json!({ "channel": ch.name(), "plugin": plugin_json(ch), "requests": requests }),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => report_unsendable(ch, &e),
    }
}

pub fn disposition_json(d: &Disposition) -> Value {
    match d {
        Disposition::Delivered(d) => {
            json!({ "disposition": "delivered", "provider_message_id": d.provider_message_id })
        }
        Disposition::Retry(r) => {
            json!({ "disposition": "retry", "after_ms": r.after_ms, "reason": r.reason })
        }
        Disposition::Permanent(reason) => json!({ "disposition": "permanent", "reason": reason }),
        Disposition::ChannelDown(reason) => {
            json!({ "disposition": "channel-down", "reason": reason })
        }
    }
}

fn classify(
    ch: &Channel,
    status: u16,
    headers: &[String],
    body: Option<&Path>,
    attempt: u32,
) -> Result<ExitCode> {
    let headers = headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => Ok(Header {
                name: name.trim().to_ascii_lowercase(),
                value: value.trim().to_string(),
            }),
            _ => bail!("--header {h:?}: expected NAME:VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    let body = match body {
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read body file {}", p.display()))?
        }
        None => Vec::new(),
    };
    let response = HttpResponse {
        status,
        headers,
        body,
    };
    let d = block_on(ch.classify(&response, attempt.max(1)))?;
    print_json(&disposition_json(&d))?;
    Ok(ExitCode::SUCCESS)
}

fn send(ch: &Channel, event_path: &Path, body_limit: usize) -> Result<ExitCode> {
    let event = match read_event(event_path)? {
        Ok(e) => e,
        Err(v) => bail!("{} breaks the event contract: {v}", event_path.display()),
    };
    let requests = match block_on(ch.render(&event)) {
        Ok(r) => r,
        Err(e) => return report_unsendable(ch, &e),
    };
    // The pipeline's limit, so the plugin classifies what it would in service.
    let transport = Transport::new(body_limit, [&ch.config])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut results = Vec::new();
    let mut all_delivered = true;
    for request in requests {
        let shown = request.redacted();
        // The pipeline's own single-attempt path: an answered request is
        // never sent again, whatever the plugin does with the answer.
        let outcome = runtime.block_on(attempt::attempt(
            ch,
            &transport,
            request,
            1,
            Purpose::Confirmation,
            attempt::Hooks::default(),
        ));
        let result = match (outcome.observed, outcome.received) {
            (Observed::Unreachable(e), _) => {
                all_delivered = false;
                json!({ "request": shown, "error": e, "disposition": "retry" })
            }
            (observed, received) => {
                let classified = match &observed {
                    Observed::Classified(d) => {
                        all_delivered &= matches!(d, Disposition::Delivered(_));
                        disposition_json(d)
                    }
                    // What the pipeline would do: decide by the host's rule.
                    Observed::Unclassified { status, error } => {
                        let delivered = (200..300).contains(status);
                        all_delivered &= delivered;
                        json!({
                            "host_decision": if delivered { "delivered" } else { "dead_letter" },
                            "why": "the plugin failed to classify the answer: a 2xx counts as delivered, anything else is dead-lettered (plugin_failed); an answered request is never resent",
                            "plugin_error": error,
                        })
                    }
                    Observed::Unreachable(_) => json!(null),
                };
                match received {
                    Some(received) => {
                        // `attempt` already scrubbed the answer before the
                        // plugin saw it; scrubbing again here keeps the
                        // rule local to what is printed.
                        let latency_ms = received.latency.as_millis() as u64;
                        let response = attempt::scrubbed(&scrub::known(), received.response);
                        let headers: Vec<(String, String)> = response
                            .headers
                            .iter()
                            .map(|h| (h.name.clone(), h.value.clone()))
                            .collect();
                        json!({
                            "request": shown,
                            "status": response.status,
                            "latency_ms": latency_ms,
                            "headers": headers,
                            "body": String::from_utf8_lossy(&response.body),
                            "classified": classified,
                        })
                    }
                    None => json!({ "request": shown, "classified": classified }),
                }
            }
        };
        results.push(result);
    }
    print_json(&json!({ "channel": ch.name(), "plugin": plugin_json(ch), "results": results }))?;
    Ok(if all_delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
