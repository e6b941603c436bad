//! One attempt of one request: send it once, have the plugin classify the
//! answer, and report what was observed. The pipeline and
//! `notify-host plugin send` both go through [`attempt`]: one code path.
//!
//! Invariant: once the provider has answered, nothing here sends the request
//! again. A classify that fails is retried on the same answer
//! ([`CLASSIFY_TRIES`] times); if it still fails the answer is reported as
//! [`Observed::Unclassified`], and the caller decides by the host's own rule
//! (a 2xx is delivered, anything else is dead-lettered), never by resending:
//! a resend of an accepted request is a duplicate message to a patient.
//!
//! Invariant: the plugin never sees a credential. A provider (or a proxy in
//! front of it) that echoes the request would hand the plugin the
//! `Authorization` the host attached; every configured credential
//! ([`crate::scrub::known`], this channel's among them) is scrubbed from the
//! answer's headers and body before classify, and the [`Outcome`] carries
//! the scrubbed answer, so nothing downstream holds the original either.

use std::time::Instant;

use crate::channels::Channel;
use crate::health::Signal;
use crate::metrics::{Metrics, PluginCallLabels, ProviderLabels};
use crate::plugin::{Disposition, Header, HttpResponse, PluginError, Purpose};
use crate::scrub::{self, Secrets};
use crate::transport::{OutboundRequest, Received, Transport};

/// How often classify is tried on one provider answer: a trap from a
/// deadline overrun on a busy host usually passes on the next try.
pub const CLASSIFY_TRIES: u32 = 3;

/// What one attempt showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The provider answered and the plugin classified the answer.
    Classified(Disposition),
    /// The provider did not answer (timeout, connection refused or reset).
    Unreachable(String),
    /// The provider answered with `status`, and the plugin failed on every
    /// try to classify it.
    Unclassified { status: u16, error: String },
}

impl Observed {
    /// What the attempt says about the channel's provider.
    pub fn signal(&self) -> Signal {
        match self {
            Observed::Classified(Disposition::Delivered(_) | Disposition::Permanent(_)) => {
                Signal::Success
            }
            Observed::Classified(Disposition::Retry(r)) => Signal::Transient(r.reason.clone()),
            Observed::Classified(Disposition::ChannelDown(reason)) => {
                Signal::ChannelDown(reason.clone())
            }
            Observed::Unreachable(reason) => Signal::Transient(reason.clone()),
            Observed::Unclassified { status, .. } if (200..300).contains(status) => Signal::Success,
            Observed::Unclassified { .. } => Signal::Neutral,
        }
    }
}

/// The attempt's observation and, when the provider answered, its answer.
#[derive(Debug)]
pub struct Outcome {
    pub observed: Observed,
    pub received: Option<Received>,
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        self.received.as_ref().map(|r| r.response.status)
    }
}

/// What the pipeline adds around an attempt; the CLI passes
/// `Hooks::default()`.
#[derive(Default, Clone, Copy)]
pub struct Hooks<'a> {
    pub metrics: Option<&'a Metrics>,
}

/// Sends `request` once and classifies the answer (`attempt` is the event's
/// attempt number the plugin sees).
pub async fn attempt(
    channel: &Channel,
    transport: &Transport,
    request: OutboundRequest,
    attempt: u32,
    purpose: Purpose,
    hooks: Hooks<'_>,
) -> Outcome {
    let name = channel.name();
    let received = transport.send(request).await;
    if let Some(m) = hooks.metrics {
        let class = match &received {
            Ok(r) => format!("{}xx", r.response.status / 100),
            Err(_) => "error".to_string(),
        };
        m.provider_requests
            .get_or_create(&ProviderLabels {
                channel: name.to_string(),
                status_class: class,
            })
            .inc();
        if let Ok(r) = &received {
            m.provider_latency
                .get_or_create(&Metrics::channel(name))
                .observe(r.latency.as_secs_f64());
        }
    }
    let mut received = match received {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                observed: Observed::Unreachable(e.to_string()),
                received: None,
            }
        }
    };
    received.response = scrubbed(&scrub::known(), received.response);
    let mut tries = 0;
    let observed = loop {
        tries += 1;
        match classify(channel, &received.response, attempt, purpose, hooks).await {
            Ok(d) => break Observed::Classified(d),
            Err(e) if tries < CLASSIFY_TRIES => {
                tracing::warn!(channel = name, error = %e, "classify failed; trying again on the same answer");
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(tries))).await;
            }
            Err(e) => {
                break Observed::Unclassified {
                    status: received.response.status,
                    error: e.to_string(),
                }
            }
        }
    };
    Outcome {
        observed,
        received: Some(received),
    }
}

