//! The provider stand-in: one HTTP server on 127.0.0.1 answering
//! Mailgun-shaped and Twilio-shaped sends after a fixed latency, recording
//! when each request arrived and which event it was for.
//!
//! Any other POST whose body is a JSON object with a string `event_id` is a
//! webhook send (plugins/webhook.wasm, tests/plugins/js-webhook.wasm, on any
//! path): it stands for the e-mail channel (`--email-plugin`) and is counted
//! exactly like a Mailgun request, so duplicates and losses are counted the
//! same way. Anything else is answered 404 and not recorded.
//!
//! An [`OutageSwitch`] takes both providers down: while it is on, every
//! request is answered 503 with the provider's JSON error body (after the
//! same latency: a load balancer's refusal is still a round trip), and is
//! recorded as refused, so the requests a host sends into an outage can be
//! counted per channel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::events::EventRef;

/// Which provider a request was shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email = 0,
    Sms = 1,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// One request as it arrived, before the latency sleep: `at` is the moment
/// the host's send reached the provider.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub at: Instant,
    pub channel: Channel,
    /// None when the body did not carry an event id the bench issued.
    pub event: Option<EventRef>,
    /// Answered 503 because the providers were down when it arrived.
    pub refused: bool,
}

struct Shared {
    latency: Duration,
    received: Mutex<Vec<Received>>,
    next_id: AtomicU64,
    /// Both providers down: see [`OutageSwitch`].
    down: AtomicBool,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        // A poisoned lock only means a handler panicked mid-push; the records
        // are still usable.
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the request and says whether it is refused: decided at
    /// arrival, so a request that reached the provider before it went down
    /// is answered as it would have been.
    fn record(&self, channel: Channel, event: Option<EventRef>) -> bool {
        let at = Instant::now();
        let refused = self.down.load(Ordering::SeqCst);
        self.received().push(Received {
            at,
            channel,
            event,
            refused,
        });
        refused
    }
}

/// Takes both providers down and brings them back; a handle that a task on
/// the runtime can own while the bench's main thread watches the host.
#[derive(Clone)]
pub struct OutageSwitch {
    shared: Arc<Shared>,
}

impl OutageSwitch {
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}

