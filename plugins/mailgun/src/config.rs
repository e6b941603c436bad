//! The channel's settings, checked once into a typed config.
//!
//! Each purpose of a message has its own three templates (see
//! [`template_keys`]): the unprefixed `subject_template`, `text_template` and
//! `html_template` are the confirmation's, `reminder_*`, `cancellation_*` and
//! `reschedule_*` the others'. A subject or text that is not set takes the
//! purpose's shipped default, never another purpose's setting: a custom
//! confirmation text says "booked", which a cancellation must not.
//!
//! The HTML part is optional for every purpose and has no default: a purpose
//! whose `*html_template` is unset (or blank) is sent as text only, even when
//! the confirmation's `html_template` is set. Borrowing the confirmation's
//! HTML would be wrong in the worst place: mail clients show the HTML part
//! rather than the text, so a cancellation would read as a confirmation.
//!
//! The shipped cancellation subject and text show the time; for a
//! cancellation event without `appointment.time` they fall back to variants
//! without it (see `plugin_common::DefaultText`) instead of rejecting it.

use plugin_common::{
    keep, keep_all, settings_of, ByPurpose, DefaultText, MessagePurpose, Settings, TemplateSetting,
    TimeStyle,
};

use crate::Setting;

pub const KNOWN_SETTINGS: &[&str] = &[
    "base_url",
    "region",
    "domain",
    "from",
    "subject_template",
    "text_template",
    "html_template",
    "reminder_subject_template",
    "reminder_text_template",
    "reminder_html_template",
    "cancellation_subject_template",
    "cancellation_text_template",
    "cancellation_html_template",
    "reschedule_subject_template",
    "reschedule_text_template",
    "reschedule_html_template",
    "tags",
    "test_mode",
    "tracking",
    "time_zone",
    "time_format",
    "not_found_retries",
];

/// Mailgun runs separate US and EU regions; an account exists in one only.
const REGIONS: &[(&str, &str)] = &[
    ("us", "https://api.mailgun.net"),
    ("eu", "https://api.eu.mailgun.net"),
];

/// The region of accounts created without choosing one.
const DEFAULT_REGION: &str = "us";

/// The setting keys of one purpose's templates and the shipped defaults of
/// its subject and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateKeys {
    pub subject: &'static str,
    pub text: &'static str,
    pub html: &'static str,
    pub default_subject: DefaultText,
    pub default_text: DefaultText,
}

pub fn template_keys(purpose: MessagePurpose) -> TemplateKeys {
    match purpose {
        MessagePurpose::Confirmation => TemplateKeys {
            subject: "subject_template",
            text: "text_template",
            html: "html_template",
            default_subject: DefaultText::new("Your appointment is confirmed"),
            default_text: DefaultText::new(
                "Your appointment {appointment_id} is booked for {time}.",
            ),
        },
        MessagePurpose::Reminder => TemplateKeys {
            subject: "reminder_subject_template",
            text: "reminder_text_template",
            html: "reminder_html_template",
            default_subject: DefaultText::new("Reminder: your appointment {time_until}"),
            default_text: DefaultText::new(
                "This is a reminder of your appointment on {time} ({time_until}).",
            ),
        },
        // A cancellation event need not carry the appointment's time, and
        // the default must not reject it for that.
        MessagePurpose::Cancellation => TemplateKeys {
            subject: "cancellation_subject_template",
            text: "cancellation_text_template",
            html: "cancellation_html_template",
            default_subject: DefaultText::new("Your appointment on {time} is cancelled")
                .or_without_time("Your appointment is cancelled"),
            default_text: DefaultText::new(
                "Your appointment {appointment_id} on {time} is cancelled.",
            )
            .or_without_time("Your appointment {appointment_id} is cancelled."),
        },
        MessagePurpose::Reschedule => TemplateKeys {
            subject: "reschedule_subject_template",
            text: "reschedule_text_template",
            html: "reschedule_html_template",
            default_subject: DefaultText::new("Your appointment has moved to {time}"),
            default_text: DefaultText::new(
                "Your appointment {appointment_id} has moved to {time}.",
            ),
        },
    }
}

