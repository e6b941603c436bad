//! Masking of personal data in log output.
//!
//! Every log line the host writes passes through [`text`] (see `telemetry`),
//! so an e-mail address or phone number can reach the log from any field or
//! message, including a plugin's own output, and still be masked.
//! `u***@example.com` keeps enough to tell addresses apart when debugging;
//! `+1******0123` keeps the country code's first digit and the last four.
//!
//! What counts as contact data (the rules, each tested as a table below):
//! - **E-mail**: `local@domain.tld`, also with the `@` percent-encoded
//!   (`local%40domain.tld`, as in a form body or URL) or JSON-escaped
//!   (`local\u0040domain.tld`). The separator is kept as it was.
//! - **International number**: `+` or `%2B`, then 7 to 15 digits, either in
//!   one run (`+15555550123`) or in groups split by one space, `-`, `.` or
//!   `%20`, with optional parentheses (`+1 (555) 555-0123`, `+44 20 7946
//!   0958`). Not followed by another digit.
//! - **National number** (the North American shape, which is what this
//!   host's events carry): `(555) 555-0123`, `555-555-0123`, `555.555.0123`,
//!   `555 555 0123`, optionally after a `1` and a separator; standing alone,
//!   not inside a longer word, number, UUID or version.
//! - **A bare run of 7-15 digits under a phone-ish key**: `phone`, anything
//!   with `phone`, `mobile` or `msisdn` in it, `tel`, `telephone`, `sms`
//!   (each in lower, Capitalized or UPPER case), followed by `=` or `:`
//!   (quotes and spaces allowed), as in
//!   `phone=15555550123` or `"user_phone": "15555550123"`.
//!
//! Deliberately not masked, because they are in every log line and are not
//! contact data: Kafka offsets and partitions, unix timestamps (seconds or
//! ms), RFC 3339 times and their `+14:00` offsets, UUIDs and trace ids,
//! ports and addresses, durations, `elapsed_ms=12345`, byte counts. A bare
//! digit run is masked only under a phone-ish key; `to`/`from` are not such
//! keys (they name offsets and times as often as numbers).
//!
//! Cost: lines without `@`, `%40` or `\u0040` skip the e-mail pattern;
//! lines without a `+`, `%2B`, the tail of a national number or a 7-digit
//! run after a phone-ish key skip the phone patterns (SIMD searches
//! decide, see `phone_possible`). A candidate the phone regex finds is checked for its
//! boundaries by hand, since the regex crate has no look-around.
//! `host/benches/redact.rs` measures it.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"([A-Za-z0-9])[A-Za-z0-9._%+\-]*(@|%40|\\u0040)([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)",
    )
    .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Every phone shape in one pass; the groups say which one matched. Digits
/// are ASCII `[0-9]` (`\d` would take any script's digits).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?x)
        # International: a sign, then one run of 7-15 digits or groups.
        (?P<intl>(?:\+|%2[Bb])
            (?:[1-9][0-9]{6,14}
              |[1-9][0-9]{0,3}(?:(?:[\ .\-]|%20)?\(?[0-9]{1,6}\)?){1,6}))
        # National: (555) 555-0123, 555-555-0123, 1 555 555 0123, ...
        |(?P<national>(?:1[\ .\-]?)?(?:\([0-9]{3}\)\ ?|[0-9]{3}[\ .\-])[0-9]{3}[\ .\-][0-9]{4})
        # A bare digit run under a phone-ish key.
        |(?P<key>[A-Za-z_]*(?:phone|Phone|PHONE|mobile|Mobile|MOBILE|msisdn|Msisdn|MSISDN)[A-Za-z0-9_]*
            |telephone|Telephone|TELEPHONE|tel|Tel|TEL|sms|Sms|SMS)
            "?\s*[:=]\s*"?(?P<bare>[0-9]{7,15})
        "#,
    )
    .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Masks every e-mail address and phone number in `s` (see the module doc
/// for what counts as one).
pub fn text(s: &str) -> Cow<'_, str> {
    // The e-mail pattern has no literal to search for, so most lines (which
    // hold no `@`) skip it outright.
    let masked = if email_possible(s.as_bytes()) {
        EMAIL.replace_all(s, "$1***$2$3")
    } else {
        Cow::Borrowed(s)
    };
    match mask_phones(&masked) {
        Some(o) => Cow::Owned(o),
        None => masked,
    }
}

/// The phone-ish keys, for [`phone_possible`], in the three casings keys
/// are written in. Case-sensitive literals keep the automaton's SIMD
/// prefilter; an ASCII-case-insensitive one walks every byte.
static KEYWORDS: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
    aho_corasick::AhoCorasick::new(KEYS.iter().flat_map(|k| casings(k)))
        .unwrap_or_else(|e| unreachable!("static automaton: {e}"))
});

const KEYS: &[&str] = &["phone", "mobile", "msisdn", "tel", "sms"];

