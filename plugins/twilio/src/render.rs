//! An event becomes one Twilio `CreateMessage` request.

use plugin_common::{
    encode_path_segment, invalid_settings, is_e164, join_url, settings_of, Escape,
};

use crate::config::{TwilioConfig, MAX_BODY_CHARS};
use crate::{Event, Header, HttpRequest, Message, Purpose, Setting};

/// Renders `message` for `event`.
///
/// Every purpose gets the confirmation text for now (the host sends only
/// confirmations yet). When reminders arrive, this is where the message
/// picks its text: for `Purpose::Reminder`, a template named after
/// `message.reminder` (e.g. a setting `reminder_body_template`) would replace
/// `config.body` before `render_with`, which checks the length the same way.
/// `message.useful_until` needs nothing here: the host does not send past it.
pub fn render(
    event: &Event,
    message: &Message,
    settings: &[Setting],
) -> Result<Vec<HttpRequest>, String> {
    let config = TwilioConfig::from_settings(&settings_of(settings)).map_err(invalid_settings)?;
    // Exhaustive on purpose: a purpose added by a later contract stops the
    // build here, where its text must be chosen.
    match message.purpose {
        Purpose::Confirmation | Purpose::Reminder | Purpose::Cancellation | Purpose::Reschedule => {
            render_with(event, &config).map(|request| vec![request])
        }
    }
}

pub fn render_with(event: &Event, config: &TwilioConfig) -> Result<HttpRequest, String> {
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
    let values = event.template_values(&config.time_style);
    let body = config.body.render("body_template", &values, Escape::None)?;
    let length = body.chars().count();
    if length > MAX_BODY_CHARS {
        return Err(format!(
            "the SMS body is {length} characters long; Twilio accepts at most {MAX_BODY_CHARS} (setting `body_template`)"
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
    use crate::test_support::{confirmation, sample_event, settings, ACCOUNT_SID, SERVICE_SID};

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![("account_sid", ACCOUNT_SID), ("from", "+15005550006")]
    }

    fn render_one(
        event: &Event,
        pairs: &[(&str, &str)],
    ) -> Result<(HttpRequest, Vec<(String, String)>), String> {
        let mut requests = render(event, &confirmation(), &settings(pairs))?;
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
        let a = render(&sample_event(), &confirmation(), &settings(&minimal()));
        assert_eq!(
            a,
            render(&sample_event(), &confirmation(), &settings(&minimal()))
        );
    }
}
