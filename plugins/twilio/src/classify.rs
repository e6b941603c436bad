//! Twilio's answer becomes a disposition. Twilio reports errors as JSON
//! `{code, message, more_info, status}`; its numeric `code` says more than
//! the HTTP status (error 20429, "Too Many Requests", can arrive as a 400).
//!
//! A failure is `channel-down` when it is about the account, its credentials
//! or the configured sender: every other event would fail the same way, and
//! the host (which owns the credentials) holds the channel until it works
//! again. It is `permanent` when it is about this event's recipient or text.
//! A code whose documented causes include the destination stays
//! `permanent`: calling it channel-level would hold every other recipient's
//! messages because of one.

use plugin_common::{body_snippet, provider_message_id, retry_after};
use serde_json::Value;

use crate::{CallContext, Delivered, Disposition, HttpResponse, RetryLater, Setting};

/// Twilio's error code for "Too Many Requests".
const TOO_MANY_REQUESTS: u64 = 20429;

/// Twilio error codes that mean the channel cannot send at all, whatever the
/// recipient, with what each means.
///
/// Deliberately not here (they stay `permanent`, about one event): 21211
/// invalid 'To' number; 21408 permission to send to the destination's region
/// not enabled; 21608 'To' not verified (trial accounts); 21610 recipient
/// unsubscribed; 21612 this To/From pair cannot be connected; 21614 'To' is
/// not a mobile number; 21617 body too long; 21659 'From' is not a Twilio
/// number *or a short code's country does not match the destination's*,
/// which for a short-code sender is per destination.
const CHANNEL_LEVEL_CODES: &[(u64, &str)] = &[
    // Authentication error: the Account SID or auth token was refused.
    (20003, "credentials refused"),
    // Account not active: suspended or closed.
    (20005, "account not active"),
    // The resource is not accessible with test account credentials.
    (20008, "test credentials cannot send"),
    // Invalid 'From' number (caller ID): the configured sender.
    (21212, "invalid From number"),
    // The 'From' number is not a valid, message-capable Twilio number of
    // this account (a voice-only number, someone else's number).
    (21606, "From number cannot send messages"),
    // Account suspended. A delivery-status code (status callbacks), mapped
    // in case Twilio ever answers a send with it.
    (30002, "account suspended"),
];

pub fn classify(
    response: &HttpResponse,
    _settings: &[Setting],
    context: &CallContext,
) -> Disposition {
    let status = response.status;
    let json = serde_json::from_slice::<Value>(&response.body).ok();
    let error = TwilioError::from_json(json.as_ref());
    let after_ms = retry_after(&response.headers, context.now_unix_ms);
    let retry = |reason: String| Disposition::Retry(RetryLater { after_ms, reason });
    if status == 429 || error.code == Some(TOO_MANY_REQUESTS) {
        return retry(error.reason(status, &response.body));
    }
    if status >= 400 {
        if let Some(what) = error.code.and_then(channel_level) {
            return Disposition::ChannelDown(format!(
                "{} ({what})",
                error.reason(status, &response.body)
            ));
        }
    }
    match status {
        200 | 201 => Disposition::Delivered(Delivered {
            provider_message_id: provider_message_id(json.as_ref(), "sid"),
        }),
        200..=299 => Disposition::Delivered(Delivered {
            provider_message_id: None,
        }),
        408 | 500..=599 => retry(error.reason(status, &response.body)),
        // The host's credentials were refused (401), or the account may not
        // do this (403): no event can fix either.
        401 | 403 => Disposition::ChannelDown(error.reason(status, &response.body)),
        // Everything else is final for the event: 400 carries Twilio's error
        // code (21211 bad number, 21610 unsubscribed, 21408 region not
        // enabled, 21617 body too long, ...), 404 a wrong account or base URL.
        _ => Disposition::Permanent(error.reason(status, &response.body)),
    }
}

/// What a channel-level error code means, if `code` is one.
fn channel_level(code: u64) -> Option<&'static str> {
    CHANNEL_LEVEL_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, what)| *what)
}

/// The parts of Twilio's JSON error body a reason quotes.
#[derive(Debug, Default)]
struct TwilioError {
    code: Option<u64>,
    message: Option<String>,
    more_info: Option<String>,
}

