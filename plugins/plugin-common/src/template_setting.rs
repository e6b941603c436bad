//! A template setting as a channel uses it: the operator's text when the key
//! is set, else the plugin's shipped default, parsed once and rendered under
//! its key's name so that every error says which setting to fix.
//!
//! A shipped default that shows `{time}` may carry a variant without it, used
//! only for events that have no `appointment.time` (a cancellation need not
//! carry one): the default then still reads well instead of rejecting the
//! event. An operator's own text is never replaced: if it uses `{time}`, an
//! event without a time is a rejection naming the key, as it always was.

use crate::{check_template, Escape, Settings, Template, TemplateValues};

/// A plugin's default text for one template setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultText {
    pub text: &'static str,
    /// The text for events without `appointment.time`, when `text` needs it.
    pub without_time: Option<&'static str>,
}

impl DefaultText {
    pub const fn new(text: &'static str) -> DefaultText {
        DefaultText {
            text,
            without_time: None,
        }
    }

    pub const fn or_without_time(self, without_time: &'static str) -> DefaultText {
        DefaultText {
            without_time: Some(without_time),
            ..self
        }
    }
}

/// A parsed template setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSetting {
    key: &'static str,
    template: Template,
    /// Set only for a default with a variant (see [`DefaultText`]).
    without_time: Option<Template>,
}

impl TemplateSetting {
    /// The setting `key`, or `default` when it is not set. A blank value is
    /// the operator's text, not "unset": whether a blank template is allowed
    /// is the channel's decision (an SMS body cannot be empty).
    pub fn read(
        settings: &Settings<'_>,
        key: &'static str,
        default: DefaultText,
    ) -> Result<TemplateSetting, String> {
        if let Some(text) = settings.get(key) {
            return Ok(TemplateSetting {
                key,
                template: check_template(key, text)?,
                without_time: None,
            });
        }
        Ok(TemplateSetting {
            key,
            template: check_template(key, default.text)?,
            without_time: default
                .without_time
                .map(|text| check_template(key, text))
                .transpose()?,
        })
    }

    /// The setting `key` when it is set and not blank (blank is what an unset
    /// `${VAR:-}` expands to, so it switches the template off).
    pub fn read_optional(
        settings: &Settings<'_>,
        key: &'static str,
    ) -> Result<Option<TemplateSetting>, String> {
        settings
            .optional(key)
            .map(|text| {
                Ok(TemplateSetting {
                    key,
                    template: check_template(key, text)?,
                    without_time: None,
                })
            })
            .transpose()
    }

    pub fn key(&self) -> &'static str {
        self.key
    }

    pub fn render(&self, values: &TemplateValues<'_>, escape: Escape) -> Result<String, String> {
        let template = match (&self.without_time, values.time) {
            (Some(without_time), None) => without_time,
            _ => &self.template,
        };
        template.render(self.key, values, escape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessagePurpose, TimeStyle};

    const DEFAULT: DefaultText =
        DefaultText::new("Cancelled: {time}").or_without_time("Cancelled: {appointment_id}");

    fn style() -> TimeStyle {
        match TimeStyle::new("UTC", "%H:%M") {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn values<'a>(style: &'a TimeStyle, time: Option<&'a str>) -> TemplateValues<'a> {
        TemplateValues {
            event_id: "ev-1",
            appointment_id: "a1",
            user_id: None,
            time,
            time_style: style,
            purpose: MessagePurpose::Cancellation,
            reminder: None,
            now_unix_ms: 0,
        }
    }

    #[test]
    fn the_operator_text_or_the_default_and_its_variant() {
        let style = style();
        let timed = Some("2026-02-20T15:00:00Z");
        // (settings, appointment.time, rendered text or rejection)
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Result<&'a str, &'a str>,
        );
        let cases: [Case<'_>; 5] = [
            (&[], timed, Ok("Cancelled: 15:00")),
            (&[], None, Ok("Cancelled: a1")),
            (&[("k", "Off at {time}")], timed, Ok("Off at 15:00")),
            (
                &[("k", "Off at {time}")],
                None,
                Err("appointment.time is missing but setting `k` uses {time}"),
            ),
            (&[("k", "")], None, Ok("")),
        ];
        for (pairs, time, want) in cases {
            let settings = Settings::new(pairs.iter().copied());
            let setting = TemplateSetting::read(&settings, "k", DEFAULT);
            let got = setting.and_then(|s| s.render(&values(&style, time), Escape::None));
            assert_eq!(
                got,
                want.map(str::to_string).map_err(str::to_string),
                "{pairs:?} {time:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_key() {
        let settings = Settings::new([("reminder_text_template", "{nope}")]);
        let err = TemplateSetting::read(&settings, "reminder_text_template", DEFAULT)
            .expect_err("an error");
        assert!(
            err.starts_with("setting `reminder_text_template`: unknown placeholder `{nope}`"),
            "{err}"
        );
        let err = TemplateSetting::read_optional(&settings, "reminder_text_template")
            .expect_err("an error");
        assert!(err.starts_with("setting `reminder_text_template`"), "{err}");
    }

    #[test]
    fn an_optional_template_is_off_when_unset_or_blank() {
        for pairs in [&[][..], &[("html", " ")][..]] {
            let settings = Settings::new(pairs.iter().copied());
            assert_eq!(TemplateSetting::read_optional(&settings, "html"), Ok(None));
        }
        let settings = Settings::new([("html", "<p>{appointment_id}</p>")]);
        let html = TemplateSetting::read_optional(&settings, "html");
        assert_eq!(
            html.as_ref().map(|h| h.as_ref().map(TemplateSetting::key)),
            Ok(Some("html"))
        );
    }
}
