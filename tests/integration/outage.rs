//! Provider outages and throttling, end to end (the user's failure model,
//! seed 001: "If either provider is down for a requested channel, consumer
//! retries and does not commit until requested channel delivery succeeds").
//! A real broker, the host binary, the real plugins, and stand-ins whose
//! answers the test switches mid-run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{setup, Setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const TWILIO_OK: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
const TWILIO_AUTH_FAILED: &str = r#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
const WAIT: Duration = Duration::from_secs(60);

/// The event id of a request: Mailgun's `v:event_id` field, or the end of
/// the Twilio body (see `config`).
fn event_id_of(r: &Recorded) -> Option<String> {
    if let Some(ct) = r
        .header("content-type")
        .filter(|c| c.starts_with("multipart/"))
    {
        return parse_multipart(&ct, &r.body)
            .into_iter()
            .find(|(k, _)| k == "v:event_id")
            .map(|(_, v)| v);
    }
    parse_form(&r.body)
        .into_iter()
        .find(|(k, _)| k == "Body")
        .and_then(|(_, b)| b.rsplit('#').next().map(String::from))
}

/// How often each event id reached the stand-in with an answer of `since`
/// or later (the requests after a switch of script).
fn sends_since(s: &StandIn, since: Instant) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for r in s.received().iter().filter(|r| r.at >= since) {
        if let Some(id) = event_id_of(r) {
            *count.entry(id).or_default() += 1;
        }
    }
    count
}

/// The suite's config with probes capped at 2 s (so a test's outage is
/// seconds, not minutes) and the event id at the end of every SMS.
fn outage_config(s: &Setup, pipeline: &str, channel_extra: &str) -> std::path::PathBuf {
    let config = s.config(pipeline);
    let retry = "retry = { max_attempts = 4, initial_backoff_ms = 50, max_backoff_ms = 200 }";
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(
            retry,
            &format!("{retry}\ncircuit = {{ probe_backoff_initial_ms = 500, probe_backoff_max_seconds = 2 }}\n{channel_extra}"),
        )
        .replace(
            "settings = { account_sid",
            "settings = { body_template = \"Appointment {appointment_id} #{event_id}\", account_sid",
        );
    std::fs::write(&config, text).expect("config");
    config
}

