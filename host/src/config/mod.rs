//! Configuration: config.toml → `${VAR}` interpolation → serde → validation →
//! a typed [`Config`].
//!
//! Invariants: a [`Config`] that exists is complete and valid (every channel
//! has a plugin path, a parsed allow-list and sane limits); every problem found
//! on the way is reported at once, each naming the file and the dotted key.
//! Secrets are held in [`Secret`], whose `Debug` never shows the value.
//!
//! A problem never prints a value that came from the environment: every
//! interpolated value in a message is replaced by the `${VAR}` it came from
//! ([`Interpolated::hide`]), since a secret may sit in the wrong key (an API
//! key in `timeout_seconds`, a token in a URL query). Credentials are checked
//! at load as what they become, HTTP header values, and must be at least
//! [`crate::scrub::MIN_SECRET_LEN`] bytes long; those problems name the key
//! and the variable, never the value. Every credential of a [`Config`] that
//! [`parse`] returns is added to [`crate::scrub::known`].

mod interpolate;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use interpolate::{
    interpolate, interpolate_recorded, InterpolationError, ProcessEnv, VarLookup,
};
use raw::{RawAuth, RawChannel, RawCircuit, RawConfig, RawKafka, RawRate, RawReminder, RawRetry};
use url::Url;

use crate::health::{CircuitPolicy, Rate};
use crate::retry::RetryPolicy;
use crate::scrub::{self, Secrets, MIN_SECRET_LEN};

/// Plain-text HTTP is only ever allowed to these: nothing leaves the machine.
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// A value from the environment that must never be logged or shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that attaches it to a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How the host authenticates a channel's requests. The plugin never sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Bearer {
        token: Secret,
    },
    Header {
        name: String,
        value: Secret,
    },
    /// The host signs every request it sends (see `transport::signing`):
    /// `timestamp_header` carries the Unix time in seconds, `header` the
    /// hex HMAC-SHA256, keyed with `secret`, of `"{timestamp}.{body}"`,
    /// as `sha256=<hex>`.
    Hmac {
        secret: Secret,
        header: String,
        timestamp_header: String,
    },
}

/// Default header names of `auth = { type = "hmac" }`.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Notify-Signature";
pub const DEFAULT_TIMESTAMP_HEADER: &str = "X-Notify-Timestamp";

/// How a channel's plugin instances are used (`channels.NAME.instances`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A fresh instance for every call: nothing survives from one call to
    /// the next. The default, and the rule for untrusted code.
    Fresh,
    /// Up to `keep` idle instances are kept and reused; one is thrown away
    /// after a trap, a deadline overrun, a limit breach or `calls` calls.
    Reuse { keep: u32, calls: u32 },
}

/// One scheme://host:port a channel may send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    fn from_url(url: &Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `url` points at this origin.
    pub fn matches(&self, url: &Url) -> bool {
        Origin::from_url(url).as_ref() == Some(self)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Limits for one plugin's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// The most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call, instantiation included.
    pub deadline: Duration,
    /// The most a call may write to stdout, and to stderr (each).
    pub output_bytes: usize,
    /// A reason, message id or other text the plugin returns is cut here
    /// (`plugins.caps.text_bytes`).
    pub text_bytes: usize,
    /// Each line of its stdout/stderr is cut here when logged
    /// (`plugins.caps.output_line_bytes`).
    pub output_line_bytes: usize,
}

impl Default for PluginRuntimeConfig {
    /// What an empty `[plugins]` table gives, with the cache off: for tools
    /// that run a plugin without a config file (`plugin test`).
    fn default() -> Self {
        let caps = validate_caps(&raw::RawCaps::default(), &mut Vec::new());
        PluginRuntimeConfig {
            max_instances: None,
            max_concurrent_calls: u32::try_from(default_concurrent_calls()).unwrap_or(2),
            cache_dir: None,
            watch: false,
            default_limits: PluginLimits {
                memory_bytes: mib(DEFAULT_MEMORY_LIMIT_MIB),
                deadline: Duration::from_millis(DEFAULT_DEADLINE_MS),
                output_bytes: kib(DEFAULT_OUTPUT_LIMIT_KIB),
                text_bytes: caps.text_bytes,
                output_line_bytes: caps.output_line_bytes,
            },
            response_body_limit: kib(DEFAULT_RESPONSE_BODY_LIMIT_KIB),
            max_file_bytes: mib(DEFAULT_MAX_FILE_MIB),
            caps,
        }
    }
}

/// Settings for the one plugin runtime all channels share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRuntimeConfig {
    /// Pool slots asked for explicitly (`plugins.max_instances`); `None`:
    /// sized from the loaded components (see `plugin::runtime`).
    pub max_instances: Option<u32>,
    /// Plugin calls running at once; more wait their turn (back-pressure,
    /// never a failure), and a call's deadline counts from its start.
    pub max_concurrent_calls: u32,
    /// Where compiled plugins are kept between starts; `None`: off.
    pub cache_dir: Option<PathBuf>,
    /// Reload when a plugin file changes, as on SIGHUP.
    pub watch: bool,
    /// Limits for channels that do not set their own.
    pub default_limits: PluginLimits,
    /// Provider response bodies are cut at this size before a plugin sees them.
    pub response_body_limit: usize,
    /// A plugin file larger than this is refused before it is read.
    pub max_file_bytes: usize,
    /// The most one plugin call may hand the host.
    pub caps: OutputCaps,
}

/// `[plugins.caps]`: bounds on what a plugin returns, so a hostile or buggy
/// plugin cannot make the host send, log or dead-letter without bound. A
/// render past a request cap is refused (the event is dead-lettered as
/// `refused`); text past `text_bytes` is cut on a character boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// HTTP requests one render may return.
    pub requests_per_render: usize,
    /// Headers one request may carry.
    pub headers_per_request: usize,
    /// Bytes of all header names and values of one request together.
    pub header_bytes: usize,
    /// Bytes of one request's URL.
    pub url_bytes: usize,
    /// Bytes of one request's body.
    pub body_bytes: usize,
    /// Bytes of a reason, message id or other text a plugin returns.
    pub text_bytes: usize,
    /// Bytes of one line a plugin writes to stdout or stderr, as logged.
    pub output_line_bytes: usize,
}

impl Default for OutputCaps {
    fn default() -> Self {
        OutputCaps {
            requests_per_render: DEFAULT_REQUESTS_PER_RENDER as usize,
            headers_per_request: DEFAULT_HEADERS_PER_REQUEST as usize,
            header_bytes: DEFAULT_HEADER_BYTES as usize,
            url_bytes: DEFAULT_URL_BYTES as usize,
            body_bytes: kib(DEFAULT_BODY_KIB),
            text_bytes: DEFAULT_TEXT_BYTES as usize,
            output_line_bytes: DEFAULT_OUTPUT_LINE_BYTES as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `notify_host=debug`.
    pub level: String,
}

/// Where events come from and dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    /// `earliest` or `latest`: where a group with no committed offset starts.
    pub auto_offset_reset: String,
    /// librdkafka's `group.instance.id` (static membership), unique per
    /// running host; `None` for a dynamic member.
    pub instance_id: Option<String>,
    /// Extra librdkafka properties, passed through verbatim.
    pub client: Vec<(String, String)>,
}

/// How events are worked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Events being worked on at once, across partitions; fetching pauses at
    /// this limit.
    pub max_in_flight: usize,
    /// The same limit for one partition, so one busy partition cannot take
    /// every slot; only that partition pauses.
    pub max_in_flight_per_partition: usize,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// On SIGTERM, how long in-flight events may take to finish.
    pub shutdown_grace: Duration,
    /// Larger payloads are dead-lettered unread.
    pub max_event_bytes: usize,
    /// An event naming more channels than this is dead-lettered as a whole,
    /// so one event cannot fan out into thousands of sends or dead letters.
    pub max_channels_per_event: usize,
    /// An event older than this (by `occurred_at`, else its Kafka
    /// timestamp) is recorded `expired` instead of sent; `None`: no limit.
    pub max_event_age: Option<Duration>,
    /// What an event of a type this host does not know becomes.
    pub unknown_event_types: UnknownEventTypes,
}

/// `pipeline.unknown_event_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEventTypes {
    /// Dead-lettered `invalid_event`, naming the type (the default: a typo
    /// in the producer is found, not silently dropped).
    DeadLetter,
    /// Logged, counted and committed: for topics shared with other types.
    Skip,
}

/// `[scheduler]`: the reminder scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Quiet hours are read in this zone when the event names none.
    pub time_zone: chrono_tz::Tz,
    /// Reminders being sent at once.
    pub max_in_flight: usize,
}

/// One `[[reminders]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderPolicy {
    /// `[a-z0-9_-]`, unique; the plugin gets it as `message.reminder`.
    pub name: String,
    /// Due this long before the appointment.
    pub before: Duration,
    /// Configured channels; an event gets a reminder only on those it asked for.
    pub channels: Vec<String>,
    /// Due already past on arrival, appointment still ahead: send at once
    /// (`true`) or record `expired` (`false`).
    pub catch_up: bool,
}

/// `[notices]`: channels told about a cancellation or a reschedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    pub cancelled: Vec<String>,
    pub rescheduled: Vec<String>,
}

/// `ledger.backend`: where the ledger lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerBackend {
    /// One redb file (`ledger.path`), owned by one host.
    Embedded,
    /// A PostgreSQL database any number of hosts share.
    Postgres(PostgresLedger),
}

/// `ledger.backend = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresLedger {
    /// `ledger.url`, password and all (TLS options ride in it: `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`).
    pub url: Secret,
    /// The URL without its password, for logs and `check-config`.
    pub url_shown: String,
    pub pool_size: u32,
    /// How long a claim outlives its host's last renewal.
    pub lease: Duration,
    pub connect_timeout: Duration,
    /// This host's name on its claims.
    pub owner: String,
}

