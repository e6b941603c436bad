//! The appointment event contract (shared/SPEC.md, and README's "Event
//! types"), and its validation.
//!
//! Rules, verbatim from the contract: `event_id` unique per event; at least one
//! `notify` flag true; `appointment.appointment_id` required; `appointment.email`
//! required when `notify.email`; `appointment.phone_e164` (E.164) required when
//! `notify.sms`; unknown fields ignored; ids may be strings or integers.
//! Beyond email and SMS, any `notify.NAME: true` requests the channel `NAME`.
//!
//! `event_type` decides what the event means ([`EventKind`]):
//! `appointments.created` (the default when absent), `appointments.rescheduled`
//! (requires `appointment.time`, the new time) and `appointments.cancelled`.
//! For the two lifecycle types `notify` is optional: absent, the
//! appointment's channels from its created event are used. Any other type is
//! a violation of kind [`ViolationKind::UnknownEventType`], which the pipeline
//! dead-letters or skips (`pipeline.unknown_event_types`). Optional extras:
//! a top-level `"reminders": false` (no reminders for this appointment) and
//! `appointment.time_zone` (an IANA name, for quiet hours).
//!
//! A [`ContractViolation`] names the field, because it ends up in a
//! dead-letter record that someone has to act on.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::plugin::{Appointment, Event};

/// The event type of a booking, and the default when `event_type` is absent.
pub const EVENT_TYPE: &str = "appointments.created";
pub const RESCHEDULED: &str = "appointments.rescheduled";
pub const CANCELLED: &str = "appointments.cancelled";

/// What an event says happened to its appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Rescheduled,
    Cancelled,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::Created,
        EventKind::Rescheduled,
        EventKind::Cancelled,
    ];

    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Created => EVENT_TYPE,
            EventKind::Rescheduled => RESCHEDULED,
            EventKind::Cancelled => CANCELLED,
        }
    }

    pub fn of(event_type: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.event_type() == event_type)
    }
}

/// Which rule an event broke: an unknown `event_type` may be skipped by
/// configuration; everything else is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    Invalid,
    UnknownEventType,
}

/// Why an event breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ContractViolation {
    /// Dotted path of the offending field, or `payload` for the whole thing.
    pub field: String,
    pub problem: String,
    pub kind: ViolationKind,
}

