use chrono::{DateTime, NaiveDateTime};

use crate::NamedValue;

/// Provider error bodies quoted in a reason are cut to this many characters:
/// enough for any vendor's one-line message, small enough for a log line and
/// a dead-letter record even when the body is an HTML error page.
pub const SNIPPET_MAX_CHARS: usize = 200;

/// The delay a `Retry-After` value asks for, in milliseconds.
///
/// The value is either delta-seconds (`120`) or an HTTP-date; a date already
/// past means "now" (`Some(0)`). Anything else is `None`, so the host falls
/// back to its own backoff rather than trusting a value it cannot read.
pub fn retry_after_ms(value: &str, now_unix_ms: u64) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // An absurdly long number still means "much later"; the host caps it.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(seconds.saturating_mul(1000));
    }
    let at_ms = http_date_ms(value)?;
    let delay = i128::from(at_ms) - i128::from(now_unix_ms);
    Some(u64::try_from(delay.max(0)).unwrap_or(u64::MAX))
}

/// The delay a response's `Retry-After` header asks for, if it has a readable
/// one. Honoured on every retry, not only 429: a 503 may carry one too.
pub fn retry_after<H: NamedValue>(headers: &[H], now_unix_ms: u64) -> Option<u64> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("retry-after"))
        .and_then(|h| retry_after_ms(h.value(), now_unix_ms))
}

/// An HTTP-date in any of the three forms RFC 9110 §5.6.7 says a recipient
/// must accept: IMF-fixdate, and the obsolete RFC 850 and asctime forms.
fn http_date_ms(value: &str) -> Option<i64> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.timestamp_millis());
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc().timestamp_millis())
}

/// A short, printable quote of a response body for a reason string: lossy
/// UTF-8 (a body cut by the host may end mid-character), whitespace and
/// control characters collapsed to single spaces, at most
/// [`SNIPPET_MAX_CHARS`] characters including the `…` that marks a cut.
pub fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = count > 0;
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if count + needed > SNIPPET_MAX_CHARS {
            // Make room for the ellipsis without going over the limit.
            if count == SNIPPET_MAX_CHARS {
                out.pop();
            }
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        count += needed;
    }
    out
}

/// Percent-encodes one URL path segment: everything but RFC 3986 unreserved
/// characters, so a `/` or `?` in a setting cannot change the route.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `value` looks like an absolute `http`/`https` URL with a host.
/// The host parses and allow-lists the final URL; this only catches settings
/// that could never work, at start-up.
pub fn is_http_url(value: &str) -> bool {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &value[8..]
    } else if lower.starts_with("http://") {
        &value[7..]
    } else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty()
        && !authority.starts_with(':')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `base` (a setting, maybe with a trailing `/`) followed by `path`.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    const RFC_EXAMPLE_MS: u64 = 784_111_777_000;

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(retry_after_ms("30", 0), Some(30_000));
        assert_eq!(retry_after_ms(" 0 ", 0), Some(0));
        assert_eq!(retry_after_ms("99999999999999999999999", 0), Some(u64::MAX));
        for bad in ["", " ", "-5", "1.5", "30s", "soon", "+30"] {
            assert_eq!(retry_after_ms(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_dates_in_all_three_forms() {
        let before = RFC_EXAMPLE_MS - 5_000;
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(retry_after_ms(form, before), Some(5_000), "{form}");
        }
    }

    #[test]
    fn retry_after_in_the_past_is_now() {
        assert_eq!(
            retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE_MS),
            Some(0)
        );
        assert_eq!(
            retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE_MS + 3_600_000),
            Some(0)
        );
        assert_eq!(
            retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", u64::MAX),
            Some(0)
        );
    }

    #[test]
    fn retry_after_header_by_any_case() {
        assert_eq!(retry_after(&[("Retry-After", "2")], 0), Some(2_000));
        assert_eq!(retry_after(&[("x", "1"), ("retry-after", "soon")], 0), None);
        assert_eq!(retry_after::<(&str, &str)>(&[], 0), None);
    }

    #[test]
    fn snippets_are_short_printable_and_cut_on_characters() {
        assert_eq!(body_snippet(b""), "");
        assert_eq!(body_snippet(b"  Forbidden\r\n"), "Forbidden");
        assert_eq!(
            body_snippet(b"<html>\n  <body>not\tfound</body>\n</html>"),
            "<html> <body>not found</body> </html>"
        );
        assert_eq!(body_snippet(b"bad \xff byte"), "bad \u{fffd} byte");

        let long = "é".repeat(1000);
        let s = body_snippet(long.as_bytes());
        assert_eq!(s.chars().count(), SNIPPET_MAX_CHARS);
        assert!(s.ends_with('…'));

        let exact = "x".repeat(SNIPPET_MAX_CHARS);
        assert_eq!(body_snippet(exact.as_bytes()), exact);

        // A body the host cut in the middle of a multi-byte character.
        let cut = &"ü".as_bytes()[..1];
        assert_eq!(body_snippet(cut), "\u{fffd}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("mg.example.com"), "mg.example.com");
        assert_eq!(encode_path_segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(encode_path_segment("bücher.de"), "b%C3%BCcher.de");
    }

    #[test]
    fn urls() {
        for good in [
            "https://api.mailgun.net",
            "http://127.0.0.1:8080/x",
            "HTTPS://Example.com/",
        ] {
            assert!(is_http_url(good), "{good}");
        }
        for bad in [
            "",
            "api.mailgun.net",
            "ftp://x",
            "https://",
            "https:///path",
            "https://:80",
            "https://a b",
            "https://x\n",
        ] {
            assert!(!is_http_url(bad), "{bad:?}");
        }
        assert_eq!(
            join_url("https://api.mailgun.net/", "/v3/x"),
            "https://api.mailgun.net/v3/x"
        );
        assert_eq!(join_url("https://h//", "v3"), "https://h/v3");
    }
}