pub const DEFAULT_LEDGER_POOL_SIZE: u64 = 8;
pub const DEFAULT_LEDGER_LEASE_SECONDS: f64 = 30.0;
pub const DEFAULT_LEDGER_CONNECT_TIMEOUT_SECONDS: f64 = 5.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub backend: LedgerBackend,
    /// The ledger file (embedded), and the directory beside it that holds
    /// the plugin cache by default (both backends).
    pub path: PathBuf,
    /// How long a delivery is remembered (and listed by the status API).
    pub retention: Duration,
    /// The store's page cache; bounds its share of the host's memory.
    pub cache_bytes: usize,
}

/// What a channel does with the deliveries events ask of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// Sends (the default).
    On,
    /// Sends nothing; records each requested delivery as `held` (with the
    /// event) for `notify-host deliveries release` once the channel is on.
    Hold,
    /// Sends nothing and keeps nothing: each requested delivery is recorded
    /// `skipped`.
    Off,
}

impl ChannelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelMode::On => "on",
            ChannelMode::Hold => "hold",
            ChannelMode::Off => "off",
        }
    }
}

/// One `[channels.NAME]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    /// The key under `[channels]`; events request it with `"notify": {NAME: true}`.
    pub name: String,
    /// `mode == On`: the plugin is loaded and requests are sent. A channel
    /// on hold or off loads no plugin and needs no credentials.
    pub enabled: bool,
    pub mode: ChannelMode,
    /// Absolute path of the plugin component.
    pub plugin_path: PathBuf,
    pub base_url: Option<Url>,
    /// Where rendered requests may go; the base URL's origin is always first.
    pub allowed: Vec<Origin>,
    /// Path prefixes a request's URL path must start with; empty for any.
    pub allowed_paths: Vec<String>,
    /// Upper-case HTTP methods requests may use (a subset of
    /// [`ALLOWED_METHODS`]).
    pub allowed_methods: Vec<String>,
    /// The proxy outbound requests go through; `None` (the default) means
    /// direct, whatever `HTTP_PROXY`/`ALL_PROXY` say.
    pub proxy: Option<Url>,
    pub auth: Auth,
    /// Budget of one provider HTTP call, connect to last byte.
    pub timeout: Duration,
    pub limits: PluginLimits,
    pub retry: RetryPolicy,
    /// When the channel counts as down, and how it is probed.
    pub circuit: CircuitPolicy,
    /// The most sends per second, if limited.
    pub rate: Option<Rate>,
    /// Non-secret settings handed to the plugin, `base_url` included when set.
    pub settings: Vec<(String, String)>,
    /// Local hours in which reminders are not sent (moved, see
    /// `reminders::quiet`).
    pub quiet_hours: Option<crate::reminders::quiet::QuietHours>,
    pub instances: InstanceMode,
    /// The plugin file's pinned SHA-256, lower-case hex: a file that does
    /// not match is refused.
    pub sha256: Option<String>,
}

impl ChannelConfig {
    /// Whether a request to `url` is allowed for this channel.
    pub fn allows(&self, url: &Url) -> bool {
        self.allowed.iter().any(|o| o.matches(url))
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, as given (for messages).
    pub path: PathBuf,
    pub kafka: KafkaConfig,
    pub pipeline: PipelineConfig,
    pub ledger: LedgerConfig,
    /// Where the health and metrics server listens.
    pub admin_listen: std::net::SocketAddr,
    /// The bearer token the status API (`/v1`) requires; `None`: the API is
    /// off (404), never open.
    pub admin_token: Option<Secret>,
    pub plugins: PluginRuntimeConfig,
    pub log: LogConfig,
    /// Every channel, enabled or not, by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    pub scheduler: SchedulerConfig,
    /// `[[reminders]]`, in file order.
    pub reminders: Vec<ReminderPolicy>,
    pub notices: Notices,
    /// Which variable gave which value: for problems found after loading
    /// (a plugin's settings check), see [`Config::hide_values`].
    pub interpolated: Interpolated,
}

impl Config {
    /// The enabled channels among `names` (all enabled ones when `names` is
    /// empty): what `plugin render|classify|send` load.
    pub fn enabled_among<'a>(
        &'a self,
        names: &'a [&'a str],
    ) -> impl Iterator<Item = &'a ChannelConfig> + 'a {
        self.enabled_channels()
            .filter(move |c| names.is_empty() || names.contains(&c.name.as_str()))
    }

    pub fn enabled_channels(&self) -> impl Iterator<Item = &ChannelConfig> {
        self.channels.values().filter(|c| c.enabled)
    }

    /// `problems` with every interpolated value replaced by its `${VAR}`:
    /// for problems found after [`parse`] (a plugin checking its settings
    /// may quote one), before they are shown.
    pub fn hide_values(&self, problems: Vec<Problem>) -> Vec<Problem> {
        self.interpolated.hide_problems(problems)
    }
}

/// The values `${VAR}` interpolation produced, by key. `Debug` shows none.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Interpolated {
    /// (dotted key, variable, value)
    entries: Vec<(String, String, String)>,
}

impl fmt::Debug for Interpolated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interpolated({} values, [redacted])", self.entries.len())
    }
}

impl Interpolated {
    fn record(&mut self, key: &str, var: &str, value: &str) {
        self.entries
            .push((key.to_string(), var.to_string(), value.to_string()));
    }

    /// The variables that went into `key`, in order, each once.
    fn vars_of(&self, key: &str) -> Vec<&str> {
        let mut vars: Vec<&str> = Vec::new();
        for (k, var, _) in &self.entries {
            if k == key && !vars.contains(&var.as_str()) {
                vars.push(var);
            }
        }
        vars
    }

    /// "the value of ${A}" (or "the value" when the key was not interpolated),
    /// for messages about a value that must not be shown.
    fn describe(&self, key: &str) -> String {
        let vars = self.vars_of(key);
        if vars.is_empty() {
            "the value".to_string()
        } else {
            let named: Vec<String> = vars.iter().map(|v| format!("${{{v}}}")).collect();
            format!("the value of {}", named.join(" and "))
        }
    }

    /// `text` with every interpolated value replaced by `${VAR}`. A value
    /// shorter than [`MIN_SECRET_LEN`] is replaced only where it stands
    /// alone (not inside a longer word or number), so `10` from
    /// `${TIMEOUT}` does not garble `100`; such a value is no credential
    /// either, since credentials that short are refused.
    pub fn hide(&self, text: &str) -> String {
        self.hide_at("", text)
    }

    /// [`Interpolated::hide`] for a problem at `key`: a value that several
    /// variables share is named by the one that went into `key`.
    fn hide_at(&self, key: &str, text: &str) -> String {
        let mut values: Vec<(&str, &str)> = Vec::new();
        let here = self.entries.iter().filter(|(k, _, _)| k == key);
        for (_, var, value) in here.chain(&self.entries) {
            if !value.is_empty() && !values.iter().any(|(v, _)| v == value) {
                values.push((value, var));
            }
        }
        if values.is_empty() {
            return text.to_string();
        }
        let Ok(matcher) = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(values.iter().map(|(v, _)| v))
        else {
            // Cannot happen for a config's few values; if it did, showing
            // nothing is the safe side.
            return "(message hidden: it may quote an interpolated value)".to_string();
        };
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in matcher.find_iter(text) {
            let (value, var) = values[m.pattern().as_usize()];
            let alone = !word(text[..m.start()].chars().next_back())
                && !word(text[m.end()..].chars().next());
            if value.len() < MIN_SECRET_LEN && !alone {
                continue;
            }
            out.push_str(&text[last..m.start()]);
            out.push_str(&format!("${{{var}}}"));
            last = m.end();
        }
        out.push_str(&text[last..]);
        out
    }

    /// [`Interpolated::hide`] applied to every problem's message.
    pub fn hide_problems(&self, problems: Vec<Problem>) -> Vec<Problem> {
        problems
            .into_iter()
            .map(|p| Problem {
                message: self.hide_at(&p.key, &p.message),
                key: p.key,
            })
            .collect()
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `channels.email.timeout_seconds`; empty
    /// for problems with the file as a whole.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything wrong with a config file, each problem naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), p.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), p.key, p.message)?;
            }
        }
        Ok(())
    }
}

