//! Working one event to its end: every requested channel delivered, skipped
//! (disabled, or already delivered), or dead-lettered.
//!
//! The decision for one channel send is taken in one place,
//! [`decide`], from the plugin's classification or the transport error and
//! the channel's retry policy; it is tested as a table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message, OwnedMessage};
use tracing::Instrument;

use crate::channels::{Attempt, Channels, RenderError};
use crate::config::Config;
use crate::dedup::DedupStore;
use crate::dlq::{DeadLetter, DeadLetters, ErrorClass, Source};
use crate::event::{self, AppointmentEvent};
use crate::metrics::{Metrics, OutcomeLabels, PluginCallLabels, ProviderLabels, ReasonLabels};
use crate::plugin::{Disposition, PluginError};
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
}

/// What to do after one failed or answered send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This request is done; go on with the next (or finish).
    Delivered { provider_message_id: Option<String> },
    /// Wait, then send again as attempt `attempt + 1`.
    RetryAfter(Duration),
    /// Give up on the channel for this event.
    DeadLetter { class: ErrorClass, reason: String },
}

/// What happened on one attempt, as `decide` needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Classified(Disposition),
    /// The provider did not answer (timeout, connection refused or reset).
    Unreachable(String),
    /// The plugin failed while classifying (trap, deadline, memory).
    PluginFailed(String),
}

/// The one place a send's result becomes a decision.
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    observed: Observed,
    jitter: impl FnOnce(u64) -> u64,
) -> Decision {
    let (provider_after, reason, class) = match observed {
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
        Observed::Classified(Disposition::Retry(r)) => (
            r.after_ms.map(Duration::from_millis),
            r.reason,
            ErrorClass::RetriesExhausted,
        ),
        Observed::Unreachable(reason) => (None, reason, ErrorClass::RetriesExhausted),
        Observed::PluginFailed(reason) => (None, reason, ErrorClass::PluginFailed),
    };
    match retry_or_give_up(policy, attempt, provider_after, reason, class, jitter) {
        Ok(wait) => Decision::RetryAfter(wait),
        Err((class, reason)) => Decision::DeadLetter { class, reason },
    }
}

