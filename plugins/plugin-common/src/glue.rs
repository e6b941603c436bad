//! The component glue every channel plugin needs. It is a macro because
//! wit-bindgen generates the WIT types and the `Guest` trait inside the crate
//! that asks for them: this crate cannot name them, a plugin crate can.

/// Makes the invoking crate a `channel` component. Invoke it once, at the
/// crate root:
///
/// ```text
/// plugin_common::channel_plugin! {
///     plugin: Mailgun,
///     name: "mailgun",
///     required_fields: ["appointment.email"],
///     known_settings: KNOWN_SETTINGS,
/// }
/// ```
///
/// At the crate root it defines:
/// - the WIT types of `notify:channel@0.2.0` (`Event`, `Message`, `Purpose`,
///   `Setting`, `HttpRequest`, ...), public;
/// - the unit struct `plugin`, exported as the component; its functions call
///   the crate's own `check_settings`, `render(event, message, settings)` and
///   `classify`, which take their arguments by reference and must be in scope
///   there;
/// - `pub fn describe()`, from the other three arguments;
/// - [`NamedValue`](crate::NamedValue) for `Setting` and `Header`,
///   `From<Purpose>` for [`MessagePurpose`](crate::MessagePurpose), and
///   `Event::template_values`, so the helpers of this crate can read them.
///
/// The crate must depend on `wit-bindgen` and sit two levels below the
/// workspace root (`plugins/NAME`): wit-bindgen finds the WIT files relative
/// to the invoking crate's manifest. It reads only the `*.wit` files directly
/// in `wit/` (the current version); the frozen `wit/0.1.0/` is not seen.
#[macro_export]
macro_rules! channel_plugin {
    (
        plugin: $plugin:ident,
        name: $name:literal,
        required_fields: [$($field:literal),* $(,)?],
        known_settings: $known_settings:expr $(,)?
    ) => {
        pub use bindings::notify::channel::types::{
            Appointment, CallContext, Delivered, Disposition, Event, Header, HttpRequest,
            HttpResponse, Message, PluginInfo, Purpose, RetryLater, Setting,
        };

        // The generated glue moves values across the component boundary with
        // raw pointers; `unsafe` is allowed here and nowhere else in the
        // crate. Its lowering functions take one argument per flattened
        // field, which is the canonical ABI's shape, not a design to lint.
        #[allow(unsafe_code, clippy::too_many_arguments)]
        mod bindings {
            ::wit_bindgen::generate!({
                world: "channel",
                path: "../../wit",
                additional_derives: [PartialEq, Eq],
            });

            use super::$plugin;
            export!($plugin);
        }

        struct $plugin;

        impl bindings::Guest for $plugin {
            fn describe() -> PluginInfo {
                describe()
            }

            fn check_settings(settings: Vec<Setting>) -> Result<(), Vec<String>> {
                check_settings(&settings)
            }

            fn render(
                event: Event,
                message: Message,
                settings: Vec<Setting>,
            ) -> Result<Vec<HttpRequest>, String> {
                render(&event, &message, &settings)
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
                name: $name.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                required_fields: vec![$($field.to_string()),*],
                known_settings: $known_settings.iter().map(|k| k.to_string()).collect(),
            }
        }

        impl $crate::NamedValue for Setting {
            fn name(&self) -> &str {
                &self.key
            }

            fn value(&self) -> &str {
                &self.value
            }
        }

        impl $crate::NamedValue for Header {
            fn name(&self) -> &str {
                &self.name
            }

            fn value(&self) -> &str {
                &self.value
            }
        }

        impl From<Purpose> for $crate::MessagePurpose {
            // Exhaustive: a purpose added by a later contract stops the
            // build here.
            fn from(purpose: Purpose) -> Self {
                match purpose {
                    Purpose::Confirmation => $crate::MessagePurpose::Confirmation,
                    Purpose::Reminder => $crate::MessagePurpose::Reminder,
                    Purpose::Cancellation => $crate::MessagePurpose::Cancellation,
                    Purpose::Reschedule => $crate::MessagePurpose::Reschedule,
                }
            }
        }

        impl Event {
            /// What the templates may show of this event and `message`, at
            /// `now_unix_ms` (for `{time_until}`).
            pub fn template_values<'a>(
                &'a self,
                message: &'a Message,
                time_style: &'a $crate::TimeStyle,
                now_unix_ms: u64,
            ) -> $crate::TemplateValues<'a> {
                let appointment = &self.appointment;
                $crate::TemplateValues {
                    event_id: &self.event_id,
                    appointment_id: &appointment.appointment_id,
                    user_id: appointment.user_id.as_deref(),
                    time: appointment.time.as_deref(),
                    time_style,
                    purpose: message.purpose.into(),
                    reminder: message.reminder.as_deref(),
                    now_unix_ms,
                }
            }
        }
    };
}
