//! Masking of personal data in log output.
//!
//! Every log line the host writes passes through [`text`] (see `telemetry`),
//! so an e-mail address or phone number can reach the log from any field or
//! message, including a plugin's own output, and still be masked.
//! `u***@example.com` keeps enough to tell addresses apart when debugging;
//! `+1******0123` keeps the country code and last four digits.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z0-9])[A-Za-z0-9._%+\-]*@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

// E.164 as the contract defines it, possibly URL-encoded (`%2B`) as in a
// form body: a plus, then 7 to 15 digits.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\+|%2B)([1-9])(\d{2,10})(\d{4})\b")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Masks every e-mail address and E.164 phone number in `s`.
pub fn text(s: &str) -> Cow<'_, str> {
    // Every log line passes here. The e-mail pattern has no literal to
    // search for, so most lines (which hold no `@`) skip it outright.
    let masked = if s.contains('@') {
        EMAIL.replace_all(s, "$1***@$2")
    } else {
        Cow::Borrowed(s)
    };
    match PHONE.replace_all(&masked, |c: &regex::Captures<'_>| {
        format!("{}{}{}{}", &c[1], &c[2], "*".repeat(c[3].len()), &c[4])
    }) {
        Cow::Borrowed(_) => masked,
        Cow::Owned(o) => Cow::Owned(o),
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
            ("offset 1700000000 and 42", "offset 1700000000 and 42"),
            ("event_id=9b2f-11", "event_id=9b2f-11"),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), want, "{input}");
        }
    }
}
