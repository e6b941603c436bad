//! Misbehaving plugins are stopped or refused with a clear error, and the
//! next call to a good plugin works. The hostile plugin is a real component
//! (tests/plugins/hostile) whose misbehaviour is chosen by its settings.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use notify_host::channels::{Channels, RenderError};
use notify_host::config;
use notify_host::event;
use notify_host::plugin::PluginError;
use notify_host::transport::Refusal;

use crate::harness::*;

struct Fixture {
    channels: Channels,
    listener: TcpListener,
    secret_file: std::path::PathBuf,
    _dir: Workdir,
}

fn fixture() -> Fixture {
    let dir = Workdir::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let secret_file = dir.write("secret.txt", "top secret file contents");
    let hostile = hostile_wasm();
    let channel = |name: &str, extra: &str, settings: &str| {
        format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"http://127.0.0.1:9\"\n{extra}\nsettings = {{ {settings} }}\n"
        )
    };
    let target = listener.local_addr().expect("addr").to_string();
    let text = [
        "[plugins]\ndeadline_ms = 200\nmemory_limit_mib = 16\noutput_limit_kib = 64\n".to_string(),
        channel("loop", "", r#"behavior = "loop""#),
        channel("hog", "", r#"behavior = "hog""#),
        channel("trap", "", r#"behavior = "trap""#),
        channel("flood", "", r#"behavior = "stdout-flood""#),
        channel("socket", "", &format!(r#"behavior = "socket", target = "{target}""#)),
        channel("file", "", &format!(r#"behavior = "read-file", path = {:?}"#, secret_file.display().to_string())),
        channel("env", "", r#"behavior = "read-env""#),
        channel("foreign", "", r#"behavior = "foreign-host""#),
        channel(
            "setauth",
            r#"auth = { type = "bearer", token = "${HOSTILE_TEST_TOKEN}" }"#,
            r#"behavior = "set-auth""#,
        ),
        channel("good", "", r#"behavior = "ok""#),
        format!(
            "[channels.email]\nplugin = {:?}\nbase_url = \"http://127.0.0.1:9\"\nsettings = {{ domain = \"mg.example.com\", from = \"a@mg.example.com\" }}\n",
            mailgun_wasm()
        ),
    ]
    .join("\n");
    let env = |name: &str| (name == "HOSTILE_TEST_TOKEN").then(|| "token-abc".to_string());
    let config = config::parse(&text, dir.path(), &env).expect("config parses");
    let channels = Channels::load(&config).expect("all plugins load");
    Fixture {
        channels,
        listener,
        secret_file,
        _dir: dir,
    }
}

fn render(
    f: &Fixture,
    channel: &str,
) -> Result<Vec<notify_host::transport::OutboundRequest>, RenderError> {
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    futures_executor::block_on(f.channels.get(channel).expect("channel").render(&event))
}

/// The host still serves: a good plugin renders right after.
fn good_plugins_still_work(f: &Fixture) {
    let requests = render(f, "email").expect("mailgun still renders");
    assert_eq!(requests.len(), 1);
    let requests = render(f, "good").expect("well-behaved hostile still renders");
    assert_eq!(requests[0].url.path(), "/hook");
}

#[test]
fn every_hostile_plugin_is_contained() {
    let f = fixture();

    let started = Instant::now();
    match render(&f, "loop") {
        Err(RenderError::Plugin(PluginError::Deadline { deadline, .. })) => {
            assert_eq!(deadline, Duration::from_millis(200))
        }
        other => panic!("endless loop: {other:?}"),
    }
    // Stopped near its 200 ms deadline, not left running.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "loop ran {:?}",
        started.elapsed()
    );
    good_plugins_still_work(&f);

    match render(&f, "hog") {
        Err(RenderError::Plugin(PluginError::MemoryLimit {
            limit, requested, ..
        })) => {
            assert_eq!(limit, 16 * 1024 * 1024);
            assert!(requested > limit);
        }
        other => panic!("memory hog: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "trap") {
        Err(RenderError::Plugin(PluginError::Trap { message, .. })) => {
            assert!(
                message.contains("deliberate trap"),
                "the panic message reaches the error: {message}"
            )
        }
        other => panic!("trap: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "flood") {
        Err(RenderError::Plugin(PluginError::OutputLimit { limit, .. })) => {
            assert_eq!(limit, 64 * 1024)
        }
        other => panic!("stdout flood: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "socket") {
        Err(RenderError::Rejected { reason, .. }) => {
            assert!(reason.starts_with("socket refused"), "{reason}")
        }
        other => panic!("socket: {other:?}"),
    }
    match f.listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the plugin reached the listener: {other:?}"),
    }

    match render(&f, "file") {
        Err(RenderError::Rejected { reason, .. }) => {
            assert!(reason.starts_with("file refused"), "{reason}")
        }
        other => panic!("read {}: {other:?}", f.secret_file.display()),
    }

    match render(&f, "env") {
        Err(RenderError::Rejected { reason, .. }) => assert_eq!(reason, "environment is empty"),
        other => panic!("environment: {other:?}"),
    }

    match render(&f, "foreign") {
        Err(RenderError::Refused(Refusal::HostNotAllowed { origin, .. })) => {
            assert_eq!(origin, "https://evil.example.com:443")
        }
        other => panic!("foreign host: {other:?}"),
    }

    match render(&f, "setauth") {
        Err(RenderError::Refused(Refusal::ReservedHeader(name))) => {
            assert!(name.eq_ignore_ascii_case("authorization"))
        }
        other => panic!("plugin-set auth: {other:?}"),
    }

    good_plugins_still_work(&f);
}

#[test]
fn instances_do_not_leak_between_calls() {
    // Many calls in a row on one loaded plugin: each gets a fresh instance
    // (the pool would run dry, or state would pile up, otherwise).
    let f = fixture();
    for _ in 0..300 {
        render(&f, "good").expect("renders");
    }
    match render(&f, "trap") {
        Err(RenderError::Plugin(PluginError::Trap { .. })) => {}
        other => panic!("{other:?}"),
    }
    render(&f, "good").expect("a trap leaves nothing behind");
}
