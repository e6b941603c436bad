//! Kafka-side harness: one real tansu broker per test binary (a Kafka-protocol
//! broker process on 127.0.0.1), topics per test, the host as a child
//! process, and readers for the dead-letter topic and committed offsets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::*;

pub struct Broker {
    pub bootstrap: String,
    _watchdog: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The broker for this test binary, started on first use. A watchdog shell
/// stops it when the test process exits, however it exits.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let tansu = match std::env::var("NOTIFY_TANSU") {
            Ok(p) => PathBuf::from(p),
            Err(_) => {
                let out = Command::new(root().join("scripts/ensure-tansu.sh")).output().expect("run ensure-tansu.sh");
                assert!(out.status.success(), "ensure-tansu.sh failed: {}", String::from_utf8_lossy(&out.stderr));
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let port = free_port();
        let log = std::env::temp_dir().join(format!("notify-test-tansu-{port}.log"));
        let script = r#"
"$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ $TANSU_EXTRA >"$LOG" 2>&1 &
t=$!
while kill -0 "$WATCH" 2>/dev/null && kill -0 "$t" 2>/dev/null; do sleep 0.3; done
kill "$t" 2>/dev/null
"#;
        // tansu reads these from the environment; a CI's RUST_LOG=debug would
        // flood its log.
        let watchdog = Command::new("sh")
            .args(["-c", script])
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn")
            .env("TANSU", &tansu)
            .env("PORT", port.to_string())
            .env("LOG", &log)
            .env("WATCH", std::process::id().to_string())
            .env("TANSU_EXTRA", std::env::var("NOTIFY_TANSU_EXTRA_ARGS").unwrap_or_default())
            .stdin(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            _watchdog: watchdog,
        }
    })
}

