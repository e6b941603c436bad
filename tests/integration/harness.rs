//! Shared test harness: paths to the built artifacts, config files written to
//! temp dirs, the real `notify-host` binary, and provider stand-ins (real HTTP
//! servers on 127.0.0.1 that record every request and answer from a script).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The workspace root (tests/ lives there).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built component; the test command builds them before the tests run.
pub fn wasm(relative: &str) -> PathBuf {
    let path = root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test.sh (it builds the plugins before the tests)",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

pub fn mailgun_wasm() -> PathBuf {
    wasm("plugins/mailgun.wasm")
}
pub fn hostile_wasm() -> PathBuf {
    wasm("tests/plugins/hostile.wasm")
}

pub const MAILGUN_KEY: &str = "key-mailgun-secret-4f9a1c";
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-token-secret-77e2b0";

/// The seed's sample event.
pub const SAMPLE_EVENT: &str = r#"{
  "event_id": "9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f",
  "event_type": "appointments.created",
  "occurred_at": "2026-02-13T17:00:00Z",
  "notify": { "email": true, "sms": true },
  "appointment": {
    "appointment_id": "a1b2c3",
    "user_id": 42,
    "time": "2099-02-20T15:00:00Z",
    "email": "user@example.com",
    "phone_e164": "+15555550123"
  }
}"#;

/// A temp dir holding a config and event files.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The shipped config.toml's environment, pointed at stand-ins.
pub fn shipped_env(mailgun: &str, twilio: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAILGUN_API_KEY", MAILGUN_KEY.into()),
        ("MAILGUN_DOMAIN", "mg.example.com".into()),
        (
            "MAILGUN_FROM_EMAIL",
            "Clinic <noreply@mg.example.com>".into(),
        ),
        ("MAILGUN_API_BASE_URL", mailgun.into()),
        ("MAILGUN_TIMEOUT_SECONDS", "2".into()),
        ("TWILIO_ACCOUNT_SID", TWILIO_SID.into()),
        ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.into()),
        ("TWILIO_FROM_PHONE", "+15005550006".into()),
        ("TWILIO_API_BASE_URL", twilio.into()),
        ("TWILIO_TIMEOUT_SECONDS", "2".into()),
    ]
}

/// Runs the real binary with a clean environment plus `env`.
pub fn notify_host(args: &[&str], env: &[(&str, String)], cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_notify-host"));
    cmd.args(args).current_dir(cwd).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run notify-host")
}

/// `notify-host plugin COMMAND --config CONFIG --channel CHANNEL --event EVENT`
/// (render or send), as [`notify_host`] runs it.
pub fn plugin_with_event(
    command: &str,
    config: &Path,
    channel: &str,
    event: &Path,
    env: &[(&str, String)],
    cwd: &Path,
) -> Output {
    let config = config.to_string_lossy();
    let event = event.to_string_lossy();
    notify_host(
        &[
            "plugin",
            command,
            "--config",
            &config,
            "--channel",
            channel,
            "--event",
            &event,
        ],
        env,
        cwd,
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json_stdout(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(o),
            stderr(o)
        )
    })
}

/// One scripted answer of a stand-in.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// What a stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

#[derive(Default)]
struct StandInState {
    script: Mutex<VecDeque<Reply>>,
    last: Mutex<Option<Reply>>,
    received: Mutex<Vec<Recorded>>,
    concurrent: std::sync::atomic::AtomicUsize,
    max_concurrent: std::sync::atomic::AtomicUsize,
}

/// A provider stand-in on 127.0.0.1. Answers with the scripted replies in
/// order, repeating the last one.
pub struct StandIn {
    pub addr: SocketAddr,
    state: Arc<StandInState>,
    // Owns the server task: dropping the stand-in stops it.
    _runtime: tokio::runtime::Runtime,
}

impl StandIn {
    pub fn start(script: Vec<Reply>) -> StandIn {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(StandInState {
            script: Mutex::new(script.into()),
            ..Default::default()
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn {
            addr,
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.state.received.lock().expect("lock").clone()
    }

    /// When each request arrived.
    pub fn received_at(&self) -> Vec<std::time::Instant> {
        self.received().iter().map(|r| r.at).collect()
    }

    /// The most requests the stand-in was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.state
            .max_concurrent
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the remaining script (and the reply repeated after it).
    pub fn set_script(&self, script: Vec<Reply>) {
        *self.state.script.lock().expect("lock") = script.into();
        *self.state.last.lock().expect("lock") = None;
    }
}

async fn answer(
    State(state): State<Arc<StandInState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().expect("lock").push(Recorded {
        at: std::time::Instant::now(),
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: body.to_vec(),
    });
    let reply = {
        let next = state.script.lock().expect("lock").pop_front();
        let mut last = state.last.lock().expect("lock");
        match next {
            Some(r) => {
                *last = Some(r.clone());
                r
            }
            None => last.clone().unwrap_or_else(|| Reply::new(200, "{}")),
        }
    };
    {
        use std::sync::atomic::Ordering::SeqCst;
        let now = state.concurrent.fetch_add(1, SeqCst) + 1;
        state.max_concurrent.fetch_max(now, SeqCst);
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state
        .concurrent
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// The event id of a request to the Mailgun stand-in (its `v:event_id`
/// multipart field).
pub fn mailgun_event_id(r: &Recorded) -> Option<String> {
    let ct = r.header("content-type")?;
    if !ct.starts_with("multipart/") {
        return None;
    }
    parse_multipart(&ct, &r.body)
        .into_iter()
        .find(|(k, _)| k == "v:event_id")
        .map(|(_, v)| v)
}

/// Splits a multipart/form-data body into (name, value) pairs.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary in content type")
        .trim_matches('"');
    let body = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in body.split(&delimiter).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").expect("CRLF after boundary");
        let (head, value) = part.split_once("\r\n\r\n").expect("part headers end");
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .expect("part name")
            .trim_matches('"')
            .to_string();
        let value = value.strip_suffix("\r\n").expect("CRLF before boundary");
        fields.push((name, value.to_string()));
    }
    fields
}

pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}
