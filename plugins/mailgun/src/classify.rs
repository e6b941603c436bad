//! Mailgun's answer becomes a disposition, per Mailgun's documented status
//! codes: 200 queued; 400 bad request and 413 too large (final for the
//! event); 401 bad API key and 403 account or domain not allowed to send
//! (the whole channel is down); 404 also while a new domain propagates; 429
//! rate limited; 408 and 5xx transient.
//!
//! Channel-down versus permanent: a failure about the API key, the account
//! or the sending domain would fail every event the same way, so the host
//! holds the channel rather than dead-letter them all; a failure about this
//! event's recipient or content is the event's alone.

use plugin_common::{body_snippet, json_str, provider_message_id, retry_after, settings_of};
use serde_json::Value;

use crate::config::DEFAULT_NOT_FOUND_RETRIES;
use crate::{CallContext, Delivered, Disposition, HttpResponse, RetryLater, Setting};

pub fn classify(
    response: &HttpResponse,
    settings: &[Setting],
    context: &CallContext,
) -> Disposition {
    // Only `not_found_retries` matters here. Settings were checked at
    // start-up; should one still be unreadable, the default beats refusing to
    // classify an answer Mailgun already gave.
    let not_found_retries = settings_of(settings)
        .u32_or("not_found_retries", DEFAULT_NOT_FOUND_RETRIES)
        .unwrap_or(DEFAULT_NOT_FOUND_RETRIES);
    let status = response.status;
    let json = serde_json::from_slice::<Value>(&response.body).ok();
    let detail = detail(json.as_ref(), &response.body);
    // Read in full, not the quoted snippet, so a long message cannot hide
    // the words that decide.
    let text = match json_str(json.as_ref(), "message") {
        Some(message) => message.to_ascii_lowercase(),
        None => String::from_utf8_lossy(&response.body).to_ascii_lowercase(),
    };
    // Mailgun's own answers are JSON objects; a bare `404` or `"nope"` is
    // valid JSON too, but not one of them.
    let mailgun_json = json.as_ref().is_some_and(Value::is_object);
    let after_ms = retry_after(&response.headers, context.now_unix_ms);
    let retry = |reason: String| Disposition::Retry(RetryLater { after_ms, reason });
    match status {
        200..=299 => Disposition::Delivered(Delivered {
            provider_message_id: provider_message_id(json.as_ref(), "id"),
        }),
        429 => retry(reason("rate limited (HTTP 429)", &detail)),
        408 | 500..=599 => retry(reason(&format!("HTTP {status}"), &detail)),
        // The host attaches the API key; Mailgun refused it.
        401 => Disposition::ChannelDown(reason("HTTP 401 (API key refused)", &detail)),
        // A sandbox or free-plan domain may send only to authorized
        // recipients: that is about this recipient, and others get through.
        400 | 403 if about_recipient(&text) => {
            Disposition::Permanent(reason(&format!("HTTP {status}"), &detail))
        }
        // 403: the account or domain may not send (disabled, unverified,
        // over a sending limit). Mailgun words a domain refusal "Domain X is
        // not allowed to send: ..." (its documented 429 says so for a rate
        // limit); on a 400 that phrase means the same.
        403 => Disposition::ChannelDown(reason("HTTP 403 (account or domain may not send)", &detail)),
        400 if domain_refused(&text) => {
            Disposition::ChannelDown(reason("HTTP 400 (domain may not send)", &detail))
        }
        400 | 413 => Disposition::Permanent(reason(&format!("HTTP {status}"), &detail)),
        // A JSON 404 is Mailgun's own answer about the domain, which may be
        // too new to be seen everywhere yet; a non-JSON 404 is a wrong URL.
        404 if mailgun_json && context.attempt < not_found_retries => retry(reason(
            &format!(
                "HTTP 404 on attempt {} of {not_found_retries} (a new domain may not have propagated yet)",
                context.attempt
            ),
            &detail,
        )),
        404 if mailgun_json => Disposition::Permanent(reason(
            &format!("HTTP 404, still on attempt {}", context.attempt),
            &detail,
        )),
        404 => Disposition::Permanent(reason("HTTP 404, not from the Mailgun API (check base_url)", &detail)),
        _ => Disposition::Permanent(reason(&format!("unexpected HTTP {status}"), &detail)),
    }
}

/// Mailgun's refusal of the sending domain as a whole.
fn domain_refused(text: &str) -> bool {
    text.contains("not allowed to send")
}

/// Mailgun's refusal of one recipient of a sandbox or free-plan domain
/// ("... add the address to authorized recipients in Account Settings").
fn about_recipient(text: &str) -> bool {
    text.contains("authorized recipient")
}

