//! Working one event to its end: every requested channel delivered, skipped
//! (disabled, or already delivered), or dead-lettered.
//!
//! The decision after each send is taken in one place, [`decide`], from what
//! the attempt observed, whether the channel was healthy, and the channel's
//! retry policy; it is tested as a table. Every send goes through its
//! channel's gate (`health`): while the channel is down the send waits there,
//! uncounted, instead of being retried against a failing provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::attempt::{self, Hooks, Observed};
use crate::channels::{Channels, RenderError};
use crate::config::Config;
use crate::dedup::DedupStore;
use crate::dlq::{DeadLetter, DeadLetters, ErrorClass, Source, WriteFailure, Written};
use crate::event::{self, AppointmentEvent};
use crate::health::{ChannelGate, Health};
use crate::metrics::{Metrics, OutcomeLabels, ReasonLabels};
use crate::plugin::{Disposition, Purpose};
use crate::retry::RetryPolicy;
use crate::transport::{OutboundRequest, Transport};

/// What the pipeline needs to work an event.
pub struct Shared {
    pub config: Arc<Config>,
    pub channels: Arc<Channels>,
    pub transport: Transport,
    pub dedup: DedupStore,
    pub dlq: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// One permit per pooled plugin instance (`plugins.max_instances`): a
    /// call waits for a slot instead of failing when the pool is full.
    pub plugin_slots: Arc<tokio::sync::Semaphore>,
}

