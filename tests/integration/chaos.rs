//! Chaos: events flow while providers fail a fifth of their calls (500, 503,
//! 429 with Retry-After, connection resets, answers slower than the timeout,
//! and sends accepted whose answer is then lost: the connection dropped)
//! and the host is killed with SIGKILL at random moments and restarted.
//! The broker (tansu on S3 storage) is also restarted once.
//! Afterwards, from the stand-ins' own records: every requested
//! (event_id, channel) was delivered at least once or is in the dead-letter
//! topic with a reason (0 lost); duplicate deliveries are counted and bounded;
//! the group's committed offset is the end of the topic.
//!
//! CI runs a small size. By hand:
//! NOTIFY_CHAOS_EVENTS=20000 NOTIFY_CHAOS_KILLS=10 ./scripts/test.sh chaos -- --nocapture

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::*;
use crate::kafka_harness::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An HTTP/1.1 provider stand-in on a raw socket, so it can also reset
/// connections. Records, per (event_id, channel), how many sends it accepted
/// (committed at arrival for `AcceptThenDrop`, at the answer otherwise) and
/// how many of those accepted sends lost their answer.
struct FaultyProvider {
    addr: SocketAddr,
    accepted: Arc<Mutex<HashMap<(String, String), u32>>>,
    answers_lost: Arc<Mutex<u32>>,
    _runtime: tokio::runtime::Runtime,
}

