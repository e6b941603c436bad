//! The start-up run (`--runs startup`): `notify-host run` with only the
//! e-mail channel (`--email-plugin`, the Mailgun plugin by default), from
//! process start until `/health/live` and `/health/ready` answer 200, with
//! an empty compile cache (cold) and again with the cache the cold start
//! filled (cached), `--startup-repeats` pairs, cold and cached alternating.
//!
//! `/health/live` answers once the admin server listens, which the host
//! starts after the config, the plugins (compiled or taken from the cache),
//! the ledger and the dead-letter topic check: the part of start-up a plugin
//! changes. `/health/ready` also waits for the consumer group's partition
//! assignment, which against tansu takes about half the session timeout
//! (the bench's 6 s), whatever the plugin. The host's own "plugin loaded"
//! log line gives the compile (or cache load) time and source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::host::{Host, HostConfig};
use crate::runs::Bench;
use crate::sys;

/// One start.
#[derive(Debug, Clone, Serialize)]
pub struct StartupSample {
    pub repeat: u32,
    /// The cache directory was empty (a fresh one).
    pub cold: bool,
    pub live_seconds: f64,
    pub ready_seconds: f64,
    /// VmHWM once ready.
    pub peak_rss_mib: f64,
    /// From the host's "plugin loaded" line for the e-mail channel.
    pub plugin_load_ms: Option<f64>,
    /// "compiled" or "cache", as the host says.
    pub plugin_source: Option<String>,
}

/// Medians of the starts of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct StartupStats {
    pub starts: usize,
    pub live_seconds: f64,
    pub ready_seconds: f64,
    pub peak_rss_mib: f64,
    pub plugin_load_ms: Option<f64>,
    /// Every start's plugin source agreed with the kind (cold: compiled,
    /// cached: cache).
    pub sources_as_expected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StartupResult {
    pub repeats: u32,
    pub cold: StartupStats,
    pub cached: StartupStats,
    pub samples: Vec<StartupSample>,
}

/// The median; NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn stats(samples: &[StartupSample], cold: bool) -> StartupStats {
    let of = |f: fn(&StartupSample) -> f64| {
        median(samples.iter().filter(|s| s.cold == cold).map(f).collect())
    };
    let loads: Vec<f64> = samples
        .iter()
        .filter(|s| s.cold == cold)
        .filter_map(|s| s.plugin_load_ms)
        .collect();
    let expected = if cold { "compiled" } else { "cache" };
    StartupStats {
        starts: samples.iter().filter(|s| s.cold == cold).count(),
        live_seconds: of(|s| s.live_seconds),
        ready_seconds: of(|s| s.ready_seconds),
        peak_rss_mib: of(|s| s.peak_rss_mib),
        plugin_load_ms: (!loads.is_empty()).then(|| median(loads)),
        sources_as_expected: samples
            .iter()
            .filter(|s| s.cold == cold)
            .all(|s| s.plugin_source.as_deref() == Some(expected)),
    }
}

/// The "plugin loaded" line of `channel` in a JSON host log: (took_ms,
/// source).
pub fn plugin_loaded(log: &str, channel: &str) -> Option<(f64, String)> {
    log.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = if v.get("message").is_some() {
            &v
        } else {
            v.get("fields")?
        };
        if fields["message"] != "plugin loaded" || fields["channel"] != channel {
            return None;
        }
        Some((
            fields["took_ms"].as_f64()?,
            fields["source"].as_str()?.to_string(),
        ))
    })
}

