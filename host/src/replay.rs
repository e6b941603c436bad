//! Sending again what the host kept: dead letters re-published to the
//! source topic (`notify-host dlq replay`), and held deliveries released
//! once their channel is on (`notify-host deliveries release`).
//!
//! Invariants:
//! - A re-published record is the original event byte for byte, with its
//!   key and its headers, minus every header in the host's own `notify.`
//!   namespace (failure details, earlier replay or release markers), plus
//!   exactly one `notify.*` header saying why it came again
//!   ([`REPLAY_OF_HEADER`] or [`RELEASE_OF_HEADER`]). The ledger then makes
//!   sure only what was not delivered goes out ([`crate::ledger::admit`]).
//! - Reading the dead-letter topic never touches a consumer group's offsets:
//!   partitions are assigned by hand, nothing is committed, and the read
//!   stops at the high watermarks fetched when it started, so it always ends.
//! - Records are handed to the producer in the order they were read (one
//!   partition's order is kept by the idempotent producer), with a bounded
//!   number awaiting their acknowledgement.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::config::KafkaConfig;
use crate::kafka::HostProducer;
use crate::ledger::{Ledger, LedgerError, Record, SourceRef, RELEASE_OF_HEADER, REPLAY_OF_HEADER};

/// Held deliveries read from the ledger per page: the ledger's own page cap.
pub const RELEASE_PAGE: usize = crate::ledger::MAX_PAGE;

/// Records awaiting the broker's acknowledgement at once. Enough to keep a
/// remote broker busy (each ack is a round trip), small enough that a
/// broker going away mid-run leaves few records in doubt; either way a
/// second run is safe (the ledger skips what was delivered).
pub const MAX_IN_FLIGHT: usize = 64;

/// The host's own header namespace: what it adds to dead letters and
/// re-published events. None of it belongs to the original event.
pub const HOST_HEADER_PREFIX: &str = "notify.";

/// What a release did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReleaseReport {
    pub channel: String,
    /// Held deliveries found.
    pub held: usize,
    /// Events re-published to their source topic (0 on a dry run). Fewer
    /// than `held` when one event had several held deliveries: it is
    /// published once.
    pub republished: usize,
    /// Held deliveries whose event could not be re-published: it is not on
    /// record (or cannot be decoded). They stay held; the host logs each.
    pub skipped: usize,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot re-publish to {topic}: {reason}")]
    Publish { topic: String, reason: String },
    #[error("kafka client: {0}")]
    Client(String),
    #[error(
        "cannot reach the broker at {bootstrap} for topic {topic} within {timeout:?}: {reason}"
    )]
    Unreachable {
        bootstrap: String,
        topic: String,
        timeout: Duration,
        reason: String,
    },
    #[error("topic {topic} does not exist")]
    NoTopic { topic: String },
    #[error("cannot read {topic}: {reason}")]
    Read { topic: String, reason: String },
    #[error("reading {topic} stalled: nothing arrived for {timeout:?} with partitions {partitions:?} not read to their end{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Stalled {
        topic: String,
        timeout: Duration,
        partitions: Vec<i32>,
        last_error: Option<String>,
    },
}

/// A record's headers in order; a Kafka header value may be null.
pub type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// One Kafka record as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub at: SourceRef,
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HeaderList,
}

