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
    fn defaults_apply_when_unset() {
        let s = TimeStyle::from_settings(&Settings::default()).map_err(|e| e.join("; "));
        assert_eq!(s.map(|s| s.zone_name()), Ok("UTC"));
    }
}
