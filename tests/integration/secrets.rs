//! Credentials never come back out. A real HTTP stand-in on 127.0.0.1
//! echoes every request header (the `Authorization` the host attached
//! included) in its answer's headers and body; the hostile plugin's
//! `reflect` behaviour copies that whole answer into its verdict (message
//! id, retry reason, permanent reason) and prints it to stdout and stderr.
//! Through the real broker and the real host binary, the credential and its
//! base64 form must appear in no log line, no dead-letter header and no CLI
//! output (`plugin send`, `plugin render`, `check-config`).
//!
//! The test can fail: it first checks that the stand-in really received the
//! credentials and that the reflected answer really reached the log and the
//! dead letters (with `[redacted]` where the credential was).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::harness::*;
use crate::kafka_harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Every header it got, as `x-echo-NAME` response headers and as a JSON
/// body; 200, 400 or 503 when the request body (the event id) says
/// `ok`, `reject` or `retry`.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<HeaderMap>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Echo {
    fn start() -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let seen = received.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(headers.clone());
                echo(&headers, &body)
            }
        });
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Echo {
            addr,
            received,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn authorizations(&self) -> Vec<String> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|h| h.get("authorization"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

fn echo(headers: &HeaderMap, body: &[u8]) -> Response {
    let body = String::from_utf8_lossy(body);
    let status = if body.contains("reject") {
        StatusCode::BAD_REQUEST
    } else if body.contains("retry") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let echoed: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let mut response = (
        status,
        serde_json::json!({ "you_sent": echoed, "body": body }).to_string(),
    )
        .into_response();
    for (k, v) in headers {
        if let Ok(name) = HeaderName::from_bytes(format!("x-echo-{}", k.as_str()).as_bytes()) {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_bytes(v.as_bytes()).expect("echo"));
        }
    }
    response
}

/// Two channels, both the reflecting plugin against the echo: `basic` with
/// Basic auth (MAILGUN_API_KEY, set by `Host::start`), `bearer` with a
/// bearer token (TWILIO_AUTH_TOKEN).
fn config(w: &Workdir, t: &Topics, echo: &str) -> std::path::PathBuf {
    let channel = |name: &str, auth: &str| {
        format!(
            r#"
[channels.{name}]
plugin = "{hostile}"
base_url = "{echo}"
timeout_seconds = 2
auth = {auth}
retry = {{ max_attempts = 2, initial_backoff_ms = 50, max_backoff_ms = 100 }}
settings = {{ behavior = "reflect" }}
"#,
            hostile = hostile_wasm().display(),
        )
    };
    // The suite's usual host config (its e-mail and SMS channels point at
    // the echo too, but no event here asks for them), plus the two.
    let path = host_config(w, t, echo, echo, "");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(&channel(
        "basic",
        r#"{ type = "basic", username = "api", password = "${MAILGUN_API_KEY}" }"#,
    ));
    text.push_str(&channel(
        "bearer",
        r#"{ type = "bearer", token = "${TWILIO_AUTH_TOKEN}" }"#,
    ));
    std::fs::write(&path, text).expect("config");
    path
}

fn reflect_event(id: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "event_type": "appointments.created",
        "notify": { "basic": true, "bearer": true },
        "appointment": { "appointment_id": format!("appt-{id}") }
    })
    .to_string()
    .into_bytes()
}

/// Every form of the two credentials the test would recognise if it leaked.
fn leaked_forms() -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{MAILGUN_KEY}"));
    vec![
        MAILGUN_KEY.to_string(),
        basic.trim_end_matches('=').to_string(),
        format!("api:{MAILGUN_KEY}"),
        TWILIO_TOKEN.to_string(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for form in leaked_forms() {
        assert!(
            !text.contains(&form),
            "{what} carries a credential ({form}):\n{text}"
        );
    }
}

#[test]
fn a_reflected_credential_reaches_no_log_dead_letter_or_cli_output() {
    let echo = Echo::start();
    let w = Workdir::new();
    let t = unique("secrets");
    create_topics(&t);
    let config = config(&w, &t, &echo.url());

    let mut host = Host::start(&config);
    let run = fastrand::u32(..);
    let ids = [
        format!("sec-ok-{run:08x}"),
        format!("sec-reject-{run:08x}"),
        format!("sec-retry-{run:08x}"),
    ];
    publish(
        &t.topic,
        &ids.iter().map(|id| reflect_event(id)).collect::<Vec<_>>(),
    );
    // reject and retry each dead-letter both channels.
    let letters = read_topic(&t.dlq, 4, WAIT);
    assert_eq!(
        letters.len(),
        4,
        "dead letters: {letters:?}\n{}",
        host.log_text()
    );
    wait_for("the delivered event's log lines", WAIT, || {
        host.log_text().matches(&ids[0]).count() >= 2
    });
    host.terminate();
    let log = host.log_text();

    // The credentials did go out, and the reflection did come back: the
    // absence below is the host's doing, not the test's.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{MAILGUN_KEY}"));
    let sent = echo.authorizations();
    assert!(sent.contains(&format!("Basic {basic}")), "{sent:?}");
    assert!(sent.contains(&format!("Bearer {TWILIO_TOKEN}")), "{sent:?}");
    assert!(
        log.contains("reflected HTTP 200"),
        "plugin output not logged:\n{log}"
    );
    assert_clean("the host log", &log);
    assert!(log.contains("[redacted]"), "{log}");
    for letter in &letters {
        let reason = letter.header("notify.reason").unwrap_or_default();
        assert!(
            reason.contains("reflected HTTP") && reason.contains("[redacted]"),
            "the reflected answer should be the reason, scrubbed: {letter:?}"
        );
        for (name, value) in &letter.headers {
            assert_clean(&format!("dead-letter header {name}"), value);
        }
    }

    // The CLI, against the same echo.
    let event = w.write(
        "event.json",
        &String::from_utf8_lossy(&reflect_event("cli-ok")),
    );
    let env = [
        ("MAILGUN_API_KEY", MAILGUN_KEY.to_string()),
        ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.to_string()),
    ];
    let config_arg = config.display().to_string();
    for channel in ["basic", "bearer"] {
        for command in ["send", "render"] {
            let out = plugin_with_event(command, &config, channel, &event, &env, w.path());
            let printed = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                out.status.success(),
                "plugin {command} {channel}: {printed}"
            );
            assert_clean(&format!("plugin {command} --channel {channel}"), &printed);
            if command == "send" {
                // The answer's headers and body are shown, scrubbed.
                assert!(
                    printed.contains("x-echo-authorization") && printed.contains("[redacted]"),
                    "{printed}"
                );
            }
        }
    }
    let out = notify_host(&["check-config", "--config", &config_arg], &env, w.path());
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{printed}");
    assert_clean("check-config", &printed);
}
