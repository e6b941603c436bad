//! The sandbox's scheduling and instance policy, against the real hostile
//! plugin: fresh instances share nothing, `reuse` keeps state within its
//! bounds and drops an instance that failed, the call gate lets no looping
//! plugin hold it and charges no waiting to a plugin's deadline, the compile cache is used and checked,
//! and a pinned SHA-256 refuses another file.

use std::time::Duration;

use notify_host::channels::{Channels, RenderError};
use notify_host::config;
use notify_host::event;
use notify_host::plugin::PluginError;

use crate::harness::*;

/// Channels of the hostile plugin, each `[channels.NAME]` given as
/// `(name, extra keys, settings)`, with `plugins_table` as `[plugins]`.
fn channels(dir: &Workdir, plugins_table: &str, list: &[(&str, &str, &str)]) -> Channels {
    let hostile = hostile_wasm();
    let mut text = format!("[plugins]\n{plugins_table}\n");
    for (name, extra, settings) in list {
        text.push_str(&format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"http://127.0.0.1:9\"\n{extra}\nsettings = {{ {settings} }}\n"
        ));
    }
    let config = config::parse(&text, dir.path(), &|_: &str| None).expect("config parses");
    Channels::load(&config).expect("plugins load")
}

fn render(
    c: &Channels,
    channel: &str,
) -> Result<Vec<notify_host::transport::OutboundRequest>, RenderError> {
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    futures_executor::block_on(c.get(channel).expect("channel").render(&event))
}

/// The `x-calls` header the `counter` behaviour renders: how many renders
/// the instance that served this one has done.
fn calls(c: &Channels, channel: &str) -> u32 {
    let requests = render(c, channel).expect("counter renders");
    requests[0]
        .headers
        .get("x-calls")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-calls header")
}

