//! End to end: a real broker, the compiled host binary as a child process,
//! the real plugins, and provider stand-ins that record every request.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::kafka_harness::*;

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const TWILIO_OK: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
const WAIT: Duration = Duration::from_secs(60);

/// Event ids the Mailgun stand-in saw, in arrival order.
pub fn mailgun_event_ids(s: &StandIn) -> Vec<String> {
    s.received().iter().filter_map(mailgun_event_id).collect()
}

pub struct Setup {
    pub t: Topics,
    pub mailgun: StandIn,
    pub twilio: StandIn,
    pub w: Workdir,
}

pub fn setup(name: &str, mailgun: Vec<Reply>, twilio: Vec<Reply>) -> Setup {
    let t = unique(name);
    create_topics(&t);
    Setup {
        t,
        mailgun: StandIn::start(mailgun),
        twilio: StandIn::start(twilio),
        w: Workdir::new(),
    }
}

impl Setup {
    pub fn config(&self, extra: &str) -> std::path::PathBuf {
        host_config(
            &self.w,
            &self.t,
            &self.mailgun.url(),
            &self.twilio.url(),
            extra,
        )
    }
    /// The config with one more table appended (a hostile plugin's channel).
    pub fn config_with(&self, table: &str) -> std::path::PathBuf {
        let config = self.config("");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(table);
        std::fs::write(&config, text).expect("config");
        config
    }
    pub fn committed(&self) -> Option<i64> {
        committed(&self.t.group, &self.t.topic)
    }
    pub fn wait_committed(&self, offset: i64) {
        wait_for(&format!("offset {offset} committed"), WAIT, || {
            self.committed() == Some(offset)
        });
    }
}