// Defaults, each with its reason.
/// Plugin calls are CPU work: more running at once than there are worker
/// threads only makes each one slower (a call of 2 ms of CPU took 590 ms of
/// wall time with 512 started together), so by default as many run as the
/// runtime has threads, and the rest wait their turn.
fn default_concurrent_calls() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u64)
}
/// `instances = "reuse"`: calls one instance serves before it is replaced,
/// so whatever a guest accumulates (caches, leaks) stays bounded.
const DEFAULT_REUSE_CALLS: u64 = 1000;
/// The bundled plugins peak under 4 MiB; 32 MiB leaves room for plugins built
/// with heavier toolchains (componentize-py, jco) while stopping a runaway.
const DEFAULT_MEMORY_LIMIT_MIB: u64 = 32;
/// A native render takes microseconds; interpreted plugins take milliseconds.
/// Half a second stops an endless loop quickly without failing slow-but-sane
/// plugins.
const DEFAULT_DEADLINE_MS: u64 = 500;
/// Enough for a panic message and some debug lines; a flood is cut here.
const DEFAULT_OUTPUT_LIMIT_KIB: u64 = 64;
/// Provider answers are a few hundred bytes; 1 MiB bounds a hostile one.
const DEFAULT_RESPONSE_BODY_LIMIT_KIB: u64 = 1024;
/// The user's HTTP execution policy (seed 002, ADR-0009) and the prototype's
/// MAILGUN/TWILIO_TIMEOUT_SECONDS default.
const DEFAULT_TIMEOUT_SECONDS: f64 = 10.0;
/// Upper bounds that catch unit mistakes (milliseconds typed as seconds).
const MAX_MEMORY_LIMIT_MIB: u64 = 4096;
const MAX_DEADLINE_MS: u64 = 60_000;
const MAX_TIMEOUT_SECONDS: f64 = 600.0;
/// Events in flight = rate x time per event (Little's law): 512 carries
/// about 8,000 events/s at 50 ms per provider call, 1,500 at 300 ms. Each
/// one costs about 50 KiB (two HTTP connections, the message, the requests),
/// so memory stays near 130 MiB at the limit (bench: 1,024 measured 165 MiB).
const DEFAULT_MAX_IN_FLIGHT: u64 = 512;
/// Commits are cheap; a second bounds how much is redelivered (and then
/// skipped by dedup) after a crash.
const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1000;
/// Container runtimes send SIGKILL 10 s after SIGTERM by default; finishing
/// in 8 s leaves time to commit and close.
const DEFAULT_SHUTDOWN_GRACE_SECONDS: f64 = 8.0;
/// redb's own default is 1 GiB, which a week of deliveries would fill. A
/// lookup is for a recent event (a redelivery), so a small cache of the
/// tree's upper pages serves it; the OS page cache holds the rest.
const DEFAULT_LEDGER_CACHE_MIB: u64 = 16;
/// Appointment events are under 1 KiB; anything past 64 KiB is a producer bug.
const DEFAULT_MAX_EVENT_KIB: u64 = 64;
/// The contract has two channels and a host rarely more than a handful; 16
/// leaves room while one event cannot ask for thousands.
const DEFAULT_MAX_CHANNELS_PER_EVENT: u64 = 16;
/// The bundled plugins are under 1 MiB, componentize-py ones about 40 MiB;
/// a larger file is a mistake (or `/dev/zero`), refused before it is read.
const DEFAULT_MAX_FILE_MIB: u64 = 64;
/// A provider call is one request (Mailgun, Twilio); 16 leaves room for a
/// channel that posts to several endpoints.
const DEFAULT_REQUESTS_PER_RENDER: u64 = 16;
/// Provider APIs need a handful of headers; 64 is generous.
const DEFAULT_HEADERS_PER_REQUEST: u64 = 64;
/// Common servers refuse headers past 8-16 KiB in total (nginx 8 KiB per
/// line, Node 16 KiB in all), so more would only fail at the provider.
const DEFAULT_HEADER_BYTES: u64 = 16 * 1024;
/// Browsers and CDNs cut URLs near 8 KiB; provider APIs take data in bodies.
const DEFAULT_URL_BYTES: u64 = 8 * 1024;
/// An e-mail with its HTML and text parts is tens of KiB; Mailgun accepts
/// 25 MiB with attachments, which this host does not send.
const DEFAULT_BODY_KIB: u64 = 1024;
/// A reason or message id is one line; 1 KiB shows any real one whole.
const DEFAULT_TEXT_BYTES: u64 = 1024;
/// One logged line of plugin output; longer lines are cut.
const DEFAULT_OUTPUT_LINE_BYTES: u64 = 4096;

/// The methods a plugin may use: what REST provider APIs need. `CONNECT`,
/// `TRACE` (which echoes the request, credentials included) and custom
/// methods are refused.
pub const ALLOWED_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// The status API's token guards every delivery on record: 16 characters
/// at least (`openssl rand -hex 32` gives 64).
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// The topic's retention (seed 001): Kafka cannot redeliver older events.
const DEFAULT_LEDGER_RETENTION_HOURS: f64 = 168.0;

/// The prototype's environment variables (seed 003) override these keys.
pub const KAFKA_ENV_OVERRIDES: &[(&str, &str)] = &[
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("KAFKA_TOPIC_APPOINTMENTS_CREATED", "kafka.topic"),
    ("KAFKA_TOPIC_APPOINTMENTS_CREATED_DLQ", "kafka.dlq_topic"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    ("KAFKA_AUTO_OFFSET_RESET", "kafka.auto_offset_reset"),
    ("KAFKA_INSTANCE_ID", "kafka.instance_id"),
];

/// librdkafka properties the host sets itself: overriding them would break
/// the delivery guarantees.
const RESERVED_CLIENT_KEYS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
];

/// Reads, interpolates and validates the config file at `path`.
pub fn load(path: &Path, env: &dyn VarLookup) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![Problem::new("", format!("cannot read the file: {e}"))]))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base_dir, env).map_err(fail).map(|mut c| {
        c.path = path.to_path_buf();
        c
    })
}

/// Parses config text; relative plugin paths resolve against `base_dir`.
///
/// No problem returned quotes a value taken from `env` (see the module doc),
/// and the credentials of the config returned are added to
/// [`scrub::known`].
pub fn parse(text: &str, base_dir: &Path, env: &dyn VarLookup) -> Result<Config, Vec<Problem>> {
    let mut interpolated = Interpolated::default();
    match parse_recorded(text, base_dir, env, &mut interpolated) {
        Ok(mut config) => {
            scrub::register(&Secrets::of_config(&config));
            config.interpolated = interpolated;
            Ok(config)
        }
        Err(problems) => Err(interpolated.hide_problems(problems)),
    }
}

fn parse_recorded(
    text: &str,
    base_dir: &Path,
    env: &dyn VarLookup,
    interpolated: &mut Interpolated,
) -> Result<Config, Vec<Problem>> {
    // A TOML error comes before interpolation, so it can quote only the
    // file's own text (and it quotes none: a message and a line number).
    let mut value: toml::Value = toml::from_str(text).map_err(|e| {
        vec![Problem::new(
            "",
            format!("not valid TOML: {}", e.message().trim()) + &line_of(text, e.span()),
        )]
    })?;

    let mut problems = Vec::new();
    interpolate_tree(
        &mut value,
        &mut String::new(),
        env,
        interpolated,
        &mut problems,
    );
    problems.retain(|p| !in_disabled_channel(&value, &p.key));
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        vec![Problem::new(key, e.into_inner().message().to_string())]
    })?;
    apply_kafka_overrides(&mut raw.kafka, env, interpolated);
    validate(raw, base_dir, interpolated)
}

