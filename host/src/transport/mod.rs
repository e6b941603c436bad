//! Outbound HTTP: the only place a rendered request leaves the host.
//!
//! Invariants: a request goes out only if [`prepare`] accepted it: its URL's
//! origin is on the channel's allow-list (so a plugin can neither send data
//! elsewhere nor get credentials attached to a foreign host), its path is
//! under one of the channel's allowed prefixes, its method is one the channel
//! allows, and it is within `[plugins.caps]`; nothing a plugin renders can
//! panic the host (every construction from plugin output is fallible and
//! becomes a [`Refusal`]). Credentials are attached here, from the channel's
//! config, never by a plugin. Requests go direct unless the channel names a
//! `proxy`: `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` in the environment are
//! ignored, so the environment cannot route requests (and credentials)
//! through a third party. Redirects are not followed (a 3xx goes to the
//! plugin to classify, so a redirect cannot lead around the allow-list);
//! response bodies are cut at a limit.

mod prepare;
mod signing;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Serialize;
use url::Url;

use crate::config::ChannelConfig;
use crate::plugin::{Header, HttpResponse};

pub(crate) use prepare::check_request_count;
pub use prepare::{prepare, Cap};
pub use signing::signature;

/// Why the host refused to send a rendered request. A plugin bug or an attack,
/// never a provider problem, so it is not retried. Plugin-supplied text in a
/// message is cut (see [`shown`]): the message ends up in logs and dead-letter
/// headers, and a plugin must not be able to make those unbounded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request URL {url} is not a valid absolute URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("host refused a request to {origin}: not in channel `{channel}`'s allowed hosts ({allowed})")]
    HostNotAllowed {
        channel: String,
        origin: String,
        allowed: String,
    },
    #[error("request URL must not carry credentials; the host attaches the channel's auth")]
    CredentialsInUrl,
    #[error("method {method} is not allowed on channel `{channel}` (allowed: {allowed}; channels.{channel}.allowed_methods)")]
    MethodNotAllowed {
        channel: String,
        /// The method as the plugin gave it, cut.
        method: String,
        allowed: String,
    },
    #[error("path {path} is not allowed on channel `{channel}`: {why} (allowed: {allowed}; channels.{channel}.allowed_paths)")]
    PathNotAllowed {
        channel: String,
        /// The path after the URL's normalisation, cut.
        path: String,
        why: String,
        allowed: String,
    },
    /// The header's name, quoted and cut (see [`shown`]).
    #[error("header {0} is not a valid HTTP header")]
    BadHeader(String),
    /// The header's name, quoted and cut (see [`shown`]).
    #[error("header {0} is set by the host, not by a plugin")]
    ReservedHeader(String),
    /// Past one of `[plugins.caps]`; the message names the cap's key.
    #[error("{}", .cap.describe(*.found, *.limit))]
    OverCap {
        cap: Cap,
        found: usize,
        limit: usize,
    },
    /// More headers than `http::HeaderMap` can hold. The headers cap is far
    /// below that, so this is a guard, not an expected outcome.
    #[error("request has {0} headers, more than an HTTP header map holds")]
    HeaderMapFull(usize),
}

/// How much plugin-supplied text a refusal echoes: enough to recognise it.
const SHOWN_CHARS: usize = 40;

/// Plugin-supplied text for a message: quoted and escaped, and cut after
/// [`SHOWN_CHARS`] characters with its full length noted, so a 100,000-byte
/// method or URL does not end up whole in a log line or dead-letter header.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// The provider could not be reached or did not answer in time: transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP error: {0}")]
    Other(String),
}

impl TransportError {
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Timeout(_) => "timeout",
            TransportError::Connect(_) => "connect",
            TransportError::Other(_) => "http",
        }
    }
}

/// A checked request with credentials attached, ready to send. Only
/// [`prepare`] makes one.
#[derive(Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// The channel's proxy, if it has one: [`Transport::send`] picks the
    /// client for it. Never shown: it may carry credentials.
    proxy: Option<Url>,
    /// The word `plugin render` keeps of the credential (`Basic`, `Bearer`);
    /// `None` for a `header` credential, which is shown as `[redacted]` whole.
    auth_scheme: Option<&'static str>,
    /// `auth = { type = "hmac" }`: signed by [`Transport::send`] at each
    /// send, not here, so every try carries its own time.
    signer: Option<signing::Signer>,
}