/// How one channel of one event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelOutcome {
    Delivered {
        attempts: u32,
        provider_message_id: Option<String>,
    },
    /// Recorded as delivered earlier (redelivery or duplicate publish).
    AlreadyDelivered,
    /// Requested but disabled in config.
    Disabled,
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
        })
    } else {
        event::parse(payload)
    };
    let event = match event {
        Ok(e) => Arc::new(e),
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
        let work = known.into_iter().map(|name| {
            let shared = shared.clone();
            let event = event.clone();
            let name = name.to_string();
            let revoked = revoked.clone();
            async move { deliver(&shared, &event, &name, &revoked).await }
        });
        // Channels of one event go out concurrently: e-mail does not wait on SMS.
        for outcome in futures_util::future::join_all(work).await {
            if let ChannelOutcome::DeadLetter(letter) = outcome {
                dead_letter(&shared, &msg, &letter, &revoked).await;
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
async fn dead_letter(
    shared: &Shared,
    msg: &OwnedMessage,
    letter: &DeadLetter,
    revoked: &CancellationToken,
) {
    let source = Source {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key(),
        payload: msg.payload().unwrap_or_default(),
        headers: msg.headers(),
    };
    let health = shared.dlq.health();
    let mut wait = Duration::from_millis(200);
    loop {
        if revoked.is_cancelled() {
            tracing::info!(
                class = letter.class.as_str(),
                "partition revoked before the dead letter was written; left for its next owner"
            );
            return;
        }
        match shared.dlq.send(&source, letter).await {
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
                return;
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

fn letter(
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

/// One channel of one event, to its end.
async fn deliver(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    name: &str,
    revoked: &CancellationToken,
) -> ChannelOutcome {
    let started = Instant::now();
    let outcome = deliver_inner(shared, event, name, revoked).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let event_id = event.event_id.as_str();
    let word = match &outcome {
        ChannelOutcome::Delivered { .. } => "delivered",
        ChannelOutcome::AlreadyDelivered => "duplicate",
        ChannelOutcome::Disabled => "disabled",
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
    if outcome == ChannelOutcome::AlreadyDelivered {
        shared
            .metrics
            .dedup_hits
            .get_or_create(&Metrics::channel(name))
            .inc();
    }
    match &outcome {
        ChannelOutcome::Delivered {
            attempts,
            provider_message_id,
        } => {
            tracing::info!(
                event_id,
                channel = name,
                outcome = "delivered",
                attempts,
                provider_message_id = provider_message_id.as_deref(),
                elapsed_ms,
                "channel delivered"
            )
        }
        ChannelOutcome::AlreadyDelivered => tracing::info!(
            event_id,
            channel = name,
            outcome = "duplicate",
            "channel already delivered for this event; not sent again"
        ),
        ChannelOutcome::Disabled => tracing::info!(
            event_id,
            channel = name,
            outcome = "disabled",
            "channel requested but disabled in config; skipped"
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
    outcome
}

/// Whether the dedup store has the delivery; `None` if the partition was
/// revoked first. Sending without knowing could send twice, and waiting loses
/// nothing (the event stays in flight, its offset uncommitted), so a failed
/// lookup is a transient failure of the host, retried with backoff until the
/// store answers: never taken as "not delivered".
async fn delivered_before<E: std::fmt::Display>(
    mut lookup: impl FnMut() -> Result<bool, E>,
    channel: &str,
    revoked: &CancellationToken,
) -> Option<bool> {
    let mut wait = Duration::from_millis(100);
    loop {
        match lookup() {
            Ok(delivered) => return Some(delivered),
            Err(e) => {
                tracing::error!(channel, error = %e, retry_in_ms = wait.as_millis() as u64, "dedup lookup failed; not sending until the store answers");
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
    revoked: &CancellationToken,
) -> ChannelOutcome {
    // Unknown names never get here: `process` dead-letters them together.
    if shared.config.channels.get(name).is_some_and(|c| !c.enabled) {
        return ChannelOutcome::Disabled;
    }
    let (Some(channel), Some(gate)) = (shared.channels.get(name), shared.health.get(name)) else {
        return letter(
            name,
            event,
            ErrorClass::UnknownChannel,
            format!("channel `{name}` is not loaded"),
            0,
            None,
        );
    };
    match delivered_before(
        || shared.dedup.is_delivered(&event.event_id, name),
        name,
        revoked,
    )
    .await
    {
        Some(true) => return ChannelOutcome::AlreadyDelivered,
        Some(false) => {}
        None => return ChannelOutcome::Revoked,
    }
    let policy = channel.config.retry;
    let first_attempt = Instant::now();

    let mut attempt = 1;
    let requests = loop {
        match render(shared, event, name).await {
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
    while next < requests.len() {
        let Some(permit) = gate.admit(revoked).await else {
            return ChannelOutcome::Revoked;
        };
        // Checked after the wait too: a revoke may have come while the
        // permit was being handed over.
        if revoked.is_cancelled() {
            return ChannelOutcome::Revoked;
        }
        let outcome = attempt::attempt(
            channel,
            &shared.transport,
            requests[next].clone(),
            attempt,
            Purpose::Confirmation,
            Hooks {
                metrics: Some(&shared.metrics),
                plugin_slots: Some(&shared.plugin_slots),
            },
        )
        .await;
        let status = outcome.status();
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
            }
            Decision::DeadLetter { class, reason } => {
                return letter(name, event, class, reason, attempt, status)
            }
        }
    }

    // Durable before the offset can be committed: record() waits for fsync.
    let mut wait = Duration::from_millis(100);
    while let Err(e) = shared.dedup.record_delivered(&event.event_id, name).await {
        tracing::error!(channel = name, error = %e, "cannot record the delivery; retrying so a redelivery does not send twice");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    ChannelOutcome::Delivered {
        attempts: attempt,
        provider_message_id,
    }
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
    event: &AppointmentEvent,
    name: &str,
) -> Result<Vec<OutboundRequest>, RenderError> {
    let Some(ch) = shared.channels.get(name) else {
        return Err(RenderError::Empty {
            plugin: name.to_string(),
        });
    };
    let _slot = shared.plugin_slots.acquire().await;
    let started = Instant::now();
    let result = ch.render(event).await;
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
    async fn a_failing_dedup_lookup_is_retried_with_backoff_never_taken_as_not_delivered() {
        let started = tokio::time::Instant::now();
        let mut calls = Vec::new();
        let answer = delivered_before(
            || {
                calls.push(started.elapsed());
                if calls.len() <= 4 {
                    Err("disk I/O error")
                } else {
                    Ok(true)
                }
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
    async fn a_revoke_ends_a_dedup_store_outage_wait() {
        let revoked = CancellationToken::new();
        let cancel = revoked.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
        });
        let answer = delivered_before(|| Err::<bool, _>("gone"), "sms", &revoked).await;
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
