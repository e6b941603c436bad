//! An event becomes one Mailgun send request, with the texts of the
//! message's purpose (see [`crate::config`] for which templates those are).
//!
//! The request's custom variables `v:purpose` (always) and `v:reminder` (for
//! a reminder) come back in Mailgun's webhooks and logs next to `v:event_id`,
//! so a reminder can be told from the confirmation of the same event.
//!
//! The wall clock is read once, in [`render`], for `{time_until}`; everything
//! below takes the time as an argument and is a pure function.

use std::time::{SystemTime, UNIX_EPOCH};

use plugin_common::{
    encode_path_segment, invalid_settings, join_url, settings_of, Escape, MessagePurpose,
};

use crate::config::MailgunConfig;
use crate::{multipart, Event, Header, HttpRequest, Message, Setting};

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
    let config = MailgunConfig::from_settings(&settings_of(settings)).map_err(invalid_settings)?;
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
    config: &MailgunConfig,
    now_unix_ms: u64,
) -> Result<HttpRequest, String> {
    let to = recipient(event.appointment.email.as_deref())?;
    let purpose = MessagePurpose::from(message.purpose);
    let texts = config.texts.get(purpose);
    let values = event.template_values(message, &config.time_style, now_unix_ms);
    let subject = texts.subject.render(&values, Escape::None)?;
    let text = texts.text.render(&values, Escape::None)?;
    let html = match &texts.html {
        Some(template) => Some(template.render(&values, Escape::Html)?),
        None => None,
    };

    let mut fields: Vec<(&str, &str)> = vec![
        ("from", &config.from),
        ("to", to),
        ("subject", &subject),
        ("text", &text),
    ];
    if let Some(html) = &html {
        fields.push(("html", html));
    }
    fields.extend(config.tags.iter().map(|tag| ("o:tag", tag.as_str())));
    if config.test_mode {
        fields.push(("o:testmode", "yes"));
    }
    if let Some(tracking) = &config.tracking {
        fields.push(("o:tracking", tracking));
    }
    // Custom variables come back in Mailgun's webhooks and logs, tying a
    // message to the event that caused it and saying why it was sent.
    fields.push(("v:event_id", &event.event_id));
    fields.push(("v:appointment_id", &event.appointment.appointment_id));
    fields.push(("v:purpose", purpose.name()));
    if let (MessagePurpose::Reminder, Some(name)) = (purpose, values.reminder) {
        fields.push(("v:reminder", name));
    }

    let form = multipart::encode(&fields);
    Ok(HttpRequest {
        method: "POST".to_string(),
        url: join_url(
            &config.base_url,
            &format!("v3/{}/messages", encode_path_segment(&config.domain)),
        ),
        headers: vec![Header {
            name: "Content-Type".to_string(),
            value: form.content_type(),
        }],
        body: form.body,
    })
}