impl RawRecord {
    fn of<M: Message>(m: &M) -> RawRecord {
        RawRecord {
            at: SourceRef {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            },
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(DateTime::<Utc>::from_timestamp_millis),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The last header named `name`, as text (the host writes UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// `topic/partition/offset`, the form of [`REPLAY_OF_HEADER`] (topic names
/// hold no `/`, so it parses back).
pub fn coordinates(r: &SourceRef) -> String {
    format!("{}/{}/{}", r.topic, r.partition, r.offset)
}

/// A record of the dead-letter topic, read through the `notify.*` headers
/// the host wrote on it (see [`crate::dlq`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub record: RawRecord,
}

impl DeadLetterRecord {
    pub fn at(&self) -> &SourceRef {
        &self.record.at
    }

    /// When it failed: `notify.failed_at`, else the record's timestamp.
    pub fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.record
            .header("notify.failed_at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(self.record.timestamp)
    }

    pub fn error_class(&self) -> Option<&str> {
        self.record.header("notify.error_class")
    }

    pub fn channel(&self) -> Option<&str> {
        self.record.header("notify.channel")
    }

    pub fn reason(&self) -> Option<&str> {
        self.record.header("notify.reason")
    }

    pub fn attempts(&self) -> Option<u32> {
        self.record
            .header("notify.attempts")
            .and_then(|a| a.parse().ok())
    }

    pub fn provider_status(&self) -> Option<u16> {
        self.record
            .header("notify.provider_status")
            .and_then(|a| a.parse().ok())
    }

    /// The event id: the header, else the payload's `event_id` (the header
    /// is missing when the event was dead-lettered before it was read).
    pub fn event_id(&self) -> Option<String> {
        if let Some(id) = self.record.header("notify.event_id") {
            return Some(id.to_string());
        }
        if self.payload_omitted() {
            return None;
        }
        let payload = self.record.payload.as_deref()?;
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        v.get("event_id")?.as_str().map(str::to_string)
    }

    /// Where the failed event was read.
    pub fn source(&self) -> Option<SourceRef> {
        Some(SourceRef {
            topic: self.record.header("notify.source_topic")?.to_string(),
            partition: self
                .record
                .header("notify.source_partition")?
                .parse()
                .ok()?,
            offset: self.record.header("notify.source_offset")?.parse().ok()?,
        })
    }

    /// The record was too large for the dead-letter topic: its value is a
    /// reference to the source record, not the event.
    pub fn payload_omitted(&self) -> bool {
        self.record.header("notify.payload_omitted").is_some()
    }

    /// The dead letter of an event that was itself a replay.
    pub fn replay_of(&self) -> Option<&str> {
        self.record.header(REPLAY_OF_HEADER)
    }
}

/// A point in time given on the command line: RFC 3339, or a duration ago
/// (`90m`, `2h`, `7d`, `1h 30m`).
pub fn parse_when(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| format!("`{s}`: too far back")),
        Err(_) => Err(format!(
            "`{s}`: neither an RFC 3339 time (2026-02-13T17:00:00Z) nor a duration ago (2h, 30m, 7d)"
        )),
    }
}

/// Which dead letters a command works on; every filter optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqFilter {
    /// Failed at or after.
    pub since: Option<DateTime<Utc>>,
    /// Failed before.
    pub until: Option<DateTime<Utc>>,
    pub channel: Option<String>,
    pub class: Option<String>,
    pub event_id: Option<String>,
}

impl DlqFilter {
    pub fn matches(&self, letter: &DeadLetterRecord) -> bool {
        let at = letter.failed_at();
        // A letter with no time at all cannot be placed: a time filter
        // leaves it out rather than guess.
        let in_time = (self.since.is_none() && self.until.is_none())
            || at.is_some_and(|t| {
                self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
            });
        in_time
            && self
                .channel
                .as_deref()
                .is_none_or(|c| letter.channel() == Some(c))
            && self
                .class
                .as_deref()
                .is_none_or(|c| letter.error_class() == Some(c))
            && self
                .event_id
                .as_deref()
                .is_none_or(|e| letter.event_id().as_deref() == Some(e))
    }
}

/// The original headers for a re-published record: every header outside
/// the host's `notify.` namespace, in order, then `marker`.
pub fn republished_headers(
    original: &[(String, Option<Vec<u8>>)],
    marker: (&str, &str),
) -> HeaderList {
    original
        .iter()
        .filter(|(k, _)| !k.starts_with(HOST_HEADER_PREFIX))
        .cloned()
        .chain(std::iter::once((
            marker.0.to_string(),
            Some(marker.1.as_bytes().to_vec()),
        )))
        .collect()
}

/// One record to publish again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republish {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HeaderList,
}

/// Why a matching dead letter is not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `invalid_event`: the payload breaks the contract and would be
    /// dead-lettered again. Replayed only with `--class invalid_event`.
    InvalidEvent,
    /// Another dead letter of the same source record was replayed in this
    /// run (one per failed channel): the event goes out once, and the
    /// ledger re-tries each of its dead-lettered channels.
    Duplicate { of: String },
    /// The value is a reference, and the original could not be read from
    /// the source topic (gone with its retention, or it no longer matches).
    PayloadOmitted {
        source: Option<SourceRef>,
        why: String,
    },
    /// The record has no value at all.
    NoPayload,
}

impl Skip {
    /// A stable word for the summary.
    pub fn word(&self) -> &'static str {
        match self {
            Skip::InvalidEvent => "invalid_event",
            Skip::Duplicate { .. } => "duplicate",
            Skip::PayloadOmitted { .. } => "payload_omitted",
            Skip::NoPayload => "no_payload",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Skip::InvalidEvent => {
                "invalid_event: it would fail again (give --class invalid_event to replay it anyway)"
                    .to_string()
            }
            Skip::Duplicate { of } => format!("same source record as {of}, replayed once"),
            Skip::PayloadOmitted { source, why } => format!(
                "payload omitted (too large for the dead-letter topic); the original at {}: {why}",
                source
                    .as_ref()
                    .map(coordinates)
                    .unwrap_or_else(|| "an unknown source".into())
            ),
            Skip::NoPayload => "the dead letter has no value".to_string(),
        }
    }
}