fn dead_letters(s: &Setup) -> Vec<Letter> {
    read_topic(&s.t.dlq, 1, Duration::from_secs(2))
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn an_outage_longer_than_the_retry_schedule_dead_letters_nothing_and_sends_everything_after() {
    let n = 30;
    let s = setup(
        "outage",
        vec![Reply::new(503, r#"{"message":"down"}"#)],
        vec![Reply::new(503, r#"{"code":20500,"message":"down"}"#)],
    );
    let config = outage_config(&s, "", "");
    let admin = admin_url(&config);
    let mut host = Host::start(&config);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| event(&format!("o-{i}"), true, true))
        .collect();
    publish(&s.t.topic, &payloads);
    wait_for("the first failures", WAIT, || {
        !s.mailgun.received().is_empty() && !s.twilio.received().is_empty()
    });
    // The whole retry schedule (4 attempts, at most 200 ms apart) is well
    // under a second; the outage lasts 10 s.
    let outage_started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_get(&format!("{admin}/health/ready")).expect("readiness");
    assert_eq!(
        status, 200,
        "an outage does not make the host unready: {body}"
    );
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    for c in ready["channels"].as_array().expect("channels") {
        assert_ne!(c["state"], "closed", "{body}");
        assert!(c["waiting"].as_u64().unwrap_or(0) > 0, "{body}");
    }
    let (_, metrics) = http_get(&format!("{admin}/metrics")).expect("metrics");
    for ch in ["email", "sms"] {
        let state = metric(
            &metrics,
            &format!("notify_channel_circuit_state{{channel=\"{ch}\"}}"),
        );
        assert!(state.is_some_and(|v| v > 0.0), "{ch}: {metrics}");
    }
    let quiet_from = Instant::now();
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        matches!(s.committed(), None | Some(0)),
        "nothing is committed past held work: {:?}",
        s.committed()
    );
    assert!(
        dead_letters(&s).is_empty(),
        "an outage dead-letters nothing"
    );
    // Probes only: capped at 2 s apart, so at most about one a second.
    let quiet = quiet_from.elapsed().as_secs_f64();
    for (name, stand_in) in [("mailgun", &s.mailgun), ("twilio", &s.twilio)] {
        let probes = stand_in
            .received()
            .iter()
            .filter(|r| r.at >= quiet_from)
            .count();
        println!("{name}: {probes} requests in {quiet:.1} s of outage");
        assert!(
            (probes as f64) <= quiet * 1.2 + 1.0,
            "{name}: {probes} requests in {quiet:.1} s while down"
        );
    }
    let outage = outage_started.elapsed();

    // Recovery.
    let recovered = Instant::now();
    s.mailgun.set_script(vec![Reply::new(200, MAILGUN_OK)]);
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    s.wait_committed(n);
    let drained = recovered.elapsed();
    println!("outage {outage:?}; drained {n} events in {drained:?} after recovery");
    for (name, stand_in) in [("mailgun", &s.mailgun), ("twilio", &s.twilio)] {
        let sent = sends_since(stand_in, recovered);
        assert_eq!(
            sent.len(),
            n as usize,
            "{name}: every event sent after recovery"
        );
        assert!(
            sent.values().all(|c| *c == 1),
            "{name}: once each: {sent:?}"
        );
    }
    assert!(dead_letters(&s).is_empty());
    assert!(host.terminate().success());
    // One line when each circuit opened and one when it closed, not one per event.
    for ch in ["email", "sms"] {
        let opened = host
            .events("channel circuit opened: holding its sends (nothing is dead-lettered or committed past them) and probing until the provider recovers")
            .iter()
            .filter(|l| l["channel"] == ch)
            .count();
        let closed = host
            .events("channel circuit closed: the provider accepts again; releasing waiting sends")
            .iter()
            .filter(|l| l["channel"] == ch)
            .count();
        assert_eq!((opened, closed), (1, 1), "{ch}: {}", host.log_text());
    }
}

#[test]
fn a_rejected_credential_holds_the_channel_until_it_is_accepted_again() {
    let n = 10;
    let s = setup(
        "credential",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(401, TWILIO_AUTH_FAILED)],
    );
    let host = Host::start(&outage_config(&s, "", ""));
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| event(&format!("c-{i}"), false, true))
        .collect();
    publish(&s.t.topic, &payloads);
    wait_for("the first 401", WAIT, || !s.twilio.received().is_empty());
    std::thread::sleep(Duration::from_secs(4));
    // A credential failure is the channel's, not the events': one 401 opens
    // the circuit, so only probes follow it.
    let during = s.twilio.received().len();
    assert!(
        during <= n as usize + 5,
        "{during} requests while the credential was refused"
    );
    assert!(
        matches!(s.committed(), None | Some(0)),
        "{:?}",
        s.committed()
    );
    // The operator rotates the credential (here: the provider accepts again).
    let rotated = Instant::now();
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    s.wait_committed(n);
    let sent = sends_since(&s.twilio, rotated);
    assert_eq!(sent.len(), n as usize, "{sent:?}");
    assert!(sent.values().all(|c| *c == 1), "{sent:?}");
    assert!(
        dead_letters(&s).is_empty(),
        "a rejected credential dead-letters nothing"
    );
    assert!(
        !host
            .events("channel circuit opened: holding its sends (nothing is dead-lettered or committed past them) and probing until the provider recovers")
            .is_empty(),
        "{}",
        host.log_text()
    );
}

#[test]
fn email_keeps_flowing_while_sms_is_down_and_nothing_of_either_is_lost() {
    let s = setup(
        "partial",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(503, r#"{"code":20500,"message":"down"}"#)],
    );
    let config = outage_config(&s, "max_in_flight = 8\nmax_in_flight_per_partition = 8", "");
    let _host = Host::start(&config);
    // Four events want both channels: their SMS waits, holding 4 of 8 slots.
    let both: Vec<Vec<u8>> = (0..4)
        .map(|i| event(&format!("b-{i}"), true, true))
        .collect();
    publish(&s.t.topic, &both);
    wait_for("the e-mails of the first four", WAIT, || {
        sends_since(&s.mailgun, Instant::now() - Duration::from_secs(600)).len() == 4
    });
    // E-mail-only events still go through the other slots.
    let email_only: Vec<Vec<u8>> = (0..20)
        .map(|i| event(&format!("m-{i}"), true, false))
        .collect();
    publish(&s.t.topic, &email_only);
    wait_for(
        "20 e-mail-only events delivered while SMS is down",
        WAIT,
        || sends_since(&s.mailgun, Instant::now() - Duration::from_secs(600)).len() == 24,
    );
    // Four more SMS events fill the in-flight limit: intake stops, and a
    // later e-mail-only event waits in Kafka.
    let sms: Vec<Vec<u8>> = (0..4)
        .map(|i| event(&format!("s-{i}"), false, true))
        .collect();
    publish(&s.t.topic, &sms);
    std::thread::sleep(Duration::from_secs(2));
    publish(&s.t.topic, &[event("m-late", true, false)]);
    std::thread::sleep(Duration::from_secs(3));
    let mail = sends_since(&s.mailgun, Instant::now() - Duration::from_secs(600));
    assert!(!mail.contains_key("m-late"), "intake stops at the limit");
    assert!(
        matches!(s.committed(), None | Some(0)),
        "the first event's SMS holds the commit point: {:?}",
        s.committed()
    );
    assert!(dead_letters(&s).is_empty());

    let recovered = Instant::now();
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    s.wait_committed(29);
    let sms_sent = sends_since(&s.twilio, recovered);
    let mut ids: Vec<_> = sms_sent.keys().cloned().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["b-0", "b-1", "b-2", "b-3", "s-0", "s-1", "s-2", "s-3"]
    );
    assert!(sms_sent.values().all(|c| *c == 1), "{sms_sent:?}");
    let mail = sends_since(&s.mailgun, Instant::now() - Duration::from_secs(600));
    assert_eq!(mail.len(), 25, "every e-mail, the late one included");
    assert!(mail.values().all(|c| *c == 1), "no e-mail twice: {mail:?}");
    assert!(dead_letters(&s).is_empty());
}

#[test]
fn a_plugin_that_traps_on_classify_never_causes_a_second_request() {
    let s = setup("classify-trap", vec![], vec![]);
    let accepting = StandIn::start(vec![Reply::new(200, "{}")]);
    let failing = StandIn::start(vec![Reply::new(500, "{}")]);
    let config = outage_config(&s, "", "");
    let mut text = std::fs::read_to_string(&config).expect("config");
    for (name, stand_in) in [("accepting", &accepting), ("failing", &failing)] {
        text.push_str(&format!(
            "\n[channels.{name}]\nplugin = {:?}\nbase_url = \"{}\"\nretry = {{ max_attempts = 4, initial_backoff_ms = 20, max_backoff_ms = 50 }}\nsettings = {{ behavior = \"classify-trap\" }}\n",
            hostile_wasm(),
            stand_in.url()
        ));
    }
    std::fs::write(&config, text).expect("config");
    let _host = Host::start(&config);
    let payload = |id: &str, channel: &str| {
        format!(r#"{{"event_id":"{id}","notify":{{"{channel}":true}},"appointment":{{"appointment_id":"a-{id}"}}}}"#).into_bytes()
    };
    publish(
        &s.t.topic,
        &[payload("t-1", "accepting"), payload("t-2", "failing")],
    );
    s.wait_committed(2);
    // Give a wrong resend time to happen before counting.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        accepting.received().len(),
        1,
        "an accepted request is not sent again"
    );
    assert_eq!(
        failing.received().len(),
        1,
        "an answered request is not sent again"
    );
    // The 2xx counts as delivered by the host's rule; the 500 is a dead
    // letter, since nobody could say whether it may be retried.
    let letters = dead_letters(&s);
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(letters[0].header("notify.channel"), Some("failing"));
    assert_eq!(
        letters[0].header("notify.error_class"),
        Some("plugin_failed")
    );
}

#[test]
fn a_configured_rate_limit_holds_the_send_rate() {
    let n = 61;
    let per_second = 20.0;
    let s = setup("rate", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let config = outage_config(&s, "", "rate = { per_second = 20 }");
    let _host = Host::start(&config);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| event(&format!("r-{i}"), true, false))
        .collect();
    publish(&s.t.topic, &payloads);
    s.wait_committed(n);
    let mut at = s.mailgun.received_at();
    at.sort();
    assert_eq!(at.len(), n as usize);
    let span = (at[at.len() - 1] - at[0]).as_secs_f64();
    let measured = (n - 1) as f64 / span;
    println!("rate: configured {per_second}/s, measured {measured:.2}/s over {span:.2} s");
    assert!(
        (measured - per_second).abs() <= per_second * 0.1,
        "measured {measured:.2}/s for a configured {per_second}/s"
    );
}

#[test]
fn a_retry_after_on_429_slows_the_whole_channel() {
    let s = setup(
        "throttle",
        vec![
            Reply::new(429, r#"{"message":"slow down"}"#).header("retry-after", "2"),
            Reply::new(200, MAILGUN_OK),
        ],
        vec![],
    );
    let _host = Host::start(&outage_config(&s, "", ""));
    publish(&s.t.topic, &[event("t-0", true, false)]);
    wait_for("the 429", WAIT, || !s.mailgun.received().is_empty());
    let throttled_at = s.mailgun.received()[0].at;
    // Other events, arriving after the 429: they wait too.
    let others: Vec<Vec<u8>> = (1..6)
        .map(|i| event(&format!("t-{i}"), true, false))
        .collect();
    publish(&s.t.topic, &others);
    s.wait_committed(6);
    let received = s.mailgun.received();
    assert_eq!(received.len(), 7, "one 429, then each event once");
    for r in &received[1..] {
        let after = r.at - throttled_at;
        assert!(
            after >= Duration::from_millis(1900),
            "a send {after:?} after the 429 with Retry-After: 2"
        );
    }
}

#[test]
fn plugin_send_never_resends_an_answered_request_either() {
    let w = Workdir::new();
    let accepting = StandIn::start(vec![Reply::new(200, "{}")]);
    let failing = StandIn::start(vec![Reply::new(503, "{}")]);
    let mut text = String::new();
    for (name, stand_in) in [("accepting", &accepting), ("failing", &failing)] {
        text.push_str(&format!(
            "[channels.{name}]\nplugin = {:?}\nbase_url = \"{}\"\nsettings = {{ behavior = \"classify-trap\" }}\n",
            hostile_wasm(),
            stand_in.url()
        ));
    }
    let config = w.write("config.toml", &text);
    let event = w.write(
        "event.json",
        r#"{"event_id":"cli-1","notify":{"accepting":true},"appointment":{"appointment_id":"a-1"}}"#,
    );
    let send = |channel: &str| plugin_with_event("send", &config, channel, &event, &[], w.path());
    let out = send("accepting");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_stdout(&out);
    assert_eq!(
        json["results"][0]["classified"]["host_decision"], "delivered",
        "{json}"
    );
    assert_eq!(accepting.received().len(), 1);

    let out = send("failing");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = json_stdout(&out);
    assert_eq!(
        json["results"][0]["classified"]["host_decision"], "dead_letter",
        "{json}"
    );
    assert_eq!(
        failing.received().len(),
        1,
        "one request, whatever classify did"
    );
}
