//! What the operator sees: health, readiness, metrics (checked by promtool),
//! trace context carried into logs and dead letters.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::kafka_harness::*;

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;

fn event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","notify":{{"email":true}},"appointment":{{"appointment_id":"a-{id}","time":"2099-02-20T15:00:00Z","email":"user@example.com"}}}}"#
    )
    .into_bytes()
}

#[test]
fn health_readiness_and_metrics() {
    let t = unique("ops");
    create_topics(&t);
    let mailgun = StandIn::start(vec![Reply::new(200, MAILGUN_OK)]);
    let twilio = StandIn::start(vec![]);
    let w = Workdir::new();
    let config = host_config(&w, &t, &mailgun.url(), &twilio.url(), "");
    let base = admin_url(&config);
    let mut host = Host::start(&config);

    wait_for("liveness", Duration::from_secs(30), || {
        http_get(&format!("{base}/health/live")).is_some_and(|(s, _)| s == 200)
    });
    wait_for("readiness", Duration::from_secs(60), || {
        http_get(&format!("{base}/health/ready")).is_some_and(|(s, _)| s == 200)
    });
    // The container healthcheck command agrees.
    let probe = notify_host(
        &["health", "--url", &format!("{base}/health/ready")],
        &[],
        &root(),
    );
    assert!(probe.status.success(), "{}", stderr(&probe));

    publish(
        &t.topic,
        &[event("m-1"), event("m-2"), b"not json".to_vec()],
    );
    wait_for("commit", Duration::from_secs(60), || {
        committed(&t.group, &t.topic) == Some(3)
    });

    let (status, text) = http_get(&format!("{base}/metrics")).expect("metrics");
    assert_eq!(status, 200);
    for expected in [
        "notify_events_consumed_total 3",
        "notify_channel_deliveries_total{channel=\"email\",outcome=\"delivered\"} 2",
        "notify_dlq_events_total{reason=\"invalid_event\"} 1",
        "notify_provider_requests_total{channel=\"email\",status_class=\"2xx\"} 2",
        "notify_provider_request_duration_seconds_count{channel=\"email\"} 2",
        "notify_plugin_call_duration_seconds_count{channel=\"email\",call=\"render\"} 2",
        "notify_in_flight 0",
    ] {
        assert!(
            text.contains(expected),
            "{expected} missing from /metrics:\n{text}"
        );
    }
    // promtool (Debian package prometheus) must accept the exposition.
    let file = w.write("metrics.txt", &text);
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("run promtool (the test command installs it)");
    assert!(
        check.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Losing the broker makes the host unready, not dead.
    assert!(host.is_running());
    let _ = host.terminate();
}

#[test]
fn not_ready_without_kafka() {
    let t = Topics {
        topic: "appointments.created".into(),
        dlq: "appointments.created.dlq".into(),
        group: "nobody".into(),
    };
    let w = Workdir::new();
    let config = host_config(&w, &t, "http://127.0.0.1:9", "http://127.0.0.1:9", "");
    // Point the host at a port where no broker listens.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(&broker().bootstrap, "127.0.0.1:9");
    std::fs::write(&config, text).expect("config");
    let base = admin_url(&config);
    let mut host = Host::start(&config);
    wait_for("liveness", Duration::from_secs(30), || {
        http_get(&format!("{base}/health/live")).is_some_and(|(s, _)| s == 200)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = http_get(&format!("{base}/health/ready")).expect("ready endpoint");
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    let checks: Vec<&str> = json["failing"]
        .as_array()
        .expect("failing")
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert!(
        checks.contains(&"kafka") && checks.contains(&"partitions"),
        "{body}"
    );
    assert!(
        !checks.contains(&"plugins") && !checks.contains(&"ledger"),
        "{body}"
    );
    assert!(host.terminate().success());
}

#[test]
fn trace_context_reaches_logs_and_dead_letters() {
    let t = unique("trace");
    create_topics(&t);
    let mailgun = StandIn::start(vec![Reply::new(200, MAILGUN_OK)]);
    let twilio = StandIn::start(vec![]);
    let w = Workdir::new();
    let config = host_config(&w, &t, &mailgun.url(), &twilio.url(), "");
    let host = Host::start(&config);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    publish_with_headers(
        &t.topic,
        &event("tr-1"),
        &[("traceparent", tp), ("correlation_id", "req-42")],
    );
    publish_with_headers(&t.topic, br#"{"event_id":"tr-2"}"#, &[("traceparent", tp)]);
    wait_for("commit", Duration::from_secs(60), || {
        committed(&t.group, &t.topic) == Some(2)
    });
    let delivered = host.events("channel delivered");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["span"]["traceparent"], tp, "{}", delivered[0]);
    assert_eq!(delivered[0]["span"]["correlation_id"], "req-42");
    let letters = read_topic(&t.dlq, 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].header("traceparent"),
        Some(tp),
        "original headers kept on the dead letter"
    );
}