/// What to do with one matching dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Replay(Republish),
    /// The value is a reference: read the original at `source` (it must
    /// hash to `sha256`), then [`from_original`].
    FetchOriginal {
        source: SourceRef,
        sha256: Option<String>,
        replay_of: String,
    },
    Skip(Skip),
}

/// Decides, letter by letter, what a replay does; remembers the source
/// records already planned so each goes out once per run.
#[derive(Debug)]
pub struct Planner {
    default_topic: String,
    replay_invalid: bool,
    seen: HashMap<String, String>,
}

impl Planner {
    /// `default_topic`: where letters without `notify.source_topic` go
    /// (`kafka.topic`). `replay_invalid`: whether `invalid_event` letters
    /// are replayed (only when asked for by class).
    pub fn new(default_topic: &str, replay_invalid: bool) -> Planner {
        Planner {
            default_topic: default_topic.to_string(),
            replay_invalid,
            seen: HashMap::new(),
        }
    }

    pub fn plan(&mut self, letter: &DeadLetterRecord) -> Plan {
        let replay_of = coordinates(letter.at());
        if letter.error_class() == Some("invalid_event") && !self.replay_invalid {
            return Plan::Skip(Skip::InvalidEvent);
        }
        let source = letter.source();
        // One failed record leaves one letter per failed channel; without
        // its coordinates, the letter stands for itself.
        let identity = source
            .as_ref()
            .map(coordinates)
            .unwrap_or_else(|| replay_of.clone());
        if let Some(of) = self.seen.get(&identity) {
            return Plan::Skip(Skip::Duplicate { of: of.clone() });
        }
        if letter.payload_omitted() {
            let Some(source) = source else {
                return Plan::Skip(Skip::PayloadOmitted {
                    source: None,
                    why: "the letter does not say where the original is".into(),
                });
            };
            self.seen.insert(identity, replay_of.clone());
            return Plan::FetchOriginal {
                source,
                sha256: letter
                    .record
                    .header("notify.payload_sha256")
                    .map(str::to_string),
                replay_of,
            };
        }
        let Some(payload) = letter.record.payload.clone() else {
            return Plan::Skip(Skip::NoPayload);
        };
        self.seen.insert(identity, replay_of.clone());
        Plan::Replay(Republish {
            topic: source.map_or_else(|| self.default_topic.clone(), |s| s.topic),
            key: letter.record.key.clone(),
            payload,
            headers: republished_headers(&letter.record.headers, (REPLAY_OF_HEADER, &replay_of)),
        })
    }
}

/// The replay of a payload-omitted letter from the original record read
/// from the source topic: that record's key, value and headers.
pub fn from_original(
    original: Option<RawRecord>,
    source: &SourceRef,
    sha256: Option<&str>,
    replay_of: &str,
) -> Result<Republish, Skip> {
    let skip = |why: &str| Skip::PayloadOmitted {
        source: Some(source.clone()),
        why: why.to_string(),
    };
    let original = original.ok_or_else(|| skip("no longer in the source topic"))?;
    if original.at.offset != source.offset {
        return Err(skip("no longer in the source topic"));
    }
    let payload = original.payload.ok_or_else(|| skip("it has no value"))?;
    if let Some(want) = sha256 {
        if format!("{:x}", Sha256::digest(&payload)) != want {
            return Err(skip("it does not match the letter's notify.payload_sha256"));
        }
    }
    Ok(Republish {
        topic: source.topic.clone(),
        key: original.key,
        payload,
        headers: republished_headers(&original.headers, (REPLAY_OF_HEADER, replay_of)),
    })
}

