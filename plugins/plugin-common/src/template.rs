//! Message templates: `{placeholder}` is replaced by a value of the event or
//! of the message (its purpose, the reminder's name, the time left), `{{` and
//! `}}` stand for literal braces. Templates are parsed whole, so a typo is
//! found by `check-settings` at start-up rather than on every event.
//!
//! Rendering is a pure function of [`TemplateValues`]: `{time_until}` is
//! measured from the `now_unix_ms` the plugin passes in, never from a clock.

use std::borrow::Cow;
use std::fmt;

use crate::{time_until, MessagePurpose, TimeStyle};

/// The values a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    EventId,
    AppointmentId,
    UserId,
    /// The appointment time, formatted in the configured zone and format.
    Time,
    /// The appointment time exactly as the event carried it.
    TimeIso,
    /// The configured zone's IANA name.
    TimeZone,
    /// The time from now until the appointment, in words (`in 24 hours`);
    /// empty when the event has no time.
    TimeUntil,
    /// The reminder's configured name (`day-before`); empty for a message
    /// that is not a reminder.
    Reminder,
    /// `confirmation`, `reminder`, `cancellation` or `reschedule`.
    Purpose,
}

impl Placeholder {
    pub const ALL: [Placeholder; 9] = [
        Placeholder::EventId,
        Placeholder::AppointmentId,
        Placeholder::UserId,
        Placeholder::Time,
        Placeholder::TimeIso,
        Placeholder::TimeZone,
        Placeholder::TimeUntil,
        Placeholder::Reminder,
        Placeholder::Purpose,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::EventId => "event_id",
            Placeholder::AppointmentId => "appointment_id",
            Placeholder::UserId => "user_id",
            Placeholder::Time => "time",
            Placeholder::TimeIso => "time_iso",
            Placeholder::TimeZone => "time_zone",
            Placeholder::TimeUntil => "time_until",
            Placeholder::Reminder => "reminder",
            Placeholder::Purpose => "purpose",
        }
    }

    fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Why a template text is not a template. Positions are byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    UnknownPlaceholder { name: String },
    UnclosedBrace { at: usize },
    UnmatchedClosingBrace { at: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnknownPlaceholder { name } => {
                write!(f, "unknown placeholder `{{{name}}}` (known: ")?;
                for (i, p) in Placeholder::ALL.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{{{}}}", p.name())?;
                }
                write!(f, "; write `{{{{` for a literal brace)")
            }
            TemplateError::UnclosedBrace { at } => {
                write!(
                    f,
                    "`{{` at byte {at} is never closed (write `{{{{` for a literal brace)"
                )
            }
            TemplateError::UnmatchedClosingBrace { at } => {
                write!(
                    f,
                    "`}}` at byte {at} closes nothing (write `}}}}` for a literal brace)"
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// How substituted values are written into the output. Literal template text
/// is the operator's and is never escaped; values come from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    /// For HTML bodies: an id like `<b>` must not become markup.
    Html,
}

/// The values of one render: the event's, the message's and the moment's.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    pub event_id: &'a str,
    pub appointment_id: &'a str,
    pub user_id: Option<&'a str>,
    /// RFC 3339, as received.
    pub time: Option<&'a str>,
    pub time_style: &'a TimeStyle,
    pub purpose: MessagePurpose,
    /// The reminder's name; only ever set for [`MessagePurpose::Reminder`].
    pub reminder: Option<&'a str>,
    /// When the render happens, for `{time_until}`: the plugin reads its
    /// clock once per render and passes the time in.
    pub now_unix_ms: u64,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' if rest.peek().map(|(_, c)| *c) == Some('{') => {
                    rest.next();
                    literal.push('{');
                }
                '}' if rest.peek().map(|(_, c)| *c) == Some('}') => {
                    rest.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::UnmatchedClosingBrace { at }),
                '{' => {
                    let name_start = at + 1;
                    let mut name_end = None;
                    for (i, c) in rest.by_ref() {
                        match c {
                            '}' => {
                                name_end = Some(i);
                                break;
                            }
                            // `{a{b}` is a stray brace, not a placeholder named `a{b`.
                            '{' => return Err(TemplateError::UnclosedBrace { at }),
                            _ => {}
                        }
                    }
                    let Some(name_end) = name_end else {
                        return Err(TemplateError::UnclosedBrace { at });
                    };
                    let name = &text[name_start..name_end];
                    let placeholder = Placeholder::from_name(name).ok_or_else(|| {
                        TemplateError::UnknownPlaceholder {
                            name: name.to_string(),
                        }
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(placeholder));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Value(p) => Some(*p),
            Part::Text(_) => None,
        })
    }

    /// Fills in the values. `setting_key` names the template in the error
    /// when the event lacks a value it needs.
    pub fn render(
        &self,
        setting_key: &str,
        values: &TemplateValues<'_>,
        escape: Escape,
    ) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(p) => {
                    let value = value_of(*p, setting_key, values)?;
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::Html => push_html_escaped(&mut out, &value),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn value_of<'a>(
    p: Placeholder,
    setting_key: &str,
    values: &TemplateValues<'a>,
) -> Result<Cow<'a, str>, String> {
    let missing = |field: &str| {
        format!(
            "{field} is missing but setting `{setting_key}` uses {{{}}}",
            p.name()
        )
    };
    Ok(match p {
        Placeholder::EventId => values.event_id.into(),
        Placeholder::AppointmentId => values.appointment_id.into(),
        Placeholder::UserId => values
            .user_id
            .ok_or_else(|| missing("appointment.user_id"))?
            .into(),
        Placeholder::Time => {
            let raw = values.time.ok_or_else(|| missing("appointment.time"))?;
            values.time_style.format(raw)?.into()
        }
        Placeholder::TimeIso => values
            .time
            .ok_or_else(|| missing("appointment.time"))?
            .into(),
        Placeholder::TimeZone => values.time_style.zone_name().into(),
        // Empty rather than a rejection: a wait is a nicety around the time,
        // and a template that needs the time itself says so with `{time}`.
        Placeholder::TimeUntil => match values.time {
            Some(raw) => time_until(raw, values.now_unix_ms)?.into(),
            None => "".into(),
        },
        Placeholder::Reminder => match values.purpose {
            MessagePurpose::Reminder => values.reminder.unwrap_or_default().into(),
            _ => "".into(),
        },
        Placeholder::Purpose => values.purpose.name().into(),
    })
}