/// `response` with every form of `secrets` scrubbed from header values and
/// the body (header names are the server's vocabulary, not its data).
/// Untouched, and not copied, when nothing matched.
pub fn scrubbed(secrets: &Secrets, mut response: HttpResponse) -> HttpResponse {
    if secrets.is_empty() {
        return response;
    }
    for Header { value, .. } in &mut response.headers {
        if let std::borrow::Cow::Owned(clean) = secrets.scrub(value) {
            *value = clean;
        }
    }
    if let std::borrow::Cow::Owned(clean) = secrets.scrub_bytes(&response.body) {
        response.body = clean;
    }
    response
}

async fn classify(
    channel: &Channel,
    response: &HttpResponse,
    attempt: u32,
    purpose: Purpose,
    hooks: Hooks<'_>,
) -> Result<Disposition, PluginError> {
    let started = Instant::now();
    let result = channel.classify_for(response, attempt, purpose).await;
    if let Some(m) = hooks.metrics {
        observe_call(m, channel.name(), "classify", started);
    }
    result
}

/// Records one plugin call's duration.
pub fn observe_call(metrics: &Metrics, channel: &str, call: &str, started: Instant) {
    metrics
        .plugin_call
        .get_or_create(&PluginCallLabels {
            channel: channel.to_string(),
            call: call.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Delivered, RetryLater};

    #[test]
    fn an_echoed_credential_never_reaches_the_plugin() {
        let secrets = Secrets::new(["echoed-token-123456"]);
        let header = |name: &str, value: &str| Header {
            name: name.into(),
            value: value.into(),
        };
        let response = HttpResponse {
            status: 200,
            headers: vec![
                header("x-echo-authorization", "Bearer echoed-token-123456"),
                header("content-type", "application/json"),
            ],
            body: br#"{"authorization":"Bearer echoed-token-123456","id":"m-1"}"#.to_vec(),
        };
        let clean = scrubbed(&secrets, response);
        assert_eq!(clean.headers[0].value, "Bearer [redacted]");
        assert_eq!(clean.headers[1].value, "application/json");
        assert_eq!(
            clean.body,
            br#"{"authorization":"Bearer [redacted]","id":"m-1"}"#.to_vec()
        );
    }

    #[test]
    fn what_an_attempt_says_about_the_provider() {
        let retry = Disposition::Retry(RetryLater {
            after_ms: None,
            reason: "HTTP 503".into(),
        });
        let table: Vec<(Observed, Signal)> = vec![
            (
                Observed::Classified(Disposition::Delivered(Delivered {
                    provider_message_id: None,
                })),
                Signal::Success,
            ),
            // The provider judged the event: the channel works.
            (
                Observed::Classified(Disposition::Permanent("bad number".into())),
                Signal::Success,
            ),
            (
                Observed::Classified(retry),
                Signal::Transient("HTTP 503".into()),
            ),
            (
                Observed::Classified(Disposition::ChannelDown("HTTP 401".into())),
                Signal::ChannelDown("HTTP 401".into()),
            ),
            (
                Observed::Unreachable("timeout".into()),
                Signal::Transient("timeout".into()),
            ),
            (
                Observed::Unclassified {
                    status: 202,
                    error: "trap".into(),
                },
                Signal::Success,
            ),
            (
                Observed::Unclassified {
                    status: 503,
                    error: "trap".into(),
                },
                Signal::Neutral,
            ),
        ];
        for (observed, want) in table {
            assert_eq!(observed.signal(), want, "{observed:?}");
        }
    }
}
