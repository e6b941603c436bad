//! Rebalances: two hosts in one group share a 4-partition topic; one is
//! killed (SIGKILL) mid-run and restarted. Nothing is lost, every partition
//! is committed to its end, intake never passes `pipeline.max_in_flight`,
//! and no partition is left paused. Plus a measurement (ignored): how long a
//! restarted host takes to deliver again, with and without static
//! membership (`kafka.instance_id`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::*;
use crate::kafka_harness::*;

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const TWILIO_OK: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 4;
/// Small, so both hosts sit at it while the providers answer slowly.
const MAX_IN_FLIGHT: usize = 16;
/// Below the global limit, so one partition cannot take every slot; a host
/// owns two or more partitions, so the global limit is reached too.
const MAX_IN_FLIGHT_PER_PARTITION: usize = 12;

/// Event ids Mailgun's stand-in saw (`v:event_id`).
fn mailgun_ids(s: &StandIn) -> BTreeSet<String> {
    s.received().iter().filter_map(mailgun_event_id).collect()
}

/// Event ids Twilio's stand-in saw, from the appointment id in the body
/// ("Appointment appt-ID confirmed for ...").
fn twilio_ids(s: &StandIn) -> BTreeSet<String> {
    s.received()
        .iter()
        .filter_map(|r| {
            let body = parse_form(&r.body)
                .into_iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v)?;
            body.split_whitespace()
                .find_map(|w| w.strip_prefix("appt-"))
                .map(str::to_string)
        })
        .collect()
}

/// The events of one batch: ids `{prefix}-{i}`, spread over the partitions
/// in turn; e-mail, SMS or both.
struct Batch {
    records: Vec<(i32, Vec<u8>)>,
    email: BTreeSet<String>,
    sms: BTreeSet<String>,
}

fn batch(prefix: &str, n: usize) -> Batch {
    let mut b = Batch {
        records: Vec::new(),
        email: BTreeSet::new(),
        sms: BTreeSet::new(),
    };
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let (email, sms) = match i % 3 {
            0 => (true, true),
            1 => (true, false),
            _ => (false, true),
        };
        if email {
            b.email.insert(id.clone());
        }
        if sms {
            b.sms.insert(id.clone());
        }
        b.records
            .push((i as i32 % PARTITIONS, event(&id, email, sms)));
    }
    b
}

fn is_ready(config: &Path) -> bool {
    http_get(&format!("{}/health/ready", admin_url(config))).is_some_and(|(s, _)| s == 200)
}

