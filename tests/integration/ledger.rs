//! The delivery ledger end to end: each state a delivery can reach, made by
//! the real pipeline (broker, plugins, provider stand-ins) and read back
//! through the status API.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{mailgun_event_ids, setup, Setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const TWILIO_OK: &str =
    r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","to":"+15555550123"}"#;
const TWILIO_INVALID_TO: &str = r#"{"code":21211,"message":"The 'To' number +15555550123 is not a valid phone number.","status":400}"#;
const TWILIO_AUTH_FAILED: &str = r#"{"code":20003,"message":"Authenticate","status":401}"#;
const WAIT: Duration = Duration::from_secs(60);

/// The one delivery of `event_id` on `channel`, once the ledger has it in
/// `state`.
fn wait_state(admin: &str, event_id: &str, channel: &str, state: &str) -> Value {
    let mut found = None;
    wait_for(
        &format!("{event_id}/{channel} {state} in the ledger"),
        WAIT,
        || {
            found = api_event_deliveries(admin, event_id)
                .into_iter()
                .find(|d| d["channel"] == channel && d["state"] == state);
            found.is_some()
        },
    );
    found.unwrap_or_default()
}

/// A channel that is configured but off: the e-mail plugin, never loaded.
const PUSH_OFF: &str = r#"
[channels.push]
mode = "off"
plugin = "PLUGIN"
base_url = "http://127.0.0.1:9"
"#;

fn event_at(id: &str, time: &str, email: bool, sms: bool) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&event(id, email, sms)).expect("event");
    v["appointment"]["time"] = Value::String(time.to_string());
    v.to_string().into_bytes()
}

fn host(s: &Setup, extra_tables: &str) -> (Host, String) {
    let config = with_api_token(&s.config_with(extra_tables));
    let admin = admin_url(&config);
    (Host::start_with_env(&config, &api_env()), admin)
}

