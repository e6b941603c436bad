//! Outbound HTTP: the only place a rendered request leaves the host.
//!
//! Invariants: a request goes out only if its URL's origin is on the channel's
//! allow-list (so a plugin can neither send data elsewhere nor get credentials
//! attached to a foreign host); credentials are attached here, from the
//! channel's config, never by a plugin; redirects are not followed (a 3xx goes
//! to the plugin to classify, so a redirect cannot lead around the
//! allow-list); response bodies are cut at a limit.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::Serialize;
use url::Url;

use crate::config::{Auth, ChannelConfig};
use crate::plugin::{Header, HttpRequest, HttpResponse};

/// Headers the host owns: a plugin setting them could smuggle a request or
/// redirect it to another virtual host.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

/// Why the host refused to send a rendered request. A plugin bug or an attack,
/// never a provider problem, so it is not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request URL \"{url}\" is not a valid absolute URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("host refused a request to {origin}: not in channel `{channel}`'s allowed hosts ({allowed})")]
    HostNotAllowed {
        channel: String,
        origin: String,
        allowed: String,
    },
    #[error("request URL must not carry credentials; the host attaches the channel's auth")]
    CredentialsInUrl,
    #[error("\"{0}\" is not an HTTP method")]
    BadMethod(String),
    #[error("header \"{0}\" is not a valid HTTP header")]
    BadHeader(String),
    #[error("header \"{0}\" is set by the host, not by a plugin")]
    ReservedHeader(String),
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

/// A checked request with credentials attached, ready to send.
#[derive(Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl std::fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("body_bytes", &self.body.len())
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
                let shown = if value.is_sensitive() {
                    redact_credential(value.to_str().unwrap_or(""))
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

/// Keeps the scheme word (`Basic`, `Bearer`) so the output shows which auth
/// would be used, and nothing of the value.
fn redact_credential(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) if !scheme.is_empty() => format!("{scheme} [redacted]"),
        _ => "[redacted]".to_string(),
    }
}

/// Checks a rendered request against the channel's rules and attaches auth.
pub fn prepare(channel: &ChannelConfig, request: &HttpRequest) -> Result<OutboundRequest, Refusal> {
    let url = Url::parse(&request.url).map_err(|e| Refusal::BadUrl {
        url: request.url.clone(),
        reason: e.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::CredentialsInUrl);
    }
    if !channel.allows(&url) {
        let origin = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{}://{}:{}", url.scheme(), h, p),
            _ => url.to_string(),
        };
        let allowed = channel
            .allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Refusal::HostNotAllowed {
            channel: channel.name.clone(),
            origin,
            allowed,
        });
    }
    let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Refusal::BadMethod(request.method.clone()))?;

    let mut headers = HeaderMap::new();
    for Header { name, value } in &request.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Refusal::BadHeader(name.clone()))?;
        if RESERVED_HEADERS.contains(&header.as_str())
            || (header == AUTHORIZATION && channel.auth != Auth::None)
        {
            return Err(Refusal::ReservedHeader(name.clone()));
        }
        let value = HeaderValue::from_str(value).map_err(|_| Refusal::BadHeader(name.clone()))?;
        headers.append(header, value);
    }
    attach_auth(&channel.auth, &mut headers).map_err(Refusal::ReservedHeader)?;

    Ok(OutboundRequest {
        method,
        url,
        headers,
        body: request.body.clone(),
        timeout: channel.timeout,
    })
}

fn attach_auth(auth: &Auth, headers: &mut HeaderMap) -> Result<(), String> {
    let (name, value) = match auth {
        Auth::None => return Ok(()),
        Auth::Basic { username, password } => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()));
            (AUTHORIZATION, format!("Basic {token}"))
        }
        Auth::Bearer { token } => (AUTHORIZATION, format!("Bearer {}", token.expose())),
        Auth::Header { name, value } => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| name.clone())?;
            (name, value.expose().to_string())
        }
    };
    if headers.contains_key(&name) {
        return Err(name.as_str().to_string());
    }
    // Config validation already refused newlines, so this only fails on
    // control characters, which are not a credential either.
    let mut value = HeaderValue::from_str(&value).map_err(|_| name.as_str().to_string())?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// What came back, and how long it took.
#[derive(Debug, Clone)]
pub struct Received {
    pub response: HttpResponse,
    pub latency: Duration,
    /// The body was longer than the limit and was cut.
    pub truncated: bool,
}

/// The host's HTTP client: pooled connections, no redirects, bounded bodies.
#[derive(Debug, Clone)]
pub struct Transport {
    client: reqwest::Client,
    body_limit: usize,
}

impl Transport {
    pub fn new(body_limit: usize) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("notify-host/", env!("CARGO_PKG_VERSION")))
            // Providers keep connections open for ~60-90 s; reusing them saves
            // a TLS handshake (tens of ms) per message.
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| TransportError::Other(e.to_string()))?;
        Ok(Transport { client, body_limit })
    }

    /// Sends one request; any answer, 5xx included, is `Ok`.
    pub async fn send(&self, request: OutboundRequest) -> Result<Received, TransportError> {
        let started = Instant::now();
        let timeout = request.timeout;
        let exchange = async {
            let mut response = self
                .client
                .request(request.method, request.url)
                .headers(request.headers)
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