pub struct StandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl StandIn {
    /// Binds 127.0.0.1:0 and serves on `rt` (a multi-thread runtime, so the
    /// stand-in keeps answering while the bench's main thread blocks on Kafka
    /// calls).
    pub fn start(rt: &Runtime, latency: Duration) -> Result<StandIn> {
        let shared = Arc::new(Shared {
            latency,
            received: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            down: AtomicBool::new(false),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("bind the stand-in")?;
        let addr = listener.local_addr()?;
        // Responses are written in one go, but a client that sends headers
        // and body in two writes would meet Nagle + delayed ACK (40 ms) on
        // the server's ACK path; the real providers' load balancers do not
        // add that, so neither does the stand-in.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = axum::Router::new()
            .route("/v3/{domain}/messages", post(mailgun))
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(twilio))
            .fallback(webhook)
            .with_state(shared.clone());
        let server = rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("notify-bench: stand-in server stopped: {e}");
            }
        });
        Ok(StandIn {
            addr,
            shared,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received since the last [`take`](Self::take), for progress
    /// and stall detection. Counted under the same lock as the records, so
    /// a `take` resets it with them.
    pub fn count(&self) -> u64 {
        self.shared.received().len() as u64
    }

    /// Takes the records received so far, leaving none.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.shared.received())
    }

    pub fn outage_switch(&self) -> OutageSwitch {
        OutageSwitch {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn mailgun(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let refused = shared.record(Channel::Email, mailgun_event(&body));
    tokio::time::sleep(shared.latency).await;
    if refused {
        // Mailgun's error shape: a JSON object with `message`.
        let body = serde_json::json!({ "message": "Service Unavailable (notify-bench outage)" });
        return json(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({
        "id": format!("<20260213170000.{n:016x}@mg.example.com>"),
        "message": "Queued. Thank you.",
    });
    json(StatusCode::OK, body)
}

async fn twilio(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let refused = shared.record(Channel::Sms, twilio_event(&body));
    tokio::time::sleep(shared.latency).await;
    if refused {
        // Twilio's error shape; 20500 is its "internal server error", not
        // one of the codes that mean the account cannot send.
        let body = serde_json::json!({
            "code": 20500,
            "message": "Internal Server Error (notify-bench outage)",
            "more_info": "https://www.twilio.com/docs/errors/20500",
            "status": 503,
        });
        return json(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({ "sid": format!("SM{n:032x}"), "status": "queued" });
    json(StatusCode::CREATED, body)
}

/// A webhook send: any other path; a POST of a JSON object with a string
/// `event_id`. 200 with an `id` (the webhook plugins take the provider
/// message id from it), 503 with a JSON error during an outage.
async fn webhook(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
    body: Bytes,
) -> Response {
    if method != axum::http::Method::POST {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(event) = webhook_event(&body) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refused = shared.record(Channel::Email, event);
    tokio::time::sleep(shared.latency).await;
    if refused {
        let body = serde_json::json!({ "message": "Service Unavailable (notify-bench outage)" });
        return json(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    json(
        StatusCode::OK,
        serde_json::json!({ "id": format!("wh-{n:016x}") }),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The Mailgun plugin sends the event id as the multipart field `v:event_id`.
fn mailgun_event(body: &[u8]) -> Option<EventRef> {
    const FIELD: &[u8] = b"name=\"v:event_id\"\r\n\r\n";
    let start = find(body, FIELD)? + FIELD.len();
    let len = find(&body[start..], b"\r\n")?;
    EventRef::parse(std::str::from_utf8(&body[start..start + len]).ok()?)
}

/// The bench configures the Twilio body as "Appointment {appointment_id}
/// {event_id}": the event id is the last word of `Body`.
fn twilio_event(body: &[u8]) -> Option<EventRef> {
    let (_, text) = form_urlencoded::parse(body).find(|(k, _)| k == "Body")?;
    EventRef::parse(text.split_whitespace().last()?)
}

/// A webhook body: a JSON object with a string `event_id`. Outer None: not a
/// webhook request at all; inner None: a webhook request for an event id
/// the bench did not issue (recorded as foreign).
fn webhook_event(body: &[u8]) -> Option<Option<EventRef>> {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        event_id: std::borrow::Cow<'a, str>,
    }
    let parsed: Body<'_> = serde_json::from_slice(body).ok()?;
    Some(EventRef::parse(&parsed.event_id))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the stand-in alone can serve.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub requests_per_second: f64,
    pub concurrency: usize,
    pub seconds: f64,
    pub latency_ms: u64,
    pub errors: u64,
}

/// Loads the stand-in from a reqwest client in this process with
/// `concurrency` requests in flight for `seconds` (after a 0.5 s warm-up that
/// opens the connections), alternating Mailgun and Twilio requests shaped like
/// the plugins' (so the body parsing costs what it costs during the runs).
/// The client shares the machine with the server, as the host does in the
/// runs, so this is the capacity the host can hope to reach here.
pub async fn measure_capacity(
    standin: &StandIn,
    concurrency: usize,
    seconds: f64,
    latency_ms: u64,
) -> Result<Capacity> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("build the load client")?;
    let base = standin.url();
    let mailgun_url = format!("{base}/v3/mg.example.com/messages");
    let twilio_url = format!("{base}/2010-04-01/Accounts/AC0123/Messages.json");
    let boundary = "notify-host-mailgun-form-boundary";
    let mailgun_body = Bytes::from(
        [
            ("from", "noreply@mg.example.com"),
            ("to", "user@example.com"),
            ("subject", "Your appointment is confirmed"),
            ("text", "Hello! Your appointment appt-1 is booked."),
            ("v:event_id", "00000000-0000-4000-8000-000000000000"),
            ("v:appointment_id", "appt-1"),
        ]
        .iter()
        .map(|(k, v)| {
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
        })
        .chain(std::iter::once(format!("--{boundary}--\r\n")))
        .collect::<String>(),
    );
    let mailgun_type = format!("multipart/form-data; boundary={boundary}");
    let twilio_body = Bytes::from(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("To", "+15555550123")
            .append_pair("From", "+15005550006")
            .append_pair(
                "Body",
                "Appointment appt-1 00000000-0000-4000-8000-000000000000",
            )
            .finish(),
    );

    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let warm = start + Duration::from_millis(500);
    let end = warm + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let client = client.clone();
        let (url, body, content_type) = if i % 2 == 0 {
            (
                mailgun_url.clone(),
                mailgun_body.clone(),
                mailgun_type.clone(),
            )
        } else {
            (
                twilio_url.clone(),
                twilio_body.clone(),
                "application/x-www-form-urlencoded".to_string(),
            )
        };
        let ok = ok.clone();
        let errors = errors.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                let sent = client
                    .post(&url)
                    .header(header::CONTENT_TYPE, &content_type)
                    .body(body.clone())
                    .send()
                    .await;
                let done = match sent {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if done {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep_until(warm.into()).await;
    let at_warm = ok.load(Ordering::Relaxed);
    tokio::time::sleep_until(end.into()).await;
    let at_end = ok.load(Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    Ok(Capacity {
        requests_per_second: (at_end - at_warm) as f64 / seconds,
        concurrency,
        seconds,
        latency_ms,
        errors: errors.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_come_out_of_both_request_shapes() {
        let id = EventRef {
            run: 0xabc,
            index: 77,
        };
        let text = id.to_string();
        let mailgun = format!(
            "--b\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nu@example.com\r\n\
             --b\r\nContent-Disposition: form-data; name=\"v:event_id\"\r\n\r\n{text}\r\n--b--\r\n"
        );
        assert_eq!(mailgun_event(mailgun.as_bytes()), Some(id));
        let twilio = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", "+15555550123")
            .append_pair("Body", &format!("Appointment appt-9 {text}"))
            .finish();
        assert_eq!(twilio_event(twilio.as_bytes()), Some(id));
        assert_eq!(twilio_event(b"Body=hello"), None);
        let webhook = format!(
            r#"{{"event_id":"{text}","event_type":"appointments.created","purpose":"confirmation","appointment":{{"appointment_id":"appt-9"}}}}"#
        );
        assert_eq!(webhook_event(webhook.as_bytes()), Some(Some(id)));
        assert_eq!(
            webhook_event(br#"{"event_id":"9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f"}"#),
            Some(None)
        );
        assert_eq!(webhook_event(br#"{"id":"x"}"#), None);
        assert_eq!(webhook_event(br#"{"event_id":7}"#), None);
        assert_eq!(webhook_event(b"to=u@example.com"), None);
    }

    #[test]
    fn an_outage_refuses_both_channels_with_their_error_shapes() -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let standin = StandIn::start(&rt, Duration::ZERO)?;
        let switch = standin.outage_switch();
        let base = standin.url();
        let post = |path: &str| {
            let url = format!("{base}{path}");
            rt.block_on(async move {
                let r = reqwest::Client::new().post(url).body("x").send().await?;
                let status = r.status().as_u16();
                let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
                anyhow::Ok((status, body))
            })
        };
        let mailgun = "/v3/mg.example.com/messages";
        let twilio = "/2010-04-01/Accounts/AC0123/Messages.json";
        let id = EventRef { run: 7, index: 3 };
        let webhook = || {
            let url = format!("{base}/hook");
            let body = serde_json::json!({ "event_id": id.to_string(), "purpose": "confirmation" });
            rt.block_on(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
                anyhow::Ok((status, body))
            })
        };
        // Not a webhook body on an unknown path: 404, not recorded.
        let stray = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{base}/elsewhere"))
                .body("x")
                .send()
                .await
        })?;
        assert_eq!(stray.status().as_u16(), 404);

        switch.set_down(true);
        let (status, body) = post(mailgun)?;
        assert_eq!(status, 503);
        assert!(body["message"].is_string(), "{body}");
        let (status, body) = post(twilio)?;
        assert_eq!(status, 503);
        assert_eq!(body["code"], 20500, "{body}");
        assert_eq!(webhook()?.0, 503);
        switch.set_down(false);
        assert_eq!(post(mailgun)?.0, 200);
        assert_eq!(post(twilio)?.0, 201);
        let (status, body) = webhook()?;
        assert_eq!(status, 200);
        assert!(body["id"].is_string(), "{body}");

        let records = standin.take();
        let refused: Vec<(Channel, bool)> =
            records.iter().map(|r| (r.channel, r.refused)).collect();
        assert_eq!(
            refused,
            [
                (Channel::Email, true),
                (Channel::Sms, true),
                (Channel::Email, true),
                (Channel::Email, false),
                (Channel::Sms, false),
                (Channel::Email, false)
            ]
        );
        // A webhook request is an e-mail for the event in its JSON.
        assert_eq!(records[2].event, Some(id));
        assert_eq!(records[5].event, Some(id));
        Ok(())
    }
}
