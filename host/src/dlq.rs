//! The dead-letter topic: where an event (or one channel of it) that can
//! never succeed goes, with the reason.
//!
//! Invariants: the record's value is the original payload, byte for byte, and
//! its key the original key; everything the host knows about the failure is
//! in `notify.*` headers (the original headers, e.g. `traceparent`, are kept
//! too). [`DeadLetters::send`] resolves only once the broker acknowledged the
//! record (acks=all, idempotent producer), so the source offset is committed
//! only after the dead letter is safe.
//!
//! A write that fails is classified ([`WriteFailure`]): a record too large for
//! the producer or broker is rewritten once with the payload replaced by a
//! reference (source topic, partition, offset, size and SHA-256), since the
//! original stays in the source topic until its retention; a missing topic
//! or a denied write makes the dead-letter topic *unavailable*, which
//! readiness reports (a restart will not fix it, an operator must); anything
//! else is transient. The caller retries all but the first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sha2::{Digest, Sha256};

use crate::kafka::HostProducer;

/// A dead letter's reason header is cut here: a plugin's text is capped at
/// `plugins.caps.text_bytes` already, and the host's own reasons are a line.
pub const MAX_REASON_BYTES: usize = 4096;

/// Why an event or channel was dead-lettered, as a stable word for headers
/// and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The payload breaks the event contract.
    InvalidEvent,
    /// The event asks for a channel this host does not have.
    UnknownChannel,
    /// The plugin rejected the event (can never be sent on this channel).
    Rejected,
    /// The host refused the plugin's request (foreign host, reserved header).
    Refused,
    /// The provider said no, for good.
    Permanent,
    /// Every attempt failed transiently.
    RetriesExhausted,
    /// The plugin kept failing (trap, deadline, memory) on this event.
    PluginFailed,
    /// The host itself failed on this event (a bug: a panic while working
    /// it); the reason carries the panic message.
    HostFailed,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidEvent => "invalid_event",
            ErrorClass::UnknownChannel => "unknown_channel",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Refused => "refused",
            ErrorClass::Permanent => "permanent",
            ErrorClass::RetriesExhausted => "retries_exhausted",
            ErrorClass::PluginFailed => "plugin_failed",
            ErrorClass::HostFailed => "host_failed",
        }
    }

    /// Every class, for metrics that must exist at 0 from the start.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::InvalidEvent,
        ErrorClass::UnknownChannel,
        ErrorClass::Rejected,
        ErrorClass::Refused,
        ErrorClass::Permanent,
        ErrorClass::RetriesExhausted,
        ErrorClass::PluginFailed,
        ErrorClass::HostFailed,
    ];
}

/// Everything the dead-letter record says about the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub class: ErrorClass,
    pub reason: String,
    pub channel: Option<String>,
    pub event_id: Option<String>,
    pub attempts: u32,
    pub provider_status: Option<u16>,
}

/// Where the failed record came from.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: Option<&'a OwnedHeaders>,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter write to {topic} failed: {error}")]
pub struct DlqError {
    pub topic: String,
    pub error: KafkaError,
}

/// What a failed write means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    /// Larger than the producer's or the broker's limit.
    TooLarge,
    /// The topic is missing or the host may not write to it: an operator
    /// must act; readiness fails until a write succeeds.
    Unavailable,
    /// Anything else (broker away, timeouts): retried.
    Transient,
}

impl DlqError {
    pub fn failure(&self) -> WriteFailure {
        classify(&self.error)
    }
}

/// The one place a producer error becomes a [`WriteFailure`].
pub fn classify(error: &KafkaError) -> WriteFailure {
    use RDKafkaErrorCode as C;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return WriteFailure::Transient,
    };
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            WriteFailure::TooLarge
        }
        C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::InvalidTopic
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => WriteFailure::Unavailable,
        _ => WriteFailure::Transient,
    }
}

/// How a dead letter was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// With the original payload and headers.
    Whole,
    /// The whole record was too large: the payload is replaced by a
    /// reference to the source record and its SHA-256.
    PayloadOmitted,
}

/// Whether the dead-letter topic can be written, for readiness: set by a
/// write that failed as [`WriteFailure::Unavailable`], cleared by the next
/// write that succeeds.
#[derive(Debug, Default)]
pub struct DlqHealth {
    unavailable: Mutex<Option<String>>,
    last_logged: Mutex<Option<Instant>>,
}

