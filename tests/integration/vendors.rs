//! The real plugins, through the real binary, against the vendors' specs and
//! against stand-in providers on 127.0.0.1.

use base64::Engine as _;
use serde_json::Value;

use crate::harness::*;
use crate::spec::{self, Operation};

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// Checks one rendered (or received) request against a vendor operation.
fn check_against(
    op: &Operation,
    method: &str,
    url: &url::Url,
    content_type: &str,
    fields: &[(String, String)],
) {
    assert_eq!(method, op.method, "method");
    let params = op
        .path_matches(url.path())
        .unwrap_or_else(|| panic!("path {} does not match {}", url.path(), op.path_template));
    for (name, schema) in &op.path_params {
        let value = params
            .get(name)
            .unwrap_or_else(|| panic!("path parameter {name} missing"));
        assert!(
            spec::matches_pattern(schema, value),
            "path parameter {name}={value} breaks {schema}"
        );
    }
    let media = content_type.split(';').next().unwrap_or_default().trim();
    assert!(
        op.content_types.iter().any(|c| c == media),
        "content type {media} not in {:?}",
        op.content_types
    );
    for required in &op.required {
        assert!(
            fields.iter().any(|(k, _)| k == required),
            "required field {required} missing from {fields:?}"
        );
    }
    for (name, value) in fields {
        assert!(
            op.documents(name),
            "field {name} is not in the vendor's spec"
        );
        if let Some(allowed) = op.enum_of(name) {
            assert!(
                allowed.contains(value),
                "{name}={value} not in the spec's enum {allowed:?}"
            );
        }
        if let Some(schema) = op.properties.get(name) {
            assert!(
                spec::matches_pattern(schema, value),
                "{name}={value} breaks the spec's pattern"
            );
        }
    }
}

fn render(channel: &str, env: &[(&str, String)]) -> Value {
    let w = Workdir::new();
    let event = w.write("event.json", SAMPLE_EVENT);
    let config = root().join("config.toml");
    let out = plugin_with_event("render", &config, channel, &event, env, w.path());
    assert!(
        out.status.success(),
        "render failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let json = json_stdout(&out);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    for secret in [MAILGUN_KEY, TWILIO_TOKEN] {
        assert!(!all.contains(secret), "a secret appeared in render output");
    }
    json
}

#[test]
fn mailgun_render_satisfies_the_vendor_spec() {
    let op = spec::mailgun_send();
    // Production defaults: no base URL override.
    let env: Vec<_> = shipped_env("", "")
        .into_iter()
        .filter(|(k, _)| !k.ends_with("_BASE_URL"))
        .collect();
    let json = render("email", &env);
    assert_eq!(json["plugin"]["name"], "mailgun");
    let requests = json["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let url = url::Url::parse(r["url"].as_str().expect("url")).expect("valid url");
    let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    assert!(
        op.servers.contains(&origin),
        "{origin} is not one of the vendor's servers {:?}",
        op.servers
    );
    assert_eq!(url.path(), "/v3/mg.example.com/messages");

    let content_type = header(r, "content-type").expect("content type");
    let fields = parse_multipart(
        content_type,
        r["body"].as_str().expect("text body").as_bytes(),
    );
    check_against(
        &op,
        r["method"].as_str().unwrap_or_default(),
        &url,
        content_type,
        &fields,
    );
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("to"), Some("user@example.com"));
    assert_eq!(field("from"), Some("Clinic <noreply@mg.example.com>"));
    assert_eq!(
        field("v:event_id"),
        Some("9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f")
    );
    assert_eq!(field("v:appointment_id"), Some("a1b2c3"));
    assert_eq!(field("o:tag"), Some("appointment-created"));
    assert!(
        field("text").is_some_and(|t| t.contains("a1b2c3") && t.contains("2099")),
        "text: {:?}",
        field("text")
    );

    // The vendor's scheme is HTTP Basic; the host attaches it, render shows it redacted.
    assert_eq!(op.security_scheme["scheme"], "basic");
    assert_eq!(header(r, "authorization"), Some("Basic [redacted]"));
}

#[test]
fn twilio_render_satisfies_the_vendor_spec() {
    let op = spec::twilio_create_message();
    let env: Vec<_> = shipped_env("", "")
        .into_iter()
        .filter(|(k, _)| !k.ends_with("_BASE_URL"))
        .collect();
    let json = render("sms", &env);
    assert_eq!(json["plugin"]["name"], "twilio");
    let r = &json["requests"][0];
    let url = url::Url::parse(r["url"].as_str().expect("url")).expect("valid url");
    let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    assert!(
        op.servers.contains(&origin),
        "{origin} not in {:?}",
        op.servers
    );
    let content_type = header(r, "content-type").expect("content type");
    let fields = parse_form(r["body"].as_str().expect("text body").as_bytes());
    check_against(
        &op,
        r["method"].as_str().unwrap_or_default(),
        &url,
        content_type,
        &fields,
    );
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("To"), Some("+15555550123"));
    assert_eq!(field("From"), Some("+15005550006"));
    let body = field("Body").expect("Body");
    assert!(
        body.contains("a1b2c3") && body.chars().count() <= 1600,
        "{body}"
    );
    assert_eq!(op.security_scheme["scheme"], "basic");
    assert_eq!(header(r, "authorization"), Some("Basic [redacted]"));
}

