//! Hot reload: on SIGHUP (and, with `plugins.watch`, when a plugin file
//! changes) the host reads config.toml again, loads every plugin as
//! `check-config` would, and swaps the channels whole.
//!
//! Invariants:
//! - All or nothing: a new config or plugin that does not load is refused
//!   with its reasons logged, and the running channels keep serving.
//! - Only what a channel's plugin sees may change: its plugin file and pin,
//!   settings, limits, instance mode, base URL, allow-lists and timeout.
//!   Anything else (Kafka, the ledger, the admin listener, `[plugins]`,
//!   credentials, retry/rate/circuit policies, the set of channels and their
//!   modes, reminders) needs a restart, and a reload that changes it is
//!   refused naming each key ([`restart_needed`]).
//! - Work in flight finishes on the plugins it started with (it holds the
//!   old set, see [`LiveChannels`]); new work uses the new ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::channels::{Channels, LiveChannels};
use crate::config::{self, ChannelConfig, Config, ConfigError, Problem, VarLookup};
use crate::metrics::{Metrics, PluginInfoLabels, ReloadLabels};

/// Why a reload was refused. The running channels are untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("these settings cannot change without a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<String>),
    #[error("{}", problems_text(.0))]
    Plugins(Vec<Problem>),
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            if p.key.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.key, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The keys that differ between `old` and `new` and that only a restart
/// applies, in config order. Empty: `new` may be applied by a reload.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_string());
        }
    };
    differs("kafka", old.kafka == new.kafka);
    differs("pipeline", old.pipeline == new.pipeline);
    differs("ledger", old.ledger == new.ledger);
    differs("admin.listen", old.admin_listen == new.admin_listen);
    differs(
        "admin.token",
        old.admin_token.as_ref().map(|t| t.expose())
            == new.admin_token.as_ref().map(|t| t.expose()),
    );
    differs("plugins", old.plugins == new.plugins);
    differs("log", old.log == new.log);
    differs("scheduler", old.scheduler == new.scheduler);
    differs("reminders", old.reminders == new.reminders);
    differs("notices", old.notices == new.notices);
    let names: std::collections::BTreeSet<&String> =
        old.channels.keys().chain(new.channels.keys()).collect();
    for name in names {
        match (old.channels.get(name), new.channels.get(name)) {
            (Some(a), Some(b)) => {
                for key in channel_restart_keys(a, b) {
                    keys.push(format!("channels.{name}.{key}"));
                }
            }
            _ => keys.push(format!("channels.{name}")),
        }
    }
    keys
}

/// A channel's keys that differ and need a restart: those the health gates,
/// the transport's clients and the secret scrubber were built from at start.
fn channel_restart_keys(a: &ChannelConfig, b: &ChannelConfig) -> Vec<&'static str> {
    [
        ("mode", a.mode == b.mode),
        ("auth", a.auth == b.auth),
        ("proxy", a.proxy == b.proxy),
        ("retry", a.retry == b.retry),
        ("circuit", a.circuit == b.circuit),
        ("rate", a.rate == b.rate),
        ("quiet_hours", a.quiet_hours == b.quiet_hours),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(key, _)| key)
    .collect()
}

/// Reads `path` and loads its channels beside the running ones, without
/// swapping: the caller swaps on `Ok`.
pub fn prepare(
    path: &Path,
    env: &dyn VarLookup,
    running: &Config,
    live: &LiveChannels,
) -> Result<(Config, Channels), ReloadError> {
    let new = config::load(path, env).map_err(ReloadError::Config)?;
    let keys = restart_needed(running, &new);
    if !keys.is_empty() {
        return Err(ReloadError::NeedsRestart(keys));
    }
    let channels = live.load().reload(&new).map_err(ReloadError::Plugins)?;
    Ok((new, channels))
}

/// `notify_plugin_info`'s series for a set of channels.
pub fn plugin_labels(channels: &Channels) -> Vec<PluginInfoLabels> {
    channels
        .iter()
        .map(|c| PluginInfoLabels {
            channel: c.name().to_string(),
            plugin: c.plugin.info().name.clone(),
            version: c.plugin.info().version.clone(),
            contract: c.plugin.contract_version().to_string(),
            sha256: c.plugin.sha256().to_string(),
        })
        .collect()
}

/// Logs each channel's plugin and sets `notify_plugin_info`.
pub fn announce(channels: &Channels, metrics: &Metrics, why: &str) {
    for c in channels.iter() {
        let info = c.plugin.info();
        tracing::info!(
            channel = c.name(),
            plugin = %info.name,
            version = %info.version,
            contract = c.plugin.contract_version(),
            sha256 = c.plugin.sha256(),
            instances = if c.plugin.reuses_instances() { "reuse" } else { "fresh" },
            path = %c.config.plugin_path.display(),
            "{why}"
        );
    }
    metrics.set_plugins(plugin_labels(channels));
}

