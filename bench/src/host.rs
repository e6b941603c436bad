//! The real `notify-host` binary as a child process: building it, its
//! config, starting, readiness, reading its `/metrics`, and stopping it the
//! way production does.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys;

pub const MAILGUN_KEY: &str = "key-bench-mailgun";
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "bench-twilio-token";
/// `WEBHOOK_SECRET` in the host's environment: the `hmac` auth's secret (32
/// characters, a test value).
pub const WEBHOOK_SECRET: &str = "notify-bench-webhook-secret-0032";

/// How the host authenticates the e-mail channel's requests
/// (`channels.email.auth`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailAuth {
    /// No `auth` key.
    None,
    /// `{ type = "basic", username = "api", password = "${MAILGUN_API_KEY}" }`
    Basic,
    /// `{ type = "hmac", secret = "${WEBHOOK_SECRET}" }`
    Hmac,
}

/// `channels.NAME.instances`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    Fresh,
    Reuse,
}

impl Instances {
    pub fn name(self) -> &'static str {
        match self {
            Instances::Fresh => "fresh",
            Instances::Reuse => "reuse",
        }
    }
}

/// The e-mail channel: the Mailgun plugin by default, or any plugin
/// (`--email-plugin`) with its settings and auth.
#[derive(Debug, Clone)]
pub struct EmailChannel {
    pub plugin: PathBuf,
    /// `channels.email.settings`, in order.
    pub settings: Vec<(String, String)>,
    pub auth: EmailAuth,
    /// None leaves the host's default (fresh).
    pub instances: Option<Instances>,
}

impl EmailChannel {
    /// The settings Mailgun needs.
    pub fn mailgun_settings() -> Vec<(String, String)> {
        vec![
            ("domain".into(), "mg.example.com".into()),
            ("from".into(), "noreply@mg.example.com".into()),
        ]
    }

    /// A webhook's: the stand-in takes any path.
    pub fn webhook_settings() -> Vec<(String, String)> {
        vec![("path".into(), "/hook".into())]
    }