/// Every appointment mail is tagged so it can be found in Mailgun's logs and
/// analytics without further setup; `tags = ""` turns it off.
const DEFAULT_TAGS: &str = "appointment-created";

/// Mailgun's documented limit for one tag: ASCII, at most 128 characters.
const MAX_TAG_CHARS: usize = 128;

/// The values `o:tracking` accepts, per the vendor's spec.
const TRACKING_VALUES: &[&str] = &["yes", "no", "true", "false", "htmlonly"];

/// A freshly created domain or API key can answer 404 for a short while
/// (Mailgun's eventual consistency). Three sends, spread over the host's
/// backoff, outlast that window without hiding a domain that is really wrong
/// for long.
pub const DEFAULT_NOT_FOUND_RETRIES: u32 = 3;

#[derive(Debug, Clone)]
pub struct MailgunConfig {
    /// Without a trailing `/`.
    pub base_url: String,
    pub domain: String,
    pub from: String,
    pub texts: ByPurpose<Texts>,
    pub tags: Vec<String>,
    pub test_mode: bool,
    pub tracking: Option<String>,
    pub time_style: TimeStyle,
    /// A JSON 404 is retried while `attempt < not_found_retries`: this is the
    /// number of sends such a 404 may cost, the last one included.
    pub not_found_retries: u32,
}

/// One purpose's templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    pub subject: TemplateSetting,
    pub text: TemplateSetting,
    /// `None`: the message is sent as text only.
    pub html: Option<TemplateSetting>,
}

impl Texts {
    fn from_settings(
        settings: &Settings<'_>,
        purpose: MessagePurpose,
    ) -> Result<Texts, Vec<String>> {
        let keys = template_keys(purpose);
        let mut problems = Vec::new();
        let subject = keep(
            &mut problems,
            TemplateSetting::read(settings, keys.subject, keys.default_subject),
        );
        let text = keep(
            &mut problems,
            TemplateSetting::read(settings, keys.text, keys.default_text),
        );
        let html = keep(
            &mut problems,
            TemplateSetting::read_optional(settings, keys.html),
        );
        match (subject, text, html) {
            (Some(subject), Some(text), Some(html)) => Ok(Texts {
                subject,
                text,
                html,
            }),
            _ => Err(problems),
        }
    }
}

impl MailgunConfig {
    /// Reads every setting, reporting every problem, each naming its key.
    pub fn from_settings(settings: &Settings<'_>) -> Result<MailgunConfig, Vec<String>> {
        let mut problems = Vec::new();

        let base_url = keep(&mut problems, base_url(settings));
        let domain = keep(&mut problems, domain(settings));
        let from = keep(&mut problems, from(settings));
        let texts = keep_all(
            &mut problems,
            ByPurpose::try_from_fn(|purpose| Texts::from_settings(settings, purpose)),
        );
        let tags = keep(&mut problems, tags(settings));
        let test_mode = keep(&mut problems, settings.bool_or("test_mode", false));
        let tracking = keep(&mut problems, tracking(settings));
        let not_found_retries = keep(
            &mut problems,
            settings.u32_or("not_found_retries", DEFAULT_NOT_FOUND_RETRIES),
        );
        let time_style = keep_all(&mut problems, TimeStyle::from_settings(settings));

        // Every failed read above is `None` and left a problem behind.
        let (
            Some(base_url),
            Some(domain),
            Some(from),
            Some(texts),
            Some(tags),
            Some(test_mode),
            Some(tracking),
            Some(not_found_retries),
            Some(time_style),
        ) = (
            base_url,
            domain,
            from,
            texts,
            tags,
            test_mode,
            tracking,
            not_found_retries,
            time_style,
        )
        else {
            return Err(problems);
        };
        Ok(MailgunConfig {
            base_url,
            domain,
            from,
            texts,
            tags,
            test_mode,
            tracking,
            time_style,
            not_found_retries,
        })
    }
}

