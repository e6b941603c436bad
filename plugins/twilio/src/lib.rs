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

pub use bindings::notify::channel::types::{
    Appointment, CallContext, Delivered, Disposition, Event, Header, HttpRequest, HttpResponse,
    PluginInfo, RetryLater, Setting,
};

// The generated glue moves values across the component boundary with raw
// pointers; `unsafe` is allowed here and nowhere else in the crate. Its
// lowering functions take one argument per flattened field, which is the
// canonical ABI's shape, not a design to lint.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "channel",
        path: "../../wit",
        additional_derives: [PartialEq, Eq],
    });

    use super::Twilio;
    export!(Twilio);
}

struct Twilio;

impl bindings::Guest for Twilio {
    fn describe() -> PluginInfo {
        describe()
    }

    fn check_settings(settings: Vec<Setting>) -> Result<(), Vec<String>> {
        check_settings(&settings)
    }

    fn render(event: Event, settings: Vec<Setting>) -> Result<Vec<HttpRequest>, String> {
        render(&event, &settings)
    }

    fn classify(
        response: HttpResponse,
        settings: Vec<Setting>,
        context: CallContext,
    ) -> Disposition {
        classify(&response, &settings, &context)
    }
}

pub fn describe() -> PluginInfo {
    PluginInfo {
        name: "twilio".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        required_fields: vec!["appointment.phone_e164".to_string()],
        known_settings: KNOWN_SETTINGS.iter().map(|k| k.to_string()).collect(),
    }
}

fn settings_of(settings: &[Setting]) -> plugin_common::Settings<'_> {
    plugin_common::Settings::new(settings.iter().map(|s| (s.key.as_str(), s.value.as_str())))
}

#[cfg(test)]
mod test_support {
    use super::*;

    pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
    pub const SERVICE_SID: &str = "MG0123456789ABCDEF0123456789abcdef";

    pub fn settings(pairs: &[(&str, &str)]) -> Vec<Setting> {
        pairs
            .iter()
            .map(|(k, v)| Setting {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    /// The seed's sample event.
    pub fn sample_event() -> Event {
        Event {
            event_id: "9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f".to_string(),
            event_type: "appointments.created".to_string(),
            occurred_at: Some("2026-02-13T17:00:00Z".to_string()),
            appointment: Appointment {
                appointment_id: "a1b2c3".to_string(),
                user_id: Some("42".to_string()),
                time: Some("2026-02-20T15:00:00Z".to_string()),
                email: Some("user@example.com".to_string()),
                phone_e164: Some("+15555550123".to_string()),
            },
            raw_json: "{}".to_string(),
        }
    }
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
        ] {
            assert!(info.known_settings.iter().any(|k| k == key), "{key}");
        }
    }
}
