//! Appointment times in words: the absolute time in the channel's zone and
//! format (`{time}`), and the time left until it (`{time_until}`). The caller
//! passes "now" in: nothing here reads a clock, so every answer is testable.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, TimeZone as _};
use chrono_tz::Tz;

use crate::Settings;

/// Appointment times are shown in UTC unless the operator names a zone: it is
/// the one zone that is right for nobody in particular but wrong for nobody
/// by surprise.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// "Friday, February 20, 2026 at 3:00 PM UTC": a full date, so a reader in
/// another zone cannot misread the day, and the zone abbreviation last.
pub const DEFAULT_TIME_FORMAT: &str = "%A, %B %-d, %Y at %-I:%M %p %Z";

/// How a channel shows the appointment time: settings `time_zone` (an IANA
/// name) and `time_format` (chrono strftime).
#[derive(Debug, Clone)]
pub struct TimeStyle {
    zone: Tz,
    format: String,
}

impl TimeStyle {
    /// Reads and checks `time_zone` and `time_format`, reporting every
    /// problem, each naming its key.
    pub fn from_settings(settings: &Settings<'_>) -> Result<TimeStyle, Vec<String>> {
        let zone = settings.get_or("time_zone", DEFAULT_TIME_ZONE);
        let format = settings.get_or("time_format", DEFAULT_TIME_FORMAT);
        TimeStyle::new(zone, format)
    }

    pub fn new(zone: &str, format: &str) -> Result<TimeStyle, Vec<String>> {
        let mut problems = Vec::new();
        let parsed_zone = zone.trim().parse::<Tz>();
        if parsed_zone.is_err() {
            problems.push(format!(
                "setting `time_zone`: `{zone}` is not an IANA time zone name (e.g. `Europe/Berlin`, `UTC`)"
            ));
        }
        if let Err(problem) = check_format(format) {
            problems.push(problem);
        }
        match parsed_zone {
            Ok(zone) if problems.is_empty() => Ok(TimeStyle {
                zone,
                format: format.to_string(),
            }),
            _ => Err(problems),
        }
    }

    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// Formats an RFC 3339 timestamp in the configured zone. The error names
    /// the event field, as it ends up in a render rejection.
    pub fn format(&self, rfc3339: &str) -> Result<String, String> {
        let instant = parse_rfc3339(rfc3339)?;
        format_in(&self.zone, &self.format, &instant).ok_or_else(|| {
            format!(
                "setting `time_format`: `{}` cannot format a date",
                self.format
            )
        })
    }
}

/// Below this the appointment is "now": a reminder read a few seconds early
/// or late must not say "in 0 minutes" or "in -1 minutes".
const NOW_BELOW_MS: i128 = MINUTE_MS;

/// Below this many (rounded) minutes the wait is told in hours and minutes
/// ("in 1 hour 30 minutes"): close to the appointment the minutes matter.
/// From here on it is whole hours, because a reminder fires a little after
/// its due time and "in 23 hours 59 minutes" would be a false countdown.
const MINUTES_UP_TO: i128 = 6 * 60;

/// From this many (rounded) hours on the wait is told in days: "in 24 hours"
/// stays exact for a day-before reminder, "in 2 days" reads better than
/// "in 48 hours".
const HOURS_BELOW: i128 = 48;

const MINUTE_MS: i128 = 60_000;
const HOUR_MS: i128 = 60 * MINUTE_MS;
const DAY_MS: i128 = 24 * HOUR_MS;

/// The time from `now_unix_ms` until the RFC 3339 time `rfc3339`, in words
/// (see [`wait_in_words`]). The error names `appointment.time`.
pub fn time_until(rfc3339: &str, now_unix_ms: u64) -> Result<String, String> {
    let at_ms = i128::from(parse_rfc3339(rfc3339)?.timestamp_millis());
    Ok(wait_in_words(at_ms - i128::from(now_unix_ms)))
}

