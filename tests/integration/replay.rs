//! Sending again what the host kept, end to end: `notify-host dlq list` and
//! `dlq replay` against a real broker's dead-letter topic, and a held
//! backlog released once its channel is on. The ledger is what makes a
//! second replay or release send nothing more; these tests count the
//! requests the provider stand-ins receive to prove it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{mailgun_event_ids, setup, Setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const MAILGUN_BAD_ADDRESS: &str = r#"{"message":"'to' parameter is not a valid address"}"#;
const TWILIO_OK: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
const TWILIO_INVALID_TO: &str = r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
const WAIT: Duration = Duration::from_secs(60);

/// The suite's config, with the event id at the end of every SMS (so the
/// Twilio stand-in's requests can be told apart) and `table_extra` lines
/// added to the tables named: `[("channels.sms", "mode = \"hold\"")]`.
fn config(s: &Setup, table_extra: &[(&str, &str)]) -> PathBuf {
    config_with(s, "", table_extra)
}

/// [`config`] with `pipeline` lines under `[pipeline]` too.
fn config_with(s: &Setup, pipeline: &str, table_extra: &[(&str, &str)]) -> PathBuf {
    let path = s.config(pipeline);
    let mut text = std::fs::read_to_string(&path).expect("config").replace(
        "settings = { account_sid",
        "settings = { body_template = \"Appointment {appointment_id} #{event_id}\", account_sid",
    );
    for (table, line) in table_extra {
        let header = format!("[{table}]\n");
        assert!(text.contains(&header), "no [{table}] in the config");
        text = text.replacen(&header, &format!("{header}{line}\n"), 1);
    }
    std::fs::write(&path, text).expect("config");
    path
}

/// The environment the config's `${...}` need.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("MAILGUN_API_KEY", MAILGUN_KEY.into()),
        ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.into()),
    ]
}