impl DlqHealth {
    /// Why the topic cannot be written now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_unavailable(&self, reason: String) {
        *self
            .unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    /// A write succeeded; returns whether the topic was unavailable before.
    pub fn set_available(&self) -> bool {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// Whether a failing write should be logged now: once per `every`
    /// across all events, so a topic that is gone for an hour logs 120
    /// lines, not one per event per retry.
    pub fn should_log(&self, now: Instant, every: Duration) -> bool {
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The dead-letter producer.
#[derive(Clone)]
pub struct DeadLetters {
    producer: HostProducer,
    topic: String,
    health: Arc<DlqHealth>,
}

impl DeadLetters {
    pub fn new(producer: HostProducer, topic: String) -> Self {
        DeadLetters {
            producer,
            topic,
            health: Arc::default(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn health(&self) -> &Arc<DlqHealth> {
        &self.health
    }

    /// Writes one dead letter and waits for the broker's acknowledgement;
    /// a record too large is written again with its payload replaced by a
    /// reference.
    pub async fn send(
        &self,
        source: &Source<'_>,
        letter: &DeadLetter,
    ) -> Result<Written, DlqError> {
        match self.send_as(source, letter, Written::Whole).await {
            Err(e) if e.failure() == WriteFailure::TooLarge => {
                tracing::warn!(dlq_topic = %self.topic, payload_bytes = source.payload.len(), error = %e, "dead letter too large; writing it with the payload replaced by a reference to the source record");
                self.send_as(source, letter, Written::PayloadOmitted).await
            }
            other => other,
        }
    }

    async fn send_as(
        &self,
        source: &Source<'_>,
        letter: &DeadLetter,
        form: Written,
    ) -> Result<Written, DlqError> {
        let mut headers = OwnedHeaders::new();
        // The original headers may be what made the record too large.
        if let (Some(original), Written::Whole) = (source.headers, form) {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut add = |key: &str, value: &str| {
            headers = std::mem::replace(&mut headers, OwnedHeaders::new()).insert(Header {
                key,
                value: Some(value),
            });
        };
        let reason = crate::scrub::cut(letter.reason.clone(), MAX_REASON_BYTES);
        add("notify.reason", &reason);
        add("notify.error_class", letter.class.as_str());
        if let Some(c) = &letter.channel {
            add("notify.channel", c);
        }
        if let Some(e) = &letter.event_id {
            add("notify.event_id", e);
        }
        add("notify.attempts", &letter.attempts.to_string());
        if let Some(s) = letter.provider_status {
            add("notify.provider_status", &s.to_string());
        }
        add("notify.source_topic", source.topic);
        add("notify.source_partition", &source.partition.to_string());
        add("notify.source_offset", &source.offset.to_string());
        add("notify.failed_at", &failed_at);
        add("notify.host_version", env!("CARGO_PKG_VERSION"));
        let reference;
        let payload = match form {
            Written::Whole => source.payload,
            Written::PayloadOmitted => {
                let sha256 = format!("{:x}", Sha256::digest(source.payload));
                add("notify.payload_omitted", "too_large");
                add("notify.payload_bytes", &source.payload.len().to_string());
                add("notify.payload_sha256", &sha256);
                reference = serde_json::json!({
                    "payload_omitted": "the record was too large for the dead-letter topic; the original is in the source topic",
                    "source_topic": source.topic,
                    "source_partition": source.partition,
                    "source_offset": source.offset,
                    "bytes": source.payload.len(),
                    "sha256": sha256,
                })
                .to_string();
                reference.as_bytes()
            }
        };

        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(k) = source.key {
            record = record.key(k);
        }
        // The queue wait is bounded; librdkafka itself retries delivery
        // until message.timeout.ms.
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| form)
            .map_err(|(error, _)| DlqError {
                topic: self.topic.clone(),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_failures_are_classified() {
        use RDKafkaErrorCode as C;
        let cases = [
            (C::MessageSizeTooLarge, WriteFailure::TooLarge),
            (C::MessageBatchTooLarge, WriteFailure::TooLarge),
            (C::UnknownTopicOrPartition, WriteFailure::Unavailable),
            (C::UnknownTopic, WriteFailure::Unavailable),
            (C::TopicAuthorizationFailed, WriteFailure::Unavailable),
            (C::ClusterAuthorizationFailed, WriteFailure::Unavailable),
            (C::MessageTimedOut, WriteFailure::Transient),
            (C::BrokerTransportFailure, WriteFailure::Transient),
            (C::NotLeaderForPartition, WriteFailure::Transient),
            (C::QueueFull, WriteFailure::Transient),
        ];
        for (code, want) in cases {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                want,
                "{code:?}"
            );
        }
        assert_eq!(
            classify(&KafkaError::Canceled),
            WriteFailure::Transient,
            "not a production error"
        );
    }

    #[test]
    fn unavailability_is_logged_once_per_period() {
        let h = DlqHealth::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        assert!(h.should_log(t0, every));
        assert!(!h.should_log(t0 + Duration::from_secs(29), every));
        assert!(h.should_log(t0 + Duration::from_secs(30), every));
        assert!(!h.set_available(), "was not unavailable");
        h.set_unavailable("gone".into());
        assert_eq!(h.unavailable().as_deref(), Some("gone"));
        assert!(h.set_available());
        assert_eq!(h.unavailable(), None);
    }
}
