//! The status API (`/v1`) and the `deliveries` CLI against the real host:
//! the bearer gate, masked contact data, cursor pagination while
//! deliveries arrive, the OpenAPI document checked by a real validator and
//! fuzzed by schemathesis.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::kafka_harness::*;
use crate::pipeline::{setup, Setup};

/// Provider answers that repeat the recipient: what the ledger keeps of
/// them (the snippet) must come back masked.
const MAILGUN_OK: &str =
    r#"{"id":"<m@mg>","message":"Queued. Thank you.","to":"user@example.com"}"#;
const TWILIO_OK: &str =
    r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","to":"+15555550123"}"#;
const WAIT: Duration = Duration::from_secs(60);

/// The raw contact data of [`event`]; no API answer may hold any of it.
const RAW_CONTACT: [&str; 3] = ["user@example.com", "+15555550123", "5555550123"];

fn assert_masked(body: &str) {
    for raw in RAW_CONTACT {
        assert!(!body.contains(raw), "{raw} in an API answer: {body}");
    }
}

/// A GET with [`API_TOKEN`]: (status, content type, body).
fn get(url: &str) -> (u16, String, String) {
    api_request("GET", url, Some(API_TOKEN)).unwrap_or_else(|| panic!("GET {url}: no answer"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A problem+json answer with `status`, parsed.
fn problem(answer: &(u16, String, String), status: u16) -> Value {
    let (got, content_type, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    let p = json(body);
    assert_eq!(p["status"], status, "{body}");
    assert!(
        p["title"].is_string() && p["detail"].is_string() && p["type"].is_string(),
        "{body}"
    );
    p
}

/// The host of `s` with the API on (token [`API_TOKEN`]), `edit` applied to
/// its config text first; returns it with its admin URL.
fn host_with(s: &Setup, edit: impl FnOnce(String) -> String) -> (Host, String) {
    let config = with_api_token(&s.config(""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, edit(text)).expect("config");
    let admin = admin_url(&config);
    let host = Host::start_with_env(&config, &api_env());
    wait_for("the admin server", WAIT, || {
        http_get(&format!("{admin}/health/live")).is_some()
    });
    (host, admin)
}

fn ok_setup(name: &str) -> Setup {
    setup(
        name,
        vec![Reply::new(200, MAILGUN_OK)],
        vec![Reply::new(201, TWILIO_OK)],
    )
}

/// A tool test-deps.sh installs: from its variable, else where it puts it.
/// Missing is a failure, not a skip: the suite must check the API.
fn tool(var: &str, name: &str) -> PathBuf {
    let path = std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".tools/api-venv/bin").join(name));
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test.sh (scripts/test-deps.sh installs it and sets {var})",
        path.display()
    );
    path
}

#[test]
fn the_api_needs_the_bearer_token_while_health_and_metrics_stay_open() {
    let s = ok_setup("api-auth");
    let (host, admin) = host_with(&s, |t| t);
    let wrong = "not-the-token-0123456789";
    for path in [
        "/v1/deliveries",
        "/v1/events/e-1",
        "/v1/appointments/a-1/deliveries",
        "/v1/openapi.json",
        "/v1/no-such-path",
    ] {
        let url = format!("{admin}{path}");
        for token in [None, Some(wrong)] {
            let (status, content_type, body) = api_request("GET", &url, token).expect("answer");
            let p = problem(&(status, content_type, body.clone()), 401);
            assert_eq!(p["instance"], path, "{body}");
            assert!(!body.contains(API_TOKEN), "{body}");
        }
        // The challenge header.
        let challenge = runtime().block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .send()
                .await
                .expect("answer");
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{path}: {challenge:?}"
        );
    }
    let post =
        api_request("POST", &format!("{admin}/v1/channels/email/release"), None).expect("answer");
    problem(&post, 401);

    // The right token opens it; the scheme is case-insensitive.
    let (status, content_type, body) = get(&format!("{admin}/v1/deliveries"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    assert_eq!(json(&body)["deliveries"], Value::Array(vec![]));
    let lower = runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("{admin}/v1/deliveries"))
            .header("authorization", format!("bearer {API_TOKEN}"))
            .send()
            .await
            .expect("answer")
            .status()
            .as_u16()
    });
    assert_eq!(lower, 200);

    // Health and metrics need no token.
    assert_eq!(
        http_get(&format!("{admin}/health/live")).map(|r| r.0),
        Some(200)
    );
    assert!(http_get(&format!("{admin}/health/ready")).is_some_and(|r| r.0 == 200 || r.0 == 503));
    assert_eq!(
        http_get(&format!("{admin}/metrics")).map(|r| r.0),
        Some(200)
    );

    let logs = host.log_text();
    assert!(!logs.contains(API_TOKEN), "the token is never logged");
    assert!(!logs.contains(wrong), "a wrong token is never logged");
}

