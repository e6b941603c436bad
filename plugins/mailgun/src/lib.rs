//! The Mailgun e-mail channel: one appointment event becomes one
//! `POST /v3/{domain}/messages` request, and Mailgun's answer becomes a
//! disposition per Mailgun's documented status codes.
//!
//! The plugin is a pure function of its inputs (see `wit/channel.wit`): the
//! host sends the request, attaches the API key and retries. Everything
//! below the WIT glue takes and returns plain values, so it is unit-tested
//! natively.

#![deny(unsafe_code)]

mod classify;
mod config;
mod multipart;
mod render;

pub use classify::classify;
pub use config::{check_settings, MailgunConfig, KNOWN_SETTINGS};
pub use render::render;

// The WIT types, the component export and `describe()`.
plugin_common::channel_plugin! {
    plugin: Mailgun,
    name: "mailgun",
    required_fields: ["appointment.email"],
    known_settings: KNOWN_SETTINGS,
}

#[cfg(test)]
mod test_support {
    use super::*;

    plugin_common::channel_test_fixtures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself() {
        let info = describe();
        assert_eq!(info.name, "mailgun");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.required_fields, ["appointment.email"]);
        for key in [
            "base_url",
            "region",
            "domain",
            "from",
            "tags",
            "not_found_retries",
            "time_zone",
            "reminder_subject_template",
            "cancellation_text_template",
            "reschedule_html_template",
        ] {
            assert!(info.known_settings.iter().any(|k| k == key), "{key}");
        }
    }
}