    /// `k=v,k=v` (`--email-settings`); an empty string is no settings.
    pub fn parse_settings(text: &str) -> Result<Vec<(String, String)>> {
        text.split(',')
            .map(str::trim)
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--email-settings: `{kv}`: expected KEY=VALUE"))?;
                Ok((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }

    /// The `[channels.email]` table.
    fn render(&self, provider_url: &str) -> String {
        let auth = match self.auth {
            EmailAuth::None => String::new(),
            EmailAuth::Basic => "auth = { type = \"basic\", username = \"api\", password = \"${MAILGUN_API_KEY}\" }\n".to_string(),
            EmailAuth::Hmac => "auth = { type = \"hmac\", secret = \"${WEBHOOK_SECRET}\" }\n".to_string(),
        };
        let instances = self
            .instances
            .map(|i| format!("instances = {}\n", quoted(i.name())))
            .unwrap_or_default();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
            .collect();
        format!(
            "[channels.email]\nplugin = {plugin}\nbase_url = {url}\n{instances}{auth}settings = {{ {settings} }}\n",
            plugin = quoted(&self.plugin.display().to_string()),
            url = quoted(provider_url),
            settings = settings.join(", "),
        )
    }
}

/// Builds the host in release mode with the cargo that runs the bench (cargo
/// sets `CARGO` for `cargo run`) and returns the binary cargo reports: the
/// target dir may be anywhere (`CARGO_TARGET_DIR`), so it is not guessed.
pub fn build_host(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("notify-bench: cargo build --release -p notify-host (minutes the first time)");
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "notify-host",
            "--bin",
            "notify-host",
        ])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("run cargo build")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut executable = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("read cargo output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "notify-host" {
            if let Some(exe) = msg["executable"].as_str() {
                executable = Some(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("wait for cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p notify-host failed ({status})");
    }
    executable.context("cargo build reported no notify-host executable")
}

/// The two bundled plugins, built with `scripts/build-plugins.sh` when either
/// is missing.
pub fn ensure_plugins(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let mailgun = root.join("plugins/mailgun.wasm");
    let twilio = root.join("plugins/twilio.wasm");
    if !mailgun.exists() || !twilio.exists() {
        eprintln!("notify-bench: building the plugins (scripts/build-plugins.sh)");
        let status = Command::new(root.join("scripts/build-plugins.sh"))
            .current_dir(root)
            .status()
            .context("run scripts/build-plugins.sh")?;
        if !status.success() {
            bail!("scripts/build-plugins.sh failed ({status})");
        }
    }
    Ok((mailgun, twilio))
}

/// What differs between the host configs of the runs.
pub struct HostConfig<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub dlq: &'a str,
    pub group: &'a str,
    pub provider_url: &'a str,
    pub email: &'a EmailChannel,
    /// None: no SMS channel (the start-up run measures one plugin).
    pub twilio_wasm: Option<&'a Path>,
    /// None leaves the host's default.
    pub max_in_flight: Option<u64>,
    pub log_level: &'a str,
    pub dedup_path: &'a Path,
    pub admin_port: u16,
    /// Extra librdkafka settings for the host's clients (`--kafka-client`).
    pub kafka_client: &'a [(String, String)],
    /// `plugins.max_instances`; None leaves the host's default (sized from
    /// the loaded components).
    pub plugin_instances: Option<u64>,
    /// `plugins.max_concurrent_calls`; None: the host's default (CPU cores).
    pub max_concurrent_calls: Option<u64>,
    /// `plugins.cache_dir`; None: the host's default (`plugin-cache` beside
    /// the ledger file).
    pub cache_dir: Option<&'a Path>,
    /// The shared PostgreSQL ledger instead of the embedded file; its URL
    /// comes from the host's environment ([`LEDGER_URL_VAR`]).
    pub postgres: Option<PostgresLedger<'a>>,
}

/// The environment variable the config's `ledger.url` names: the URL (and
/// its password) stays out of the config file.
pub const LEDGER_URL_VAR: &str = "NOTIFY_BENCH_LEDGER_URL";

/// `ledger.backend = "postgres"` for one host.
#[derive(Debug, Clone, Copy)]
pub struct PostgresLedger<'a> {
    /// `ledger.owner`: this host's name on its claims.
    pub owner: &'a str,
    /// `ledger.pool_size`; None: the host's default.
    pub pool_size: Option<u64>,
}