/// The one address to send to. Mailgun's `to` takes a comma-separated list,
/// so a value that could name a second recipient is refused, as is one with
/// whitespace or control characters. The address itself is not quoted in the
/// reason: rejections are logged.
fn recipient(email: Option<&str>) -> Result<&str, String> {
    let email = email.ok_or("appointment.email is missing")?;
    let reason = if !email.contains('@') {
        "it has no `@`"
    } else if email.starts_with('@') || email.ends_with('@') {
        "it lacks a local part or a domain"
    } else if email.contains([',', ';']) {
        "it names more than one recipient"
    } else if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or control characters"
    } else {
        return Ok(email);
    };
    Err(format!(
        "appointment.email is not a single e-mail address: {reason}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multipart::tests::parse;
    use crate::test_support::{
        cancellation, confirmation, reminder, reschedule, sample_event, settings, DAY_BEFORE_MS,
    };

    const MINIMAL: &[(&str, &str)] = &[
        ("domain", "mg.example.com"),
        ("from", "Clinic <noreply@mg.example.com>"),
    ];

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
        let content_type = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map(|h| h.value.clone())
            .unwrap_or_else(|| panic!("no content type"));
        let fields = parse(&content_type, &request.body);
        Ok((request, fields))
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn the_sample_event_with_defaults() {
        let (request, fields) =
            render_one(&sample_event(), MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            "https://api.mailgun.net/v3/mg.example.com/messages"
        );
        assert_eq!(request.headers.len(), 1);
        assert_eq!(
            request.headers[0].value,
            format!(
                "multipart/form-data; boundary={}",
                multipart::BOUNDARY_PREFIX
            )
        );
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "from",
                "to",
                "subject",
                "text",
                "o:tag",
                "v:event_id",
                "v:appointment_id",
                "v:purpose"
            ]
        );
        assert_eq!(field(&fields, "from"), ["Clinic <noreply@mg.example.com>"]);
        assert_eq!(field(&fields, "to"), ["user@example.com"]);
        assert_eq!(field(&fields, "subject"), ["Your appointment is confirmed"]);
        assert_eq!(
            field(&fields, "text"),
            ["Your appointment a1b2c3 is booked for Friday, February 20, 2026 at 3:00 PM UTC."]
        );
        assert_eq!(field(&fields, "o:tag"), ["appointment-created"]);
        assert_eq!(
            field(&fields, "v:event_id"),
            ["9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f"]
        );
        assert_eq!(field(&fields, "v:appointment_id"), ["a1b2c3"]);
        assert_eq!(field(&fields, "v:purpose"), ["confirmation"]);
        assert!(field(&fields, "v:reminder").is_empty());
    }

    #[test]
    fn each_purpose_renders_its_own_defaults() {
        let at = "Friday, February 20, 2026 at 3:00 PM UTC";
        let cases = [
            (
                confirmation(),
                "Your appointment is confirmed".to_string(),
                format!("Your appointment a1b2c3 is booked for {at}."),
                "confirmation",
                None,
            ),
            (
                reminder("day-before"),
                "Reminder: your appointment in 24 hours".to_string(),
                format!("This is a reminder of your appointment on {at} (in 24 hours)."),
                "reminder",
                Some("day-before"),
            ),
            (
                cancellation(),
                format!("Your appointment on {at} is cancelled"),
                format!("Your appointment a1b2c3 on {at} is cancelled."),
                "cancellation",
                None,
            ),
            (
                reschedule(),
                format!("Your appointment has moved to {at}"),
                format!("Your appointment a1b2c3 has moved to {at}."),
                "reschedule",
                None,
            ),
        ];
        for (message, subject, text, purpose, reminder) in cases {
            let (_, fields) = render_message(&sample_event(), &message, MINIMAL)
                .unwrap_or_else(|e| panic!("{purpose}: {e}"));
            assert_eq!(field(&fields, "subject"), [subject.as_str()], "{purpose}");
            assert_eq!(field(&fields, "text"), [text.as_str()], "{purpose}");
            assert!(field(&fields, "html").is_empty(), "{purpose}");
            assert_eq!(field(&fields, "v:purpose"), [purpose]);
            assert_eq!(field(&fields, "v:reminder"), Vec::from_iter(reminder));
        }
    }

    #[test]
    fn each_purpose_uses_its_own_templates_and_html_is_never_borrowed() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("subject_template", "Booked {appointment_id}"),
            ("html_template", "<p>Booked</p>"),
            (
                "reminder_subject_template",
                "{reminder}: {time_until} [{purpose}]",
            ),
            ("reminder_text_template", "{appointment_id} {time_until}"),
            ("reminder_html_template", "<p>{reminder} {time_until}</p>"),
            ("cancellation_text_template", "Off: {appointment_id}"),
            ("reschedule_subject_template", "Moved ({purpose})"),
            ("reschedule_html_template", " "),
        ]);
        let cases = [
            (confirmation(), "Booked a1b2c3", None, Some("<p>Booked</p>")),
            (
                reminder("2h-before"),
                "2h-before: in 24 hours [reminder]",
                Some("a1b2c3 in 24 hours"),
                Some("<p>2h-before in 24 hours</p>"),
            ),
            (
                cancellation(),
                "Your appointment on Friday, February 20, 2026 at 3:00 PM UTC is cancelled",
                Some("Off: a1b2c3"),
                None,
            ),
            (reschedule(), "Moved (reschedule)", None, None),
        ];
        for (message, subject, text, html) in cases {
            let (_, fields) = render_message(&sample_event(), &message, &pairs)
                .unwrap_or_else(|e| panic!("{message:?}: {e}"));
            assert_eq!(field(&fields, "subject"), [subject], "{message:?}");
            if let Some(text) = text {
                assert_eq!(field(&fields, "text"), [text], "{message:?}");
            }
            assert_eq!(field(&fields, "html"), Vec::from_iter(html), "{message:?}");
        }
    }

    #[test]
    fn a_reminder_tells_the_time_left_at_render() {
        let hour = 3_600_000;
        let cases = [
            (DAY_BEFORE_MS, "in 24 hours"),
            (
                DAY_BEFORE_MS + 22 * hour + 30 * 60_000,
                "in 1 hour 30 minutes",
            ),
            (DAY_BEFORE_MS + 24 * hour - 45 * 60_000, "in 45 minutes"),
            (DAY_BEFORE_MS - 24 * hour, "in 2 days"),
            (DAY_BEFORE_MS + 24 * hour + 1, "now"),
        ];
        for (now, want) in cases {
            let requests = render_at(
                &sample_event(),
                &reminder("day-before"),
                &settings(MINIMAL),
                now,
            );
            let fields = requests.map(|r| {
                let content_type = r[0].headers[0].value.clone();
                parse(&content_type, &r[0].body)
            });
            let fields = fields.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                field(&fields, "subject"),
                [format!("Reminder: your appointment {want}").as_str()],
                "{now}"
            );
        }
    }

    #[test]
    fn a_cancellation_without_a_time_still_renders_its_defaults() {
        let mut event = sample_event();
        event.appointment.time = None;
        let (_, fields) =
            render_message(&event, &cancellation(), MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(field(&fields, "subject"), ["Your appointment is cancelled"]);
        assert_eq!(
            field(&fields, "text"),
            ["Your appointment a1b2c3 is cancelled."]
        );
        // An operator's own text that needs the time is a rejection, as for
        // every other template.
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("cancellation_text_template", "Off: {time}"));
        assert_eq!(
            render_message(&event, &cancellation(), &pairs).map(|_| ()),
            Err(
                "appointment.time is missing but setting `cancellation_text_template` uses {time}"
                    .to_string()
            )
        );
    }

    #[test]
    fn every_option() {
        let pairs = [
            ("region", "eu"),
            ("domain", "mg.example.com"),
            ("from", "noreply@mg.example.com"),
            ("subject_template", "{appointment_id} for user {user_id}"),
            (
                "text_template",
                "At {time} ({time_iso}, {time_zone}) {{ok}}",
            ),
            ("html_template", "<p>{appointment_id}</p>"),
            ("tags", " appointment-created , clinic-7 ,, "),
            ("test_mode", "true"),
            ("tracking", "no"),
            ("time_zone", "Europe/Berlin"),
            ("time_format", "%Y-%m-%d %H:%M %Z"),
        ];
        let mut event = sample_event();
        event.appointment.appointment_id = "<a&b>".to_string();
        let (request, fields) = render_one(&event, &pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            request.url,
            "https://api.eu.mailgun.net/v3/mg.example.com/messages"
        );
        assert_eq!(field(&fields, "subject"), ["<a&b> for user 42"]);
        assert_eq!(
            field(&fields, "text"),
            ["At 2026-02-20 16:00 CET (2026-02-20T15:00:00Z, Europe/Berlin) {ok}"]
        );
        assert_eq!(field(&fields, "html"), ["<p>&lt;a&amp;b&gt;</p>"]);
        assert_eq!(field(&fields, "o:tag"), ["appointment-created", "clinic-7"]);
        assert_eq!(field(&fields, "o:testmode"), ["yes"]);
        assert_eq!(field(&fields, "o:tracking"), ["no"]);
        assert_eq!(field(&fields, "v:appointment_id"), ["<a&b>"]);
    }

    #[test]
    fn base_url_wins_and_the_domain_is_one_path_segment() {
        let pairs = [
            ("base_url", "http://127.0.0.1:8080/"),
            ("region", "eu"),
            ("domain", "mg.example.com?x=1#y"),
            ("from", "a@b.c"),
            ("tags", ""),
            ("test_mode", "false"),
        ];
        let (request, fields) =
            render_one(&sample_event(), &pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            request.url,
            "http://127.0.0.1:8080/v3/mg.example.com%3Fx%3D1%23y/messages"
        );
        assert!(field(&fields, "o:tag").is_empty());
        assert!(field(&fields, "o:testmode").is_empty());
    }

    #[test]
    fn rendering_is_deterministic() {
        for message in [confirmation(), reminder("day-before")] {
            let once = || render_at(&sample_event(), &message, &settings(MINIMAL), DAY_BEFORE_MS);
            assert_eq!(once(), once());
        }
        // The clock only matters to `{time_until}`.
        let a = render(&sample_event(), &confirmation(), &settings(MINIMAL));
        assert_eq!(
            a,
            render(&sample_event(), &confirmation(), &settings(MINIMAL))
        );
    }

    #[test]
    fn a_value_containing_the_boundary_lengthens_it() {
        let mut event = sample_event();
        event.appointment.appointment_id = format!("\r\n--{}--\r\n", multipart::BOUNDARY_PREFIX);
        let (request, fields) = render_one(&event, MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert!(request.headers[0]
            .value
            .ends_with(&format!("boundary={}-1-", multipart::BOUNDARY_PREFIX)));
        assert_eq!(
            field(&fields, "v:appointment_id"),
            [event.appointment.appointment_id.as_str()]
        );
    }

    #[test]
    fn rejections() {
        let with_email = |email: Option<&str>| {
            let mut event = sample_event();
            event.appointment.email = email.map(str::to_string);
            render(&event, &confirmation(), &settings(MINIMAL)).map(|_| ())
        };
        assert_eq!(
            with_email(None),
            Err("appointment.email is missing".to_string())
        );
        for bad in [
            "user.example.com",
            "@example.com",
            "user@",
            "a@b.c, evil@x.y",
            "a@b.c;x@y.z",
            "a b@c.d",
            "a@b.c\r\nBcc: x@y",
        ] {
            let err = with_email(Some(bad)).expect_err("an error");
            assert!(
                err.starts_with("appointment.email is not a single e-mail address"),
                "{bad}: {err}"
            );
            assert!(!err.contains(bad), "the address is not echoed: {err}");
        }

        let mut no_time = sample_event();
        no_time.appointment.time = None;
        assert_eq!(
            render(&no_time, &confirmation(), &settings(MINIMAL)).map(|_| ()),
            Err("appointment.time is missing but setting `text_template` uses {time}".to_string())
        );
        let mut no_time_needed = MINIMAL.to_vec();
        no_time_needed.push(("text_template", "Appointment {appointment_id} is booked."));
        assert!(render(&no_time, &confirmation(), &settings(&no_time_needed)).is_ok());

        let mut bad_time = sample_event();
        bad_time.appointment.time = Some("soon".to_string());
        assert!(render(&bad_time, &confirmation(), &settings(MINIMAL))
            .expect_err("an error")
            .starts_with("appointment.time `soon`"));

        let err = render(
            &sample_event(),
            &confirmation(),
            &settings(&[("domain", "x")]),
        )
        .expect_err("an error");
        assert_eq!(err, "invalid settings: setting `from` is required");
    }
}