fn push_html_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Checks a template setting at start-up; the error names the setting key.
pub fn check_template(setting_key: &str, text: &str) -> Result<Template, String> {
    Template::parse(text).map_err(|e| format!("setting `{setting_key}`: {e}"))
}

/// Parses and renders in one step, for render paths that did not keep the
/// parsed template.
pub fn render_template(
    setting_key: &str,
    text: &str,
    values: &TemplateValues<'_>,
    escape: Escape,
) -> Result<String, String> {
    check_template(setting_key, text)?.render(setting_key, values, escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeStyle {
        match TimeStyle::new("UTC", "%Y-%m-%d %H:%M %Z") {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// 2026-02-19T13:30:00Z: 25 hours 30 minutes before the appointment.
    const NOW_UNIX_MS: u64 = 1_771_507_800_000;

    fn values(style: &TimeStyle) -> TemplateValues<'_> {
        TemplateValues {
            event_id: "ev-1",
            appointment_id: "a1b2c3",
            user_id: Some("42"),
            time: Some("2026-02-20T15:00:00Z"),
            time_style: style,
            purpose: MessagePurpose::Confirmation,
            reminder: None,
            now_unix_ms: NOW_UNIX_MS,
        }
    }

    #[test]
    fn every_placeholder_and_literal_braces() {
        let style = utc();
        let out = render_template(
            "text_template",
            "{event_id}|{appointment_id}|{user_id}|{time}|{time_iso}|{time_zone}|{{literal}}|}}{{",
            &values(&style),
            Escape::None,
        );
        assert_eq!(
            out,
            Ok(
                "ev-1|a1b2c3|42|2026-02-20 15:00 UTC|2026-02-20T15:00:00Z|UTC|{literal}|}{"
                    .to_string()
            )
        );
    }

    #[test]
    fn message_placeholders_per_purpose() {
        let style = utc();
        let text = "{purpose}|{reminder}|{time_until}";
        // The reminder name is only shown for a reminder, even if a host
        // passed one with another purpose.
        let cases = [
            (
                MessagePurpose::Confirmation,
                None,
                "confirmation||in 26 hours",
            ),
            (
                MessagePurpose::Reminder,
                Some("day-before"),
                "reminder|day-before|in 26 hours",
            ),
            (MessagePurpose::Reminder, None, "reminder||in 26 hours"),
            (
                MessagePurpose::Cancellation,
                Some("day-before"),
                "cancellation||in 26 hours",
            ),
            (MessagePurpose::Reschedule, None, "reschedule||in 26 hours"),
        ];
        for (purpose, reminder, want) in cases {
            let mut v = values(&style);
            v.purpose = purpose;
            v.reminder = reminder;
            assert_eq!(
                render_template("t", text, &v, Escape::None),
                Ok(want.to_string()),
                "{purpose:?}"
            );
        }
    }

    #[test]
    fn time_until_is_measured_from_the_given_now() {
        let style = utc();
        let at = |now_unix_ms: u64, time: Option<&'static str>| {
            let mut v = values(&style);
            v.now_unix_ms = now_unix_ms;
            v.time = time;
            render_template("t", "{time_until}", &v, Escape::None)
        };
        let appointment_ms = 1_771_599_600_000;
        let time = Some("2026-02-20T15:00:00Z");
        assert_eq!(
            at(appointment_ms - 45 * 60_000, time),
            Ok("in 45 minutes".to_string())
        );
        assert_eq!(at(appointment_ms + 60_000, time), Ok("now".to_string()));
        assert_eq!(
            at(appointment_ms, None),
            Ok(String::new()),
            "no time: empty"
        );
        assert!(at(appointment_ms, Some("soon"))
            .expect_err("an error")
            .starts_with("appointment.time `soon`"));
    }

    #[test]
    fn text_without_placeholders_and_unicode_survive() {
        let style = utc();
        assert_eq!(
            render_template("k", "", &values(&style), Escape::None),
            Ok(String::new())
        );
        assert_eq!(
            render_template(
                "k",
                "Grüße {appointment_id} ✓",
                &values(&style),
                Escape::None
            ),
            Ok("Grüße a1b2c3 ✓".to_string())
        );
    }

    #[test]
    fn syntax_errors_name_the_key_and_the_problem() {
        let cases = [
            ("Hi {name}", "unknown placeholder `{name}`"),
            ("Hi {}", "unknown placeholder `{}`"),
            ("Hi { time }", "unknown placeholder `{ time }`"),
            ("Hi {time", "`{` at byte 3 is never closed"),
            ("Hi {a{time}", "`{` at byte 3 is never closed"),
            ("Hi }", "`}` at byte 3 closes nothing"),
            ("{{time}", "`}` at byte 6 closes nothing"),
            ("é{", "`{` at byte 2 is never closed"),
        ];
        for (text, want) in cases {
            let err = check_template("subject_template", text).expect_err("an error");
            assert!(err.starts_with("setting `subject_template`: "), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn missing_values_are_rejections_naming_the_field() {
        let style = utc();
        let mut v = values(&style);
        v.time = None;
        v.user_id = None;
        assert_eq!(
            render_template("text_template", "at {time}", &v, Escape::None),
            Err("appointment.time is missing but setting `text_template` uses {time}".to_string())
        );
        assert!(render_template("t", "{time_iso}", &v, Escape::None)
            .expect_err("an error")
            .starts_with("appointment.time"));
        assert!(render_template("t", "{user_id}", &v, Escape::None)
            .expect_err("an error")
            .starts_with("appointment.user_id"));
        assert_eq!(
            render_template("t", "{appointment_id}", &v, Escape::None),
            Ok("a1b2c3".to_string())
        );
        v.time = Some("next week");
        assert!(render_template("t", "{time}", &v, Escape::None)
            .expect_err("an error")
            .contains("not an RFC 3339"));
        assert_eq!(
            render_template("t", "{time_iso}", &v, Escape::None),
            Ok("next week".to_string())
        );
    }

    #[test]
    fn html_escaping_applies_to_values_only() {
        let style = utc();
        let mut v = values(&style);
        v.appointment_id = "<b>&\"'";
        assert_eq!(
            render_template("html_template", "<p>{appointment_id}</p>", &v, Escape::Html),
            Ok("<p>&lt;b&gt;&amp;&quot;&#39;</p>".to_string())
        );
    }

    #[test]
    fn placeholders_are_listed() {
        let t = Template::parse("{time} {{x}} {event_id}").map_err(|e| e.to_string());
        let names: Vec<_> = t
            .iter()
            .flat_map(|t| t.placeholders())
            .map(Placeholder::name)
            .collect();
        assert_eq!(names, ["time", "event_id"]);
    }
}