#[test]
fn every_state_a_delivery_reaches_is_on_record_and_read_back_through_the_api() {
    let s = setup(
        "ledger-states",
        // The first e-mail fails once (retried), then every one is accepted.
        vec![Reply::new(503, "busy"), Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let push = PUSH_OFF.replace("PLUGIN", &mailgun_wasm().display().to_string());
    let (host, admin) = host(&s, &push);

    // Retried, then delivered: both attempts on record.
    publish(&s.t.topic, &[event("st-retry", true, false)]);
    s.wait_committed(1);
    let d = wait_state(&admin, "st-retry", "email", "delivered");
    let outcomes: Vec<&str> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["retry", "delivered"], "{d}");
    assert_eq!(d["attempt_count"], 2);
    assert_eq!(d["attempts"][0]["provider_status"], 503);
    assert_eq!(d["provider_message_id"], "<m@mg>");
    assert_eq!(d["purpose"], "confirmation");
    assert_eq!(d["appointment_id"], "appt-st-retry");

    // Delivered on both channels; a past appointment expires unsent; an
    // SMS the provider refuses for good is dead-lettered; an off channel is
    // skipped.
    s.twilio.set_script(vec![
        Reply::new(400, TWILIO_INVALID_TO),
        Reply::new(201, TWILIO_OK),
    ]);
    publish(
        &s.t.topic,
        &[event_at("st-dead", "2099-02-20T15:00:00Z", false, true)],
    );
    s.wait_committed(2);
    let mut both: Value = serde_json::from_slice(&event("st-both", true, true)).expect("event");
    both["notify"]["push"] = Value::Bool(true);
    publish(
        &s.t.topic,
        &[
            both.to_string().into_bytes(),
            event_at("st-past", "2020-01-01T09:00:00Z", true, true),
        ],
    );
    s.wait_committed(4);

    let dead = wait_state(&admin, "st-dead", "sms", "dead_lettered");
    assert_eq!(dead["error_class"], "permanent", "{dead}");
    assert_eq!(dead["attempts"][0]["provider_status"], 400);
    for channel in ["email", "sms"] {
        wait_state(&admin, "st-both", channel, "delivered");
        let past = wait_state(&admin, "st-past", channel, "expired");
        let reason = past["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("2020-01-01T09:00:00Z"), "{past}");
        assert!(past["attempts"].as_array().is_none_or(Vec::is_empty));
    }
    let skipped = wait_state(&admin, "st-both", "push", "skipped");
    assert!(skipped["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("off"));
    assert!(
        !mailgun_event_ids(&s.mailgun).contains(&"st-past".to_string()),
        "an expired confirmation is not sent"
    );
    assert_eq!(s.twilio.received().len(), 2, "st-dead and st-both only");

    // The same event again (a duplicate publish): nothing sent, nothing
    // dead-lettered again, the records count the duplicate.
    let mailgun_before = s.mailgun.received().len();
    publish(
        &s.t.topic,
        &[
            both.to_string().into_bytes(),
            event_at("st-dead", "2099-02-20T15:00:00Z", false, true),
        ],
    );
    s.wait_committed(6);
    let again = wait_state(&admin, "st-dead", "sms", "dead_lettered");
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(s.mailgun.received().len(), mailgun_before);
    assert_eq!(s.twilio.received().len(), 2);
    let letters = read_topic(&s.t.dlq, 2, Duration::from_secs(3));
    assert_eq!(
        letters.len(),
        1,
        "one dead letter for st-dead, not one per copy"
    );

    // Contact data is masked in everything the API says.
    for id in ["st-retry", "st-dead", "st-both", "st-past"] {
        let (status, _, body) =
            api_request("GET", &format!("{admin}/v1/events/{id}"), Some(API_TOKEN)).expect("api");
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("user@example.com"), "{body}");
        assert!(!body.contains("5555550123"), "{body}");
        assert!(body.contains("u***@example.com"), "{body}");
    }
    drop(host);
}

#[test]
fn a_channel_down_shows_waiting_and_then_delivered() {
    let s = setup(
        "ledger-waiting",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(401, TWILIO_AUTH_FAILED)],
    );
    let (_host, admin) = host(&s, "");
    publish(&s.t.topic, &[event("wt-1", false, true)]);
    let waiting = wait_state(&admin, "wt-1", "sms", "waiting");
    assert!(
        waiting["attempts"][0]["outcome"] == "channel_down",
        "{waiting}"
    );
    assert!(
        matches!(s.committed(), None | Some(0)),
        "nothing committed while waiting"
    );
    s.twilio.set_script(vec![Reply::new(201, TWILIO_OK)]);
    s.wait_committed(1);
    let done = wait_state(&admin, "wt-1", "sms", "delivered");
    assert_eq!(
        done["attempts"]
            .as_array()
            .and_then(|a| a.last())
            .map(|a| a["outcome"].clone()),
        Some(Value::from("delivered"))
    );
}

#[test]
fn an_event_older_than_max_event_age_expires() {
    let s = setup(
        "ledger-age",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let config = with_api_token(&s.config("max_event_age = \"1h\""));
    let admin = admin_url(&config);
    let _host = Host::start_with_env(&config, &api_env());
    // `event` says it occurred in February 2026: months old.
    let mut fresh: Value = serde_json::from_slice(&event("age-new", true, false)).expect("event");
    fresh["occurred_at"] = Value::String(chrono::Utc::now().to_rfc3339());
    publish(
        &s.t.topic,
        &[
            event("age-old", true, false),
            fresh.to_string().into_bytes(),
        ],
    );
    s.wait_committed(2);
    let old = wait_state(&admin, "age-old", "email", "expired");
    assert!(
        old["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("pipeline.max_event_age (1h)"),
        "{old}"
    );
    wait_state(&admin, "age-new", "email", "delivered");
    assert_eq!(mailgun_event_ids(&s.mailgun), ["age-new"]);
}

#[test]
fn delivered_records_survive_a_restart_so_a_redelivery_sends_nothing() {
    let s = setup(
        "ledger-restart",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    let config = with_api_token(&s.config(""));
    let admin = admin_url(&config);
    let mut host = Host::start_with_env(&config, &api_env());
    publish(&s.t.topic, &[event("rs-1", true, true)]);
    s.wait_committed(1);
    host.kill9();
    // Published again while the host is down: the restarted host finds both
    // channels delivered in the ledger file.
    publish(&s.t.topic, &[event("rs-1", true, true)]);
    let _host = Host::start_with_env(&config, &api_env());
    s.wait_committed(2);
    assert_eq!(s.mailgun.received().len(), 1);
    assert_eq!(s.twilio.received().len(), 1);
    let d = wait_state(&admin, "rs-1", "email", "delivered");
    assert_eq!(d["duplicates"], 1, "{d}");
}