#[test]
fn without_a_token_configured_every_v1_path_is_off() {
    let s = ok_setup("api-off");
    let config = s.config("");
    let admin = admin_url(&config);
    // NOTIFY_ADMIN_TOKEN in the environment changes nothing: the config
    // does not ask for it.
    let _host = Host::start_with_env(&config, &api_env());
    wait_for("the admin server", WAIT, || {
        http_get(&format!("{admin}/health/live")).is_some()
    });
    for path in [
        "/v1/deliveries",
        "/v1/events/e-1",
        "/v1/openapi.json",
        "/v1",
        "/v1/anything/else",
    ] {
        for token in [None, Some(API_TOKEN)] {
            let answer = api_request("GET", &format!("{admin}{path}"), token).expect("answer");
            let p = problem(&answer, 404);
            assert_eq!(p["type"], "urn:notify-host:problem:api-off", "{path}");
        }
    }
    let answer = api_request(
        "POST",
        &format!("{admin}/v1/channels/email/release"),
        Some(API_TOKEN),
    )
    .expect("answer");
    problem(&answer, 404);
    assert_eq!(
        http_get(&format!("{admin}/health/live")).map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http_get(&format!("{admin}/metrics")).map(|r| r.0),
        Some(200)
    );

    // The CLI says what to do.
    let o = deliveries_cli(&["list"], &admin, Some(API_TOKEN));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the status API is off"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("admin.token"), "{}", stderr(&o));
}