fn apply_kafka_overrides(kafka: &mut RawKafka, env: &dyn VarLookup, record: &mut Interpolated) {
    for (var, key) in KAFKA_ENV_OVERRIDES {
        let Some(value) = env.get(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let slot = match *key {
            "kafka.bootstrap_servers" => &mut kafka.bootstrap_servers,
            "kafka.topic" => &mut kafka.topic,
            "kafka.dlq_topic" => &mut kafka.dlq_topic,
            "kafka.group_id" => &mut kafka.group_id,
            "kafka.instance_id" => &mut kafka.instance_id,
            _ => &mut kafka.auto_offset_reset,
        };
        record.record(key, var, &value);
        *slot = Some(value);
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Interpolates every string in the tree in place, recording problems by key.
fn interpolate_tree(
    value: &mut toml::Value,
    path: &mut String,
    env: &dyn VarLookup,
    record: &mut Interpolated,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(s) => {
            let mut used = Vec::new();
            let result = interpolate_recorded(s, env, &mut used);
            // Recorded even when another reference in the string failed:
            // its message must not quote the values that did resolve.
            for (var, value) in used {
                record.record(path, &var, &value);
            }
            match result {
                Ok(v) => *s = v,
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|e| Problem::new(path.clone(), e.to_string())),
                ),
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate_tree(item, path, env, record, problems);
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                interpolate_tree(v, path, env, record, problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// A disabled channel's secrets need not be set: SMS can stay off, without
/// Twilio credentials, while the number's verification is pending.
fn in_disabled_channel(value: &toml::Value, key: &str) -> bool {
    let mut parts = key.split('.');
    let (Some("channels"), Some(name)) = (parts.next(), parts.next()) else {
        return false;
    };
    if matches!(parts.next(), Some("enabled" | "mode")) {
        return false;
    }
    let channel = value.get("channels").and_then(|c| c.get(name));
    let enabled = channel.and_then(|c| c.get("enabled"));
    let mode = channel.and_then(|c| c.get("mode"));
    matches!(enabled, Some(toml::Value::Boolean(false)))
        || matches!(enabled, Some(toml::Value::String(s)) if s.trim() == "false")
        || matches!(mode, Some(toml::Value::String(s)) if matches!(s.trim().to_ascii_lowercase().as_str(), "hold" | "off"))
}

fn validate(
    raw: RawConfig,
    base_dir: &Path,
    interpolated: &Interpolated,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();

    let p = &raw.plugins;
    let memory_mib = bounded(
        &mut problems,
        "plugins.memory_limit_mib",
        p.memory_limit_mib,
        DEFAULT_MEMORY_LIMIT_MIB,
        1,
        MAX_MEMORY_LIMIT_MIB,
    );
    let deadline_ms = bounded(
        &mut problems,
        "plugins.deadline_ms",
        p.deadline_ms,
        DEFAULT_DEADLINE_MS,
        1,
        MAX_DEADLINE_MS,
    );
    let output_kib = bounded(
        &mut problems,
        "plugins.output_limit_kib",
        p.output_limit_kib,
        DEFAULT_OUTPUT_LIMIT_KIB,
        1,
        64 * 1024,
    );
    let body_kib = bounded(
        &mut problems,
        "plugins.response_body_limit_kib",
        p.response_body_limit_kib,
        DEFAULT_RESPONSE_BODY_LIMIT_KIB,
        1,
        64 * 1024,
    );
    let max_instances = p.max_instances.map(|m| {
        bounded(
            &mut problems,
            "plugins.max_instances",
            Some(m),
            m,
            1,
            10_000,
        )
    });
    let max_concurrent_calls = bounded(
        &mut problems,
        "plugins.max_concurrent_calls",
        p.max_concurrent_calls,
        default_concurrent_calls(),
        1,
        1024,
    );
    let max_file_mib = bounded(
        &mut problems,
        "plugins.max_file_mib",
        p.max_file_mib,
        DEFAULT_MAX_FILE_MIB,
        1,
        4096,
    );
    let caps = validate_caps(&p.caps, &mut problems);
    let plugin_watch = p.watch.unwrap_or(false);
    let cache_on = p.cache.unwrap_or(true);
    let raw_cache_dir = p
        .cache_dir
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let default_limits = PluginLimits {
        memory_bytes: mib(memory_mib),
        deadline: Duration::from_millis(deadline_ms),
        output_bytes: kib(output_kib),
        text_bytes: caps.text_bytes,
        output_line_bytes: caps.output_line_bytes,
    };

    let log = LogConfig {
        format: match raw.log.format.as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                problems.push(Problem::new(
                    "log.format",
                    format!("expected \"json\" or \"text\", found \"{other}\""),
                ));
                LogFormat::Json
            }
        },
        level: match raw.log.level {
            Some(level)
                if tracing_subscriber::EnvFilter::builder()
                    .parse(&level)
                    .is_err() =>
            {
                problems.push(Problem::new(
                    "log.level",
                    format!(
                        "\"{level}\" is not a log filter (try \"info\" or \"notify_host=debug\")"
                    ),
                ));
                "info".into()
            }
            Some(level) => level,
            None => "info".into(),
        },
    };

    let kafka = validate_kafka(raw.kafka, &mut problems);
    let p = &raw.pipeline;
    let pipeline = PipelineConfig {
        max_in_flight: bounded(
            &mut problems,
            "pipeline.max_in_flight",
            p.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT,
            1,
            1_000_000,
        ) as usize,
        commit_interval: Duration::from_millis(bounded(
            &mut problems,
            "pipeline.commit_interval_ms",
            p.commit_interval_ms,
            DEFAULT_COMMIT_INTERVAL_MS,
            10,
            600_000,
        )),
        max_in_flight_per_partition: bounded(
            &mut problems,
            "pipeline.max_in_flight_per_partition",
            p.max_in_flight_per_partition,
            DEFAULT_MAX_IN_FLIGHT,
            1,
            1_000_000,
        ) as usize,
        shutdown_grace: seconds(
            &mut problems,
            "pipeline.shutdown_grace_seconds",
            p.shutdown_grace_seconds,
            DEFAULT_SHUTDOWN_GRACE_SECONDS,
            0.0,
            3600.0,
        ),
        max_event_bytes: kib(bounded(
            &mut problems,
            "pipeline.max_event_kib",
            p.max_event_kib,
            DEFAULT_MAX_EVENT_KIB,
            1,
            100 * 1024,
        )),
        max_channels_per_event: bounded(
            &mut problems,
            "pipeline.max_channels_per_event",
            p.max_channels_per_event,
            DEFAULT_MAX_CHANNELS_PER_EVENT,
            1,
            1024,
        ) as usize,
        max_event_age: p.max_event_age.filter(|d| !d.is_zero()),
        unknown_event_types: match p.unknown_event_types.as_deref().map(str::trim) {
            None | Some("") | Some("dead_letter") => UnknownEventTypes::DeadLetter,
            Some("skip") => UnknownEventTypes::Skip,
            Some(other) => {
                problems.push(Problem::new(
                    "pipeline.unknown_event_types",
                    format!("expected \"dead_letter\" or \"skip\", found \"{other}\""),
                ));
                UnknownEventTypes::DeadLetter
            }
        },
    };
    if raw.dedup.is_some() {
        problems.push(Problem::new(
            "dedup",
            "[dedup] is now [ledger] (the same keys: path, retention_hours, cache_mib; the default file is data/ledger.redb); rename the table",
        ));
    }
    let backend = ledger_backend(&mut problems, &raw.ledger);
    let ledger = LedgerConfig {
        backend,
        path: base_dir.join(
            raw.ledger
                .path
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .unwrap_or("data/ledger.redb"),
        ),
        retention: seconds(
            &mut problems,
            "ledger.retention_hours",
            raw.ledger.retention_hours.map(|h| h * 3600.0),
            DEFAULT_LEDGER_RETENTION_HOURS * 3600.0,
            0.001,
            24.0 * 3600.0 * 3650.0,
        ),
        cache_bytes: (bounded(
            &mut problems,
            "ledger.cache_mib",
            raw.ledger.cache_mib,
            DEFAULT_LEDGER_CACHE_MIB,
            1,
            64 * 1024,
        ) as usize)
            << 20,
    };

    // Private by default: health and metrics are for the operator's tools.
    let admin_listen = match raw.admin.listen.as_deref().map(str::trim) {
        None | Some("") => std::net::SocketAddr::from(([127, 0, 0, 1], 9090)),
        Some(s) => s.parse().unwrap_or_else(|_| {
            problems.push(Problem::new(
                "admin.listen",
                format!("\"{s}\" is not an address like 127.0.0.1:9090"),
            ));
            std::net::SocketAddr::from(([127, 0, 0, 1], 9090))
        }),
    };

    // Off unless set: an empty `${NOTIFY_ADMIN_TOKEN:-}` keeps the API off.
    let admin_token = match raw.admin.token.as_deref() {
        None => None,
        Some(t) if t.trim().is_empty() => None,
        Some(t) => match check_credential(t, CredentialForm::HeaderValue) {
            Ok(()) if t.len() >= MIN_ADMIN_TOKEN_LEN => Some(Secret::new(t)),
            Ok(()) => {
                problems.push(Problem::new(
                    "admin.token",
                    format!(
                        "{} is {} characters; use at least {MIN_ADMIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                        interpolated.describe("admin.token"),
                        t.len()
                    ),
                ));
                None
            }
            Err(why) => {
                problems.push(Problem::new(
                    "admin.token",
                    format!("{} {why}", interpolated.describe("admin.token")),
                ));
                None
            }
        },
    };

    let mut channels = BTreeMap::new();
    for (name, ch) in raw.channels {
        if let Some(c) = validate_channel(
            &name,
            ch,
            base_dir,
            default_limits,
            interpolated,
            &mut problems,
        ) {
            channels.insert(name, c);
        }
    }

    let scheduler = SchedulerConfig {
        time_zone: match raw.scheduler.time_zone.as_deref().map(str::trim) {
            None | Some("") => chrono_tz::UTC,
            Some(tz) => tz.parse().unwrap_or_else(|_| {
                problems.push(Problem::new(
                    "scheduler.time_zone",
                    format!("\"{tz}\" is not an IANA time zone name (e.g. Europe/Berlin or UTC)"),
                ));
                chrono_tz::UTC
            }),
        },
        max_in_flight: bounded(
            &mut problems,
            "scheduler.max_in_flight",
            raw.scheduler.max_in_flight,
            DEFAULT_SCHEDULER_IN_FLIGHT,
            1,
            100_000,
        ) as usize,
    };
    let reminders = validate_reminders(raw.reminders, &channels, &mut problems);
    let notices = Notices {
        cancelled: known_channels(
            "notices.cancelled",
            raw.notices.cancelled,
            &channels,
            &mut problems,
        ),
        rescheduled: known_channels(
            "notices.rescheduled",
            raw.notices.rescheduled,
            &channels,
            &mut problems,
        ),
    };

    // Compiled plugins live beside the ledger: the one directory the host
    // already owns and keeps across restarts (a volume in a container).
    let cache_dir = cache_on.then(|| match &raw_cache_dir {
        Some(d) => base_dir.join(d),
        None => ledger
            .path
            .parent()
            .map_or_else(|| base_dir.join("plugin-cache"), |p| p.join("plugin-cache")),
    });

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        scheduler,
        reminders,
        notices,
        path: PathBuf::new(),
        kafka,
        pipeline,
        ledger,
        admin_listen,
        admin_token,
        plugins: PluginRuntimeConfig {
            max_instances: max_instances.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            max_concurrent_calls: u32::try_from(max_concurrent_calls).unwrap_or(u32::MAX),
            cache_dir,
            watch: plugin_watch,
            default_limits,
            response_body_limit: kib(body_kib),
            max_file_bytes: mib(max_file_mib),
            caps,
        },
        log,
        channels,
        interpolated: Interpolated::default(),
    })
}

/// Reminders being sent at once, by default.
const DEFAULT_SCHEDULER_IN_FLIGHT: u64 = 512;
/// The longest `before` a reminder may have.
const MAX_REMINDER_BEFORE: Duration = Duration::from_secs(366 * 86_400);

fn validate_reminders(
    raw: Vec<RawReminder>,
    channels: &BTreeMap<String, ChannelConfig>,
    problems: &mut Vec<Problem>,
) -> Vec<ReminderPolicy> {
    let mut out: Vec<ReminderPolicy> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("reminders[{i}].{k}");
        let name = r.name.as_deref().map(str::trim).unwrap_or("").to_string();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            let what = if name.is_empty() {
                "required".to_string()
            } else {
                format!(
                    "\"{}\" is not a reminder name",
                    crate::scrub::cut(name.clone(), 64)
                )
            };
            problems.push(Problem::new(
                at("name"),
                format!("{what}: use 1 to 64 of a-z, 0-9, `_` and `-` (e.g. \"day-before\")"),
            ));
        } else if out.iter().any(|o| o.name == name) {
            problems.push(Problem::new(
                at("name"),
                format!("\"{name}\" is used by an earlier reminder; names are unique"),
            ));
        }
        let before = match r.before {
            Some(b) if !b.is_zero() && b <= MAX_REMINDER_BEFORE => b,
            Some(_) => {
                problems.push(Problem::new(
                    at("before"),
                    "must be more than 0 and at most 366 days (e.g. \"24h\")",
                ));
                Duration::ZERO
            }
            None => {
                problems.push(Problem::new(
                    at("before"),
                    "required: how long before the appointment, e.g. \"24h\" or \"90m\"",
                ));
                Duration::ZERO
            }
        };
        if r.channels.is_empty() {
            problems.push(Problem::new(
                at("channels"),
                "required: the channels this reminder goes to, e.g. [\"email\", \"sms\"]",
            ));
        }
        let channels = known_channels(&at("channels"), r.channels, channels, problems);
        out.push(ReminderPolicy {
            name,
            before,
            channels,
            catch_up: r.catch_up.unwrap_or(false),
        });
    }
    out
}

