//! Quiet hours: where a message due inside a channel's quiet window is sent
//! instead.
//!
//! One decision lives here, [`place`], and it is pure: no clock reads, no
//! I/O, the zone passed in. Its invariants:
//! - a message due outside quiet hours is never moved;
//! - a message due inside is moved to an edge of the window it is in: the end
//!   ([`Moved::Later`]) when that end is still before the deadline, else one
//!   minute before the start ([`Moved::Earlier`]);
//! - when `due < deadline`, the placement is `< deadline` too: a reminder is
//!   never pushed past the appointment it reminds of.
//!
//! Wall-clock times are read in the zone given (the appointment's, else the
//! scheduler's). Across DST changes a local `from`/`to` that does not exist
//! (spring forward) means the first instant after the gap, and one that exists
//! twice (fall back) means the earlier of the two: the window starts and ends
//! when the wall clock first shows those times (the exceptions, both in
//! corners no real window meets, are spelled out at `window_end` and
//! [`place`]).

use chrono::{
    DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone,
    Utc,
};
use chrono_tz::Tz;

/// A channel's quiet window in local wall-clock time, `[from, to)`. It spans
/// midnight when `to < from` (21:00-08:00); it is never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    from: NaiveTime,
    to: NaiveTime,
}

impl QuietHours {
    /// Parses `"21:00"` / `"08:00"` (HH:MM, 24h). Errors name which of
    /// `from`/`to` is wrong; `from == to` is an error because an empty window
    /// is almost certainly a typo for something else.
    pub fn parse(from: &str, to: &str) -> Result<QuietHours, String> {
        let from_t = hh_mm(from).ok_or_else(|| bad_time("from", from))?;
        let to_t = hh_mm(to).ok_or_else(|| bad_time("to", to))?;
        if from_t == to_t {
            return Err(format!(
                "quiet_hours: from and to are both \"{from}\": empty window; remove quiet_hours instead"
            ));
        }
        Ok(QuietHours {
            from: from_t,
            to: to_t,
        })
    }

    /// Where the window starts (local, inclusive).
    pub fn from(&self) -> NaiveTime {
        self.from
    }

    /// Where the window ends (local, exclusive).
    pub fn to(&self) -> NaiveTime {
        self.to
    }

    /// Whether local time `t` is inside `[from, to)`: `from` itself is quiet,
    /// `to` itself is not.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.spans_midnight() {
            t >= self.from || t < self.to
        } else {
            self.from <= t && t < self.to
        }
    }

    fn spans_midnight(&self) -> bool {
        self.to < self.from
    }

    /// The local start and end of the window that contains local time `t` on
    /// local date `day` (`t` must be inside). For a window spanning midnight
    /// that is yesterday's `from` when `t` is after midnight, and tomorrow's
    /// `to` when `t` is before it. `None` only at chrono's date limits.
    fn window_around(
        &self,
        day: NaiveDate,
        t: NaiveTime,
    ) -> Option<(NaiveDateTime, NaiveDateTime)> {
        let (start_day, end_day) = if !self.spans_midnight() {
            (day, day)
        } else if t >= self.from {
            (day, day.checked_add_days(Days::new(1))?)
        } else {
            (day.checked_sub_days(Days::new(1))?, day)
        };
        Some((start_day.and_time(self.from), end_day.and_time(self.to)))
    }
}

/// Strict `HH:MM`: two digits each, 00:00..=23:59. "8:00" and "21:00:00" are
/// refused rather than guessed at, so config files stay uniform.
fn hh_mm(s: &str) -> Option<NaiveTime> {
    let &[h1, h2, b':', m1, m2] = s.as_bytes() else {
        return None;
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| u32::from(c - b'0'));
    let (h, m) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
    NaiveTime::from_hms_opt(h, m, 0)
}

fn bad_time(which: &str, value: &str) -> String {
    format!(
        "quiet_hours.{which}: \"{}\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")",
        value.escape_debug()
    )
}

/// Whether (and which way) [`place`] moved a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Due outside quiet hours: sent when due.
    No,
    /// Moved to the end of the quiet window.
    Later,
    /// Moved to one minute before the quiet window began, because its end is
    /// not before the deadline.
    Earlier,
}

