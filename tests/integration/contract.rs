//! Every released version of the `notify:channel` contract loads side by
//! side: the hostile plugin stays built for 0.1.0 (wit/0.1.0), the bundled
//! plugins are built for 0.2.0 (wit/), and one host serves both. A 0.1.0
//! plugin's `permanent` on an HTTP 401 comes back as `channel-down` (the host
//! owns the credentials); a component built for no supported version is
//! refused at load, naming the file and the versions.

use notify_host::channels::Channels;
use notify_host::config;
use notify_host::event;
use notify_host::plugin::{Disposition, HttpResponse, Message, PluginError, Purpose};

use crate::harness::*;

/// One host, two contract versions: mailgun (0.2.0) and three hostile
/// channels (0.1.0).
fn mixed_config(dir: &Workdir) -> std::path::PathBuf {
    let hostile = hostile_wasm();
    let old = |name: &str, behavior: &str| {
        format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"http://127.0.0.1:9\"\nsettings = {{ behavior = \"{behavior}\" }}\n"
        )
    };
    let text = [
        format!(
            "[channels.email]\nplugin = {:?}\nbase_url = \"http://127.0.0.1:9\"\nsettings = {{ domain = \"mg.example.com\", from = \"a@mg.example.com\" }}\n",
            mailgun_wasm()
        ),
        old("old", "ok"),
        old("old_status", "classify-by-status"),
        old("old_trap", "classify-trap"),
    ]
    .join("\n");
    dir.write("mixed.toml", &text)
}

fn mixed_channels(dir: &Workdir) -> Channels {
    let path = mixed_config(dir);
    let no_env = |_: &str| -> Option<String> { None };
    let config = config::load(&path, &no_env).expect("config loads");
    Channels::load(&config).expect("both contract versions load")
}

fn answer(status: u16) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn classify(channels: &Channels, channel: &str, status: u16) -> Result<Disposition, PluginError> {
    let ch = channels.get(channel).expect("channel");
    futures_executor::block_on(ch.classify(&answer(status), 1))
}

#[test]
fn both_contract_versions_load_in_one_host() {
    let dir = Workdir::new();
    let channels = mixed_channels(&dir);
    let version = |name: &str| channels.get(name).expect(name).plugin.contract_version();
    assert_eq!(version("email"), "0.2.0");
    assert_eq!(version("old"), "0.1.0");
    assert_eq!(version("old_status"), "0.1.0");

    // Both render, in one host, for a confirmation and (ignored by the
    // 0.1.0 plugin, the same texts for mailgun for now) a reminder.
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    let reminder = Message {
        purpose: Purpose::Reminder,
        reminder: Some("day-before".into()),
        useful_until: Some("2099-02-20T15:00:00Z".into()),
    };
    for name in ["email", "old"] {
        let ch = channels.get(name).expect(name);
        let confirmation = futures_executor::block_on(ch.render(&event)).expect("renders");
        let reminded =
            futures_executor::block_on(ch.render_message(&event, &reminder)).expect("renders");
        assert_eq!(confirmation.len(), 1, "{name}");
        assert_eq!(reminded.len(), 1, "{name}");
        assert_eq!(confirmation[0].url, reminded[0].url, "{name}");
    }
    let delivered = futures_executor::block_on(channels.get("email").expect("email").classify_for(
        &answer(200),
        1,
        Purpose::Reminder,
    ))
    .expect("classify runs");
    assert!(
        matches!(delivered, Disposition::Delivered(_)),
        "{delivered:?}"
    );
}

