//! Replicas: several hosts in one consumer group share a PostgreSQL ledger
//! (`ledger.backend = "postgres"`), against a real PostgreSQL server
//! (`pg_harness`), the real broker, the real plugins and a provider stand-in
//! that fails on purpose.
//!
//! The stand-in is honest: it records every send it accepted, per
//! (event_id, channel, purpose), when it arrived, which replica sent it (each
//! replica slot talks to its own listener) and whether its answer was then
//! lost (the connection dropped after the provider took the message). Every
//! duplicate is counted and attributed, never hidden:
//! - a lost answer: the host could not know, so it sent again (at least once);
//! - a kill: the replica that sent first was killed (SIGKILL) after the send
//!   arrived and before the second one; bounded by the sends in flight, at
//!   most 2 × `pipeline.max_in_flight` per kill (one per channel of each
//!   event in flight);
//! - anything else (a rebalance: a replica added or stopped, or partitions
//!   moving after a kill; a database restart; a replica sending twice on its
//!   own) is a failure.
//!
//! CI runs a small size. By hand, e.g.:
//! NOTIFY_REPLICAS_EVENTS=20000 NOTIFY_REPLICAS_SECONDS=120 NOTIFY_REPLICAS_KILLS=8 \
//!   ./scripts/test.sh replicas -- --nocapture

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncWriteExt;

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pg_harness::*;

/// How long a dead replica's claims block the others: short, so takeovers
/// happen within the test.
const LEASE_SECONDS: u64 = 3;
/// `pipeline.max_in_flight` of every replica: the kill bound is built on it.
const MAX_IN_FLIGHT: usize = 32;
/// The channels an event can ask for: each event in flight has at most one
/// send per channel on the wire.
const CHANNELS: usize = 2;
/// The host's provider timeout in these tests (`timeout_seconds`).
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(90);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

// ---------------------------------------------------------------------------
// The provider stand-in

/// How often the stand-in fails, in calls per hundred.
#[derive(Debug, Clone, Copy)]
struct FaultMix {
    /// 500, 503, 429 with Retry-After, connection resets, answers past the
    /// host's timeout: none of them takes the message.
    transient: u8,
    /// The message is taken, then the connection drops before the answer.
    accept_then_drop: u8,
}

impl FaultMix {
    const NONE: FaultMix = FaultMix {
        transient: 0,
        accept_then_drop: 0,
    };
    /// One call in five fails, as in `chaos.rs`: mostly transient, 2 in 100
    /// taken with their answer lost.
    const CHAOS: FaultMix = FaultMix {
        transient: 18,
        accept_then_drop: 2,
    };
}

enum Fault {
    Ok,
    Status(u16, &'static str),
    Reset,
    Slow,
    AcceptThenDrop,
}

fn pick_fault(mix: FaultMix, rng: &mut fastrand::Rng) -> Fault {
    let r = rng.u8(..100);
    if r < mix.transient {
        match r % 6 {
            0 | 1 => Fault::Status(500, ""),
            2 => Fault::Status(503, ""),
            3 => Fault::Status(429, "Retry-After: 1\r\n"),
            4 => Fault::Reset,
            _ => Fault::Slow,
        }
    } else if r < mix.transient + mix.accept_then_drop {
        Fault::AcceptThenDrop
    } else {
        Fault::Ok
    }
}

/// One send the provider took.
#[derive(Debug, Clone)]
struct Accepted {
    event_id: String,
    channel: String,
    purpose: String,
    appointment: String,
    /// When it arrived (the provider commits a message at arrival).
    at: Instant,
    /// The replica slot whose listener took it.
    by: String,
    /// Taken, then the connection dropped before the answer.
    answer_lost: bool,
}

/// What a request is about: Mailgun's `v:` fields, or the Twilio body
/// template these tests configure (`{purpose} {appointment_id} #{event_id}`).
struct About {
    event_id: String,
    channel: &'static str,
    purpose: String,
    appointment: String,
}

fn multipart_field(request: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"\r\n\r\n");
    let start = request.find(&marker)? + marker.len();
    Some(request[start..].split("\r\n").next()?.to_string())
}

fn about(request: &str) -> Option<About> {
    if request.contains("name=\"v:event_id\"") {
        return Some(About {
            event_id: multipart_field(request, "v:event_id")?,
            channel: "email",
            purpose: multipart_field(request, "v:purpose")?,
            appointment: multipart_field(request, "v:appointment_id")?,
        });
    }
    if request.contains("/Messages.json") {
        let body = request.split_once("\r\n\r\n")?.1;
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let (head, event_id) = form.get("Body")?.rsplit_once(" #")?;
        let (purpose, appointment) = head.split_once(' ')?;
        return Some(About {
            event_id: event_id.to_string(),
            channel: "sms",
            purpose: purpose.to_string(),
            appointment: appointment.to_string(),
        });
    }
    None
}

struct ProviderState {
    mix: FaultMix,
    rng: Mutex<fastrand::Rng>,
    /// How long an accepted send waits for its answer (widens the in-flight
    /// window on purpose).
    ok_delay_ms: AtomicU64,
    accepted: Mutex<Vec<Accepted>>,
    /// Every request's arrival, accepted or not.
    requests: Mutex<Vec<Instant>>,
}

/// Mailgun and Twilio in one HTTP/1.1 stand-in on raw sockets (so it can
/// reset connections and drop answers), with one listener per replica slot.
struct Provider {
    state: Arc<ProviderState>,
    runtime: tokio::runtime::Runtime,
}

