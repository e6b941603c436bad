//! An event becomes one Twilio `CreateMessage` request, with the body of
//! the message's purpose (see [`crate::config`] for which template that is).
//! Twilio has no custom variables: the purpose shows only in the text.
//!
//! The wall clock is read once, in [`render`], for `{time_until}`; everything
//! below takes the time as an argument and is a pure function.

use std::time::{SystemTime, UNIX_EPOCH};

use plugin_common::{
    encode_path_segment, invalid_settings, is_e164, join_url, settings_of, Escape, MessagePurpose,
};

use crate::config::{TwilioConfig, MAX_BODY_CHARS};
use crate::{Event, Header, HttpRequest, Message, Setting};

/// Renders `message` for `event`, now. `message.useful_until` needs nothing
/// here: the host does not send past it.
pub fn render(
    event: &Event,
    message: &Message,
    settings: &[Setting],
) -> Result<Vec<HttpRequest>, String> {
    render_at(event, message, settings, wall_clock_ms())
}

/// [`render`] at `now_unix_ms`.
pub fn render_at(
    event: &Event,
    message: &Message,
    settings: &[Setting],
    now_unix_ms: u64,
) -> Result<Vec<HttpRequest>, String> {
    let config = TwilioConfig::from_settings(&settings_of(settings)).map_err(invalid_settings)?;
    render_with(event, message, &config, now_unix_ms).map(|request| vec![request])
}