/// A consumer that reads by assignment only: a throwaway group id that is
/// never joined or committed, so no group's offsets are touched.
fn reader(kafka: &KafkaConfig) -> Result<BaseConsumer, ReplayError> {
    let mut c = ClientConfig::new();
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    // Security and connection settings are shared with the service.
    for (k, v) in &kafka.client {
        c.set(k, v);
    }
    c.set(
        "group.id",
        format!("notify-host-dlq-reader-{:016x}", fastrand::u64(..)),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    // The end of each partition, to stop at.
    .set("enable.partition.eof", "true")
    .set("allow.auto.create.topics", "false");
    c.remove("group.instance.id");
    c.create().map_err(|e| ReplayError::Client(e.to_string()))
}

/// The partitions of `topic` and their (low, high) watermarks.
fn watermarks(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, ReplayError> {
    let unreachable = |e: KafkaError| ReplayError::Unreachable {
        bootstrap: kafka.bootstrap_servers.clone(),
        topic: topic.to_string(),
        timeout,
        reason: e.to_string(),
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(unreachable)?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| ReplayError::NoTopic {
            topic: topic.to_string(),
        })?;
    if let Some(e) = t.error() {
        return Err(match RDKafkaErrorCode::from(e) {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                ReplayError::NoTopic {
                    topic: topic.to_string(),
                }
            }
            code => ReplayError::Read {
                topic: topic.to_string(),
                reason: code.to_string(),
            },
        });
    }
    if t.partitions().is_empty() {
        return Err(ReplayError::NoTopic {
            topic: topic.to_string(),
        });
    }
    let mut out = Vec::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(unreachable)?;
        out.push((p.id(), low, high));
    }
    out.sort_unstable();
    Ok(out)
}

/// What a read of the dead-letter topic saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records read (matching or not).
    pub read: usize,
}

/// Reads `topic` from the beginning of every partition to its high
/// watermark as it was when the read started, handing each record to
/// `each` in partition order (partitions interleave), until `each` breaks.
/// `timeout` bounds every broker call and any wait with nothing arriving.
pub fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(DeadLetterRecord) -> ControlFlow<()>,
) -> Result<ReadStats, ReplayError> {
    let consumer = reader(kafka)?;
    let marks = watermarks(&consumer, kafka, topic, timeout)?;
    // partition -> high watermark, for those with anything to read.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &(partition, low, high) in &marks {
        if high > low {
            remaining.insert(partition, high);
            tpl.add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(|e| ReplayError::Client(e.to_string()))?;
        }
    }
    let mut stats = ReadStats::default();
    if remaining.is_empty() {
        return Ok(stats);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| ReplayError::Client(e.to_string()))?;
    let mut last_progress = Instant::now();
    let mut last_error: Option<String> = None;
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            // The consumer reached the partition's end as the broker knew it
            // then, which is at or past the high watermark fetched above.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
                last_progress = Instant::now();
            }
            Some(Err(e)) => {
                if let Some(code) = e.rdkafka_error_code() {
                    if matches!(
                        code,
                        RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::GroupAuthorizationFailed
                            | RDKafkaErrorCode::UnknownTopicOrPartition
                    ) {
                        return Err(ReplayError::Read {
                            topic: topic.to_string(),
                            reason: e.to_string(),
                        });
                    }
                }
                // Anything else (a broker away for a moment) librdkafka
                // retries; the stall timeout below reports it if it lasts.
                last_error = Some(e.to_string());
            }
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let partition = m.partition();
                let Some(&high) = remaining.get(&partition) else {
                    continue;
                };
                // Written after the read started: not part of this read.
                if m.offset() >= high {
                    remaining.remove(&partition);
                    continue;
                }
                stats.read += 1;
                let record = DeadLetterRecord {
                    record: RawRecord::of(&m),
                };
                if m.offset() + 1 >= high {
                    remaining.remove(&partition);
                }
                if each(record).is_break() {
                    return Ok(stats);
                }
            }
        }
        if !remaining.is_empty() && last_progress.elapsed() >= timeout {
            let mut partitions: Vec<i32> = remaining.keys().copied().collect();
            partitions.sort_unstable();
            return Err(ReplayError::Stalled {
                topic: topic.to_string(),
                timeout,
                partitions,
                last_error,
            });
        }
    }
    Ok(stats)
}

/// Reads the one record at `at`; `None` when it is no longer there (its
/// retention passed, or it was compacted away).
pub fn read_record(
    kafka: &KafkaConfig,
    at: &SourceRef,
    timeout: Duration,
) -> Result<Option<RawRecord>, ReplayError> {
    let consumer = reader(kafka)?;
    let marks = watermarks(&consumer, kafka, &at.topic, timeout)?;
    let Some(&(_, low, high)) = marks.iter().find(|(p, _, _)| *p == at.partition) else {
        return Ok(None);
    };
    if at.offset < low || at.offset >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&at.topic, at.partition, Offset::Offset(at.offset))
        .map_err(|e| ReplayError::Client(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| ReplayError::Client(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() >= at.offset => {
                return Ok((m.offset() == at.offset).then(|| RawRecord::of(&m)));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(e)) => last_error = Some(e.to_string()),
            _ => {}
        }
    }
    Err(ReplayError::Stalled {
        topic: at.topic.clone(),
        timeout,
        partitions: vec![at.partition],
        last_error,
    })
}