fn violation(field: &str, problem: impl fmt::Display) -> ContractViolation {
    ContractViolation {
        field: field.to_string(),
        problem: problem.to_string(),
        kind: ViolationKind::Invalid,
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct AppointmentEvent {
    pub event_id: String,
    pub event_type: String,
    pub kind: EventKind,
    /// Whether `notify` was given (optional for the lifecycle types).
    pub has_notify: bool,
    /// `false` when the event opts out of reminders (`"reminders": false`).
    pub reminders: bool,
    /// `appointment.time_zone`, a valid IANA name.
    pub time_zone: Option<String>,
    pub occurred_at: Option<String>,
    /// Every `notify` flag, by channel name.
    pub notify: BTreeMap<String, bool>,
    pub appointment_id: String,
    pub user_id: Option<String>,
    pub time: Option<String>,
    pub email: Option<String>,
    pub phone_e164: Option<String>,
    /// The payload as received, for plugins that need more and for
    /// required-field checks.
    pub raw: String,
    json: Value,
}

impl AppointmentEvent {
    /// The channels the event asks for, in name order.
    pub fn requested_channels(&self) -> impl Iterator<Item = &str> {
        self.notify
            .iter()
            .filter(|(_, on)| **on)
            .map(|(name, _)| name.as_str())
    }

    /// Whether a dotted path (`appointment.email`) holds a non-empty value.
    pub fn has_field(&self, path: &str) -> bool {
        let mut node = &self.json;
        for part in path.split('.') {
            match node.get(part) {
                Some(next) => node = next,
                None => return false,
            }
        }
        match node {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            _ => true,
        }
    }

    /// The payload with `appointment.time` replaced: what a reminder of a
    /// rescheduled appointment renders from when the reschedule carried no
    /// contact data of its own.
    pub fn payload_with_time(&self, time: &str) -> String {
        let mut json = self.json.clone();
        if let Some(appt) = json.get_mut("appointment").and_then(Value::as_object_mut) {
            appt.insert("time".into(), Value::String(time.to_string()));
        }
        json.to_string()
    }

    /// The event as a plugin receives it.
    pub fn to_plugin_event(&self) -> Event {
        Event {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            occurred_at: self.occurred_at.clone(),
            appointment: Appointment {
                appointment_id: self.appointment_id.clone(),
                user_id: self.user_id.clone(),
                time: self.time.clone(),
                email: self.email.clone(),
                phone_e164: self.phone_e164.clone(),
            },
            raw_json: self.raw.clone(),
        }
    }
}

/// Parses and validates one Kafka message payload.
pub fn parse(payload: &[u8]) -> Result<AppointmentEvent, ContractViolation> {
    let raw = std::str::from_utf8(payload).map_err(|e| {
        violation(
            "payload",
            format_args!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    let json: Value = serde_json::from_str(raw)
        .map_err(|e| violation("payload", format_args!("not valid JSON: {e}")))?;
    let root = json
        .as_object()
        .ok_or_else(|| violation("payload", "expected a JSON object"))?;

    let event_id =
        id(root, "event_id", "event_id")?.ok_or_else(|| violation("event_id", "required"))?;
    let (event_type, kind) = match root.get("event_type") {
        None | Some(Value::Null) => (EVENT_TYPE.to_string(), EventKind::Created),
        Some(Value::String(t)) => match EventKind::of(t) {
            Some(kind) => (t.clone(), kind),
            None => {
                let shown = crate::scrub::cut(t.clone(), 64);
                return Err(ContractViolation {
                    kind: ViolationKind::UnknownEventType,
                    ..violation(
                        "event_type",
                        format_args!(
                            "unknown event type \"{shown}\" (known: {EVENT_TYPE}, {RESCHEDULED}, {CANCELLED})"
                        ),
                    )
                });
            }
        },
        Some(other) => {
            return Err(violation(
                "event_type",
                format_args!("expected a string, found {}", kind_of(other)),
            ))
        }
    };
    let occurred_at = timestamp(root, "occurred_at", "occurred_at")?;

    let notify = match root.get("notify") {
        Some(Value::Object(flags)) => {
            let mut out = BTreeMap::new();
            for (name, flag) in flags {
                match flag {
                    Value::Bool(b) => {
                        out.insert(name.clone(), *b);
                    }
                    Value::Null => {}
                    other => {
                        return Err(violation(
                            &format!("notify.{name}"),
                            format_args!("expected true or false, found {}", kind_of(other)),
                        ))
                    }
                }
            }
            out
        }
        None | Some(Value::Null) if kind != EventKind::Created => BTreeMap::new(),
        None | Some(Value::Null) => return Err(violation("notify", "required")),
        Some(other) => {
            return Err(violation(
                "notify",
                format_args!("expected an object, found {}", kind_of(other)),
            ))
        }
    };
    let has_notify = !notify.is_empty();
    let reminders = match root.get("reminders") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(violation(
                "reminders",
                format_args!("expected true or false, found {}", kind_of(other)),
            ))
        }
    };
    if kind == EventKind::Created && !notify.values().any(|on| *on) {
        return Err(violation(
            "notify",
            "at least one channel flag must be true",
        ));
    }

    let appt = match root.get("appointment") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => return Err(violation("appointment", "required")),
        Some(other) => {
            return Err(violation(
                "appointment",
                format_args!("expected an object, found {}", kind_of(other)),
            ))
        }
    };
    let appointment_id = id(appt, "appointment_id", "appointment.appointment_id")?
        .ok_or_else(|| violation("appointment.appointment_id", "required"))?;
    let user_id = id(appt, "user_id", "appointment.user_id")?;
    let time = timestamp(appt, "time", "appointment.time")?;
    if kind == EventKind::Rescheduled && time.is_none() {
        return Err(violation(
            "appointment.time",
            format_args!("required for {RESCHEDULED} (the new time)"),
        ));
    }
    let time_zone = text(appt, "time_zone", "appointment.time_zone")?;
    if let Some(tz) = &time_zone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(violation(
                "appointment.time_zone",
                format_args!(
                    "\"{}\" is not an IANA time zone name (e.g. Europe/Berlin)",
                    crate::scrub::cut(tz.clone(), 64)
                ),
            ));
        }
    }
    let email = text(appt, "email", "appointment.email")?;
    let phone_e164 = text(appt, "phone_e164", "appointment.phone_e164")?;

    if notify.get("email") == Some(&true) {
        match &email {
            None => {
                return Err(violation(
                    "appointment.email",
                    "required when notify.email is true",
                ))
            }
            Some(e) if !looks_like_email(e) => {
                return Err(violation("appointment.email", "not an e-mail address"))
            }
            Some(_) => {}
        }
    }
    if notify.get("sms") == Some(&true) {
        match &phone_e164 {
            None => {
                return Err(violation(
                    "appointment.phone_e164",
                    "required when notify.sms is true",
                ))
            }
            Some(p) if !is_e164(p) => {
                return Err(violation(
                    "appointment.phone_e164",
                    "not an E.164 number (+ then 2 to 15 digits, no leading 0)",
                ))
            }
            Some(_) => {}
        }
    }

    Ok(AppointmentEvent {
        event_id,
        event_type,
        kind,
        has_notify,
        reminders,
        time_zone,
        occurred_at,
        notify,
        appointment_id,
        user_id,
        time,
        email,
        phone_e164,
        raw: raw.to_string(),
        json,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An id: a non-empty string or an integer, normalised to a string.
fn id(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, ContractViolation> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(violation(field, "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(violation(
            field,
            format_args!("expected a string or an integer, found {}", kind_of(other)),
        )),
    }
}

fn text(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, ContractViolation> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(violation(
            field,
            format_args!("expected a string, found {}", kind_of(other)),
        )),
    }
}

fn timestamp(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, ContractViolation> {
    let Some(t) = text(obj, key, field)? else {
        return Ok(None);
    };
    chrono::DateTime::parse_from_rfc3339(&t)
        .map_err(|e| violation(field, format_args!("not an RFC 3339 timestamp ({e})")))?;
    Ok(Some(t))
}

fn looks_like_email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// `^\+[1-9]\d{1,14}$`, the contract's E.164 pattern.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"event_id":"9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f","event_type":"appointments.created",
        "occurred_at":"2026-02-13T17:00:00Z","notify":{"email":true,"sms":true},
        "appointment":{"appointment_id":42,"user_id":"u-7","time":"2026-02-20T15:00:00Z",
        "email":"user@example.com","phone_e164":"+15555550123","room":"B"},"extra":{"x":1}}"#;

    #[test]
    fn sample_event_is_valid() {
        let e = parse(SAMPLE.as_bytes()).expect("valid");
        assert_eq!(e.appointment_id, "42");
        assert_eq!(e.requested_channels().collect::<Vec<_>>(), ["email", "sms"]);
        assert!(e.has_field("appointment.email"));
        assert!(e.has_field("appointment.room"));
        assert!(!e.has_field("appointment.nope"));
        assert_eq!(
            e.to_plugin_event().appointment.user_id.as_deref(),
            Some("u-7")
        );
    }

    #[test]
    fn violations_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "payload"),
            (b"{not json", "payload"),
            (b"[1,2]", "payload"),
            (br#"{"notify":{"email":true},"appointment":{"appointment_id":1,"email":"a@b.co"}}"#, "event_id"),
            (br#"{"event_id":1.5,"notify":{"email":true},"appointment":{"appointment_id":1,"email":"a@b.co"}}"#, "event_id"),
            (br#"{"event_id":"e","event_type":"appointments.deleted","notify":{"email":true},"appointment":{"appointment_id":1,"email":"a@b.co"}}"#, "event_type"),
            (br#"{"event_id":"e","event_type":7,"notify":{"email":true},"appointment":{"appointment_id":1,"email":"a@b.co"}}"#, "event_type"),
            (br#"{"event_id":"e","event_type":"appointments.rescheduled","appointment":{"appointment_id":1}}"#, "appointment.time"),
            (br#"{"event_id":"e","event_type":"appointments.cancelled","appointment":{}}"#, "appointment.appointment_id"),
            (br#"{"event_id":"e","event_type":"appointments.cancelled","notify":{"email":true},"appointment":{"appointment_id":1}}"#, "appointment.email"),
            (br#"{"event_id":"e","notify":{"email":true},"reminders":"no","appointment":{"appointment_id":1,"email":"a@b.co"}}"#, "reminders"),
            (br#"{"event_id":"e","notify":{"email":true},"appointment":{"appointment_id":1,"email":"a@b.co","time_zone":"Mars/Olympus"}}"#, "appointment.time_zone"),
            (br#"{"event_id":"e","appointment":{"appointment_id":1}}"#, "notify"),
            (br#"{"event_id":"e","notify":{"email":false,"sms":false},"appointment":{"appointment_id":1}}"#, "notify"),
            (br#"{"event_id":"e","notify":{"email":"yes"},"appointment":{"appointment_id":1}}"#, "notify.email"),
            (br#"{"event_id":"e","notify":{"email":true}}"#, "appointment"),
            (br#"{"event_id":"e","notify":{"email":true},"appointment":{"email":"a@b.co"}}"#, "appointment.appointment_id"),
            (br#"{"event_id":"e","notify":{"email":true},"appointment":{"appointment_id":[1],"email":"a@b.co"}}"#, "appointment.appointment_id"),
            (br#"{"event_id":"e","notify":{"email":true},"appointment":{"appointment_id":1}}"#, "appointment.email"),
            (br#"{"event_id":"e","notify":{"email":true},"appointment":{"appointment_id":1,"email":"nope"}}"#, "appointment.email"),
            (br#"{"event_id":"e","notify":{"sms":true},"appointment":{"appointment_id":1}}"#, "appointment.phone_e164"),
            (br#"{"event_id":"e","notify":{"sms":true},"appointment":{"appointment_id":1,"phone_e164":"555-0123"}}"#, "appointment.phone_e164"),
            (br#"{"event_id":"e","notify":{"sms":true},"appointment":{"appointment_id":1,"phone_e164":15555550123}}"#, "appointment.phone_e164"),
            (br#"{"event_id":"e","notify":{"sms":true},"appointment":{"appointment_id":1,"phone_e164":"+15555550123","time":"tomorrow"}}"#, "appointment.time"),
        ];
        for (payload, field) in cases {
            let err = parse(payload).expect_err(&String::from_utf8_lossy(payload));
            assert_eq!(
                err.field,
                *field,
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn lifecycle_types_parse_with_their_own_rules() {
        let cancelled = parse(
            br#"{"event_id":"c1","event_type":"appointments.cancelled","appointment":{"appointment_id":42}}"#,
        )
        .expect("a cancel needs no notify");
        assert_eq!(cancelled.kind, EventKind::Cancelled);
        assert!(!cancelled.has_notify);
        assert_eq!(cancelled.requested_channels().count(), 0);
        let moved = parse(
            br#"{"event_id":"r1","event_type":"appointments.rescheduled","reminders":false,"appointment":{"appointment_id":"42","time":"2099-01-01T10:00:00Z","time_zone":"Europe/Berlin"}}"#,
        )
        .expect("valid");
        assert_eq!(moved.kind, EventKind::Rescheduled);
        assert!(!moved.reminders);
        assert_eq!(moved.time_zone.as_deref(), Some("Europe/Berlin"));
        let unknown = parse(
            br#"{"event_id":"x","event_type":"appointments.deleted","appointment":{"appointment_id":1}}"#,
        )
        .expect_err("unknown type");
        assert_eq!(unknown.kind, ViolationKind::UnknownEventType);
        let created = parse(SAMPLE.as_bytes()).expect("valid");
        assert_eq!(
            (created.kind, created.reminders, created.has_notify),
            (EventKind::Created, true, true)
        );
        let patched = parse(created.payload_with_time("2099-03-01T09:00:00Z").as_bytes())
            .expect("still valid");
        assert_eq!(patched.time.as_deref(), Some("2099-03-01T09:00:00Z"));
        assert_eq!(patched.event_id, created.event_id);
    }

    #[test]
    fn other_channels_and_unknown_fields_pass() {
        let e = parse(br#"{"event_id":"e","notify":{"slack":true,"email":false},"appointment":{"appointment_id":"a"},"v":2}"#)
            .expect("valid");
        assert_eq!(e.requested_channels().collect::<Vec<_>>(), ["slack"]);
    }

    #[test]
    fn e164() {
        for (s, ok) in [
            ("+15555550123", true),
            ("+12", true),
            ("+1", false),
            ("15555550123", false),
            ("+05555", false),
            ("+1234567890123456", false),
            ("+1555a", false),
        ] {
            assert_eq!(is_e164(s), ok, "{s}");
        }
    }
}
