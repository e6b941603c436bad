//! Whether a message is still worth sending: the one place that decides
//! `expired`, tested as a table.
//!
//! A confirmation is worth nothing once its appointment has begun (its
//! `useful-until`, which the plugin contract also hands the plugin); any
//! message is worth nothing once its event is older than
//! `pipeline.max_event_age`, when that is set. After an outage, or a replay
//! from `earliest`, this is what keeps the host from confirming
//! appointments that are already over.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Why the message should not be sent at `now`, if it should not.
pub fn expired(
    now: DateTime<Utc>,
    useful_until: Option<DateTime<Utc>>,
    event_age: Option<TimeDelta>,
    max_event_age: Option<Duration>,
) -> Option<String> {
    if let Some(until) = useful_until.filter(|u| now >= *u) {
        return Some(format!(
            "not sent: its useful time ended at {} (the appointment's start), {} ago",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humanize(now - until)
        ));
    }
    let (Some(age), Some(max)) = (event_age, max_event_age) else {
        return None;
    };
    let max_delta = TimeDelta::from_std(max).unwrap_or(TimeDelta::MAX);
    (age > max_delta).then(|| {
        format!(
            "not sent: the event is {} old, over pipeline.max_event_age ({})",
            humanize(age),
            humantime::format_duration(max)
        )
    })
}

/// A duration to whole seconds, as humans read it (`3h 2m 5s`).
fn humanize(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_expires() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let at = |offset_s: i64| Some(now + TimeDelta::seconds(offset_s));
        let age = |s: i64| Some(TimeDelta::seconds(s));
        let hours = |h: u64| Some(Duration::from_secs(h * 3600));
        // (useful until, event age, max age, expected reason start or None)
        type Case = (
            Option<DateTime<Utc>>,
            Option<TimeDelta>,
            Option<Duration>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (None, None, None, None),
            (at(60), None, None, None),
            (at(0), None, None, Some("not sent: its useful time ended at 2026-12-02T10:00:00Z")),
            (at(-3600), None, None, Some("not sent: its useful time ended at 2026-12-02T09:00:00Z (the appointment's start), 1h ago")),
            // No limit configured: any age goes.
            (at(60), age(86_400 * 30), None, None),
            (at(60), age(3600), hours(2), None),
            (None, age(3 * 3600), hours(2), Some("not sent: the event is 3h old, over pipeline.max_event_age (2h)")),
            // The appointment rule speaks first.
            (at(-60), age(3 * 3600), hours(2), Some("not sent: its useful time ended")),
            // An age unknown (no occurred_at, no timestamp) never expires.
            (None, None, hours(2), None),
        ];
        for (until, event_age, max, want) in cases {
            let got = expired(now, *until, *event_age, *max);
            match want {
                None => assert_eq!(got, None, "{until:?} {event_age:?} {max:?}"),
                Some(prefix) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(prefix)),
                    "{until:?} {event_age:?} {max:?}: {got:?}"
                ),
            }
        }
    }
}