fn owned_headers(headers: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
        acc.insert(Header {
            key: k,
            value: v.as_deref(),
        })
    })
}

/// Publishes records in the order given, with at most [`MAX_IN_FLIGHT`]
/// awaiting their acknowledgement (acks=all: the producer is
/// [`crate::kafka::producer`]).
pub struct Publisher<'a> {
    producer: &'a HostProducer,
    in_flight: VecDeque<(String, DeliveryFuture)>,
    /// Acknowledged so far.
    pub acknowledged: usize,
}

impl<'a> Publisher<'a> {
    pub fn new(producer: &'a HostProducer) -> Publisher<'a> {
        Publisher {
            producer,
            in_flight: VecDeque::new(),
            acknowledged: 0,
        }
    }

    /// Hands `r` to the producer (waiting for room first); its
    /// acknowledgement is awaited later, by this or [`Publisher::finish`].
    pub async fn send(&mut self, r: &Republish) -> Result<(), ReplayError> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic)
                .payload(r.payload.as_slice())
                .headers(owned_headers(&r.headers));
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.in_flight.push_back((r.topic.clone(), f));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: make room by waiting for
                    // the oldest, or briefly when nothing of ours is queued.
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        self.await_oldest().await?;
                    }
                }
                Err((e, _)) => {
                    return Err(ReplayError::Publish {
                        topic: r.topic.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    async fn await_oldest(&mut self) -> Result<(), ReplayError> {
        let Some((topic, f)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match f.await {
            Ok(Ok(_)) => {
                self.acknowledged += 1;
                Ok(())
            }
            Ok(Err((e, _))) => Err(ReplayError::Publish {
                topic,
                reason: e.to_string(),
            }),
            Err(_) => Err(ReplayError::Publish {
                topic,
                reason: "the producer went away before acknowledging".into(),
            }),
        }
    }

    /// Awaits every acknowledgement still outstanding; the first failure
    /// is returned once all are in.
    pub async fn finish(&mut self) -> Result<(), ReplayError> {
        let mut first = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.await_oldest().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// The record a release publishes for a held delivery: the event as it
/// arrived, plus `notify.release_of: CHANNEL`.
pub fn release_message(record: &Record, channel: &str) -> Result<Republish, String> {
    let held = record.held.as_ref().ok_or("its event is not on record")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = match &held.key_b64 {
        Some(k) => Some(b64.decode(k).map_err(|e| format!("its key: {e}"))?),
        None => None,
    };
    let headers = held
        .headers
        .iter()
        .map(|(k, v)| {
            b64.decode(v)
                .map(|v| (k.clone(), Some(v)))
                .map_err(|e| format!("its header {k}: {e}"))
        })
        .collect::<Result<HeaderList, String>>()?;
    Ok(Republish {
        topic: held.topic.clone(),
        key,
        payload: held.payload.clone().into_bytes(),
        headers: republished_headers(&headers, (RELEASE_OF_HEADER, channel)),
    })
}

/// Re-publishes the event of every delivery held on `channel` to its source
/// topic, with `notify.release_of: CHANNEL`. The caller has checked that the
/// channel is on. An event is published once even with several deliveries
/// held on the channel. Safe to run twice: the held deliveries stay `held`
/// until the host works the re-published event, and the ledger sends each
/// once. A publish failure stops the release with an error naming the
/// topic; what was published by then stays published.
pub async fn release_held(
    ledger: &Ledger,
    producer: &HostProducer,
    channel: &str,
    dry_run: bool,
) -> Result<ReleaseReport, ReplayError> {
    let mut report = ReleaseReport {
        channel: channel.to_string(),
        dry_run,
        ..ReleaseReport::default()
    };
    let mut published_events: HashSet<String> = HashSet::new();
    let mut publisher = Publisher::new(producer);
    let mut after = None;
    loop {
        let page = ledger.held(channel, after, RELEASE_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.delivery.id);
        report.held += page.len();
        for record in &page {
            if published_events.contains(&record.delivery.event_id) {
                continue;
            }
            match release_message(record, channel) {
                // A dry run checks each event as a release would, so its
                // `skipped` is what the release would skip.
                Ok(_) if dry_run => {}
                Ok(message) => {
                    if let Err(e) = publisher.send(&message).await {
                        // Whatever was handed over is awaited, so the
                        // error is the only thing left in doubt.
                        let _ = publisher.finish().await;
                        return Err(e);
                    }
                }
                Err(why) => {
                    report.skipped += 1;
                    tracing::warn!(event_id = %record.delivery.event_id, channel, id = record.delivery.id, "held delivery cannot be released: {why}; it stays held");
                    continue;
                }
            }
            published_events.insert(record.delivery.event_id.clone());
        }
        // Until a page comes back empty: a short page need not be the last.
    }
    publisher.finish().await?;
    report.republished = publisher.acknowledged;
    tracing::info!(
        channel,
        held = report.held,
        republished = report.republished,
        skipped = report.skipped,
        dry_run,
        "held deliveries released"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Delivery, DeliveryKey, HeldMessage, Purpose, Recipient};

    fn h(k: &str, v: &str) -> (String, Option<Vec<u8>>) {
        (k.to_string(), Some(v.as_bytes().to_vec()))
    }

    fn letter(headers: &[(&str, &str)], payload: Option<&str>, offset: i64) -> DeadLetterRecord {
        DeadLetterRecord {
            record: RawRecord {
                at: SourceRef {
                    topic: "events.dlq".into(),
                    partition: 0,
                    offset,
                },
                timestamp: None,
                key: Some(b"appt-1".to_vec()),
                payload: payload.map(|p| p.as_bytes().to_vec()),
                headers: headers.iter().map(|(k, v)| h(k, v)).collect(),
            },
        }
    }

    fn sms_letter(offset: i64, source_offset: &str) -> DeadLetterRecord {
        letter(
            &[
                ("traceparent", "00-abc-def-01"),
                ("notify.reason", "Twilio 21211"),
                ("notify.error_class", "permanent"),
                ("notify.channel", "sms"),
                ("notify.event_id", "e1"),
                ("notify.attempts", "1"),
                ("notify.provider_status", "400"),
                ("notify.source_topic", "events"),
                ("notify.source_partition", "2"),
                ("notify.source_offset", source_offset),
                ("notify.failed_at", "2026-02-13T17:00:00.000Z"),
                ("notify.host_version", "0.1.0"),
            ],
            Some(r#"{"event_id":"e1"}"#),
            offset,
        )
    }

    #[test]
    fn times_parse_as_rfc3339_or_a_duration_ago() {
        let now = DateTime::parse_from_rfc3339("2026-02-13T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let cases: &[(&str, Result<DateTime<Utc>, &str>)] = &[
            ("2026-02-13T17:00:00Z", Ok(at("2026-02-13T17:00:00Z"))),
            ("2026-02-13T17:00:00+01:00", Ok(at("2026-02-13T16:00:00Z"))),
            ("2h", Ok(at("2026-02-13T10:00:00Z"))),
            ("30m", Ok(at("2026-02-13T11:30:00Z"))),
            ("7d", Ok(at("2026-02-06T12:00:00Z"))),
            ("1h 30m", Ok(at("2026-02-13T10:30:00Z"))),
            (" 2h ", Ok(at("2026-02-13T10:00:00Z"))),
            ("yesterday", Err("neither an RFC 3339 time")),
            ("2026-02-13", Err("neither an RFC 3339 time")),
            ("", Err("neither an RFC 3339 time")),
            ("-2h", Err("neither an RFC 3339 time")),
        ];
        for (input, want) in cases {
            let got = parse_when(input, now);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{input}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{input}: {g}"),
                _ => panic!("{input}: {got:?}"),
            }
        }
    }

    #[test]
    fn filters_select_by_header() {
        let l = sms_letter(5, "7");
        // `name=value` pairs, as the command line gives them.
        let filter = |spec: &[(&str, &str)]| {
            let mut f = DlqFilter::default();
            for (name, value) in spec {
                let t = DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc));
                match *name {
                    "since" => f.since = t.ok(),
                    "until" => f.until = t.ok(),
                    "channel" => f.channel = Some(value.to_string()),
                    "class" => f.class = Some(value.to_string()),
                    "event_id" => f.event_id = Some(value.to_string()),
                    other => panic!("no filter {other}"),
                }
            }
            f
        };
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (&[("channel", "sms")], true),
            (&[("channel", "email")], false),
            (&[("class", "permanent")], true),
            (&[("class", "invalid_event")], false),
            (&[("event_id", "e1")], true),
            (&[("event_id", "e2")], false),
            (&[("since", "2026-02-13T17:00:00Z")], true),
            (&[("since", "2026-02-13T17:00:01Z")], false),
            (&[("until", "2026-02-13T17:00:00Z")], false),
            (&[("until", "2026-02-13T17:00:01Z")], true),
            (
                &[
                    ("channel", "sms"),
                    ("class", "permanent"),
                    ("event_id", "e1"),
                    ("since", "2026-02-13T00:00:00Z"),
                    ("until", "2026-02-14T00:00:00Z"),
                ],
                true,
            ),
            (&[("channel", "sms"), ("class", "rejected")], false),
        ];
        for (spec, want) in cases {
            assert_eq!(filter(spec).matches(&l), *want, "{spec:?}");
        }
    }

    #[test]
    fn a_letter_without_headers_falls_back_to_its_payload_and_timestamp() {
        let mut l = letter(
            &[("notify.error_class", "invalid_event")],
            Some(r#"{"event_id":"from-payload"}"#),
            0,
        );
        assert_eq!(l.event_id().as_deref(), Some("from-payload"));
        let since = Some(Utc::now() - chrono::Duration::hours(1));
        let filter = DlqFilter {
            since,
            ..DlqFilter::default()
        };
        assert!(
            !filter.matches(&l),
            "no time known: a time filter leaves it out"
        );
        l.record.timestamp = Some(Utc::now());
        assert!(filter.matches(&l));
        let broken = letter(&[], Some("{not json"), 1);
        assert_eq!(broken.event_id(), None);
    }

    #[test]
    fn republished_headers_drop_the_host_namespace_and_add_one_marker() {
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(Pairs, (&str, &str), Pairs)] = &[
            (
                &[],
                (REPLAY_OF_HEADER, "dlq/0/1"),
                &[(REPLAY_OF_HEADER, "dlq/0/1")],
            ),
            (
                &[
                    ("traceparent", "00-1"),
                    ("notify.reason", "x"),
                    ("content-type", "application/json"),
                    ("notify.error_class", "permanent"),
                ],
                (REPLAY_OF_HEADER, "dlq/0/1"),
                &[
                    ("traceparent", "00-1"),
                    ("content-type", "application/json"),
                    (REPLAY_OF_HEADER, "dlq/0/1"),
                ],
            ),
            // A replay that failed again: the old marker goes, the new one
            // names this letter.
            (
                &[(REPLAY_OF_HEADER, "dlq/0/1"), ("x-app", "1")],
                (REPLAY_OF_HEADER, "dlq/0/9"),
                &[("x-app", "1"), (REPLAY_OF_HEADER, "dlq/0/9")],
            ),
            // A released event that was a replay: released only, so its
            // other dead-lettered channels are not tried again.
            (
                &[(REPLAY_OF_HEADER, "dlq/0/1"), (RELEASE_OF_HEADER, "sms")],
                (RELEASE_OF_HEADER, "sms"),
                &[(RELEASE_OF_HEADER, "sms")],
            ),
            // Only the exact namespace: `notifyx` and `Notify-Id` are the app's.
            (
                &[("notifyx", "1"), ("Notify-Id", "2")],
                (RELEASE_OF_HEADER, "sms"),
                &[
                    ("notifyx", "1"),
                    ("Notify-Id", "2"),
                    (RELEASE_OF_HEADER, "sms"),
                ],
            ),
        ];
        for (input, marker, want) in cases {
            let input: HeaderList = input.iter().map(|(k, v)| h(k, v)).collect();
            let want: HeaderList = want.iter().map(|(k, v)| h(k, v)).collect();
            assert_eq!(republished_headers(&input, *marker), want, "{input:?}");
        }
        // A null value stays null.
        let nulls = vec![("x-null".to_string(), None)];
        assert_eq!(
            republished_headers(&nulls, (RELEASE_OF_HEADER, "sms"))[0],
            ("x-null".to_string(), None)
        );
    }

    #[test]
    fn the_planner_replays_each_source_record_once_and_skips_what_would_fail_again() {
        let mut p = Planner::new("fallback", false);
        let first = sms_letter(5, "7");
        let Plan::Replay(r) = p.plan(&first) else {
            panic!("replayed")
        };
        assert_eq!(r.topic, "events", "the letter's source topic");
        assert_eq!(r.key.as_deref(), Some(&b"appt-1"[..]));
        assert_eq!(r.payload, br#"{"event_id":"e1"}"#);
        assert_eq!(
            r.headers,
            vec![
                h("traceparent", "00-abc-def-01"),
                h(REPLAY_OF_HEADER, "events.dlq/0/5")
            ]
        );
        // The e-mail letter of the same record.
        let mut second = sms_letter(6, "7");
        second.record.headers[3] = h("notify.channel", "email");
        assert_eq!(
            p.plan(&second),
            Plan::Skip(Skip::Duplicate {
                of: "events.dlq/0/5".into()
            })
        );
        assert!(matches!(p.plan(&sms_letter(8, "9")), Plan::Replay(_)));

        let invalid = letter(&[("notify.error_class", "invalid_event")], Some("{"), 10);
        assert_eq!(p.plan(&invalid), Plan::Skip(Skip::InvalidEvent));
        let mut asked = Planner::new("fallback", true);
        let Plan::Replay(r) = asked.plan(&invalid) else {
            panic!("replayed when asked for")
        };
        assert_eq!(r.topic, "fallback", "no source topic: kafka.topic");

        let empty = letter(&[("notify.error_class", "permanent")], None, 11);
        assert_eq!(p.plan(&empty), Plan::Skip(Skip::NoPayload));
    }

    #[test]
    fn a_payload_omitted_letter_is_replayed_from_the_original_if_it_still_matches() {
        let payload = br#"{"event_id":"big"}"#.to_vec();
        let sha = format!("{:x}", Sha256::digest(&payload));
        let l = letter(
            &[
                ("notify.error_class", "permanent"),
                ("notify.source_topic", "events"),
                ("notify.source_partition", "0"),
                ("notify.source_offset", "3"),
                ("notify.payload_omitted", "too_large"),
                ("notify.payload_sha256", &sha),
            ],
            Some(r#"{"payload_omitted":"..."}"#),
            4,
        );
        let mut p = Planner::new("fallback", false);
        let Plan::FetchOriginal {
            source,
            sha256,
            replay_of,
        } = p.plan(&l)
        else {
            panic!("fetch")
        };
        assert_eq!(coordinates(&source), "events/0/3");
        let original = RawRecord {
            at: source.clone(),
            timestamp: None,
            key: Some(b"k".to_vec()),
            payload: Some(payload.clone()),
            headers: vec![h("traceparent", "t")],
        };
        let r = from_original(
            Some(original.clone()),
            &source,
            sha256.as_deref(),
            &replay_of,
        )
        .expect("replayed");
        assert_eq!(r.payload, payload);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            r.headers,
            vec![h("traceparent", "t"), h(REPLAY_OF_HEADER, "events.dlq/0/4")]
        );

        let gone = from_original(None, &source, sha256.as_deref(), &replay_of);
        assert!(
            matches!(gone, Err(Skip::PayloadOmitted { ref why, .. }) if why.contains("no longer"))
        );
        let mut changed = original.clone();
        changed.payload = Some(b"other".to_vec());
        let changed = from_original(Some(changed), &source, sha256.as_deref(), &replay_of);
        assert!(
            matches!(changed, Err(Skip::PayloadOmitted { ref why, .. }) if why.contains("sha256"))
        );
        let mut later = original;
        later.at.offset = 5;
        assert!(from_original(Some(later), &source, None, &replay_of).is_err());
    }

    #[test]
    fn a_release_message_is_the_held_event_with_the_release_marker() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = DeliveryKey {
            event_id: "e1".into(),
            channel: "sms".into(),
            purpose: Purpose::Confirmation,
            reminder: None,
        };
        let mut record = Record {
            delivery: Delivery::new(&key, "a1", Recipient::default()),
            held: Some(HeldMessage {
                topic: "events".into(),
                key_b64: Some(b64("appt-1")),
                payload: r#"{"event_id":"e1"}"#.into(),
                headers: vec![
                    ("traceparent".into(), b64("00-1")),
                    (REPLAY_OF_HEADER.into(), b64("dlq/0/1")),
                ],
            }),
        };
        let m = release_message(&record, "sms").expect("message");
        assert_eq!(m.topic, "events");
        assert_eq!(m.key.as_deref(), Some(&b"appt-1"[..]));
        assert_eq!(m.payload, br#"{"event_id":"e1"}"#);
        assert_eq!(
            m.headers,
            vec![h("traceparent", "00-1"), h(RELEASE_OF_HEADER, "sms")]
        );

        if let Some(held) = record.held.as_mut() {
            held.headers[0].1 = "not base64!".into();
        }
        assert!(release_message(&record, "sms")
            .expect_err("bad header")
            .contains("traceparent"));
        record.held = None;
        assert!(release_message(&record, "sms").is_err());
    }

    #[test]
    fn skips_are_described_for_the_operator() {
        let s = Skip::PayloadOmitted {
            source: Some(SourceRef {
                topic: "events".into(),
                partition: 1,
                offset: 2,
            }),
            why: "no longer in the source topic".into(),
        };
        assert!(s.describe().contains("events/1/2"));
        assert_eq!(s.word(), "payload_omitted");
        assert!(Skip::InvalidEvent
            .describe()
            .contains("--class invalid_event"));
    }
}