/// Samples `notify_in_flight` of every host every 20 ms until dropped.
struct InFlightSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InFlightSampler {
    fn start(configs: Vec<PathBuf>) -> Self {
        let urls: Vec<String> = configs
            .iter()
            .map(|c| format!("{}/metrics", admin_url(c)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for url in &urls {
                        // A killed host does not answer: no sample.
                        if let Some(v) = metric(url, "notify_in_flight ") {
                            samples.lock().expect("lock").push(v);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        InFlightSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples.lock().expect("lock").clone()
    }
}

/// Prints the hosts' logs when the test fails, for the post-mortem (the
/// rebalance lines always with NOTIFY_TEST_LOGS=1).
struct LogsOnFailure(Vec<(&'static str, Arc<Mutex<Vec<String>>>)>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        let asked = std::env::var_os("NOTIFY_TEST_LOGS").is_some();
        if !std::thread::panicking() && !asked {
            return;
        }
        for (name, logs) in &self.0 {
            let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<&String> = if std::thread::panicking() {
                logs.iter().rev().take(60).rev().collect()
            } else {
                logs.iter()
                    .filter(|l| l.contains("partition") || l.contains("group"))
                    .collect()
            };
            eprintln!("--- {name}: log lines");
            for line in lines {
                eprintln!("{line}");
            }
        }
    }
}

fn wait_delivered(mailgun: &StandIn, twilio: &StandIn, b: &Batch, what: &str) {
    wait_for(what, WAIT, || {
        mailgun_ids(mailgun).is_superset(&b.email) && twilio_ids(twilio).is_superset(&b.sms)
    });
}

/// `published`: records published to each partition so far (counted: tansu
/// 0.6 reports a high watermark of 1 for a partition written in batches).
fn wait_committed_to_the_end(t: &Topics, published: i64) {
    for partition in 0..PARTITIONS {
        let end = published;
        wait_for(
            &format!("partition {partition} committed to its end ({end})"),
            WAIT,
            || committed_on(&t.group, &t.topic, partition) == Some(end),
        );
    }
}

#[test]
fn rebalance_a_host_killed_and_restarted_loses_nothing_and_never_overloads() {
    let t = unique("rebalance");
    create_topics_with(&t, PARTITIONS);
    // Slow providers, so in-flight work piles up to the limits.
    let slow = |body| Reply::new(200, body).delayed(Duration::from_millis(150));
    let mailgun = StandIn::start(vec![slow(MAILGUN_OK)]);
    let twilio = StandIn::start(vec![slow(TWILIO_OK)]);
    let limits = format!(
        "max_in_flight = {MAX_IN_FLIGHT}\nmax_in_flight_per_partition = {MAX_IN_FLIGHT_PER_PARTITION}"
    );
    // One work dir each: every host has its own dedup store.
    let (wa, wb) = (Workdir::new(), Workdir::new());
    let config_a = host_config(&wa, &t, &mailgun.url(), &twilio.url(), &limits);
    let config_b = host_config(&wb, &t, &mailgun.url(), &twilio.url(), &limits);
    let mut a = Host::start(&config_a);
    let b = Host::start(&config_b);
    let mut logs = LogsOnFailure(vec![("host a", a.logs.clone()), ("host b", b.logs.clone())]);
    wait_for("both hosts to own partitions", WAIT, || {
        is_ready(&config_a) && is_ready(&config_b)
    });
    let sampler = InFlightSampler::start(vec![config_a.clone(), config_b.clone()]);

    let first = batch("r", 600);
    publish_to_partitions(&t.topic, &first.records);
    let sends = first.email.len() + first.sms.len();
    wait_for("a third of the sends", WAIT, || {
        mailgun.received().len() + twilio.received().len() >= sends / 3
    });
    let during_run = http_get(&format!("{}/metrics", admin_url(&config_b)))
        .map(|(_, body)| body)
        .unwrap_or_default();
    a.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let a = a.restart();
    logs.0.push(("host a, restarted", a.logs.clone()));

    wait_delivered(
        &mailgun,
        &twilio,
        &first,
        "every requested send of the first batch",
    );
    let per_partition = |b: &Batch| b.records.len() as i64 / i64::from(PARTITIONS);
    wait_committed_to_the_end(&t, per_partition(&first));

    // Every partition still fetches: a partition left paused would hold
    // these back.
    let second = batch("after", 40);
    publish_to_partitions(&t.topic, &second.records);
    wait_delivered(&mailgun, &twilio, &second, "every send after the restart");
    wait_committed_to_the_end(&t, per_partition(&first) + per_partition(&second));

    let samples = sampler.finish();
    let max = samples.iter().copied().fold(0.0, f64::max);
    assert!(samples.len() > 20, "too few samples: {}", samples.len());
    assert!(
        max <= MAX_IN_FLIGHT as f64,
        "intake went beyond max_in_flight = {MAX_IN_FLIGHT}: {max}"
    );
    assert_eq!(
        max, MAX_IN_FLIGHT as f64,
        "the limit was never reached, so this test showed nothing"
    );
    // The age of the oldest unfinished event is exported per partition.
    assert!(
        during_run.contains("notify_oldest_unfinished_seconds{"),
        "{during_run}"
    );
    for host in [&a, &b] {
        let text = host.log_text();
        assert!(
            text.contains("\"assignment_strategy\":\"cooperative-sticky\""),
            "{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// Publishes one event every `every` to alternating partitions until
/// dropped.
struct EventStream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventStream {
    fn start(topic: &str, partitions: i32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("acks", "all")
            .create()
            .expect("producer");
        let thread = {
            let (stop, topic) = (stop.clone(), topic.to_string());
            std::thread::spawn(move || {
                let rt = runtime();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let payload = event(&format!("s-{i}"), true, false);
                    let record = FutureRecord::<(), _>::to(&topic)
                        .partition(i % partitions)
                        .payload(&payload);
                    let _ = rt.block_on(producer.send(record, Duration::from_secs(10)));
                    i += 1;
                    std::thread::sleep(every);
                }
            })
        };
        EventStream {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One kill -9 and restart of a lone host while events keep arriving: the
/// time from the kill to the restarted host's first delivery.
fn kill_to_first_delivery(static_member: bool, librdkafka_session_default: bool) -> Duration {
    let t = unique("restart-measure");
    create_topics_with(&t, 2);
    let mailgun = StandIn::start(vec![Reply::new(200, MAILGUN_OK)]);
    let w = Workdir::new();
    let config = host_config(&w, &t, &mailgun.url(), &mailgun.url(), "");
    let mut text = std::fs::read_to_string(&config).expect("config");
    if librdkafka_session_default {
        // What users get: session.timeout.ms 45000 (and the poll interval
        // must not be below it).
        text = text
            .lines()
            .filter(|l| {
                !(l.starts_with("\"session.timeout.ms\"")
                    || l.starts_with("\"max.poll.interval.ms\""))
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    if static_member {
        let id = format!("measure-{:08x}", fastrand::u32(..));
        text = text.replacen(
            "[kafka]\n",
            &format!("[kafka]\ninstance_id = \"{id}\"\n"),
            1,
        );
    }
    std::fs::write(&config, text).expect("config");
    let mut host = Host::start(&config);
    let _stream = EventStream::start(&t.topic, 2, Duration::from_millis(100));
    wait_for("the first delivery", Duration::from_secs(120), || {
        !mailgun.received().is_empty()
    });
    let killed = Instant::now();
    host.kill9();
    let started = Instant::now();
    let again = host.restart();
    wait_for(
        "the restarted host's first delivery",
        Duration::from_secs(180),
        || mailgun.received_at().iter().any(|at| *at > started),
    );
    let first = mailgun
        .received_at()
        .into_iter()
        .filter(|at| *at > started)
        .min()
        .expect("a delivery after the restart");
    drop(again);
    first - killed
}

#[test]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture"]
fn rebalance_measure_kill_to_first_delivery_with_and_without_static_membership() {
    for (session_default, label) in [
        (false, "session.timeout.ms=6000 (test harness)"),
        (true, "session.timeout.ms=45000 (librdkafka default)"),
    ] {
        for static_member in [false, true] {
            let mut runs: Vec<Duration> = (0..3)
                .map(|_| kill_to_first_delivery(static_member, session_default))
                .collect();
            let raw: Vec<String> = runs
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            runs.sort();
            println!(
                "{label}, {}: kill -9 to first delivery, runs [{}] s, median {:.2} s",
                if static_member {
                    "kafka.instance_id set"
                } else {
                    "no instance id"
                },
                raw.join(", "),
                runs[1].as_secs_f64()
            );
        }
    }
}