/// `names`, each a configured channel (else a problem under `key`).
fn known_channels(
    key: &str,
    names: Vec<String>,
    channels: &BTreeMap<String, ChannelConfig>,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        let n = n.trim().to_string();
        if !channels.contains_key(&n) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                key,
                format!(
                    "`{n}` is not a configured channel (configured: {})",
                    known.join(", ")
                ),
            ));
        } else if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn validate_kafka(raw: RawKafka, problems: &mut Vec<Problem>) -> KafkaConfig {
    let mut text = |key: &str, value: Option<String>, default: &str| -> String {
        match value.map(|v| v.trim().to_string()) {
            None => default.to_string(),
            Some(v) if v.is_empty() => {
                problems.push(Problem::new(format!("kafka.{key}"), "must not be empty"));
                default.to_string()
            }
            Some(v) => v,
        }
    };
    let bootstrap_servers = text("bootstrap_servers", raw.bootstrap_servers, "localhost:9092");
    let topic = text("topic", raw.topic, "appointments.created");
    let dlq_topic = text("dlq_topic", raw.dlq_topic, "appointments.created.dlq");
    // One group for the whole service: both channels are handled per event.
    let group_id = text("group_id", raw.group_id, "notify-host");
    let auto_offset_reset = text("auto_offset_reset", raw.auto_offset_reset, "earliest");
    if !matches!(auto_offset_reset.as_str(), "earliest" | "latest") {
        problems.push(Problem::new(
            "kafka.auto_offset_reset",
            format!("expected \"earliest\" or \"latest\", found \"{auto_offset_reset}\""),
        ));
    }
    if topic == dlq_topic {
        problems.push(Problem::new(
            "kafka.dlq_topic",
            "must differ from kafka.topic",
        ));
    }
    // Empty (e.g. `${KAFKA_INSTANCE_ID:-}` with the variable unset) means a
    // dynamic member.
    let instance_id = raw
        .instance_id
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Some(id) = &instance_id {
        if let Err(reason) = check_instance_id(id) {
            problems.push(Problem::new("kafka.instance_id", reason));
        }
    }
    let mut client = Vec::new();
    for (k, v) in raw.client {
        if k == "group.instance.id" {
            // One place for it, so the env override and the default apply.
            problems.push(Problem::new(
                format!("kafka.client.\"{k}\""),
                "use kafka.instance_id (or KAFKA_INSTANCE_ID) instead",
            ));
            continue;
        }
        if RESERVED_CLIENT_KEYS.contains(&k.as_str()) {
            problems.push(Problem::new(
                format!("kafka.client.\"{k}\""),
                "set by the host to keep its delivery guarantees; use the [kafka] keys instead",
            ));
            continue;
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                problems.push(Problem::new(
                    format!("kafka.client.\"{k}\""),
                    format!(
                        "expected a string, number or boolean, found a {}",
                        other.type_str()
                    ),
                ));
                continue;
            }
        };
        client.push((k, value));
    }
    KafkaConfig {
        bootstrap_servers,
        topic,
        dlq_topic,
        group_id,
        auto_offset_reset,
        instance_id,
        client,
    }
}

/// Kafka brokers accept a `group.instance.id` with the characters and length
/// of a topic name, and refuse the member otherwise (at every start, as
/// INVALID_REQUEST): checked here so the error names the key.
fn check_instance_id(id: &str) -> Result<(), String> {
    // Kafka's limit for topic names, which group instance ids share.
    const MAX_LEN: usize = 249;
    if id.len() > MAX_LEN {
        return Err(format!("at most {MAX_LEN} characters, found {}", id.len()));
    }
    if id == "." || id == ".." {
        return Err(format!("\"{id}\" is not allowed"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "\"{id}\" contains {c:?}; use ASCII letters, digits, '.', '_' and '-' only"
        )),
        None => Ok(()),
    }
}

/// `ledger.backend` and, for PostgreSQL, its connection keys.
fn ledger_backend(problems: &mut Vec<Problem>, raw: &raw::RawLedger) -> LedgerBackend {
    let kind = raw.backend.as_deref().map(str::trim).unwrap_or("");
    // `ledger.url` is not among them: the shipped config reads it from
    // DATABASE_URL, which a Django deployment exports for its own use, and an
    // embedded host must still start there (check-config shows the backend).
    let postgres_keys = [
        ("ledger.pool_size", raw.pool_size.is_some()),
        ("ledger.lease_seconds", raw.lease_seconds.is_some()),
        (
            "ledger.connect_timeout_seconds",
            raw.connect_timeout_seconds.is_some(),
        ),
        ("ledger.owner", raw.owner.is_some()),
    ];
    match kind {
        "" | "embedded" => {
            for (key, set) in postgres_keys {
                if set {
                    problems.push(Problem::new(
                        key,
                        "is for ledger.backend = \"postgres\"; the ledger is embedded (set ledger.backend = \"postgres\" to use it, or remove the key)",
                    ));
                }
            }
            LedgerBackend::Embedded
        }
        "postgres" | "postgresql" => {
            let url = raw.url.as_deref().map(str::trim).unwrap_or("");
            let url_shown = match postgres_url(url) {
                Ok(shown) => shown,
                Err(reason) => {
                    problems.push(Problem::new("ledger.url", reason));
                    String::new()
                }
            };
            let pool_size = bounded(
                problems,
                "ledger.pool_size",
                raw.pool_size,
                DEFAULT_LEDGER_POOL_SIZE,
                2,
                1000,
            ) as u32;
            let lease = seconds(
                problems,
                "ledger.lease_seconds",
                raw.lease_seconds,
                DEFAULT_LEDGER_LEASE_SECONDS,
                1.0,
                3600.0,
            );
            let connect_timeout = seconds(
                problems,
                "ledger.connect_timeout_seconds",
                raw.connect_timeout_seconds,
                DEFAULT_LEDGER_CONNECT_TIMEOUT_SECONDS,
                0.1,
                300.0,
            );
            let owner = match raw.owner.as_deref().map(str::trim) {
                Some(o) if !o.is_empty() && o.len() <= 200 => o.to_string(),
                Some(o) if !o.is_empty() => {
                    problems.push(Problem::new("ledger.owner", "is over 200 bytes"));
                    default_owner()
                }
                _ => default_owner(),
            };
            LedgerBackend::Postgres(PostgresLedger {
                url: Secret::new(url),
                url_shown,
                pool_size,
                lease,
                connect_timeout,
                owner,
            })
        }
        other => {
            problems.push(Problem::new(
                "ledger.backend",
                format!("expected \"embedded\" or \"postgres\", found \"{other}\""),
            ));
            LedgerBackend::Embedded
        }
    }
}

/// Checks a PostgreSQL URL; returns it without its password.
fn postgres_url(url: &str) -> Result<String, String> {
    if url.is_empty() {
        return Err("is empty: ledger.backend = \"postgres\" needs a URL (e.g. url = \"${DATABASE_URL}\", DATABASE_URL=postgres://notify:…@db:5432/notify)".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| {
        format!("is not a URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "has the scheme \"{}\"; expected postgres:// or postgresql://",
            parsed.scheme()
        ));
    }
    let mut shown = parsed.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    // Query parameters may hold a password too (`password=`).
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("password") {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(shown.to_string())
}

/// `hostname/pid/random`: unique per process, readable in the claims table.
fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "host".to_string());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}

fn seconds(
    problems: &mut Vec<Problem>,
    key: &str,
    value: Option<f64>,
    default: f64,
    min: f64,
    max: f64,
) -> Duration {
    match value {
        None => Duration::from_secs_f64(default),
        Some(v) if v >= min && v <= max => Duration::from_secs_f64(v),
        Some(v) => {
            problems.push(Problem::new(
                key,
                format!("{v} is out of range ({min} to {max})"),
            ));
            Duration::from_secs_f64(default)
        }
    }
}

fn validate_retry(name: &str, raw: Option<RawRetry>, problems: &mut Vec<Problem>) -> RetryPolicy {
    let d = RetryPolicy::default();
    let Some(r) = raw else {
        return d;
    };
    let key = |k: &str| format!("channels.{name}.retry.{k}");
    let policy = RetryPolicy {
        max_attempts: bounded(
            problems,
            &key("max_attempts"),
            r.max_attempts,
            u64::from(d.max_attempts),
            1,
            1000,
        ) as u32,
        initial_backoff: Duration::from_millis(bounded(
            problems,
            &key("initial_backoff_ms"),
            r.initial_backoff_ms,
            d.initial_backoff.as_millis() as u64,
            1,
            3_600_000,
        )),
        max_backoff: Duration::from_millis(bounded(
            problems,
            &key("max_backoff_ms"),
            r.max_backoff_ms,
            d.max_backoff.as_millis() as u64,
            1,
            3_600_000,
        )),
        max_retry_after: Duration::from_secs(bounded(
            problems,
            &key("max_retry_after_seconds"),
            r.max_retry_after_seconds,
            d.max_retry_after.as_secs(),
            0,
            86_400,
        )),
        give_up_after: r.give_up_after,
    };
    if policy.give_up_after.is_some_and(|d| d.is_zero()) {
        problems.push(Problem::new(
            key("give_up_after"),
            "must be longer than 0 (leave it out to never give up on time)",
        ));
    }
    if policy.max_backoff < policy.initial_backoff {
        problems.push(Problem::new(
            key("max_backoff_ms"),
            "must be at least initial_backoff_ms",
        ));
    }
    policy
}

fn validate_circuit(
    name: &str,
    raw: Option<RawCircuit>,
    problems: &mut Vec<Problem>,
) -> CircuitPolicy {
    let d = CircuitPolicy::default();
    let Some(r) = raw else {
        return d;
    };
    let key = |k: &str| format!("channels.{name}.circuit.{k}");
    let mut n = |k: &str, v: Option<u64>, default: u32, max: u64| {
        bounded(problems, &key(k), v, u64::from(default), 1, max) as u32
    };
    let consecutive_failures = n(
        "consecutive_failures",
        r.consecutive_failures,
        d.consecutive_failures,
        10_000,
    );
    let window = n("window", r.window, d.window, 10_000);
    let window_failures = n(
        "window_failures",
        r.window_failures,
        d.window_failures,
        10_000,
    );
    let policy = CircuitPolicy {
        consecutive_failures,
        window,
        window_failures,
        probe_backoff_initial: Duration::from_millis(bounded(
            problems,
            &key("probe_backoff_initial_ms"),
            r.probe_backoff_initial_ms,
            d.probe_backoff_initial.as_millis() as u64,
            1,
            3_600_000,
        )),
        probe_backoff_max: Duration::from_secs(bounded(
            problems,
            &key("probe_backoff_max_seconds"),
            r.probe_backoff_max_seconds,
            d.probe_backoff_max.as_secs(),
            1,
            86_400,
        )),
        ..d
    };
    if policy.window_failures > policy.window {
        problems.push(Problem::new(
            key("window_failures"),
            format!(
                "{} is more than the window ({}): the rate breaker could never open",
                policy.window_failures, policy.window
            ),
        ));
    }
    if policy.probe_backoff_max < policy.probe_backoff_initial {
        problems.push(Problem::new(
            key("probe_backoff_max_seconds"),
            "must be at least probe_backoff_initial_ms",
        ));
    }
    policy
}