/// When a message is sent and whether quiet hours moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub at: DateTime<Utc>,
    pub moved: Moved,
}

/// One minute: how far before the window's start an [`Moved::Earlier`]
/// message goes. `from` has minute precision, so `from - 1 min` is the last
/// whole minute outside the window, whatever `to` is.
const BEFORE_START: TimeDelta = TimeDelta::minutes(1);

/// Where a message due at `due` is sent, given the channel's quiet hours read
/// in zone `tz` and the appointment's start `deadline` (none: no limit).
///
/// - `due` outside quiet hours (local `to` is outside, `from` inside):
///   unchanged, [`Moved::No`].
/// - Inside, and the end of this window (the next local `to`) is before the
///   deadline: moved to that end, [`Moved::Later`].
/// - Inside, and that end is at or after the deadline (a reminder sent then
///   would arrive after, or as, the appointment starts): moved to one minute
///   before the local `from` that began this window, [`Moved::Earlier`].
///
/// Why `Earlier` needs no further fallback: the window began at or before
/// `due` (that is what "inside" means), so one minute before its start is
/// strictly before `due`, and hence before the deadline whenever `due` is.
/// A window whose quiet-free stretch lies wholly inside a spring-forward gap
/// (quiet 02:54-02:00 on the night New York jumps from 02:00 to 03:00) has no
/// quiet-free minute that day: the message then goes at the jump (or a minute
/// before it), which is already the next window. Real windows (21:00-08:00)
/// never meet this.
///
/// A reminder already due at or after its deadline is the caller's to expire;
/// this function still returns a placement for it (by the same rules) rather
/// than panicking.
pub fn place(
    due: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    quiet: &QuietHours,
    tz: Tz,
) -> Placement {
    let unmoved = Placement {
        at: due,
        moved: Moved::No,
    };
    let local = due.with_timezone(&tz).naive_local();
    if !quiet.contains(local.time()) {
        return unmoved;
    }
    let Some((start, end)) = quiet.window_around(local.date(), local.time()) else {
        return unmoved;
    };
    if let Some(end) = window_end(tz, end, due) {
        if deadline.is_none_or(|d| end < d) {
            return Placement {
                at: end,
                moved: Moved::Later,
            };
        }
    }
    let start = window_start(tz, start, due);
    Placement {
        at: start.checked_sub_signed(BEFORE_START).unwrap_or(start),
        moved: Moved::Earlier,
    }
}

/// The instant the window containing `due` ends: the earliest instant the
/// local clock reads `end`, unless that one is not after `due`. That happens
/// only when `to` falls in the repeated hour of a fall-back and `due` is in
/// its second pass (quiet 22:00-02:30, due 02:15 of the second pass: the first
/// 02:30 is already behind), and then the second 02:30 is the end.
/// `None` never happens with tzdb zones; the caller then moves earlier.
fn window_end(tz: Tz, end: NaiveDateTime, due: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (first, second) = instants(tz, end);
    [Some(first), second]
        .into_iter()
        .flatten()
        .find(|&t| t > due)
}

/// The instant the window containing `due` began: the earliest instant the
/// local clock reads `start`. That is never after `due` (`due`'s local time
/// is at or after `start`), but `due` stands in if it somehow were, so an
/// `Earlier` placement is always before `due`.
fn window_start(tz: Tz, start: NaiveDateTime, due: DateTime<Utc>) -> DateTime<Utc> {
    let (first, _) = instants(tz, start);
    first.min(due)
}

/// Every instant whose local time in `tz` is `local`: one normally, two in a
/// fall-back's repeated hour (earlier first). For a local time inside a
/// spring-forward gap (which no instant has), the first instant after the gap.
fn instants(tz: Tz, local: NaiveDateTime) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (t.to_utc(), None),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.to_utc(), b.to_utc());
            (a.min(b), Some(a.max(b)))
        }
        LocalResult::None => (after_gap(tz, local), None),
    }
}

/// Longest search for the end of a gap. tzdb's longest is 24 h (Pacific/Apia
/// skipped 2011-12-30); twice that leaves room without looping unbounded.
const MAX_GAP_MINUTES: u32 = 48 * 60;

