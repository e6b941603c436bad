//! Hostile events and odd clusters cannot stall a partition or grow the host:
//! a panic in event work is dead-lettered and the key goes on; one event
//! cannot fan out into thousands of dead letters or metric series; a dead
//! letter that is too large is written with a reference; a dead-letter topic
//! that is missing refuses the start, and one that goes away mid-run fails
//! readiness and holds the offset until it is back. Real broker (tansu),
//! real host binary, real plugins.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sha2::{Digest, Sha256};

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{mailgun_event_ids, setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const WAIT: Duration = Duration::from_secs(60);

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// An event for `appointment` asking for e-mail.
fn keyed_event(id: &str, appointment: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&event(id, true, false)).expect("json");
    v["appointment"]["appointment_id"] = appointment.into();
    v.to_string().into_bytes()
}

/// Needs the `failpoints` feature (scripts/test.sh turns it on): the host
/// binary then panics inside event work where FAILPOINTS says.
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs --features failpoints (scripts/test.sh sets it)"
)]
fn a_panic_in_event_work_is_dead_lettered_and_the_next_event_on_its_key_flows() {
    let s = setup("panic", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let config = s.config("");
    // The first event worked panics, once; the rest are worked as usual.
    let host = Host::start_with_env(
        &config,
        &[("FAILPOINTS", "event-work=1*panic(injected for the test)")],
    );
    publish(
        &s.t.topic,
        &[
            keyed_event("e-panics", "appt-1"),
            keyed_event("e-after", "appt-1"),
        ],
    );
    // Both offsets commit: the panic did not leave the first in flight.
    s.wait_committed(2);
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    let l = &letters[0];
    assert_eq!(
        l.header("notify.error_class"),
        Some("host_failed"),
        "{}",
        host.log_text()
    );
    assert_eq!(l.header("notify.event_id"), Some("e-panics"));
    let reason = l.header("notify.reason").unwrap_or_default();
    assert!(
        reason.contains("injected for the test"),
        "the panic message is the reason: {reason}"
    );
    assert_eq!(
        mailgun_event_ids(&s.mailgun),
        ["e-after"],
        "the next event on the key was delivered"
    );
    let metrics = format!("{}/metrics", admin_url(&config));
    assert_eq!(metric(&metrics, "notify_host_panics_total "), Some(1.0));
    assert_eq!(
        metric(&metrics, "notify_dlq_events_total{reason=\"host_failed\"} "),
        Some(1.0)
    );
    // The panic is one JSON log line, not text on stderr.
    assert_eq!(host.events("panic").len(), 1, "{}", host.log_text());
    let (status, _) = http_get(&format!("{}/health/ready", admin_url(&config))).expect("ready");
    assert_eq!(status, 200, "a caught panic does not make the host unready");
}

#[test]
fn one_event_cannot_fan_out_into_dead_letters_or_metric_series() {
    let s = setup("fanout", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let config = s.config("");
    let host = Host::start(&config);
    let metrics = format!("{}/metrics", admin_url(&config));
    let ready = format!("{}/health/ready", admin_url(&config));
    wait_for("ready", WAIT, || {
        http_get(&ready).is_some_and(|(c, _)| c == 200)
    });
    let before = http_get(&metrics).expect("metrics").1;

    // 2,500 channels, none of them configured: over the per-event limit.
    let mut flood: serde_json::Value =
        serde_json::from_slice(&event("e-flood", false, false)).expect("json");
    for i in 0..2500 {
        flood["notify"][format!("zz-flood-{i}")] = true.into();
    }
    // Three unknown channels beside e-mail: e-mail goes out, one letter
    // names the three.
    let mut typos: serde_json::Value =
        serde_json::from_slice(&event("e-typos", true, false)).expect("json");
    for name in ["emial", "smss", "zz-push"] {
        typos["notify"][name] = true.into();
    }
    publish(
        &s.t.topic,
        &[
            flood.to_string().into_bytes(),
            typos.to_string().into_bytes(),
        ],
    );
    s.wait_committed(2);

    let letters = read_topic(&s.t.dlq, 3, Duration::from_secs(5));
    assert_eq!(letters.len(), 2, "one letter per event: {letters:?}");
    // Different keys: the two events are worked concurrently.
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l.header("notify.event_id") == Some(id))
            .unwrap_or_else(|| panic!("no letter for {id}: {letters:?}"))
    };
    let flood_letter = by_id("e-flood");
    assert_eq!(
        flood_letter.header("notify.error_class"),
        Some("invalid_event")
    );
    let reason = flood_letter.header("notify.reason").unwrap_or_default();
    assert!(
        reason.contains("2500 channels") && reason.contains("pipeline.max_channels_per_event"),
        "{reason}"
    );
    let typo_letter = by_id("e-typos");
    assert_eq!(
        typo_letter.header("notify.error_class"),
        Some("unknown_channel")
    );
    let reason = typo_letter.header("notify.reason").unwrap_or_default();
    for name in ["`emial`", "`smss`", "`zz-push`"] {
        assert!(reason.contains(name), "{name} in {reason}");
    }
    assert_eq!(mailgun_event_ids(&s.mailgun), ["e-typos"]);

    let after = http_get(&metrics).expect("metrics").1;
    assert!(
        !after.contains("zz-") && !after.contains("emial"),
        "no series named after an event's channel"
    );
    // Every series but the per-partition ones (which follow the assignment
    // and librdkafka's statistics) existed at 0 before the events came.
    let series = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("partition=\""))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_string()))
            .collect()
    };
    let new: Vec<String> = series(&after)
        .difference(&series(&before))
        .cloned()
        .collect();
    assert!(new.is_empty(), "series created by events: {new:?}");
    assert_eq!(
        metric(
            &metrics,
            "notify_channel_deliveries_total{channel=\"unknown\",outcome=\"dead_letter\"} "
        ),
        Some(3.0),
        "each unknown channel counted under channel=\"unknown\""
    );
    let failed = host.events("channel failed");
    assert_eq!(
        failed.len(),
        1,
        "one log line for the three unknown channels"
    );
}