fn validate_rate(name: &str, r: RawRate, problems: &mut Vec<Problem>) -> Option<Rate> {
    let key = |k: &str| format!("channels.{name}.rate.{k}");
    let Some(per_second) = r.per_second else {
        problems.push(Problem::new(
            key("per_second"),
            "required when rate is set: the most sends per second (e.g. 10, or 0.5)",
        ));
        return None;
    };
    // 1/100 per second (one send every 100 s) to a million: outside that it
    // is a unit mistake.
    if !(0.01..=1_000_000.0).contains(&per_second) {
        problems.push(Problem::new(
            key("per_second"),
            format!("{per_second} is out of range (0.01 to 1000000)"),
        ));
        return None;
    }
    // A burst of one spaces sends evenly; a larger one lets that many go at
    // once after a quiet spell.
    let burst = bounded(problems, &key("burst"), r.burst, 1, 1, 1_000_000);
    Some(Rate {
        period: Duration::from_secs_f64(1.0 / per_second),
        burst: NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN),
    })
}

fn validate_caps(raw: &raw::RawCaps, problems: &mut Vec<Problem>) -> OutputCaps {
    let mut cap = |key: &str, value: Option<u64>, default: u64, max: u64| {
        bounded(
            problems,
            &format!("plugins.caps.{key}"),
            value,
            default,
            1,
            max,
        ) as usize
    };
    OutputCaps {
        requests_per_render: cap(
            "requests_per_render",
            raw.requests_per_render,
            DEFAULT_REQUESTS_PER_RENDER,
            1024,
        ),
        headers_per_request: cap(
            "headers_per_request",
            raw.headers_per_request,
            DEFAULT_HEADERS_PER_REQUEST,
            1024,
        ),
        header_bytes: cap(
            "header_bytes",
            raw.header_bytes,
            DEFAULT_HEADER_BYTES,
            1024 * 1024,
        ),
        url_bytes: cap("url_bytes", raw.url_bytes, DEFAULT_URL_BYTES, 1024 * 1024),
        body_bytes: kib(cap("body_kib", raw.body_kib, DEFAULT_BODY_KIB, 64 * 1024) as u64),
        text_bytes: cap("text_bytes", raw.text_bytes, DEFAULT_TEXT_BYTES, 64 * 1024),
        output_line_bytes: cap(
            "output_line_bytes",
            raw.output_line_bytes,
            DEFAULT_OUTPUT_LINE_BYTES,
            64 * 1024,
        ),
    }
}

fn mib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

fn kib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1024)).unwrap_or(usize::MAX)
}

fn bounded(
    problems: &mut Vec<Problem>,
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> u64 {
    match value {
        None => default,
        Some(v) if (min..=max).contains(&v) => v,
        Some(v) => {
            problems.push(Problem::new(
                key,
                format!("{v} is out of range ({min} to {max})"),
            ));
            default
        }
    }
}

/// `mode` (on, hold, off), or the older `enabled` (false is `off`).
fn channel_mode(
    name: &str,
    enabled: Option<bool>,
    mode: Option<&str>,
    problems: &mut Vec<Problem>,
) -> ChannelMode {
    let from_enabled = enabled.map(|on| {
        if on {
            ChannelMode::On
        } else {
            ChannelMode::Off
        }
    });
    let mode = match mode.map(str::trim) {
        None | Some("") => None,
        Some(m) => match m.to_ascii_lowercase().as_str() {
            "on" => Some(ChannelMode::On),
            "hold" => Some(ChannelMode::Hold),
            "off" => Some(ChannelMode::Off),
            _ => {
                problems.push(Problem::new(
                    format!("channels.{name}.mode"),
                    format!("\"{m}\" is not a mode: use \"on\", \"hold\" (keep requests for `notify-host deliveries release`) or \"off\" (skip them)"),
                ));
                Some(ChannelMode::On)
            }
        },
    };
    match (mode, from_enabled) {
        (Some(m), Some(e)) if m != e => {
            problems.push(Problem::new(
                format!("channels.{name}.enabled"),
                format!(
                    "contradicts channels.{name}.mode = \"{}\"; `enabled` is the older spelling of mode on/off: keep only `mode`",
                    m.as_str()
                ),
            ));
            m
        }
        (Some(m), _) => m,
        (None, Some(e)) => e,
        (None, None) => ChannelMode::On,
    }
}

fn validate_channel(
    name: &str,
    ch: RawChannel,
    base_dir: &Path,
    defaults: PluginLimits,
    interpolated: &Interpolated,
    problems: &mut Vec<Problem>,
) -> Option<ChannelConfig> {
    let key = |k: &str| format!("channels.{name}.{k}");
    let before = problems.len();
    let quiet_hours = match &ch.quiet_hours {
        None => None,
        Some(q) => match (q.from.as_deref(), q.to.as_deref()) {
            (Some(from), Some(to)) => {
                match crate::reminders::quiet::QuietHours::parse(from.trim(), to.trim()) {
                    Ok(q) => Some(q),
                    Err(why) => {
                        problems.push(Problem::new(key("quiet_hours"), why));
                        None
                    }
                }
            }
            _ => {
                problems.push(Problem::new(
                    key("quiet_hours"),
                    "needs both `from` and `to`, e.g. { from = \"21:00\", to = \"08:00\" }",
                ));
                None
            }
        },
    };
    let mode = channel_mode(name, ch.enabled, ch.mode.as_deref(), problems);
    let enabled = mode == ChannelMode::On;

    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        problems.push(Problem::new(
            format!("channels.{name}"),
            "channel names use only a-z, 0-9, `_` and `-`",
        ));
    }
    if name == crate::metrics::UNKNOWN_CHANNEL {
        problems.push(Problem::new(
            format!("channels.{name}"),
            "the name `unknown` is reserved: metrics count requests for channels the host does not have under channel=\"unknown\"",
        ));
    }

    let plugin_path = match ch.plugin.as_deref().map(str::trim) {
        None | Some("") => {
            problems.push(Problem::new(
                key("plugin"),
                "required: the path of the channel's .wasm component",
            ));
            PathBuf::new()
        }
        Some(p) => base_dir.join(p),
    };

    let base_url = ch
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            parse_origin_url(s)
                .map_err(|m| problems.push(Problem::new(key("base_url"), m)))
                .ok()
        });

    let mut allowed: Vec<Origin> = base_url.iter().filter_map(Origin::from_url).collect();
    for (i, entry) in ch.allowed_hosts.iter().enumerate() {
        let as_url = if entry.contains("://") {
            entry.clone()
        } else {
            format!("https://{entry}")
        };
        match parse_origin_url(&as_url) {
            Ok(url) => allowed.extend(Origin::from_url(&url)),
            Err(m) => problems.push(Problem::new(
                format!("channels.{name}.allowed_hosts[{i}]"),
                m,
            )),
        }
    }
    let mut allowed_paths = Vec::new();
    for (i, prefix) in ch.allowed_paths.iter().enumerate() {
        let prefix = prefix.trim();
        // `%` and `\` could widen a prefix once the URL is normalised.
        if !prefix.starts_with('/')
            || prefix.contains(['?', '#', '%', '\\'])
            || prefix.contains("..")
        {
            problems.push(Problem::new(
                format!("channels.{name}.allowed_paths[{i}]"),
                format!("\"{prefix}\" is not a path prefix like \"/v3/\" (starts with `/`, no `?`, `#`, `%`, `\\` or `..`)"),
            ));
        } else {
            allowed_paths.push(prefix.to_string());
        }
    }
    let mut allowed_methods = Vec::new();
    for (i, method) in ch.allowed_methods.iter().enumerate() {
        let upper = method.trim().to_ascii_uppercase();
        if ALLOWED_METHODS.contains(&upper.as_str()) {
            if !allowed_methods.contains(&upper) {
                allowed_methods.push(upper);
            }
        } else {
            problems.push(Problem::new(
                format!("channels.{name}.allowed_methods[{i}]"),
                format!(
                    "\"{}\" is not one of {}",
                    method.trim(),
                    ALLOWED_METHODS.join(", ")
                ),
            ));
        }
    }
    if allowed_methods.is_empty() {
        allowed_methods = ALLOWED_METHODS.iter().map(|m| m.to_string()).collect();
    }
    let proxy = ch
        .proxy
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            // The value may carry credentials: never echo it.
            _ => {
                problems.push(Problem::new(
                    key("proxy"),
                    "expected a proxy URL like http://proxy.internal:3128 (http or https, with a host)",
                ));
                None
            }
        });

    if allowed.is_empty() && base_url.is_none() && problems.len() == before {
        problems.push(Problem::new(
            key("base_url"),
            "set base_url (or allowed_hosts): a channel must say where its requests may go",
        ));
    }

    // A disabled channel's credentials are never sent (and may be unset).
    let mut credential = |k: &str, value: &str, form: CredentialForm| {
        if enabled {
            let k = key(k);
            if let Err(why) = check_credential(value, form) {
                problems.push(Problem::new(
                    &k,
                    format!("{} {why}", interpolated.describe(&k)),
                ));
            }
        }
    };
    let auth = match ch.auth {
        None | Some(RawAuth::None) => Auth::None,
        Some(RawAuth::Basic { username, password }) => {
            credential("auth.username", &username, CredentialForm::BasicUsername);
            credential("auth.password", &password, CredentialForm::BasicPassword);
            Auth::Basic {
                username,
                password: Secret::new(password),
            }
        }
        Some(RawAuth::Bearer { token }) => {
            credential("auth.token", &token, CredentialForm::HeaderValue);
            Auth::Bearer {
                token: Secret::new(token),
            }
        }
        Some(RawAuth::Header {
            name: header,
            value,
        }) => {
            credential("auth.value", &value, CredentialForm::HeaderValue);
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(Problem::new(
                    key("auth.name"),
                    format!("\"{header}\" is not a valid HTTP header name"),
                ));
            }
            Auth::Header {
                name: header,
                value: Secret::new(value),
            }
        }
        Some(RawAuth::Hmac {
            secret,
            header,
            timestamp_header,
        }) => {
            if enabled && secret.trim().is_empty() {
                let k = key("auth.secret");
                problems.push(Problem::new(
                    &k,
                    format!(
                        "{} is empty: a signature needs a secret",
                        interpolated.describe(&k)
                    ),
                ));
            }
            let mut name_of = |k: &str, given: Option<String>, default: &str| {
                let name = given
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| default.to_string());
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(Problem::new(
                        key(k),
                        format!("\"{name}\" is not a valid HTTP header name"),
                    ));
                }
                name
            };
            let header = name_of("auth.header", header, DEFAULT_SIGNATURE_HEADER);
            let timestamp_header = name_of(
                "auth.timestamp_header",
                timestamp_header,
                DEFAULT_TIMESTAMP_HEADER,
            );
            if header.eq_ignore_ascii_case(&timestamp_header) {
                problems.push(Problem::new(
                    key("auth.timestamp_header"),
                    "must differ from auth.header",
                ));
            }
            Auth::Hmac {
                secret: Secret::new(secret),
                header,
                timestamp_header,
            }
        }
    };

    let instances = match ch.instances.as_deref().map(str::trim) {
        None | Some("fresh") => {
            for (k, set) in [
                ("reuse_instances", ch.reuse_instances.is_some()),
                ("reuse_calls", ch.reuse_calls.is_some()),
            ] {
                if set {
                    problems.push(Problem::new(
                        key(k),
                        "only applies with instances = \"reuse\"",
                    ));
                }
            }
            InstanceMode::Fresh
        }
        Some("reuse") => InstanceMode::Reuse {
            keep: bounded(
                problems,
                &key("reuse_instances"),
                ch.reuse_instances,
                default_concurrent_calls(),
                1,
                1024,
            ) as u32,
            calls: bounded(
                problems,
                &key("reuse_calls"),
                ch.reuse_calls,
                DEFAULT_REUSE_CALLS,
                1,
                u64::from(u32::MAX),
            ) as u32,
        },
        Some(other) => {
            problems.push(Problem::new(
                key("instances"),
                format!("expected \"fresh\" or \"reuse\", found \"{other}\""),
            ));
            InstanceMode::Fresh
        }
    };
    let sha256 = match ch.sha256.as_deref().map(str::trim) {
        None => None,
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hex.to_ascii_lowercase())
        }
        Some(_) => {
            problems.push(Problem::new(
                key("sha256"),
                "expected 64 hex digits (`sha256sum plugin.wasm`, or `notify-host plugin compile` prints it)",
            ));
            None
        }
    };

    let timeout = match ch.timeout_seconds {
        None => Duration::from_secs_f64(DEFAULT_TIMEOUT_SECONDS),
        Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECONDS => Duration::from_secs_f64(t),
        Some(t) => {
            problems.push(Problem::new(
                key("timeout_seconds"),
                format!("{t} is out of range (above 0, at most {MAX_TIMEOUT_SECONDS})"),
            ));
            Duration::from_secs_f64(DEFAULT_TIMEOUT_SECONDS)
        }
    };

    let limits = PluginLimits {
        memory_bytes: ch
            .memory_limit_mib
            .map(|v| {
                mib(bounded(
                    problems,
                    &key("memory_limit_mib"),
                    Some(v),
                    0,
                    1,
                    MAX_MEMORY_LIMIT_MIB,
                ))
            })
            .unwrap_or(defaults.memory_bytes),
        deadline: ch
            .deadline_ms
            .map(|v| {
                Duration::from_millis(bounded(
                    problems,
                    &key("deadline_ms"),
                    Some(v),
                    0,
                    1,
                    MAX_DEADLINE_MS,
                ))
            })
            .unwrap_or(defaults.deadline),
        output_bytes: defaults.output_bytes,
        text_bytes: defaults.text_bytes,
        output_line_bytes: defaults.output_line_bytes,
    };

    let retry = validate_retry(name, ch.retry, problems);
    let circuit = validate_circuit(name, ch.circuit, problems);
    let rate = ch.rate.and_then(|r| validate_rate(name, r, problems));

    let mut settings = Vec::new();
    if let Some(url) = &base_url {
        if ch.settings.contains_key("base_url") {
            problems.push(Problem::new(
                key("settings.base_url"),
                format!("set the base URL as channels.{name}.base_url, where the host also allows its host"),
            ));
        }
        settings.push((
            "base_url".to_string(),
            url.as_str().trim_end_matches('/').to_string(),
        ));
    }
    for (k, v) in ch.settings {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            other => {
                problems.push(Problem::new(
                    key(&format!("settings.{k}")),
                    format!(
                        "expected a string, number or boolean, found a {}",
                        other.type_str()
                    ),
                ));
                continue;
            }
        };
        settings.push((k, text));
    }

    (problems.len() == before).then(|| ChannelConfig {
        name: name.to_string(),
        enabled,
        mode,
        plugin_path,
        base_url,
        allowed,
        allowed_paths,
        allowed_methods,
        proxy,
        auth,
        timeout,
        limits,
        retry,
        circuit,
        rate,
        settings,
        quiet_hours,
        instances,
        sha256,
    })
}