#[test]
fn fresh_instances_share_nothing_and_reused_ones_are_bounded() {
    let dir = Workdir::new();
    let c = channels(
        &dir,
        "",
        &[
            ("fresh", "", r#"behavior = "counter""#),
            (
                "reused",
                "instances = \"reuse\"\nreuse_instances = 1\nreuse_calls = 3",
                r#"behavior = "counter""#,
            ),
        ],
    );
    let fresh: Vec<u32> = (0..4).map(|_| calls(&c, "fresh")).collect();
    assert_eq!(
        fresh,
        [1, 1, 1, 1],
        "every call of a fresh channel starts clean"
    );
    // One idle instance, replaced after 3 calls.
    let reused: Vec<u32> = (0..7).map(|_| calls(&c, "reused")).collect();
    assert_eq!(reused, [1, 2, 3, 1, 2, 3, 1]);
}

#[test]
fn a_reused_instance_that_failed_is_never_used_again() {
    let dir = Workdir::new();
    let c = channels(
        &dir,
        "",
        &[(
            "reused",
            "instances = \"reuse\"\nreuse_instances = 1",
            r#"behavior = "counter", poison_event_id = "poison-1""#,
        )],
    );
    assert_eq!(calls(&c, "reused"), 1);
    assert_eq!(calls(&c, "reused"), 2);
    // The instance that counted 3 traps; it is dropped, not put back.
    let mut poison: serde_json::Value = serde_json::from_str(SAMPLE_EVENT).expect("sample");
    poison["event_id"] = "poison-1".into();
    let poison = event::parse(poison.to_string().as_bytes()).expect("poison event");
    match futures_executor::block_on(c.get("reused").expect("channel").render(&poison)) {
        Err(RenderError::Plugin(PluginError::Trap { .. })) => {}
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        calls(&c, "reused"),
        1,
        "a new instance serves the next call"
    );
}

fn gate_fixture(dir: &Workdir) -> Channels {
    // One call at a time, 300 ms deadlines.
    channels(
        dir,
        "deadline_ms = 300\nmax_concurrent_calls = 1",
        &[
            ("spin", "", r#"behavior = "loop""#),
            ("spin2", "", r#"behavior = "loop""#),
            ("good", "", r#"behavior = "ok""#),
        ],
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_looping_call_does_not_hold_the_gate_from_the_others() {
    let dir = Workdir::new();
    let c = gate_fixture(&dir);
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    // The loop takes the only permit first; the good call, asked 20 ms
    // later, gets it at the loop's next slice and finishes long before the
    // loop's deadline stops it.
    let order = std::sync::Mutex::new(Vec::new());
    let (spin, good) = runtime().block_on(async {
        let spin = async {
            let r = c.get("spin").expect("spin").render(&event).await;
            order.lock().expect("lock").push("spin");
            r
        };
        let good = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = c.get("good").expect("good").render(&event).await;
            order.lock().expect("lock").push("good");
            r
        };
        tokio::join!(spin, good)
    });
    assert!(good.is_ok(), "the good call runs in full: {good:?}");
    match spin {
        Err(RenderError::Plugin(PluginError::Deadline { .. })) => {}
        other => panic!("the looping call overruns its deadline, got {other:?}"),
    }
    assert_eq!(*order.lock().expect("lock"), ["good", "spin"]);
}

#[test]
fn the_deadline_counts_running_not_waiting() {
    let dir = Workdir::new();
    let c = gate_fixture(&dir);
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    // Two loops share one permit, a slice each in turn: each runs for its
    // 300 ms, so the second to stop has been alive for about twice that.
    // Were waiting charged, both would stop at about 300 ms of wall time.
    let (a, b) = runtime().block_on(async {
        let timed = |name: &'static str| {
            let c = &c;
            let event = &event;
            async move {
                let started = std::time::Instant::now();
                let r = c.get(name).expect("channel").render(event).await;
                (r, started.elapsed())
            }
        };
        tokio::join!(timed("spin"), timed("spin2"))
    });
    for (r, _) in [&a, &b] {
        assert!(
            matches!(r, Err(RenderError::Plugin(PluginError::Deadline { .. }))),
            "{r:?}"
        );
    }
    let last = a.1.max(b.1);
    assert!(
        last >= Duration::from_millis(450),
        "the later loop stopped after {last:?}: its waiting was charged to its deadline"
    );
}

#[test]
fn the_compile_cache_is_used_and_a_pin_refuses_another_file() {
    let dir = Workdir::new();
    let plugin = dir.path().join("plugin.wasm");
    std::fs::copy(hostile_wasm(), &plugin).expect("copy plugin");
    let write = |pin: &str| {
        dir.write(
            "config.toml",
            &format!(
                "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n[ledger]\npath = \"data/ledger.redb\"\n[channels.hook]\nplugin = \"plugin.wasm\"\nbase_url = \"http://127.0.0.1:9\"\n{pin}\nsettings = {{ behavior = \"ok\" }}\n"
            ),
        )
    };
    let config = write("");
    let check = || {
        notify_host(
            &["check-config", "--config", config.to_str().expect("utf-8")],
            &[],
            dir.path(),
        )
    };
    let first = check();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("; compiled in"),
        "{}",
        stdout(&first)
    );
    let cache = dir.path().join("data/plugin-cache");
    assert!(cache.is_dir(), "the cache sits beside the ledger file");
    let second = check();
    assert!(
        stdout(&second).contains("from the compile cache"),
        "{}",
        stdout(&second)
    );

    // Another file under the same name is compiled, not served stale.
    std::fs::copy(wasm("plugins/twilio.wasm"), &plugin).expect("swap plugin");
    let third = check();
    let text = format!("{}{}", stdout(&third), stderr(&third));
    assert!(!text.contains("from the compile cache"), "{text}");

    // A pin that is not the file's hash refuses it, naming both hashes.
    std::fs::copy(hostile_wasm(), &plugin).expect("restore plugin");
    let pinned = format!("sha256 = \"{}\"", "0".repeat(64));
    write(&pinned);
    let refused = check();
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert!(err.contains("channels.hook.plugin"), "{err}");
    assert!(
        err.contains(&"0".repeat(64)) && err.contains("SHA-256"),
        "{err}"
    );

    // The right pin loads.
    let sha = stdout(&second)
        .split("sha256 ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .expect("check-config prints the sha256")
        .to_string();
    write(&format!("sha256 = \"{sha}\""));
    let ok = check();
    assert!(ok.status.success(), "{}", stderr(&ok));
}