thread_local! {
    /// A test with a broker of its own (one it restarts) sets this; every
    /// helper below then talks to that broker from the test's thread.
    static OWN_BOOTSTRAP: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The broker this test talks to.
pub fn bootstrap() -> String {
    OWN_BOOTSTRAP
        .with(|b| b.borrow().clone())
        .unwrap_or_else(|| broker().bootstrap.clone())
}

/// A broker that survives restarts: tansu with its `s3://` storage engine on
/// a moto S3 server, both children of the test, on fixed ports.
pub struct DurableBroker {
    port: u16,
    tansu: Child,
    moto: Child,
    bucket: String,
    moto_port: u16,
}

impl DurableBroker {
    pub fn start() -> DurableBroker {
        let moto_bin = std::env::var("NOTIFY_MOTO_SERVER").unwrap_or_else(|_| {
            root()
                .join(".tools/moto-venv/bin/moto_server")
                .display()
                .to_string()
        });
        assert!(
            Path::new(&moto_bin).exists(),
            "{moto_bin} missing: run ./scripts/test.sh (scripts/test-deps.sh installs it)"
        );
        let moto_port = free_port();
        let moto = Command::new(&moto_bin)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let bucket = format!("chaos-{:08x}", fastrand::u32(..));
        let url = format!("http://127.0.0.1:{moto_port}/{bucket}");
        wait_for("moto to create the bucket", Duration::from_secs(30), || {
            runtime().block_on(async {
                reqwest::Client::new()
                    .put(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
        });
        let port = free_port();
        let tansu = Self::spawn_tansu(port, moto_port, &bucket);
        OWN_BOOTSTRAP.with(|b| *b.borrow_mut() = Some(format!("127.0.0.1:{port}")));
        DurableBroker {
            port,
            tansu,
            moto,
            bucket,
            moto_port,
        }
    }

    fn spawn_tansu(port: u16, moto_port: u16, bucket: &str) -> Child {
        let tansu = std::env::var("NOTIFY_TANSU")
            .unwrap_or_else(|_| root().join(".tools/tansu").display().to_string());
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args(["--storage-engine", &format!("s3://{bucket}/")])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{moto_port}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for("tansu to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    }

    /// Stops the broker (SIGKILL) and starts it again on the same port and
    /// storage.
    pub fn restart(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
        self.tansu = Self::spawn_tansu(self.port, self.moto_port, &self.bucket);
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        OWN_BOOTSTRAP.with(|b| *b.borrow_mut() = None);
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

/// Names unique to one test.
pub struct Topics {
    pub topic: String,
    pub dlq: String,
    pub group: String,
}

pub fn unique(name: &str) -> Topics {
    let n = fastrand::u32(..);
    Topics {
        topic: format!("appointments.created.{name}.{n:08x}"),
        dlq: format!("appointments.created.dlq.{name}.{n:08x}"),
        group: format!("notify-{name}-{n:08x}"),
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Creates the events and dead-letter topics (one partition each).
pub fn create_topics(t: &Topics) {
    create_topics_with(t, 1);
}

/// Creates the events topic with `partitions` partitions, and the
/// dead-letter topic with one.
pub fn create_topics_with(t: &Topics, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client(&bootstrap()).create().expect("admin client");
    let topics = [
        NewTopic::new(&t.topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&t.dlq, 1, TopicReplication::Fixed(1)),
    ];
    let results = runtime()
        .block_on(admin.create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(name, e)| panic!("create topic {name}: {e}"));
    }
}

/// Publishes payloads to the events topic with acks=all.
pub fn publish(topic: &str, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = client(&bootstrap())
        .set("acks", "all")
        // Tests publish oversized payloads on purpose.
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    runtime().block_on(async {
        for p in payloads {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(p),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("publish: {e}"));
        }
    });
}

/// Publishes every payload at once, so librdkafka packs them into a few
/// record batches. Large runs need this on tansu's S3 storage, where a fetch
/// returns one stored batch: one-record batches (what [`publish`] makes)
/// would cap the consumer at a couple of fetches a second.
pub fn publish_batched(topic: &str, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = client(&bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    runtime().block_on(async {
        let sends: Vec<_> = payloads
            .iter()
            .map(|p| {
                producer.send(
                    FutureRecord::<(), _>::to(topic).payload(p),
                    Duration::from_secs(60),
                )
            })
            .collect();
        for result in futures_util::future::join_all(sends).await {
            result.unwrap_or_else(|(e, _)| panic!("publish: {e}"));
        }
    });
}

/// One dead-letter record.
#[derive(Debug, Clone)]
pub struct Letter {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Letter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the whole of a topic's partition 0, waiting until `want` records are
/// there or `timeout` passes.
pub fn read_topic(topic: &str, want: usize, timeout: Duration) -> Vec<Letter> {
    let consumer: BaseConsumer = client(&bootstrap())
        .set("group.id", format!("reader-{}", fastrand::u32(..)))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Letter {
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// The group's committed offset for partition 0 of `topic`.
pub fn committed(group: &str, topic: &str) -> Option<i64> {
    committed_on(group, topic, 0)
}

/// The group's committed offset for one partition of `topic`.
pub fn committed_on(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = client(&bootstrap())
        .set("group.id", group)
        .create()
        .expect("client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    match offsets.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Publishes each payload to its partition, all at once (as
/// [`publish_batched`]).
pub fn publish_to_partitions(topic: &str, records: &[(i32, Vec<u8>)]) {
    let producer: FutureProducer = client(&bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    runtime().block_on(async {
        let sends: Vec<_> = records
            .iter()
            .map(|(partition, p)| {
                producer.send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(*partition)
                        .payload(p),
                    Duration::from_secs(60),
                )
            })
            .collect();
        for result in futures_util::future::join_all(sends).await {
            result.unwrap_or_else(|(e, _)| panic!("publish: {e}"));
        }
    });
}

/// A metric's value from a host's /metrics URL (the first series whose line
/// starts with `series`, e.g. `notify_in_flight `), if the host answers.
pub fn metric(metrics_url: &str, series: &str) -> Option<f64> {
    let (status, body) = http_get(metrics_url)?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `check` holds, polling; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config for a host under test: real plugins, stand-in providers, this
/// test's topics, quick retries and quick group membership.
pub fn host_config(w: &Workdir, t: &Topics, mailgun: &str, twilio: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
dlq_topic = "{dlq}"
group_id = "{group}"
[kafka.client]
# Joining a group on tansu takes about half the session timeout.
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"max.poll.interval.ms" = 10000

[pipeline]
shutdown_grace_seconds = 5
{pipeline_extra}

[ledger]
path = "{dedup}"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
format = "json"
level = "info"

[channels.email]
plugin = "{mailgun_wasm}"
base_url = "{mailgun}"
timeout_seconds = 2
auth = {{ type = "basic", username = "api", password = "${{MAILGUN_API_KEY}}" }}
retry = {{ max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }}
settings = {{ domain = "mg.example.com", from = "noreply@mg.example.com" }}

[channels.sms]
plugin = "{twilio_wasm}"
base_url = "{twilio}"
timeout_seconds = 2
auth = {{ type = "basic", username = "{sid}", password = "${{TWILIO_AUTH_TOKEN}}" }}
retry = {{ max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }}
settings = {{ account_sid = "{sid}", from = "+15005550006" }}
"#,
        bootstrap = bootstrap(),
        admin_port = free_port(),
        topic = t.topic,
        dlq = t.dlq,
        group = t.group,
        pipeline_extra = if extra.contains("commit_interval_ms") {
            extra.to_string()
        } else {
            format!("commit_interval_ms = 200\n{extra}")
        },
        dedup = w.path().join("data/ledger.redb").display(),
        mailgun_wasm = mailgun_wasm().display(),
        twilio_wasm = wasm("plugins/twilio.wasm").display(),
        sid = TWILIO_SID,
    );
    w.write("config.toml", &text)
}

/// The host as a child process, its log lines collected.
pub struct Host {
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    config: PathBuf,
}

impl Host {
    pub fn start(config: &Path) -> Host {
        Host::start_with_env(config, &[])
    }

    /// Starts the host with these environment variables set too.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_notify-host"))
            .args(["run", "--config"])
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MAILGUN_API_KEY", MAILGUN_KEY)
            .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Host {
            child,
            logs,
            config: config.to_path_buf(),
        }
    }

    /// Starts another host with the same config (after a kill).
    pub fn restart(&self) -> Host {
        Host::start(&self.config)
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().expect("lock").join("\n")
    }

    /// Log lines as JSON, with the given message.
    pub fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Sends the host SIGHUP: reload config.toml and the plugins.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// kill -9: no chance to commit or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin server's base URL from a config written by [`host_config`].
pub fn admin_url(config: &Path) -> String {
    let text = std::fs::read_to_string(config).expect("config");
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("admin listen in config");
    format!("http://{listen}")
}

/// A blocking GET: (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
}

/// Publishes one payload with headers.
pub fn publish_with_headers(topic: &str, payload: &[u8], headers: &[(&str, &str)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    let producer: FutureProducer = client(&bootstrap())
        .set("acks", "all")
        .create()
        .expect("producer");
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    runtime()
        .block_on(producer.send(
            FutureRecord::<(), _>::to(topic).payload(payload).headers(h),
            Duration::from_secs(10),
        ))
        .unwrap_or_else(|(e, _)| panic!("publish: {e}"));
}

/// An `appointments.created` event asking for e-mail and/or SMS, with its
/// own appointment id (so events do not wait on each other's key).
pub fn event(id: &str, email: bool, sms: bool) -> Vec<u8> {
    event_notifying(id, serde_json::json!({ "email": email, "sms": sms }))
}

/// [`event`] with its own `notify` object (other channels' names).
pub fn event_notifying(id: &str, notify: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "event_type": "appointments.created",
        "occurred_at": "2026-02-13T17:00:00Z",
        "notify": notify,
        "appointment": {
            "appointment_id": format!("appt-{id}"),
            "user_id": 7,
            "time": "2099-02-20T15:00:00Z",
            "email": "user@example.com",
            "phone_e164": "+15555550123"
        }
    })
    .to_string()
    .into_bytes()
}

/// The status API token the tests configure (`with_api_token`).
pub const API_TOKEN: &str = "test-admin-token-5d1c0e9b7a";

/// `config` with the status API switched on: `admin.token` from
/// `NOTIFY_ADMIN_TOKEN`, which `Host::start_with_env(.., &api_env())` sets.
pub fn with_api_token(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).expect("config");
    let text = text.replacen(
        "[admin]\n",
        "[admin]\ntoken = \"${NOTIFY_ADMIN_TOKEN:-}\"\n",
        1,
    );
    std::fs::write(config, text).expect("config");
    config.to_path_buf()
}

/// The environment that gives the host [`API_TOKEN`].
pub fn api_env() -> [(&'static str, &'static str); 1] {
    [("NOTIFY_ADMIN_TOKEN", API_TOKEN)]
}

/// A blocking request with a bearer token: (status, content type, body).
pub fn api_request(method: &str, url: &str, token: Option<&str>) -> Option<(u16, String, String)> {
    runtime().block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut request = reqwest::Client::new()
            .request(method, url)
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.ok()?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Some((status, content_type, r.text().await.ok()?))
    })
}

/// `GET /v1/events/{event_id}` with [`API_TOKEN`]: the event's deliveries
/// (empty when the ledger has none yet).
pub fn api_event_deliveries(admin: &str, event_id: &str) -> Vec<serde_json::Value> {
    let url = format!("{admin}/v1/events/{event_id}");
    match api_request("GET", &url, Some(API_TOKEN)) {
        Some((200, _, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let list = v.get("deliveries").cloned().unwrap_or(v);
            list.as_array().cloned().unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes) from
/// `sock` for the hand-written stand-ins that must be able to drop a
/// connection mid-answer; `buf` carries bytes past it to the next call.
/// `None` once the peer closed.
pub async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let req: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&req).into_owned());
            }
        }
        let mut chunk = [0u8; 16384];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
