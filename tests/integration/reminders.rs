//! Reminders end to end: the real pipeline, broker, plugins and provider
//! stand-ins, with reminders due seconds (not hours) after their booking.
//! What the provider received (the Mailgun plugin's `v:purpose` field) and
//! what the ledger says (through the status API) are both checked.

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{setup, Setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const TWILIO_OK: &str =
    r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","to":"+15555550123"}"#;
const WAIT: Duration = Duration::from_secs(60);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// An appointment `ahead` from now with a reminder `lead` before it: the
/// reminder is due `ahead - lead` from now.
fn policy(name: &str, lead: Duration, channels: &str, extra: &str) -> String {
    format!(
        "\n[[reminders]]\nname = \"{name}\"\nbefore = \"{}ms\"\nchannels = {channels}\n{extra}\n",
        lead.as_millis()
    )
}

fn created(id: &str, appt: &str, time: DateTime<Utc>, email: bool, sms: bool) -> Vec<u8> {
    json!({
        "event_id": id,
        "event_type": "appointments.created",
        "notify": { "email": email, "sms": sms },
        "appointment": {
            "appointment_id": appt,
            "time": rfc3339(time),
            "email": "user@example.com",
            "phone_e164": "+15555550123"
        }
    })
    .to_string()
    .into_bytes()
}

/// A cancel or reschedule that names no channels: the booking's are used.
fn lifecycle(id: &str, kind: &str, appt: &str, time: Option<DateTime<Utc>>) -> Vec<u8> {
    let mut appointment = json!({ "appointment_id": appt });
    if let Some(t) = time {
        appointment["time"] = Value::String(rfc3339(t));
    }
    json!({ "event_id": id, "event_type": format!("appointments.{kind}"), "appointment": appointment })
        .to_string()
        .into_bytes()
}

/// `v:purpose` of each request the Mailgun stand-in got, in order.
fn mailgun_purposes(s: &StandIn) -> Vec<String> {
    s.received()
        .iter()
        .filter_map(|r| {
            let ct = r.header("content-type")?;
            parse_multipart(&ct, &r.body)
                .into_iter()
                .find(|(k, _)| k == "v:purpose")
                .map(|(_, v)| v)
        })
        .collect()
}

fn api(admin: &str, path: &str) -> Value {
    match api_request("GET", &format!("{admin}{path}"), Some(API_TOKEN)) {
        Some((200, _, body)) => serde_json::from_str(&body).expect("json"),
        other => panic!("GET {path}: {other:?}"),
    }
}

/// The appointment's deliveries (reminders and notices included); none
/// while the host is not up yet.
fn deliveries(admin: &str, appt: &str) -> Vec<Value> {
    let url = format!("{admin}/v1/appointments/{appt}/deliveries");
    match api_request("GET", &url, Some(API_TOKEN)) {
        Some((200, _, body)) => serde_json::from_str::<Value>(&body).expect("json")["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Some(other) => panic!("GET {url}: {other:?}"),
        None => Vec::new(),
    }
}

fn find<'a>(all: &'a [Value], purpose: &str, channel: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|d| d["purpose"] == purpose && d["channel"] == channel)
        .collect()
}

/// Waits until the appointment has a `purpose` delivery on `channel` in `state`.
fn wait_delivery(admin: &str, appt: &str, purpose: &str, channel: &str, state: &str) -> Value {
    let mut found = Value::Null;
    wait_for(
        &format!("{appt}: {purpose}/{channel} {state}"),
        WAIT,
        || {
            let all = deliveries(admin, appt);
            match find(&all, purpose, channel)
                .into_iter()
                .find(|d| d["state"] == state)
            {
                Some(d) => {
                    found = d.clone();
                    true
                }
                None => false,
            }
        },
    );
    found
}

/// The host, once ready (in its group, partition assigned): reminders are
/// due seconds after their booking, so the test clock starts there.
fn start(s: &Setup, extra: &str) -> (Host, String, std::path::PathBuf) {
    let config = with_api_token(&s.config_with(extra));
    let admin = admin_url(&config);
    let host = Host::start_with_env(&config, &api_env());
    wait_ready(&admin);
    (host, admin, config)
}

fn wait_ready(admin: &str) {
    wait_for("the host ready", WAIT, || {
        http_get(&format!("{admin}/health/ready")).is_some_and(|(status, _)| status == 200)
    });
}

