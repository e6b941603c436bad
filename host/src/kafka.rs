//! Kafka clients: the consumer (with rebalance handling) and the producers
//! (dead letters, `publish`). librdkafka is configured here only.
//!
//! Invariants: auto-commit is off and offsets are committed explicitly from
//! the [`OffsetTracker`], so an offset is committed only when every lower
//! offset of its partition is done; on a revoke, the partition's revocation
//! token is cancelled (its events stop before their next send), then what is
//! done is committed synchronously before the partition is let go, and late
//! completions for it are ignored.
//!
//! Rebalances are events the pipeline reacts to: the rebalance callback runs
//! inside the pipeline's `recv` (librdkafka serves it from the consumer
//! queue), does the bookkeeping that must happen before librdkafka moves on
//! (tracker, tokens, commit), and queues a [`Rebalanced`] for the pipeline,
//! which re-applies its pause state to what was assigned. With the default
//! `cooperative-sticky` strategy, a rebalance assigns and revokes only the
//! partitions that move (rdkafka's default handler calls
//! `incremental_assign`/`incremental_unassign` for that protocol), so each
//! list names just those.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::admin::{self, Readiness};
use crate::config::KafkaConfig;
use crate::metrics::{Metrics, PartitionLabels};
use crate::offsets::{OffsetTracker, Partition};

pub type Tracker = Arc<Mutex<OffsetTracker>>;

#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct KafkaSetupError(#[from] rdkafka::error::KafkaError);

/// Lock the tracker; a panic elsewhere while holding it must not stop
/// offset bookkeeping, so poisoning is ignored.
pub fn lock(tracker: &Tracker) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

/// librdkafka's own log lines, as structured `tracing` events.
fn log_librdkafka(level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{log_message}"),
        L::Notice | L::Info => {
            tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
        }
        L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
    }
}

/// How often one and the same client error is logged while it repeats.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// When each distinct client error was last logged, and how often it came
/// since. librdkafka reports "all brokers are down" on every reconnect
/// attempt (every 100 ms while the broker is away); one line per error per
/// 30 s, with the count, is what an operator can read.
#[derive(Debug, Default)]
struct Repeats(HashMap<String, (std::time::Instant, u64)>);

