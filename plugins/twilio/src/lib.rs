//! The Twilio SMS channel: one appointment event becomes one
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` request, and
//! Twilio's answer (its JSON error `code` above all) becomes a disposition.
//!
//! The plugin is a pure function of its inputs (see `wit/channel.wit`): the
//! host sends the request, attaches the Account SID and auth token, and
//! retries. Everything below the WIT glue takes and returns plain values, so
//! it is unit-tested natively.

#![deny(unsafe_code)]

mod classify;
mod config;
mod render;

pub use classify::classify;
pub use config::{check_settings, TwilioConfig, KNOWN_SETTINGS, MAX_BODY_CHARS};
pub use render::render;

// The WIT types, the component export and `describe()`.
plugin_common::channel_plugin! {
    plugin: Twilio,
    name: "twilio",
    required_fields: ["appointment.phone_e164"],
    known_settings: KNOWN_SETTINGS,
}

#[cfg(test)]
mod test_support {
    use super::*;

    plugin_common::channel_test_fixtures!();

    pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
    pub const SERVICE_SID: &str = "MG0123456789ABCDEF0123456789abcdef";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself() {
        let info = describe();
        assert_eq!(info.name, "twilio");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.required_fields, ["appointment.phone_e164"]);
        for key in [
            "base_url",
            "account_sid",
            "from",
            "messaging_service_sid",
            "body_template",
            "status_callback",
            "reminder_body_template",
            "cancellation_body_template",
            "reschedule_body_template",
        ] {
            assert!(info.known_settings.iter().any(|k| k == key), "{key}");
        }
    }
}
