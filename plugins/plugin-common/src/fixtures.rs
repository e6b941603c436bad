//! Test values built from the WIT types, which only a plugin crate can name
//! (see [`crate::channel_plugin`]); hence a macro.

/// Defines `settings(pairs)`, `sample_event()`, the messages
/// `confirmation()`, `reminder(name)`, `cancellation()` and `reschedule()`,
/// the render time `DAY_BEFORE_MS`, and `context(attempt, now_unix_ms)` for a
/// plugin's unit tests.
/// Invoke it in a `#[cfg(test)]` module that sees the WIT types defined by
/// [`channel_plugin!`](crate::channel_plugin), e.g. after `use super::*`.
#[macro_export]
macro_rules! channel_test_fixtures {
    () => {
        /// Settings as the host passes them, from a test table.
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

        /// 2026-02-19T15:00:00Z: 24 hours before the sample event's
        /// appointment, when a `day-before` reminder renders.
        pub const DAY_BEFORE_MS: u64 = 1_771_513_200_000;

        /// The message the host asks for on `appointments.created`.
        pub fn confirmation() -> Message {
            Message {
                purpose: Purpose::Confirmation,
                reminder: None,
                useful_until: None,
            }
        }

        /// A reminder named `name` for the sample event's appointment.
        pub fn reminder(name: &str) -> Message {
            Message {
                purpose: Purpose::Reminder,
                reminder: Some(name.to_string()),
                useful_until: Some("2026-02-20T15:00:00Z".to_string()),
            }
        }

        /// The notice of `appointments.cancelled`.
        pub fn cancellation() -> Message {
            Message {
                purpose: Purpose::Cancellation,
                reminder: None,
                useful_until: None,
            }
        }

        /// The notice of `appointments.rescheduled`.
        pub fn reschedule() -> Message {
            Message {
                purpose: Purpose::Reschedule,
                reminder: None,
                useful_until: None,
            }
        }

        /// The call context of attempt `attempt` of a confirmation.
        pub fn context(attempt: u32, now_unix_ms: u64) -> CallContext {
            CallContext {
                attempt,
                now_unix_ms,
                purpose: Purpose::Confirmation,
            }
        }
    };
}