/// A TOML basic string. JSON's string escapes are a subset of TOML's.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl HostConfig<'_> {
    /// The config file text; the shape of tests/integration/kafka_harness.rs
    /// `host_config` (the host rejects unknown keys).
    pub fn render(&self) -> String {
        // Quick group membership on tansu: joining takes about half the
        // session timeout. Extra settings may override these.
        let mut client: BTreeMap<&str, &str> = BTreeMap::new();
        client.insert("session.timeout.ms", "6000");
        client.insert("heartbeat.interval.ms", "500");
        // Kafka answers a waiting fetch as soon as data arrives; tansu 0.6
        // holds it for the whole fetch.wait.max.ms (librdkafka: 500 ms), which
        // would be measured as host latency. A short wait gives the Kafka
        // behaviour; `--kafka-client fetch.wait.max.ms=500` shows tansu's.
        client.insert("fetch.wait.max.ms", "10");
        for (k, v) in self.kafka_client {
            client.insert(k, v);
        }
        let client: String = client
            .iter()
            .map(|(k, v)| format!("{} = {}\n", quoted(k), quoted(v)))
            .collect();
        let mut plugins = String::new();
        if let Some(n) = self.plugin_instances {
            plugins += &format!("max_instances = {n}\n");
        }
        if let Some(n) = self.max_concurrent_calls {
            plugins += &format!("max_concurrent_calls = {n}\n");
        }
        if let Some(dir) = self.cache_dir {
            plugins += &format!("cache_dir = {}\n", quoted(&dir.display().to_string()));
        }
        if !plugins.is_empty() {
            plugins = format!("[plugins]\n{plugins}\n");
        }
        let email = self.email.render(self.provider_url);
        let sms = self.twilio_wasm.map_or(String::new(), |twilio| {
            format!(
                r#"
[channels.sms]
plugin = {twilio}
base_url = {url}
auth = {{ type = "basic", username = "{sid}", password = "${{TWILIO_AUTH_TOKEN}}" }}
# The event id last, so the stand-in can tell which event an SMS is for.
settings = {{ account_sid = "{sid}", from = "+15005550006", body_template = "Appointment {{appointment_id}} {{event_id}}" }}
"#,
                twilio = quoted(&twilio.display().to_string()),
                url = quoted(self.provider_url),
                sid = TWILIO_SID,
            )
        });
        let max_in_flight = self
            .max_in_flight
            .map(|n| format!("max_in_flight = {n}\n"))
            .unwrap_or_default();
        let postgres = self.postgres.map_or(String::new(), |pg| {
            let pool = pg
                .pool_size
                .map(|n| format!("pool_size = {n}\n"))
                .unwrap_or_default();
            format!(
                "backend = \"postgres\"\nurl = \"${{{LEDGER_URL_VAR}}}\"\nowner = {owner}\n{pool}",
                owner = quoted(pg.owner)
            )
        });
        format!(
            r#"# Written by notify-bench.
[kafka]
bootstrap_servers = {bootstrap}
topic = {topic}
dlq_topic = {dlq}
group_id = {group}
[kafka.client]
{client}
[pipeline]
{max_in_flight}commit_interval_ms = 200

[ledger]
path = {dedup}
{postgres}
[admin]
listen = "127.0.0.1:{admin_port}"

[log]
format = "json"
level = {level}

{plugins}{email}{sms}"#,
            bootstrap = quoted(self.bootstrap),
            topic = quoted(self.topic),
            dlq = quoted(self.dlq),
            group = quoted(self.group),
            dedup = quoted(&self.dedup_path.display().to_string()),
            admin_port = self.admin_port,
            level = quoted(self.log_level),
        )
    }
}

/// A running host; SIGKILLed on drop if it was not stopped.
pub struct Host {
    pub pid: u32,
    child: Child,
    watchdog: Option<Child>,
    pub log: PathBuf,
    pub admin_url: String,
    pub started: Instant,
}

/// `notify-host` with the environment the bench's configs refer to, and
/// nothing else: a RUST_LOG in the caller's environment would override
/// log.level and change the cost of logging.
fn host_command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MAILGUN_API_KEY", MAILGUN_KEY)
        .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET);
    command
}