#[test]
fn deliveries_of_the_pipeline_read_back_masked_from_every_endpoint() {
    let s = ok_setup("api-read");
    let (_host, admin) = host_with(&s, |t| t);
    publish(
        &s.t.topic,
        &[
            event("api-both", true, true),
            event("api-email", true, false),
        ],
    );
    s.wait_committed(2);

    let answer = get(&format!("{admin}/v1/events/api-both"));
    assert_eq!(answer.0, 200, "{}", answer.2);
    assert_eq!(answer.1, "application/json");
    assert_masked(&answer.2);
    let v = json(&answer.2);
    assert_eq!(v["event_id"], "api-both");
    let deliveries = v["deliveries"].as_array().expect("deliveries");
    let mut channels: Vec<&str> = deliveries
        .iter()
        .map(|d| d["channel"].as_str().unwrap_or_default())
        .collect();
    channels.sort_unstable();
    assert_eq!(channels, ["email", "sms"], "{v}");
    for d in deliveries {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["purpose"], "confirmation", "{d}");
        assert_eq!(d["appointment_id"], "appt-api-both", "{d}");
        assert_eq!(d["attempt_count"], 1, "{d}");
        let attempt = &d["attempts"][0];
        assert_eq!(attempt["outcome"], "delivered", "{d}");
        assert!(attempt["latency_ms"].is_u64(), "{d}");
        assert!(
            attempt["snippet"].is_string(),
            "the provider's answer is kept: {d}"
        );
        match d["channel"].as_str() {
            Some("email") => {
                assert_eq!(d["recipient"]["email"], "u***@example.com", "{d}");
                assert_eq!(attempt["provider_status"], 200, "{d}");
            }
            _ => {
                let phone = d["recipient"]["phone"].as_str().unwrap_or_default();
                assert!(phone.starts_with("+1") && phone.ends_with("0123"), "{d}");
                assert_eq!(attempt["provider_status"], 201, "{d}");
            }
        }
    }

    let answer = get(&format!("{admin}/v1/appointments/appt-api-both/deliveries"));
    assert_eq!(answer.0, 200, "{}", answer.2);
    assert_masked(&answer.2);
    let v = json(&answer.2);
    assert_eq!(v["appointment_id"], "appt-api-both");
    assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(2), "{v}");
    // An appointment without deliveries is an empty list, not an error.
    let answer = get(&format!("{admin}/v1/appointments/appt-none/deliveries"));
    assert_eq!(answer.0, 200, "{}", answer.2);
    assert_eq!(json(&answer.2)["deliveries"], Value::Array(vec![]));

    let answer = get(&format!("{admin}/v1/deliveries"));
    assert_eq!(answer.0, 200, "{}", answer.2);
    assert_masked(&answer.2);
    let v = json(&answer.2);
    assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(v.get("next_cursor").is_none(), "one page: {v}");
    let filtered = json(
        &get(&format!(
            "{admin}/v1/deliveries?channel=sms&state=delivered&purpose=confirmation"
        ))
        .2,
    );
    assert_eq!(
        filtered["deliveries"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );
    let none = json(&get(&format!("{admin}/v1/deliveries?state=held")).2);
    assert_eq!(none["deliveries"], Value::Array(vec![]));
    let future = json(&get(&format!("{admin}/v1/deliveries?since=2999-01-01T00:00:00Z")).2);
    assert_eq!(future["deliveries"], Value::Array(vec![]));

    // Errors: problem+json naming the parameter.
    let p = problem(&get(&format!("{admin}/v1/events/no-such-event")), 404);
    assert_eq!(p["instance"], "/v1/events/no-such-event");
    for (query, parameter) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("state=sent", "state"),
        ("purpose=promo", "purpose"),
        ("since=yesterday", "since"),
        ("until=2026-02-13", "until"),
        ("stat=held", "stat"),
    ] {
        let p = problem(&get(&format!("{admin}/v1/deliveries?{query}")), 400);
        assert_eq!(p["parameter"], parameter, "{query}: {p}");
    }
    let p = problem(&get(&format!("{admin}/v1/deliveries?state=sent")), 400);
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("dead_lettered"),
        "{p}"
    );
    assert_eq!(p["allowed"].as_array().map(Vec::len), Some(10), "{p}");
    let p = problem(&get(&format!("{admin}/v1/events/api-both?verbose=1")), 400);
    assert_eq!(p["parameter"], "verbose");
    let answer = api_request(
        "DELETE",
        &format!("{admin}/v1/events/api-both"),
        Some(API_TOKEN),
    )
    .expect("answer");
    problem(&answer, 405);
}