/// After a transient failure of attempt `attempt`: how long to wait, or why
/// to give up.
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
pub async fn process(shared: Arc<Shared>, msg: Arc<OwnedMessage>) {
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
            dead_letter(&shared, &msg, &letter).await;
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
        let work = event.requested_channels().map(|name| {
            let shared = shared.clone();
            let event = event.clone();
            let name = name.to_string();
            async move { deliver(&shared, &event, &name).await }
        });
        // Channels of one event go out concurrently: e-mail does not wait on SMS.
        for outcome in futures_util::future::join_all(work).await {
            if let ChannelOutcome::DeadLetter(letter) = outcome {
                dead_letter(&shared, &msg, &letter).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Writes a dead letter, retrying until the broker takes it: the offset must
/// not be committed without it.
async fn dead_letter(shared: &Shared, msg: &OwnedMessage, letter: &DeadLetter) {
    let source = Source {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key(),
        payload: msg.payload().unwrap_or_default(),
        headers: msg.headers(),
    };
    let mut wait = Duration::from_millis(200);
    loop {
        match shared.dlq.send(&source, letter).await {
            Ok(()) => {
                shared
                    .metrics
                    .dlq_events
                    .get_or_create(&ReasonLabels {
                        reason: letter.class.as_str().to_string(),
                    })
                    .inc();
                tracing::info!(dlq_topic = shared.dlq.topic(), class = letter.class.as_str(), channel = letter.channel.as_deref(), reason = %letter.reason, "dead-lettered");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "dead-letter write failed; the offset stays uncommitted until it succeeds");
                tokio::time::sleep(wait).await;
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
) -> ChannelOutcome {
    let started = Instant::now();
    let outcome = deliver_inner(shared, event, name).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let event_id = event.event_id.as_str();
    let word = match &outcome {
        ChannelOutcome::Delivered { .. } => "delivered",
        ChannelOutcome::AlreadyDelivered => "duplicate",
        ChannelOutcome::Disabled => "disabled",
        ChannelOutcome::DeadLetter(_) => "dead_letter",
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
    }
    outcome
}

async fn deliver_inner(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    name: &str,
) -> ChannelOutcome {
    match shared.config.channels.get(name) {
        None => {
            return letter(
                name,
                event,
                ErrorClass::UnknownChannel,
                format!("channel `{name}` is not configured on this host"),
                0,
                None,
            )
        }
        Some(c) if !c.enabled => return ChannelOutcome::Disabled,
        Some(_) => {}
    }
    if shared.channels.get(name).is_none() {
        return letter(
            name,
            event,
            ErrorClass::UnknownChannel,
            format!("channel `{name}` is not loaded"),
            0,
            None,
        );
    }
    match shared.dedup.is_delivered(&event.event_id, name) {
        Ok(true) => return ChannelOutcome::AlreadyDelivered,
        Ok(false) => {}
        // Sending without knowing could duplicate; failing loses nothing: the
        // event is retried by redelivery. Treat it as a transient failure.
        Err(e) => tracing::error!(channel = name, error = %e, "dedup lookup failed"),
    }
    let policy = shared
        .config
        .channels
        .get(name)
        .map(|c| c.retry)
        .unwrap_or_default();

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
                        tokio::time::sleep(wait).await;
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
        let request = requests[next].clone();
        let (observed, status) = match send(shared, name, request, attempt).await {
            Ok(Attempt::Answered {
                received,
                disposition,
            }) => (
                Observed::Classified(disposition),
                Some(received.response.status),
            ),
            Ok(Attempt::Unreachable(e)) => (Observed::Unreachable(e.to_string()), None),
            Err(e) => (Observed::PluginFailed(e.to_string()), None),
        };
        match decide(&policy, attempt, observed, |n| fastrand::u64(0..=n)) {
            Decision::Delivered {
                provider_message_id: id,
            } => {
                provider_message_id = id.or(provider_message_id);
                next += 1;
            }
            Decision::RetryAfter(wait) => {
                tracing::info!(
                    channel = name,
                    attempt,
                    provider_status = status,
                    retry_in_ms = wait.as_millis() as u64,
                    "transient failure; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
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
    observe_call(shared, name, "render", started);
    result
}

fn observe_call(shared: &Shared, name: &str, call: &str, started: Instant) {
    shared
        .metrics
        .plugin_call
        .get_or_create(&PluginCallLabels {
            channel: name.to_string(),
            call: call.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}

async fn send(
    shared: &Arc<Shared>,
    name: &str,
    request: OutboundRequest,
    attempt: u32,
) -> Result<Attempt, PluginError> {
    let labels = |class: &str| ProviderLabels {
        channel: name.to_string(),
        status_class: class.to_string(),
    };
    let received = match shared.transport.send(request).await {
        Ok(r) => r,
        Err(e) => {
            shared
                .metrics
                .provider_requests
                .get_or_create(&labels("error"))
                .inc();
            return Ok(Attempt::Unreachable(e));
        }
    };
    let class = format!("{}xx", received.response.status / 100);
    shared
        .metrics
        .provider_requests
        .get_or_create(&labels(&class))
        .inc();
    shared
        .metrics
        .provider_latency
        .get_or_create(&Metrics::channel(name))
        .observe(received.latency.as_secs_f64());
    // The provider has answered: a failed classify must not lead to a
    // second send (a duplicate if it was accepted), so classify is retried
    // on the same answer first.
    let mut tries = 0;
    let disposition = loop {
        tries += 1;
        match classify(shared, name, &received.response, attempt).await {
            Ok(d) => break d,
            Err(e) if tries < CLASSIFY_TRIES => {
                tracing::warn!(channel = name, error = %e, "classify failed; trying again on the same answer");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Attempt::Answered {
        received,
        disposition,
    })
}

/// How often classify is tried on one provider answer.
const CLASSIFY_TRIES: u32 = 3;

async fn classify(
    shared: &Arc<Shared>,
    name: &str,
    response: &crate::plugin::HttpResponse,
    attempt: u32,
) -> Result<Disposition, PluginError> {
    let Some(ch) = shared.channels.get(name) else {
        return Err(PluginError::Trap {
            plugin: name.to_string(),
            call: "classify",
            message: "channel not loaded".into(),
        });
    };
    let _slot = shared.plugin_slots.acquire().await;
    let started = Instant::now();
    let result = ch.classify(response, attempt).await;
    observe_call(shared, name, "classify", started);
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
            ..RetryPolicy::default()
        };
        let retry = |after: Option<u64>| {
            Observed::Classified(Disposition::Retry(RetryLater {
                after_ms: after,
                reason: "busy".into(),
            }))
        };
        let max = |n: u64| n;
        let cases: Vec<(u32, Observed, Decision)> = vec![
            (
                1,
                Observed::Classified(Disposition::Delivered(Delivered {
                    provider_message_id: Some("m".into()),
                })),
                Decision::Delivered {
                    provider_message_id: Some("m".into()),
                },
            ),
            (
                1,
                Observed::Classified(Disposition::Permanent("bad address".into())),
                Decision::DeadLetter {
                    class: ErrorClass::Permanent,
                    reason: "bad address".into(),
                },
            ),
            (
                1,
                retry(None),
                Decision::RetryAfter(Duration::from_millis(500)),
            ),
            (
                2,
                retry(None),
                Decision::RetryAfter(Duration::from_millis(1000)),
            ),
            (
                1,
                retry(Some(7000)),
                Decision::RetryAfter(Duration::from_millis(7000)),
            ),
            (
                3,
                retry(None),
                Decision::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    reason: "gave up after 3 attempts: busy".into(),
                },
            ),
            (
                1,
                Observed::Unreachable("timeout".into()),
                Decision::RetryAfter(Duration::from_millis(500)),
            ),
            (
                3,
                Observed::Unreachable("timeout".into()),
                Decision::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    reason: "gave up after 3 attempts: timeout".into(),
                },
            ),
            (
                3,
                Observed::PluginFailed("trap".into()),
                Decision::DeadLetter {
                    class: ErrorClass::PluginFailed,
                    reason: "gave up after 3 attempts: trap".into(),
                },
            ),
        ];
        for (attempt, observed, want) in cases {
            assert_eq!(
                decide(&p, attempt, observed.clone(), max),
                want,
                "attempt {attempt}, {observed:?}"
            );
        }
    }
}