/// Mailgun's `message` when the body is its JSON error, else a quote of the
/// body (an HTML page from a proxy, a plain-text `Forbidden`).
fn detail(json: Option<&Value>, body: &[u8]) -> String {
    match json_str(json, "message") {
        Some(message) => body_snippet(message.as_bytes()),
        None => body_snippet(body),
    }
}

fn reason(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        format!("mailgun: {what}")
    } else {
        format!("mailgun: {what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{context, settings};
    use crate::Header;

    /// Response headers in a table row.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    const NOW_MS: u64 = 784_111_777_000 - 9_000;

    #[derive(Debug, PartialEq)]
    enum Want {
        Delivered(Option<&'static str>),
        Retry(Option<u64>, &'static str),
        Permanent(&'static str),
        ChannelDown(&'static str),
    }

    fn run(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        attempt: u32,
        extra: &[(&str, &str)],
    ) -> Disposition {
        let response = HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        classify(&response, &settings(extra), &context(attempt, NOW_MS))
    }

    fn matches(got: &Disposition, want: &Want) -> bool {
        match (got, want) {
            (Disposition::Delivered(d), Want::Delivered(id)) => {
                d.provider_message_id.as_deref() == *id
            }
            (Disposition::Retry(r), Want::Retry(after, needle)) => {
                r.after_ms == *after
                    && r.reason.starts_with("mailgun: ")
                    && r.reason.contains(needle)
            }
            (Disposition::Permanent(reason), Want::Permanent(needle))
            | (Disposition::ChannelDown(reason), Want::ChannelDown(needle)) => {
                reason.starts_with("mailgun: ") && reason.contains(needle)
            }
            _ => false,
        }
    }

    #[test]
    fn documented_answers() {
        let json_ct = &[("content-type", "application/json")][..];
        let cases: &[(u16, Headers, &str, u32, Want)] = &[
            (
                200,
                json_ct,
                r#"{"id":"<m1@mg>","message":"Queued. Thank you."}"#,
                1,
                Want::Delivered(Some("<m1@mg>")),
            ),
            (200, &[], "", 1, Want::Delivered(None)),
            (
                200,
                &[],
                r#"{"message":"Queued"}"#,
                1,
                Want::Delivered(None),
            ),
            (202, &[], r#"{"id":""}"#, 1, Want::Delivered(None)),
            (200, &[], "<html>ok</html>", 1, Want::Delivered(None)),
            (
                429,
                &[("retry-after", "30")],
                r#"{"message":"limit exceeded"}"#,
                1,
                Want::Retry(Some(30_000), "limit exceeded"),
            ),
            (
                429,
                &[("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")],
                "",
                1,
                Want::Retry(Some(9_000), "HTTP 429"),
            ),
            (
                429,
                &[("retry-after", "soon")],
                "",
                1,
                Want::Retry(None, "rate limited"),
            ),
            (
                429,
                &[],
                r#"{"message":"limit exceeded"}"#,
                1,
                Want::Retry(None, "limit exceeded"),
            ),
            (408, &[], "", 1, Want::Retry(None, "HTTP 408")),
            (
                500,
                &[],
                r#"{"message":"Internal Server Error"}"#,
                1,
                Want::Retry(None, "HTTP 500: Internal Server Error"),
            ),
            (
                503,
                &[("retry-after", "5")],
                "",
                7,
                Want::Retry(Some(5_000), "HTTP 503"),
            ),
            (599, &[], "", 1, Want::Retry(None, "HTTP 599")),
            (
                400,
                json_ct,
                r#"{"message":"'to' parameter is not a valid address"}"#,
                1,
                Want::Permanent("HTTP 400: 'to' parameter is not a valid address"),
            ),
            (
                401,
                &[],
                "Forbidden",
                1,
                Want::ChannelDown("HTTP 401 (API key refused): Forbidden"),
            ),
            (
                401,
                json_ct,
                r#"{"message":"Invalid private key"}"#,
                4,
                Want::ChannelDown("HTTP 401 (API key refused): Invalid private key"),
            ),
            (
                403,
                &[],
                r#"{"message":"Domain not allowed"}"#,
                1,
                Want::ChannelDown("HTTP 403 (account or domain may not send): Domain not allowed"),
            ),
            (
                403,
                json_ct,
                r#"{"message":"Domain mg.example.com is not allowed to send: The domain is unverified and requires DNS configuration."}"#,
                1,
                Want::ChannelDown("HTTP 403 (account or domain may not send): Domain mg.example.com is not allowed"),
            ),
            (403, &[], "", 1, Want::ChannelDown("HTTP 403")),
            (
                400,
                json_ct,
                r#"{"message":"Domain mg.example.com is not allowed to send: account disabled"}"#,
                1,
                Want::ChannelDown("HTTP 400 (domain may not send): Domain mg.example.com"),
            ),
            // A sandbox/free domain's unauthorized recipient is the event's.
            (
                403,
                json_ct,
                r#"{"message":"Domain sandbox1.mailgun.org is not allowed to send: Free accounts are for test purposes only. Please upgrade or add the address to Authorized Recipients in Account Settings."}"#,
                1,
                Want::Permanent("HTTP 403: Domain sandbox1.mailgun.org"),
            ),
            (
                400,
                json_ct,
                r#"{"message":"Sandbox subdomains are for test purposes only. Please add your own domain or add the address to authorized recipients in Account Settings."}"#,
                1,
                Want::Permanent("HTTP 400: Sandbox subdomains"),
            ),
            // A rate limit worded as a refusal is still a rate limit.
            (
                429,
                json_ct,
                r#"{"message":"Domain example.com is not allowed to send: account-requests-per-sec limit exceeded, try again after 120 seconds"}"#,
                1,
                Want::Retry(None, "rate limited (HTTP 429)"),
            ),
            (
                413,
                &[],
                r#"{"message":"too large"}"#,
                1,
                Want::Permanent("HTTP 413: too large"),
            ),
            (
                404,
                json_ct,
                r#"{"message":"Domain not found"}"#,
                1,
                Want::Retry(None, "Domain not found"),
            ),
            (
                404,
                json_ct,
                r#"{"message":"Domain not found"}"#,
                2,
                Want::Retry(None, "attempt 2 of 3"),
            ),
            (
                404,
                json_ct,
                r#"{"message":"Domain not found"}"#,
                3,
                Want::Permanent("HTTP 404, still on attempt 3: Domain not found"),
            ),
            (
                404,
                &[("content-type", "text/html")],
                "<html>not found</html>",
                1,
                Want::Permanent("HTTP 404"),
            ),
            (404, &[], "", 1, Want::Permanent("HTTP 404")),
            (
                404,
                &[],
                "404",
                1,
                Want::Permanent("HTTP 404, not from the Mailgun API (check base_url): 404"),
            ),
            (
                302,
                &[("location", "https://x")],
                "",
                1,
                Want::Permanent("unexpected HTTP 302"),
            ),
            (
                409,
                &[],
                "conflict",
                1,
                Want::Permanent("unexpected HTTP 409: conflict"),
            ),
            (100, &[], "", 1, Want::Permanent("unexpected HTTP 100")),
        ];
        for (status, headers, body, attempt, want) in cases {
            let got = run(*status, headers, body, *attempt, &[]);
            assert!(
                matches(&got, want),
                "{status} {body:?} attempt {attempt}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn not_found_retries_is_a_setting() {
        let body = r#"{"message":"Domain not found"}"#;
        assert!(matches(
            &run(404, &[], body, 4, &[("not_found_retries", "5")]),
            &Want::Retry(None, "of 5")
        ));
        assert!(matches(
            &run(404, &[], body, 5, &[("not_found_retries", "5")]),
            &Want::Permanent("404")
        ));
        assert!(matches(
            &run(404, &[], body, 1, &[("not_found_retries", "0")]),
            &Want::Permanent("404")
        ));
        // Unreadable (check-settings would have said so): the default applies.
        assert!(matches(
            &run(404, &[], body, 2, &[("not_found_retries", "many")]),
            &Want::Retry(None, "of 3")
        ));
    }

    #[test]
    fn the_deciding_words_count_past_the_quoted_snippet() {
        // The reason quotes a snippet; the decision reads the whole message.
        let padding = "x".repeat(2 * plugin_common::SNIPPET_MAX_CHARS);
        let body = format!(
            r#"{{"message":"Domain d is not allowed to send: {padding} add the address to authorized recipients"}}"#
        );
        assert!(matches!(
            run(403, &[], &body, 1, &[]),
            Disposition::Permanent(_)
        ));
    }

    #[test]
    fn long_and_broken_bodies_are_quoted_briefly() {
        let page = format!("<html>{}</html>", "x".repeat(5000));
        let Disposition::Permanent(reason) = run(400, &[], &page, 1, &[]) else {
            panic!("permanent expected")
        };
        assert!(
            reason.chars().count()
                <= "mailgun: HTTP 400: ".len() + plugin_common::SNIPPET_MAX_CHARS,
            "{reason}"
        );
        assert!(reason.ends_with('…'));

        let response = HttpResponse {
            status: 400,
            headers: vec![],
            body: b"bad \xf0\x9f".to_vec(),
        };
        assert_eq!(
            classify(&response, &[], &context(1, 0)),
            Disposition::Permanent("mailgun: HTTP 400: bad \u{fffd}".to_string())
        );
    }
}