/// What a credential becomes on the wire, which decides what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialForm {
    /// Sent as (part of) a header value as is: bearer token, header value.
    HeaderValue,
    /// Base64-encoded with the password, so any text goes, but not `:`.
    BasicUsername,
    /// Base64-encoded: any text goes.
    BasicPassword,
}

/// Why a credential cannot work, in words that never quote it (the caller
/// prefixes "the value of ${VAR}"). The checks are what the transport would
/// otherwise find at every send, refusing each one with a message about a
/// "reserved header" that sends the operator looking in the wrong place.
fn check_credential(value: &str, form: CredentialForm) -> Result<(), String> {
    if form == CredentialForm::BasicUsername {
        // The username is an account id, not a secret, and may be short
        // (Mailgun's is `api`).
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(format!(
                "contains a control character (U+{:04X}), which no credential has",
                u32::from(c)
            ));
        }
        if value.contains(':') {
            return Err("contains `:`, which Basic auth uses to end the username".into());
        }
        return Ok(());
    }
    if value.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains a control character (U+{:04X}), which no HTTP header can carry (a line end or tab from the environment file?)",
            u32::from(c)
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(
            "starts or ends with whitespace (a stray space from the environment file?)".into(),
        );
    }
    // `HeaderValue` takes bytes past ASCII as obsolete text; no token has
    // them, and the transport could not show such a header redacted.
    if form == CredentialForm::HeaderValue
        && (!value.is_ascii()
            || reqwest::header::HeaderValue::from_str(&format!("Bearer {value}")).is_err())
    {
        return Err(
            "holds a character an HTTP header cannot carry (only visible ASCII and spaces)".into(),
        );
    }
    if value.len() < MIN_SECRET_LEN {
        return Err(format!(
            "is shorter than {MIN_SECRET_LEN} characters: too short for a credential, and too short to scrub from logs and plugin output without shredding them"
        ));
    }
    Ok(())
}

/// Parses a base URL or allowed origin: http(s), a host, no credentials, and
/// plain http only for loopback.
fn parse_origin_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("\"{s}\" is not a URL: {e}"))?;
    let host = url.host().ok_or_else(|| format!("\"{s}\" has no host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain credentials: set them under auth, from the environment".into(),
        );
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(format!(
                "plain http is allowed only for loopback addresses (127.0.0.0/8, ::1, localhost), not \"{host}\"; use https"
            ))
        }
        other => return Err(format!("scheme \"{other}\" is not http or https")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{s}\" must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "MAILGUN_API_KEY" => Some("key-1234567".into()),
            _ => None,
        }
    }

    const MINIMAL: &str = r#"