#[test]
fn check_config_shows_each_plugins_contract_version() {
    let dir = Workdir::new();
    let path = mixed_config(&dir);
    let out = notify_host(
        &[
            "check-config",
            "--config",
            path.to_str().unwrap_or_default(),
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("channel email: enabled, plugin mailgun")
            && text.contains("(notify:channel@0.2.0, "),
        "{text}"
    );
    assert!(
        text.contains("channel old: enabled, plugin hostile")
            && text.contains("(notify:channel@0.1.0, "),
        "{text}"
    );
}

#[test]
fn a_0_1_0_plugins_permanent_401_comes_back_as_channel_down() {
    let dir = Workdir::new();
    let channels = mixed_channels(&dir);
    match classify(&channels, "old", 401) {
        Ok(Disposition::ChannelDown(reason)) => {
            assert!(
                reason.starts_with(
                    "HTTP 401 treated as channel-level: the host owns the credentials (0.1.0 plugin)"
                ),
                "{reason}"
            );
            // The plugin's own words are kept for the operator.
            assert!(reason.ends_with("hostile: HTTP 401"), "{reason}");
        }
        other => panic!("401: {other:?}"),
    }
    // Nothing else a 0.1.0 plugin says is changed.
    assert_eq!(
        classify(&channels, "old", 403),
        Ok(Disposition::Permanent("hostile: HTTP 403".into()))
    );
    assert!(matches!(
        classify(&channels, "old", 202),
        Ok(Disposition::Delivered(_))
    ));
    match classify(&channels, "old_status", 503) {
        Ok(Disposition::Retry(r)) => {
            assert_eq!(r.after_ms, None);
            assert_eq!(r.reason, "hostile: HTTP 503");
        }
        other => panic!("503: {other:?}"),
    }
    assert!(matches!(
        classify(&channels, "old_status", 429),
        Ok(Disposition::Retry(_))
    ));
    assert!(matches!(
        classify(&channels, "old_status", 401),
        Ok(Disposition::ChannelDown(_))
    ));
    assert_eq!(
        classify(&channels, "old_status", 404),
        Ok(Disposition::Permanent("hostile: HTTP 404".into()))
    );
}

#[test]
fn a_0_1_0_plugin_that_traps_in_classify_is_contained() {
    let dir = Workdir::new();
    let channels = mixed_channels(&dir);
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    let ch = channels.get("old_trap").expect("channel");
    futures_executor::block_on(ch.render(&event)).expect("classify-trap renders as ok");
    match classify(&channels, "old_trap", 200) {
        Err(PluginError::Trap { call, message, .. }) => {
            assert_eq!(call, "classify");
            assert!(message.contains("deliberate trap in classify"), "{message}");
        }
        other => panic!("classify-trap: {other:?}"),
    }
    // The next call, on the same loaded plugin and on its neighbours, works.
    assert!(matches!(
        classify(&channels, "old", 200),
        Ok(Disposition::Delivered(_))
    ));
    assert!(matches!(
        classify(&channels, "email", 200),
        Ok(Disposition::Delivered(_))
    ));
}

#[test]
fn classify_cli_prints_a_0_1_0_plugins_401_as_channel_down() {
    let dir = Workdir::new();
    let path = mixed_config(&dir);
    let out = notify_host(
        &[
            "plugin",
            "classify",
            "--config",
            path.to_str().unwrap_or_default(),
            "--channel",
            "old",
            "--status",
            "401",
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = json_stdout(&out);
    assert_eq!(json["disposition"], "channel-down", "{json}");
    assert!(
        json["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("the host owns the credentials (0.1.0 plugin)"),
        "{json}"
    );
}

#[test]
fn render_cli_shows_the_contract_version() {
    let dir = Workdir::new();
    let path = mixed_config(&dir);
    let event = dir.write("event.json", SAMPLE_EVENT);
    for (channel, contract) in [("email", "0.2.0"), ("old", "0.1.0")] {
        let out = plugin_with_event("render", &path, channel, &event, &[], dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(json_stdout(&out)["plugin"]["contract"], contract);
    }
}

#[test]
fn a_component_of_no_supported_version_is_refused_naming_file_and_versions() {
    let dir = Workdir::new();
    let wrong = wasm("tests/plugins/not-a-channel.wasm");
    let path = dir.write(
        "wrong.toml",
        &format!("[channels.email]\nplugin = {wrong:?}\nbase_url = \"https://api.mailgun.net\"\n"),
    );
    let out = notify_host(
        &[
            "check-config",
            "--config",
            path.to_str().unwrap_or_default(),
        ],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains(&wrong.display().to_string()), "{text}");
    assert!(
        text.contains("this host loads notify:channel 0.2.0 and 0.1.0, and the component fits neither: no export `check-settings` found"),
        "{text}"
    );
}
