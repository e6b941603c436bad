//! The shape of config.toml, as serde reads it after interpolation.
//!
//! Every struct denies unknown keys, so a typo is an error naming the key
//! instead of a silently ignored setting. Numbers and booleans also accept
//! strings, because `${VAR:-10}` always interpolates to a string.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub kafka: RawKafka,
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// Replaced by `[ledger]`; kept only to name the new key in the error.
    pub dedup: Option<toml::Value>,
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub plugins: RawPluginRuntime,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    pub scheduler: RawScheduler,
    /// `[[reminders]]`: the reminder policy.
    #[serde(default)]
    pub reminders: Vec<RawReminder>,
    #[serde(default)]
    pub notices: RawNotices,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    pub time_zone: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReminder {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_duration")]
    pub before: Option<std::time::Duration>,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub catch_up: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotices {
    #[serde(default)]
    pub cancelled: Vec<String>,
    #[serde(default)]
    pub rescheduled: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuietHours {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub bootstrap_servers: Option<String>,
    pub topic: Option<String>,
    pub dlq_topic: Option<String>,
    pub group_id: Option<String>,
    pub auto_offset_reset: Option<String>,
    /// librdkafka's `group.instance.id`; empty for none.
    pub instance_id: Option<String>,
    /// librdkafka properties passed through verbatim (security.protocol, sasl.*, ssl.*, ...).
    #[serde(default)]
    pub client: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_in_flight: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_in_flight_per_partition: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub commit_interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub shutdown_grace_seconds: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_event_kib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_channels_per_event: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_duration")]
    pub max_event_age: Option<std::time::Duration>,
    pub unknown_event_types: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// `embedded` (the default) or `postgres`.
    pub backend: Option<String>,
    /// The PostgreSQL URL (`postgres`): `${DATABASE_URL}`.
    pub url: Option<String>,
    /// Most connections the PostgreSQL pool opens.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub pool_size: Option<u64>,
    /// How long a claim outlives its host's last renewal.
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub lease_seconds: Option<f64>,
    /// How long one connection attempt may take.
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub connect_timeout_seconds: Option<f64>,
    /// This host's name on its claims; absent: hostname, pid and a random tag.
    pub owner: Option<String>,
    pub path: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub retention_hours: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub cache_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_attempts: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub initial_backoff_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_backoff_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_retry_after_seconds: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_duration")]
    pub give_up_after: Option<std::time::Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub per_second: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub burst: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub consecutive_failures: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub window: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub window_failures: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub probe_backoff_initial_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub probe_backoff_max_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginRuntime {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_instances: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub memory_limit_mib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub deadline_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub output_limit_kib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub response_body_limit_kib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_file_mib: Option<u64>,
    /// Plugin calls running at once; absent: the worker-thread count.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub max_concurrent_calls: Option<u64>,
    /// Where compiled plugins are kept; absent: `plugin-cache` beside the
    /// ledger file.
    pub cache_dir: Option<String>,
    /// `false` compiles every plugin at every start.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub cache: Option<bool>,
    /// Reload when a plugin file changes (SIGHUP always reloads).
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub watch: Option<bool>,
    #[serde(default)]
    pub caps: RawCaps,
}

/// `[plugins.caps]`: the most one plugin call may hand the host.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaps {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub requests_per_render: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub headers_per_request: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub header_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub url_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub body_kib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub text_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub output_line_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enabled: Option<bool>,
    pub mode: Option<String>,
    pub plugin: Option<String>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Path prefixes requests may go to; empty for any.
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    /// HTTP methods requests may use; empty for the default set.
    #[serde(default)]
    pub allowed_methods: Vec<String>,
    /// An outbound HTTP proxy for this channel; none unless set here.
    pub proxy: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub memory_limit_mib: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub deadline_ms: Option<u64>,
    /// `fresh` (default) or `reuse`.
    pub instances: Option<String>,
    /// With `instances = "reuse"`: idle instances kept.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub reuse_instances: Option<u64>,
    /// With `instances = "reuse"`: calls one instance serves before it is
    /// replaced.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub reuse_calls: Option<u64>,
    /// The plugin file's expected SHA-256 (hex).
    pub sha256: Option<String>,
    pub auth: Option<RawAuth>,
    pub retry: Option<RawRetry>,
    pub rate: Option<RawRate>,
    pub circuit: Option<RawCircuit>,
    pub quiet_hours: Option<RawQuietHours>,
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawAuth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    Header {
        name: String,
        value: String,
    },
    /// An HMAC-SHA256 signature over the timestamp and the body, computed by
    /// the host at each send.
    Hmac {
        secret: String,
        header: Option<String>,
        timestamp_header: Option<String>,
    },
}

/// Deserializers that take a value either natively or as a string.
mod lenient {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        // Tables and arrays land here so the error can say what was found.
        Other(toml::Value),
    }

    impl Scalar {
        fn describe(&self) -> String {
            match self {
                Scalar::Bool(b) => format!("`{b}`"),
                Scalar::Int(i) => format!("`{i}`"),
                Scalar::Float(f) => format!("`{f}`"),
                Scalar::Str(s) => format!("\"{s}\""),
                Scalar::Other(v) => format!("a {}", v.type_str()),
            }
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let Some(s) = Option::<Scalar>::deserialize(d)? else {
            return Ok(None);
        };
        let parsed = match &s {
            Scalar::Int(i) => u64::try_from(*i).ok(),
            Scalar::Str(v) => v.trim().parse().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            D::Error::custom(format!(
                "expected a non-negative integer, found {}",
                s.describe()
            ))
        })
    }

    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let Some(s) = Option::<Scalar>::deserialize(d)? else {
            return Ok(None);
        };
        let parsed = match &s {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::Str(v) => v.trim().parse().ok(),
            _ => None,
        };
        parsed
            .filter(|f: &f64| f.is_finite())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a number, found {}", s.describe())))
    }

    /// A duration as text (`"30m"`, `"2h 30m"`, `"90s"`) or a number of
    /// seconds.
    pub fn opt_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        let Some(s) = Option::<Scalar>::deserialize(d)? else {
            return Ok(None);
        };
        // `${VAR:-}` interpolates to "": no value, as if the key were absent.
        if matches!(&s, Scalar::Str(v) if v.trim().is_empty()) {
            return Ok(None);
        }
        let parsed = match &s {
            Scalar::Int(i) => u64::try_from(*i).ok().map(std::time::Duration::from_secs),
            Scalar::Float(f) if f.is_finite() && *f >= 0.0 => {
                std::time::Duration::try_from_secs_f64(*f).ok()
            }
            Scalar::Str(v) => humantime::parse_duration(v.trim()).ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            D::Error::custom(format!(
                "expected a duration like \"30m\", \"2h\" or \"90s\", found {}",
                s.describe()
            ))
        })
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let Some(s) = Option::<Scalar>::deserialize(d)? else {
            return Ok(None);
        };
        let parsed = match &s {
            Scalar::Bool(b) => Some(*b),
            Scalar::Str(v) => match v.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            D::Error::custom(format!("expected true or false, found {}", s.describe()))
        })
    }
}