/// `notify-host plugin compile --config CONFIG`: fills the config's compile
/// cache, so the runs' hosts start from it as a deployed one would (a cold
/// compile of a Python or JavaScript component takes seconds and hundreds
/// of MiB, which the allocator keeps and the run's peak RSS would show).
pub fn precompile(bin: &Path, config: &Path) -> Result<()> {
    let out = host_command(bin)
        .args(["plugin", "compile", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} plugin compile", bin.display()))?;
    if !out.status.success() {
        bail!(
            "notify-host plugin compile failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Host {
    pub fn start(bin: &Path, config: &Path, log: &Path, admin_port: u16) -> Result<Host> {
        Host::start_with_env(bin, config, log, admin_port, &[])
    }

    /// [`Host::start`] with more environment (the ledger's URL).
    pub fn start_with_env(
        bin: &Path,
        config: &Path,
        log: &Path,
        admin_port: u16,
        env: &[(&str, &str)],
    ) -> Result<Host> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = host_command(bin)
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id();
        let watchdog = match sys::watchdog(pid) {
            Ok(w) => w,
            Err(e) => {
                sys::kill_and_reap(&mut child);
                return Err(e);
            }
        };
        Ok(Host {
            pid,
            child,
            watchdog: Some(watchdog),
            log: log.to_path_buf(),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            started: Instant::now(),
        })
    }

    /// Fails if the host has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the host exited ({status}); end of its log:\n{}",
                sys::tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// Waits until `/health/ready` answers 200: partitions assigned, plugins
    /// loaded, so events published from now on are consumed at once.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ok("/health/ready", timeout, Duration::from_millis(100))
            .await
            .map(|_| ())
    }

    /// Polls `path` on the admin server every `poll` until it answers 2xx;
    /// returns when it did, as time since the start of the process.
    pub async fn wait_ok(
        &mut self,
        path: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Duration> {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.admin_url);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let last = match client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(self.started.elapsed()),
                Ok(r) => {
                    let status = r.status();
                    format!("{status} {}", r.text().await.unwrap_or_default())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("{path} did not answer 200 within {timeout:?}: {last}");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The host's `/metrics` in the classic Prometheus text format (what it
    /// serves to a client that does not ask for OpenMetrics).
    pub async fn metrics(&self, client: &reqwest::Client, timeout: Duration) -> Result<String> {
        let url = format!("{}/metrics", self.admin_url);
        let response = client
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        response
            .text()
            .await
            .with_context(|| format!("GET {url}: body"))
    }

    /// SIGTERM and wait, as an orchestrator stops it; returns the exit status.
    pub fn stop(&mut self) -> Result<String> {
        if let Some(mut w) = self.watchdog.take() {
            sys::kill_and_reap(&mut w);
        }
        let status = sys::terminate(&mut self.child, Duration::from_secs(30))?;
        Ok(status.to_string())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            sys::kill_and_reap(&mut w);
        }
        sys::kill_and_reap(&mut self.child);
    }
}

/// Every series of metric `name` in a Prometheus text exposition, as (label
/// set, value); the label set is the text between the braces, empty when
/// there are none.
pub fn metric_series<'t>(text: &'t str, name: &str) -> Vec<(&'t str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.rsplit_once('}')?;
                    (labels, value)
                }
                // Another metric whose name starts with `name`.
                None if !rest.starts_with(' ') => return None,
                None => ("", rest),
            };
            // The value is the first field after the name; a timestamp may
            // follow it.
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// The sum of every series of metric `name`, None when it has none (the
/// host registers a labelled family's series only when first used).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let series = metric_series(text, name);
    (!series.is_empty()).then(|| series.iter().map(|(_, v)| v).sum())
}

/// The value of `key` in a Prometheus label set (`reason="permanent"`), or
/// the whole set when it has no such label.
pub fn label_value(labels: &str, key: &str) -> String {
    labels
        .split(',')
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| labels.to_string())
}

/// One series of a Prometheus histogram: its labels (without `le`) and
/// cumulative bucket counts by upper bound, ascending (`+Inf` last).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    pub labels: Vec<(String, String)>,
    pub buckets: Vec<(f64, f64)>,
}

impl HistogramSeries {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Observations: the `+Inf` bucket.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile estimated from the buckets the way Prometheus's
    /// `histogram_quantile` does: linear within the bucket the rank falls
    /// in (from 0 for the first), the highest finite bound when it falls in
    /// `+Inf`. None without observations. Only as fine as the buckets.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count <= 0.0 {
            return None;
        }
        let rank = q * count;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cumulative - lower.1;
                let share = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }
}