/// `phone`, `Phone`, `PHONE`.
fn casings(key: &str) -> [String; 3] {
    let mut capitalized = key.to_string();
    capitalized[..1].make_ascii_uppercase();
    [key.to_string(), capitalized, key.to_ascii_uppercase()]
}

/// How far before a digit run its phone-ish key may start: a long key
/// (`customer_phone_number`) plus `": "`, with room to spare.
const KEY_LOOKBACK: usize = 40;

/// A cheap necessary condition for [`PHONE`] to find a number: a `+` or
/// `%2B`; the tail of a national number (3 digits standing alone, a
/// separator, 4 digits); or a run of 7 digits with a phone-ish key just
/// before it. Memchr searches and one tight loop over the bytes; the keys
/// are looked for only before a 7-digit run (an offset, a timestamp in
/// ms), since searching the whole line for them cost 0.9 µs a line. The
/// typical log line (digits in its timestamp, offset and ids, but none of
/// these) never runs the regex.
fn phone_possible(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    // (memchr iterators, not `memmem`: building a substring searcher on
    // every line cost more than the search.)
    if memchr::memchr(b'+', b).is_some()
        || memchr::memchr_iter(b'%', b)
            .any(|i| b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'B' | b'b')))
    {
        return true;
    }
    let national_tail = memchr::memchr3_iter(b' ', b'.', b'-', b).any(|i| {
        i >= 3
            && (1..=3).all(|k| digit(i - k))
            && !(i >= 4 && b[i - 4].is_ascii_alphanumeric())
            && (1..=4).all(|k| digit(i + k))
    });
    if national_tail {
        return true;
    }
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            run += 1;
            if run == 7 && KEYWORDS.is_match(&b[(i + 1 - 7).saturating_sub(KEY_LOOKBACK)..i]) {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Whether `b` has an `@`, `%40` or `\u0040`: one memchr pass each for
/// `@`, `%` and `\`, which most lines do not have at all.
fn email_possible(b: &[u8]) -> bool {
    memchr::memchr(b'@', b).is_some()
        || memchr::memchr_iter(b'%', b).any(|i| b[i + 1..].starts_with(b"40"))
        || memchr::memchr_iter(b'\\', b).any(|i| b[i + 1..].starts_with(b"u0040"))
}

/// `s` with its phone numbers masked, or `None` when it has none.
fn mask_phones(s: &str) -> Option<String> {
    if !phone_possible(s) {
        return None;
    }
    let mut out: Option<String> = None;
    let mut last = 0;
    for caps in PHONE.captures_iter(s) {
        let (start, end, keep_first) = if let Some(m) = caps.name("intl") {
            // Keep the sign (`+` or `%2B`) as it is; the rest is the number.
            let sign = if m.as_str().starts_with('+') { 1 } else { 3 };
            let number = &s[m.start() + sign..m.end()];
            if !(7..=15).contains(&count_digits(number)) || digit_at(s, m.end()) {
                continue;
            }
            (m.start() + sign, m.end(), true)
        } else if let Some(m) = caps.name("national") {
            // `x1 555-555-0123`: the `1` belongs to the word before, the
            // number after it still stands alone.
            let bare = m.as_str().strip_prefix('1').map(|rest| {
                let sep = rest.starts_with([' ', '.', '-']);
                m.start() + 1 + usize::from(sep)
            });
            let start = if alone(s, m.start(), m.end()) {
                m.start()
            } else {
                match bare.filter(|&b| alone(s, b, m.end())) {
                    Some(b) => b,
                    None => continue,
                }
            };
            (start, m.end(), false)
        } else if let (Some(key), Some(m)) = (caps.name("key"), caps.name("bare")) {
            let word_before = s[..key.start()]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric());
            if word_before || digit_at(s, m.end()) {
                continue;
            }
            (m.start(), m.end(), false)
        } else {
            continue;
        };
        let out = out.get_or_insert_with(|| String::with_capacity(s.len()));
        out.push_str(&s[last..start]);
        mask_digits(&s[start..end], keep_first, out);
        last = end;
    }
    let mut out = out?;
    out.push_str(&s[last..]);
    Some(out)
}

fn digit_at(s: &str, i: usize) -> bool {
    s.as_bytes().get(i).is_some_and(u8::is_ascii_digit)
}

/// Whether `s[start..end]` stands alone: not glued to a word, a longer
/// number, or a dotted/dashed token (version, address, UUID, date).
fn alone(s: &str, start: usize, end: usize) -> bool {
    let b = s.as_bytes();
    let before = start.checked_sub(1).map(|i| b[i]);
    let after = b.get(end).copied();
    let after2 = b.get(end + 1).copied();
    let glued_before = before.is_some_and(|c| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+' | b'%' | b'/' | b':')
    });
    let glued_after = after.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
        || (matches!(after, Some(b'.' | b':')) && after2.is_some_and(|c| c.is_ascii_digit()));
    !glued_before && !glued_after
}