/// Runs one reload and reports it: swaps on success, keeps the running set
/// on refusal. Returns the config now in force for the channels.
pub fn reload(
    path: &Path,
    env: &dyn VarLookup,
    running: &Config,
    live: &LiveChannels,
    metrics: &Metrics,
    trigger: &str,
) -> Option<Config> {
    let started = std::time::Instant::now();
    let result = |r: &str| {
        metrics
            .plugin_reloads
            .get_or_create(&ReloadLabels {
                result: r.to_string(),
            })
            .inc();
    };
    match prepare(path, env, running, live) {
        Ok((config, channels)) => {
            announce(&channels, metrics, "channel reloaded");
            live.swap(channels);
            result("applied");
            tracing::info!(
                trigger,
                took_ms = started.elapsed().as_millis() as u64,
                "reload applied: new work uses the new plugins, work in flight finishes on the old"
            );
            Some(config)
        }
        Err(e) => {
            result("refused");
            tracing::error!(trigger, error = %e, "reload refused; the running config and plugins stay");
            None
        }
    }
}

/// What a plugin file looks like from outside: enough to notice a
/// replaced or rewritten file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// The plugin files of the enabled channels and how they look now.
pub struct Watched(Vec<(PathBuf, Option<Stamp>)>);

impl Watched {
    pub fn of(config: &Config) -> Watched {
        Watched(
            config
                .enabled_channels()
                .map(|c| (c.plugin_path.clone(), stamp(&c.plugin_path)))
                .collect(),
        )
    }

    /// Whether any file changed since [`Watched::of`] or the last call.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.0 {
            let now = stamp(path);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// How often `plugins.watch` looks at the plugin files. A deploy that
/// copies a file in place is seen within this, and a file still being
/// written is seen changing again and reloaded once more.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::collections::HashMap;

    struct Env(HashMap<&'static str, &'static str>);
    impl VarLookup for Env {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    const BASE: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[channels.email]
base_url = "https://api.mailgun.net"
auth = { type = "basic", username = "api", password = "${KEY}" }
[channels.email.settings]
domain = "mg.example.com"
"#;

    fn config(extra_channel_keys: &str, tail: &str) -> Config {
        let plugin = if extra_channel_keys.contains("plugin =") {
            ""
        } else {
            "plugin = \"mailgun.wasm\""
        };
        let extra_channel_keys = format!("{plugin}\n{extra_channel_keys}");
        let text = BASE.replace(
            "[channels.email.settings]",
            &format!("{extra_channel_keys}\n[channels.email.settings]"),
        ) + tail;
        let env = Env(HashMap::from([("KEY", "key-0123456789abcdef")]));
        match parse(&text, Path::new("/etc/notify"), &env) {
            Ok(c) => c,
            Err(p) => panic!("test config does not parse: {p:?}"),
        }
    }

    #[test]
    fn only_what_the_plugin_sees_may_change_without_a_restart() {
        let old = config("", "");
        let cases: [(&str, &str, &str, &[&str]); 12] = [
            ("unchanged", "", "", &[]),
            ("a new plugin file", "plugin = \"mailgun-2.wasm\"", "", &[]),
            ("a pin", &format!("sha256 = \"{}\"", "a".repeat(64)), "", &[]),
            ("a setting", "", "region = \"eu\"\n", &[]),
            ("limits", "deadline_ms = 900\nmemory_limit_mib = 64", "", &[]),
            ("reuse", "instances = \"reuse\"", "", &[]),
            ("timeout", "timeout_seconds = 3", "", &[]),
            ("the mode", "mode = \"hold\"", "", &["channels.email.mode"]),
            ("a rate", "rate = { per_second = 5 }", "", &["channels.email.rate"]),
            ("the log", "", "[log]\nlevel = \"debug\"\n", &["log"]),
            (
                "a new channel",
                "",
                "[channels.sms]\nmode = \"off\"\nplugin = \"twilio.wasm\"\nbase_url = \"https://api.twilio.com\"\n",
                &["channels.sms"],
            ),
            (
                "kafka and plugins",
                "",
                "[plugins]\nmax_concurrent_calls = 7\n",
                &["plugins"],
            ),
        ];
        for (what, channel_keys, tail, want) in cases {
            let new = config(channel_keys, tail);
            assert_eq!(restart_needed(&old, &new), want, "{what}");
        }
    }
}
