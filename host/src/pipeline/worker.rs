//! Working one event to its end: every requested channel delivered, skipped
//! (disabled, or already delivered), or dead-lettered.
//!
//! The decision after each send is taken in one place, [`decide`], from what
//! the attempt observed, whether the channel was healthy, and the channel's
//! retry policy; it is tested as a table. Every send goes through its
//! channel's gate (`health`): while the channel is down the send waits there,
//! uncounted, instead of being retried against a failing provider.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::deadline;
use crate::attempt::{self, Hooks, Observed};
use crate::channels::{Channel, LiveChannels, RenderError};
use crate::config::{ChannelMode, Config, UnknownEventTypes};
use crate::dlq::{DeadLetter, DeadLetters, ErrorClass, Source, WriteFailure, Written};
use crate::event::{self, AppointmentEvent};
use crate::health::{ChannelGate, Health};
use crate::ledger::{
    self, Admission, Arrival, AttemptRecord, Claim, Delivery, DeliveryKey, HeldMessage, Ledger,
    Purpose as LedgerPurpose, Recipient, Record, SourceRef, State,
};
use crate::metrics::{Metrics, OutcomeLabels, ReasonLabels};
use crate::plugin::{Disposition, Message as PluginMessage, Purpose};
use crate::reminders::scheduler::Scheduler;
use crate::retry::RetryPolicy;
use crate::scrub;
use crate::transport::{OutboundRequest, Transport};

/// What the pipeline needs to work an event.
pub struct Shared {
    pub config: Arc<Config>,
    /// The channels running now; a reload swaps them (see `reload`).
    pub channels: Arc<LiveChannels>,
    pub transport: Transport,
    pub ledger: Ledger,
    pub dlq: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Woken when a reminder is scheduled.
    pub scheduler: Scheduler,
}

/// How one channel of one event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelOutcome {
    Delivered {
        attempts: u32,
        provider_message_id: Option<String>,
    },
    /// Ended earlier (delivered, dead-lettered, expired, cancelled) or
    /// already held: a redelivery or a duplicate publish; nothing done.
    AlreadyDone(State),
    /// The channel is off: recorded `skipped`.
    Disabled,
    /// The channel is on hold: recorded `held` with the event.
    Held,
    /// Past its useful time: recorded `expired`, not sent.
    Expired(String),
    /// The appointment was cancelled (or moved) first: recorded
    /// `cancelled`, not sent.
    Cancelled(String),
    DeadLetter(DeadLetter),
    /// The partition was revoked before this channel was done: nothing more
    /// was sent, and its next owner works the event again.
    Revoked,
}

/// What to do after one answered or failed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This request is done; go on with the next (or finish).
    Delivered { provider_message_id: Option<String> },
    /// A counted failure: wait, then send again as attempt `attempt + 1`.
    RetryAfter(Duration),
    /// The channel is not healthy: the failure does not count; send again
    /// when the channel's gate lets it out.
    WaitForChannel,
    /// Give up on the channel for this event.
    DeadLetter { class: ErrorClass, reason: String },
}

/// The facts about a send that `decide` weighs besides what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The event's attempt number for this send (1-based, counted ones only).
    pub attempt: u32,
    /// Whether a failure counts against `max_attempts`: the channel was
    /// healthy before and after it (see `health::circuit`).
    pub counted: bool,
    /// Since the channel's first attempt for this event.
    pub elapsed: Duration,
}

/// The one place a send's result becomes a decision.
pub fn decide(
    policy: &RetryPolicy,
    facts: Facts,
    observed: Observed,
    jitter: impl FnOnce(u64) -> u64,
) -> Decision {
    let attempt = facts.attempt;
    // A channel-level failure never counts against the event.
    let counted =
        facts.counted && !matches!(observed, Observed::Classified(Disposition::ChannelDown(_)));
    let (provider_after, reason) = match observed {
        Observed::Classified(Disposition::Delivered(d)) => {
            return Decision::Delivered {
                provider_message_id: d.provider_message_id,
            }
        }
        Observed::Classified(Disposition::Permanent(reason)) => {
            return Decision::DeadLetter {
                class: ErrorClass::Permanent,
                reason,
            }
        }
        // The provider answered; the request is never sent again for a
        // plugin failure after the answer. The host's own rule decides.
        Observed::Unclassified { status, .. } if (200..300).contains(&status) => {
            return Decision::Delivered {
                provider_message_id: None,
            }
        }
        Observed::Unclassified { status, error } => {
            return Decision::DeadLetter {
                class: ErrorClass::PluginFailed,
                reason: format!(
                    "the provider answered HTTP {status} and the plugin failed to classify it ({error}); not sent again"
                ),
            }
        }
        Observed::Classified(Disposition::ChannelDown(reason)) => (None, reason),
        Observed::Classified(Disposition::Retry(r)) => (r.after_ms.map(Duration::from_millis), r.reason),
        Observed::Unreachable(reason) => (None, reason),
    };
    if let Some(limit) = policy.give_up_after.filter(|l| facts.elapsed >= *l) {
        return Decision::DeadLetter {
            class: ErrorClass::RetriesExhausted,
            reason: format!(
                "gave up after {} (retry.give_up_after): {reason}",
                humantime::format_duration(limit)
            ),
        };
    }
    if !counted {
        return Decision::WaitForChannel;
    }
    match retry_or_give_up(
        policy,
        attempt,
        provider_after,
        reason,
        ErrorClass::RetriesExhausted,
        jitter,
    ) {
        Ok(wait) => Decision::RetryAfter(wait),
        Err((class, reason)) => Decision::DeadLetter { class, reason },
    }
}

/// After a counted transient failure of attempt `attempt`: how long to
/// wait, or why to give up.
fn retry_or_give_up(
    policy: &RetryPolicy,
    attempt: u32,
    provider_after: Option<Duration>,
    reason: String,
    class: ErrorClass,
    jitter: impl FnOnce(u64) -> u64,
) -> Result<Duration, (ErrorClass, String)> {
    if policy.allows_retry_after(attempt) {
        Ok(policy.delay(attempt, provider_after, jitter))
    } else {
        Err((class, format!("gave up after {attempt} attempts: {reason}")))
    }
}

