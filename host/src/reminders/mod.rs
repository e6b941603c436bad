//! Reminders that follow the appointment: which reminders an event
//! schedules and when they are due ([`plan`], the one place that decides,
//! tested as a table), quiet hours ([`quiet`]), and the scheduler that fires
//! due timers ([`scheduler`]).
//!
//! Invariants:
//! - A reminder is due `before` ahead of the appointment, then moved out of
//!   the channel's quiet hours without passing the appointment.
//! - A reminder whose due time has passed when its event arrives is not
//!   scheduled (`expired`), unless its policy says `catch_up` and the
//!   appointment is still ahead: then it is due at once.
//! - Nothing is ever scheduled at or after the appointment's start.

pub mod quiet;
pub mod scheduler;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::ReminderPolicy;
use quiet::{Moved, QuietHours};

/// What [`plan`] decided for one (reminder, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub channel: String,
    /// When it is due (after quiet hours); for an expired one, when it would
    /// have been.
    pub due: DateTime<Utc>,
    pub moved: Moved,
    /// `Some(reason)`: not scheduled, recorded `expired`.
    pub expired: Option<String>,
}

/// The reminders an event with appointment time `appointment` schedules at
/// `now`, for the channels it asked for (`requested`). `quiet_of` gives a
/// channel's quiet hours; `tz` is the appointment's zone.
pub fn plan(
    policies: &[ReminderPolicy],
    appointment: DateTime<Utc>,
    now: DateTime<Utc>,
    requested: &[&str],
    quiet_of: impl Fn(&str) -> Option<QuietHours>,
    tz: chrono_tz::Tz,
) -> Vec<Planned> {
    let mut out = Vec::new();
    for policy in policies {
        let before = TimeDelta::from_std(policy.before).unwrap_or(TimeDelta::MAX);
        for channel in policy
            .channels
            .iter()
            .filter(|c| requested.contains(&c.as_str()))
        {
            let nominal = appointment
                .checked_sub_signed(before)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let (due, moved) = match quiet_of(channel) {
                Some(q) => {
                    let p = quiet::place(nominal, Some(appointment), &q, tz);
                    (p.at, p.moved)
                }
                None => (nominal, Moved::No),
            };
            let expired = if now >= appointment {
                Some(format!(
                    "not scheduled: the appointment ({}) has already begun",
                    rfc3339(appointment)
                ))
            } else if due <= now && !policy.catch_up {
                Some(format!(
                    "not scheduled: it was due at {}, before the event arrived (set catch_up = true on reminder `{}` to send such reminders at once)",
                    rfc3339(due),
                    policy.name
                ))
            } else {
                None
            };
            out.push(Planned {
                name: policy.name.clone(),
                channel: channel.clone(),
                // A caught-up reminder is due now.
                due: if expired.is_none() { due.max(now) } else { due },
                moved,
                expired,
            });
        }
    }
    out
}