pub fn check_settings(settings: &[Setting]) -> Result<(), Vec<String>> {
    MailgunConfig::from_settings(&settings_of(settings)).map(|_| ())
}

/// `base_url` when the host passes one, otherwise the region's API. A bad
/// region is reported even then: it is a mistake all the same.
fn base_url(settings: &Settings<'_>) -> Result<String, String> {
    let region = settings.get_or("region", DEFAULT_REGION).trim();
    let region_url = REGIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(region))
        .map(|(_, url)| *url)
        .ok_or_else(|| format!("setting `region` must be `us` or `eu`, not `{region}`"))?;
    settings.base_url_or(region_url)
}

fn domain(settings: &Settings<'_>) -> Result<String, String> {
    let domain = settings.required("domain")?;
    if domain.contains('/') || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "setting `domain` must be a sending domain like `mg.example.com`, not `{domain}`"
        ));
    }
    Ok(domain.to_string())
}

fn from(settings: &Settings<'_>) -> Result<String, String> {
    let from = settings.required("from")?;
    if !from.contains('@') {
        return Err(format!(
            "setting `from` must be an address like `noreply@mg.example.com` or `Clinic <noreply@mg.example.com>`, not `{from}`"
        ));
    }
    Ok(from.to_string())
}

fn tags(settings: &Settings<'_>) -> Result<Vec<String>, String> {
    let tags: Vec<String> = settings
        .get_or("tags", DEFAULT_TAGS)
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    match tags.iter().find(|t| !t.is_ascii() || t.chars().count() > MAX_TAG_CHARS) {
        Some(bad) => Err(format!(
            "setting `tags`: tag `{bad}` must be ASCII and at most {MAX_TAG_CHARS} characters (Mailgun's limit)"
        )),
        None => Ok(tags),
    }
}