/// `notify-host ARGS --config CONFIG`, as an operator runs it (no
/// terminal: no prompt, no progress bar).
fn cli(args: &[&str], config: &Path) -> Output {
    let config = config.to_string_lossy();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", &config]);
    notify_host(&all, &env(), &root())
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// `dlq list --json` with filters: one JSON object per dead letter.
fn list(config: &Path, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["dlq", "list", "--json"];
    args.extend(filters);
    ok(&cli(&args, config))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Event ids of the SMS the Twilio stand-in received, counted.
fn sms_sent(s: &Setup) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for r in s.twilio.received() {
        let id = parse_form(&r.body)
            .into_iter()
            .find(|(k, _)| k == "Body")
            .and_then(|(_, b)| b.rsplit('#').next().map(String::from))
            .unwrap_or_default();
        *count.entry(id).or_default() += 1;
    }
    count
}

/// How many records the events topic holds (its end offset, one partition).
fn topic_len(s: &Setup) -> usize {
    read_topic(&s.t.topic, usize::MAX, Duration::from_secs(3)).len()
}

#[test]
fn a_replay_sends_only_the_dead_lettered_sms_and_a_second_replay_sends_nothing() {
    let s = setup(
        "replay",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(400, TWILIO_INVALID_TO)],
    );
    let config = config(&s, &[]);
    let host = Host::start(&config);
    publish_with_headers(
        &s.t.topic,
        &event("e-replay", true, true),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    );
    s.wait_committed(1);
    assert_eq!(mailgun_event_ids(&s.mailgun), ["e-replay"]);
    assert_eq!(
        s.twilio.received().len(),
        1,
        "a permanent failure, not retried"
    );
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    assert_eq!(letters[0].header("notify.channel"), Some("sms"));

    // The cause is fixed (say the patient's number was corrected upstream
    // of the provider): Twilio accepts now.
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    let out = cli(&["dlq", "replay", "--event-id", "e-replay"], &config);
    let text = ok(&out);
    assert!(
        text.contains("matched 1, replayed 1, skipped 0"),
        "{text}\n{}",
        stderr(&out)
    );
    s.wait_committed(2);
    assert_eq!(
        sms_sent(&s).get("e-replay"),
        Some(&2),
        "exactly one more SMS: {:?}",
        sms_sent(&s)
    );
    assert_eq!(
        mailgun_event_ids(&s.mailgun),
        ["e-replay"],
        "no second e-mail"
    );

    // What was re-published: the original, its key-less record and
    // traceparent kept, failure headers dropped, the replay marked.
    let source = read_topic(&s.t.topic, 2, WAIT);
    assert_eq!(source.len(), 2);
    assert_eq!(source[1].payload, event("e-replay", true, true));
    assert_eq!(
        source[1].header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(
        source[1].header("notify.replay_of"),
        Some(format!("{}/0/0", s.t.dlq).as_str())
    );
    assert!(
        !source[1]
            .headers
            .iter()
            .any(|(k, _)| k.starts_with("notify.") && k != "notify.replay_of"),
        "{:?}",
        source[1].headers
    );

    // The same dead letter again: re-published, and the ledger sees the
    // SMS delivered.
    ok(&cli(&["dlq", "replay", "--event-id", "e-replay"], &config));
    s.wait_committed(3);
    assert_eq!(sms_sent(&s).get("e-replay"), Some(&2), "nothing more sent");
    assert_eq!(mailgun_event_ids(&s.mailgun), ["e-replay"]);
    assert_eq!(
        read_topic(&s.t.dlq, 2, Duration::from_secs(2)).len(),
        1,
        "no new dead letter"
    );
}

#[test]
fn dlq_list_filters_by_header_and_a_dry_run_publishes_nothing() {
    let s = setup(
        "dlqlist",
        vec![Reply::new(400, MAILGUN_BAD_ADDRESS)],
        vec![Reply::new(400, TWILIO_INVALID_TO)],
    );
    let config = config(&s, &[]);
    let host = Host::start(&config);
    publish(
        &s.t.topic,
        &[
            event("e-sms", false, true),
            event("e-both", true, true),
            b"{not json".to_vec(),
        ],
    );
    s.wait_committed(3);
    assert_eq!(
        read_topic(&s.t.dlq, 4, WAIT).len(),
        4,
        "{}",
        host.log_text()
    );

    let all = list(&config, &[]);
    assert_eq!(all.len(), 4, "{all:?}");
    let ids = |letters: &[serde_json::Value]| {
        let mut ids: Vec<String> = letters
            .iter()
            .map(|l| l["event_id"].as_str().unwrap_or("-").to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&list(&config, &["--channel", "sms"])),
        ["e-both", "e-sms"]
    );
    assert_eq!(ids(&list(&config, &["--channel", "email"])), ["e-both"]);
    let invalid = list(&config, &["--class", "invalid_event"]);
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0]["source"]["offset"], 2);
    assert_eq!(invalid[0]["dlq"]["topic"], s.t.dlq.as_str());
    assert_eq!(ids(&list(&config, &["--class", "permanent"])).len(), 3);
    assert_eq!(
        ids(&list(&config, &["--event-id", "e-both"])),
        ["e-both", "e-both"]
    );
    assert_eq!(
        ids(&list(
            &config,
            &["--event-id", "e-both", "--channel", "sms"]
        )),
        ["e-both"]
    );
    assert_eq!(list(&config, &["--since", "1h"]).len(), 4);
    assert_eq!(list(&config, &["--until", "1h"]).len(), 0);
    assert_eq!(list(&config, &["--since", "2099-01-01T00:00:00Z"]).len(), 0);
    assert_eq!(list(&config, &["--limit", "2"]).len(), 2);
    let sms = list(&config, &["--event-id", "e-sms"]);
    assert_eq!(sms[0]["error_class"], "permanent");
    assert_eq!(sms[0]["provider_status"], 400);
    assert_eq!(sms[0]["source"]["topic"], s.t.topic.as_str());
    assert!(sms[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("21211")));

    // The table: a header and one row per letter.
    let table = ok(&cli(&["dlq", "list", "--channel", "sms"], &config));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("FAILED_AT") && lines[0].contains("REASON"));
    assert!(
        lines.iter().any(|l| l.contains("e-sms")
            && l.contains("permanent")
            && l.contains(&format!("{}/0/0", s.t.topic))),
        "{table}"
    );
    let bad = cli(&["dlq", "list", "--since", "last tuesday"], &config);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--since"), "{}", stderr(&bad));

    // A dry run: it says what it would do and publishes nothing.
    let before = (s.mailgun.received().len(), s.twilio.received().len());
    let dry = ok(&cli(&["dlq", "replay", "--dry-run"], &config));
    assert!(
        dry.contains("dry run: matched 4, would replay 2, skipped 2"),
        "{dry}"
    );
    assert!(
        dry.contains("1 invalid_event") && dry.contains("--class invalid_event"),
        "{dry}"
    );
    assert!(dry.contains("1 duplicate"), "{dry}");
    let dry = ok(&cli(
        &["dlq", "replay", "--dry-run", "--class", "invalid_event"],
        &config,
    ));
    assert!(dry.contains("would replay 1, skipped 0"), "{dry}");
    assert_eq!(topic_len(&s), 3, "a dry run publishes nothing");
    assert_eq!(s.committed(), Some(3));
    assert_eq!(
        (s.mailgun.received().len(), s.twilio.received().len()),
        before
    );
}

#[test]
fn dlq_list_ends_with_a_clear_error_when_the_broker_is_unreachable() {
    let s = setup("dlqdown", vec![], vec![]);
    let config = config(&s, &[]);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&bootstrap(), &format!("127.0.0.1:{closed}"));
    std::fs::write(&config, text).expect("config");
    let started = Instant::now();
    let out = cli(&["dlq", "list", "--timeout-seconds", "2"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the broker"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it gave up in time"
    );
}