/// Every series of histogram `name` (the `NAME_bucket` lines); a series
/// that shows up more than once (texts of several hosts joined) is summed.
pub fn histogram(text: &str, name: &str) -> Vec<HistogramSeries> {
    let mut out: Vec<HistogramSeries> = Vec::new();
    for (labels, value) in metric_series(text, &format!("{name}_bucket")) {
        let mut le = None;
        let mut rest = Vec::new();
        for kv in labels.split(',').filter(|kv| !kv.trim().is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k == "le" {
                le = match v {
                    "+Inf" | "Inf" => Some(f64::INFINITY),
                    v => v.parse::<f64>().ok(),
                };
            } else {
                rest.push((k.to_string(), v.to_string()));
            }
        }
        let Some(le) = le else { continue };
        // The same series twice (the metrics of several hosts, one after
        // the other) adds up.
        match out.iter_mut().find(|s| s.labels == rest) {
            Some(s) => match s.buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += value,
                None => s.buckets.push((le, value)),
            },
            None => out.push(HistogramSeries {
                labels: rest,
                buckets: vec![(le, value)],
            }),
        }
    }
    for s in &mut out {
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_from_buckets() {
        let text = "# TYPE notify_plugin_call_duration_seconds histogram\n\
            notify_plugin_call_duration_seconds_sum{channel=\"email\",call=\"render\"} 0.5\n\
            notify_plugin_call_duration_seconds_count{channel=\"email\",call=\"render\"} 100\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"email\",call=\"render\",le=\"0.001\"} 0\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"email\",call=\"render\",le=\"0.003\"} 50\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"email\",call=\"render\",le=\"0.009\"} 90\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"email\",call=\"render\",le=\"+Inf\"} 100\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"sms\",call=\"render\",le=\"0.001\"} 0\n\
            notify_plugin_call_duration_seconds_bucket{channel=\"sms\",call=\"render\",le=\"+Inf\"} 0\n";
        let series = histogram(text, "notify_plugin_call_duration_seconds");
        assert_eq!(series.len(), 2);
        let email = &series[0];
        assert_eq!(
            (email.label("channel"), email.label("call")),
            (Some("email"), Some("render"))
        );
        assert_eq!(email.count(), 100.0);
        // Rank 50 is the top of the (0.001, 0.003] bucket.
        let p50 = email.quantile(0.5).unwrap_or(f64::NAN);
        assert!((p50 - 0.003).abs() < 1e-12, "{p50}");
        // Rank 70: halfway through (0.003, 0.009].
        let p70 = email.quantile(0.7).unwrap_or(f64::NAN);
        assert!((p70 - 0.006).abs() < 1e-12, "{p70}");
        // Rank 99 is in +Inf: the highest finite bound.
        assert_eq!(email.quantile(0.99), Some(0.009));
        assert_eq!(series[1].quantile(0.5), None);
    }

    #[test]
    fn the_same_histogram_of_several_hosts_adds_up() {
        let one = "h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.002\"} 3\nh_bucket{le=\"+Inf\"} 4\n";
        let two = format!("{one}{one}");
        let series = histogram(&two, "h");
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].buckets,
            vec![(0.001, 2.0), (0.002, 6.0), (f64::INFINITY, 8.0)]
        );
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("reason=\"permanent\"", "reason"), "permanent");
        assert_eq!(label_value("a=\"1\",reason=\"x\"", "reason"), "x");
        assert_eq!(label_value("a=\"1\"", "reason"), "a=\"1\"");
    }

    #[test]
    fn metrics_are_read_by_exact_name() {
        let text = "# HELP notify_in_flight Events being worked on\n\
                    # TYPE notify_in_flight gauge\n\
                    notify_in_flight 512\n\
                    notify_in_flight_extra 7\n\
                    notify_dlq_events_total{reason=\"permanent\"} 2\n\
                    notify_dlq_events_total{reason=\"retries_exhausted\"} 3 1700000000\n";
        assert_eq!(metric_sum(text, "notify_in_flight"), Some(512.0));
        assert_eq!(metric_sum(text, "notify_dlq_events_total"), Some(5.0));
        assert_eq!(
            metric_series(text, "notify_dlq_events_total"),
            vec![
                ("reason=\"permanent\"", 2.0),
                ("reason=\"retries_exhausted\"", 3.0)
            ]
        );
        assert_eq!(metric_sum(text, "notify_events_consumed_total"), None);
    }
}