/// Works one event; returns once every channel is resolved and every dead
/// letter acknowledged. Never fails: what cannot be done is dead-lettered, and
/// a dead-letter write is retried until it succeeds.
///
/// Once `revoked` is cancelled (the partition went to another member) no
/// further send is started: the rest is left for the partition's next owner.
pub async fn process(shared: Arc<Shared>, msg: Arc<OwnedMessage>, revoked: CancellationToken) {
    // Compiled in only with the `failpoints` feature (tests): lets a test
    // make event work panic, to prove a panic never stalls a partition.
    fail::fail_point!("event-work");
    let payload = msg.payload().unwrap_or_default();
    let max = shared.config.pipeline.max_event_bytes;
    let event = if payload.len() > max {
        Err(event::ContractViolation {
            field: "payload".into(),
            problem: format!(
                "{} bytes, over the {max} byte limit (pipeline.max_event_kib)",
                payload.len()
            ),
            kind: event::ViolationKind::Invalid,
        })
    } else {
        event::parse(payload)
    };
    let event = match event {
        Ok(e) => Arc::new(e),
        Err(violation)
            if violation.kind == event::ViolationKind::UnknownEventType
                && shared.config.pipeline.unknown_event_types == UnknownEventTypes::Skip =>
        {
            shared.metrics.events_skipped.inc();
            tracing::info!(partition = msg.partition(), offset = msg.offset(), reason = %violation, outcome = "skipped", "event of a type this host does not handle; skipped (pipeline.unknown_event_types = \"skip\")");
            return;
        }
        Err(violation) => {
            tracing::warn!(partition = msg.partition(), offset = msg.offset(), field = %violation.field, reason = %violation, outcome = "dead_letter", "event breaks the contract");
            let letter = DeadLetter {
                class: ErrorClass::InvalidEvent,
                reason: violation.to_string(),
                channel: None,
                event_id: None,
                attempts: 0,
                provider_status: None,
            };
            dead_letter(&shared, &msg, &letter, &revoked).await;
            return;
        }
    };

    let span = tracing::info_span!(
        "event",
        event_id = %event.event_id,
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        traceparent = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    );
    // Carried from the producer (e.g. the Django request) into every line of
    // this event; dead letters keep the original headers too.
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            let value = h.value.map(String::from_utf8_lossy);
            match (h.key, value) {
                ("traceparent", Some(v)) => {
                    span.record("traceparent", v.as_ref());
                }
                ("correlation_id" | "correlation-id" | "x-correlation-id", Some(v)) => {
                    span.record("correlation_id", v.as_ref());
                }
                _ => {}
            }
        }
    }
    let arrived = Arrived::of(&msg);
    async move {
        let requested: Vec<&str> = event.requested_channels().collect();
        if let Some(letter) = too_many_channels(&shared, &event, requested.len()) {
            tracing::warn!(requested = requested.len(), outcome = "dead_letter", reason = %letter.reason, "event asks for too many channels");
            dead_letter(&shared, &msg, &letter, &revoked).await;
            return;
        }
        // Names come from the event, so they may be anything: they are
        // reported once, together, and counted under `channel="unknown"`
        // so an event cannot create metric series.
        let (known, unknown): (Vec<&str>, Vec<&str>) = requested
            .iter()
            .partition(|name| shared.config.channels.contains_key(**name));
        let unknown_letter = (!unknown.is_empty()).then(|| unknown_channels(&shared, &event, &unknown));
        let outcomes = super::lifecycle::work(&shared, &event, &known, &revoked, &arrived).await;
        for (outcome, record) in outcomes {
            if let ChannelOutcome::DeadLetter(letter) = outcome {
                // Recorded only once the dead letter is safe: a record
                // without it would make a redelivery skip the channel and
                // lose the letter.
                if dead_letter(&shared, &msg, &letter, &revoked).await {
                    if let Some(mut delivery) = record {
                        delivery.error_class = Some(letter.class.as_str().to_string());
                        delivery.set(State::DeadLettered, Some(letter.reason.clone()));
                        write_final(&shared, &delivery, None).await;
                    }
                } else if let Some(delivery) = &record {
                    release(&shared, &delivery.key()).await;
                }
            }
        }
        if let Some(letter) = unknown_letter {
            dead_letter(&shared, &msg, &letter, &revoked).await;
        }
    }
    .instrument(span)
    .await
}

/// The dead letter for an event asking for more channels than
/// `pipeline.max_channels_per_event`, if it does.
fn too_many_channels(shared: &Shared, event: &AppointmentEvent, n: usize) -> Option<DeadLetter> {
    let limit = shared.config.pipeline.max_channels_per_event;
    (n > limit).then(|| DeadLetter {
        class: ErrorClass::InvalidEvent,
        reason: format!(
            "the event asks for {n} channels, over the limit of {limit} (pipeline.max_channels_per_event); nothing was sent"
        ),
        channel: None,
        event_id: Some(event.event_id.clone()),
        attempts: 0,
        provider_status: None,
    })
}