[channels.email]
plugin = "plugins/mailgun.wasm"
base_url = "https://api.mailgun.net"
auth = { type = "basic", username = "api", password = "${MAILGUN_API_KEY}" }
settings = { domain = "mg.example.com", retries = 3 }
"#;

    #[test]
    fn minimal_channel_gets_defaults() {
        let c = parse(MINIMAL, Path::new("/etc/notify"), &env).expect("valid");
        let email = &c.channels["email"];
        assert!(email.enabled);
        assert_eq!(
            email.plugin_path,
            Path::new("/etc/notify/plugins/mailgun.wasm")
        );
        assert_eq!(email.timeout, Duration::from_secs(10));
        assert_eq!(email.limits.memory_bytes, 32 * 1024 * 1024);
        assert_eq!(email.limits.deadline, Duration::from_millis(500));
        assert_eq!(
            email.settings,
            vec![
                (
                    "base_url".to_string(),
                    "https://api.mailgun.net".to_string()
                ),
                ("domain".into(), "mg.example.com".into()),
                ("retries".into(), "3".into()),
            ]
        );
        assert!(email.allows(&Url::parse("https://api.mailgun.net/v3/x/messages").expect("url")));
        assert!(!email.allows(&Url::parse("http://api.mailgun.net/v3/x/messages").expect("url")));
        assert!(!email.allows(&Url::parse("https://api.mailgun.net:8443/").expect("url")));
        assert!(!email.allows(&Url::parse("https://evil.example.com/").expect("url")));
        match &email.auth {
            Auth::Basic { password, .. } => {
                assert_eq!(password.expose(), "key-1234567");
                assert_eq!(format!("{password:?}"), "Secret([redacted])");
            }
            other => panic!("unexpected auth {other:?}"),
        }
    }

    #[test]
    fn disabled_channel_needs_no_secrets() {
        let text = MINIMAL
            .replace(
                "[channels.email]",
                "[channels.email]\nenabled = \"${EMAIL_ON:-false}\"",
            )
            .replace("${MAILGUN_API_KEY}", "${UNSET_KEY}");
        let c = parse(&text, Path::new("."), &env).expect("valid");
        assert!(!c.channels["email"].enabled);
        let on = text.replace("${EMAIL_ON:-false}", "true");
        let err = parse(&on, Path::new("."), &env).expect_err("secret missing");
        assert_eq!(
            err,
            vec![Problem::new(
                "channels.email.auth.password",
                "environment variable `UNSET_KEY` is not set"
            )]
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for (url, ok) in [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:1", true),
            ("http://[::1]:9", true),
            ("http://10.0.0.1", false),
            ("http://api.mailgun.net", false),
            ("ftp://api.mailgun.net", false),
            ("https://user:pw@api.mailgun.net", false),
        ] {
            let text = MINIMAL.replace("https://api.mailgun.net", url);
            assert_eq!(parse(&text, Path::new("."), &env).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn kafka_instance_id_from_the_file_or_the_environment() {
        /// (kafka.instance_id in the file, KAFKA_INSTANCE_ID, the id or a problem)
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Result<Option<&'static str>, &'static str>,
        );
        let cases: &[Case] = &[
            (None, None, Ok(None)),
            (Some(""), None, Ok(None)),
            (Some("${KAFKA_INSTANCE_ID:-}"), None, Ok(None)),
            (
                Some("${KAFKA_INSTANCE_ID:-}"),
                Some("host-a"),
                Ok(Some("host-a")),
            ),
            (Some(" notify-1 "), None, Ok(Some("notify-1"))),
            // The variable overrides the file, as the other KAFKA_* do; an
            // empty one does not.
            (Some("from-file"), Some("from-env"), Ok(Some("from-env"))),
            (Some("from-file"), Some(""), Ok(Some("from-file"))),
            (None, Some("abc123def456"), Ok(Some("abc123def456"))),
            (Some("has space"), None, Err("contains ' '")),
            (Some("."), None, Err("is not allowed")),
        ];
        for (file, var, want) in cases {
            let mut text = MINIMAL.to_string();
            if let Some(v) = file {
                text = format!("[kafka]\ninstance_id = \"{v}\"\n{text}");
            }
            let lookup = |name: &str| match name {
                "KAFKA_INSTANCE_ID" => var.map(str::to_string),
                other => env(other),
            };
            let got = parse(&text, Path::new("."), &lookup);
            match (want, got) {
                (Ok(id), Ok(c)) => {
                    assert_eq!(c.kafka.instance_id.as_deref(), *id, "{file:?} {var:?}")
                }
                (Err(reason), Err(problems)) => {
                    assert!(
                        problems
                            .iter()
                            .any(|p| p.key == "kafka.instance_id" && p.message.contains(reason)),
                        "{file:?}: {problems:?}"
                    );
                }
                (want, got) => panic!("{file:?} {var:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    /// A config error names `${VAR}` where a value from the environment
    /// would have been printed, wherever the value landed.
    #[test]
    fn problems_never_quote_an_interpolated_value() {
        const KEY: &str = "key-live-0123456789abcdef";
        let lookup = |name: &str| match name {
            "MAILGUN_API_KEY" | "KEY" => Some(KEY.to_string()),
            "TEN" => Some("10".to_string()),
            "LEVEL" => Some("loud".to_string()),
            "KAFKA_AUTO_OFFSET_RESET" => Some(KEY.to_string()),
            _ => None,
        };
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"timeout_seconds = "${MAILGUN_API_KEY}""#,
                "channels.email.timeout_seconds",
                r#"expected a number, found "${MAILGUN_API_KEY}""#,
            ),
            (
                r#"base_url = "https://x.example.com/?k=${KEY}""#,
                "channels.email.base_url",
                r#""https://x.example.com/?k=${KEY}" must not have a query or fragment"#,
            ),
            (
                r#"memory_limit_mib = "${KEY}0""#,
                "channels.email.memory_limit_mib",
                r#"expected a non-negative integer, found "${KEY}0""#,
            ),
            // A short value is replaced where it stands alone only.
            (
                r#"memory_limit_mib = "${TEN}0000""#,
                "channels.email.memory_limit_mib",
                "100000 is out of range (1 to 4096)",
            ),
        ];
        for (line, key, message) in cases {
            let text = MINIMAL
                .replace("base_url = \"https://api.mailgun.net\"\n", "")
                .replace("[channels.email]\n", &format!("[channels.email]\n{line}\n"));
            let text = if text.contains("base_url") {
                text
            } else {
                text.replace(
                    "[channels.email]\n",
                    "[channels.email]\nbase_url = \"https://api.mailgun.net\"\n",
                )
            };
            let problems = parse(&text, Path::new("."), &lookup).expect_err(line);
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == *key && p.message == *message),
                "{line}: {problems:?}"
            );
            assert!(
                problems.iter().all(|p| !p.message.contains(KEY)),
                "{line}: {problems:?}"
            );
        }
        // Values that reach a key through the KAFKA_* overrides too.
        let problems = parse(MINIMAL, Path::new("."), &lookup).expect_err("bad reset");
        assert_eq!(
            problems,
            vec![Problem::new(
                "kafka.auto_offset_reset",
                r#"expected "earliest" or "latest", found "${KAFKA_AUTO_OFFSET_RESET}""#
            )]
        );
        let level = format!("[log]\nlevel = \"${{LEVEL}}=x=y\"\n{MINIMAL}");
        let problems = parse(&level, Path::new("."), &lookup).expect_err("bad level");
        assert!(
            problems.iter().all(|p| !p.message.contains("loud")),
            "{problems:?}"
        );
    }

    /// Credentials are checked as the header values they become; the
    /// problem names the key and the variable, never the value.
    #[test]
    fn credentials_are_checked_at_load_without_showing_them() {
        // (CR and LF are refused earlier, by interpolation.)
        const ESC: &str = "key-0123456789\u{1b}";
        let lookup = |name: &str| {
            Some(match name {
                "GOOD" => "key-0123456789abcdef".to_string(),
                "ESC" => ESC.to_string(),
                "TAB" => "key-01234\t56789".to_string(),
                "SHORT" => "k3y".to_string(),
                "EMPTY" => String::new(),
                "SPACE" => " key-0123456789".to_string(),
                "UNICODE" => "key-0123456789é".to_string(),
                "COLON" => "user:name".to_string(),
                _ => return None,
            })
        };
        let auth = |a: &str| {
            MINIMAL.replace(
                r#"auth = { type = "basic", username = "api", password = "${MAILGUN_API_KEY}" }"#,
                &format!("auth = {a}"),
            )
        };
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (r#"{ type = "bearer", token = "${GOOD}" }"#, None),
            (r#"{ type = "basic", username = "api", password = "${GOOD}" }"#, None),
            (r#"{ type = "header", name = "X-Api-Key", value = "${GOOD}" }"#, None),
            // Non-ASCII is fine in a password: it is base64-encoded.
            (r#"{ type = "basic", username = "api", password = "${UNICODE}" }"#, None),
            (
                r#"{ type = "bearer", token = "${ESC}" }"#,
                Some(("channels.email.auth.token", "the value of ${ESC} contains a control character (U+001B), which no HTTP header can carry (a line end or tab from the environment file?)")),
            ),
            (
                r#"{ type = "header", name = "X-Api-Key", value = "${TAB}" }"#,
                Some(("channels.email.auth.value", "the value of ${TAB} contains a control character (U+0009), which no HTTP header can carry (a line end or tab from the environment file?)")),
            ),
            (
                r#"{ type = "basic", username = "api", password = "${ESC}" }"#,
                Some(("channels.email.auth.password", "the value of ${ESC} contains a control character (U+001B), which no HTTP header can carry (a line end or tab from the environment file?)")),
            ),
            (
                r#"{ type = "bearer", token = "${UNICODE}" }"#,
                Some(("channels.email.auth.token", "the value of ${UNICODE} holds a character an HTTP header cannot carry (only visible ASCII and spaces)")),
            ),
            (
                r#"{ type = "bearer", token = "${SPACE}" }"#,
                Some(("channels.email.auth.token", "the value of ${SPACE} starts or ends with whitespace (a stray space from the environment file?)")),
            ),
            (
                r#"{ type = "bearer", token = "${SHORT}" }"#,
                Some(("channels.email.auth.token", "the value of ${SHORT} is shorter than 8 characters: too short for a credential, and too short to scrub from logs and plugin output without shredding them")),
            ),
            (
                r#"{ type = "bearer", token = "${EMPTY}" }"#,
                Some(("channels.email.auth.token", "the value of ${EMPTY} is empty")),
            ),
            (
                r#"{ type = "bearer", token = "pre-${SHORT}" }"#,
                Some(("channels.email.auth.token", "the value of ${SHORT} is shorter than 8 characters: too short for a credential, and too short to scrub from logs and plugin output without shredding them")),
            ),
            (
                r#"{ type = "bearer", token = "short" }"#,
                Some(("channels.email.auth.token", "the value is shorter than 8 characters: too short for a credential, and too short to scrub from logs and plugin output without shredding them")),
            ),
            (
                r#"{ type = "basic", username = "${COLON}", password = "${GOOD}" }"#,
                Some(("channels.email.auth.username", "the value of ${COLON} contains `:`, which Basic auth uses to end the username")),
            ),
        ];
        for (a, want) in cases {
            let got = parse(&auth(a), Path::new("."), &lookup);
            match (want, got) {
                (None, Ok(_)) => {}
                (Some((key, message)), Err(problems)) => {
                    assert_eq!(problems, vec![Problem::new(*key, *message)], "{a}");
                    assert!(!format!("{problems:?}").contains("0123456789"), "{a}");
                }
                (want, got) => panic!("{a}: want {want:?}, got {got:?}"),
            }
        }
        // A disabled channel's credentials are never sent: not checked.
        let off = auth(r#"{ type = "bearer", token = "${SHORT}" }"#)
            .replace("[channels.email]", "[channels.email]\nenabled = false");
        assert!(parse(&off, Path::new("."), &lookup).is_ok());
    }

    #[test]
    fn parsed_credentials_become_known_secrets() {
        let lookup =
            |name: &str| (name == "MAILGUN_API_KEY").then(|| "key-registered-by-parse".to_string());
        parse(MINIMAL, Path::new("."), &lookup).expect("valid");
        assert_eq!(
            crate::scrub::known().scrub("echo key-registered-by-parse"),
            "echo [redacted]"
        );
    }
}