/// A time as the ledger's reasons and logs show it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    fn policy(name: &str, before_s: u64, channels: &[&str], catch_up: bool) -> ReminderPolicy {
        ReminderPolicy {
            name: name.into(),
            before: Duration::from_secs(before_s),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            catch_up,
        }
    }

    #[test]
    fn what_an_event_schedules() {
        let policies = [
            policy("day-before", 86_400, &["email", "sms"], false),
            policy("hour-before", 3600, &["sms"], true),
        ];
        let appt = t("2026-12-10T15:00:00Z");
        let quiet_sms = QuietHours::parse("21:00", "08:00").expect("quiet");
        // (now, requested, quiet on sms, expected: (name, channel, due, moved, expired?))
        type Row = (
            &'static str,
            &'static [&'static str],
            bool,
            &'static [(&'static str, &'static str, &'static str, Moved, bool)],
        );
        let rows: &[Row] = &[
            // Both ahead, only the channels asked for.
            (
                "2026-12-01T10:00:00Z",
                &["email"],
                false,
                &[(
                    "day-before",
                    "email",
                    "2026-12-09T15:00:00Z",
                    Moved::No,
                    false,
                )],
            ),
            (
                "2026-12-01T10:00:00Z",
                &["email", "sms"],
                false,
                &[
                    (
                        "day-before",
                        "email",
                        "2026-12-09T15:00:00Z",
                        Moved::No,
                        false,
                    ),
                    (
                        "day-before",
                        "sms",
                        "2026-12-09T15:00:00Z",
                        Moved::No,
                        false,
                    ),
                    (
                        "hour-before",
                        "sms",
                        "2026-12-10T14:00:00Z",
                        Moved::No,
                        false,
                    ),
                ],
            ),
            // Booked 3 hours ahead: the day-before is past (expired), the
            // hour-before is ahead.
            (
                "2026-12-10T12:00:00Z",
                &["email", "sms"],
                false,
                &[
                    (
                        "day-before",
                        "email",
                        "2026-12-09T15:00:00Z",
                        Moved::No,
                        true,
                    ),
                    ("day-before", "sms", "2026-12-09T15:00:00Z", Moved::No, true),
                    (
                        "hour-before",
                        "sms",
                        "2026-12-10T14:00:00Z",
                        Moved::No,
                        false,
                    ),
                ],
            ),
            // Booked 30 minutes ahead: the hour-before catches up, due now.
            (
                "2026-12-10T14:30:00Z",
                &["sms"],
                false,
                &[
                    ("day-before", "sms", "2026-12-09T15:00:00Z", Moved::No, true),
                    (
                        "hour-before",
                        "sms",
                        "2026-12-10T14:30:00Z",
                        Moved::No,
                        false,
                    ),
                ],
            ),
            // The appointment has begun: nothing, even with catch_up.
            (
                "2026-12-10T15:00:00Z",
                &["sms"],
                false,
                &[
                    ("day-before", "sms", "2026-12-09T15:00:00Z", Moved::No, true),
                    (
                        "hour-before",
                        "sms",
                        "2026-12-10T14:00:00Z",
                        Moved::No,
                        true,
                    ),
                ],
            ),
            // A channel no reminder names: nothing.
            ("2026-12-01T10:00:00Z", &["push"], false, &[]),
        ];
        for (now, requested, quiet, want) in rows {
            let got = plan(
                &policies,
                appt,
                t(now),
                requested,
                |c| (*quiet && c == "sms").then_some(quiet_sms),
                chrono_tz::UTC,
            );
            let got: Vec<_> = got
                .iter()
                .map(|p| {
                    (
                        p.name.as_str(),
                        p.channel.as_str(),
                        rfc3339(p.due),
                        p.moved,
                        p.expired.is_some(),
                    )
                })
                .collect();
            let want: Vec<_> = want
                .iter()
                .map(|(n, c, d, m, e)| (*n, *c, d.to_string(), *m, *e))
                .collect();
            assert_eq!(got, want, "now {now}, requested {requested:?}");
        }
    }

    #[test]
    fn quiet_hours_move_a_reminder_without_passing_the_appointment() {
        let policies = [policy("hour-before", 3600, &["sms"], false)];
        let quiet = QuietHours::parse("21:00", "08:00").expect("quiet");
        let now = t("2026-12-01T10:00:00Z");
        // 08:30 appointment: due 07:30 is quiet, 08:00 would be fine.
        let later = plan(
            &policies,
            t("2026-12-10T08:30:00Z"),
            now,
            &["sms"],
            |_| Some(quiet),
            chrono_tz::UTC,
        );
        assert_eq!(later[0].moved, Moved::Later);
        assert_eq!(rfc3339(later[0].due), "2026-12-10T08:00:00Z");
        // 07:45 appointment: 08:00 is too late, so the evening before.
        let earlier = plan(
            &policies,
            t("2026-12-10T07:45:00Z"),
            now,
            &["sms"],
            |_| Some(quiet),
            chrono_tz::UTC,
        );
        assert_eq!(earlier[0].moved, Moved::Earlier);
        assert!(earlier[0].due < t("2026-12-09T21:00:00Z"));
        assert!(earlier[0].expired.is_none());
    }
}