#[test]
fn email_sms_and_both_are_delivered_and_committed() {
    let s = setup(
        "channels",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let _host = Host::start(&s.config(""));
    publish(
        &s.t.topic,
        &[
            event("e-email", true, false),
            event("e-sms", false, true),
            event("e-both", true, true),
        ],
    );
    s.wait_committed(3);
    let mut mail = mailgun_event_ids(&s.mailgun);
    mail.sort();
    assert_eq!(mail, ["e-both", "e-email"]);
    let sms = s.twilio.received();
    assert_eq!(sms.len(), 2);
    for r in &sms {
        assert_eq!(
            r.path,
            format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
        );
        assert!(parse_form(&r.body).contains(&("To".into(), "+15555550123".into())));
    }
    assert!(
        read_topic(&s.t.dlq, 1, Duration::from_secs(1)).is_empty(),
        "nothing dead-lettered"
    );
}

#[test]
fn transient_failures_are_retried_then_delivered_once() {
    let s = setup(
        "retry",
        vec![
            Reply::new(500, r#"{"message":"Internal Server Error"}"#),
            Reply::new(503, ""),
            Reply::new(200, MAILGUN_OK),
        ],
        vec![],
    );
    let host = Host::start(&s.config(""));
    publish(&s.t.topic, &[event("e-retry", true, false)]);
    s.wait_committed(1);
    assert_eq!(s.mailgun.received().len(), 3, "two failures, one success");
    let delivered = host.events("channel delivered");
    assert_eq!(delivered.len(), 1, "{}", host.log_text());
    assert_eq!(delivered[0]["attempts"], 3);
    assert_eq!(
        delivered[0]["event_id"], "e-retry",
        "the event id is on the line (from the span)"
    );
}

#[test]
fn retry_after_is_respected() {
    let s = setup(
        "retryafter",
        vec![],
        vec![
            Reply::new(429, r#"{"code":20429,"message":"Too Many Requests"}"#)
                .header("retry-after", "2"),
            Reply::new(201, TWILIO_OK),
        ],
    );
    let _host = Host::start(&s.config(""));
    publish(&s.t.topic, &[event("e-429", false, true)]);
    s.wait_committed(1);
    let received = s.twilio.received_at();
    assert_eq!(received.len(), 2);
    let gap = received[1] - received[0];
    assert!(
        gap >= Duration::from_millis(1900),
        "second try came after {gap:?}, before Retry-After: 2"
    );
}

#[test]
fn a_permanent_failure_is_dead_lettered_and_the_next_event_proceeds() {
    let s = setup(
        "permanent",
        vec![],
        vec![
            Reply::new(
                400,
                r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#,
            ),
            Reply::new(201, TWILIO_OK),
        ],
    );
    let _host = Host::start(&s.config(""));
    let bad = event("e-bad", false, true);
    publish(&s.t.topic, std::slice::from_ref(&bad));
    s.wait_committed(1);
    publish(&s.t.topic, &[event("e-next", false, true)]);
    s.wait_committed(2);
    assert_eq!(
        s.twilio.received().len(),
        2,
        "no retry of a permanent failure"
    );
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.payload, bad, "the original payload, untouched");
    assert_eq!(l.header("notify.error_class"), Some("permanent"));
    assert_eq!(l.header("notify.channel"), Some("sms"));
    assert_eq!(l.header("notify.event_id"), Some("e-bad"));
    assert_eq!(l.header("notify.provider_status"), Some("400"));
    assert_eq!(l.header("notify.attempts"), Some("1"));
    assert_eq!(l.header("notify.source_topic"), Some(s.t.topic.as_str()));
    assert_eq!(l.header("notify.source_offset"), Some("0"));
    assert!(
        l.header("notify.reason")
            .is_some_and(|r| r.contains("21211")),
        "{l:?}"
    );
    assert!(l.header("notify.failed_at").is_some() && l.header("notify.host_version").is_some());
}

#[test]
fn malformed_events_are_dead_lettered_with_reasons_and_the_host_keeps_going() {
    let s = setup("malformed", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let mut host = Host::start(&s.config(""));
    let big = format!(
        r#"{{"event_id":"big","notify":{{"email":true}},"appointment":{{"appointment_id":1,"email":"a@b.co","pad":"{}"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "payload: not valid JSON"),
        (
            br#"{"event_id":"m1","notify":{"email":true}}"#.to_vec(),
            "appointment: required",
        ),
        (
            br#"{"event_id":"m2","notify":{"email":"yes"},"appointment":{"appointment_id":1}}"#
                .to_vec(),
            "notify.email: expected true or false",
        ),
        (vec![0xff, 0xfe, 0x00, 0x41], "payload: not UTF-8"),
        (big.into_bytes(), "payload: 1048"),
    ];
    let mut payloads: Vec<Vec<u8>> = cases.iter().map(|(p, _)| p.clone()).collect();
    payloads.push(event("e-after", true, false));
    publish(&s.t.topic, &payloads);
    s.wait_committed(payloads.len() as i64);
    assert!(host.is_running());
    assert_eq!(mailgun_event_ids(&s.mailgun), ["e-after"]);
    let letters = read_topic(&s.t.dlq, cases.len(), WAIT);
    assert_eq!(letters.len(), cases.len());
    // Events without a key run concurrently, so letters may come in any order.
    for (payload, reason) in &cases {
        let letter = letters
            .iter()
            .find(|l| &l.payload == payload)
            .unwrap_or_else(|| {
                panic!("no dead letter carries the untouched payload for {reason:?}")
            });
        assert_eq!(letter.header("notify.error_class"), Some("invalid_event"));
        let got = letter.header("notify.reason").unwrap_or_default();
        assert!(
            got.starts_with(reason),
            "reason {got:?} should start with {reason:?}"
        );
    }
}

#[test]
fn the_same_event_published_twice_is_sent_once_per_channel() {
    let s = setup(
        "duplicate",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let host = Host::start(&s.config(""));
    let e = event("e-twice", true, true);
    publish(&s.t.topic, &[e.clone(), e]);
    s.wait_committed(2);
    assert_eq!(s.mailgun.received().len(), 1);
    assert_eq!(s.twilio.received().len(), 1);
    assert_eq!(
        host.events("channel already delivered for this event; not sent again")
            .len(),
        2
    );
}

#[test]
fn a_crash_after_the_provider_accepted_does_not_send_again() {
    let s = setup("crash-after", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    // Commits are rare here, so the kill lands after the delivery was recorded
    // and before its offset was committed.
    let config = s.config("commit_interval_ms = 600000");
    let mut host = Host::start(&config);
    publish(&s.t.topic, &[event("e-crash", true, false)]);
    wait_for("the delivery", WAIT, || {
        !host.events("channel delivered").is_empty()
    });
    host.kill9();
    assert_eq!(s.committed(), None, "nothing was committed before the kill");

    let mut again = host.restart();
    wait_for("the redelivered event to be skipped", WAIT, || {
        !again
            .events("channel already delivered for this event; not sent again")
            .is_empty()
    });
    assert_eq!(s.mailgun.received().len(), 1, "no second send");
    assert!(again.terminate().success());
    assert_eq!(s.committed(), Some(1), "committed on shutdown");
}

#[test]
fn a_crash_before_the_provider_accepted_sends_after_restart() {
    // The provider holds the first request until after the kill.
    let s = setup(
        "crash-before",
        vec![
            Reply::new(200, MAILGUN_OK).delayed(Duration::from_secs(8)),
            Reply::new(200, MAILGUN_OK),
        ],
        vec![],
    );
    let mut host = Host::start(&s.config(""));
    publish(&s.t.topic, &[event("e-lost?", true, false)]);
    wait_for("the first request", WAIT, || {
        !s.mailgun.received().is_empty()
    });
    host.kill9();
    let _again = host.restart();
    s.wait_committed(1);
    let ids = mailgun_event_ids(&s.mailgun);
    assert_eq!(
        ids,
        ["e-lost?", "e-lost?"],
        "sent again after the restart: nothing lost"
    );
}

#[test]
fn on_redelivery_a_delivered_channel_is_not_sent_again() {
    // E-mail succeeds; SMS keeps failing, so the event stays uncommitted.
    let s = setup(
        "partial",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(503, "")],
    );
    let config = s.config("");
    let text = std::fs::read_to_string(&config).expect("config");
    // Enough SMS attempts that the event is still retrying when killed.
    let text = text.replacen("retry = { max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }\nsettings = { account_sid", "retry = { max_attempts = 1000, initial_backoff_ms = 50, max_backoff_ms = 200 }\nsettings = { account_sid", 1);
    std::fs::write(&config, text).expect("config");
    let mut host = Host::start(&config);
    publish(&s.t.topic, &[event("e-partial", true, true)]);
    wait_for("e-mail delivered and SMS retried", WAIT, || {
        !host.events("channel delivered").is_empty() && s.twilio.received().len() >= 3
    });
    host.kill9();
    assert_eq!(
        s.committed(),
        Some(0),
        "the event is not committed while SMS is unresolved"
    );

    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    let again = host.restart();
    s.wait_committed(1);
    assert_eq!(s.mailgun.received().len(), 1, "e-mail not sent again");
    assert!(!again
        .events("channel already delivered for this event; not sent again")
        .is_empty());
    let last = s.twilio.received();
    assert!(last.len() >= 4);
}

#[test]
fn sigterm_commits_and_exits_zero() {
    let s = setup("sigterm", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let mut host = Host::start(&s.config("commit_interval_ms = 600000"));
    publish(
        &s.t.topic,
        &[event("e-1", true, false), event("e-2", true, false)],
    );
    wait_for("two deliveries", WAIT, || {
        host.events("channel delivered").len() == 2
    });
    let started = Instant::now();
    assert!(host.terminate().success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(s.committed(), Some(2));
}

#[test]
fn logs_are_json_lines_without_secrets_or_personal_data() {
    let s = setup(
        "logs",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let audit = StandIn::start(vec![Reply::new(204, "")]);
    let config = s.config("");
    // A third channel whose plugin prints the recipient to stdout.
    let extra = format!(
        "\n[channels.audit]\nplugin = {:?}\nbase_url = \"{}\"\nsettings = {{ behavior = \"ok\" }}\n",
        hostile_wasm(),
        audit.url()
    );
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&extra);
    std::fs::write(&config, text).expect("config");
    let mut host = Host::start(&config);
    let mut e: serde_json::Value =
        serde_json::from_slice(&event("e-logs", true, true)).expect("json");
    e["notify"]["audit"] = serde_json::json!(true);
    publish(&s.t.topic, &[e.to_string().into_bytes()]);
    s.wait_committed(1);
    assert_eq!(
        audit.received().len(),
        1,
        "a third channel needs no host change"
    );
    assert!(host.terminate().success());

    let logs = host.log_text();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    for needle in [
        MAILGUN_KEY,
        TWILIO_TOKEN,
        "user@example.com",
        "+15555550123",
        "15555550123",
    ] {
        assert!(!logs.contains(needle), "{needle} appears in the logs");
    }
    // The plugin's own line reached the log, under its name, masked.
    let plugin_lines = host.events("hostile: rendering e-logs for u***@example.com");
    assert_eq!(plugin_lines.len(), 1, "{logs}");
    assert_eq!(plugin_lines[0]["plugin"], "hostile");
    // One line per channel outcome, with event id, channel and result.
    let delivered = host.events("channel delivered");
    let mut channels: Vec<_> = delivered
        .iter()
        .map(|l| l["channel"].as_str().unwrap_or_default().to_string())
        .collect();
    channels.sort();
    assert_eq!(channels, ["audit", "email", "sms"]);
    for l in &delivered {
        assert_eq!(l["event_id"], "e-logs");
        assert_eq!(l["outcome"], "delivered");
        // Topic, partition and offset come from the event's span.
        assert_eq!(l["span"]["partition"], 0, "{l}");
        assert_eq!(l["span"]["offset"], 0, "{l}");
    }
}

#[test]
fn a_plugin_that_traps_on_one_event_does_not_wedge_the_partition() {
    let s = setup("poison", vec![], vec![]);
    let hook = StandIn::start(vec![Reply::new(204, "")]);
    let config = s.config_with(&format!(
        "\n[channels.audit]\nplugin = {:?}\nbase_url = \"{}\"\nretry = {{ max_attempts = 3, initial_backoff_ms = 20, max_backoff_ms = 50 }}\nsettings = {{ behavior = \"poison\", poison_event_id = \"p-2\" }}\n",
        hostile_wasm(),
        hook.url()
    ));
    let host = Host::start(&config);
    let payload = |id: &str| {
        format!(r#"{{"event_id":"{id}","notify":{{"audit":true}},"appointment":{{"appointment_id":"a-{id}"}}}}"#).into_bytes()
    };
    // Same key for all: the poison pill sits in front of the others.
    let same_key = |id: &str| {
        String::from_utf8(payload(id))
            .expect("utf8")
            .replace(&format!("a-{id}"), "a-shared")
            .into_bytes()
    };
    publish(
        &s.t.topic,
        &[
            same_key("p-1"),
            same_key("p-2"),
            same_key("p-3"),
            same_key("p-4"),
        ],
    );
    let deadline = Instant::now() + WAIT;
    while s.committed() != Some(4) {
        assert!(
            Instant::now() < deadline,
            "offset 4 not committed; host log:\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(hook.received().len(), 3, "every other event was delivered");
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("notify.event_id"), Some("p-2"));
    assert_eq!(
        letters[0].header("notify.error_class"),
        Some("plugin_failed")
    );
    assert_eq!(letters[0].header("notify.attempts"), Some("3"));
    let reason = letters[0].header("notify.reason").unwrap_or_default();
    assert!(reason.contains("poisoned by event p-2"), "{reason}");
    assert!(host
        .log_text()
        .contains("plugin failed rendering; retrying"));
}

#[test]
fn different_keys_run_concurrently_up_to_the_limit_same_key_in_order() {
    let slow = Reply::new(200, MAILGUN_OK).delayed(Duration::from_millis(400));
    let s = setup("concurrency", vec![slow], vec![]);
    let _host = Host::start(&s.config("max_in_flight = 3"));
    // Six distinct appointments, then three events of one appointment.
    let mut payloads: Vec<Vec<u8>> = (0..6)
        .map(|i| event(&format!("c-{i}"), true, false))
        .collect();
    for i in 0..3 {
        let e = String::from_utf8(event(&format!("k-{i}"), true, false)).expect("utf8");
        payloads.push(
            e.replace(&format!("appt-k-{i}"), "appt-shared")
                .into_bytes(),
        );
    }
    publish(&s.t.topic, &payloads);
    s.wait_committed(payloads.len() as i64);
    assert_eq!(s.mailgun.received().len(), payloads.len());
    // Concurrent, but never past the in-flight limit: fetching paused.
    assert_eq!(
        s.mailgun.max_concurrent(),
        3,
        "distinct keys overlap up to max_in_flight"
    );
    // One appointment's events reach the provider in offset order, one at a time.
    let ids = mailgun_event_ids(&s.mailgun);
    let shared: Vec<&String> = ids.iter().filter(|id| id.starts_with("k-")).collect();
    assert_eq!(shared, ["k-0", "k-1", "k-2"]);
    let at = s.mailgun.received_at();
    let positions: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| id.starts_with("k-"))
        .map(|(i, _)| i)
        .collect();
    for pair in positions.windows(2) {
        let gap = at[pair[1]] - at[pair[0]];
        assert!(
            gap >= Duration::from_millis(350),
            "same-key events overlapped ({gap:?} apart)"
        );
    }
}

#[test]
fn plugins_stuck_in_endless_loops_do_not_hold_up_other_events() {
    // More looping calls than the host has worker threads: if a plugin call
    // blocked its thread, the e-mails would wait for the loops' deadline.
    const LOOPS: usize = 4;
    let s = setup("loops", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let hook = StandIn::start(vec![Reply::new(204, "")]);
    let config = s.config_with(&format!(
        "\n[channels.spin]\nplugin = {:?}\nbase_url = \"{}\"\ndeadline_ms = 20000\nretry = {{ max_attempts = 1 }}\nsettings = {{ behavior = \"loop\" }}\n",
        hostile_wasm(),
        hook.url()
    ));
    let host = Host::start(&config);
    let mut payloads: Vec<Vec<u8>> = (0..LOOPS)
        .map(|i| {
            format!(r#"{{"event_id":"spin-{i}","notify":{{"spin":true}},"appointment":{{"appointment_id":"spin-{i}"}}}}"#)
                .into_bytes()
        })
        .collect();
    payloads.extend((0..20).map(|i| event(&format!("mail-{i}"), true, false)));
    publish(&s.t.topic, &payloads);

    wait_for("20 e-mails delivered", WAIT, || {
        s.mailgun.received().len() >= 20
    });
    // The loops run until their 20 s deadline, so nothing is committed past
    // them yet: the e-mails went out while the loops were running.
    assert_eq!(
        s.committed().unwrap_or(0),
        0,
        "the loops ended before the e-mails went out; host log:\n{}",
        host.log_text()
    );
    assert!(
        !host.log_text().contains("\"dead-lettered\""),
        "a loop was already stopped; host log:\n{}",
        host.log_text()
    );
    // Then each loop is stopped at its deadline and dead-lettered.
    let letters = read_topic(&s.t.dlq, LOOPS, WAIT);
    assert_eq!(letters.len(), LOOPS);
    for l in &letters {
        assert_eq!(l.header("notify.error_class"), Some("plugin_failed"));
        let reason = l.header("notify.reason").unwrap_or_default();
        assert!(reason.contains("deadline"), "{reason}");
    }
    s.wait_committed(payloads.len() as i64);
}
