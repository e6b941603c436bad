//! Prometheus metrics: every metric is defined here, once, with its unit and
//! help text; the pipeline only increments them.
//!
//! Names follow Prometheus conventions: `_total` for counters, base units
//! (seconds) in the name, labels with small, bounded value sets (channel
//! names come from config; outcomes and reasons are fixed words).
//!
//! Invariants: no label value comes from an event (a channel an event asks
//! for that is not configured counts as [`UNKNOWN_CHANNEL`]), so events
//! cannot grow the exposition; and [`Metrics::for_config`] creates every
//! series a configured host can have at 0, so `rate()` and alerts work from
//! the first scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The `channel` label for channels an event asks for but the host does not
/// have (config reserves the name, so no configured channel has it).
pub const UNKNOWN_CHANNEL: &str = "unknown";

/// Every `outcome` of `notify_channel_deliveries_total`.
pub const OUTCOMES: &[&str] = &[
    "delivered",
    "duplicate",
    "disabled",
    "dead_letter",
    "revoked",
    "held",
    "expired",
    "cancelled",
];

/// Every `status_class` of `notify_provider_requests_total`.
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Which plugin a channel runs now (`notify_plugin_info`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginInfoLabels {
    pub channel: String,
    pub plugin: String,
    pub version: String,
    pub contract: String,
    pub sha256: String,
}

/// How a reload ended (`notify_plugin_reloads_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `refused`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

/// `state` of a pooled connection: `idle` or `in_use`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub channel: String,
    /// delivered, duplicate, disabled, dead_letter
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The dead-letter error class (invalid_event, permanent, ...).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub channel: String,
    /// render or classify
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub channel: String,
    /// 2xx, 4xx, 5xx, or `error` when no answer came.
    pub status_class: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    pub events_consumed: Counter,
    /// Events of a type the host does not handle, skipped by configuration.
    pub events_skipped: Counter,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<ChannelLabels, Counter>,
    pub dedup_hits: Family<ChannelLabels, Counter>,
    pub dlq_events: Family<ReasonLabels, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub in_flight: Gauge,
    pub provider_requests: Family<ProviderLabels, Counter>,
    pub provider_latency: Family<ChannelLabels, Histogram>,
    pub plugin_call: Family<PluginCallLabels, Histogram>,
    pub offset_commits: Counter,
    /// Panics caught in event work (each is a host bug; the event is
    /// dead-lettered as `host_failed`).
    pub panics: Counter,
    // Rebalances and outages (see `pipeline`): how long the oldest
    // unfinished event of each assigned partition has been in flight.
    pub oldest_unfinished: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    // Channel health (see `health`).
    pub circuit_state: Family<ChannelLabels, Gauge>,
    pub circuit_opens: Family<ChannelLabels, Counter>,
    pub waiting: Family<ChannelLabels, Gauge>,
    // The ledger (see `ledger`): its size, and how long a final record
    // takes to be durable (the wait before an offset can be committed).
    pub ledger_records: Gauge,
    pub ledger_file_bytes: Gauge,
    pub ledger_write: Histogram,
    // The shared ledger (`ledger.backend = "postgres"`): claims and the
    // connection pool.
    pub ledger_claim: Histogram,
    pub claim_conflicts: Family<ChannelLabels, Counter>,
    pub ledger_pool_connections: Family<PoolStateLabels, Gauge>,
    pub ledger_pool_max: Gauge,
    // Reminders (see `reminders`).
    pub reminders_scheduled: Gauge,
    pub reminders_fired: Family<ChannelLabels, Counter>,
    pub reminders_cancelled: Family<ChannelLabels, Counter>,
    pub reminders_expired: Family<ChannelLabels, Counter>,
    pub reminder_lateness: Histogram,
    // Plugins (see `plugin`, `reload`).
    pub plugin_info: Family<PluginInfoLabels, Gauge>,
    pub plugin_reloads: Family<ReloadLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Provider calls take 50 ms to seconds: 5 ms .. ~20 s in 12 doublings.
fn provider_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Plugin calls take tens of microseconds to the deadline: 10 µs .. ~0.7 s.
fn plugin_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 3.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Sets `notify_plugin_info` for the channels now running: each
    /// channel's earlier series goes, so one series per channel says 1.
    pub fn set_plugins(&self, plugins: impl IntoIterator<Item = PluginInfoLabels>) {
        self.plugin_info.clear();
        for labels in plugins {
            self.plugin_info.get_or_create(&labels).set(1);
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            events_consumed: Counter::default(),
            events_skipped: Counter::default(),
            deliveries: Family::default(),
            retries: Family::default(),
            dedup_hits: Family::default(),
            dlq_events: Family::default(),
            consumer_lag: Family::default(),
            in_flight: Gauge::default(),
            provider_requests: Family::default(),
            provider_latency: Family::new_with_constructor(provider_buckets),
            plugin_call: Family::new_with_constructor(plugin_buckets),
            offset_commits: Counter::default(),
            panics: Counter::default(),
            oldest_unfinished: Family::default(),
            circuit_state: Family::default(),
            circuit_opens: Family::default(),
            waiting: Family::default(),
            ledger_records: Gauge::default(),
            ledger_file_bytes: Gauge::default(),
            // A group-committed fsync, or a shared database's queue under
            // load: 0.1 ms .. ~6.6 s (the shared ledger's p99 passed 0.4 s
            // with three hosts on two cores).
            ledger_write: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            // One round trip to the database, queueing for a pooled
            // connection included: 0.1 ms .. ~6.6 s.
            ledger_claim: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            claim_conflicts: Family::default(),
            ledger_pool_connections: Family::default(),
            ledger_pool_max: Gauge::default(),
            reminders_scheduled: Gauge::default(),
            reminders_fired: Family::default(),
            reminders_cancelled: Family::default(),
            reminders_expired: Family::default(),
            // Fired minus due: 1 ms .. ~70 min in 17 quadruplings-ish.
            reminder_lateness: Histogram::new(exponential_buckets(0.001, 2.0, 23)),
            plugin_info: Family::default(),
            plugin_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "notify_events_consumed",
            "Events read from the events topic",
            m.events_consumed.clone(),
        );
        registry.register(
            "notify_events_skipped",
            "Events of an unknown type skipped (pipeline.unknown_event_types = \"skip\")",
            m.events_skipped.clone(),
        );
        registry.register(
            "notify_channel_deliveries",
            "Channel sends finished, by channel and outcome (delivered, duplicate, disabled, dead_letter)",
            m.deliveries.clone(),
        );
        registry.register(
            "notify_channel_retries",
            "Channel sends retried after a transient failure",
            m.retries.clone(),
        );
        registry.register(
            "notify_dedup_hits",
            "Channel sends skipped because they were already delivered",
            m.dedup_hits.clone(),
        );
        registry.register(
            "notify_dlq_events",
            "Records written to the dead-letter topic, by reason",
            m.dlq_events.clone(),
        );
        registry.register(
            "notify_consumer_lag",
            "Messages between the committed position and the end of the partition",
            m.consumer_lag.clone(),
        );
        registry.register(
            "notify_ledger_records",
            "Deliveries on record in the ledger (updated at each retention pass)",
            m.ledger_records.clone(),
        );
        registry.register(
            "notify_ledger_file_bytes",
            "Size of the ledger file (updated at each retention pass)",
            m.ledger_file_bytes.clone(),
        );
        registry.register(
            "notify_ledger_write_seconds",
            "Time for a final delivery record to be durable",
            m.ledger_write.clone(),
        );
        registry.register(
            "notify_ledger_claim_seconds",
            "Time to claim a delivery before working it (shared ledger; embedded: no round trip)",
            m.ledger_claim.clone(),
        );
        registry.register(
            "notify_ledger_claim_conflicts",
            "Deliveries met while another live host held their claim (a rebalance mid-send), by channel",
            m.claim_conflicts.clone(),
        );
        registry.register(
            "notify_ledger_pool_connections",
            "Connections of the shared ledger's pool, by state (idle, in_use)",
            m.ledger_pool_connections.clone(),
        );
        registry.register(
            "notify_ledger_pool_max_connections",
            "The most connections the shared ledger's pool opens (ledger.pool_size)",
            m.ledger_pool_max.clone(),
        );
        registry.register(
            "notify_reminders_scheduled",
            "Reminders not yet finished (scheduled or being sent)",
            m.reminders_scheduled.clone(),
        );
        registry.register(
            "notify_reminders_fired",
            "Reminders whose due time came and that were sent (or tried), by channel",
            m.reminders_fired.clone(),
        );
        registry.register(
            "notify_reminders_cancelled",
            "Reminders cancelled before they fired (appointment cancelled or moved), by channel",
            m.reminders_cancelled.clone(),
        );
        registry.register(
            "notify_reminders_expired",
            "Reminders not sent because they were past due on arrival or past the appointment, by channel",
            m.reminders_expired.clone(),
        );
        registry.register_with_unit(
            "notify_reminder_lateness",
            "How late a reminder fired: fired minus due",
            Unit::Seconds,
            m.reminder_lateness.clone(),
        );
        registry.register(
            "notify_plugin_info",
            "The plugin each channel runs now (1), by channel, plugin name, version, contract version and the file's SHA-256",
            m.plugin_info.clone(),
        );
        registry.register(
            "notify_plugin_reloads",
            "Reloads of config.toml and the plugins (SIGHUP or a changed plugin file), by result: applied or refused",
            m.plugin_reloads.clone(),
        );
        registry.register(
            "notify_in_flight",
            "Events being worked on",
            m.in_flight.clone(),
        );
        registry.register(
            "notify_provider_requests",
            "Provider HTTP requests, by channel and status class",
            m.provider_requests.clone(),
        );
        registry.register_with_unit(
            "notify_provider_request_duration",
            "Provider HTTP request latency, send to last body byte",
            Unit::Seconds,
            m.provider_latency.clone(),
        );
        registry.register_with_unit(
            "notify_plugin_call_duration",
            "Plugin call time in a fresh sandboxed instance, by channel and call",
            Unit::Seconds,
            m.plugin_call.clone(),
        );
        registry.register(
            "notify_offset_commits",
            "Offset commits sent to Kafka",
            m.offset_commits.clone(),
        );
        registry.register(
            "notify_host_panics",
            "Panics caught while working an event (a host bug: each event was dead-lettered as host_failed)",
            m.panics.clone(),
        );
        registry.register(
            "notify_channel_circuit_state",
            "Channel circuit: 0 closed (sending), 1 half-open (probing), 2 open (provider failing, sends held)",
            m.circuit_state.clone(),
        );
        registry.register(
            "notify_channel_circuit_opens",
            "Times a channel's circuit opened",
            m.circuit_opens.clone(),
        );
        registry.register(
            "notify_channel_waiting",
            "Sends waiting for their channel (circuit open, probing, throttled or ramping up)",
            m.waiting.clone(),
        );
        registry.register_with_unit(
            "notify_oldest_unfinished",
            "Age of the oldest event still in flight on each assigned partition (0 when none is; absent once revoked), updated at every commit",
            Unit::Seconds,
            m.oldest_unfinished.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric (what Prometheus
    /// asks for first).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for clients that do not
    /// ask for OpenMetrics (curl, promtool, older scrapers).
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }

    /// The metrics with every series a host with these channels can have
    /// created at 0: every channel's outcomes, retries, dedup hits, provider
    /// status classes and latency, every dead-letter reason, and the
    /// unknown-channel series.
    pub fn for_config<'a>(channels: impl IntoIterator<Item = &'a str>) -> Self {
        let m = Metrics::new();
        for class in crate::dlq::ErrorClass::ALL {
            let _ = m.dlq_events.get_or_create(&ReasonLabels {
                reason: class.as_str().to_string(),
            });
        }
        let _ = m.deliveries.get_or_create(&OutcomeLabels {
            channel: UNKNOWN_CHANNEL.to_string(),
            outcome: "dead_letter".to_string(),
        });
        for channel in channels {
            for outcome in OUTCOMES {
                let _ = m.deliveries.get_or_create(&OutcomeLabels {
                    channel: channel.to_string(),
                    outcome: outcome.to_string(),
                });
            }
            for class in STATUS_CLASSES {
                let _ = m.provider_requests.get_or_create(&ProviderLabels {
                    channel: channel.to_string(),
                    status_class: class.to_string(),
                });
            }
            let labels = Metrics::channel(channel);
            let _ = m.reminders_fired.get_or_create(&labels);
            let _ = m.reminders_cancelled.get_or_create(&labels);
            let _ = m.reminders_expired.get_or_create(&labels);
            let _ = m.retries.get_or_create(&labels);
            let _ = m.dedup_hits.get_or_create(&labels);
            let _ = m.claim_conflicts.get_or_create(&labels);
            let _ = m.provider_latency.get_or_create(&labels);
            for call in ["render", "classify"] {
                let _ = m.plugin_call.get_or_create(&PluginCallLabels {
                    channel: channel.to_string(),
                    call: call.to_string(),
                });
            }
        }
        m
    }

    /// The shared ledger's pool, as now.
    pub fn set_pool(&self, pool: crate::ledger::PoolUse) {
        let idle = i64::from(pool.idle);
        self.ledger_pool_connections
            .get_or_create(&PoolStateLabels { state: "idle" })
            .set(idle);
        self.ledger_pool_connections
            .get_or_create(&PoolStateLabels { state: "in_use" })
            .set(i64::from(pool.size) - idle);
        self.ledger_pool_max.set(i64::from(pool.max));
    }

    pub fn channel(channel: &str) -> ChannelLabels {
        ChannelLabels {
            channel: channel.to_string(),
        }
    }
}

/// The two formats differ in three ways that matter here: OpenMetrics names
/// a counter family without `_total` in HELP/TYPE, has `# UNIT` lines, and
/// ends with `# EOF`. prometheus-client only writes OpenMetrics.
fn openmetrics_to_prometheus(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let counters: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in lines {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(&line.replace(" unknown", " untyped")),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_host_exports_every_series_at_zero() {
        let text = Metrics::for_config(["email", "sms"]).encode_prometheus();
        for series in [
            "notify_channel_deliveries_total{channel=\"email\",outcome=\"delivered\"} 0",
            "notify_channel_deliveries_total{channel=\"sms\",outcome=\"dead_letter\"} 0",
            "notify_channel_deliveries_total{channel=\"unknown\",outcome=\"dead_letter\"} 0",
            "notify_dlq_events_total{reason=\"invalid_event\"} 0",
            "notify_dlq_events_total{reason=\"host_failed\"} 0",
            "notify_dedup_hits_total{channel=\"sms\"} 0",
            "notify_channel_retries_total{channel=\"email\"} 0",
            "notify_provider_requests_total{channel=\"email\",status_class=\"5xx\"} 0",
            "notify_provider_requests_total{channel=\"sms\",status_class=\"error\"} 0",
            "notify_host_panics_total 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn exposition_names_follow_conventions() {
        let m = Metrics::new();
        m.events_consumed.inc();
        m.deliveries
            .get_or_create(&OutcomeLabels {
                channel: "email".into(),
                outcome: "delivered".into(),
            })
            .inc();
        m.provider_latency
            .get_or_create(&Metrics::channel("email"))
            .observe(0.05);
        let text = m.encode();
        let classic = m.encode_prometheus();
        assert!(
            classic.contains(
                "# TYPE notify_events_consumed_total counter\nnotify_events_consumed_total 1"
            ),
            "{classic}"
        );
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        for name in [
            "notify_events_consumed_total 1",
            "notify_channel_deliveries_total{channel=\"email\",outcome=\"delivered\"} 1",
            "notify_provider_request_duration_seconds_bucket",
            "# UNIT notify_provider_request_duration_seconds seconds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
