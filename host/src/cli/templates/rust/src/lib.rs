//! `{{name}}`: a notify-host channel plugin that POSTs each event, as JSON,
//! to a webhook at `base_url` + the setting `path`.
//!
//! Invariant: the plugin is a pure function of its inputs (see
//! wit/channel.wit). It does no I/O: the host sends the request, attaches
//! the credentials configured under `auth`, keeps requests to the channel's
//! allowed hosts, retries and dead-letters.

wit_bindgen::generate!({ world: "channel", path: "wit" });

// The world's `use types.{...}` already brought the types its functions
// name (Event, Setting, HttpRequest, ...) into scope; these are the rest.
use notify::channel::types::{Delivered, Header, Purpose, RetryLater};

/// The plugin's name, as it appears in the host's logs and reasons.
const NAME: &str = "{{name}}";

/// A provider's body is quoted in a reason up to this many characters:
/// enough to show an error message, short enough for a log line.
const SNIPPET_CHARS: usize = 200;

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            // Fields the host must guarantee before calling render, e.g.
            // "appointment.email"; the webhook takes any event.
            required_fields: vec![],
            known_settings: vec!["base_url".to_string(), "path".to_string()],
        }
    }

    fn check_settings(settings: Vec<Setting>) -> Result<(), Vec<String>> {
        target_url(&settings).map(|_| ())
    }

    fn render(
        event: Event,
        message: Message,
        settings: Vec<Setting>,
    ) -> Result<Vec<HttpRequest>, String> {
        let url = target_url(&settings)
            .map_err(|problems| format!("invalid settings: {}", problems.join("; ")))?;
        Ok(vec![HttpRequest {
            method: "POST".to_string(),
            url,
            headers: vec![
                header("content-type", "application/json"),
                // Lets the receiver drop a resend (the host sends at least
                // once) without mixing up the messages of one event.
                header("idempotency-key", &idempotency_key(&event, &message)),
            ],
            // The event exactly as the host received it.
            body: event.raw_json.into_bytes(),
        }])
    }

    fn classify(
        response: HttpResponse,
        _settings: Vec<Setting>,
        _context: CallContext,
    ) -> Disposition {
        let status = response.status;
        let reason = reason(status, &response.body);
        match status {
            200..=299 => Disposition::Delivered(Delivered {
                provider_message_id: message_id(&response.body),
            }),
            408 | 425 | 429 | 500..=599 => Disposition::Retry(RetryLater {
                after_ms: retry_after_ms(&response.headers),
                reason,
            }),
            // The host attaches the credentials: a refusal is about the
            // channel, not this event, so the host holds the channel.
            401 | 403 => Disposition::ChannelDown(reason),
            _ => Disposition::Permanent(reason),
        }
    }
}

export!(Plugin);

/// The last value of `key`; blank counts as unset (an unset `${VAR:-}`).
fn setting<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|s| s.key == key)
        .map(|s| s.value.trim())
        .filter(|v| !v.is_empty())
}

/// `base_url` + `path`, or every problem with the settings, each naming
/// its key (the host files "setting `KEY` ..." under that key).
fn target_url(settings: &[Setting]) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let base = match setting(settings, "base_url") {
        None => {
            problems.push(
                "setting `base_url` is required (channels.NAME.base_url in config.toml)"
                    .to_string(),
            );
            ""
        }
        Some(b) if !(b.starts_with("https://") || b.starts_with("http://")) => {
            problems.push(format!(
                "setting `base_url` must be an http(s) URL, not `{b}`"
            ));
            ""
        }
        Some(b) => b.trim_end_matches('/'),
    };
    let path = setting(settings, "path").unwrap_or("/");
    if !path.starts_with('/') {
        problems.push(format!("setting `path` must start with `/`, not `{path}`"));
    }
    if problems.is_empty() {
        Ok(format!("{base}{path}"))
    } else {
        Err(problems)
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// `<event-id>:<purpose>`, and for a reminder `:<its name>` too: the
/// reminders of one booking share its event id, and a receiver that drops
/// repeated keys must not drop the second reminder.
fn idempotency_key(event: &Event, message: &Message) -> String {
    let key = format!("{}:{}", event.event_id, purpose_name(message.purpose));
    match (message.purpose, &message.reminder) {
        (Purpose::Reminder, Some(name)) => format!("{key}:{name}"),
        _ => key,
    }
}

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Confirmation => "confirmation",
        Purpose::Reminder => "reminder",
        Purpose::Cancellation => "cancellation",
        Purpose::Reschedule => "reschedule",
    }
}

/// `Retry-After` in whole seconds, as milliseconds. An HTTP-date is left
/// to the host's own backoff.
fn retry_after_ms(headers: &[Header]) -> Option<u64> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
        .and_then(|h| h.value.trim().parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000))
}

/// The receiver's id for the message: `id` in a JSON object body.
fn message_id(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// `NAME: HTTP 503`, with the start of the body when there is one.
fn reason(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.trim().chars().take(SNIPPET_CHARS).collect();
    if snippet.is_empty() {
        format!("{NAME}: HTTP {status}")
    } else {
        format!("{NAME}: HTTP {status}: {snippet}")
    }
}