enum Fault {
    Ok,
    Status(u16, &'static str),
    Reset,
    Slow,
    /// The provider takes the message, then the connection drops before the
    /// answer: the host cannot know, retries, and the patient gets it twice.
    AcceptThenDrop,
}

fn pick_fault(rng: &mut fastrand::Rng) -> Fault {
    // One call in five fails, spread over the failure kinds.
    match rng.u8(..100) {
        0..=3 => Fault::Status(500, ""),
        4..=7 => Fault::Status(503, ""),
        8..=11 => Fault::Status(429, "Retry-After: 1\r\n"),
        12..=14 => Fault::Reset,
        15..=17 => Fault::Slow,
        18..=19 => Fault::AcceptThenDrop,
        _ => Fault::Ok,
    }
}

fn event_of(request: &str) -> Option<(String, String)> {
    // Mailgun: a `v:event_id` multipart field; Twilio: the Body template
    // below ends with `#<event_id>`.
    if let Some(i) = request.find("name=\"v:event_id\"\r\n\r\n") {
        let rest = &request[i + "name=\"v:event_id\"\r\n\r\n".len()..];
        return Some((rest.split("\r\n").next()?.to_string(), "email".into()));
    }
    if request.contains("/Messages.json") {
        let body = request.split("\r\n\r\n").nth(1)?;
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let id = form.get("Body")?.rsplit('#').next()?.to_string();
        return Some((id, "sms".into()));
    }
    None
}

impl FaultyProvider {
    fn start(seed: u64) -> FaultyProvider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted: Arc<Mutex<HashMap<(String, String), u32>>> = Arc::default();
        let answers_lost: Arc<Mutex<u32>> = Arc::default();
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        let record = accepted.clone();
        let lost = answers_lost.clone();
        runtime.spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { continue };
                let record = record.clone();
                let lost = lost.clone();
                let rng = rng.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut sock, &mut buf).await else {
                            return;
                        };
                        let fault = pick_fault(&mut rng.lock().expect("lock"));
                        let (status, extra, body) = match fault {
                            Fault::Reset => return,
                            Fault::Slow => {
                                // Past the host's 1 s timeout; the host gives up first.
                                tokio::time::sleep(Duration::from_millis(1500)).await;
                                return;
                            }
                            Fault::AcceptThenDrop => {
                                if let Some(key) = event_of(&request) {
                                    *record.lock().expect("lock").entry(key).or_default() += 1;
                                    *lost.lock().expect("lock") += 1;
                                }
                                return;
                            }
                            Fault::Status(s, extra) => (s, extra, String::new()),
                            Fault::Ok => {
                                let Some(key) = event_of(&request) else { return };
                                let body = if key.1 == "email" {
                                    r#"{"id":"<c@mg>","message":"Queued. Thank you."}"#.to_string()
                                } else {
                                    r#"{"sid":"SM0123456789abcdef0123456789abcdef"}"#.to_string()
                                };
                                *record.lock().expect("lock").entry(key.clone()).or_default() += 1;
                                (if key.1 == "email" { 200 } else { 201 }, "", body)
                            }
                        };
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FaultyProvider {
            addr,
            accepted,
            answers_lost,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[test]
fn no_event_is_lost_under_kills_and_provider_faults() {
    let n = env_or("NOTIFY_CHAOS_EVENTS", 2000) as usize;
    let kills = env_or("NOTIFY_CHAOS_KILLS", 3) as u32;
    let max_in_flight = 64u64;
    let mut rng = fastrand::Rng::with_seed(env_or("NOTIFY_CHAOS_SEED", 7));
    // A broker of its own, restarted once mid-run, with storage that survives.
    let mut broker = DurableBroker::start();
    let t = unique("chaos");
    create_topics(&t);
    let provider = FaultyProvider::start(rng.u64(..));
    let w = Workdir::new();
    let config = host_config(
        &w,
        &t,
        &provider.url(),
        &provider.url(),
        &format!("max_in_flight = {max_in_flight}"),
    );
    // Fast retries and a short timeout keep the run short; 8 attempts make a
    // run of transient faults long enough to dead-letter rare, not absent.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("timeout_seconds = 2", "timeout_seconds = 1")
        .replace(
            "retry = { max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }",
            "retry = { max_attempts = 8, initial_backoff_ms = 20, max_backoff_ms = 200, max_retry_after_seconds = 1 }",
        )
        .replace(
            "settings = { account_sid",
            "settings = { body_template = \"Appointment {appointment_id} #{event_id}\", account_sid",
        );
    std::fs::write(&config, text).expect("config");

    // A mix of e-mail, SMS and both; ~50 appointments share keys.
    let mut requested: HashSet<(String, String)> = HashSet::new();
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let id = format!("ch-{i}");
            let (email, sms) = match i % 3 {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            if email {
                requested.insert((id.clone(), "email".into()));
            }
            if sms {
                requested.insert((id.clone(), "sms".into()));
            }
            format!(
                r#"{{"event_id":"{id}","notify":{{"email":{email},"sms":{sms}}},"appointment":{{"appointment_id":"a-{}","time":"2099-02-20T15:00:00Z","email":"user@example.com","phone_e164":"+15555550123"}}}}"#,
                i % 50
            )
            .into_bytes()
        })
        .collect();
    publish_batched(&t.topic, &payloads);

    let started = Instant::now();
    let mut host = Host::start(&config);
    let total = requested.len() as u32;
    for k in 1..=kills {
        // Kill mid-flight: once a share of the work is through, at a random
        // moment shortly after.
        let mark = total * k / (kills + 1);
        let accepted = || -> u32 { provider.accepted.lock().expect("lock").values().sum() };
        let deadline = Instant::now() + Duration::from_secs(300);
        while accepted() < mark {
            assert!(
                Instant::now() < deadline,
                "kill {k}: {} of {mark} deliveries after 300 s; host log tail:\n{}",
                accepted(),
                tail(&host.log_text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(..200)));
        host.kill9();
        assert_ne!(
            committed(&t.group, &t.topic),
            Some(n as i64),
            "the kill came after the work was done"
        );
        if k == 1 {
            broker.restart();
        }
        host = host.restart();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while committed(&t.group, &t.topic) != Some(n as i64) {
        assert!(
            Instant::now() < deadline,
            "not everything committed; host log tail:\n{}",
            tail(&host.log_text())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(host.terminate().success());

    let accepted = provider.accepted.lock().expect("lock").clone();
    let dlq: HashSet<(String, String)> =
        read_topic(&t.dlq, requested.len(), Duration::from_secs(5))
            .iter()
            .filter_map(|l| {
                Some((
                    l.header("notify.event_id")?.to_string(),
                    l.header("notify.channel")?.to_string(),
                ))
            })
            .collect();
    let lost: Vec<_> = requested
        .iter()
        .filter(|k| !accepted.contains_key(*k) && !dlq.contains(*k))
        .collect();
    let deliveries: u32 = accepted.values().sum();
    let duplicates: u32 = accepted.values().map(|c| c.saturating_sub(1)).sum();
    let answers_lost = *provider.answers_lost.lock().expect("lock");
    println!(
        "chaos: events {n}, requested {}, deliveries {deliveries}, duplicates {duplicates} ({answers_lost} accepted sends lost their answer), DLQ {}, kills {kills}, lost {}, {:.1} s",
        requested.len(),
        dlq.len(),
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(
        accepted.keys().all(|k| requested.contains(k)),
        "a delivery nobody asked for"
    );
    // A duplicate needs an answer lost in transit (the host cannot know the
    // send was accepted, so it retries: at-least-once), or a kill between
    // the provider accepting and the dedup record being durable, which can
    // catch at most the sends in flight.
    assert!(
        answers_lost > 0,
        "the lost-answer fault never fired: the run is too small"
    );
    assert!(
        duplicates <= answers_lost + kills * max_in_flight as u32,
        "{duplicates} duplicates for {answers_lost} lost answers and {kills} kills with {max_in_flight} in flight"
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
