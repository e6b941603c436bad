//! The channel's settings, checked once into a typed config.
//!
//! Each purpose of a message has its own body template (see [`body_key`]):
//! `body_template` is the confirmation's, `reminder_body_template`,
//! `cancellation_body_template` and `reschedule_body_template` the others'.
//! An unset one takes its purpose's shipped default, never another purpose's
//! setting: a custom confirmation says "confirmed", which a cancellation must
//! not. The shipped cancellation body shows the time; for a cancellation
//! event without `appointment.time` it falls back to a variant without it.

use plugin_common::{
    is_e164, keep, keep_all, settings_of, ByPurpose, DefaultText, MessagePurpose, Settings,
    TemplateSetting, TimeStyle,
};

use crate::Setting;

pub const KNOWN_SETTINGS: &[&str] = &[
    "base_url",
    "account_sid",
    "from",
    "messaging_service_sid",
    "body_template",
    "reminder_body_template",
    "cancellation_body_template",
    "reschedule_body_template",
    "status_callback",
    "time_zone",
    "time_format",
];

/// Twilio's one API origin; the host's `base_url` overrides it (stand-ins).
const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The setting key of a purpose's body template.
pub fn body_key(purpose: MessagePurpose) -> &'static str {
    match purpose {
        MessagePurpose::Confirmation => "body_template",
        MessagePurpose::Reminder => "reminder_body_template",
        MessagePurpose::Cancellation => "cancellation_body_template",
        MessagePurpose::Reschedule => "reschedule_body_template",
    }
}

/// A purpose's shipped body: short, so that with the default time format it
/// stays well within Twilio's limit and, mostly, within two SMS segments.
pub fn default_body(purpose: MessagePurpose) -> DefaultText {
    match purpose {
        MessagePurpose::Confirmation => {
            DefaultText::new("Appointment {appointment_id} confirmed for {time}.")
        }
        MessagePurpose::Reminder => {
            DefaultText::new("Reminder: appointment {appointment_id} {time_until}, on {time}.")
        }
        // A cancellation event need not carry the appointment's time, and
        // the default must not reject it for that.
        MessagePurpose::Cancellation => {
            DefaultText::new("Appointment {appointment_id} on {time} is cancelled.")
                .or_without_time("Appointment {appointment_id} is cancelled.")
        }
        MessagePurpose::Reschedule => {
            DefaultText::new("Appointment {appointment_id} moved to {time}.")
        }
    }
}

/// Twilio refuses a longer `Body` (error 21617); checked at render so the
/// event is dead-lettered with its length instead of costing a request.
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio's limit for an alphanumeric sender ID.
const MAX_SENDER_ID_CHARS: usize = 11;

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// Without a trailing `/`.
    pub base_url: String,
    pub account_sid: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub bodies: ByPurpose<TemplateSetting>,
    pub status_callback: Option<String>,
    pub time_style: TimeStyle,
}

impl TwilioConfig {
    /// Reads every setting, reporting every problem, each naming its key.
    pub fn from_settings(settings: &Settings<'_>) -> Result<TwilioConfig, Vec<String>> {
        let mut problems = Vec::new();
        let base_url = keep(&mut problems, settings.base_url_or(DEFAULT_BASE_URL));
        let account_sid = keep(&mut problems, account_sid(settings));
        let from = keep(&mut problems, from(settings));
        let messaging_service_sid = keep(&mut problems, messaging_service_sid(settings));
        if settings.optional("from").is_none()
            && settings.optional("messaging_service_sid").is_none()
        {
            problems.push(
                "settings `from` and `messaging_service_sid` are both unset: Twilio needs a sender, set at least one"
                    .to_string(),
            );
        }
        let bodies = keep_all(
            &mut problems,
            ByPurpose::try_from_fn(|purpose| body(settings, purpose).map_err(|p| vec![p])),
        );
        let status_callback = keep(&mut problems, status_callback(settings));
        let time_style = keep_all(&mut problems, TimeStyle::from_settings(settings));

        // Every failed read above is `None` and left a problem behind; the
        // sender check is the one problem that leaves no `None`.
        let (
            Some(base_url),
            Some(account_sid),
            Some(from),
            Some(messaging_service_sid),
            Some(bodies),
            Some(status_callback),
            Some(time_style),
            true,
        ) = (
            base_url,
            account_sid,
            from,
            messaging_service_sid,
            bodies,
            status_callback,
            time_style,
            problems.is_empty(),
        )
        else {
            return Err(problems);
        };
        Ok(TwilioConfig {
            base_url,
            account_sid,
            from,
            messaging_service_sid,
            bodies,
            status_callback,
            time_style,
        })
    }
}