#[test]
fn a_fresh_host_exports_every_configured_channel_at_zero() {
    let s = setup("zero", vec![], vec![]);
    let config = s.config("");
    let _host = Host::start(&config);
    let metrics = format!("{}/metrics", admin_url(&config));
    wait_for("the host to serve metrics", WAIT, || {
        http_get(&metrics).is_some()
    });
    let text = http_get(&metrics).expect("metrics").1;
    for channel in ["email", "sms"] {
        for outcome in ["delivered", "duplicate", "disabled", "dead_letter"] {
            let series = format!(
                "notify_channel_deliveries_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} 0"
            );
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for series in [
            format!("notify_channel_retries_total{{channel=\"{channel}\"}} 0"),
            format!("notify_dedup_hits_total{{channel=\"{channel}\"}} 0"),
            format!(
                "notify_provider_requests_total{{channel=\"{channel}\",status_class=\"5xx\"}} 0"
            ),
            format!("notify_channel_circuit_state{{channel=\"{channel}\"}} 0"),
        ] {
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }
    for class in [
        "invalid_event",
        "unknown_channel",
        "permanent",
        "retries_exhausted",
        "plugin_failed",
        "host_failed",
    ] {
        let series = format!("notify_dlq_events_total{{reason=\"{class}\"}} 0");
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
}

#[test]
fn a_missing_dead_letter_topic_refuses_the_start() {
    let s = setup("nodlq", vec![], vec![]);
    let config = s.config("");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&s.t.dlq, "appointments.created.dlq.does-not-exist");
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notify-host"))
        .args(["run", "--config"])
        .arg(&config)
        .env("MAILGUN_API_KEY", MAILGUN_KEY)
        .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the dead-letter topic `appointments.created.dlq.does-not-exist` (kafka.dlq_topic) does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_dead_letter_too_large_for_the_topic_is_written_with_a_reference() {
    let s = setup("toolarge", vec![], vec![]);
    // The producer's limit stands in for a stock broker's 1 MiB one.
    let config = s.config("max_event_kib = 1024");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[kafka.client]\n",
        "[kafka.client]\n\"message.max.bytes\" = 100000\n",
    );
    std::fs::write(&config, text).expect("config");
    let host = Host::start(&config);
    // 300 KB, and no event_id: dead-lettered as invalid_event.
    let payload = serde_json::json!({
        "event_type": "appointments.created",
        "padding": "x".repeat(300_000),
    })
    .to_string()
    .into_bytes();
    publish(&s.t.topic, std::slice::from_ref(&payload));
    s.wait_committed(1);
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    let l = &letters[0];
    assert_eq!(l.header("notify.error_class"), Some("invalid_event"));
    assert_eq!(l.header("notify.payload_omitted"), Some("too_large"));
    assert_eq!(
        l.header("notify.payload_bytes"),
        Some(payload.len().to_string().as_str())
    );
    let sha = format!("{:x}", Sha256::digest(&payload));
    assert_eq!(l.header("notify.payload_sha256"), Some(sha.as_str()));
    let reference: serde_json::Value = serde_json::from_slice(&l.payload).expect("json reference");
    assert_eq!(reference["source_topic"], s.t.topic.as_str());
    assert_eq!(reference["source_offset"], 0);
    assert_eq!(reference["sha256"], sha.as_str());
}

#[test]
fn a_dead_letter_topic_gone_mid_run_fails_readiness_and_holds_the_offset_until_it_returns() {
    let s = setup("dlqgone", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let config = s.config("");
    // The producer learns of the deletion at its next metadata refresh, and
    // gives up on the topic a second later (defaults: 5 min and 30 s).
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[kafka.client]\n",
        "[kafka.client]\n\"topic.metadata.refresh.interval.ms\" = 1000\n\"topic.metadata.propagation.max.ms\" = 1000\n",
    );
    std::fs::write(&config, text).expect("config");
    let host = Host::start(&config);
    let ready = format!("{}/health/ready", admin_url(&config));
    publish(&s.t.topic, &[event("e-before", true, false)]);
    s.wait_committed(1);
    wait_for("ready", WAIT, || {
        http_get(&ready).is_some_and(|(c, _)| c == 200)
    });

    let rt = runtime();
    let deleted = rt
        .block_on(admin().delete_topics(&[&s.t.dlq], &options()))
        .expect("delete topics");
    for r in deleted {
        r.unwrap_or_else(|(name, e)| panic!("delete topic {name}: {e}"));
    }
    // Past the producer's next refresh.
    std::thread::sleep(Duration::from_secs(3));
    // Bad, then good: the good one waits behind the bad one's dead letter.
    publish(
        &s.t.topic,
        &[b"{not json".to_vec(), event("e-after", true, false)],
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !http_get(&ready).is_some_and(|(c, body)| c == 503 && body.contains("dead_letter_topic"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "readiness did not fail on the dead-letter topic: {:?}\n{}",
            http_get(&ready),
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.committed(),
        Some(1),
        "nothing committed past the event whose dead letter is not written"
    );

    let created = rt
        .block_on(admin().create_topics(
            &[NewTopic::new(&s.t.dlq, 1, TopicReplication::Fixed(1))],
            &options(),
        ))
        .expect("create topics");
    for r in created {
        r.unwrap_or_else(|(name, e)| panic!("create topic {name}: {e}"));
    }
    s.wait_committed(3);
    let letters = read_topic(&s.t.dlq, 1, WAIT);
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    assert_eq!(letters[0].payload, b"{not json");
    wait_for("readiness restored", WAIT, || {
        http_get(&ready).is_some_and(|(c, _)| c == 200)
    });
    let mut mail = mailgun_event_ids(&s.mailgun);
    mail.sort();
    assert_eq!(mail, ["e-after", "e-before"], "nothing lost");
    let logged: Vec<String> = host
        .logs
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains("dead-letter write failed"))
        .cloned()
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "logged once per 30 s, not per retry: {logged:?}"
    );
    assert!(logged[0].contains("Unavailable"), "{}", logged[0]);
}

#[test]
fn a_plugin_reason_of_twelve_mebibytes_is_cut_and_dead_lettered_once() {
    let s = setup("longreason", vec![], vec![]);
    let hook = StandIn::start(vec![Reply::new(400, "")]);
    // An odd cap: the cut falls inside a two-byte character.
    let config = s.config_with(&format!(
        "\n[channels.talker]\nplugin = {:?}\nbase_url = \"{}\"\nmemory_limit_mib = 128\nsettings = {{ behavior = \"long-reason\" }}\n",
        hostile_wasm(),
        hook.url()
    ));
    let text = std::fs::read_to_string(&config).expect("config").replacen(
        "[pipeline]\n",
        "[plugins.caps]\ntext_bytes = 1023\n\n[pipeline]\n",
        1,
    );
    std::fs::write(&config, text).expect("config");
    let host = Host::start(&config);
    let payload = |id: &str| {
        serde_json::json!({
            "event_id": id,
            "notify": { "talker": true },
            "appointment": { "appointment_id": "a-talk" }
        })
        .to_string()
        .into_bytes()
    };
    publish(&s.t.topic, &[payload("t-1"), payload("t-2")]);
    // Both committed: the first letter was written, so the key went on.
    s.wait_committed(2);
    let letters = read_topic(&s.t.dlq, 3, Duration::from_secs(5));
    assert_eq!(
        letters.len(),
        2,
        "one letter per event: {}",
        host.log_text()
    );
    for l in &letters {
        assert_eq!(l.header("notify.error_class"), Some("permanent"));
        let reason = l.header("notify.reason").unwrap_or_default();
        assert!(
            reason.ends_with("… [cut at 1023 bytes]"),
            "{}",
            &reason[reason.len().saturating_sub(80)..]
        );
        let kept = reason.trim_end_matches("… [cut at 1023 bytes]");
        assert_eq!(kept.len(), 1022, "cut back to a character boundary");
        assert!(kept.chars().all(|c| c == 'é'), "whole characters only");
    }
    assert_eq!(
        hook.received().len(),
        2,
        "each event sent once, not retried"
    );
    let longest = host
        .logs
        .lock()
        .expect("lock")
        .iter()
        .map(String::len)
        .max();
    assert!(
        longest.unwrap_or(0) < 16 * 1024,
        "no log line carries the reason whole ({longest:?} bytes)"
    );
}