impl std::fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("body_bytes", &self.body.len())
            .field("proxied", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

/// How `plugin render` shows a request: exactly what would be sent, with
/// credential values replaced.
#[derive(Debug, Clone, Serialize)]
pub struct RedactedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body as text when it is UTF-8, else base64 in `body_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl OutboundRequest {
    pub fn redacted(&self) -> RedactedRequest {
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                // Only the host's credential is marked sensitive.
                let shown = if value.is_sensitive() {
                    redact_credential(self.auth_scheme)
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_string(), shown)
            })
            .collect();
        let (body, body_base64) = match std::str::from_utf8(&self.body) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&self.body)),
            ),
        };
        RedactedRequest {
            method: self.method.to_string(),
            url: self.url.to_string(),
            headers,
            body,
            body_base64,
        }
    }
}

/// Keeps the scheme word of `basic` and `bearer` auth so the output shows
/// which auth would be used. A `header` credential is replaced whole: its
/// value has no scheme, and its first word may be the secret itself.
fn redact_credential(scheme: Option<&str>) -> String {
    match scheme {
        Some(scheme) => format!("{scheme} [redacted]"),
        None => "[redacted]".to_string(),
    }
}

/// What came back, and how long it took.
#[derive(Debug, Clone)]
pub struct Received {
    pub response: HttpResponse,
    pub latency: Duration,
    /// The body was longer than the limit and was cut.
    pub truncated: bool,
}

/// The host's HTTP clients: pooled connections, no redirects, bounded bodies.
/// One direct client for every channel without a proxy, and one per distinct
/// configured proxy.
#[derive(Clone)]
pub struct Transport {
    direct: reqwest::Client,
    /// By proxy URL (it may carry credentials: never logged).
    proxied: BTreeMap<String, reqwest::Client>,
    body_limit: usize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("proxies", &self.proxied.len())
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

/// What every client shares. `no_proxy` first: reqwest otherwise reads
/// `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` from the environment.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("notify-host/", env!("CARGO_PKG_VERSION")))
        // Providers keep connections open for ~60-90 s; reusing them saves
        // a TLS handshake (tens of ms) per message.
        .pool_idle_timeout(Duration::from_secs(60))
}

impl Transport {
    /// Builds the direct client and one client for each proxy that one of
    /// `channels` names. A request of a channel with a proxy that was not
    /// among `channels` is not sent (see [`Transport::send`]).
    pub fn new<'a>(
        body_limit: usize,
        channels: impl IntoIterator<Item = &'a ChannelConfig>,
    ) -> Result<Self, TransportError> {
        let direct = client_builder()
            .build()
            .map_err(|e| TransportError::Other(e.to_string()))?;
        let mut proxied = BTreeMap::new();
        for channel in channels {
            let Some(proxy) = &channel.proxy else {
                continue;
            };
            if proxied.contains_key(proxy.as_str()) {
                continue;
            }
            // reqwest's own message may quote the URL, credentials included.
            let refused = || {
                TransportError::Other(format!(
                    "cannot use the proxy of channel `{0}` (channels.{0}.proxy)",
                    channel.name
                ))
            };
            let client = client_builder()
                .proxy(reqwest::Proxy::all(proxy.as_str()).map_err(|_| refused())?)
                .build()
                .map_err(|_| refused())?;
            proxied.insert(proxy.to_string(), client);
        }
        Ok(Transport {
            direct,
            proxied,
            body_limit,
        })
    }

    /// Sends one request; any answer, 5xx included, is `Ok`.
    pub async fn send(&self, request: OutboundRequest) -> Result<Received, TransportError> {
        let client = match &request.proxy {
            None => &self.direct,
            // Fail closed: going direct would bypass the proxy the operator
            // configured (and may not even be routable).
            Some(proxy) => self.proxied.get(proxy.as_str()).ok_or_else(|| {
                TransportError::Other(
                    "the channel's proxy has no client: the transport was built without this channel"
                        .to_string(),
                )
            })?,
        };
        let started = Instant::now();
        let timeout = request.timeout;
        let mut headers = request.headers;
        if let Some(signer) = &request.signer {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            signer.sign(&mut headers, &request.body, now);
        }
        let exchange = async {
            let mut response = client
                .request(request.method, request.url)
                .headers(headers)
                .body(request.body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| Header {
                    name: k.as_str().to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                })
                .collect();
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await? {
                let room = self.body_limit.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((
                HttpResponse {
                    status,
                    headers,
                    body,
                },
                truncated,
            ))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(TransportError::Timeout(timeout)),
            Ok(Err(e)) if e.is_timeout() => Err(TransportError::Timeout(timeout)),
            Ok(Err(e)) if e.is_connect() => Err(TransportError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(TransportError::Other(error_chain(&e))),
            Ok(Ok((response, truncated))) => Ok(Received {
                response,
                latency: started.elapsed(),
                truncated,
            }),
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