impl Repeats {
    /// `Some(suppressed since the last line)` when `text` should be logged
    /// at `now`.
    fn admit(&mut self, text: &str, now: std::time::Instant, every: Duration) -> Option<u64> {
        // Bounded: distinct error texts are few, but a broker could vary them.
        if self.0.len() > 256 {
            self.0.clear();
        }
        match self.0.get_mut(text) {
            Some((at, n)) if now.duration_since(*at) < every => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let suppressed = *n;
                *at = now;
                *n = 0;
                Some(suppressed)
            }
            None => {
                self.0.insert(text.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

static REPEATS: std::sync::LazyLock<Mutex<Repeats>> =
    std::sync::LazyLock::new(|| Mutex::new(Repeats::default()));

/// Logs a client error, once per 30 s while the same one repeats.
fn log_client_error(error: &rdkafka::error::KafkaError, reason: &str) {
    let text = format!("{error}: {reason}");
    let admitted = REPEATS.lock().unwrap_or_else(|p| p.into_inner()).admit(
        &text,
        std::time::Instant::now(),
        ERROR_LOG_EVERY,
    );
    if let Some(repeated) = admitted {
        tracing::warn!(target: "librdkafka", %error, repeated, "{reason} (repeats are logged every 30 s)");
    }
}

/// Producer callbacks: logging only.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerLogContext;

impl ClientContext for ProducerLogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl rdkafka::producer::ProducerContext for ProducerLogContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub type HostProducer = FutureProducer<ProducerLogContext>;

/// What the host hands the consumer's callbacks.
pub struct HostContext {
    pub tracker: Tracker,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// What one rebalance changed; the lists hold only the partitions that
/// moved (all of them under an eager strategy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

/// Rebalances, queued by the callback for the pipeline's select loop, in
/// the order they happened.
#[derive(Debug, Default)]
pub struct RebalanceEvents {
    queue: Mutex<VecDeque<Rebalanced>>,
    // Stores a permit when nobody waits, so no event is missed between a
    // drain and the next wait.
    arrived: tokio::sync::Notify,
}

impl RebalanceEvents {
    fn push(&self, event: Rebalanced) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(event);
        self.arrived.notify_one();
    }

    /// Every event queued so far, oldest first.
    pub fn drain(&self) -> Vec<Rebalanced> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Resolves when events may have been queued since the last call.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }
}

/// Consumer callbacks: logging, statistics (lag, broker state) and
/// rebalance handling.
pub struct ConsumerCallbacks {
    host: HostContext,
    rebalances: RebalanceEvents,
}

impl ConsumerCallbacks {
    pub fn rebalances(&self) -> &RebalanceEvents {
        &self.rebalances
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| Partition {
            topic: e.topic().to_string(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for ConsumerCallbacks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            admin::set(&self.host.readiness.broker_up, false);
        }
        log_client_error(&error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let up = stats
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.nodeid >= 0);
        admin::set(&self.host.readiness.broker_up, up);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition; lag is -1
                // until the position and end are known.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.host
                    .metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabels {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    })
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions_of(tpl);
                // Lost (the session expired): the partitions already have a new
                // owner and a commit would be refused.
                let lost = consumer.assignment_lost();
                let mut commit = TopicPartitionList::new();
                {
                    let mut tracker = lock(&self.host.tracker);
                    for p in &revoked {
                        let in_flight = tracker.in_flight_on(p);
                        // Cancels the partition's token before anything else:
                        // its events send nothing more from here on.
                        if let Some(offset) = tracker.revoke(p) {
                            let _ = commit.add_partition_offset(
                                &p.topic,
                                p.partition,
                                Offset::Offset(offset),
                            );
                        }
                        let labels = PartitionLabels {
                            topic: p.topic.clone(),
                            partition: p.partition.to_string(),
                        };
                        self.host.metrics.consumer_lag.remove(&labels);
                        self.host.metrics.oldest_unfinished.remove(&labels);
                        tracing::info!(topic = %p.topic, partition = p.partition, in_flight, lost, "partition revoked; events still in flight on it stop before their next send and are redelivered to its next owner");
                    }
                }
                if commit.count() > 0 && !lost {
                    if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                        tracing::warn!(error = %e, "commit on revoke failed; the next owner may redeliver finished events (dedup skips them)");
                    }
                }
                self.rebalances.push(Rebalanced::Revoked(revoked));
            }
            Rebalance::Assign(tpl) => {
                let mut tracker = lock(&self.host.tracker);
                for p in partitions_of(tpl) {
                    // A fresh assignment (ticket, token) before any of its
                    // messages can arrive.
                    tracker.assign(&p);
                    tracing::info!(
                        topic = %p.topic,
                        partition = p.partition,
                        "partition assigned"
                    );
                }
            }
            // librdkafka only hands assignments and revocations to this
            // callback; rdkafka maps anything else here.
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.host
            .readiness
            .assigned_partitions
            .store(assigned, std::sync::atomic::Ordering::Relaxed);
        if let Rebalance::Assign(tpl) = rebalance {
            // Joining a group needs the coordinator: the broker is reachable.
            admin::set(&self.host.readiness.broker_up, true);
            // After the (incremental) assign, so pausing them takes effect.
            self.rebalances
                .push(Rebalanced::Assigned(partitions_of(tpl)));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Whole request or single partitions: a commit sent during a
        // rebalance is refused (illegal generation) and must be sent again,
        // or a partition with no further progress would stay committed behind
        // what is done until its next revoke.
        let failed: Vec<(Partition, i64)> = offsets
            .elements()
            .iter()
            .filter(|e| result.is_err() || e.error().is_err())
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((
                    Partition {
                        topic: e.topic().to_string(),
                        partition: e.partition(),
                    },
                    o,
                )),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            return;
        }
        {
            let mut tracker = lock(&self.host.tracker);
            for (p, offset) in &failed {
                tracker.commit_failed(p, *offset);
            }
        }
        let error = match &result {
            Err(e) => e.to_string(),
            Ok(()) => "refused for some partitions".to_string(),
        };
        tracing::warn!(%error, partitions = failed.len(), "offset commit failed; sent again with the next commit");
    }
}

pub type HostConsumer = StreamConsumer<ConsumerCallbacks>;

fn base_config(kafka: &KafkaConfig, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Warnings and up: connection trouble shows, routine chatter does not.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in &kafka.client {
        if role == Role::Producer && is_consumer_only(k) {
            continue;
        }
        c.set(k, v);
    }
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

/// `kafka.client` is one table for both clients (connection and security
/// settings are shared), but librdkafka warns at every start about a
/// consumer setting given to a producer. These are the consumer-only
/// settings an operator tunes (librdkafka's CONFIGURATION.md, marked `C`).
fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "group.",
        "fetch.",
        "queued.",
        "auto.commit.",
        "offset.store.",
    ];
    const KEYS: &[&str] = &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "partition.assignment.strategy",
        "coordinator.query.interval.ms",
        "max.partition.fetch.bytes",
        "isolation.level",
        "check.crcs",
        "enable.partition.eof",
        "consume.callback.max.messages",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || KEYS.contains(&key)
}

/// The assignment strategy unless `kafka.client` names one.
pub const DEFAULT_ASSIGNMENT_STRATEGY: &str = "cooperative-sticky";