/// `notify-host deliveries release --channel CHANNEL --json`, as an
/// operator runs it against the running host's status API
/// (`POST /v1/channels/CHANNEL/release`): the release report.
fn release(config: &Path, channel: &str, dry_run: bool) -> serde_json::Value {
    let url = admin_url(config);
    let mut args = vec![
        "deliveries",
        "release",
        "--channel",
        channel,
        "--url",
        &url,
        "--json",
    ];
    if dry_run {
        args.push("--dry-run");
    }
    let out = notify_host(&args, &[("NOTIFY_ADMIN_TOKEN", API_TOKEN.into())], &root());
    let text = ok(&out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn held_sms_are_sent_once_when_released_and_a_second_release_sends_nothing() {
    let s = setup(
        "hold",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let token = format!("token = \"{API_TOKEN}\"");
    let held = config(
        &s,
        &[("channels.sms", "mode = \"hold\""), ("admin", &token)],
    );
    let mut host = Host::start(&held);
    let ids = ["e-hold-1", "e-hold-2", "e-hold-3"];
    let events: Vec<Vec<u8>> = ids.iter().map(|id| event(id, true, true)).collect();
    publish(&s.t.topic, &events);
    s.wait_committed(3);
    let mut mail = mailgun_event_ids(&s.mailgun);
    mail.sort();
    assert_eq!(mail, ids, "e-mail goes out while SMS is on hold");
    assert!(s.twilio.received().is_empty(), "no SMS while on hold");
    assert!(host.terminate().success(), "{}", host.log_text());

    // The sender number is verified: SMS on, host restarted.
    let on = std::fs::read_to_string(&held)
        .expect("config")
        .replace("mode = \"hold\"\n", "mode = \"on\"\n");
    std::fs::write(&held, on).expect("config");
    let host = Host::start(&held);
    // A marker behind the held events: once it is committed, the restarted
    // host has read everything it would redeliver, and sent no SMS for it.
    publish(&s.t.topic, &[event("e-marker", true, false)]);
    s.wait_committed(4);
    assert!(
        s.twilio.received().is_empty(),
        "committed offsets: nothing redelivered, so no SMS before the release\n{}",
        host.log_text()
    );

    let dry = release(&held, "sms", true);
    assert_eq!(dry["held"], 3, "{dry}");
    assert_eq!(dry["republished"], 0, "{dry}");
    assert_eq!(topic_len(&s), 4, "a dry run publishes nothing");

    let report = release(&held, "sms", false);
    assert_eq!(report["held"], 3, "{report}");
    assert_eq!(report["republished"], 3, "{report}");
    s.wait_committed(7);
    let sent = sms_sent(&s);
    assert_eq!(sent.len(), 3, "{sent:?}");
    for id in ids {
        assert_eq!(sent.get(id), Some(&1), "{id} sent once: {sent:?}");
    }
    let released = read_topic(&s.t.topic, 7, WAIT);
    assert!(
        released[4..]
            .iter()
            .all(|r| r.header("notify.release_of") == Some("sms")),
        "released events are marked"
    );
    let mut mail = mailgun_event_ids(&s.mailgun);
    mail.sort();
    assert_eq!(
        mail,
        ["e-hold-1", "e-hold-2", "e-hold-3", "e-marker"],
        "no e-mail sent twice"
    );

    // Nothing is held any more: a second release finds nothing.
    let again = release(&held, "sms", false);
    assert_eq!(again["held"], 0, "{again}");
    assert_eq!(topic_len(&s), 7);
    assert_eq!(s.twilio.received().len(), 3, "nothing more sent");
}

#[test]
fn a_dead_letter_without_its_payload_is_replayed_from_the_source_topic() {
    let s = setup(
        "omitted",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(400, TWILIO_INVALID_TO)],
    );
    // The producer's limit stands in for a dead-letter topic whose limit is
    // below the source topic's.
    let limit = "\"message.max.bytes\" = 100000";
    let limited = config_with(&s, "max_event_kib = 1024", &[("kafka.client", limit)]);
    let host = Host::start(&limited);
    let mut big: serde_json::Value =
        serde_json::from_slice(&event("e-big", false, true)).expect("event");
    big["appointment"]["notes"] = "x".repeat(150_000).into();
    let big = serde_json::to_vec(&big).expect("json");
    publish(&s.t.topic, std::slice::from_ref(&big));
    s.wait_committed(1);
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    assert_eq!(
        letters[0].header("notify.payload_omitted"),
        Some("too_large")
    );
    assert_eq!(letters[0].header("notify.channel"), Some("sms"));
    let listed = list(&limited, &["--event-id", "e-big"]);
    assert_eq!(listed[0]["payload_omitted"], true, "{listed:?}");

    // The replay's producer may write what the source topic took.
    let unlimited = s.w.write(
        "unlimited.toml",
        &std::fs::read_to_string(&limited)
            .expect("config")
            .replace(&format!("{limit}\n"), ""),
    );
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    let out = cli(&["dlq", "replay", "--event-id", "e-big"], &unlimited);
    let text = ok(&out);
    assert!(
        text.contains("matched 1, replayed 1"),
        "{text}\n{}",
        stderr(&out)
    );
    s.wait_committed(2);
    assert_eq!(sms_sent(&s).get("e-big"), Some(&2), "{:?}", sms_sent(&s));
    let source = read_topic(&s.t.topic, 2, WAIT);
    assert_eq!(
        source[1].payload, big,
        "the original, read from the source topic"
    );
    assert_eq!(
        source[1].header("notify.replay_of"),
        Some(format!("{}/0/0", s.t.dlq).as_str())
    );
}