/// A wait of `ms` milliseconds in words, each unit rounded to the nearest
/// (half up):
/// - under a minute, or already past: `now`;
/// - under an hour: `in 45 minutes` (`in 1 minute`);
/// - under 6 hours: `in 1 hour 30 minutes`, `in 2 hours` (no `0 minutes`);
/// - under 48 hours: `in 24 hours`;
/// - beyond: `in 2 days`.
///
/// Each step is decided on the value it shows, so 59 minutes 30 seconds is
/// `in 1 hour`, never `in 60 minutes`.
pub fn wait_in_words(ms: i128) -> String {
    if ms < NOW_BELOW_MS {
        return "now".to_string();
    }
    let rounded = |unit: i128| (ms + unit / 2) / unit;
    let minutes = rounded(MINUTE_MS);
    if minutes < 60 {
        return format!("in {}", count(minutes, "minute"));
    }
    if minutes < MINUTES_UP_TO {
        let (h, m) = (minutes / 60, minutes % 60);
        return match m {
            0 => format!("in {}", count(h, "hour")),
            m => format!("in {} {}", count(h, "hour"), count(m, "minute")),
        };
    }
    let hours = rounded(HOUR_MS);
    if hours < HOURS_BELOW {
        return format!("in {}", count(hours, "hour"));
    }
    format!("in {}", count(rounded(DAY_MS), "day"))
}

/// `1 hour`, `2 hours`.
fn count(n: i128, unit: &str) -> String {
    match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

/// Parses an RFC 3339 timestamp, naming `appointment.time` if it is not one.
pub fn parse_rfc3339(value: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map_err(|e| format!("appointment.time `{value}` is not an RFC 3339 timestamp ({e})"))
}

fn check_format(format: &str) -> Result<(), String> {
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!(
            "setting `time_format`: `{format}` has an unknown or incomplete `%` specifier (write `%%` for a literal %)"
        ));
    }
    // Some specifiers parse but cannot format a zoned date; catch them now
    // rather than on every event.
    let probe = DateTime::<chrono::Utc>::UNIX_EPOCH.fixed_offset();
    match format_in(&Tz::UTC, format, &probe) {
        Some(_) => Ok(()),
        None => Err(format!(
            "setting `time_format`: `{format}` cannot format a date"
        )),
    }
}