/// The digits of `number`, not counting those of `%20`-style escapes.
fn count_digits(number: &str) -> usize {
    let mut count = 0;
    let mut escape = 0;
    for b in number.bytes() {
        if b == b'%' {
            escape = 2;
        } else if escape > 0 {
            escape -= 1;
        } else if b.is_ascii_digit() {
            count += 1;
        }
    }
    count
}

/// Writes `number` with every digit but the last four (and, with
/// `keep_first`, the first) as `*`; separators and `%20`-style escapes stay.
fn mask_digits(number: &str, keep_first: bool, out: &mut String) {
    let total = count_digits(number);
    let mut seen = 0;
    let mut escape = 0;
    for c in number.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c);
        } else if c.is_ascii_digit() {
            seen += 1;
            if (keep_first && seen == 1) || seen + 4 > total {
                out.push(c);
            } else {
                out.push('*');
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn masks_emails_and_phones() {
        let cases = [
            ("to user@example.com now", "to u***@example.com now"),
            ("a.b+tag@mail.example.co.uk", "a***@mail.example.co.uk"),
            ("call +15555550123.", "call +1******0123."),
            ("To=%2B15555550123&x", "To=%2B1******0123&x"),
            // Percent-encoded and JSON-escaped `@`.
            ("to=user%40example.com&x=1", "to=u***%40example.com&x=1"),
            ("a%2Btag%40example.com", "a***%40example.com"),
            (
                r#"{"to":"user\u0040example.com"}"#,
                r#"{"to":"u***\u0040example.com"}"#,
            ),
            // International numbers in groups.
            ("+1 555 555 0123", "+1 *** *** 0123"),
            ("+1-555-555-0123", "+1-***-***-0123"),
            ("+1.555.555.0123", "+1.***.***.0123"),
            ("+1 (555) 555-0123", "+1 (***) ***-0123"),
            ("+44 20 7946 0958", "+4* ** **** 0958"),
            ("To=%2B1%20555%20555%200123", "To=%2B1%20***%20***%200123"),
            ("+15555550123 2 attempts", "+1******0123 2 attempts"),
            // National numbers.
            ("call (555) 555-0123 now", "call (***) ***-0123 now"),
            ("555-555-0123", "***-***-0123"),
            ("555.555.0123,", "***.***.0123,"),
            ("tel 555 555 0123", "tel *** *** 0123"),
            ("1-555-555-0123", "*-***-***-0123"),
            ("x1 555-555-0123", "x1 ***-***-0123"),
            ("\"(555)555-0123\"", "\"(***)***-0123\""),
            // Bare digits under a phone-ish key.
            ("phone=15555550123", "phone=*******0123"),
            (
                r#""phone_e164":"15555550123""#,
                r#""phone_e164":"*******0123""#,
            ),
            (
                r#""user_phone": "5555550123""#,
                r#""user_phone": "******0123""#,
            ),
            ("MSISDN: 15555550123", "MSISDN: *******0123"),
            ("sms=15555550123;", "sms=*******0123;"),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), want, "{input}");
        }
    }

    /// What is in every log line and is not contact data: none of it may be
    /// masked, or the log loses what operators look things up by.
    #[test]
    fn leaves_log_vocabulary_alone() {
        let cases = [
            "offset 1700000000 and 42",
            "event_id=9b2f-11",
            r#""partition":3,"offset":1234567890"#,
            "partition=12 offset=15555550123",
            "offset=5555550123",
            r#""now_unix_ms":1764590400000"#,
            "1764590400000",
            "failed_at=1764590400",
            "event_id=9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f",
            "event_id=12345678-1234-1234-1234-123456789012",
            "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "2026-02-20T15:00:00Z",
            "2026-02-20T15:00:00+14:00",
            "2026-02-20T15:00:00.123456+0100",
            "2026-12-01T10:00:00.123456789Z",
            "listening on 127.0.0.1:9090",
            "http://127.0.0.1:45123/v3/mg.example.com/messages",
            "192.168.100.200:5555",
            "elapsed_ms=12345",
            "elapsed_us=1234567",
            "took 12.345ms",
            "latency 1.234567s",
            "body_bytes=1048576",
            "limit 16777216 bytes",
            "notify-host/0.1.0",
            "max_in_flight=512 waiting=1024",
            "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "SM0123456789abcdef0123456789abcdef",
            r#""from":1764590400000,"to":1764590400999"#,
            "retry +5 s",
            "v1.555.555.0123",
            "555-555-01234",
            "id=555-555-0123-77",
            "hotel=15555550123",
            "telemetry=15555550123",
            "+1555555012345678",
            "+0000",
        ];
        for input in cases {
            assert_eq!(text(input), input, "{input}");
        }
    }
}
