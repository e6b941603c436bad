//! Each documented provider answer, classified by the real compiled plugin
//! through the real runtime: the table the pipeline's decisions rest on.
//! Answers about the account, its credentials or the sender are
//! `channel-down`; answers about one event are `permanent`.

use notify_host::channels::Channels;
use notify_host::config;
use notify_host::plugin::{Disposition, Header, HttpResponse};

use crate::harness::*;

fn shipped_channels() -> Channels {
    let env = shipped_env("https://api.mailgun.net", "https://api.twilio.com");
    let lookup = move |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = config::load(&root().join("config.toml"), &lookup).expect("shipped config loads");
    Channels::load(&config).expect("plugins load")
}

#[derive(Debug, PartialEq)]
enum Want {
    Delivered(Option<&'static str>),
    Retry(Option<u64>),
    Permanent(&'static str),
    ChannelDown(&'static str),
}

/// (status, headers, body, attempt, expected disposition)
type Case<'a> = (u16, &'a [(&'a str, &'a str)], &'a str, u32, Want);

fn check(channels: &Channels, channel: &str, cases: &[Case<'_>]) {
    let ch = channels.get(channel).expect("channel loaded");
    for (status, headers, body, attempt, want) in cases {
        let response = HttpResponse {
            status: *status,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        let got =
            futures_executor::block_on(ch.classify(&response, *attempt)).expect("classify runs");
        let ok = match (&got, want) {
            (Disposition::Delivered(d), Want::Delivered(id)) => {
                d.provider_message_id.as_deref() == *id
            }
            (Disposition::Retry(r), Want::Retry(after)) => r.after_ms == *after,
            (Disposition::Permanent(reason), Want::Permanent(needle))
            | (Disposition::ChannelDown(reason), Want::ChannelDown(needle)) => {
                reason.contains(needle)
            }
            _ => false,
        };
        assert!(ok, "{channel}: status {status} body {body:?} attempt {attempt}: got {got:?}, want {want:?}");
    }
}

#[test]
fn mailgun_answers_are_classified_per_its_docs() {
    let channels = shipped_channels();
    check(
        &channels,
        "email",
        &[
            (
                200,
                &[],
                r#"{"id":"<m1@mg>","message":"Queued. Thank you."}"#,
                1,
                Want::Delivered(Some("<m1@mg>")),
            ),
            (
                429,
                &[("retry-after", "30")],
                r#"{"message":"limit exceeded"}"#,
                1,
                Want::Retry(Some(30_000)),
            ),
            (
                429,
                &[],
                r#"{"message":"limit exceeded"}"#,
                1,
                Want::Retry(None),
            ),
            (
                500,
                &[],
                r#"{"message":"Internal Server Error"}"#,
                1,
                Want::Retry(None),
            ),
            (503, &[], "", 1, Want::Retry(None)),
            (
                400,
                &[],
                r#"{"message":"'to' parameter is not a valid address"}"#,
                1,
                Want::Permanent("'to' parameter is not a valid address"),
            ),
            // The API key, the account or the domain: the channel is down.
            (401, &[], "Forbidden", 1, Want::ChannelDown("401")),
            (
                403,
                &[],
                r#"{"message":"Domain not allowed"}"#,
                1,
                Want::ChannelDown("Domain not allowed"),
            ),
            (
                403,
                &[],
                r#"{"message":"Domain mg.example.com is not allowed to send: The domain is unverified and requires DNS configuration."}"#,
                1,
                Want::ChannelDown("unverified"),
            ),
            (
                400,
                &[],
                r#"{"message":"Domain mg.example.com is not allowed to send: account disabled"}"#,
                1,
                Want::ChannelDown("account disabled"),
            ),
            // One unauthorized recipient of a sandbox domain: the event's.
            (
                403,
                &[],
                r#"{"message":"Domain sandbox1.mailgun.org is not allowed to send: Free accounts are for test purposes only. Please upgrade or add the address to authorized recipients in Account Settings."}"#,
                1,
                Want::Permanent("authorized recipients"),
            ),
            (
                413,
                &[],
                r#"{"message":"too large"}"#,
                1,
                Want::Permanent("too large"),
            ),
            // Eventual consistency: a JSON 404 is retried a few times, then given up.
            (
                404,
                &[("content-type", "application/json")],
                r#"{"message":"Domain not found"}"#,
                1,
                Want::Retry(None),
            ),
            (
                404,
                &[("content-type", "application/json")],
                r#"{"message":"Domain not found"}"#,
                3,
                Want::Permanent("Domain not found"),
            ),
            (
                404,
                &[("content-type", "text/html")],
                "<html>not found</html>",
                1,
                Want::Permanent("404"),
            ),
        ],
    );
}

#[test]
fn twilio_answers_are_classified_per_its_docs() {
    let channels = shipped_channels();
    let err = |code: u32, msg: &str| {
        format!(
            r#"{{"code":{code},"message":"{msg}","more_info":"https://www.twilio.com/docs/errors/{code}","status":400}}"#
        )
    };
    let e21211 = err(21211, "Invalid 'To' Phone Number");
    let e21610 = err(21610, "Attempt to send to unsubscribed recipient");
    let e21408 = err(
        21408,
        "Permission to send an SMS has not been enabled for the region",
    );
    let e21617 = err(
        21617,
        "The concatenated message body exceeds the 1600 character limit",
    );
    let e20429 = r#"{"code":20429,"message":"Too Many Requests","status":400}"#;
    let e21212 = err(21212, "Invalid From Number (caller ID)");
    let e21606 = err(
        21606,
        "The From phone number provided is not a valid message-capable Twilio phone number",
    );
    let e21659 = err(
        21659,
        "From is not a Twilio phone number or Short Code country mismatch",
    );
    let e30002 = err(30002, "Account suspended");
    check(
        &channels,
        "sms",
        &[
            (
                201,
                &[],
                r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#,
                1,
                Want::Delivered(Some("SM0123456789abcdef0123456789abcdef")),
            ),
            (
                429,
                &[("retry-after", "2")],
                "{}",
                1,
                Want::Retry(Some(2000)),
            ),
            (400, &[], e20429, 1, Want::Retry(None)),
            (500, &[], "", 1, Want::Retry(None)),
            (503, &[], "", 1, Want::Retry(None)),
            (400, &[], &e21211, 1, Want::Permanent("21211")),
            (400, &[], &e21610, 1, Want::Permanent("21610")),
            (400, &[], &e21408, 1, Want::Permanent("21408")),
            (400, &[], &e21617, 1, Want::Permanent("21617")),
            // Per destination: stays with the event.
            (400, &[], &e21659, 1, Want::Permanent("21659")),
            // The account, its credentials or the sender: the channel is down.
            (
                401,
                &[],
                r#"{"code":20003,"message":"Authenticate"}"#,
                1,
                Want::ChannelDown("error 20003: Authenticate"),
            ),
            (403, &[], "", 1, Want::ChannelDown("403")),
            (
                403,
                &[],
                r#"{"code":20005,"message":"Account not active"}"#,
                1,
                Want::ChannelDown("error 20005"),
            ),
            (
                403,
                &[],
                r#"{"code":20008,"message":"Resource not accessible with Test Account Credentials"}"#,
                1,
                Want::ChannelDown("error 20008"),
            ),
            (400, &[], &e21212, 1, Want::ChannelDown("error 21212")),
            (400, &[], &e21606, 1, Want::ChannelDown("error 21606")),
            (400, &[], &e30002, 1, Want::ChannelDown("error 30002")),
            (
                404,
                &[],
                r#"{"code":20404,"message":"The requested resource was not found"}"#,
                1,
                Want::Permanent("404"),
            ),
        ],
    );
}

#[test]
fn classify_cli_prints_the_disposition() {
    let w = Workdir::new();
    let body = w.write("body.json", r#"{"message":"limit exceeded"}"#);
    let config = root().join("config.toml");
    let out = notify_host(
        &[
            "plugin",
            "classify",
            "--config",
            config.to_str().unwrap_or_default(),
            "--channel",
            "sms",
            "--status",
            "429",
            "--header",
            "Retry-After: 12",
            "--body",
            body.to_str().unwrap_or_default(),
        ],
        &shipped_env("https://api.mailgun.net", "https://api.twilio.com"),
        w.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = json_stdout(&out);
    assert_eq!(json["disposition"], "retry");
    assert_eq!(json["after_ms"], 12_000);
}

#[test]
fn classify_cli_prints_channel_down_with_its_reason() {
    let w = Workdir::new();
    let config = root().join("config.toml");
    for (channel, status, body, needle) in [
        (
            "email",
            "401",
            "Forbidden",
            "mailgun: HTTP 401 (API key refused): Forbidden",
        ),
        (
            "sms",
            "400",
            r#"{"code":21606,"message":"The From phone number provided is not a valid message-capable Twilio phone number"}"#,
            "twilio: error 21606",
        ),
    ] {
        let body = w.write("body.txt", body);
        let out = notify_host(
            &[
                "plugin",
                "classify",
                "--config",
                config.to_str().unwrap_or_default(),
                "--channel",
                channel,
                "--status",
                status,
                "--body",
                body.to_str().unwrap_or_default(),
            ],
            &shipped_env("https://api.mailgun.net", "https://api.twilio.com"),
            w.path(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let json = json_stdout(&out);
        assert_eq!(json["disposition"], "channel-down", "{channel}: {json}");
        let reason = json["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(needle), "{channel}: {reason}");
    }
}