/// The first instant after the spring-forward gap that swallows `local`: the
/// transition itself, whose local time is the gap's end.
///
/// chrono-tz does not expose transitions, so: step forward a minute at a time
/// to the first local time that exists, then back a second at a time while the
/// instant before is still past `local` (before the transition every local
/// time is before the gap, so before `local`). Transitions fall on whole
/// seconds, so this lands on the transition exactly.
fn after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let one_second = TimeDelta::seconds(1);
    let mut probe = local;
    for _ in 0..MAX_GAP_MINUTES {
        let Some(next) = probe.checked_add_signed(TimeDelta::minutes(1)) else {
            break;
        };
        probe = next;
        if let Some(found) = tz.from_local_datetime(&probe).earliest() {
            let mut at = found.to_utc();
            for _ in 0..60 {
                match at.checked_sub_signed(one_second) {
                    Some(prev) if prev.with_timezone(&tz).naive_local() > local => at = prev,
                    _ => break,
                }
            }
            return at;
        }
    }
    // Unreachable with tzdb data: read the wall time with the offset in
    // force a day earlier, which is what the zone said before the gap.
    let before = local.checked_sub_days(Days::new(1)).unwrap_or(local);
    let offset = tz.offset_from_utc_datetime(&before).fix();
    local.checked_sub_offset(offset).unwrap_or(local).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Australia, Europe, UTC};

    fn q(from: &str, to: &str) -> QuietHours {
        QuietHours::parse(from, to).expect("valid quiet hours in test")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("RFC 3339 in test")
            .to_utc()
    }

    /// `(from, to)` as parsed.
    type Window = (NaiveTime, NaiveTime);

    #[test]
    fn parse_table() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).expect("valid time");
        #[rustfmt::skip]
        let cases: &[(&str, &str, Result<Window, &str>)] = &[
            ("21:00", "08:00", Ok((t(21, 0), t(8, 0)))),
            ("13:00", "14:00", Ok((t(13, 0), t(14, 0)))),
            ("00:00", "23:59", Ok((t(0, 0), t(23, 59)))),
            ("25:00", "08:00", Err("quiet_hours.from: \"25:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:60", "08:00", Err("quiet_hours.from: \"21:60\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:00", "24:00", Err("quiet_hours.to: \"24:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:00", "8:00", Err("quiet_hours.to: \"8:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:00:00", "08:00", Err("quiet_hours.from: \"21:00:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("", "08:00", Err("quiet_hours.from: \"\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:00", "ab:cd", Err("quiet_hours.to: \"ab:cd\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("21:00", "+8:00", Err("quiet_hours.to: \"+8:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("２1:00", "08:00", Err("quiet_hours.from: \"２1:00\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            // Both wrong: the first is named.
            ("x", "y", Err("quiet_hours.from: \"x\" is not a time of day (HH:MM, 24h, e.g. \"21:00\")")),
            ("08:00", "08:00", Err("quiet_hours: from and to are both \"08:00\": empty window; remove quiet_hours instead")),
        ];
        for (from, to, want) in cases {
            let got = QuietHours::parse(from, to).map(|w| (w.from(), w.to()));
            assert_eq!(got, want.map_err(str::to_string), "parse({from:?}, {to:?})");
        }
    }

    #[test]
    fn contains_table() {
        let t = |h, m, s| NaiveTime::from_hms_opt(h, m, s).expect("valid time");
        let cases = [
            ("21:00", "08:00", t(20, 59, 59), false),
            ("21:00", "08:00", t(21, 0, 0), true), // from is quiet
            ("21:00", "08:00", t(23, 59, 59), true),
            ("21:00", "08:00", t(0, 0, 0), true),
            ("21:00", "08:00", t(7, 59, 59), true),
            ("21:00", "08:00", t(8, 0, 0), false), // to is not
            ("21:00", "08:00", t(12, 0, 0), false),
            ("13:00", "14:00", t(12, 59, 59), false),
            ("13:00", "14:00", t(13, 0, 0), true),
            ("13:00", "14:00", t(13, 59, 59), true),
            ("13:00", "14:00", t(14, 0, 0), false),
            ("00:00", "06:00", t(0, 0, 0), true),
            ("00:00", "06:00", t(23, 59, 0), false),
        ];
        for (from, to, time, want) in cases {
            assert_eq!(
                q(from, to).contains(time),
                want,
                "{from}-{to} contains {time}"
            );
        }
    }

    /// `(what, zone, from, to, due, deadline, expected at, expected moved)`.
    /// Times are written with the local offset they have in that zone, so
    /// each row reads as wall-clock time.
    type Row = (
        &'static str,
        Tz,
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static str,
        Moved,
    );

    #[test]
    fn place_table() {
        use Moved::{Earlier, Later, No};
        let b = Europe::Berlin;
        let ny = America::New_York;
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // Plain cases, Berlin summer (+02:00).
            ("outside, midday", b, "21:00", "08:00", "2026-06-10T12:00:00+02:00", None, "2026-06-10T12:00:00+02:00", No),
            ("one second before from", b, "21:00", "08:00", "2026-06-10T20:59:59+02:00", None, "2026-06-10T20:59:59+02:00", No),
            ("exactly at from is inside", b, "21:00", "08:00", "2026-06-10T21:00:00+02:00", None, "2026-06-11T08:00:00+02:00", Later),
            ("evening, no deadline", b, "21:00", "08:00", "2026-06-10T22:30:00+02:00", None, "2026-06-11T08:00:00+02:00", Later),
            ("after midnight: window began the day before", b, "21:00", "08:00", "2026-06-11T07:30:00+02:00", None, "2026-06-11T08:00:00+02:00", Later),
            ("exactly at to is outside", b, "21:00", "08:00", "2026-06-11T08:00:00+02:00", None, "2026-06-11T08:00:00+02:00", No),
            ("one second before to", b, "21:00", "08:00", "2026-06-11T07:59:59+02:00", None, "2026-06-11T08:00:00+02:00", Later),
            // Deadlines.
            ("appointment 11:00: later is fine", b, "21:00", "08:00", "2026-06-11T07:30:00+02:00", Some("2026-06-11T11:00:00+02:00"), "2026-06-11T08:00:00+02:00", Later),
            ("appointment 08:30: 08:00 is still before it", b, "21:00", "08:00", "2026-06-11T07:30:00+02:00", Some("2026-06-11T08:30:00+02:00"), "2026-06-11T08:00:00+02:00", Later),
            ("end one minute before appointment", b, "21:00", "08:00", "2026-06-11T07:00:00+02:00", Some("2026-06-11T08:01:00+02:00"), "2026-06-11T08:00:00+02:00", Later),
            ("appointment exactly at window end: earlier, previous evening", b, "21:00", "08:00", "2026-06-11T07:00:00+02:00", Some("2026-06-11T08:00:00+02:00"), "2026-06-10T20:59:00+02:00", Earlier),
            ("appointment inside the window: earlier, previous evening", b, "21:00", "08:00", "2026-06-11T06:00:00+02:00", Some("2026-06-11T07:00:00+02:00"), "2026-06-10T20:59:00+02:00", Earlier),
            ("evening, appointment same night: earlier, same evening", b, "21:00", "08:00", "2026-06-10T22:00:00+02:00", Some("2026-06-10T23:00:00+02:00"), "2026-06-10T20:59:00+02:00", Earlier),
            ("deadline far ahead", b, "21:00", "08:00", "2026-06-10T23:00:00+02:00", Some("2026-07-01T09:00:00+02:00"), "2026-06-11T08:00:00+02:00", Later),
            ("outside: a deadline changes nothing", b, "21:00", "08:00", "2026-06-10T12:00:00+02:00", Some("2026-06-10T12:30:00+02:00"), "2026-06-10T12:00:00+02:00", No),
            // A window within one day.
            ("lunch window: inside", b, "13:00", "14:00", "2026-06-10T13:30:00+02:00", None, "2026-06-10T14:00:00+02:00", Later),
            ("lunch window: at to", b, "13:00", "14:00", "2026-06-10T14:00:00+02:00", None, "2026-06-10T14:00:00+02:00", No),
            ("lunch window: before from", b, "13:00", "14:00", "2026-06-10T12:59:00+02:00", None, "2026-06-10T12:59:00+02:00", No),
            ("lunch window: appointment at 14:00", b, "13:00", "14:00", "2026-06-10T13:00:00+02:00", Some("2026-06-10T14:00:00+02:00"), "2026-06-10T12:59:00+02:00", Earlier),
            ("window from midnight: earlier is the previous day", b, "00:00", "06:00", "2026-06-10T05:00:00+02:00", Some("2026-06-10T05:30:00+02:00"), "2026-06-09T23:59:00+02:00", Earlier),
            // Berlin spring forward: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z).
            ("spring: window crosses the change, end in CEST", b, "21:00", "08:00", "2026-03-28T22:00:00+01:00", None, "2026-03-29T08:00:00+02:00", Later),
            ("spring: earlier lands in CET, the evening before", b, "21:00", "08:00", "2026-03-29T07:00:00+02:00", Some("2026-03-29T08:00:00+02:00"), "2026-03-28T20:59:00+01:00", Earlier),
            ("spring: to 02:30 does not exist: first instant after the gap", b, "22:00", "02:30", "2026-03-29T01:30:00+01:00", None, "2026-03-29T03:00:00+02:00", Later),
            ("spring: from 02:30 does not exist: window began at 03:00", b, "02:30", "06:00", "2026-03-29T05:00:00+02:00", Some("2026-03-29T06:00:00+02:00"), "2026-03-29T01:59:00+01:00", Earlier),
            ("spring: 01:59 CET is before a 02:30 window", b, "02:30", "06:00", "2026-03-29T01:59:00+01:00", None, "2026-03-29T01:59:00+01:00", No),
            // Berlin fall back: 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z).
            ("fall: window crosses the change, end in CET", b, "21:00", "08:00", "2026-10-24T22:00:00+02:00", None, "2026-10-25T08:00:00+01:00", Later),
            ("fall: earlier lands in CEST, the evening before", b, "21:00", "08:00", "2026-10-25T07:00:00+01:00", Some("2026-10-25T08:00:00+01:00"), "2026-10-24T20:59:00+02:00", Earlier),
            ("fall: to 02:30 twice: the first", b, "22:00", "02:30", "2026-10-25T01:00:00+02:00", None, "2026-10-25T02:30:00+02:00", Later),
            ("fall: to 02:30 twice, due in the second pass: the second", b, "22:00", "02:30", "2026-10-25T02:15:00+01:00", None, "2026-10-25T02:30:00+01:00", Later),
            ("fall: from 02:30 twice: window began at the first", b, "02:30", "06:00", "2026-10-25T05:00:00+01:00", Some("2026-10-25T06:00:00+01:00"), "2026-10-25T02:29:00+02:00", Earlier),
            // New York (EDT -04:00 in summer, EST -05:00 in winter).
            ("new york: later", ny, "21:00", "08:00", "2026-07-01T06:00:00-04:00", None, "2026-07-01T08:00:00-04:00", Later),
            ("new york: earlier", ny, "21:00", "08:00", "2026-07-01T06:00:00-04:00", Some("2026-07-01T08:00:00-04:00"), "2026-06-30T20:59:00-04:00", Earlier),
            ("new york: spring forward 2026-03-08", ny, "21:00", "08:00", "2026-03-07T23:00:00-05:00", None, "2026-03-08T08:00:00-04:00", Later),
            ("new york: fall back 2026-11-01, earlier into EDT", ny, "21:00", "08:00", "2026-11-01T07:30:00-05:00", Some("2026-11-01T08:00:00-05:00"), "2026-10-31T20:59:00-04:00", Earlier),
            ("new york: 12:00Z is 08:00 EDT, outside", ny, "21:00", "08:00", "2026-07-01T12:00:00Z", None, "2026-07-01T12:00:00Z", No),
            // The same instant in UTC and in Berlin: the zone decides.
            ("utc: 06:30Z is quiet in UTC", UTC, "21:00", "08:00", "2026-06-11T06:30:00Z", None, "2026-06-11T08:00:00Z", Later),
            ("berlin: 06:30Z is 08:30 local, outside", b, "21:00", "08:00", "2026-06-11T06:30:00Z", None, "2026-06-11T06:30:00Z", No),
            ("spring: every quiet-free minute is in the gap: the end is the jump", ny, "02:54", "02:00", "2026-03-07T02:54:00-05:00", None, "2026-03-08T03:00:00-04:00", Later),
            // Lord Howe moves its clocks by 30 minutes (2026-10-04 02:00 -> 02:30).
            ("lord howe: to in a 30-minute gap", Australia::Lord_Howe, "22:00", "02:15", "2026-10-04T01:00:00+10:30", None, "2026-10-04T02:30:00+11:00", Later),
        ];
        for (what, tz, from, to, due, deadline, want_at, want_moved) in rows {
            let got = place(at(due), deadline.map(at), &q(from, to), *tz);
            assert_eq!(
                got,
                Placement {
                    at: at(want_at),
                    moved: *want_moved
                },
                "{what}: got {}",
                got.at.with_timezone(tz)
            );
        }
        assert!(rows.len() >= 20);
    }

    #[test]
    fn after_gap_is_the_transition() {
        let local = NaiveDate::from_ymd_opt(2026, 3, 29)
            .and_then(|d| d.and_hms_opt(2, 0, 0))
            .expect("valid");
        assert_eq!(after_gap(Europe::Berlin, local), at("2026-03-29T01:00:00Z"));
        // Apia skipped all of 2011-12-30.
        let local = NaiveDate::from_ymd_opt(2011, 12, 30)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("valid");
        assert_eq!(
            after_gap(chrono_tz::Pacific::Apia, local),
            at("2011-12-31T00:00:00+14:00")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const ZONES: [Tz; 5] = [
            Europe::Berlin,
            America::New_York,
            Australia::Lord_Howe,
            chrono_tz::Asia::Kolkata,
            UTC,
        ];

        fn window() -> impl Strategy<Value = QuietHours> {
            (0u32..24 * 60, 1u32..24 * 60).prop_map(|(from, len)| {
                let t = |m: u32| NaiveTime::from_hms_opt(m / 60 % 24, m % 60, 0).expect("valid");
                QuietHours {
                    from: t(from),
                    to: t(from + len),
                }
            })
        }

        proptest! {
            // Failures are not written into the source tree: a shrunk case
            // found here belongs in `place_table` as a named row.
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            #[test]
            fn invariants(
                zone in 0usize..ZONES.len(),
                quiet in window(),
                // Any second of 2026, and a deadline up to two days later.
                due_s in 1_767_225_600i64..1_798_761_600,
                lead in proptest::option::of(0i64..2 * 86_400),
            ) {
                let tz = ZONES[zone];
                let due = DateTime::from_timestamp(due_s, 0).expect("in range");
                let deadline = lead.map(|l| due + TimeDelta::seconds(l));
                let p = place(due, deadline, &quiet, tz);
                let inside = quiet.contains(due.with_timezone(&tz).naive_local().time());
                match p.moved {
                    Moved::No => {
                        prop_assert!(!inside);
                        prop_assert_eq!(p.at, due);
                    }
                    Moved::Later => {
                        prop_assert!(inside);
                        prop_assert!(p.at > due);
                    }
                    Moved::Earlier => {
                        prop_assert!(inside);
                        prop_assert!(p.at < due);
                    }
                }
                if let Some(d) = deadline {
                    if due < d {
                        prop_assert!(p.at < d, "{:?} not before deadline {}", p, d);
                    }
                }
                // A moved message lands outside quiet hours, except when a
                // spring-forward gap swallowed every quiet-free minute of the
                // day: then it sits at the jump itself (see `place`).
                if p.moved != Moved::No {
                    let local = p.at.with_timezone(&tz).naive_local().time();
                    let edge = match p.moved {
                        Moved::Earlier => p.at + BEFORE_START,
                        _ => p.at,
                    };
                    let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
                    let at_jump = offset(edge) != offset(edge - TimeDelta::seconds(1));
                    prop_assert!(
                        !quiet.contains(local) || at_jump,
                        "moved into quiet hours: {}",
                        p.at.with_timezone(&tz)
                    );
                }
            }
        }
    }
}