impl Provider {
    fn start(mix: FaultMix, seed: u64) -> Provider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Provider {
            state: Arc::new(ProviderState {
                mix,
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
                ok_delay_ms: AtomicU64::new(0),
                accepted: Mutex::default(),
                requests: Mutex::default(),
            }),
            runtime,
        }
    }

    /// A new listener whose sends are recorded as `by`; its base URL.
    fn listen(&self, by: &str) -> String {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (state, by) = (self.state.clone(), by.to_string());
        self.runtime.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(sock, state.clone(), by.clone()));
            }
        });
        format!("http://{addr}")
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.state.accepted.lock().expect("lock").clone()
    }

    fn requests_between(&self, from: Instant, to: Instant) -> usize {
        self.state
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|at| **at >= from && **at <= to)
            .count()
    }

    fn set_ok_delay(&self, d: Duration) {
        self.state
            .ok_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn serve(mut sock: tokio::net::TcpStream, state: Arc<ProviderState>, by: String) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut sock, &mut buf).await else {
            return;
        };
        let arrived = Instant::now();
        state.requests.lock().expect("lock").push(arrived);
        let fault = pick_fault(state.mix, &mut state.rng.lock().expect("lock"));
        let record = |answer_lost: bool| -> Option<&'static str> {
            let a = about(&request)?;
            state.accepted.lock().expect("lock").push(Accepted {
                event_id: a.event_id,
                channel: a.channel.to_string(),
                purpose: a.purpose,
                appointment: a.appointment,
                at: arrived,
                by: by.clone(),
                answer_lost,
            });
            Some(a.channel)
        };
        let (status, extra, body) = match fault {
            Fault::Reset => return,
            Fault::Slow => {
                // Past the host's timeout: it gives up first.
                tokio::time::sleep(PROVIDER_TIMEOUT + Duration::from_millis(500)).await;
                return;
            }
            Fault::AcceptThenDrop => {
                record(true);
                return;
            }
            Fault::Status(s, extra) => (s, extra, String::new()),
            Fault::Ok => {
                let Some(channel) = record(false) else {
                    return;
                };
                let delay = state.ok_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                if channel == "email" {
                    (
                        200,
                        "",
                        r#"{"id":"<r@mg>","message":"Queued. Thank you."}"#.to_string(),
                    )
                } else {
                    (
                        201,
                        "",
                        r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#
                            .to_string(),
                    )
                }
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
}

// ---------------------------------------------------------------------------
// Replicas

/// A replica's config: [`host_config`] with the shared ledger, its own
/// provider listener for both channels, quick retries, and the SMS bodies
/// the stand-in reads.
fn replica_config(
    dir: &Workdir,
    t: &Topics,
    provider_url: &str,
    database_url: &str,
    tail: &str,
) -> PathBuf {
    let config = host_config(
        dir,
        t,
        provider_url,
        provider_url,
        &format!("max_in_flight = {MAX_IN_FLIGHT}"),
    );
    let sms_bodies = concat!(
        "settings = { body_template = \"{purpose} {appointment_id} #{event_id}\", ",
        "reminder_body_template = \"{purpose} {appointment_id} #{event_id}\", account_sid"
    );
    let mut text = std::fs::read_to_string(&config)
        .expect("config")
        .replacen(
            "[ledger]\n",
            &format!(
                "[ledger]\nbackend = \"postgres\"\nurl = \"{database_url}\"\nlease_seconds = {LEASE_SECONDS}\n"
            ),
            1,
        )
        .replace(
            "timeout_seconds = 2",
            &format!("timeout_seconds = {}", PROVIDER_TIMEOUT.as_secs()),
        )
        // Fast retries keep the run short; 8 attempts make a run of
        // transient faults long enough to dead-letter rare, not absent.
        .replace(
            "retry = { max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }",
            "retry = { max_attempts = 8, initial_backoff_ms = 20, max_backoff_ms = 200, max_retry_after_seconds = 1 }",
        )
        .replace("settings = { account_sid", sms_bodies);
    assert!(text.contains("backend = \"postgres\""), "{text}");
    assert!(text.contains("reminder_body_template"), "{text}");
    text.push_str(tail);
    std::fs::write(&config, text).expect("config");
    config
}

struct Replica {
    name: String,
    config: PathBuf,
    admin: String,
    host: Option<Host>,
    _dir: Workdir,
}

/// The replicas of one test. Prints the tail of every incarnation's log when
/// the test fails (always with NOTIFY_TEST_LOGS=1).
struct Fleet {
    replicas: Vec<Replica>,
    env: Vec<(&'static str, &'static str)>,
    logs: Vec<(String, Arc<Mutex<Vec<String>>>)>,
}

impl Fleet {
    fn new(env: &[(&'static str, &'static str)]) -> Fleet {
        Fleet {
            replicas: Vec::new(),
            env: env.to_vec(),
            logs: Vec::new(),
        }
    }

    /// Starts a replica (slot `name`) with its own work dir; its index.
    fn add(&mut self, name: &str, make_config: impl FnOnce(&Workdir) -> PathBuf) -> usize {
        let dir = Workdir::new();
        let config = make_config(&dir);
        let admin = admin_url(&config);
        self.replicas.push(Replica {
            name: name.to_string(),
            config,
            admin,
            host: None,
            _dir: dir,
        });
        let i = self.replicas.len() - 1;
        self.start(i);
        i
    }

    fn start(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        assert!(r.host.is_none(), "{} is running", r.name);
        let host = Host::start_with_env(&r.config, &self.env);
        let incarnation = self
            .logs
            .iter()
            .filter(|(n, _)| n.starts_with(&r.name))
            .count();
        self.logs.push((
            format!("{} #{}", r.name, incarnation + 1),
            host.logs.clone(),
        ));
        r.host = Some(host);
    }

    fn kill9(&mut self, i: usize) {
        let mut host = self.replicas[i].host.take().expect("a running replica");
        host.kill9();
    }

    fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut host = self.replicas[i].host.take().expect("a running replica");
        host.terminate()
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].host.is_some())
            .collect()
    }

    fn name(&self, i: usize) -> &str {
        &self.replicas[i].name
    }

    fn admin(&self, i: usize) -> &str {
        &self.replicas[i].admin
    }

    fn ready(&self, i: usize) -> bool {
        ready_status(self.admin(i)) == Some(200)
    }

    fn all_ready(&self) -> bool {
        self.alive().into_iter().all(|i| self.ready(i))
    }

    /// Every running replica's process is still there.
    fn all_running(&mut self) -> bool {
        self.replicas
            .iter_mut()
            .filter_map(|r| r.host.as_mut())
            .all(|h| h.is_running())
    }

    fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|(_, l)| l.lock().unwrap_or_else(|e| e.into_inner()).join("\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("NOTIFY_TEST_LOGS").is_none() {
            return;
        }
        for (name, logs) in &self.logs {
            let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- replica {name}: last log lines");
            for line in logs.iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn ready_status(admin: &str) -> Option<u16> {
    http_get(&format!("{admin}/health/ready")).map(|(s, _)| s)
}

/// The sum of every series of a metric (all label sets), if the host
/// exposes the metric.
fn metric_sum(admin: &str, name: &str) -> Option<f64> {
    let (status, body) = http_get(&format!("{admin}/metrics"))?;
    if status != 200 {
        return None;
    }
    let values: Vec<f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| value.parse().ok())?
        })
        .collect();
    // A counter family without series yet (nothing counted) shows only its
    // `# HELP` and `# TYPE` lines: exposed, at 0.
    let family = name.strip_suffix("_total").unwrap_or(name);
    let described = body.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .and_then(|l| l.split_whitespace().next())
            .is_some_and(|n| n == name || n == family)
    });
    (described || !values.is_empty()).then(|| values.iter().sum())
}