impl Bench<'_> {
    pub fn startup(&self, repeats: u32) -> Result<StartupResult> {
        let run = fastrand::u32(..);
        let topic = format!("appointments.created.bench-startup.{run:08x}");
        let dlq = format!("appointments.created.dlq.bench-startup.{run:08x}");
        self.rt
            .block_on(self.broker.create_topics(&[&topic, &dlq]))?;
        // The plugin loader's info line, whatever the level asked for.
        let level = self.host_log_level();
        let mut samples = Vec::new();
        for repeat in 1..=repeats {
            let cache = self
                .workdir
                .join(format!("startup-{run:08x}-{repeat}-plugin-cache"));
            for cold in [true, false] {
                let sample = self.start_once(run, repeat, cold, &cache, &topic, &dlq, &level)?;
                eprintln!(
                    "notify-bench: [startup] {} #{repeat}: live {:.3} s, ready {:.3} s, peak RSS {:.1} MiB, plugin {} in {} ms",
                    if cold { "cold" } else { "cached" },
                    sample.live_seconds,
                    sample.ready_seconds,
                    sample.peak_rss_mib,
                    sample.plugin_source.as_deref().unwrap_or("?"),
                    sample
                        .plugin_load_ms
                        .map_or("?".to_string(), |m| format!("{m:.0}")),
                );
                samples.push(sample);
            }
        }
        Ok(StartupResult {
            repeats,
            cold: stats(&samples, true),
            cached: stats(&samples, false),
            samples,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_once(
        &self,
        run: u32,
        repeat: u32,
        cold: bool,
        cache: &Path,
        topic: &str,
        dlq: &str,
        level: &str,
    ) -> Result<StartupSample> {
        let kind = if cold { "cold" } else { "cached" };
        let name = format!("startup-{run:08x}-{repeat}-{kind}");
        let group = format!("notify-bench-{name}");
        let dedup: PathBuf = self.workdir.join(format!("{name}-ledger.redb"));
        let admin_port = sys::free_port()?;
        let config = HostConfig {
            bootstrap: &self.broker.bootstrap,
            topic,
            dlq,
            group: &group,
            provider_url: &self.standin.url(),
            email: self.email,
            twilio_wasm: None,
            max_in_flight: None,
            log_level: level,
            dedup_path: &dedup,
            admin_port,
            kafka_client: self.kafka_client,
            plugin_instances: self.plugin_instances,
            max_concurrent_calls: self.max_concurrent_calls,
            cache_dir: Some(cache),
            postgres: None,
        };
        let config_path = self.workdir.join(format!("{name}-config.toml"));
        std::fs::write(&config_path, config.render())
            .with_context(|| format!("write {}", config_path.display()))?;
        let log = self.workdir.join(format!("{name}-host.log"));
        let mut host = Host::start(self.host_bin, &config_path, &log, admin_port)?;
        let timeout = Duration::from_secs(180);
        let live =
            self.rt
                .block_on(host.wait_ok("/health/live", timeout, Duration::from_millis(5)))?;
        let ready =
            self.rt
                .block_on(host.wait_ok("/health/ready", timeout, Duration::from_millis(10)))?;
        let peak_rss_kib = sys::peak_rss_kib(host.pid)?;
        host.stop()?;
        let loaded = std::fs::read_to_string(&log)
            .ok()
            .and_then(|text| plugin_loaded(&text, "email"));
        Ok(StartupSample {
            repeat,
            cold,
            live_seconds: live.as_secs_f64(),
            ready_seconds: ready.as_secs_f64(),
            peak_rss_mib: peak_rss_kib as f64 / 1024.0,
            plugin_load_ms: loaded.as_ref().map(|l| l.0),
            plugin_source: loaded.map(|l| l.1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn the_plugin_loaded_line_is_found_per_channel() {
        let log = r#"{"timestamp":"2026-12-02T14:00:00Z","level":"INFO","message":"plugin loaded","channel":"sms","source":"compiled","took_ms":900,"target":"notify_host::plugin::runtime"}
not json
{"timestamp":"2026-12-02T14:00:01Z","level":"INFO","message":"plugin loaded","channel":"email","source":"cache","took_ms":12,"target":"notify_host::plugin::runtime"}"#;
        assert_eq!(
            plugin_loaded(log, "email"),
            Some((12.0, "cache".to_string()))
        );
        assert_eq!(
            plugin_loaded(log, "sms"),
            Some((900.0, "compiled".to_string()))
        );
        assert_eq!(plugin_loaded(log, "push"), None);
    }
}
