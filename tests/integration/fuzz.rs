//! Randomised robustness: event parsing and validation, and each real
//! plugin's render, over a fixed-seed stream of hostile inputs. No panic, no
//! plugin trap on an event the host accepted, and every rejection is a clean
//! error. CI runs the default counts; run longer by hand with
//! NOTIFY_FUZZ_ITERATIONS=5000000 NOTIFY_FUZZ_SEED=<n>.
//!
//! Log masking (`redact::text`) is property-tested here too (proptest, its
//! default 256 cases per property; PROPTEST_CASES=100000 for a long run):
//! generated e-mail addresses and phone numbers, in every spelling the
//! masking supports, embedded in random text, never come out unmasked; and
//! masking never panics on any string.

use notify_host::channels::{Channels, RenderError};
use notify_host::config;
use notify_host::event;
use notify_host::redact;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::harness::*;

fn iterations(default: u64) -> u64 {
    std::env::var("NOTIFY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("NOTIFY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234)
}

/// Strings that have broken parsers and templates before.
const NASTY: &[&str] = &[
    "",
    " ",
    "\0",
    "\u{feff}",
    "💥",
    "e\u{301}",
    "{",
    "}",
    "{{",
    "{time}",
    "%",
    "%s%n",
    "\\",
    "\"",
    "\r\n",
    "+",
    "+0",
    "+15555550123",
    "+1555555012345678",
    "a@b",
    "@",
    "user@",
    "a@b.co,c@d.co",
    "user@example.com\r\nBcc: x@y.z",
    "9999-99-99T99:99:99Z",
    "2099-02-20T15:00:00Z",
    "2099-02-20T15:00:00+14:00",
    "-0001-01-01T00:00:00Z",
    "1e309",
    "null",
    "true",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "x-----notify-host-mailgun-form-boundary",
];

fn random_string(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..4) {
        0 => NASTY[rng.usize(..NASTY.len())].to_string(),
        1 => (0..rng.usize(..40)).map(|_| rng.char(..)).collect(),
        2 => "x".repeat(rng.usize(..5000)),
        _ => (0..rng.usize(..20)).map(|_| rng.alphanumeric()).collect(),
    }
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(..8) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e12),
        4 if depth < 3 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        5 if depth < 3 => Value::Object(
            (0..rng.usize(..4))
                .map(|_| (random_string(rng), random_value(rng, depth + 1)))
                .collect(),
        ),
        _ => json!(random_string(rng)),
    }
}

/// A valid event with random damage: fields replaced, removed or added.
fn mutated_event(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut e = json!({
        "event_id": format!("fz-{}", rng.u64(..)),
        "event_type": "appointments.created",
        "occurred_at": "2026-02-13T17:00:00Z",
        "notify": { "email": rng.bool(), "sms": rng.bool() },
        "appointment": {
            "appointment_id": rng.u32(..),
            "user_id": "u-1",
            "time": "2099-02-20T15:00:00Z",
            "email": "user@example.com",
            "phone_e164": "+15555550123"
        }
    });
    let paths: &[&[&str]] = &[
        &["event_id"],
        &["event_type"],
        &["occurred_at"],
        &["notify"],
        &["notify", "email"],
        &["notify", "sms"],
        &["appointment"],
        &["appointment", "appointment_id"],
        &["appointment", "user_id"],
        &["appointment", "time"],
        &["appointment", "email"],
        &["appointment", "phone_e164"],
        &["extra"],
    ];
    for _ in 0..rng.usize(..4) {
        let path = paths[rng.usize(..paths.len())];
        let (last, parents) = path.split_last().expect("non-empty path");
        let mut node = &mut e;
        for p in parents {
            node = &mut node[*p];
        }
        if let Value::Object(map) = node {
            match rng.u8(..3) {
                0 => {
                    map.remove(*last);
                }
                1 => {
                    map.insert(last.to_string(), random_value(rng, 0));
                }
                _ => {
                    map.insert(last.to_string(), json!(random_string(rng)));
                }
            }
        }
    }
    let mut bytes = serde_json::to_vec(&e).expect("serialise");
    if rng.u8(..20) == 0 && !bytes.is_empty() {
        // Byte-level damage: truncation or a flipped byte.
        let i = rng.usize(..bytes.len());
        if rng.bool() {
            bytes.truncate(i);
        } else {
            bytes[i] ^= 1 << rng.u8(..8);
        }
    }
    bytes
}

#[test]
fn event_parsing_never_panics() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let n = iterations(200_000);
    let (mut valid, mut invalid) = (0u64, 0u64);
    for _ in 0..n {
        let input = if rng.u8(..4) == 0 {
            (0..rng.usize(..256)).map(|_| rng.u8(..)).collect()
        } else {
            mutated_event(&mut rng)
        };
        match event::parse(&input) {
            Ok(e) => {
                valid += 1;
                assert!(!e.event_id.is_empty() && !e.appointment_id.is_empty());
                // Only a booking must ask for a channel; a cancel or a
                // reschedule may lean on the booking's.
                assert!(
                    e.kind != event::EventKind::Created || e.requested_channels().next().is_some()
                );
            }
            Err(v) => {
                invalid += 1;
                assert!(!v.field.is_empty() && !v.problem.is_empty());
            }
        }
    }
    // The generator must exercise both sides, or the test proves nothing.
    assert!(
        valid > n / 20 && invalid > n / 20,
        "valid {valid}, invalid {invalid}"
    );
}

