//! The binary as an operator meets it: --help, check-config on the shipped
//! config, the service starting and stopping, and what its logs show.

use crate::harness::*;

#[test]
fn help_lists_the_commands() {
    let out = notify_host(&["--help"], &[], &root());
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in ["run", "check-config", "plugin"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = notify_host(&["plugin", "--help"], &[], &root());
    for cmd in ["render", "classify", "send"] {
        assert!(stdout(&out).contains(cmd), "{}", stdout(&out));
    }
}

#[test]
fn shipped_config_checks_out_with_the_seed_environment() {
    let out = notify_host(
        &["check-config", "--config", "config.toml"],
        &shipped_env("https://api.mailgun.net", "https://api.twilio.com"),
        &root(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("channel email: enabled, plugin mailgun"),
        "{text}"
    );
    assert!(
        text.contains("channel sms: enabled, plugin twilio"),
        "{text}"
    );
    assert!(!text.contains(MAILGUN_KEY) && !text.contains(TWILIO_TOKEN));
}

#[test]
fn sms_can_be_on_hold_without_twilio_credentials() {
    let env: Vec<_> = shipped_env("https://api.mailgun.net", "")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("TWILIO_"))
        .chain([("NOTIFY_SMS_MODE", "hold".to_string())])
        .collect();
    let out = notify_host(&["check-config", "--config", "config.toml"], &env, &root());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("channel sms: on hold"),
        "{}",
        stdout(&out)
    );

    // With SMS on, the missing credentials are named.
    let env: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| *k != "NOTIFY_SMS_MODE")
        .collect();
    let out = notify_host(&["check-config", "--config", "config.toml"], &env, &root());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.toml: channels.sms.auth.password: environment variable `TWILIO_AUTH_TOKEN` is not set"), "{}", stderr(&out));
}

#[test]
fn render_rejects_an_invalid_event_naming_the_field() {
    let w = Workdir::new();
    let event = w.write(
        "bad.json",
        &SAMPLE_EVENT.replace("+15555550123", "555-0123"),
    );
    let out = notify_host(
        &[
            "plugin",
            "render",
            "--config",
            "config.toml",
            "--channel",
            "sms",
            "--event",
            event.to_str().unwrap_or_default(),
        ],
        &shipped_env("https://api.mailgun.net", "https://api.twilio.com"),
        &root(),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("appointment.phone_e164: not an E.164 number"),
        "{}",
        stderr(&out)
    );
}