fn tracking(settings: &Settings<'_>) -> Result<Option<String>, String> {
    match settings.optional("tracking").map(str::trim) {
        None => Ok(None),
        Some(v) if TRACKING_VALUES.contains(&v) => Ok(Some(v.to_string())),
        Some(v) => Err(format!(
            "setting `tracking` must be one of {}, not `{v}`",
            TRACKING_VALUES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::settings;

    const MINIMAL: &[(&str, &str)] = &[
        ("domain", "mg.example.com"),
        ("from", "noreply@mg.example.com"),
    ];

    fn config(pairs: &[(&str, &str)]) -> Result<MailgunConfig, Vec<String>> {
        let s = settings(pairs);
        MailgunConfig::from_settings(&settings_of(&s))
    }

    #[test]
    fn minimal_settings_take_the_defaults() {
        let c = config(MINIMAL).map_err(|e| e.join("; "));
        let c = c.as_ref().map_err(String::as_str);
        assert_eq!(
            c.map(|c| c.base_url.as_str()),
            Ok("https://api.mailgun.net")
        );
        assert_eq!(
            c.map(|c| c.tags.clone()),
            Ok(vec!["appointment-created".to_string()])
        );
        assert_eq!(
            c.map(|c| (c.test_mode, c.tracking.clone(), c.not_found_retries)),
            Ok((false, None, 3))
        );
        assert_eq!(c.map(|c| c.time_style.zone_name()), Ok("UTC"));
        for purpose in MessagePurpose::ALL {
            let keys = template_keys(purpose);
            let texts = c.map(|c| c.texts.get(purpose));
            assert_eq!(
                texts.map(|t| (t.subject.key(), t.text.key(), t.html.is_none())),
                Ok((keys.subject, keys.text, true)),
                "{purpose:?}"
            );
        }
    }

    #[test]
    fn every_template_key_is_known_and_named_after_its_purpose() {
        for purpose in MessagePurpose::ALL {
            let keys = template_keys(purpose);
            let prefix = match purpose {
                MessagePurpose::Confirmation => String::new(),
                other => format!("{}_", other.name()),
            };
            assert_eq!(
                [keys.subject, keys.text, keys.html].map(str::to_string),
                ["subject", "text", "html"].map(|part| format!("{prefix}{part}_template")),
            );
            for key in [keys.subject, keys.text, keys.html] {
                assert!(KNOWN_SETTINGS.contains(&key), "{key}");
            }
        }
    }

    #[test]
    fn a_bad_placeholder_in_any_template_names_its_key() {
        for purpose in MessagePurpose::ALL {
            let keys = template_keys(purpose);
            for key in [keys.subject, keys.text, keys.html] {
                let mut pairs = MINIMAL.to_vec();
                pairs.push((key, "Hi {name}"));
                let problems = config(&pairs).expect_err("an error");
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(
                    problems[0]
                        .starts_with(&format!("setting `{key}`: unknown placeholder `{{name}}`")),
                    "{problems:?}"
                );
            }
        }
    }

    #[test]
    fn region_and_base_url() {
        let mut eu = MINIMAL.to_vec();
        eu.push(("region", "EU"));
        assert_eq!(
            config(&eu).map(|c| c.base_url),
            Ok("https://api.eu.mailgun.net".to_string())
        );
        eu.push(("base_url", "http://127.0.0.1:8080/"));
        assert_eq!(
            config(&eu).map(|c| c.base_url),
            Ok("http://127.0.0.1:8080".to_string())
        );
    }

    #[test]
    fn check_settings_reports_every_problem_naming_its_key() {
        let s = settings(&[
            ("region", "asia"),
            ("from", "nobody"),
            ("subject_template", "Hi {name}"),
            ("text_template", "at {time"),
            ("html_template", "}"),
            ("reminder_subject_template", "{remind}"),
            ("cancellation_text_template", "{time_untill}"),
            ("reschedule_html_template", "{purpose"),
            ("tags", "ok, caf\u{e9}"),
            ("test_mode", "yes"),
            ("tracking", "sometimes"),
            ("not_found_retries", "-1"),
            ("time_zone", "Nowhere/Land"),
            ("time_format", "%Q"),
        ]);
        let problems = check_settings(&s).expect_err("an error");
        let keys = [
            "region",
            "domain",
            "from",
            "subject_template",
            "text_template",
            "html_template",
            "reminder_subject_template",
            "cancellation_text_template",
            "reschedule_html_template",
            "tags",
            "test_mode",
            "tracking",
            "not_found_retries",
            "time_zone",
            "time_format",
        ];
        assert_eq!(problems.len(), keys.len(), "{problems:#?}");
        for key in keys {
            assert!(
                problems.iter().any(|p| p.contains(&format!("`{key}`"))),
                "{key} not named in {problems:#?}"
            );
        }
    }

    #[test]
    fn malformed_base_url_and_domain_are_problems() {
        let problems = check_settings(&settings(&[
            ("base_url", "api.mailgun.net"),
            ("domain", "mg.example.com/evil"),
            ("from", "a@b"),
        ]))
        .expect_err("an error");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`base_url`") && problems[1].contains("`domain`"));
        let blank =
            check_settings(&settings(&[("domain", ""), ("from", "a@b")])).expect_err("an error");
        assert_eq!(blank, ["setting `domain` is required"]);
    }

    #[test]
    fn valid_full_settings_pass() {
        let s = settings(&[
            ("region", "eu"),
            ("domain", "mg.example.com"),
            ("from", "Clinic <noreply@mg.example.com>"),
            ("html_template", "<p>{appointment_id} at {time}</p>"),
            ("reminder_subject_template", "{reminder}: {time_until}"),
            (
                "reminder_html_template",
                "<p>{purpose} {reminder} {time_until}</p>",
            ),
            ("cancellation_subject_template", "Cancelled"),
            ("reschedule_text_template", "Moved to {time_iso}"),
            ("tags", ""),
            ("test_mode", "true"),
            ("tracking", "htmlonly"),
            ("not_found_retries", "5"),
            ("time_zone", "Europe/Berlin"),
            ("time_format", "%d.%m.%Y %H:%M"),
        ]);
        assert_eq!(check_settings(&s), Ok(()));
    }
}