#[test]
fn paging_sees_every_delivery_once_in_a_stable_order_while_more_arrive() {
    const EVENTS: usize = 2_500; // two deliveries each: 5,000
    const MORE: usize = 500; // 1,000 more during the walk
    let started = Instant::now();
    let s = ok_setup("api-pages");
    let (_host, admin) = host_with(&s, |t| t);
    let payloads = |prefix: &str, n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| event(&format!("{prefix}-{i:05}"), true, true))
            .collect()
    };
    publish_batched(&s.t.topic, &payloads("pg", EVENTS));
    wait_for("5,000 deliveries", Duration::from_secs(90), || {
        s.committed() == Some(EVENTS as i64)
    });
    let first_done = started.elapsed();

    let page_url = |cursor: Option<&str>| match cursor {
        Some(c) => format!("{admin}/v1/deliveries?limit=100&cursor={c}"),
        None => format!("{admin}/v1/deliveries?limit=100"),
    };
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut a_cursor = None;
    loop {
        let (status, _, body) = get(&page_url(cursor.as_deref()));
        assert_eq!(status, 200, "{body}");
        let page = json(&body);
        let deliveries = page["deliveries"].as_array().expect("deliveries");
        assert!(deliveries.len() <= 100);
        for d in deliveries {
            seen.push((
                d["id"].as_u64().expect("id"),
                d["event_id"].as_str().unwrap_or_default().to_string(),
                d["channel"].as_str().unwrap_or_default().to_string(),
            ));
        }
        pages += 1;
        if pages == 2 {
            // More arrive: wait until the ledger has some of them, so the
            // rest of the walk runs while they are written.
            let newest_before = seen[0].0;
            publish_batched(&s.t.topic, &payloads("more", MORE));
            wait_for("new deliveries during the walk", WAIT, || {
                let v = json(&get(&format!("{admin}/v1/deliveries?limit=1")).2);
                v["deliveries"][0]["id"]
                    .as_u64()
                    .is_some_and(|id| id > newest_before)
            });
        }
        match page["next_cursor"].as_str() {
            Some(next) => {
                a_cursor.get_or_insert_with(|| next.to_string());
                cursor = Some(next.to_string());
            }
            None => break,
        }
    }
    let arrived_during_walk = {
        let v = json(&get(&format!("{admin}/v1/deliveries?limit=500")).2);
        v["deliveries"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| {
                        d["event_id"]
                            .as_str()
                            .is_some_and(|e| e.starts_with("more-"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        arrived_during_walk > 0,
        "deliveries arrived during the walk"
    );

    // Every delivery that existed when the walk began, exactly once, ids
    // strictly decreasing; none of those that arrived meanwhile.
    assert_eq!(seen.len(), 2 * EVENTS, "{pages} pages");
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "ids strictly decreasing"
    );
    let keys: HashSet<(String, String)> = seen
        .iter()
        .map(|(_, e, c)| (e.clone(), c.clone()))
        .collect();
    assert_eq!(keys.len(), 2 * EVENTS, "no delivery twice");
    for i in 0..EVENTS {
        for channel in ["email", "sms"] {
            assert!(
                keys.contains(&(format!("pg-{i:05}"), channel.to_string())),
                "pg-{i:05}/{channel} seen"
            );
        }
    }
    assert_eq!(pages, 50);

    // A cursor edited by hand, or reused with other filters: 400 naming it.
    let good = a_cursor.expect("a cursor");
    let mut tampered: Vec<char> = good.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for url in [
        page_url(Some(&tampered)),
        page_url(Some("bm90LWEtY3Vyc29y")),
        format!("{admin}/v1/deliveries?limit=100&channel=sms&cursor={good}"),
    ] {
        let p = problem(&get(&url), 400);
        assert_eq!(p["parameter"], "cursor", "{url}: {p}");
    }
    s.wait_committed((EVENTS + MORE) as i64);
    eprintln!(
        "paging: 5,000 deliveries through the pipeline in {first_done:?}, whole test {:?}",
        started.elapsed()
    );
}

#[test]
fn the_served_openapi_document_passes_openapi_spec_validator() {
    let validator = tool("NOTIFY_OPENAPI_SPEC_VALIDATOR", "openapi-spec-validator");
    let s = ok_setup("api-doc");
    let (_host, admin) = host_with(&s, |t| t);
    let (status, content_type, body) = get(&format!("{admin}/v1/openapi.json"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    let doc = json(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/events/{event_id}",
        "/v1/appointments/{appointment_id}/deliveries",
        "/v1/deliveries",
        "/v1/channels/{channel}/release",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    let file = s.w.write("openapi.json", &body);
    let out = Command::new(&validator)
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Schemathesis's settings for this API.
/// - A `cursor` the server did not issue is refused (400) although the
///   document can only call it a string: for the list, 400 counts as an
///   accepted answer to data the schema allows.
/// - Path parameters come from the records the test made most of the time,
///   so the fuzzing reaches real deliveries, a release (email, on), a
///   refused one (sms, on hold) and an unknown channel, not only 404s.
///
/// Everything else keeps the defaults.
const SCHEMATHESIS_TOML: &str = r#"
[dictionaries.events]
values = ["fz-1", "fz-2"]
[dictionaries.appointments]
values = ["appt-fz-1", "appt-fz-2"]
[dictionaries.channels]
values = ["email", "sms", "push"]

[[operations]]
include-path = "/v1/deliveries"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404"]

[[operations]]
include-path = "/v1/events/{event_id}"
parameters = { "path.event_id" = { dictionary = "events", probability = 0.7 } }

[[operations]]
include-path = "/v1/appointments/{appointment_id}/deliveries"
parameters = { "path.appointment_id" = { dictionary = "appointments", probability = 0.7 } }

[[operations]]
include-path = "/v1/channels/{channel}/release"
parameters = { "path.channel" = { dictionary = "channels", probability = 0.8 } }
"#;

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let st = tool("NOTIFY_SCHEMATHESIS", "st");
    let s = ok_setup("api-fuzz");
    // sms on hold: a release of it is the documented 409.
    let (_host, admin) = host_with(&s, |t| {
        t.replacen("[channels.sms]\n", "[channels.sms]\nmode = \"hold\"\n", 1)
    });
    publish(
        &s.t.topic,
        &[event("fz-1", true, true), event("fz-2", true, false)],
    );
    s.wait_committed(2);
    let config = s.w.write("schemathesis.toml", SCHEMATHESIS_TOML);
    let started = Instant::now();
    let out = Command::new(&st)
        .current_dir(s.w.path())
        .args(["--config-file"])
        .arg(&config)
        .args(["run", &format!("{admin}/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {API_TOKEN}")])
        .args(["--checks", "all"])
        .args(["--max-examples", "100"])
        .args(["--seed", "1"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(
        report.contains("Tested: 6") && report.contains("No issues found"),
        "it tested the six operations:\n{report}"
    );
    eprintln!("schemathesis in {:?}:\n{report}", started.elapsed());
}

#[test]
fn release_is_refused_for_an_unknown_or_paused_channel_and_reports_otherwise() {
    let s = ok_setup("api-release");
    let (_host, admin) = host_with(&s, |t| {
        t.replacen("[channels.sms]\n", "[channels.sms]\nmode = \"hold\"\n", 1)
    });
    let post = |path: &str| {
        api_request("POST", &format!("{admin}{path}"), Some(API_TOKEN)).expect("answer")
    };
    let p = problem(&post("/v1/channels/push/release"), 404);
    assert!(
        p["detail"].as_str().unwrap_or_default().contains("email"),
        "{p}"
    );
    let p = problem(&post("/v1/channels/sms/release?dry_run=true"), 409);
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("mode = \"on\"") && detail.contains("restart"),
        "{p}"
    );
    let p = problem(&post("/v1/channels/email/release?dry_run=maybe"), 400);
    assert_eq!(p["parameter"], "dry_run");

    let (status, _, body) = post("/v1/channels/email/release?dry_run=true");
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["channel"], "email");
    assert_eq!(report["held"], 0);
    assert_eq!(report["dry_run"], true);

    // GET on the release path: 405 naming the method it takes.
    let allow = runtime().block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{admin}/v1/channels/email/release"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("answer");
        (
            r.status().as_u16(),
            r.headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        )
    });
    assert_eq!(allow.0, 405);
    assert_eq!(allow.1.as_deref(), Some("POST"));

    // The CLI's release.
    let o = deliveries_cli(
        &["release", "--channel", "email", "--dry-run"],
        &admin,
        Some(API_TOKEN),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("channel email: 0 held"),
        "{}",
        stdout(&o)
    );
    let o = deliveries_cli(&["release", "--channel", "sms"], &admin, Some(API_TOKEN));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("mode = \"on\""), "{}", stderr(&o));
}

/// `notify-host deliveries ARGS --url ADMIN` with the token in the
/// environment (or none).
fn deliveries_cli(args: &[&str], admin: &str, token: Option<&str>) -> std::process::Output {
    let mut all = vec!["deliveries"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", admin]);
    let env: Vec<(&str, String)> = token
        .map(|t| vec![("NOTIFY_ADMIN_TOKEN", t.to_string())])
        .unwrap_or_default();
    notify_host(&all, &env, Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn the_deliveries_cli_shows_and_lists_through_the_api() {
    let s = ok_setup("api-cli");
    let (_host, admin) = host_with(&s, |t| t);
    publish(
        &s.t.topic,
        &[
            event("cli-1", true, true),
            event("cli-2", true, false),
            event("cli-3", false, true),
        ],
    );
    s.wait_committed(3);
    let token = Some(API_TOKEN);
    let clean = |o: &std::process::Output| {
        let text = format!("{}{}", stdout(o), stderr(o));
        assert_masked(&text);
        assert!(
            !text.contains(API_TOKEN),
            "the token is never printed: {text}"
        );
        text
    };

    // show: a block per delivery, attempts included.
    let o = deliveries_cli(&["show", "cli-1"], &admin, token);
    assert!(o.status.success(), "{}", stderr(&o));
    clean(&o);
    let out = stdout(&o);
    assert!(out.contains("event cli-1: 2 deliveries"), "{out}");
    assert!(out.contains("email confirmation delivered"), "{out}");
    assert!(out.contains("sms confirmation delivered"), "{out}");
    assert!(out.contains("u***@example.com"), "{out}");
    assert!(out.contains("#1"), "attempts listed: {out}");
    let o = deliveries_cli(&["show", "cli-1", "--json"], &admin, token);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_stdout(&o)["deliveries"].as_array().map(Vec::len),
        Some(2)
    );
    let o = deliveries_cli(&["show", "no-such-event"], &admin, token);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no delivery of this event"),
        "{}",
        stderr(&o)
    );

    // list: a table, newest first; filters; --all follows the cursor.
    let o = deliveries_cli(&["list"], &admin, token);
    assert!(o.status.success(), "{}", stderr(&o));
    clean(&o);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 4, "a header and four deliveries: {out}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{out}"
    );
    let ids: Vec<u64> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        ids.len() == 4 && ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {out}"
    );
    let o = deliveries_cli(
        &["list", "--channel", "sms", "--since", "1h", "--json"],
        &admin,
        token,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_stdout(&o);
    assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(2), "{v}");
    let o = deliveries_cli(&["list", "--limit", "1", "--all", "--json"], &admin, token);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_stdout(&o);
    let ids: Vec<u64> = v["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 4, "{v}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let o = deliveries_cli(&["list", "--limit", "1"], &admin, token);
    assert!(
        stderr(&o).contains("--all"),
        "a hint that more follow: {}",
        stderr(&o)
    );

    // Clear errors, exit 1.
    let o = deliveries_cli(&["list", "--state", "sent"], &admin, token);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("dead_lettered"), "{}", stderr(&o));
    let o = deliveries_cli(&["list"], &admin, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("set NOTIFY_ADMIN_TOKEN"),
        "{}",
        stderr(&o)
    );
    let o = deliveries_cli(&["list"], &admin, Some("wrong-token-0123456789"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("NOTIFY_ADMIN_TOKEN"), "{}", stderr(&o));
    let o = deliveries_cli(&["list"], "http://127.0.0.1:9", token);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}
