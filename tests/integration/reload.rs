//! Hot reload under load: the real host, broker and Mailgun plugin. A
//! SIGHUP with a changed setting switches new sends to it while events keep
//! flowing (none lost, none sent twice); a broken plugin file and a change
//! that needs a restart are refused, and the running plugin keeps serving.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{mailgun_event_ids, setup};

const MAILGUN_OK: &str = r#"{"id":"<m@mg>","message":"Queued. Thank you."}"#;
const WAIT: Duration = Duration::from_secs(90);

/// The `from` field of each Mailgun request, in arrival order.
fn senders(s: &crate::pipeline::Setup) -> Vec<String> {
    s.mailgun
        .received()
        .iter()
        .filter_map(|r| {
            let ct = r.header("content-type")?;
            parse_multipart(&ct, &r.body)
                .into_iter()
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v)
        })
        .collect()
}

/// Why the host refused its last reload, from its log.
fn last_refusal(host: &Host) -> String {
    let refusal = host
        .events("reload refused; the running config and plugins stay")
        .pop()
        .expect("a refusal log line");
    refusal["error"].as_str().unwrap_or_default().to_string()
}

fn reload_count(admin: &str, result: &str) -> f64 {
    metric(
        &format!("{admin}/metrics"),
        &format!("notify_plugin_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_reload_under_load_switches_plugins_without_losing_or_doubling_a_send() {
    // 40 ms per answer keeps sends in flight across the reload.
    let s = setup(
        "reload",
        vec![Reply::new(200, MAILGUN_OK).delayed(Duration::from_millis(40))],
        vec![],
    );
    let config = s.config("");
    let original = std::fs::read_to_string(&config).expect("config");
    let host = Host::start(&config);
    let admin = admin_url(&config);
    wait_for("the host to be ready", WAIT, || {
        http_get(&format!("{admin}/health/ready")).is_some_and(|(status, _)| status == 200)
    });

    // Events keep arriving while the config changes under the host.
    const EVENTS: usize = 300;
    let topic = s.t.topic.clone();
    let publisher = std::thread::spawn(move || {
        for batch in 0..30 {
            let events: Vec<Vec<u8>> = (0..EVENTS / 30)
                .map(|i| event(&format!("r-{batch}-{i}"), true, false))
                .collect();
            publish(&topic, &events);
            std::thread::sleep(Duration::from_millis(60));
        }
    });

    wait_for("the first sends", WAIT, || s.mailgun.received().len() >= 60);
    let v2 = original.replace(
        "from = \"noreply@mg.example.com\"",
        "from = \"v2@mg.example.com\"",
    );
    assert_ne!(v2, original, "the test config has the sender it replaces");
    std::fs::write(&config, &v2).expect("config v2");
    host.hangup();
    wait_for("the reload to apply", WAIT, || {
        reload_count(&admin, "applied") == 1.0
    });
    let at_reload = s.mailgun.received().len();

    publisher.join().expect("publisher");
    wait_for("every event sent", WAIT, || {
        let ids: std::collections::HashSet<String> =
            mailgun_event_ids(&s.mailgun).into_iter().collect();
        ids.len() == EVENTS
    });
    s.wait_committed(EVENTS as i64);

    let ids = mailgun_event_ids(&s.mailgun);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "sent twice across the reload: {doubled:?}"
    );
    assert_eq!(ids.len(), EVENTS);

    let from = senders(&s);
    assert_eq!(
        from[0], "noreply@mg.example.com",
        "before the reload: the old setting"
    );
    // Sends in flight at the reload finish on the old version; within a few
    // dozen after it, every new send uses the new one.
    let settled = (at_reload + 64).min(from.len());
    assert!(
        from[settled..].iter().all(|f| f == "v2@mg.example.com"),
        "after the reload: the new setting ({} of {} late sends still old)",
        from[settled..]
            .iter()
            .filter(|f| *f != "v2@mg.example.com")
            .count(),
        from.len() - settled
    );
    assert!(
        from.iter().any(|f| f == "v2@mg.example.com"),
        "the new version was used"
    );

    // A broken plugin file: refused, the running plugin keeps serving.
    let broken = s.w.write("broken.wasm", "not a component");
    let v3 = v2.replace(
        &format!("plugin = \"{}\"", mailgun_wasm().display()),
        &format!("plugin = \"{}\"", broken.display()),
    );
    assert_ne!(v3, v2, "the test config names the plugin it replaces");
    std::fs::write(&config, &v3).expect("config v3");
    host.hangup();
    wait_for("the broken reload to be refused", WAIT, || {
        reload_count(&admin, "refused") == 1.0
    });
    let why = last_refusal(&host);
    assert!(
        why.contains("channels.email.plugin") && why.contains("broken.wasm"),
        "{why}"
    );

    // A change only a restart applies: refused, naming the key.
    let v4 = v2.replace("level = \"info\"", "level = \"debug\"");
    assert_ne!(v4, v2);
    std::fs::write(&config, &v4).expect("config v4");
    host.hangup();
    wait_for("the restart-only reload to be refused", WAIT, || {
        reload_count(&admin, "refused") == 2.0
    });
    let why = last_refusal(&host);
    assert!(
        why.contains("cannot change without a restart: log"),
        "{why}"
    );

    // Still serving, on the version applied last.
    publish(&s.t.topic, &[event("after-refusals", true, false)]);
    wait_for("the event after the refusals", WAIT, || {
        mailgun_event_ids(&s.mailgun)
            .iter()
            .any(|id| id == "after-refusals")
    });
    assert_eq!(
        senders(&s).last().map(String::as_str),
        Some("v2@mg.example.com")
    );

    // The plugin each channel runs, with the file's hash, in the metrics.
    let (_, text) = http_get(&format!("{admin}/metrics")).expect("metrics");
    let info = text
        .lines()
        .find(|l| l.starts_with("notify_plugin_info{") && l.contains("channel=\"email\""))
        .unwrap_or_else(|| panic!("no notify_plugin_info for email:\n{text}"));
    assert!(
        info.contains("plugin=\"mailgun\"") && info.contains("sha256=\""),
        "{info}"
    );
    assert!(info.ends_with(" 1"), "{info}");
}

#[test]
fn with_watch_a_replaced_plugin_file_is_reloaded_without_a_signal() {
    let s = setup("reload-watch", vec![Reply::new(200, MAILGUN_OK)], vec![]);
    let plugin = s.w.path().join("email.wasm");
    std::fs::copy(mailgun_wasm(), &plugin).expect("copy plugin");
    let config = s.config("");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace(
            &format!("plugin = \"{}\"", mailgun_wasm().display()),
            &format!("plugin = \"{}\"", plugin.display()),
        )
        .replacen("[ledger]\n", "[plugins]\nwatch = true\n\n[ledger]\n", 1);
    std::fs::write(&config, text).expect("config");
    let host = Host::start(&config);
    let admin = admin_url(&config);
    wait_for("the host to be ready", WAIT, || {
        http_get(&format!("{admin}/health/ready")).is_some_and(|(status, _)| status == 200)
    });
    assert_eq!(reload_count(&admin, "applied"), 0.0);

    // A deploy replaces the file (a new inode, as `cp` to a temp name and
    // `mv` do): the host notices within its 2 s poll and reloads.
    let staged = s.w.path().join("email.wasm.new");
    std::fs::copy(mailgun_wasm(), &staged).expect("stage");
    std::fs::rename(&staged, &plugin).expect("replace");
    wait_for("the watched reload", WAIT, || {
        reload_count(&admin, "applied") == 1.0
    });
    let applied = host.events("reloading config and plugins");
    assert_eq!(
        applied.last().map(|e| e["trigger"].clone()),
        Some("plugin file changed".into())
    );

    // And the channel still sends.
    publish(&s.t.topic, &[event("after-watch", true, false)]);
    wait_for("a send after the reload", WAIT, || {
        mailgun_event_ids(&s.mailgun)
            .iter()
            .any(|id| id == "after-watch")
    });
}
