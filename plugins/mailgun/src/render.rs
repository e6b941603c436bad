//! An event becomes one Mailgun send request.

use plugin_common::{encode_path_segment, invalid_settings, join_url, settings_of, Escape};

use crate::config::MailgunConfig;
use crate::{multipart, Event, Header, HttpRequest, Message, Purpose, Setting};

/// Renders `message` for `event`.
///
/// Every purpose gets the confirmation texts for now (the host sends only
/// confirmations yet). When reminders arrive, this is where the message
/// picks its texts: for `Purpose::Reminder`, templates named after
/// `message.reminder` (e.g. settings `reminder_subject_template` and
/// `reminder_text_template`, or per-reminder ones) would replace
/// `config.subject` / `config.text` / `config.html` before `render_with`.
/// `message.useful_until` needs nothing here: the host does not send past it.
pub fn render(
    event: &Event,
    message: &Message,
    settings: &[Setting],
) -> Result<Vec<HttpRequest>, String> {
    let config = MailgunConfig::from_settings(&settings_of(settings)).map_err(invalid_settings)?;
    // Exhaustive on purpose: a purpose added by a later contract stops the
    // build here, where its text must be chosen.
    match message.purpose {
        Purpose::Confirmation | Purpose::Reminder | Purpose::Cancellation | Purpose::Reschedule => {
            render_with(event, &config).map(|request| vec![request])
        }
    }
}

pub fn render_with(event: &Event, config: &MailgunConfig) -> Result<HttpRequest, String> {
    let to = recipient(event.appointment.email.as_deref())?;
    let values = event.template_values(&config.time_style);
    let subject = config
        .subject
        .render("subject_template", &values, Escape::None)?;
    let text = config.text.render("text_template", &values, Escape::None)?;
    let html = match &config.html {
        Some(template) => Some(template.render("html_template", &values, Escape::Html)?),
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
    // message to the event that caused it.
    fields.push(("v:event_id", &event.event_id));
    fields.push(("v:appointment_id", &event.appointment.appointment_id));

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
    use crate::test_support::{confirmation, sample_event, settings};

    const MINIMAL: &[(&str, &str)] = &[
        ("domain", "mg.example.com"),
        ("from", "Clinic <noreply@mg.example.com>"),
    ];

    fn render_one(
        event: &Event,
        pairs: &[(&str, &str)],
    ) -> Result<(HttpRequest, Vec<(String, String)>), String> {
        let mut requests = render(event, &confirmation(), &settings(pairs))?;
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
                "v:appointment_id"
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
