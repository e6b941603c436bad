//! The events the bench publishes, and the ids that tie a provider request
//! back to the event (and run) it came from.

use std::fmt;

/// An event id the bench issued: UUID-shaped (the contract says "uuid"), with
/// the run's tag in the first group and the event's index in the last, so the
/// stand-in can map a request to its produce time without a lookup table, and
/// a stray request from another run is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef {
    pub run: u32,
    pub index: u64,
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-0000-4000-8000-{:012x}", self.run, self.index)
    }
}

impl EventRef {
    pub fn parse(text: &str) -> Option<EventRef> {
        let mut parts = text.split('-');
        let run = u32::from_str_radix(parts.next()?, 16).ok()?;
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        if (a, b, c) != ("0000", "4000", "8000") {
            return None;
        }
        let last = parts.next()?;
        if last.len() != 12 || parts.next().is_some() {
            return None;
        }
        let index = u64::from_str_radix(last, 16).ok()?;
        Some(EventRef { run, index })
    }
}

/// The appointment id for key number `k`.
pub fn appointment_id(k: u64) -> String {
    format!("appt-{k:06}")
}

/// One `appointments.created` event asking for e-mail and SMS.
pub fn payload(id: EventRef, key: u64) -> String {
    serde_json::json!({
        "event_id": id.to_string(),
        "event_type": "appointments.created",
        "occurred_at": "2026-02-13T17:00:00Z",
        "notify": { "email": true, "sms": true },
        "appointment": {
            "appointment_id": appointment_id(key),
            "user_id": key,
            "time": "2099-02-20T15:00:00Z",
            "email": format!("user{key}@example.com"),
            // +1 555 then seven digits: valid E.164 for any key below 10^7.
            "phone_e164": format!("+1555{:07}", key % 10_000_000),
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let id = EventRef {
            run: 0xdead_beef,
            index: 49_999,
        };
        assert_eq!(id.to_string(), "deadbeef-0000-4000-8000-00000000c34f");
        assert_eq!(EventRef::parse(&id.to_string()), Some(id));
        assert_eq!(
            EventRef::parse("9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f"),
            None
        );
        assert_eq!(EventRef::parse("deadbeef-0000-4000-8000-c34f"), None);
    }
}