/// The host grants the plugin WASI's wall clock. A clock set before 1970 is
/// read as the epoch: `{time_until}` then tells a long wait, which is wrong
/// but harmless, where failing would lose the message.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn render_with(
    event: &Event,
    message: &Message,
    config: &TwilioConfig,
    now_unix_ms: u64,
) -> Result<HttpRequest, String> {
    let appointment = &event.appointment;
    // The number is not quoted in the reason: rejections are logged.
    let to = appointment
        .phone_e164
        .as_deref()
        .ok_or("appointment.phone_e164 is missing")?;
    if !is_e164(to) {
        return Err(
            "appointment.phone_e164 is not an E.164 number (`+`, then 2 to 15 digits, the first not 0)".to_string(),
        );
    }
    let template = config.bodies.get(MessagePurpose::from(message.purpose));
    let values = event.template_values(message, &config.time_style, now_unix_ms);
    let body = template.render(&values, Escape::None)?;
    let length = body.chars().count();
    if length > MAX_BODY_CHARS {
        return Err(format!(
            "the SMS body is {length} characters long; Twilio accepts at most {MAX_BODY_CHARS} (setting `{}`)",
            template.key()
        ));
    }

    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", to);
    if let Some(from) = &config.from {
        form.append_pair("From", from);
    }
    if let Some(sid) = &config.messaging_service_sid {
        form.append_pair("MessagingServiceSid", sid);
    }
    form.append_pair("Body", &body);
    if let Some(url) = &config.status_callback {
        form.append_pair("StatusCallback", url);
    }

    Ok(HttpRequest {
        method: "POST".to_string(),
        url: join_url(
            &config.base_url,
            &format!(
                "2010-04-01/Accounts/{}/Messages.json",
                encode_path_segment(&config.account_sid)
            ),
        ),
        headers: vec![Header {
            name: "Content-Type".to_string(),
            value: "application/x-www-form-urlencoded".to_string(),
        }],
        body: form.finish().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        cancellation, confirmation, reminder, reschedule, sample_event, settings, ACCOUNT_SID,
        DAY_BEFORE_MS, SERVICE_SID,
    };

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![("account_sid", ACCOUNT_SID), ("from", "+15005550006")]
    }

    fn render_one(
        event: &Event,
        pairs: &[(&str, &str)],
    ) -> Result<(HttpRequest, Vec<(String, String)>), String> {
        render_message(event, &confirmation(), pairs)
    }

    fn render_message(
        event: &Event,
        message: &Message,
        pairs: &[(&str, &str)],
    ) -> Result<(HttpRequest, Vec<(String, String)>), String> {
        let mut requests = render_at(event, message, &settings(pairs), DAY_BEFORE_MS)?;
        assert_eq!(requests.len(), 1);
        let request = requests.remove(0);
        let fields = form_urlencoded::parse(&request.body).into_owned().collect();
        Ok((request, fields))
    }

    #[test]
    fn the_sample_event_with_defaults() {
        let (request, fields) =
            render_one(&sample_event(), &minimal()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
        );
        assert_eq!(
            request.headers,
            [Header {
                name: "Content-Type".to_string(),
                value: "application/x-www-form-urlencoded".to_string()
            }]
        );
        let want = [
            ("To", "+15555550123"),
            ("From", "+15005550006"),
            (
                "Body",
                "Appointment a1b2c3 confirmed for Friday, February 20, 2026 at 3:00 PM UTC.",
            ),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, want);
        // `+` must travel as %2B, or Twilio reads a space.
        let raw = String::from_utf8_lossy(&request.body);
        assert!(
            raw.starts_with("To=%2B15555550123&From=%2B15005550006&Body=Appointment+a1b2c3+"),
            "{raw}"
        );
    }

    /// The `Body` field of a rendered request.
    fn body_of(fields: &[(String, String)]) -> &str {
        fields
            .iter()
            .find(|(k, _)| k == "Body")
            .map_or("", |(_, v)| v.as_str())
    }

    #[test]
    fn each_purpose_renders_its_own_default() {
        let at = "Friday, February 20, 2026 at 3:00 PM UTC";
        let cases = [
            (
                confirmation(),
                format!("Appointment a1b2c3 confirmed for {at}."),
            ),
            (
                reminder("day-before"),
                format!("Reminder: appointment a1b2c3 in 24 hours, on {at}."),
            ),
            (
                cancellation(),
                format!("Appointment a1b2c3 on {at} is cancelled."),
            ),
            (reschedule(), format!("Appointment a1b2c3 moved to {at}.")),
        ];
        for (message, want) in cases {
            let (_, fields) = render_message(&sample_event(), &message, &minimal())
                .unwrap_or_else(|e| panic!("{message:?}: {e}"));
            assert_eq!(body_of(&fields), want, "{message:?}");
            // Nothing but the text tells the purpose: Twilio has no custom
            // variables.
            let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, ["To", "From", "Body"], "{message:?}");
        }
    }

    #[test]
    fn each_purpose_uses_its_own_template() {
        let mut pairs = minimal();
        pairs.extend([
            ("body_template", "Booked {appointment_id}"),
            (
                "reminder_body_template",
                "{reminder} [{purpose}]: {time_until}",
            ),
            (
                "cancellation_body_template",
                "Off: {appointment_id} ({purpose})",
            ),
        ]);
        let cases = [
            (confirmation(), "Booked a1b2c3".to_string()),
            (
                reminder("day-before"),
                "day-before [reminder]: in 24 hours".to_string(),
            ),
            (cancellation(), "Off: a1b2c3 (cancellation)".to_string()),
            // Unset: its own default, not the custom confirmation.
            (
                reschedule(),
                "Appointment a1b2c3 moved to Friday, February 20, 2026 at 3:00 PM UTC.".to_string(),
            ),
        ];
        for (message, want) in cases {
            let (_, fields) = render_message(&sample_event(), &message, &pairs)
                .unwrap_or_else(|e| panic!("{message:?}: {e}"));
            assert_eq!(body_of(&fields), want, "{message:?}");
        }
    }

    #[test]
    fn a_reminder_tells_the_time_left_at_render() {
        let mut pairs = minimal();
        pairs.push(("reminder_body_template", "{time_until}"));
        let minute = 60_000;
        let cases = [
            (DAY_BEFORE_MS, "in 24 hours"),
            (
                DAY_BEFORE_MS + (22 * 60 + 30) * minute,
                "in 1 hour 30 minutes",
            ),
            (DAY_BEFORE_MS + (23 * 60 + 15) * minute, "in 45 minutes"),
            (DAY_BEFORE_MS + 24 * 60 * minute - 30_000, "now"),
            (DAY_BEFORE_MS + 25 * 60 * minute, "now"),
        ];
        for (now, want) in cases {
            let requests = render_at(&sample_event(), &reminder("1h"), &settings(&pairs), now);
            let fields: Vec<(String, String)> = requests
                .map(|r| form_urlencoded::parse(&r[0].body).into_owned().collect())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(body_of(&fields), want, "{now}");
        }
    }

    #[test]
    fn a_cancellation_without_a_time_still_renders_its_default() {
        let mut event = sample_event();
        event.appointment.time = None;
        let (_, fields) =
            render_message(&event, &cancellation(), &minimal()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body_of(&fields), "Appointment a1b2c3 is cancelled.");
        assert_eq!(
            render_message(&event, &reschedule(), &minimal()).map(|_| ()),
            Err(
                "appointment.time is missing but setting `reschedule_body_template` uses {time}"
                    .to_string()
            )
        );
    }

    #[test]
    fn every_option() {
        let pairs = [
            ("base_url", "http://127.0.0.1:9000/"),
            ("account_sid", ACCOUNT_SID),
            ("from", "Clinic"),
            ("messaging_service_sid", SERVICE_SID),
            (
                "body_template",
                "{appointment_id} & {user_id}: {time} = {time_iso} {time_zone}",
            ),
            (
                "status_callback",
                "https://hooks.example.com/twilio?x=1&y=2",
            ),
            ("time_zone", "Asia/Tokyo"),
            ("time_format", "%H:%M"),
        ];
        let (request, fields) =
            render_one(&sample_event(), &pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            request.url,
            format!("http://127.0.0.1:9000/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
        );
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "To",
                "From",
                "MessagingServiceSid",
                "Body",
                "StatusCallback"
            ]
        );
        assert_eq!(fields[2].1, SERVICE_SID);
        assert_eq!(
            fields[3].1,
            "a1b2c3 & 42: 00:00 = 2026-02-20T15:00:00Z Asia/Tokyo"
        );
        assert_eq!(fields[4].1, "https://hooks.example.com/twilio?x=1&y=2");
    }

    #[test]
    fn messaging_service_alone() {
        let pairs = [
            ("account_sid", ACCOUNT_SID),
            ("messaging_service_sid", SERVICE_SID),
        ];
        let (_, fields) = render_one(&sample_event(), &pairs).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["To", "MessagingServiceSid", "Body"]);
    }

    #[test]
    fn phone_rejections_name_the_field_without_the_number() {
        let with_phone = |phone: Option<&str>| {
            let mut event = sample_event();
            event.appointment.phone_e164 = phone.map(str::to_string);
            render(&event, &confirmation(), &settings(&minimal())).map(|_| ())
        };
        assert_eq!(
            with_phone(None),
            Err("appointment.phone_e164 is missing".to_string())
        );
        for bad in [
            "5555550123",
            "+1 555 555 0123",
            "+0555",
            "+1234567890123456",
            "tel:+15555550123",
        ] {
            let err = with_phone(Some(bad)).expect_err("an error");
            assert!(
                err.starts_with("appointment.phone_e164 is not an E.164 number"),
                "{bad}: {err}"
            );
            assert!(!err.contains(bad), "{err}");
        }
    }

    #[test]
    fn body_length_is_counted_in_characters() {
        let mut event = sample_event();
        let mut pairs = minimal();
        pairs.push(("body_template", "{appointment_id}"));

        // 1600 two-byte characters: 3200 bytes, still within the limit.
        event.appointment.appointment_id = "é".repeat(MAX_BODY_CHARS);
        let (_, fields) = render_one(&event, &pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fields[2].1.chars().count(), MAX_BODY_CHARS);

        event.appointment.appointment_id = "é".repeat(MAX_BODY_CHARS + 1);
        assert_eq!(
            render(&event, &confirmation(), &settings(&pairs)).map(|_| ()),
            Err("the SMS body is 1601 characters long; Twilio accepts at most 1600 (setting `body_template`)".to_string())
        );
        // The reason names the template that made the body.
        pairs.push(("reminder_body_template", "{appointment_id}"));
        assert_eq!(
            render(&event, &reminder("day-before"), &settings(&pairs)).map(|_| ()),
            Err("the SMS body is 1601 characters long; Twilio accepts at most 1600 (setting `reminder_body_template`)".to_string())
        );
    }

    #[test]
    fn missing_template_values_and_bad_settings_are_rejections() {
        let mut event = sample_event();
        event.appointment.time = None;
        assert_eq!(
            render(&event, &confirmation(), &settings(&minimal())).map(|_| ()),
            Err("appointment.time is missing but setting `body_template` uses {time}".to_string())
        );
        let err = render(
            &sample_event(),
            &confirmation(),
            &settings(&[("from", "+15005550006")]),
        )
        .expect_err("an error");
        assert_eq!(err, "invalid settings: setting `account_sid` is required");
    }

    #[test]
    fn rendering_is_deterministic() {
        for message in [confirmation(), reminder("day-before")] {
            let once = || {
                render_at(
                    &sample_event(),
                    &message,
                    &settings(&minimal()),
                    DAY_BEFORE_MS,
                )
            };
            assert_eq!(once(), once());
        }
        // The clock only matters to `{time_until}`.
        let a = render(&sample_event(), &confirmation(), &settings(&minimal()));
        assert_eq!(
            a,
            render(&sample_event(), &confirmation(), &settings(&minimal()))
        );
    }
}
