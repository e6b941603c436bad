//! Channel plugins written in other languages, through the real pipeline at
//! default settings (512 events in flight): the signed-webhook channel in
//! Python (plugins/webhook.wasm, componentize-py) and the same webhook in
//! JavaScript (tests/plugins/js-webhook.wasm, jco's default build, which
//! imports wasi:http). Neither needed a host change; here they must deliver
//! every event once, with no dead letter, no duplicate and no deadline
//! overrun, and every request must carry a valid host-made signature.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::setup;

const SECRET: &str = "whsec-polyglot-test-0123456789abcdef";
/// More than `pipeline.max_in_flight` (512), so the host runs at its limit.
const EVENTS: usize = 800;

/// Compiled plugins are kept between test runs (the Python component takes
/// tens of seconds to compile in a debug build).
pub fn shared_cache_dir() -> String {
    format!("{}/plugin-cache", env!("CARGO_TARGET_TMPDIR"))
}

fn both_event(id: &str) -> Vec<u8> {
    event_notifying(id, serde_json::json!({ "webhook": true, "jsweb": true }))
}

fn valid_signature(r: &Recorded) -> bool {
    let (Some(ts), Some(sig)) = (
        r.header("x-notify-timestamp"),
        r.header("x-notify-signature"),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()) else {
        return false;
    };
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig == format!("sha256={want}")
}

fn event_id(r: &Recorded) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    body["event_id"].as_str().map(str::to_string)
}

#[test]
fn python_and_javascript_plugins_deliver_every_event_once_at_default_settings() {
    // The webhook stand-in: 20 ms per answer, an id in the body.
    let s = setup("polyglot", vec![], vec![]);
    let hooks = StandIn::start(vec![
        Reply::new(200, r#"{"id":"wh-1"}"#).delayed(Duration::from_millis(20))
    ]);
    let table = |name: &str, plugin: &std::path::Path, path: &str| {
        format!(
            r#"
[channels.{name}]
plugin = "{plugin}"
base_url = "{url}"
timeout_seconds = 2
auth = {{ type = "hmac", secret = "${{WEBHOOK_SECRET}}" }}
settings = {{ path = "{path}" }}
"#,
            plugin = plugin.display(),
            url = hooks.url(),
        )
    };
    let config = s.config_with(&format!(
        "{}{}",
        table("webhook", &wasm("plugins/webhook.wasm"), "/py"),
        table("jsweb", &wasm("tests/plugins/js-webhook.wasm"), "/js"),
    ));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "[ledger]\n",
            &format!(
                "[plugins]\ncache_dir = \"{}\"\n\n[ledger]\n",
                shared_cache_dir()
            ),
            1,
        ),
    )
    .expect("config");
    let mut host = Host::start_with_env(&config, &[("WEBHOOK_SECRET", SECRET)]);
    let admin = admin_url(&config);
    wait_for(
        "the host to be ready (compiling the plugins)",
        Duration::from_secs(300),
        || http_get(&format!("{admin}/health/ready")).is_some_and(|(status, _)| status == 200),
    );

    let events: Vec<Vec<u8>> = (0..EVENTS).map(|i| both_event(&format!("p-{i}"))).collect();
    publish_batched(&s.t.topic, &events);
    // A debug build of the host runs Python slowly on a loaded 2-core
    // machine: the wait is generous, the assertions are not.
    wait_for("every event committed", Duration::from_secs(300), || {
        s.committed() == Some(EVENTS as i64)
    });

    let received = hooks.received();
    // What went wrong, if anything did: the host's first warnings.
    let trouble = || -> String {
        let log = host.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .take(5)
            .collect();
        lines.join("\n")
    };
    let mut per_channel: HashMap<(String, String), usize> = HashMap::new();
    for r in &received {
        let id = event_id(r).unwrap_or_else(|| {
            panic!(
                "a request without event_id: {}",
                String::from_utf8_lossy(&r.body)
            )
        });
        *per_channel.entry((r.path.clone(), id)).or_default() += 1;
        assert!(
            valid_signature(r),
            "a request whose signature does not verify: {:?}",
            r.headers
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "the secret reached a plugin's output"
        );
    }
    for path in ["/py", "/js"] {
        let sent = per_channel.iter().filter(|((p, _), _)| p == path).count();
        assert_eq!(
            sent,
            EVENTS,
            "{path}: every event delivered; host:\n{}",
            trouble()
        );
        let doubled = per_channel
            .iter()
            .filter(|((p, _), n)| p == path && **n > 1)
            .count();
        assert_eq!(doubled, 0, "{path}: no event sent twice");
    }
    let delivered = |channel: &str| {
        metric(
            &format!("{admin}/metrics"),
            &format!(
                "notify_channel_deliveries_total{{channel=\"{channel}\",outcome=\"delivered\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(delivered("webhook"), EVENTS as f64);
    assert_eq!(delivered("jsweb"), EVENTS as f64);
    let letters = read_topic(&s.t.dlq, 1, Duration::from_secs(3));
    assert!(
        letters.is_empty(),
        "no dead letter: {} found",
        letters.len()
    );
    let log = host.log_text();
    let lines = |needle: &str| -> Vec<&str> {
        log.lines().filter(|l| l.contains(needle)).take(3).collect()
    };
    assert!(
        lines("deadline").is_empty(),
        "a plugin call overran its deadline: {:?}",
        lines("deadline")
    );
    assert!(
        lines("concurrent limit").is_empty(),
        "the instance pool ran out: {:?}",
        lines("concurrent limit")
    );

    // A second start takes both components from the compile cache.
    assert!(host.terminate().success());
    let again = Host::start_with_env(&config, &[("WEBHOOK_SECRET", SECRET)]);
    wait_for(
        "the restarted host to be ready",
        Duration::from_secs(120),
        || http_get(&format!("{admin}/health/ready")).is_some_and(|(status, _)| status == 200),
    );
    for channel in ["webhook", "jsweb"] {
        let loaded: Vec<_> = again
            .events("plugin loaded")
            .into_iter()
            .filter(|e| e["channel"] == channel)
            .collect();
        assert_eq!(loaded.len(), 1, "{channel}: one load line");
        assert_eq!(loaded[0]["source"], "cache", "{channel}: {}", loaded[0]);
    }
}