pub fn check_settings(settings: &[Setting]) -> Result<(), Vec<String>> {
    TwilioConfig::from_settings(&settings_of(settings)).map(|_| ())
}

/// `prefix` then 32 hex digits: the shape of a Twilio SID.
fn is_sid(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn account_sid(settings: &Settings<'_>) -> Result<String, String> {
    let sid = settings.required("account_sid")?;
    if !is_sid(sid, "AC") {
        return Err(format!(
            "setting `account_sid` must be `AC` followed by 32 hex digits (the Account SID), not `{sid}`"
        ));
    }
    Ok(sid.to_string())
}

fn messaging_service_sid(settings: &Settings<'_>) -> Result<Option<String>, String> {
    match settings.optional("messaging_service_sid") {
        None => Ok(None),
        Some(sid) if is_sid(sid, "MG") => Ok(Some(sid.to_string())),
        Some(sid) => Err(format!(
            "setting `messaging_service_sid` must be `MG` followed by 32 hex digits, not `{sid}`"
        )),
    }
}

/// An E.164 number, or an alphanumeric sender ID (1 to 11 letters, digits
/// and spaces, at least one letter, so it cannot be mistaken for a number).
fn from(settings: &Settings<'_>) -> Result<Option<String>, String> {
    let Some(from) = settings.optional("from") else {
        return Ok(None);
    };
    let sender_id = from.chars().count() <= MAX_SENDER_ID_CHARS
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && from.chars().any(|c| c.is_ascii_alphabetic());
    if is_e164(from) || sender_id {
        Ok(Some(from.to_string()))
    } else {
        Err(format!(
            "setting `from` must be an E.164 number like `+15005550006` or an alphanumeric sender ID \
             (1 to {MAX_SENDER_ID_CHARS} letters, digits or spaces, at least one letter), not `{from}`"
        ))
    }
}

fn body(settings: &Settings<'_>, purpose: MessagePurpose) -> Result<TemplateSetting, String> {
    let key = body_key(purpose);
    if settings.get(key).is_some_and(|text| text.trim().is_empty()) {
        return Err(format!(
            "setting `{key}` must not be empty: Twilio refuses a message without a body"
        ));
    }
    TemplateSetting::read(settings, key, default_body(purpose))
}

fn status_callback(settings: &Settings<'_>) -> Result<Option<String>, String> {
    let url = settings.optional_http_url("status_callback")?;
    Ok(url.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{settings, ACCOUNT_SID, SERVICE_SID};

    fn config(pairs: &[(&str, &str)]) -> Result<TwilioConfig, Vec<String>> {
        TwilioConfig::from_settings(&settings_of(&settings(pairs)))
    }

    #[test]
    fn minimal_settings_take_the_defaults() {
        let c = config(&[("account_sid", ACCOUNT_SID), ("from", "+15005550006")])
            .map_err(|e| e.join("; "));
        let c = c.as_ref().map_err(String::as_str);
        assert_eq!(c.map(|c| c.base_url.as_str()), Ok("https://api.twilio.com"));
        assert_eq!(c.map(|c| c.from.as_deref()), Ok(Some("+15005550006")));
        assert_eq!(
            c.map(|c| c.messaging_service_sid.is_none() && c.status_callback.is_none()),
            Ok(true)
        );
        for purpose in MessagePurpose::ALL {
            assert_eq!(
                c.map(|c| c.bodies.get(purpose).key()),
                Ok(body_key(purpose))
            );
        }
    }

    #[test]
    fn every_body_key_is_known_and_named_after_its_purpose() {
        for purpose in MessagePurpose::ALL {
            let key = body_key(purpose);
            let want = match purpose {
                MessagePurpose::Confirmation => "body_template".to_string(),
                other => format!("{}_body_template", other.name()),
            };
            assert_eq!(key, want);
            assert!(KNOWN_SETTINGS.contains(&key), "{key}");
        }
    }

    #[test]
    fn a_bad_or_empty_body_of_any_purpose_names_its_key() {
        for purpose in MessagePurpose::ALL {
            let key = body_key(purpose);
            let cases = [
                ("Hi {name}", "unknown placeholder `{name}`"),
                ("{time_until", "is never closed"),
                (" ", "must not be empty"),
            ];
            for (text, want) in cases {
                let problems = config(&[
                    ("account_sid", ACCOUNT_SID),
                    ("from", "Clinic"),
                    (key, text),
                ])
                .expect_err("an error");
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(
                    problems[0].starts_with(&format!("setting `{key}`"))
                        && problems[0].contains(want),
                    "{key} {text:?}: {problems:?}"
                );
            }
        }
    }

    #[test]
    fn senders() {
        for from in ["+15005550006", "Clinic", "CLINIC 24", "A", "Clinic2Go99"] {
            assert!(
                config(&[("account_sid", ACCOUNT_SID), ("from", from)]).is_ok(),
                "{from}"
            );
        }
        for from in [
            "15005550006",
            "12345",
            "Clinic-24",
            "ClinicClinic",
            "Klinik\u{e4}",
            "+1 500 555 0006",
        ] {
            let problems =
                config(&[("account_sid", ACCOUNT_SID), ("from", from)]).expect_err("an error");
            assert_eq!(problems.len(), 1, "{from}: {problems:?}");
            assert!(problems[0].starts_with("setting `from`"), "{problems:?}");
        }
        assert!(config(&[
            ("account_sid", ACCOUNT_SID),
            ("messaging_service_sid", SERVICE_SID)
        ])
        .is_ok());
        let both = config(&[
            ("account_sid", ACCOUNT_SID),
            ("from", "Clinic"),
            ("messaging_service_sid", SERVICE_SID),
        ]);
        assert!(both.is_ok());
        let neither = config(&[("account_sid", ACCOUNT_SID), ("from", " ")]).expect_err("an error");
        assert_eq!(neither.len(), 1);
        assert!(
            neither[0].contains("`from` and `messaging_service_sid`"),
            "{neither:?}"
        );
    }

    #[test]
    fn check_settings_reports_every_problem_naming_its_key() {
        let s = settings(&[
            ("base_url", "api.twilio.com"),
            ("account_sid", "AC123"),
            ("from", "not a number!"),
            ("messaging_service_sid", "MGxyz"),
            ("body_template", "{time"),
            ("reminder_body_template", "{reminders}"),
            ("cancellation_body_template", "{name}"),
            ("reschedule_body_template", ""),
            ("status_callback", "/callback"),
            ("time_zone", "Atlantis/Capital"),
            ("time_format", "%J"),
        ]);
        let problems = check_settings(&s).expect_err("an error");
        let keys = [
            "base_url",
            "account_sid",
            "from",
            "messaging_service_sid",
            "body_template",
            "reminder_body_template",
            "cancellation_body_template",
            "reschedule_body_template",
            "status_callback",
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
        assert_eq!(
            check_settings(&settings(&[("from", "+15005550006")])),
            Err(vec!["setting `account_sid` is required".to_string()])
        );
        let empty_body = check_settings(&settings(&[
            ("account_sid", ACCOUNT_SID),
            ("from", "X"),
            ("body_template", ""),
        ]));
        assert!(empty_body.expect_err("an error")[0].contains("`body_template` must not be empty"));
    }

    #[test]
    fn sid_shapes() {
        assert!(is_sid(ACCOUNT_SID, "AC"));
        assert!(is_sid("ACABCDEF0123456789abcdef0123456789", "AC"));
        assert!(
            !is_sid("AC0123456789abcdef0123456789abcde", "AC"),
            "31 digits"
        );
        assert!(
            !is_sid("AC0123456789abcdef0123456789abcdef0", "AC"),
            "33 digits"
        );
        assert!(
            !is_sid("ac0123456789abcdef0123456789abcdef", "AC"),
            "lower-case prefix"
        );
        assert!(
            !is_sid("AC0123456789abcdef0123456789abcdeg", "AC"),
            "not hex"
        );
        assert!(!is_sid(SERVICE_SID, "AC"));
    }
}