/// Wall-clock time of a stand-in arrival (stand-ins record `Instant`s).
struct Clock {
    instant: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: DateTime::<Utc>::from(SystemTime::now()),
        }
    }
    fn wall(&self, at: Instant) -> DateTime<Utc> {
        self.wall + TimeDelta::from_std(at - self.instant).unwrap_or_default()
    }
}

#[test]
fn a_reminder_goes_out_at_its_due_time_after_the_confirmation() {
    let s = setup(
        "reminder-due",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    );
    // The appointment in an hour, the reminder 5 s from now.
    let ahead = Duration::from_secs(3600);
    let lead = ahead - Duration::from_secs(5);
    let (_host, admin, _) = start(&s, &policy("soon", lead, "[\"email\", \"sms\"]", ""));
    let clock = Clock::now();
    let time = clock.wall + TimeDelta::from_std(ahead).expect("delta");
    publish(&s.t.topic, &[created("r-due-1", "A-due", time, true, true)]);

    wait_for("the confirmation", WAIT, || {
        mailgun_purposes(&s.mailgun).len() == 1
    });
    assert_eq!(mailgun_purposes(&s.mailgun), ["confirmation"]);
    let listed = || {
        api(&admin, "/v1/reminders?appointment_id=A-due")["reminders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Each channel schedules its reminder when its own confirmation is
    // done; the SMS one may still be in flight when the e-mail arrives.
    wait_for("a reminder per channel asked for", WAIT, || {
        listed().len() >= 2
    });
    let open = listed();
    assert_eq!(open.len(), 2, "one per channel asked for: {open:?}");
    assert!(open
        .iter()
        .all(|r| r["state"] == "scheduled" && r["reminder"] == "soon"));
    let due = parse_time(&open[0]["due_at"]);

    let email = wait_delivery(&admin, "A-due", "reminder", "email", "delivered");
    wait_delivery(&admin, "A-due", "reminder", "sms", "delivered");
    assert_eq!(mailgun_purposes(&s.mailgun), ["confirmation", "reminder"]);
    let reminder_arrival = clock.wall(s.mailgun.received()[1].at);
    let late = reminder_arrival - due;
    assert!(
        late >= TimeDelta::zero() && late < TimeDelta::seconds(1),
        "the reminder arrived {late:?} after its due time {due}"
    );
    assert_eq!(
        parse_time(&email["useful_until"]),
        parse_time(&json!(rfc3339(time)))
    );
    // The SMS stand-in: the confirmation and the reminder, one each.
    assert_eq!(s.twilio.received().len(), 2);
    let sms_text = String::from_utf8_lossy(&s.twilio.received()[1].body).into_owned();
    assert!(sms_text.to_lowercase().contains("remind"), "{sms_text}");
    assert!(api(&admin, "/v1/reminders")["reminders"]
        .as_array()
        .is_some_and(|a| a.is_empty()));
    let metrics = format!("{admin}/metrics");
    assert_eq!(
        metric(&metrics, "notify_reminders_fired_total{channel=\"email\"}"),
        Some(1.0)
    );
    // The gauge follows within its 1 s update.
    wait_for("no reminder left scheduled", WAIT, || {
        metric(&metrics, "notify_reminders_scheduled") == Some(0.0)
    });
    assert!(metric(&metrics, "notify_reminder_lateness_seconds_count").is_some_and(|n| n >= 2.0));
}

#[test]
fn a_cancel_before_the_due_time_means_no_reminder_and_a_notice_when_configured() {
    let s = setup("reminder-cancel", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let lead = Duration::from_secs(3600 - 4);
    let extra = policy("soon", lead, "[\"email\"]", "") + "\n[notices]\ncancelled = [\"email\"]\n";
    let (_host, admin, config) = start(&s, &extra);
    let time = Utc::now() + TimeDelta::seconds(3600);
    publish(&s.t.topic, &[created("c-1", "A-cancel", time, true, false)]);
    wait_delivery(&admin, "A-cancel", "reminder", "email", "scheduled");
    // Published with the CLI, as the README shows.
    let out = notify_host(
        &[
            "publish",
            "--config",
            config.to_str().unwrap_or_default(),
            "--type",
            "cancelled",
            "--appointment-id",
            "A-cancel",
        ],
        &shipped_env(&s.mailgun.url(), &s.twilio.url()),
        s.w.path(),
    );
    assert!(out.status.success(), "publish: {}", stderr(&out));
    let cancelled = wait_delivery(&admin, "A-cancel", "reminder", "email", "cancelled");
    assert!(
        cancelled["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled"),
        "{cancelled}"
    );
    wait_delivery(&admin, "A-cancel", "cancellation", "email", "delivered");
    // Past the reminder's due time: nothing more came.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        mailgun_purposes(&s.mailgun),
        ["confirmation", "cancellation"]
    );
    let state = api(&admin, "/v1/appointments/A-cancel");
    assert_eq!(state["status"], "cancelled");
    assert!(state.get("event").is_none(), "the kept event is not shown");
}

#[test]
fn a_reschedule_moves_the_reminder_to_the_new_time_and_sends_a_notice() {
    let s = setup("reminder-move", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let lead = Duration::from_secs(3600);
    let extra =
        policy("hour-before", lead, "[\"email\"]", "") + "\n[notices]\nrescheduled = [\"email\"]\n";
    let (_host, admin, _) = start(&s, &extra);
    let clock = Clock::now();
    // First 30 s past the lead (due in 30 s), then moved to 4 s past it.
    let first = clock.wall + TimeDelta::seconds(3630);
    let moved = clock.wall + TimeDelta::seconds(3604);
    publish(&s.t.topic, &[created("m-1", "A-move", first, true, false)]);
    wait_delivery(&admin, "A-move", "reminder", "email", "scheduled");
    publish(
        &s.t.topic,
        &[lifecycle("m-2", "rescheduled", "A-move", Some(moved))],
    );
    let old = wait_delivery(&admin, "A-move", "reminder", "email", "cancelled");
    assert_eq!(old["event_id"], "m-1");
    wait_delivery(&admin, "A-move", "reschedule", "email", "delivered");
    let new = wait_delivery(&admin, "A-move", "reminder", "email", "delivered");
    assert_eq!(new["event_id"], "m-2");
    assert_eq!(
        parse_time(&new["useful_until"]),
        parse_time(&json!(rfc3339(moved)))
    );
    assert_eq!(
        mailgun_purposes(&s.mailgun),
        ["confirmation", "reschedule", "reminder"]
    );
    let arrival = clock.wall(s.mailgun.received()[2].at);
    let due = parse_time(&new["due_at"]);
    assert!(
        arrival >= due && arrival - due < TimeDelta::seconds(1),
        "{arrival} vs {due}"
    );
    assert_eq!(
        api(&admin, "/v1/appointments/A-move")["time"]
            .as_str()
            .map(|t| parse_time(&json!(t))),
        Some(parse_time(&json!(rfc3339(moved))))
    );
}

#[test]
fn a_cancel_that_arrives_before_its_booking_leaves_the_booking_nothing_to_send() {
    let s = setup(
        "reminder-early-cancel",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![],
    );
    let lead = Duration::from_secs(3600 - 3);
    let (_host, admin, _) = start(&s, &policy("soon", lead, "[\"email\"]", ""));
    let time = Utc::now() + TimeDelta::seconds(3600);
    publish(
        &s.t.topic,
        &[
            lifecycle("x-1", "cancelled", "A-early", None),
            created("x-2", "A-early", time, true, false),
        ],
    );
    s.wait_committed(2);
    let confirmation = wait_delivery(&admin, "A-early", "confirmation", "email", "cancelled");
    assert!(
        confirmation["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("x-1"),
        "names the cancel: {confirmation}"
    );
    assert!(
        api(&admin, "/v1/reminders?appointment_id=A-early")["reminders"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(s.mailgun.received().is_empty(), "nothing sent");
    assert_eq!(
        api(&admin, "/v1/appointments/A-early")["status"],
        "cancelled"
    );
}

#[test]
fn a_reminder_due_while_the_host_was_down_goes_out_at_start_unless_its_appointment_is_past() {
    let s = setup("reminder-boot", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    // A: appointment in an hour, reminder "a" due in 6 s. B: appointment in
    // 10 s, reminder "b" due in 6 s. The host is down from about 2 s to 12 s.
    let extra = policy("a", Duration::from_secs(3594), "[\"email\"]", "")
        + &policy("b", Duration::from_secs(4), "[\"email\"]", "");
    let (mut host, admin, config) = start(&s, &extra);
    let now = Utc::now();
    publish(
        &s.t.topic,
        &[
            created("b-1", "A-boot", now + TimeDelta::seconds(3600), true, false),
            created("b-2", "B-boot", now + TimeDelta::seconds(10), true, false),
        ],
    );
    s.wait_committed(2);
    // Each booking schedules both policies where still ahead.
    wait_delivery(&admin, "A-boot", "reminder", "email", "scheduled");
    wait_delivery(&admin, "B-boot", "reminder", "email", "scheduled");
    assert!(host.terminate().success());
    let confirmations = s.mailgun.received().len();
    assert!(
        Utc::now() - now < TimeDelta::seconds(6),
        "stopped before the due time"
    );
    std::thread::sleep(
        Duration::from_secs(12).saturating_sub((Utc::now() - now).to_std().unwrap_or_default()),
    );
    let _host = Host::start_with_env(&config, &api_env());
    let a = wait_delivery(&admin, "A-boot", "reminder", "email", "delivered");
    assert_eq!(a["reminder"], "a");
    let late = parse_time(&a["updated_at"]) - parse_time(&a["due_at"]);
    assert!(
        late > TimeDelta::seconds(4),
        "fired by the boot scan, late: {late:?}"
    );
    let mut b = Value::Null;
    wait_for("B's reminder expired at start", WAIT, || {
        b = find(&deliveries(&admin, "B-boot"), "reminder", "email")
            .into_iter()
            .find(|d| d["reminder"] == "b" && d["state"] == "expired")
            .cloned()
            .unwrap_or(Value::Null);
        !b.is_null()
    });
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("appointment"),
        "{b}"
    );
    // A's "b" reminder (4 s before an appointment an hour away) is still
    // scheduled; B's "a" was already past when B was booked.
    let past = find(&deliveries(&admin, "B-boot"), "reminder", "email")
        .into_iter()
        .filter(|d| d["reminder"] == "a")
        .map(|d| d["state"].clone())
        .collect::<Vec<_>>();
    assert_eq!(past, [json!("expired")]);
    assert_eq!(
        s.mailgun.received().len(),
        confirmations + 1,
        "only A's reminder was sent"
    );
}

#[test]
fn a_kill_before_the_due_time_sends_the_reminder_once_and_a_kill_during_its_send_at_most_twice() {
    // The provider takes 1.2 s to answer (the channel's timeout is 2 s): a
    // kill inside that window loses the answer after the provider took the
    // request.
    let s = setup(
        "reminder-kill",
        vec![Reply::new(200, MAILGUN_OK).delayed(Duration::from_millis(1200))],
        vec![],
    );
    let extra = policy("soon", Duration::from_secs(3600 - 6), "[\"email\"]", "");
    let (mut host, admin, config) = start(&s, &extra);
    let now = Utc::now();
    publish(
        &s.t.topic,
        &[created(
            "k-1",
            "A-kill",
            now + TimeDelta::seconds(3600),
            true,
            false,
        )],
    );
    wait_delivery(&admin, "A-kill", "reminder", "email", "scheduled");
    wait_for("confirmation delivered", WAIT, || {
        find(&deliveries(&admin, "A-kill"), "confirmation", "email")
            .iter()
            .any(|d| d["state"] == "delivered")
    });
    // Killed 2 s before the due time, back 2 s after it.
    let due = now + TimeDelta::seconds(6);
    std::thread::sleep(
        (due - TimeDelta::seconds(2) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    );
    host.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let mut host = Host::start_with_env(&config, &api_env());
    wait_delivery(&admin, "A-kill", "reminder", "email", "delivered");
    assert_eq!(
        mailgun_purposes(&s.mailgun),
        ["confirmation", "reminder"],
        "exactly once"
    );

    // Now a kill while the reminder is being sent: the provider has it,
    // the host never heard back. The boot scan sends it again: the one
    // documented duplicate (the in-flight window), and no more.
    let now = Utc::now();
    publish(
        &s.t.topic,
        &[created(
            "k-2",
            "B-kill",
            now + TimeDelta::seconds(3603),
            true,
            false,
        )],
    );
    let before = s.mailgun.received().len();
    wait_for("the reminder reached the provider", WAIT, || {
        mailgun_purposes(&s.mailgun)
            .iter()
            .filter(|p| *p == "reminder")
            .count()
            == 2
    });
    host.kill9();
    let _host = Host::start_with_env(&config, &api_env());
    wait_delivery(&admin, "B-kill", "reminder", "email", "delivered");
    std::thread::sleep(Duration::from_secs(3));
    let reminders_after = mailgun_purposes(&s.mailgun)[before..]
        .iter()
        .filter(|p| *p == "reminder")
        .count();
    assert_eq!(
        reminders_after, 2,
        "sent, killed before the answer, sent once more at start"
    );
}

#[test]
fn quiet_hours_move_a_reminder_later_or_earlier_in_the_appointments_zone() {
    let s = setup("reminder-quiet", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    // Quiet from 2 h to 4 h from now, as local times of Asia/Kolkata
    // (UTC+05:30, no DST), so the test works at any hour.
    let zone: chrono_tz::Tz = "Asia/Kolkata".parse().expect("zone");
    let now = Utc::now();
    let local = |t: DateTime<Utc>| t.with_timezone(&zone).format("%H:%M").to_string();
    let from = now + TimeDelta::hours(2);
    let to = now + TimeDelta::hours(4);
    let extra = policy("half-hour", Duration::from_secs(1800), "[\"email\"]", "")
        + &format!(
            "\n[channels.email.quiet_hours]\nfrom = \"{}\"\nto = \"{}\"\n",
            local(from),
            local(to)
        );
    let (_host, admin, _) = start(&s, &extra);
    let minute = |t: DateTime<Utc>| t.with_timezone(&zone).format("%Y-%m-%dT%H:%M").to_string();
    let event = |id: &str, appt: &str, time: DateTime<Utc>| {
        let mut v: Value =
            serde_json::from_slice(&created(id, appt, time, true, false)).expect("json");
        v["appointment"]["time_zone"] = json!("Asia/Kolkata");
        v.to_string().into_bytes()
    };
    // Appointment 3 h ahead: due at 2.5 h, quiet until 4 h, which is past
    // the appointment: moved earlier, to just before 2 h.
    // Appointment 4 h 20 min ahead: due at 3 h 50 min, quiet until 4 h,
    // before the appointment: moved later, to 4 h.
    // Appointment 5 h ahead: due at 4.5 h, after the quiet hours: as is.
    publish(
        &s.t.topic,
        &[
            event("q-1", "A-earlier", now + TimeDelta::hours(3)),
            event("q-2", "A-later", now + TimeDelta::minutes(260)),
            event("q-3", "A-outside", now + TimeDelta::minutes(300)),
        ],
    );
    let earlier = wait_delivery(&admin, "A-earlier", "reminder", "email", "scheduled");
    let later = wait_delivery(&admin, "A-later", "reminder", "email", "scheduled");
    let outside = wait_delivery(&admin, "A-outside", "reminder", "email", "scheduled");
    let due = |d: &Value| parse_time(&d["due_at"]);
    assert_eq!(
        minute(due(&earlier)),
        minute(from - TimeDelta::minutes(1)),
        "{earlier}"
    );
    assert!(earlier["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("earlier"));
    assert_eq!(minute(due(&later)), minute(to), "{later}");
    assert!(later["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("later"));
    assert_eq!(
        due(&outside),
        now_trunc(now + TimeDelta::minutes(270), &outside)
    );
}

/// The due time of a reminder outside quiet hours is exact: `before` ahead
/// of the appointment (the event's time has millisecond precision).
fn now_trunc(expected: DateTime<Utc>, d: &Value) -> DateTime<Utc> {
    let got = parse_time(&d["due_at"]);
    assert!(
        (got - expected).num_milliseconds().abs() < 2,
        "{got} vs {expected}"
    );
    got
}

#[test]
fn unknown_event_types_are_dead_lettered_by_default_or_skipped_when_configured() {
    let s = setup("unknown-types", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let (_host, _admin, _) = start(&s, "");
    let deleted = json!({"event_id": "u-1", "event_type": "appointments.deleted", "appointment": {"appointment_id": "A-u"}});
    publish(&s.t.topic, &[deleted.to_string().into_bytes()]);
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1);
    let reason = letters[0].header("notify.reason").unwrap_or_default();
    assert!(reason.contains("appointments.deleted"), "{reason}");
    assert_eq!(
        letters[0].header("notify.error_class"),
        Some("invalid_event")
    );

    let s = setup(
        "unknown-types-skip",
        vec![Reply::new(200, MAILGUN_OK)],
        vec![],
    );
    let config = with_api_token(&s.config("unknown_event_types = \"skip\""));
    let admin = admin_url(&config);
    let _host = Host::start_with_env(&config, &api_env());
    publish(&s.t.topic, &[deleted.to_string().into_bytes()]);
    s.wait_committed(1);
    assert!(read_topic(&s.t.dlq, 1, Duration::from_secs(2)).is_empty());
    assert_eq!(
        metric(&format!("{admin}/metrics"), "notify_events_skipped_total"),
        Some(1.0)
    );
}