const CLAIM_CONFLICTS: &str = "notify_ledger_claim_conflicts_total";

// ---------------------------------------------------------------------------
// Events

/// A booking of an appointment `time` (RFC 3339) asking for e-mail, SMS or
/// both.
fn booking(id: &str, appointment: &str, time: &str, email: bool, sms: bool) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "event_type": "appointments.created",
        "occurred_at": "2026-02-13T17:00:00Z",
        "notify": { "email": email, "sms": sms },
        "appointment": {
            "appointment_id": appointment,
            "user_id": 7,
            "time": time,
            "email": "user@example.com",
            "phone_e164": "+15555550123"
        }
    })
    .to_string()
    .into_bytes()
}

/// Events `{prefix}-{i}` spread over the partitions in turn (an
/// appointment always on the same partition); e-mail, SMS or both.
struct Plan {
    records: Vec<(i32, Vec<u8>)>,
    requested: HashSet<(String, String)>,
    per_partition: Vec<i64>,
}

fn plan(prefix: &str, n: usize, partitions: i32) -> Plan {
    let mut p = Plan {
        records: Vec::with_capacity(n),
        requested: HashSet::new(),
        per_partition: vec![0; partitions as usize],
    };
    // A few events per appointment, so keyed order is exercised too.
    let appointments = (partitions as usize) * 100;
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let (email, sms) = match i % 3 {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        for (asked, channel) in [(email, "email"), (sms, "sms")] {
            if asked {
                p.requested.insert((id.clone(), channel.to_string()));
            }
        }
        let partition = (i % partitions as usize) as i32;
        let appointment = format!("{prefix}-a{}", i % appointments);
        p.records.push((
            partition,
            booking(&id, &appointment, "2099-02-20T15:00:00Z", email, sms),
        ));
        p.per_partition[partition as usize] += 1;
    }
    p
}