#[test]
fn plugins_render_every_accepted_event_without_trapping() {
    let env = shipped_env("https://api.mailgun.net", "https://api.twilio.com");
    let lookup = move |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = config::load(&root().join("config.toml"), &lookup).expect("shipped config");
    let channels = Channels::load(&config).expect("plugins load");
    let mut rng = fastrand::Rng::with_seed(seed() ^ 0xabcdef);
    let n = iterations(20_000);
    let (mut rendered, mut rejected) = (0u64, 0u64);
    let mut tried = 0u64;
    while tried < n {
        let Ok(e) = event::parse(&mutated_event(&mut rng)) else {
            continue;
        };
        tried += 1;
        for name in ["email", "sms"] {
            match futures_executor::block_on(channels.get(name).expect("channel").render(&e)) {
                Ok(requests) => {
                    rendered += 1;
                    assert!(!requests.is_empty());
                }
                Err(RenderError::Rejected { .. } | RenderError::MissingField { .. }) => {
                    rejected += 1
                }
                Err(other) => panic!(
                    "{name} failed on an accepted event: {other}\nevent: {}",
                    e.raw
                ),
            }
        }
    }
    assert!(
        rendered > 0 && rejected > 0,
        "rendered {rendered}, rejected {rejected}"
    );
}

/// An e-mail address with its `@` spelled as in a log line, a form body or
/// a JSON escape.
fn email() -> impl Strategy<Value = String> {
    (
        "[a-z0-9][a-z0-9._+-]{0,15}",
        prop::sample::select(vec!["@", "%40", "\\u0040"]),
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}\\.[a-z]{2,6}",
    )
        .prop_map(|(local, at, domain)| format!("{local}{at}{domain}"))
}

/// A phone number in one of the supported spellings.
fn phone() -> impl Strategy<Value = String> {
    let sign = prop::sample::select(vec!["+", "%2B"]);
    let sep = prop::sample::select(vec![" ", "-", ".", "%20"]);
    let compact = (sign.clone(), "[1-9][0-9]{6,14}").prop_map(|(s, n)| format!("{s}{n}"));
    let grouped = (
        sign,
        "[1-9][0-9]{0,2}",
        prop::collection::vec("[0-9]{2,4}", 2..4),
        sep.clone(),
        any::<bool>(),
    )
        .prop_filter_map("7 to 15 digits", |(s, cc, groups, sep, parens)| {
            let digits = cc.len() + groups.iter().map(String::len).sum::<usize>();
            if !(7..=15).contains(&digits) {
                return None;
            }
            let mut groups = groups;
            if parens {
                groups[0] = format!("({})", groups[0]);
            }
            Some(format!("{s}{cc}{sep}{}", groups.join(sep)))
        });
    let national = (
        "[2-9][0-9]{2}",
        "[0-9]{3}",
        "[0-9]{4}",
        0..5usize,
        any::<bool>(),
    )
        .prop_map(|(area, exchange, line, shape, one)| {
            let number = match shape {
                0 => format!("({area}) {exchange}-{line}"),
                1 => format!("({area}){exchange}-{line}"),
                2 => format!("{area}-{exchange}-{line}"),
                3 => format!("{area}.{exchange}.{line}"),
                _ => format!("{area} {exchange} {line}"),
            };
            if one {
                format!("1 {number}")
            } else {
                number
            }
        });
    let keyed = (
        prop::sample::select(vec![
            "phone",
            "phone_number",
            "phone_e164",
            "user_phone",
            "Mobile",
            "msisdn",
            "tel",
            "telephone",
            "sms",
        ]),
        prop::sample::select(vec!["=", ": ", "\":\"", "\": \""]),
        "[0-9]{7,15}",
    )
        .prop_map(|(key, sep, digits)| format!("{key}{sep}{digits}"));
    prop_oneof![compact, grouped, national, keyed]
}

/// Random text around an item, kept apart from it by a delimiter (a
/// number glued to a word is not a token the masking can tell from an id).
fn embedded(item: impl Strategy<Value = String>) -> impl Strategy<Value = (String, String)> {
    let delimiter = prop::sample::select(vec![
        " ", "\"", ", ", ";", "<", ">", "'", "\t", "|", "(", ")", "=",
    ]);
    (
        "\\PC{0,40}",
        delimiter.clone(),
        item,
        delimiter,
        "\\PC{0,40}",
    )
        .prop_map(|(before, d1, item, d2, after)| (format!("{before}{d1}{item}{d2}{after}"), item))
}

proptest! {
    #[test]
    fn no_email_survives_masking((line, address) in embedded(email())) {
        let masked = redact::text(&line);
        prop_assert!(!masked.contains(&address), "{line:?} -> {masked:?}");
    }

    #[test]
    fn no_phone_number_survives_masking((line, number) in embedded(phone())) {
        let masked = redact::text(&line);
        prop_assert!(!masked.contains(&number), "{line:?} -> {masked:?}");
    }

    #[test]
    fn masking_never_panics(line in any::<String>()) {
        let _ = redact::text(&line);
    }

    /// Without `@`, `%40`, `\u0040` or a digit there is nothing to mask:
    /// the line comes back as it was.
    #[test]
    fn text_without_contact_data_is_untouched(line in "[^0-9@]*") {
        prop_assume!(!line.contains("%40") && !line.contains("\\u0040"));
        prop_assert_eq!(redact::text(&line), line.as_str());
    }
}