/// One dead letter naming every channel the event asks for that this host
/// does not have, counted and logged once.
fn unknown_channels(shared: &Shared, event: &AppointmentEvent, names: &[&str]) -> DeadLetter {
    // Names are the event's: shown cut, a few at most.
    const SHOWN: usize = 8;
    const NAME_BYTES: usize = 64;
    let mut listed: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{}`", crate::scrub::cut(n.to_string(), NAME_BYTES)))
        .collect();
    if names.len() > SHOWN {
        listed.push(format!("and {} more", names.len() - SHOWN));
    }
    let configured: Vec<&str> = shared.config.channels.keys().map(String::as_str).collect();
    let reason = format!(
        "{} not configured on this host: {} (configured: {})",
        if names.len() == 1 {
            "channel"
        } else {
            "channels"
        },
        listed.join(", "),
        configured.join(", ")
    );
    shared
        .metrics
        .deliveries
        .get_or_create(&OutcomeLabels {
            channel: crate::metrics::UNKNOWN_CHANNEL.to_string(),
            outcome: "dead_letter".to_string(),
        })
        .inc_by(names.len() as u64);
    tracing::warn!(event_id = %event.event_id, channel = crate::metrics::UNKNOWN_CHANNEL, unknown = names.len(), outcome = "dead_letter", class = ErrorClass::UnknownChannel.as_str(), reason = %reason, "channel failed");
    DeadLetter {
        class: ErrorClass::UnknownChannel,
        reason,
        // One name is the usual typo: the header says which, for filters.
        channel: (names.len() == 1).then(|| names[0].to_string()),
        event_id: Some(event.event_id.clone()),
        attempts: 0,
        provider_status: None,
    }
}

/// After a panic in the work on `msg`: the event is dead-lettered as
/// `host_failed` with the panic message, so its offset can be committed and
/// the events behind it on its key go on. What was delivered before the
/// panic is in the dedup store, so a replay of the dead letter sends only
/// the rest.
pub async fn host_failed(
    shared: &Shared,
    msg: &OwnedMessage,
    panic: &str,
    revoked: &CancellationToken,
) {
    shared.metrics.panics.inc();
    tracing::error!(partition = msg.partition(), offset = msg.offset(), panic = %panic, outcome = "dead_letter", "the host failed on this event (a bug: please report it with this line); dead-lettering it as host_failed");
    let letter = DeadLetter {
        class: ErrorClass::HostFailed,
        reason: format!("the host panicked while working this event: {panic}"),
        channel: None,
        event_id: msg
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("event_id")?.as_str().map(String::from)),
        attempts: 0,
        provider_status: None,
    };
    dead_letter(shared, msg, &letter, revoked).await;
}

/// How often a dead-letter topic that cannot be written is logged.
const DLQ_LOG_EVERY: Duration = Duration::from_secs(30);

/// Writes a dead letter, retrying until the broker takes it: the offset must
/// not be committed without it. A topic that is missing or denied makes
/// readiness fail (with the reason) until a write succeeds; the error is
/// logged every 30 s across all events, not once per retry. Once `revoked`
/// is cancelled the write is left for the partition's next owner.
pub(super) async fn dead_letter(
    shared: &Shared,
    msg: &OwnedMessage,
    letter: &DeadLetter,
    revoked: &CancellationToken,
) -> bool {
    let source = Source {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key(),
        payload: msg.payload().unwrap_or_default(),
        headers: msg.headers(),
    };
    dead_letter_from(shared, &source, letter, revoked).await
}

/// A dead letter for a delivery whose event the ledger kept (a reminder's):
/// the original record rebuilt from it.
pub(super) async fn dead_letter_kept(
    shared: &Shared,
    held: &HeldMessage,
    at: Option<&SourceRef>,
    letter: &DeadLetter,
    revoked: &CancellationToken,
) -> bool {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let key = held.key_b64.as_deref().and_then(b64);
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for (name, value) in &held.headers {
        let value = b64(value).unwrap_or_default();
        headers = headers.insert(rdkafka::message::Header {
            key: name,
            value: Some(&value),
        });
    }
    let source = Source {
        topic: &held.topic,
        partition: at.map_or(-1, |s| s.partition),
        offset: at.map_or(-1, |s| s.offset),
        key: key.as_deref(),
        payload: held.payload.as_bytes(),
        headers: Some(&headers),
    };
    dead_letter_from(shared, &source, letter, revoked).await
}

async fn dead_letter_from(
    shared: &Shared,
    source: &Source<'_>,
    letter: &DeadLetter,
    revoked: &CancellationToken,
) -> bool {
    let health = shared.dlq.health();
    let mut wait = Duration::from_millis(200);
    loop {
        if revoked.is_cancelled() {
            tracing::info!(
                class = letter.class.as_str(),
                "partition revoked before the dead letter was written; left for its next owner"
            );
            return false;
        }
        match shared.dlq.send(source, letter).await {
            Ok(written) => {
                if health.set_available() {
                    tracing::info!(
                        dlq_topic = shared.dlq.topic(),
                        "dead-letter topic writable again; readiness restored"
                    );
                }
                shared
                    .metrics
                    .dlq_events
                    .get_or_create(&ReasonLabels {
                        reason: letter.class.as_str().to_string(),
                    })
                    .inc();
                let payload_omitted = written == Written::PayloadOmitted;
                tracing::info!(dlq_topic = shared.dlq.topic(), class = letter.class.as_str(), channel = letter.channel.as_deref(), reason = %letter.reason, payload_omitted, "dead-lettered");
                return true;
            }
            Err(e) => {
                let failure = e.failure();
                match failure {
                    WriteFailure::Unavailable => health.set_unavailable(e.to_string()),
                    // Even the reference did not fit: the limit is set
                    // absurdly low, which only an operator can fix.
                    WriteFailure::TooLarge => health.set_unavailable(format!(
                        "{e} (even with the payload replaced by a reference; check message.max.bytes)"
                    )),
                    WriteFailure::Transient => {}
                }
                if health.should_log(std::time::Instant::now(), DLQ_LOG_EVERY) {
                    tracing::error!(dlq_topic = shared.dlq.topic(), error = %e, failure = ?failure, retry_in_ms = wait.as_millis() as u64, "dead-letter write failed; the offset stays uncommitted until it succeeds (logged every 30 s while it lasts)");
                }
                if !sleep_unless_revoked(wait, revoked).await {
                    continue;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub(super) fn letter(
    channel: &str,
    event: &AppointmentEvent,
    class: ErrorClass,
    reason: String,
    attempts: u32,
    status: Option<u16>,
) -> ChannelOutcome {
    ChannelOutcome::DeadLetter(DeadLetter {
        class,
        reason,
        channel: Some(channel.to_string()),
        event_id: Some(event.event_id.clone()),
        attempts,
        provider_status: status,
    })
}

/// How the event came to the host: what its deliveries' records say about
/// it, and what a hold keeps.
pub struct Arrived {
    pub arrival: Arrival,
    /// The dead letter it replays (`notify.replay_of`).
    pub replay_of: Option<String>,
    pub source: SourceRef,
    /// The Kafka record's timestamp (its age when it has no `occurred_at`).
    pub timestamp: Option<DateTime<Utc>>,
    msg: Arc<OwnedMessage>,
}

impl Arrived {
    pub fn of(msg: &Arc<OwnedMessage>) -> Arrived {
        let replay_of = msg.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == ledger::REPLAY_OF_HEADER)
                .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
        });
        Arrived {
            arrival: if replay_of.is_some() {
                Arrival::Replay
            } else {
                Arrival::Normal
            },
            replay_of,
            source: SourceRef {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
            timestamp: msg
                .timestamp()
                .to_millis()
                .and_then(DateTime::<Utc>::from_timestamp_millis),
            msg: msg.clone(),
        }
    }

    /// The event as a hold keeps it, byte for byte, for its release.
    pub(super) fn held_message(&self) -> HeldMessage {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        HeldMessage {
            topic: self.msg.topic().to_string(),
            key_b64: self.msg.key().map(b64),
            // Only a UTF-8 event gets this far (`event::parse`).
            payload: String::from_utf8_lossy(self.msg.payload().unwrap_or_default()).into_owned(),
            headers: self
                .msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), b64(h.value.unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// One channel of one event, to its end; with the delivery's record as it
/// stands (for `process` to finish a dead letter's).
pub(super) async fn deliver(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    name: &str,
    purpose: LedgerPurpose,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> (ChannelOutcome, Option<Delivery>) {
    let started = Instant::now();
    let mut record = None;
    let outcome = deliver_inner(shared, event, name, purpose, revoked, arrived, &mut record).await;
    if outcome == ChannelOutcome::Revoked {
        release(shared, &DeliveryKey::new(&event.event_id, name, purpose)).await;
    }
    report(shared, &event.event_id, name, purpose, &outcome, started);
    (outcome, record)
}

/// Claims `key` for this host (see `ledger`), waiting while another live
/// host holds it and retrying while the ledger does not answer; `false` if
/// the partition was revoked first. Nothing is sent without the claim.
pub(super) async fn claim_for_work(
    shared: &Shared,
    key: &DeliveryKey,
    revoked: &CancellationToken,
) -> bool {
    let mut wait = Duration::from_millis(100);
    let mut conflict_seen = false;
    loop {
        let started = Instant::now();
        match shared.ledger.claim(key).await {
            Ok(Claim::Granted) => {
                shared
                    .metrics
                    .ledger_claim
                    .observe(started.elapsed().as_secs_f64());
                if conflict_seen {
                    tracing::info!(channel = %key.channel, "claim granted after the other host let it go");
                }
                return true;
            }
            Ok(Claim::Busy { owner, until }) => {
                if !conflict_seen {
                    conflict_seen = true;
                    shared
                        .metrics
                        .claim_conflicts
                        .get_or_create(&Metrics::channel(&key.channel))
                        .inc();
                    tracing::info!(channel = %key.channel, owner = %owner, lease_until = %until.to_rfc3339(), "another host works this delivery; waiting until it is done or its lease runs out");
                }
                // Polled: the holder's final record frees it, usually
                // within one provider round trip.
                if !sleep_unless_revoked(CLAIM_POLL, revoked).await {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(channel = %key.channel, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot claim the delivery in the ledger; not sending until the ledger answers");
                if !sleep_unless_revoked(wait, revoked).await {
                    return false;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How often a delivery another host holds is asked for again.
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// Gives up this host's claim on `key` without a final record (the
/// partition was revoked): its next owner need not wait out the lease. A
/// failure only delays that owner until the lease or this host's sweep.
pub(super) async fn release(shared: &Shared, key: &DeliveryKey) {
    if let Err(e) = shared.ledger.release(key).await {
        tracing::warn!(channel = %key.channel, error = %e, "cannot give up the claim; the next owner waits for this host's claim sweep");
    }
}

/// Before a send: this host's lease must be fresh (else it may not be able
/// to record what it sends), and if it lapsed since the delivery was claimed
/// (`epoch`), the claim is taken again and the record read again: another
/// host may have finished the delivery meanwhile. `Err` ends the send.
async fn hold_claim(
    shared: &Shared,
    entry: &Delivery,
    epoch: &mut u64,
    revoked: &CancellationToken,
) -> Result<(), ChannelOutcome> {
    if shared.ledger.claims_held() && shared.ledger.claim_epoch() == *epoch {
        return Ok(());
    }
    tracing::debug!(channel = %entry.channel, "the ledger lease is not fresh; waiting for the database before sending");
    while !shared.ledger.claims_held() {
        if !sleep_unless_revoked(CLAIM_POLL, revoked).await {
            return Err(ChannelOutcome::Revoked);
        }
    }
    let key = entry.key();
    let now = shared.ledger.claim_epoch();
    if now != *epoch {
        if !claim_for_work(shared, &key, revoked).await {
            return Err(ChannelOutcome::Revoked);
        }
        *epoch = now;
        let current = match on_record(|| shared.ledger.get(&key), &key.channel, revoked).await {
            Some(current) => current,
            None => return Err(ChannelOutcome::Revoked),
        };
        if let Some(d) = current.filter(|d| !d.state.is_open() && d.state != State::Held) {
            tracing::info!(channel = %key.channel, state = d.state.as_str(), "another host ended this delivery while this host was cut off; not sending");
            return Err(ChannelOutcome::AlreadyDone(d.state));
        }
    }
    Ok(())
}

/// Counts and logs how one delivery ended.
pub(super) fn report(
    shared: &Shared,
    event_id: &str,
    name: &str,
    purpose: LedgerPurpose,
    outcome: &ChannelOutcome,
    started: Instant,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let word = match &outcome {
        ChannelOutcome::Delivered { .. } => "delivered",
        ChannelOutcome::AlreadyDone(_) => "duplicate",
        ChannelOutcome::Disabled => "disabled",
        ChannelOutcome::Held => "held",
        ChannelOutcome::Expired(_) => "expired",
        ChannelOutcome::Cancelled(_) => "cancelled",
        ChannelOutcome::DeadLetter(_) => "dead_letter",
        ChannelOutcome::Revoked => "revoked",
    };
    shared
        .metrics
        .deliveries
        .get_or_create(&OutcomeLabels {
            channel: name.to_string(),
            outcome: word.to_string(),
        })
        .inc();
    if matches!(outcome, ChannelOutcome::AlreadyDone(_)) {
        shared
            .metrics
            .dedup_hits
            .get_or_create(&Metrics::channel(name))
            .inc();
    }
    match outcome {
        ChannelOutcome::Delivered {
            attempts,
            provider_message_id,
        } => {
            tracing::info!(
                event_id,
                channel = name,
                purpose = purpose.as_str(),
                outcome = "delivered",
                attempts,
                provider_message_id = provider_message_id.as_deref(),
                elapsed_ms,
                "channel delivered"
            )
        }
        ChannelOutcome::AlreadyDone(State::Delivered) => tracing::info!(
            event_id,
            channel = name,
            outcome = "duplicate",
            state = "delivered",
            "channel already delivered for this event; not sent again"
        ),
        ChannelOutcome::AlreadyDone(state) => tracing::info!(
            event_id,
            channel = name,
            outcome = "duplicate",
            state = state.as_str(),
            "channel already done for this event (see state); not sent again"
        ),
        ChannelOutcome::Disabled => tracing::info!(
            event_id,
            channel = name,
            outcome = "disabled",
            "channel requested but off in config; skipped"
        ),
        ChannelOutcome::Held => tracing::info!(
            event_id,
            channel = name,
            outcome = "held",
            "channel on hold; kept for release"
        ),
        ChannelOutcome::Expired(reason) => tracing::info!(
            event_id,
            channel = name,
            outcome = "expired",
            reason = %reason,
            "past its useful time; not sent"
        ),
        ChannelOutcome::Cancelled(reason) => tracing::info!(
            event_id,
            channel = name,
            purpose = purpose.as_str(),
            outcome = "cancelled",
            reason = %reason,
            "the appointment was cancelled or moved; not sent"
        ),
        ChannelOutcome::DeadLetter(l) => {
            tracing::warn!(event_id, channel = name, outcome = "dead_letter", class = l.class.as_str(), attempts = l.attempts, provider_status = l.provider_status, reason = %l.reason, elapsed_ms, "channel failed")
        }
        ChannelOutcome::Revoked => tracing::info!(
            event_id,
            channel = name,
            outcome = "revoked",
            elapsed_ms,
            "partition revoked before the channel was done; left for its next owner"
        ),
    }
}

/// What the ledger has for the delivery; `None` if the partition was
/// revoked first. Sending without knowing could send twice, and waiting loses
/// nothing (the event stays in flight, its offset uncommitted), so a failed
/// lookup is a transient failure of the host, retried with backoff until the
/// ledger answers: never taken as "not on record".
pub(super) async fn on_record<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
>(
    mut lookup: impl FnMut() -> F,
    channel: &str,
    revoked: &CancellationToken,
) -> Option<T> {
    let mut wait = Duration::from_millis(100);
    loop {
        match lookup().await {
            Ok(found) => return Some(found),
            Err(e) => {
                tracing::error!(channel, error = %e, retry_in_ms = wait.as_millis() as u64, "ledger lookup failed; not sending until the ledger answers");
                if !sleep_unless_revoked(wait, revoked).await {
                    return None;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sleeps for `wait`, or returns `false` at once if `revoked` is cancelled.
async fn sleep_unless_revoked(wait: Duration, revoked: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = revoked.cancelled() => false,
    }
}

async fn deliver_inner(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    name: &str,
    purpose: LedgerPurpose,
    revoked: &CancellationToken,
    ctx: &Arrived,
    record: &mut Option<Delivery>,
) -> ChannelOutcome {
    // Unknown names never get here: `process` dead-letters them together.
    let mode = shared
        .config
        .channels
        .get(name)
        .map_or(ChannelMode::Off, |c| c.mode);
    let key = DeliveryKey::new(&event.event_id, name, purpose);
    // Claimed before the record is read: another host that works the same
    // delivery (a rebalance moved the partition mid-send) finishes it first.
    if !claim_for_work(shared, &key, revoked).await {
        return ChannelOutcome::Revoked;
    }
    let existing = match on_record(|| shared.ledger.get(&key), name, revoked).await {
        Some(existing) => existing,
        None => return ChannelOutcome::Revoked,
    };
    let admission = ledger::admit(existing.as_ref().map(|d| d.state), mode, ctx.arrival);
    let on_record_before = existing.is_some();
    let entry = record.insert(
        existing.unwrap_or_else(|| Delivery::new(&key, &event.appointment_id, recipient(event))),
    );
    if ctx.arrival == Arrival::Replay {
        entry.replay_of = ctx.replay_of.clone();
    }
    match admission {
        Admission::AlreadyDone(state) => {
            entry.duplicates = entry.duplicates.saturating_add(1);
            entry.updated_at = Utc::now();
            // Only a count: a failed write loses nothing, so it is not
            // retried (but awaited, so the record says it before the commit).
            if let Err(e) = shared
                .ledger
                .put(Record {
                    delivery: entry.clone(),
                    held: None,
                })
                .await
            {
                tracing::warn!(channel = name, error = %e, "cannot count a duplicate in the ledger");
            }
            return ChannelOutcome::AlreadyDone(state);
        }
        Admission::Skip => {
            entry.set(
                State::Skipped,
                Some(format!("channel `{name}` is off (mode = \"off\")")),
            );
            write_final(shared, entry, None).await;
            return ChannelOutcome::Disabled;
        }
        Admission::Hold => {
            entry.source = Some(ctx.source.clone());
            entry.set(
                State::Held,
                Some(format!(
                    "channel `{name}` is on hold (mode = \"hold\"): kept for `notify-host deliveries release --channel {name}`"
                )),
            );
            write_final(shared, entry, Some(ctx.held_message())).await;
            return ChannelOutcome::Held;
        }
        Admission::Send => {}
    }
    entry.source = Some(ctx.source.clone());
    let useful_until = useful_until(event);
    entry.useful_until = useful_until;
    if let Some(reason) = deadline::expired(
        Utc::now(),
        useful_until,
        event_age_from(event, ctx),
        shared.config.pipeline.max_event_age,
    ) {
        entry.set(State::Expired, Some(reason.clone()));
        write_final(shared, entry, None).await;
        return ChannelOutcome::Expired(reason);
    }
    entry.set(State::Pending, None);
    // A first send is not written until it ends or has to wait: most
    // take one provider round trip, and a write per state would cost a
    // quarter of the host's throughput (measured). A record that is
    // worked again (replay, release, a crash) says so at once.
    if on_record_before {
        note(shared, entry);
    }
    let message = PluginMessage {
        purpose: plugin_purpose(purpose),
        reminder: None,
        useful_until: useful_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    send_out(shared, event, name, entry, &message, revoked, &|| {
        Box::pin(std::future::ready(None))
    })
    .await
}

/// The plugin contract's name for a purpose.
fn plugin_purpose(p: LedgerPurpose) -> Purpose {
    match p {
        LedgerPurpose::Confirmation => Purpose::Confirmation,
        LedgerPurpose::Reminder => Purpose::Reminder,
        LedgerPurpose::Cancellation => Purpose::Cancellation,
        LedgerPurpose::Reschedule => Purpose::Reschedule,
    }
}

/// Renders and sends one admitted delivery to its end, recording it:
/// delivered, expired or cancelled on the way (checked before every send,
/// so one that waited out an outage is not made late or after a cancel),
/// or a dead letter for the caller to write. `cancelled` says why the
/// delivery must not be sent any more, when that is so.
pub(super) async fn send_out(
    shared: &Arc<Shared>,
    event: &AppointmentEvent,
    name: &str,
    entry: &mut Delivery,
    message: &PluginMessage,
    revoked: &CancellationToken,
    cancelled: &(dyn Fn() -> BoxFuture<'static, Option<String>> + Sync),
) -> ChannelOutcome {
    let useful_until = entry.useful_until;
    // One version of the channel for the whole send: a reload swaps the
    // set for new sends, this one finishes on the plugin it started with.
    let channels = shared.channels.load();
    let (Some(channel), Some(gate)) = (channels.get(name), shared.health.get(name)) else {
        return letter(
            name,
            event,
            ErrorClass::UnknownChannel,
            format!("channel `{name}` is not loaded"),
            0,
            None,
        );
    };
    let policy = channel.config.retry;
    let first_attempt = Instant::now();

    let mut attempt = 1;
    let requests = loop {
        match render(shared, channel, event, message).await {
            Ok(r) => break r,
            Err(RenderError::Plugin(e)) => {
                match retry_or_give_up(
                    &policy,
                    attempt,
                    None,
                    e.to_string(),
                    ErrorClass::PluginFailed,
                    |n| fastrand::u64(0..=n),
                ) {
                    Ok(wait) => {
                        shared
                            .metrics
                            .retries
                            .get_or_create(&Metrics::channel(name))
                            .inc();
                        tracing::warn!(channel = name, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "plugin failed rendering; retrying");
                        entry.set(
                            State::Retrying,
                            Some(format!("the plugin failed rendering: {e}")),
                        );
                        note(shared, entry);
                        if !sleep_unless_revoked(wait, revoked).await {
                            return ChannelOutcome::Revoked;
                        }
                        attempt += 1;
                    }
                    Err((class, reason)) => {
                        return letter(name, event, class, reason, attempt, None)
                    }
                }
            }
            Err(e @ RenderError::Refused(_)) => {
                return letter(
                    name,
                    event,
                    ErrorClass::Refused,
                    e.to_string(),
                    attempt,
                    None,
                )
            }
            Err(e) => {
                return letter(
                    name,
                    event,
                    ErrorClass::Rejected,
                    e.to_string(),
                    attempt,
                    None,
                )
            }
        }
    };

    let mut provider_message_id = None;
    let mut next = 0;
    // The caller claimed the delivery just before.
    let mut epoch = shared.ledger.claim_epoch();
    while next < requests.len() {
        if let Err(outcome) = hold_claim(shared, entry, &mut epoch, revoked).await {
            return outcome;
        }
        let Some(permit) = gate.admit(revoked).await else {
            return ChannelOutcome::Revoked;
        };
        // Checked after the wait too: a revoke may have come while the
        // permit was being handed over.
        if revoked.is_cancelled() {
            return ChannelOutcome::Revoked;
        }
        // A send that waited (a long outage) past the message's useful time
        // is not made.
        if let Some(reason) = deadline::expired(Utc::now(), useful_until, None, None) {
            drop(permit);
            entry.set(State::Expired, Some(reason.clone()));
            write_final(shared, entry, None).await;
            return ChannelOutcome::Expired(reason);
        }
        if let Some(reason) = cancelled().await {
            drop(permit);
            entry.set(State::Cancelled, Some(reason.clone()));
            write_final(shared, entry, None).await;
            return ChannelOutcome::Cancelled(reason);
        }
        let outcome = attempt::attempt(
            channel,
            &shared.transport,
            requests[next].clone(),
            attempt,
            message.purpose,
            Hooks {
                metrics: Some(&shared.metrics),
            },
        )
        .await;
        let status = outcome.status();
        entry.push_attempt(attempt_record(attempt, &outcome));
        let counted = permit.finish(outcome.observed.signal());
        throttle_on_retry_after(gate, &policy, &outcome.observed, status);
        if let Observed::Unclassified { status, error } = &outcome.observed {
            tracing::error!(channel = name, provider_status = status, error = %error, "the plugin could not classify the provider's answer; deciding by the host's rule (2xx delivered, else dead letter), never by resending");
        }
        let facts = Facts {
            attempt,
            counted,
            elapsed: first_attempt.elapsed(),
        };
        match decide(&policy, facts, outcome.observed, |n| fastrand::u64(0..=n)) {
            Decision::Delivered {
                provider_message_id: id,
            } => {
                provider_message_id = id.or(provider_message_id);
                next += 1;
            }
            Decision::RetryAfter(wait) => {
                shared
                    .metrics
                    .retries
                    .get_or_create(&Metrics::channel(name))
                    .inc();
                tracing::info!(
                    channel = name,
                    attempt,
                    provider_status = status,
                    retry_in_ms = wait.as_millis() as u64,
                    "transient failure; retrying"
                );
                entry.set(State::Retrying, None);
                note(shared, entry);
                if !sleep_unless_revoked(wait, revoked).await {
                    return ChannelOutcome::Revoked;
                }
                attempt += 1;
            }
            Decision::WaitForChannel => {
                shared
                    .metrics
                    .retries
                    .get_or_create(&Metrics::channel(name))
                    .inc();
                // The channel's gate logs its state once, not every event.
                tracing::debug!(
                    channel = name,
                    attempt,
                    provider_status = status,
                    "channel not healthy; waiting for it (not counted as an attempt)"
                );
                if entry.state != State::Waiting {
                    entry.set(
                        State::Waiting,
                        Some(format!(
                            "channel `{name}` is down: waiting for the provider to recover"
                        )),
                    );
                    note(shared, entry);
                }
            }
            Decision::DeadLetter { class, reason } => {
                return letter(name, event, class, reason, attempt, status)
            }
        }
    }

    // Durable before the offset can be committed: a final record waits for
    // its fsync.
    entry.provider_message_id = provider_message_id.clone();
    entry.set(State::Delivered, None);
    write_final(shared, entry, None).await;
    ChannelOutcome::Delivered {
        attempts: attempt,
        provider_message_id,
    }
}

/// Writes an in-between state (pending, retrying, waiting) without waiting
/// for it: the ledger applies it, in order, before this delivery's final
/// record, and losing it in a crash loses nothing (see `ledger`).
pub(super) fn note(shared: &Shared, delivery: &Delivery) {
    drop(shared.ledger.put(Record {
        delivery: delivery.clone(),
        held: None,
    }));
}

/// Writes a final record, retrying until the ledger takes it: the offset
/// behind it must not be committed without it, and a redelivery without it
/// would send (or dead-letter) again.
pub(super) async fn write_final(shared: &Shared, delivery: &Delivery, held: Option<HeldMessage>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let record = Record {
            delivery: delivery.clone(),
            held: held.clone(),
        };
        let started = Instant::now();
        match shared.ledger.put(record).await {
            Ok(()) => {
                shared
                    .metrics
                    .ledger_write
                    .observe(started.elapsed().as_secs_f64());
                return;
            }
            Err(e) => {
                tracing::error!(channel = %delivery.channel, state = delivery.state.as_str(), error = %e, "cannot record the delivery; retrying so a redelivery does not send twice");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The ledger's view of one attempt: outcome word, status, latency, and
/// the start of the answer (or the error), masked.
fn attempt_record(number: u32, outcome: &attempt::Outcome) -> AttemptRecord {
    let word = match &outcome.observed {
        Observed::Classified(Disposition::Delivered(_)) => "delivered",
        Observed::Classified(Disposition::Retry(_)) => "retry",
        Observed::Classified(Disposition::ChannelDown(_)) => "channel_down",
        Observed::Classified(Disposition::Permanent(_)) => "permanent",
        Observed::Unreachable(_) => "unreachable",
        Observed::Unclassified { .. } => "unclassified",
    };
    let snippet = match (&outcome.received, &outcome.observed) {
        (Some(r), _) => {
            let body = &r.response.body[..r.response.body.len().min(ledger::SNIPPET_BYTES)];
            Some(String::from_utf8_lossy(body).into_owned())
        }
        (None, Observed::Unreachable(reason)) => Some(reason.clone()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
    // The answer was scrubbed of credentials before classify; contact
    // data is masked as in the logs.
    .map(|s| scrub::cut(crate::redact::text(&s).into_owned(), ledger::SNIPPET_BYTES));
    AttemptRecord {
        number,
        at: Utc::now(),
        outcome: word.to_string(),
        provider_status: outcome.status(),
        latency_ms: outcome
            .received
            .as_ref()
            .map(|r| r.latency.as_millis() as u64),
        snippet,
    }
}

/// The recipient as the ledger keeps it: masked.
pub(super) fn recipient(event: &AppointmentEvent) -> Recipient {
    let mask = |s: &Option<String>| s.as_deref().map(|v| crate::redact::text(v).into_owned());
    Recipient {
        email: mask(&event.email),
        phone: mask(&event.phone_e164),
    }
}

/// Until when a confirmation is worth sending: the appointment's start.
pub(super) fn useful_until(event: &AppointmentEvent) -> Option<DateTime<Utc>> {
    let t = event.time.as_deref()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How old the event is: from its `occurred_at`, else its Kafka timestamp.
fn event_age_from(event: &AppointmentEvent, ctx: &Arrived) -> Option<chrono::TimeDelta> {
    let born = event
        .occurred_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or(ctx.timestamp)?;
    Some(Utc::now() - born)
}

/// A provider that answers 429 with a Retry-After throttles the account or
/// sender, not one message: the whole channel waits that long.
fn throttle_on_retry_after(
    gate: &ChannelGate,
    policy: &RetryPolicy,
    observed: &Observed,
    status: Option<u16>,
) {
    if let (Some(429), Observed::Classified(Disposition::Retry(r))) = (status, observed) {
        if let Some(after) = r.after_ms.map(Duration::from_millis) {
            gate.throttle(after.min(policy.max_retry_after));
        }
    }
}

/// Plugin calls run on this task: a call takes tens of microseconds, and
/// a slow one yields at every epoch tick, so it cannot stall other events.
async fn render(
    shared: &Arc<Shared>,
    ch: &Channel,
    event: &AppointmentEvent,
    message: &PluginMessage,
) -> Result<Vec<OutboundRequest>, RenderError> {
    let name = ch.name();
    let started = Instant::now();
    let result = ch.render_message(event, message).await;
    attempt::observe_call(&shared.metrics, name, "render", started);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Delivered, RetryLater};

    #[test]
    fn decisions() {
        let p = RetryPolicy {
            max_attempts: 3,
            give_up_after: Some(Duration::from_secs(3600)),
            ..RetryPolicy::default()
        };
        let retry = |after: Option<u64>| {
            Observed::Classified(Disposition::Retry(RetryLater {
                after_ms: after,
                reason: "busy".into(),
            }))
        };
        let healthy = |attempt: u32| Facts {
            attempt,
            counted: true,
            elapsed: Duration::from_secs(1),
        };
        let down = Facts {
            attempt: 3,
            counted: false,
            elapsed: Duration::from_secs(600),
        };
        let too_long = Facts {
            attempt: 1,
            counted: false,
            elapsed: Duration::from_secs(3600),
        };
        let delivered = |id: Option<&str>| Decision::Delivered {
            provider_message_id: id.map(String::from),
        };
        let max = |n: u64| n;
        let cases: Vec<(Facts, Observed, Decision)> = vec![
            (
                healthy(1),
                Observed::Classified(Disposition::Delivered(Delivered {
                    provider_message_id: Some("m".into()),
                })),
                delivered(Some("m")),
            ),
            (
                healthy(1),
                Observed::Classified(Disposition::Permanent("bad address".into())),
                Decision::DeadLetter {
                    class: ErrorClass::Permanent,
                    reason: "bad address".into(),
                },
            ),
            (healthy(1), retry(None), Decision::RetryAfter(Duration::from_millis(500))),
            (healthy(2), retry(None), Decision::RetryAfter(Duration::from_millis(1000))),
            (healthy(1), retry(Some(7000)), Decision::RetryAfter(Duration::from_millis(7000))),
            (
                healthy(3),
                retry(None),
                Decision::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    reason: "gave up after 3 attempts: busy".into(),
                },
            ),
            (
                healthy(1),
                Observed::Unreachable("timeout".into()),
                Decision::RetryAfter(Duration::from_millis(500)),
            ),
            (
                healthy(3),
                Observed::Unreachable("timeout".into()),
                Decision::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    reason: "gave up after 3 attempts: timeout".into(),
                },
            ),
            // The channel is down: attempts past the limit are not counted,
            // nothing is dead-lettered, however long it lasts.
            (down, retry(None), Decision::WaitForChannel),
            (down, Observed::Unreachable("timeout".into()), Decision::WaitForChannel),
            (
                healthy(1),
                Observed::Classified(Disposition::ChannelDown("HTTP 401".into())),
                Decision::WaitForChannel,
            ),
            // ... unless the user set a time bound.
            (
                too_long,
                Observed::Classified(Disposition::ChannelDown("HTTP 401".into())),
                Decision::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    reason: "gave up after 1h (retry.give_up_after): HTTP 401".into(),
                },
            ),
            // An answered request is never sent again: the host's rule.
            (
                healthy(1),
                Observed::Unclassified {
                    status: 200,
                    error: "trap".into(),
                },
                delivered(None),
            ),
            (
                down,
                Observed::Unclassified {
                    status: 503,
                    error: "trap".into(),
                },
                Decision::DeadLetter {
                    class: ErrorClass::PluginFailed,
                    reason: "the provider answered HTTP 503 and the plugin failed to classify it (trap); not sent again".into(),
                },
            ),
        ];
        for (facts, observed, want) in cases {
            assert_eq!(
                decide(&p, facts, observed.clone(), max),
                want,
                "{facts:?}, {observed:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_ledger_lookup_is_retried_with_backoff_never_taken_as_not_on_record() {
        let started = tokio::time::Instant::now();
        let mut calls = Vec::new();
        let answer = on_record(
            || {
                calls.push(started.elapsed());
                std::future::ready(if calls.len() <= 4 {
                    Err("disk I/O error")
                } else {
                    Ok(true)
                })
            },
            "email",
            &CancellationToken::new(),
        )
        .await;
        // Four failures, then the store answers "delivered": not sent.
        assert_eq!(answer, Some(true));
        let ms: Vec<u128> = calls.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 100, 300, 700, 1500], "backoff doubles from 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoke_ends_a_ledger_outage_wait() {
        let revoked = CancellationToken::new();
        let cancel = revoked.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
        });
        let answer = on_record(
            || std::future::ready(Err::<bool, _>("gone")),
            "sms",
            &revoked,
        )
        .await;
        assert_eq!(answer, None);
    }

    #[test]
    fn without_a_time_bound_a_channel_may_be_down_for_days() {
        let p = RetryPolicy::default();
        let facts = Facts {
            attempt: 1,
            counted: false,
            elapsed: Duration::from_secs(7 * 86_400),
        };
        assert_eq!(
            decide(
                &p,
                facts,
                Observed::Unreachable("connection refused".into()),
                |n| n
            ),
            Decision::WaitForChannel
        );
    }
}