/// `None` when chrono refuses the format: its `Display` reports that as a
/// `fmt::Error`, which `to_string()` would turn into a panic.
fn format_in(zone: &Tz, format: &str, instant: &DateTime<FixedOffset>) -> Option<String> {
    let local = zone.from_utc_datetime(&instant.naive_utc());
    let mut out = String::new();
    write!(
        out,
        "{}",
        local.format_with_items(StrftimeItems::new(format))
    )
    .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(zone: &str, format: &str) -> TimeStyle {
        match TimeStyle::new(zone, format) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn default_format_in_utc_and_in_a_zone_with_dst() {
        let utc = style(DEFAULT_TIME_ZONE, DEFAULT_TIME_FORMAT);
        assert_eq!(
            utc.format("2026-02-20T15:00:00Z"),
            Ok("Friday, February 20, 2026 at 3:00 PM UTC".to_string())
        );
        let ny = style("America/New_York", DEFAULT_TIME_FORMAT);
        assert_eq!(
            ny.format("2026-02-20T15:00:00Z"),
            Ok("Friday, February 20, 2026 at 10:00 AM EST".to_string())
        );
        assert_eq!(
            ny.format("2026-07-01T15:00:00+00:00"),
            Ok("Wednesday, July 1, 2026 at 11:00 AM EDT".to_string())
        );
        assert_eq!(ny.zone_name(), "America/New_York");
    }

    #[test]
    fn offsets_in_the_input_are_honoured() {
        let berlin = style("Europe/Berlin", "%Y-%m-%d %H:%M %Z");
        assert_eq!(
            berlin.format("2026-02-20T10:00:00-05:00"),
            Ok("2026-02-20 16:00 CET".to_string())
        );
    }

    #[test]
    fn bad_times_name_the_field() {
        let utc = style("UTC", DEFAULT_TIME_FORMAT);
        for bad in [
            "",
            "tomorrow",
            "2026-02-20",
            "2026-02-20 15:00",
            "2026-02-30T15:00:00Z",
        ] {
            let err = utc.format(bad).expect_err("an error");
            assert!(err.starts_with("appointment.time"), "{bad}: {err}");
        }
    }

    #[test]
    fn settings_problems_are_all_reported_with_their_keys() {
        let owned = vec![
            ("time_zone".to_string(), "Mars/Olympus_Mons".to_string()),
            ("time_format".to_string(), "%Y %Q".to_string()),
        ];
        let problems =
            TimeStyle::from_settings(&Settings::from_pairs(&owned)).expect_err("an error");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`time_zone`") && problems[0].contains("Mars/Olympus_Mons"));
        assert!(problems[1].contains("`time_format`") && problems[1].contains("%Y %Q"));
        for bad in ["%", "100%", "%-", "%:"] {
            assert!(TimeStyle::new("UTC", bad).is_err(), "{bad}");
        }
        assert!(TimeStyle::new("UTC", "100%% sure at %H:%M").is_ok());
    }

    #[test]
    fn waits_in_words() {
        const S: i128 = 1000;
        const M: i128 = 60 * S;
        const H: i128 = 60 * M;
        const D: i128 = 24 * H;
        let cases = [
            // Past and under a minute.
            (-3 * D, "now"),
            (-1, "now"),
            (0, "now"),
            (59 * S + 999, "now"),
            // Minutes, rounded to the nearest.
            (M, "in 1 minute"),
            (M + 29 * S + 999, "in 1 minute"),
            (M + 30 * S, "in 2 minutes"),
            (45 * M, "in 45 minutes"),
            (59 * M + 29 * S, "in 59 minutes"),
            (59 * M + 30 * S, "in 1 hour"),
            // Hours and minutes below 6 hours.
            (H, "in 1 hour"),
            (H + M, "in 1 hour 1 minute"),
            (H + 30 * M, "in 1 hour 30 minutes"),
            (2 * H - 10 * S, "in 2 hours"),
            (2 * H + 2 * M, "in 2 hours 2 minutes"),
            (5 * H + 59 * M + 29 * S, "in 5 hours 59 minutes"),
            // Whole hours from 6 hours on.
            (5 * H + 59 * M + 30 * S, "in 6 hours"),
            (6 * H + 29 * M + 59 * S, "in 6 hours"),
            (6 * H + 30 * M, "in 7 hours"),
            (24 * H - 3 * M, "in 24 hours"),
            (24 * H + 20 * M, "in 24 hours"),
            (47 * H + 29 * M, "in 47 hours"),
            // Days from 48 hours on.
            (47 * H + 30 * M, "in 2 days"),
            (2 * D, "in 2 days"),
            (2 * D + 11 * H + 59 * M, "in 2 days"),
            (2 * D + 12 * H, "in 3 days"),
            (365 * D, "in 365 days"),
        ];
        for (ms, want) in cases {
            assert_eq!(wait_in_words(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn time_until_reads_the_offset_and_names_the_field() {
        // 2026-02-20T15:00:00Z
        let at_ms: u64 = 1_771_599_600_000;
        let cases = [
            (
                "2026-02-20T15:00:00Z",
                at_ms - 24 * 3_600_000,
                "in 24 hours",
            ),
            (
                "2026-02-20T16:00:00+01:00",
                at_ms - 90 * 60_000,
                "in 1 hour 30 minutes",
            ),
            ("2026-02-20T15:00:00Z", at_ms, "now"),
            ("2026-02-20T15:00:00Z", at_ms + 1, "now"),
            ("2026-02-20T15:00:00Z", 0, "in 20505 days"),
        ];
        for (time, now, want) in cases {
            assert_eq!(
                time_until(time, now),
                Ok(want.to_string()),
                "{time} at {now}"
            );
        }
        let err = time_until("soon", at_ms).expect_err("an error");
        assert!(err.starts_with("appointment.time `soon`"), "{err}");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let s = TimeStyle::from_settings(&Settings::default()).map_err(|e| e.join("; "));
        assert_eq!(s.map(|s| s.zone_name()), Ok("UTC"));
    }
}