/// Sends the sample event for real, once, through `plugin send`, to a stand-in.
fn send(channel: &str, reply: Reply) -> (std::process::Output, Vec<Recorded>) {
    let provider = StandIn::start(vec![reply]);
    let w = Workdir::new();
    let event = w.write("event.json", SAMPLE_EVENT);
    let config = root().join("config.toml");
    let out = plugin_with_event(
        "send",
        &config,
        channel,
        &event,
        &shipped_env(&provider.url(), &provider.url()),
        w.path(),
    );
    (out, provider.received())
}

fn basic_credentials(r: &Recorded) -> String {
    let value = r.header("authorization").expect("authorization header");
    let token = value.strip_prefix("Basic ").expect("basic auth");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(token)
            .expect("base64"),
    )
    .expect("utf8")
}

#[test]
fn mailgun_send_reaches_the_provider_as_documented() {
    let (out, received) = send(
        "email",
        Reply::new(
            200,
            r#"{"id":"<20260220.1@mg.example.com>","message":"Queued. Thank you."}"#,
        ),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(received.len(), 1);
    let r = &received[0];
    let url = url::Url::parse(&format!("http://x{}", r.path)).expect("url");
    let content_type = r.header("content-type").expect("content type");
    let fields = parse_multipart(&content_type, &r.body);
    check_against(
        &spec::mailgun_send(),
        &r.method,
        &url,
        &content_type,
        &fields,
    );
    assert_eq!(basic_credentials(r), format!("api:{MAILGUN_KEY}"));
    let json = json_stdout(&out);
    assert_eq!(json["results"][0]["classified"]["disposition"], "delivered");
    assert_eq!(
        json["results"][0]["classified"]["provider_message_id"],
        "<20260220.1@mg.example.com>"
    );
}

#[test]
fn twilio_send_reaches_the_provider_as_documented() {
    let (out, received) = send(
        "sms",
        Reply::new(
            201,
            r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#,
        ),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(received.len(), 1);
    let r = &received[0];
    let url = url::Url::parse(&format!("http://x{}", r.path)).expect("url");
    let content_type = r.header("content-type").expect("content type");
    check_against(
        &spec::twilio_create_message(),
        &r.method,
        &url,
        &content_type,
        &parse_form(&r.body),
    );
    assert_eq!(basic_credentials(r), format!("{TWILIO_SID}:{TWILIO_TOKEN}"));
    assert_eq!(
        json_stdout(&out)["results"][0]["classified"]["provider_message_id"],
        "SM0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn a_provider_too_slow_for_the_timeout_is_a_retry() {
    // The shipped env sets a 2 s timeout; the stand-in answers after 4 s.
    let started = std::time::Instant::now();
    let (out, received) = send(
        "email",
        Reply::new(200, r#"{"id":"late"}"#).delayed(std::time::Duration::from_secs(4)),
    );
    assert_eq!(received.len(), 1);
    assert!(!out.status.success());
    let json = json_stdout(&out);
    assert_eq!(json["results"][0]["disposition"], "retry");
    assert!(
        json["results"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer within 2000 ms"),
        "{json}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the host waited for the slow answer"
    );
}

#[test]
fn provider_errors_through_send_are_classified() {
    let (out, _) = send(
        "sms",
        Reply::new(
            400,
            r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let json = json_stdout(&out);
    assert_eq!(json["results"][0]["classified"]["disposition"], "permanent");
    let reason = json["results"][0]["classified"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("21211") && reason.contains("Invalid 'To' Phone Number"),
        "{reason}"
    );

    // The API key is the host's: a refused key is the channel's problem.
    let (out, _) = send("email", Reply::new(401, "Forbidden"));
    assert_eq!(
        json_stdout(&out)["results"][0]["classified"]["disposition"],
        "channel-down"
    );
    let (out, _) = send(
        "email",
        Reply::new(429, r#"{"message":"limit exceeded"}"#).header("retry-after", "7"),
    );
    let json = json_stdout(&out);
    assert_eq!(json["results"][0]["classified"]["disposition"], "retry");
    assert_eq!(json["results"][0]["classified"]["after_ms"], 7000);
}