/// The consumer group member, subscribed to the events topic.
pub fn consumer(
    kafka: &KafkaConfig,
    context: HostContext,
) -> Result<HostConsumer, KafkaSetupError> {
    let mut c = base_config(kafka, Role::Consumer);
    let unset = |key: &str| !kafka.client.iter().any(|(k, _)| k == key);
    if unset("statistics.interval.ms") {
        // Lag and broker state for /metrics and readiness, every 5 s.
        c.set("statistics.interval.ms", "5000");
    }
    if unset("queued.max.messages.kbytes") {
        // librdkafka prefetches up to 64 MiB per partition by default. Events
        // are a few hundred bytes and the pipeline works thousands a second,
        // so 8 MiB is still seconds of work and keeps the host's memory small.
        c.set("queued.max.messages.kbytes", "8192");
    }
    if unset("partition.assignment.strategy") {
        // A rebalance then moves only the partitions that change owner; the
        // rest keep working through it instead of all stopping (eager).
        c.set("partition.assignment.strategy", DEFAULT_ASSIGNMENT_STRATEGY);
    }
    if let Some(id) = &kafka.instance_id {
        // Static membership: a restarted member with the same id gets its
        // partitions back without a rebalance, if it returns within
        // session.timeout.ms.
        c.set("group.instance.id", id);
    }
    c.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &kafka.auto_offset_reset)
        .set("enable.partition.eof", "false");
    tracing::info!(
        group_id = %kafka.group_id,
        instance_id = kafka.instance_id.as_deref().unwrap_or(""),
        assignment_strategy = c.get("partition.assignment.strategy").unwrap_or_default(),
        "joining the consumer group"
    );
    let context = ConsumerCallbacks {
        host: context,
        rebalances: RebalanceEvents::default(),
    };
    let consumer: HostConsumer = c.create_with_context(context)?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok(consumer)
}

/// A producer that does not lose or reorder acknowledged records: every
/// in-sync replica acknowledges, and retries cannot duplicate.
pub fn producer(kafka: &KafkaConfig) -> Result<HostProducer, KafkaSetupError> {
    let mut c = base_config(kafka, Role::Producer);
    let unset = |key: &str| !kafka.client.iter().any(|(k, _)| k == key);
    c.set("acks", "all").set("enable.idempotence", "true");
    if unset("message.max.bytes") {
        // Dead letters carry the original payload, which may be large; a
        // broker with a lower limit refuses it, and the dead letter is then
        // written with a reference instead (see `dlq`).
        c.set("message.max.bytes", "10485760");
    }
    // A dead-letter topic that is missing must be an error the operator
    // sees, not a topic silently created with the broker's defaults.
    c.set("allow.auto.create.topics", "false");
    Ok(c.create_with_context(ProducerLogContext)?)
}

/// Commits the given offsets.
pub fn commit(
    consumer: &HostConsumer,
    offsets: &[(Partition, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, mode)
}

/// What the broker says about a topic the host writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicCheck {
    Exists,
    /// The broker answered: there is no such topic.
    Missing,
    /// The broker answered: this client may not see it.
    Denied(String),
    /// No answer (broker unreachable, timeout): nothing is known yet.
    Unknown(String),
}

/// Asks the broker whether `topic` exists and may be used, without creating
/// it (the producer sets `allow.auto.create.topics=false`).
pub fn check_topic(producer: &HostProducer, topic: &str, timeout: Duration) -> TopicCheck {
    use rdkafka::error::RDKafkaErrorCode as C;
    use rdkafka::producer::Producer as _;
    let metadata = match producer.client().fetch_metadata(Some(topic), timeout) {
        Ok(m) => m,
        Err(e) => return TopicCheck::Unknown(e.to_string()),
    };
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return TopicCheck::Missing;
    };
    match t.error().map(C::from) {
        None if t.partitions().is_empty() => TopicCheck::Missing,
        None => TopicCheck::Exists,
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => TopicCheck::Missing,
        Some(code @ (C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed)) => {
            TopicCheck::Denied(code.to_string())
        }
        Some(code) => TopicCheck::Unknown(code.to_string()),
    }
}

/// How long a blocking Kafka call may take before it is reported.
pub const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::{is_consumer_only, Repeats};
    use std::time::{Duration, Instant};

    #[test]
    fn a_repeating_client_error_is_logged_once_per_period_with_its_count() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let every = Duration::from_secs(30);
        let mut r = Repeats::default();
        // (error, at ms, logged with this many suppressed, or not logged)
        let steps: &[(&str, u64, Option<u64>)] = &[
            ("all brokers down", 0, Some(0)),
            ("all brokers down", 100, None),
            ("all brokers down", 200, None),
            // Another error is its own line at once.
            ("broker transport failure", 250, Some(0)),
            ("all brokers down", 29_999, None),
            ("all brokers down", 30_000, Some(3)),
            ("all brokers down", 30_100, None),
            ("broker transport failure", 40_000, Some(0)),
        ];
        for (i, (text, at, want)) in steps.iter().enumerate() {
            assert_eq!(
                r.admit(text, ms(*at), every),
                *want,
                "step {i}: {text} at {at} ms"
            );
        }
    }

    #[test]
    fn the_producer_gets_shared_settings_but_not_consumer_tuning() {
        for shared in [
            "security.protocol",
            "sasl.username",
            "ssl.ca.location",
            "client.id",
            "socket.keepalive.enable",
        ] {
            assert!(!is_consumer_only(shared), "{shared}");
        }
        for consumer in [
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "fetch.wait.max.ms",
            "queued.max.messages.kbytes",
            "group.instance.id",
        ] {
            assert!(is_consumer_only(consumer), "{consumer}");
        }
    }
}
