//! The dead-letter topic: where an event (or one channel of it) that can
//! never succeed goes, with the reason.
//!
//! Invariants: the record's value is the original payload, byte for byte, and
//! its key the original key; everything the host knows about the failure is
//! in `notify.*` headers (the original headers, e.g. `traceparent`, are kept
//! too). [`DeadLetters::send`] resolves only once the broker acknowledged the
//! record (acks=all, idempotent producer), so the source offset is committed
//! only after the dead letter is safe.

use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::kafka::HostProducer;

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
        }
    }
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
    pub error: rdkafka::error::KafkaError,
}

/// The dead-letter producer.
#[derive(Clone)]
pub struct DeadLetters {
    producer: HostProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: HostProducer, topic: String) -> Self {
        DeadLetters { producer, topic }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, source: &Source<'_>, letter: &DeadLetter) -> Result<(), DlqError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = source.headers {
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
        add("notify.reason", &letter.reason);
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

        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(source.payload)
            .headers(headers);
        if let Some(k) = source.key {
            record = record.key(k);
        }
        // The queue wait is bounded; librdkafka itself retries delivery
        // until message.timeout.ms.
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| DlqError {
                topic: self.topic.clone(),
                error,
            })
    }
}