/// Publishes planned records at a steady rate from a thread of its own, so
/// kills, rebalances and outages land while events keep arriving.
struct Stream {
    published_at: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(topic: &str, records: Vec<(i32, Vec<u8>)>, per_second: f64) -> Stream {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let published_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let thread = {
            let (topic, published_at) = (topic.to_string(), published_at.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let started = Instant::now();
                let mut sent = 0;
                while sent < records.len() {
                    let due = ((started.elapsed().as_secs_f64() * per_second) as usize + 1)
                        .min(records.len());
                    if due > sent {
                        let sends: Vec<_> = records[sent..due]
                            .iter()
                            .map(|(partition, payload)| {
                                producer.send(
                                    FutureRecord::<(), _>::to(&topic)
                                        .partition(*partition)
                                        .payload(payload),
                                    Duration::from_secs(60),
                                )
                            })
                            .collect();
                        for result in rt.block_on(futures_util::future::join_all(sends)) {
                            result.unwrap_or_else(|(e, _)| panic!("publish: {e}"));
                        }
                        let now = Instant::now();
                        published_at
                            .lock()
                            .expect("lock")
                            .extend(std::iter::repeat_n(now, due - sent));
                        sent = due;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Stream {
            published_at,
            thread: Some(thread),
        }
    }

    fn published(&self) -> usize {
        self.published_at.lock().expect("lock").len()
    }

    fn published_between(&self, from: Instant, to: Instant) -> usize {
        self.published_at
            .lock()
            .expect("lock")
            .iter()
            .filter(|at| **at >= from && **at <= to)
            .count()
    }

    /// Waits until every record is published.
    fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}

/// Waits until every partition is committed to its end (everything
/// delivered or dead-lettered).
fn wait_committed_to_the_end(t: &Topics, per_partition: &[i64], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for (partition, end) in per_partition.iter().enumerate() {
        let partition = partition as i32;
        wait_for(
            &format!("partition {partition} committed to its end ({end})"),
            deadline.saturating_duration_since(Instant::now()),
            || committed_on(&t.group, &t.topic, partition) == Some(*end),
        );
    }
}

fn committed_offsets(t: &Topics, partitions: i32) -> Vec<Option<i64>> {
    (0..partitions)
        .map(|p| committed_on(&t.group, &t.topic, p))
        .collect()
}

/// The (event_id, channel) pairs in the dead-letter topic.
fn dead_letters(t: &Topics, at_most: usize) -> HashSet<(String, String)> {
    read_topic(&t.dlq, at_most, Duration::from_secs(5))
        .iter()
        .filter_map(|l| {
            Some((
                l.header("notify.event_id")?.to_string(),
                l.header("notify.channel")?.to_string(),
            ))
        })
        .collect()
}

/// Accepted sends of one purpose per (event_id, channel), in arrival order.
fn sends_by_delivery(
    accepted: &[Accepted],
    purpose: &str,
) -> BTreeMap<(String, String), Vec<Accepted>> {
    let mut by: BTreeMap<(String, String), Vec<Accepted>> = BTreeMap::new();
    for a in accepted.iter().filter(|a| a.purpose == purpose) {
        by.entry((a.event_id.clone(), a.channel.clone()))
            .or_default()
            .push(a.clone());
    }
    for sends in by.values_mut() {
        sends.sort_by_key(|a| a.at);
    }
    by
}

// ---------------------------------------------------------------------------
// 1. Kills, scaling and a database restart

struct Kill {
    slot: String,
    at: Instant,
    in_flight: Option<f64>,
}

/// Why a delivery was sent again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// The send before it was taken and its answer dropped.
    LostAnswer,
    /// The replica that sent before was killed in between (index into the
    /// kills).
    Kill(usize),
    /// Either send happened while a replica was added and another stopped.
    ScaleWindow,
    /// The database restart lies between the two sends.
    DatabaseRestart,
    /// The same replica process sent twice with no lost answer.
    SameReplica,
    /// Another replica sent again, with no kill of the first in between (a
    /// rebalance after a kill, or something unexplained).
    Other,
}

#[test]
fn three_replicas_share_the_ledger_through_kills_scaling_and_a_database_restart() {
    const PARTITIONS: i32 = 6;
    let n = env_or("NOTIFY_REPLICAS_EVENTS", 3000) as usize;
    let seconds = env_or("NOTIFY_REPLICAS_SECONDS", 45) as f64;
    let kills = env_or("NOTIFY_REPLICAS_KILLS", 3) as usize;
    let mut rng = fastrand::Rng::with_seed(env_or("NOTIFY_REPLICAS_SEED", 15));
    // A server of its own: this test restarts it.
    let pg = PgServer::start();
    let database = pg.create_database("replicas");
    let t = unique("replicas");
    create_topics_with(&t, PARTITIONS);
    let provider = Provider::start(FaultMix::CHAOS, rng.u64(..));
    let mut fleet = Fleet::new(&[]);
    for name in ["A", "B", "C"] {
        let url = provider.listen(name);
        fleet.add(name, |dir| replica_config(dir, &t, &url, &database, ""));
    }
    wait_for("three replicas ready", WAIT, || fleet.all_ready());

    let plan = plan("rp", n, PARTITIONS);
    let started = Instant::now();
    let since = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    let mut stream = Stream::start(&t.topic, plan.records.clone(), n as f64 / seconds);
    let mark = |share: f64| started + Duration::from_secs_f64(seconds * share);
    let mut conflicts = 0.0;

    // Kills at random moments in the first 40 % of the stream, one per
    // slot of time; a random one of the first three replicas each time,
    // among those working (ready) then: a replica still rejoining after
    // its restart has nothing in flight to lose.
    let mut kill_log: Vec<Kill> = Vec::new();
    for k in 0..kills {
        sleep_until(mark(0.08 + 0.32 * (k as f64 + rng.f64()) / kills as f64));
        let working: Vec<usize> = (0..3).filter(|i| fleet.ready(*i)).collect();
        let victim = match working.len() {
            0 => rng.usize(..3),
            n => working[rng.usize(..n)],
        };
        let admin = fleet.admin(victim).to_string();
        let in_flight = metric(&format!("{admin}/metrics"), "notify_in_flight ");
        conflicts += metric_sum(&admin, CLAIM_CONFLICTS).unwrap_or(0.0);
        let at = Instant::now();
        fleet.kill9(victim);
        println!(
            "replicas: {:.1} s: kill -9 {} ({} events in flight, {} published)",
            since(at),
            fleet.name(victim),
            in_flight.map_or("?".into(), |v| v.to_string()),
            stream.published()
        );
        kill_log.push(Kill {
            slot: fleet.name(victim).to_string(),
            at,
            in_flight,
        });
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        fleet.start(victim);
    }

    // The database restarts once, a few seconds down.
    sleep_until(mark(0.45));
    let db_down = Instant::now();
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again();
    let db_up = Instant::now();
    println!(
        "replicas: {:.1} s to {:.1} s: PostgreSQL down",
        since(db_down),
        since(db_up)
    );
    wait_for(
        "every replica ready after the database returned",
        WAIT,
        || fleet.all_ready(),
    );

    // Scaling, with no kill: a fourth replica joins, then one leaves with
    // SIGTERM (a rolling deploy's two halves).
    sleep_until(mark(0.6));
    let window_start = Instant::now();
    let url = provider.listen("D");
    let d = fleet.add("D", |dir| replica_config(dir, &t, &url, &database, ""));
    wait_for("the added replica ready", WAIT, || fleet.ready(d));
    println!(
        "replicas: {:.1} s: D added, ready at {:.1} s ({} published)",
        since(window_start),
        since(Instant::now()),
        stream.published()
    );
    let leaving = 1;
    conflicts += metric_sum(fleet.admin(leaving), CLAIM_CONFLICTS).unwrap_or(0.0);
    let term_at = Instant::now();
    let status = fleet.terminate(leaving);
    assert!(status.success(), "SIGTERM'd replica exited with {status}");
    println!(
        "replicas: {:.1} s: {} stopped with SIGTERM ({:.1} s to exit, {} published)",
        since(term_at),
        fleet.name(leaving),
        term_at.elapsed().as_secs_f64(),
        stream.published()
    );

    stream.finish();
    println!(
        "replicas: {:.1} s: all {n} events published",
        since(Instant::now())
    );
    wait_committed_to_the_end(&t, &plan.per_partition, Duration::from_secs(240));
    let done = Instant::now();
    assert!(fleet.all_running(), "a replica died on its own");
    let mut exposed = true;
    for i in fleet.alive() {
        match metric_sum(fleet.admin(i), CLAIM_CONFLICTS) {
            Some(v) => conflicts += v,
            None => exposed = false,
        }
    }
    let text = fleet.log_text();
    for i in fleet.alive() {
        let status = fleet.terminate(i);
        assert!(status.success(), "{} exited with {status}", fleet.name(i));
    }
    // The scale window ends when the run is done: no kill after it began.
    let in_window = |at: Instant| at >= window_start && at <= done;

    let accepted = provider.accepted();
    let answers_lost = accepted.iter().filter(|a| a.answer_lost).count();
    let sends = sends_by_delivery(&accepted, "confirmation");
    let dlq = dead_letters(&t, plan.requested.len());
    let lost: Vec<_> = plan
        .requested
        .iter()
        .filter(|k| !sends.contains_key(*k) && !dlq.contains(*k))
        .collect();
    let unasked: Vec<_> = sends
        .keys()
        .filter(|k| !plan.requested.contains(*k))
        .collect();
    let deliveries: usize = sends.values().map(Vec::len).sum();

    let mut causes: BTreeMap<Cause, usize> = BTreeMap::new();
    let mut per_kill = vec![0usize; kill_log.len()];
    let mut lines = Vec::new();
    for ((event, channel), list) in &sends {
        for pair in list.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            let killed = kill_log
                .iter()
                .position(|k| k.slot == prev.by && k.at >= prev.at && k.at <= next.at);
            let cause = if prev.answer_lost {
                Cause::LostAnswer
            } else if let Some(k) = killed {
                per_kill[k] += 1;
                Cause::Kill(k)
            } else if in_window(prev.at) || in_window(next.at) {
                Cause::ScaleWindow
            } else if prev.at <= db_up && next.at >= db_down {
                Cause::DatabaseRestart
            } else if prev.by == next.by {
                Cause::SameReplica
            } else {
                Cause::Other
            };
            lines.push(format!(
                "  {event}/{channel}: {} at {:.2} s, {} at {:.2} s: {cause:?}",
                prev.by,
                since(prev.at),
                next.by,
                since(next.at)
            ));
            let key = match cause {
                Cause::Kill(_) => Cause::Kill(0),
                c => c,
            };
            *causes.entry(key).or_default() += 1;
        }
    }
    let duplicates = lines.len();
    println!("replicas: duplicates ({duplicates}):");
    for line in &lines {
        println!("{line}");
    }
    let count = |c: Cause| causes.get(&c).copied().unwrap_or(0);
    let by_kills = count(Cause::Kill(0));
    let kills_text: Vec<String> = kill_log
        .iter()
        .zip(&per_kill)
        .map(|(k, d)| {
            format!(
                "{} at {:.1} s: {d} (in flight {})",
                k.slot,
                since(k.at),
                k.in_flight.map_or("?".into(), |v| v.to_string())
            )
        })
        .collect();
    println!(
        "replicas: events {n}, requested {}, deliveries {deliveries}, duplicates {duplicates} \
         (lost answers {}, kills {by_kills} [{}], scale window {}, database restart {}, same replica {}, other {}), \
         answers lost {answers_lost}, DLQ {}, lost {}, kills {kills}, claim conflicts {conflicts}{}, {:.1} s",
        plan.requested.len(),
        count(Cause::LostAnswer),
        kills_text.join("; "),
        count(Cause::ScaleWindow),
        count(Cause::DatabaseRestart),
        count(Cause::SameReplica),
        count(Cause::Other),
        dlq.len(),
        lost.len(),
        if exposed { "" } else { " (metric not exposed)" },
        started.elapsed().as_secs_f64()
    );

    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(
        unasked.is_empty(),
        "deliveries nobody asked for: {unasked:?}"
    );
    assert!(
        !text.contains("panicked"),
        "a replica panicked: {}",
        text.lines()
            .filter(|l| l.contains("panicked"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(exposed, "{CLAIM_CONFLICTS} is not in /metrics");
    assert!(
        answers_lost > 0,
        "the lost-answer fault never fired: the run is too small"
    );
    assert_eq!(
        count(Cause::ScaleWindow),
        0,
        "duplicates while a replica was added and another stopped (SIGTERM)"
    );
    assert_eq!(
        count(Cause::DatabaseRestart),
        0,
        "duplicates across the database restart"
    );
    assert_eq!(
        count(Cause::SameReplica),
        0,
        "a replica sent a delivery again without a lost answer"
    );
    assert_eq!(
        count(Cause::Other),
        0,
        "duplicates from another replica with no kill of the first in between (a rebalance)"
    );
    for (k, d) in kill_log.iter().zip(&per_kill) {
        assert!(
            *d <= CHANNELS * MAX_IN_FLIGHT,
            "kill of {}: {d} duplicates, more than the {} sends that can be in flight",
            k.slot,
            CHANNELS * MAX_IN_FLIGHT
        );
    }
    assert!(by_kills <= kills * CHANNELS * MAX_IN_FLIGHT);
}

// ---------------------------------------------------------------------------
// 2. Reminders across replicas

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How many of a round's reminders the ledger has in each state.
fn reminder_states(admin: &str, round: &str, m: usize) -> BTreeMap<String, usize> {
    let mut states = BTreeMap::new();
    for i in 0..m {
        let url = format!("{admin}/v1/appointments/{round}-a{i}/deliveries");
        let Some((200, _, body)) = api_request("GET", &url, Some(API_TOKEN)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for d in v["deliveries"].as_array().into_iter().flatten() {
            if d["purpose"] == "reminder" {
                let state = d["state"].as_str().unwrap_or("?").to_string();
                *states.entry(state).or_default() += 1;
            }
        }
    }
    states
}

fn open_reminders(admin: &str) -> Option<Vec<serde_json::Value>> {
    match api_request(
        "GET",
        &format!("{admin}/v1/reminders?limit=500"),
        Some(API_TOKEN),
    ) {
        Some((200, _, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .get("reminders")?
            .as_array()
            .cloned(),
        _ => None,
    }
}

/// How a round kills a replica.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long before the due time: no reminder is on the wire.
    BeforeDue(Duration),
    /// While the reminders are on the wire: the replica with the most sends
    /// waiting for their answer, as soon as the first one arrives.
    MidSend,
}

struct RoundResult {
    reminders: usize,
    /// Reminders the killed replica had sent without their answer yet.
    on_the_wire: usize,
    /// (appointment, channel) pairs whose reminder never reached the provider.
    never_sent: usize,
    /// The round's reminders per state in the ledger, once all finished.
    states: BTreeMap<String, usize>,
    duplicates: usize,
    /// Duplicates of sends the killed replica had on the wire at the kill.
    in_flight_at_kill: usize,
    latest: f64,
    fired_by: BTreeMap<String, usize>,
}

/// How long after its booking a reminder is due: long enough for every
/// booking to be worked and its reminders recorded first.
const DUE_IN: Duration = Duration::from_secs(10);

/// One round: `m` bookings with e-mail and SMS reminders due [`DUE_IN`]
/// from now, a replica killed (`kill`) and started again after the round.
fn reminder_round(
    fleet: &mut Fleet,
    provider: &Provider,
    t: &Topics,
    round: &str,
    m: usize,
    kill: KillAt,
    rng: &mut fastrand::Rng,
) -> RoundResult {
    let booked = Instant::now();
    let now = Utc::now();
    let time = rfc3339(now + TimeDelta::seconds(3600));
    let due = booked + DUE_IN;
    let records: Vec<(i32, Vec<u8>)> = (0..m)
        .map(|i| {
            (
                (i % 3) as i32,
                booking(
                    &format!("{round}-e{i}"),
                    &format!("{round}-a{i}"),
                    &time,
                    true,
                    true,
                ),
            )
        })
        .collect();
    publish_to_partitions(&t.topic, &records);
    let admin = fleet.admin(fleet.alive()[0]).to_string();
    // Every reminder must be on record before the kill, or the round shows
    // nothing about timers.
    wait_for(
        &format!("{round}: {} reminders scheduled well before due", 2 * m),
        due.saturating_duration_since(Instant::now() + Duration::from_secs(2)),
        || {
            open_reminders(&admin)
                .is_some_and(|r| r.iter().filter(|r| r["state"] == "scheduled").count() == 2 * m)
        },
    );
    wait_for(
        &format!("{round}: confirmations delivered"),
        due.saturating_duration_since(Instant::now() + Duration::from_secs(1)),
        || {
            provider
                .accepted()
                .iter()
                .filter(|a| a.purpose == "confirmation" && a.appointment.starts_with(round))
                .count()
                >= 2 * m
        },
    );
    let reminders_of_round = || -> Vec<Accepted> {
        provider
            .accepted()
            .into_iter()
            .filter(|a| a.purpose == "reminder" && a.appointment.starts_with(&format!("{round}-")))
            .collect()
    };
    let answer_delay = match kill {
        KillAt::BeforeDue(_) => Duration::ZERO,
        // Well inside the host's timeout: the answer is slow, not lost.
        KillAt::MidSend => Duration::from_millis(800),
    };
    provider.set_ok_delay(answer_delay);
    let (victim, killed_at) = match kill {
        KillAt::BeforeDue(ahead) => {
            sleep_until(due - ahead);
            let alive = fleet.alive();
            let victim = alive[rng.usize(..alive.len())];
            assert!(
                reminders_of_round().is_empty(),
                "{round}: a reminder went out before its due time"
            );
            let at = Instant::now();
            fleet.kill9(victim);
            (victim, at)
        }
        KillAt::MidSend => {
            let deadline = due + WAIT;
            while reminders_of_round().is_empty() {
                assert!(Instant::now() < deadline, "{round}: no reminder went out");
                std::thread::sleep(Duration::from_millis(5));
            }
            // Let the first sender put more on the wire, then kill the
            // replica with the most sends still waiting for their answer.
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
            for a in reminders_of_round() {
                if a.at + answer_delay > now {
                    *waiting.entry(a.by).or_default() += 1;
                }
            }
            let busiest = waiting
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(by, _)| by.clone());
            let victim = busiest
                .and_then(|by| fleet.alive().into_iter().find(|i| fleet.name(*i) == by))
                .unwrap_or_else(|| fleet.alive()[0]);
            let at = Instant::now();
            fleet.kill9(victim);
            (victim, at)
        }
    };
    let slot = fleet.name(victim).to_string();
    let relative = |at: Instant| -> f64 {
        if at >= due {
            (at - due).as_secs_f64()
        } else {
            -(due - at).as_secs_f64()
        }
    };
    println!(
        "replicas/reminders {round}: {} reminders due, {slot} killed at {:+.2} s from due",
        2 * m,
        relative(killed_at)
    );
    let survivor = fleet.admin(fleet.alive()[0]).to_string();
    // Done when the ledger has every reminder of the round in a final state
    // (a survivor's `/v1/reminders` leaves out the timers another host
    // claimed, so an empty list is not enough).
    let mut states = BTreeMap::new();
    wait_for(
        &format!("{round}: every reminder finished in the ledger"),
        WAIT,
        || {
            states = reminder_states(&survivor, round, m);
            let open: usize = ["scheduled", "pending", "retrying", "waiting", "held"]
                .iter()
                .filter_map(|s| states.get(*s))
                .sum();
            open == 0 && states.values().sum::<usize>() == 2 * m
        },
    );
    println!(
        "replicas/reminders {round}: all finished {:+.2} s from due: {states:?}",
        relative(Instant::now())
    );
    provider.set_ok_delay(Duration::ZERO);
    // The killed replica back: it must not send any of them again either.
    fleet.start(victim);
    wait_for(&format!("{round}: {slot} ready again"), WAIT, || {
        fleet.ready(victim)
    });

    let sent = reminders_of_round();
    let mut per: BTreeMap<(String, String), Vec<Accepted>> = BTreeMap::new();
    for a in &sent {
        per.entry((a.appointment.clone(), a.channel.clone()))
            .or_default()
            .push(a.clone());
    }
    let never_sent = 2 * m - per.len();
    let mut fired_by: BTreeMap<String, usize> = BTreeMap::new();
    for a in &sent {
        *fired_by.entry(a.by.clone()).or_default() += 1;
    }
    let on_the_wire_at_kill =
        |a: &Accepted| a.by == slot && a.at <= killed_at && killed_at < a.at + answer_delay;
    let on_the_wire = sent.iter().filter(|a| on_the_wire_at_kill(a)).count();
    let mut duplicates = 0;
    let mut in_flight_at_kill = 0;
    for ((appointment, channel), list) in &mut per {
        list.sort_by_key(|a| a.at);
        for pair in list.windows(2) {
            duplicates += 1;
            let on_the_wire = on_the_wire_at_kill(&pair[0]);
            println!(
                "  duplicate {appointment}/{channel}: {} at {:+.2} s, {} at {:+.2} s{}",
                pair[0].by,
                relative(pair[0].at),
                pair[1].by,
                relative(pair[1].at),
                if on_the_wire {
                    " (on the wire at the kill)"
                } else {
                    ""
                }
            );
            if on_the_wire {
                in_flight_at_kill += 1;
            }
        }
    }
    let latest = sent.iter().map(|a| relative(a.at)).fold(f64::MIN, f64::max);
    RoundResult {
        reminders: 2 * m,
        on_the_wire,
        never_sent,
        states,
        duplicates,
        in_flight_at_kill,
        latest,
        fired_by,
    }
}

#[test]
fn reminders_fire_once_across_three_replicas_with_one_killed_around_the_due_time() {
    let m = env_or("NOTIFY_REPLICAS_REMINDERS", 12) as usize;
    let mut rng = fastrand::Rng::with_seed(env_or("NOTIFY_REPLICAS_SEED", 15));
    let database = fresh_database("replicas_reminders");
    let t = unique("replicas-reminders");
    create_topics_with(&t, 3);
    let provider = Provider::start(FaultMix::NONE, 1);
    // Due DUE_IN after booking: the appointment an hour ahead, the
    // reminder `before` it by an hour less DUE_IN.
    let lead = Duration::from_secs(3600) - DUE_IN;
    let policy = format!(
        "\n[[reminders]]\nname = \"soon\"\nbefore = \"{}ms\"\nchannels = [\"email\", \"sms\"]\n",
        lead.as_millis()
    );
    let mut fleet = Fleet::new(&api_env());
    for name in ["A", "B", "C"] {
        let url = provider.listen(name);
        fleet.add(name, |dir| {
            with_api_token(&replica_config(dir, &t, &url, &database, &policy))
        });
    }
    wait_for("three replicas ready", WAIT, || fleet.all_ready());
    let started = Instant::now();

    // A kill a second before the due time: no reminder on the wire, so each
    // fires exactly once, by a replica that is alive.
    let before = reminder_round(
        &mut fleet,
        &provider,
        &t,
        "R1",
        m,
        KillAt::BeforeDue(Duration::from_secs(1)),
        &mut rng,
    );
    // A kill while reminders are on the wire (answers slowed to 0.8 s):
    // the one documented duplicate is a reminder the killed replica had
    // sent and not heard back about; nothing else.
    let during = reminder_round(
        &mut fleet,
        &provider,
        &t,
        "R2",
        m,
        KillAt::MidSend,
        &mut rng,
    );
    for i in fleet.alive() {
        let status = fleet.terminate(i);
        assert!(status.success(), "{} exited with {status}", fleet.name(i));
    }
    let text = fleet.log_text();
    println!(
        "replicas/reminders: kill 1 s before due: {} reminders, {} duplicates, last sent {:+.2} s from due, sent by {:?}; \
         kill mid-send: {} reminders, {} on the wire at the kill, {} duplicates ({} of those on the wire), last sent {:+.2} s from due, sent by {:?}; {:.1} s",
        before.reminders,
        before.duplicates,
        before.latest,
        before.fired_by,
        during.reminders,
        during.on_the_wire,
        during.duplicates,
        during.in_flight_at_kill,
        during.latest,
        during.fired_by,
        started.elapsed().as_secs_f64()
    );
    assert!(!text.contains("panicked"), "a replica panicked");
    for (name, r) in [("kill before due", &before), ("kill mid-send", &during)] {
        assert_eq!(r.never_sent, 0, "{name}: reminders that never went out");
        assert_eq!(
            r.states.get("delivered"),
            Some(&r.reminders),
            "{name}: not every reminder is recorded delivered: {:?}",
            r.states
        );
    }
    assert_eq!(
        before.duplicates, 0,
        "a reminder fired twice though the kill came before any was due"
    );
    assert_eq!(
        during.duplicates, during.in_flight_at_kill,
        "duplicates beyond the sends on the wire at the kill"
    );
}

// ---------------------------------------------------------------------------
// 3. The database away

#[test]
fn the_database_away_for_30_seconds_loses_nothing_and_sends_nothing_twice() {
    const PARTITIONS: i32 = 4;
    let outage = Duration::from_secs(env_or("NOTIFY_REPLICAS_OUTAGE_SECONDS", 30));
    let n = env_or("NOTIFY_REPLICAS_OUTAGE_EVENTS", 1200) as usize;
    let pg = PgServer::start();
    let database = pg.create_database("outage");
    let t = unique("replicas-db-away");
    create_topics_with(&t, PARTITIONS);
    // No faults: any second send is the host's.
    let provider = Provider::start(FaultMix::NONE, 3);
    let mut fleet = Fleet::new(&[]);
    for name in ["A", "B"] {
        let url = provider.listen(name);
        fleet.add(name, |dir| replica_config(dir, &t, &url, &database, ""));
    }
    wait_for("two replicas ready", WAIT, || fleet.all_ready());

    let plan = plan("dba", n, PARTITIONS);
    let started = Instant::now();
    let since = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    // Events before, during and after the outage.
    let run = outage + Duration::from_secs(20);
    let mut stream = Stream::start(&t.topic, plan.records.clone(), n as f64 / run.as_secs_f64());
    wait_for("deliveries flowing", WAIT, || {
        provider.accepted().len() >= 100
    });

    pg.stop();
    let down = Instant::now();
    // Sends already on the wire finish and claims already asked for get
    // their answer; after this, nothing may go out until the database is
    // back.
    let grace = Duration::from_secs(3);
    let frozen_from = down + Duration::from_secs(8);
    let mut not_ready_at: Vec<Option<Instant>> = vec![None; 2];
    let mut ready_while_away = vec![0usize; 2];
    let mut unanswered = vec![0usize; 2];
    let mut live_failures = 0;
    let mut frozen: Option<Vec<Option<i64>>> = None;
    while down.elapsed() < outage {
        for i in 0..2 {
            match ready_status(fleet.admin(i)) {
                Some(200) if not_ready_at[i].is_some() => ready_while_away[i] += 1,
                Some(200) => {}
                Some(_) => {
                    not_ready_at[i].get_or_insert_with(Instant::now);
                }
                None => unanswered[i] += 1,
            }
            if http_get(&format!("{}/health/live", fleet.admin(i))).map(|(s, _)| s) != Some(200) {
                live_failures += 1;
            }
        }
        assert!(
            fleet.all_running(),
            "a replica exited while the database was away"
        );
        if frozen.is_none() && Instant::now() >= frozen_from {
            frozen = Some(committed_offsets(&t, PARTITIONS));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let committed_at_end_of_outage = committed_offsets(&t, PARTITIONS);
    pg.start_again();
    let up = Instant::now();
    wait_for(
        "both replicas ready after the database returned",
        WAIT,
        || fleet.all_ready(),
    );
    let ready_again = up.elapsed();
    let sends_while_away = provider.requests_between(down + grace, up);
    let published_while_away = stream.published_between(down, up);
    stream.finish();
    wait_committed_to_the_end(&t, &plan.per_partition, Duration::from_secs(180));
    assert!(fleet.all_running(), "a replica died");
    let text = fleet.log_text();
    for i in fleet.alive() {
        let status = fleet.terminate(i);
        assert!(status.success(), "{} exited with {status}", fleet.name(i));
    }

    let sends = sends_by_delivery(&provider.accepted(), "confirmation");
    let dlq = dead_letters(&t, plan.requested.len());
    let lost: Vec<_> = plan
        .requested
        .iter()
        .filter(|k| !sends.contains_key(*k) && !dlq.contains(*k))
        .collect();
    let twice: Vec<_> = sends
        .iter()
        .filter(|(_, list)| list.len() > 1)
        .map(|((event, channel), list)| {
            let at: Vec<String> = list
                .iter()
                .map(|a| format!("{} at {:.2} s", a.by, since(a.at)))
                .collect();
            format!("{event}/{channel}: {}", at.join(", "))
        })
        .collect();
    let to_not_ready: Vec<String> = not_ready_at
        .iter()
        .map(|at| {
            at.map_or("never".into(), |at| {
                format!("{:.1} s", (at - down).as_secs_f64())
            })
        })
        .collect();
    println!(
        "replicas/db-away: events {n} ({published_while_away} published while the database was away for {:.0} s), \
         requested {}, delivered {}, sent twice {}, DLQ {}, lost {}; not ready after [{}], \
         ready again {:.1} s after it returned; sends while away (after {:.0} s) {sends_while_away}; \
         ready answers while away {ready_while_away:?}, unanswered readiness {unanswered:?}, liveness failures {live_failures}; \
         committed {frozen:?} at +8 s, {committed_at_end_of_outage:?} at the end of the outage; {:.1} s",
        outage.as_secs_f64(),
        plan.requested.len(),
        sends.len(),
        twice.len(),
        dlq.len(),
        lost.len(),
        to_not_ready.join(", "),
        ready_again.as_secs_f64(),
        grace.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for line in &twice {
        println!("  sent twice: {line}");
    }
    assert!(
        published_while_away > 0,
        "nothing was published during the outage"
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(dlq.is_empty(), "dead-lettered: {dlq:?}");
    assert!(!text.contains("panicked"), "a replica panicked");
    for (i, at) in not_ready_at.iter().enumerate() {
        let at = at.unwrap_or_else(|| {
            panic!("{} stayed ready while the database was away", fleet.name(i))
        });
        assert!(
            at - down < Duration::from_secs(15),
            "{} took {:.1} s to report not ready",
            fleet.name(i),
            (at - down).as_secs_f64()
        );
    }
    assert_eq!(
        ready_while_away,
        vec![0, 0],
        "ready (200) again while the database was still away"
    );
    assert_eq!(unanswered, vec![0, 0], "/health/ready did not answer");
    assert_eq!(
        live_failures, 0,
        "/health/live failed while the database was away"
    );
    assert_eq!(
        sends_while_away, 0,
        "sends the host could not record went out while the database was away"
    );
    assert_eq!(
        frozen.as_ref(),
        Some(&committed_at_end_of_outage),
        "offsets were committed while the database was away"
    );
}
