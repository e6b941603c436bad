//! Cost of masking one log line (`redact::text`, which every log line goes
//! through), against the masking before issue 11 (a copy kept here as
//! `before`), on the same lines in the same run. Prints the median and p99
//! per line for each kind of line, and the cost of scrubbing a line of the
//! configured secrets (`scrub`).
//!
//! Run: cargo bench -p notify-host --bench redact
//! Optional: REDACT_BENCH_ITERATIONS (default 200000 per line kind).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use notify_host::redact;
use notify_host::scrub::Secrets;

/// The masking as it was before issue 11: `@` e-mails and `+`/`%2B` E.164.
mod before {
    use std::borrow::Cow;
    use std::sync::LazyLock;

    use regex::Regex;

    static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"([A-Za-z0-9])[A-Za-z0-9._%+\-]*@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)")
            .unwrap_or_else(|e| unreachable!("static regex: {e}"))
    });
    static PHONE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(\+|%2B)([1-9])(\d{2,10})(\d{4})\b")
            .unwrap_or_else(|e| unreachable!("static regex: {e}"))
    });

    pub fn text(s: &str) -> Cow<'_, str> {
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
}

/// A delivered-outcome line as the host writes it at `info` (no contact
/// data: the common case).
const PLAIN: &str = r#"{"timestamp":"2026-12-01T10:00:00.123456Z","level":"INFO","message":"channel outcome","event_id":"9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f","channel":"email","outcome":"delivered","attempts":1,"provider_status":200,"elapsed_ms":12,"target":"notify_host::pipeline::worker","span":{"topic":"appointments.created","partition":3,"offset":1234567890,"name":"event"}}"#;
/// A plugin's output line with an e-mail address and a phone number.
const PERSONAL: &str = r#"{"timestamp":"2026-12-01T10:00:00.123456Z","level":"INFO","message":"hostile: rendering 9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f for user@example.com, sms to +15555550123","plugin":"hostile","channel":"email","stream":"stdout"}"#;
/// A short text-format line.
const SHORT: &str = "2026-12-01T10:00:00.123456Z  INFO notify_host: listening on 127.0.0.1:9090";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Times `f` in batches of 100 calls (one call is well under the clock's
/// resolution), reporting per call.
fn measure(label: &str, iterations: usize, mut f: impl FnMut() -> usize) {
    const BATCH: usize = 100;
    let mut samples = Vec::with_capacity(iterations / BATCH);
    let mut sink = 0usize;
    for _ in 0..(iterations / BATCH) {
        let started = Instant::now();
        for _ in 0..BATCH {
            sink = sink.wrapping_add(f());
        }
        samples.push(started.elapsed() / BATCH as u32);
    }
    black_box(sink);
    samples.sort();
    println!(
        "{label:<34} median={:>7.0} ns  p99={:>7.0} ns",
        percentile(&samples, 0.5).as_secs_f64() * 1e9,
        percentile(&samples, 0.99).as_secs_f64() * 1e9
    );
}

fn len(c: Cow<'_, str>) -> usize {
    c.len()
}

fn main() {
    let iterations: usize = std::env::var("REDACT_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let secrets = Secrets::new([
        "key-mailgun-secret-4f9a1c",
        "api:key-mailgun-secret-4f9a1c",
        "twilio-token-secret-77e2b0",
        "AC0123456789abcdef0123456789abcdef:twilio-token-secret-77e2b0",
    ]);
    for (kind, line) in [("plain", PLAIN), ("personal", PERSONAL), ("short", SHORT)] {
        measure(&format!("before  {kind}"), iterations, || {
            len(before::text(black_box(line)))
        });
        measure(&format!("after   {kind}"), iterations, || {
            len(redact::text(black_box(line)))
        });
        measure(&format!("scrub   {kind}"), iterations, || {
            len(secrets.scrub(black_box(line)))
        });
    }
}