impl TwilioError {
    fn from_json(json: Option<&Value>) -> TwilioError {
        let Some(json) = json else {
            return TwilioError::default();
        };
        let text = |key: &str| {
            json.get(key)
                .and_then(Value::as_str)
                .map(|s| body_snippet(s.as_bytes()))
        };
        TwilioError {
            // A number in Twilio's bodies; accept a numeric string as well.
            code: json.get("code").and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
            }),
            message: text("message"),
            more_info: text("more_info").filter(|url| url.starts_with("https://")),
        }
    }

    /// `twilio: error 21211: Invalid 'To' Phone Number (see https://...)` for
    /// a 400, the HTTP status first for anything else.
    fn reason(&self, status: u16, body: &[u8]) -> String {
        let mut reason = String::from("twilio: ");
        if status != 400 || self.code.is_none() {
            reason.push_str(&format!("HTTP {status}"));
        }
        if let Some(code) = self.code {
            if status != 400 {
                reason.push_str(", ");
            }
            reason.push_str(&format!("error {code}"));
        }
        let detail = match &self.message {
            Some(message) => message.clone(),
            // Not Twilio's JSON (a proxy's page, an empty body): quote it.
            None if self.code.is_none() => body_snippet(body),
            None => String::new(),
        };
        if !detail.is_empty() {
            reason.push_str(": ");
            reason.push_str(&detail);
        }
        if let Some(url) = &self.more_info {
            reason.push_str(&format!(" (see {url})"));
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::context;
    use crate::Header;

    /// Response headers in a table row.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    #[derive(Debug)]
    enum Want {
        Delivered(Option<&'static str>),
        Retry(Option<u64>, &'static str),
        Permanent(&'static str),
        ChannelDown(&'static str),
    }

    fn run(status: u16, headers: &[(&str, &str)], body: &str) -> Disposition {
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
        classify(&response, &[], &context(1, 784_111_777_000 - 4_000))
    }

    fn twilio_error(code: u32, message: &str) -> String {
        format!(
            r#"{{"code":{code},"message":"{message}","more_info":"https://www.twilio.com/docs/errors/{code}","status":400}}"#
        )
    }

    #[test]
    fn documented_answers() {
        let e21211 = twilio_error(21211, "Invalid 'To' Phone Number");
        let e21610 = twilio_error(21610, "Attempt to send to unsubscribed recipient");
        let e21408 = twilio_error(
            21408,
            "Permission to send an SMS has not been enabled for the region",
        );
        let e21617 = twilio_error(
            21617,
            "The concatenated message body exceeds the 1600 character limit",
        );
        let e20429 = r#"{"code":20429,"message":"Too Many Requests","status":400}"#;
        let e21212 = twilio_error(21212, "Invalid From Number (caller ID)");
        let e21606 = twilio_error(
            21606,
            "The From phone number provided is not a valid message-capable Twilio phone number",
        );
        let e30002 = twilio_error(30002, "Account suspended");
        let e21659 = twilio_error(
            21659,
            "From is not a Twilio phone number or Short Code country mismatch",
        );
        let e21608 = twilio_error(
            21608,
            "The To phone number provided is not yet verified for this account",
        );
        let sid = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
        let cases: Vec<(u16, Headers, &str, Want)> = vec![
            (201, &[], sid, Want::Delivered(Some("SM0123456789abcdef0123456789abcdef"))),
            (200, &[], sid, Want::Delivered(Some("SM0123456789abcdef0123456789abcdef"))),
            (201, &[], "", Want::Delivered(None)),
            (201, &[], r#"{"sid":""}"#, Want::Delivered(None)),
            (202, &[], sid, Want::Delivered(None)),
            (204, &[], "", Want::Delivered(None)),
            (429, &[("retry-after", "2")], "{}", Want::Retry(Some(2_000), "twilio: HTTP 429")),
            (429, &[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")], "", Want::Retry(Some(4_000), "HTTP 429")),
            (429, &[], "", Want::Retry(None, "HTTP 429")),
            (400, &[], e20429, Want::Retry(None, "twilio: error 20429: Too Many Requests")),
            (400, &[("Retry-After", "3")], e20429, Want::Retry(Some(3_000), "error 20429")),
            (503, &[], r#"{"code":"20429"}"#, Want::Retry(None, "HTTP 503, error 20429")),
            (500, &[], "", Want::Retry(None, "twilio: HTTP 500")),
            (503, &[("retry-after", "10")], "", Want::Retry(Some(10_000), "HTTP 503")),
            (408, &[], "", Want::Retry(None, "HTTP 408")),
            (
                400,
                &[],
                &e21211,
                Want::Permanent(
                    "twilio: error 21211: Invalid 'To' Phone Number (see https://www.twilio.com/docs/errors/21211)",
                ),
            ),
            (400, &[], &e21610, Want::Permanent("twilio: error 21610: Attempt to send to unsubscribed recipient")),
            (400, &[], &e21408, Want::Permanent("twilio: error 21408: Permission to send")),
            (400, &[], &e21617, Want::Permanent("twilio: error 21617: The concatenated message body")),
            (400, &[], "<html>Bad Request</html>", Want::Permanent("twilio: HTTP 400: <html>Bad Request</html>")),
            (400, &[], "", Want::Permanent("twilio: HTTP 400")),
            // Channel-level: the account, its credentials or the sender.
            (401, &[], r#"{"code":20003,"message":"Authenticate"}"#, Want::ChannelDown("twilio: HTTP 401, error 20003: Authenticate (credentials refused)")),
            (401, &[], "", Want::ChannelDown("twilio: HTTP 401")),
            (403, &[], "", Want::ChannelDown("twilio: HTTP 403")),
            (403, &[], r#"{"code":20005,"message":"Account not active"}"#, Want::ChannelDown("twilio: HTTP 403, error 20005: Account not active (account not active)")),
            (401, &[], r#"{"code":20005,"message":"Account not active"}"#, Want::ChannelDown("twilio: HTTP 401, error 20005")),
            (403, &[], r#"{"code":20008,"message":"Resource not accessible with Test Account Credentials"}"#, Want::ChannelDown("twilio: HTTP 403, error 20008: Resource not accessible with Test Account Credentials (test credentials cannot send)")),
            (400, &[], &e21212, Want::ChannelDown("twilio: error 21212: Invalid From Number (caller ID) (see https://www.twilio.com/docs/errors/21212) (invalid From number)")),
            (400, &[], &e21606, Want::ChannelDown("twilio: error 21606: The From phone number provided is not a valid message-capable Twilio phone number (see https://www.twilio.com/docs/errors/21606) (From number cannot send messages)")),
            (400, &[], &e30002, Want::ChannelDown("twilio: error 30002: Account suspended")),
            // Per destination: stays with the event.
            (400, &[], &e21659, Want::Permanent("twilio: error 21659: ")),
            (400, &[], &e21608, Want::Permanent("twilio: error 21608: ")),
            (
                404,
                &[],
                r#"{"code":20404,"message":"The requested resource was not found"}"#,
                Want::Permanent("twilio: HTTP 404, error 20404: The requested resource was not found"),
            ),
            (409, &[], r#"{"message":"Conflict"}"#, Want::Permanent("twilio: HTTP 409: Conflict")),
            (301, &[], "", Want::Permanent("twilio: HTTP 301")),
        ];
        for (status, headers, body, want) in &cases {
            let got = run(*status, headers, body);
            let ok = match (&got, want) {
                (Disposition::Delivered(d), Want::Delivered(id)) => {
                    d.provider_message_id.as_deref() == *id
                }
                (Disposition::Retry(r), Want::Retry(after, prefix)) => {
                    r.after_ms == *after
                        && r.reason.starts_with("twilio: ")
                        && r.reason.contains(prefix)
                }
                (Disposition::Permanent(reason), Want::Permanent(prefix))
                | (Disposition::ChannelDown(reason), Want::ChannelDown(prefix)) => {
                    reason.starts_with(prefix)
                }
                _ => false,
            };
            assert!(ok, "{status} {body:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn every_channel_level_code_is_channel_down() {
        for (code, what) in CHANNEL_LEVEL_CODES {
            let body = format!(r#"{{"code":{code},"message":"m"}}"#);
            for status in [400, 401, 403, 404] {
                let got = run(status, &[], &body);
                let Disposition::ChannelDown(reason) = &got else {
                    panic!("{status} {code}: got {got:?}")
                };
                assert!(reason.contains(&format!("error {code}: m")), "{reason}");
                assert!(reason.ends_with(&format!("({what})")), "{reason}");
            }
        }
    }

    #[test]
    fn exact_reasons() {
        assert_eq!(
            run(403, &[], ""),
            Disposition::ChannelDown("twilio: HTTP 403".to_string())
        );
        assert_eq!(
            run(400, &[], r#"{"code":"20003"}"#),
            Disposition::ChannelDown("twilio: error 20003 (credentials refused)".to_string())
        );
        // A success body is never read for error codes.
        assert!(matches!(
            run(201, &[], r#"{"sid":"SM1","code":20003}"#),
            Disposition::Delivered(_)
        ));
        assert_eq!(
            run(
                400,
                &[],
                r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"javascript:x"}"#
            ),
            Disposition::Permanent("twilio: error 21211: Invalid 'To' Phone Number".to_string())
        );
        assert_eq!(
            run(400, &[], r#"{"code":21211}"#),
            Disposition::Permanent("twilio: error 21211".to_string())
        );
        let long = format!(r#"{{"code":21211,"message":"{}"}}"#, "x".repeat(1000));
        let Disposition::Permanent(reason) = run(400, &[], &long) else {
            panic!("permanent expected")
        };
        assert!(
            reason.chars().count()
                <= "twilio: error 21211: ".len() + plugin_common::SNIPPET_MAX_CHARS
        );
    }
}
