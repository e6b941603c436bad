//! `notify-host publish`: produce test events, like the prototype's
//! publish_appointment_event.py, for the whole appointment lifecycle
//! (created, rescheduled, cancelled).
//!
//! Invariant: every flag is checked before anything connects to Kafka, so a
//! mistake costs no broker round trip and publishes nothing; once checked,
//! building each event cannot fail.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use notify_host::event::EventKind;
use notify_host::kafka;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Map, Value};

use super::{load_config, ConfigArg};

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// What happened to the appointment: created (a booking, the default),
    /// rescheduled (moved to --time) or cancelled. Sets event_type to
    /// appointments.<type>.
    #[arg(long = "type", value_name = "TYPE", value_enum, default_value_t = EventType::Created)]
    event_type: EventType,
    /// Recipient e-mail; requests the email channel. Optional for
    /// rescheduled/cancelled (without any of --email, --sms, --channel the
    /// host uses the channels of the appointment's created event).
    #[arg(long)]
    email: Option<String>,
    /// Recipient phone (E.164); with --sms requests the sms channel.
    #[arg(long)]
    phone: Option<String>,
    /// Request SMS (needs --phone).
    #[arg(long)]
    sms: bool,
    /// Request a channel by name (repeatable), e.g. --channel slack.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Appointment time (RFC 3339, e.g. 2026-06-11T09:30:00+02:00); for
    /// rescheduled the new time (required). Default for created: this time
    /// tomorrow; cancelled carries it only when given.
    #[arg(long)]
    time: Option<String>,
    /// IANA time zone of the appointment (e.g. Europe/Berlin): the zone its
    /// channels' quiet hours are read in. Default: the host's
    /// [scheduler] time_zone.
    #[arg(long, value_name = "IANA")]
    time_zone: Option<String>,
    /// Appointment id; required for rescheduled and cancelled. Default for
    /// created: a fresh UUID per event.
    #[arg(long)]
    appointment_id: Option<String>,
    /// Opt this appointment out of reminders ("reminders": false).
    #[arg(long)]
    no_reminders: bool,
    /// Publish this JSON file as is (one event), instead of building one.
    #[arg(long, conflicts_with_all = [
        "event_type", "email", "phone", "sms", "channels", "time", "time_zone",
        "appointment_id", "no_reminders",
    ])]
    file: Option<PathBuf>,
    /// How many events to publish (each with a fresh event_id).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Topic; default: kafka.topic from the config.
    #[arg(long)]
    topic: Option<String>,
}

/// The `--type` values, one per [`EventKind`] (whose `event_type` strings
/// are the contract's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventType {
    Created,
    Rescheduled,
    Cancelled,
}

impl EventType {
    fn kind(self) -> EventKind {
        match self {
            EventType::Created => EventKind::Created,
            EventType::Rescheduled => EventKind::Rescheduled,
            EventType::Cancelled => EventKind::Cancelled,
        }
    }
}

fn uuid_v4() -> String {
    let b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0x0f, b[7], 8 | (b[8] & 0x3), b[8] >> 4, b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Checks the flags and builds one event. `now` stamps occurred_at (and the
/// default time of a created event); `new_id` makes the event_id and, for a
/// created event without --appointment-id, the appointment id.
fn build_event(
    args: &PublishArgs,
    now: DateTime<Utc>,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Value> {
    let kind = args.event_type;
    let mut notify = Map::new();
    if args.email.is_some() {
        notify.insert("email".into(), json!(true));
    }
    if args.sms {
        if args.phone.is_none() {
            bail!("--sms needs --phone");
        }
        notify.insert("sms".into(), json!(true));
    }
    for c in &args.channels {
        notify.insert(c.clone(), json!(true));
    }
    if kind == EventType::Created && notify.is_empty() {
        bail!("nothing requested: give --email, --sms --phone, --channel or --file");
    }
    if let Some(t) = &args.time {
        // chrono's reasons ("premature end of input") help less than an example.
        if DateTime::parse_from_rfc3339(t).is_err() {
            bail!("--time {t:?} is not an RFC 3339 timestamp (e.g. 2026-06-11T09:30:00+02:00)");
        }
    }
    if let Some(tz) = &args.time_zone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            bail!("--time-zone {tz:?} is not an IANA time zone name (e.g. Europe/Berlin)");
        }
    }
    let appointment_id = match (&args.appointment_id, kind) {
        (Some(id), _) => id.clone(),
        (None, EventType::Created) => new_id(),
        (None, EventType::Rescheduled) => {
            bail!("--type rescheduled needs --appointment-id (the appointment to move)")
        }
        (None, EventType::Cancelled) => {
            bail!("--type cancelled needs --appointment-id (the appointment to cancel)")
        }
    };
    let time = match (&args.time, kind) {
        (Some(t), _) => Some(t.clone()),
        (None, EventType::Created) => Some(rfc3339(now + chrono::Duration::days(1))),
        (None, EventType::Rescheduled) => {
            bail!("--type rescheduled needs --time (the new time, RFC 3339)")
        }
        (None, EventType::Cancelled) => None,
    };

    let mut appointment = Map::new();
    appointment.insert("appointment_id".into(), json!(appointment_id));
    let optional = [
        ("time", time),
        ("time_zone", args.time_zone.clone()),
        ("email", args.email.clone()),
        ("phone_e164", args.phone.clone()),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            appointment.insert(key.into(), json!(v));
        }
    }
    let mut event = Map::new();
    event.insert("event_id".into(), json!(new_id()));
    event.insert("event_type".into(), json!(kind.kind().event_type()));
    event.insert("occurred_at".into(), json!(rfc3339(now)));
    // Absent notify on a reschedule or cancel means "the channels of the
    // created event", which is not the same as an empty one.
    if !notify.is_empty() {
        event.insert("notify".into(), Value::Object(notify));
    }
    if args.no_reminders {
        event.insert("reminders".into(), json!(false));
    }
    event.insert("appointment".into(), Value::Object(appointment));
    Ok(Value::Object(event))
}

/// What the printed line says about an event: its id, type and appointment
/// id (which the host reads as text whether a string or an integer).
fn describe(v: &Value) -> (String, String, Option<String>) {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let event_type = match &v["event_type"] {
        Value::Null => notify_host::event::EVENT_TYPE.to_string(),
        t => text(t).unwrap_or_else(|| t.to_string()),
    };
    (
        text(&v["event_id"]).unwrap_or_else(|| v["event_id"].to_string()),
        event_type,
        text(&v["appointment"]["appointment_id"]),
    )
}

pub fn run(args: PublishArgs) -> Result<ExitCode> {
    // Flags first: a bad one fails before the config is read or Kafka dialled.
    let fixed = match &args.file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => {
            build_event(&args, Utc::now(), &mut uuid_v4)?;
            None
        }
    };
    let config = match load_config(&args.config.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| config.kafka.topic.clone());
    let producer = kafka::producer(&config.kafka)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        for _ in 0..args.count {
            let (payload, parsed) = match &fixed {
                Some(bytes) => (
                    bytes.clone(),
                    serde_json::from_slice(bytes).unwrap_or(Value::Null),
                ),
                None => {
                    let event = build_event(&args, Utc::now(), &mut uuid_v4)?;
                    (serde_json::to_vec(&event)?, event)
                }
            };
            let (event_id, event_type, appointment_id) = describe(&parsed);
            // Keyed by appointment: all events of one appointment land in
            // one partition, in order (a cancel never overtakes its booking).
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&topic).payload(&payload);
            if let Some(k) = appointment_id.as_deref() {
                record = record.key(k);
            }
            let appointment_id = appointment_id.as_deref().unwrap_or("none");
            let delivery = producer.send(record, Duration::from_secs(30)).await;
            match delivery {
                Ok(d) => println!(
                    "{event_id} partition={} offset={} type={event_type} appointment_id={appointment_id}",
                    d.partition, d.offset
                ),
                Err((e, _)) => bail!("publishing to {topic} failed: {e}"),
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        publish: PublishArgs,
    }

    fn parse(flags: &[&str]) -> Result<PublishArgs, clap::Error> {
        let argv = std::iter::once("publish").chain(flags.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.publish)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
            .expect("valid")
            .to_utc()
    }

    /// Ids "id-1", "id-2", … in the order `build_event` asks for them.
    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("id-{n}")
        }
    }

    #[test]
    fn build_event_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], Result<Value, &str>)] = &[
            ("created, defaults", &["--email", "a@b.co"], Ok(json!({
                "event_id": "id-2", "event_type": "appointments.created", "occurred_at": "2026-06-10T12:00:00Z",
                "notify": {"email": true},
                "appointment": {"appointment_id": "id-1", "time": "2026-06-11T12:00:00Z", "email": "a@b.co"}}))),
            ("created, everything", &["--type", "created", "--email", "a@b.co", "--sms", "--phone", "+15555550123",
                "--channel", "slack", "--time", "2026-06-11T09:30:00+02:00", "--time-zone", "Europe/Berlin",
                "--appointment-id", "A-1", "--no-reminders"], Ok(json!({
                "event_id": "id-1", "event_type": "appointments.created", "occurred_at": "2026-06-10T12:00:00Z",
                "notify": {"email": true, "sms": true, "slack": true}, "reminders": false,
                "appointment": {"appointment_id": "A-1", "time": "2026-06-11T09:30:00+02:00",
                    "time_zone": "Europe/Berlin", "email": "a@b.co", "phone_e164": "+15555550123"}}))),
            ("rescheduled, no notify", &["--type", "rescheduled", "--appointment-id", "A-1", "--time", "2026-06-12T10:00:00Z"], Ok(json!({
                "event_id": "id-1", "event_type": "appointments.rescheduled", "occurred_at": "2026-06-10T12:00:00Z",
                "appointment": {"appointment_id": "A-1", "time": "2026-06-12T10:00:00Z"}}))),
            ("rescheduled, with email and zone", &["--type", "rescheduled", "--appointment-id", "A-1",
                "--time", "2026-06-12T10:00:00Z", "--email", "new@b.co", "--time-zone", "America/New_York"], Ok(json!({
                "event_id": "id-1", "event_type": "appointments.rescheduled", "occurred_at": "2026-06-10T12:00:00Z",
                "notify": {"email": true},
                "appointment": {"appointment_id": "A-1", "time": "2026-06-12T10:00:00Z",
                    "time_zone": "America/New_York", "email": "new@b.co"}}))),
            ("cancelled, bare", &["--type", "cancelled", "--appointment-id", "A-1"], Ok(json!({
                "event_id": "id-1", "event_type": "appointments.cancelled", "occurred_at": "2026-06-10T12:00:00Z",
                "appointment": {"appointment_id": "A-1"}}))),
            ("cancelled, sms only, time kept", &["--type", "cancelled", "--appointment-id", "A-1", "--sms",
                "--phone", "+15555550123", "--time", "2026-06-11T09:30:00Z"], Ok(json!({
                "event_id": "id-1", "event_type": "appointments.cancelled", "occurred_at": "2026-06-10T12:00:00Z",
                "notify": {"sms": true},
                "appointment": {"appointment_id": "A-1", "time": "2026-06-11T09:30:00Z", "phone_e164": "+15555550123"}}))),
            ("created, nothing requested", &["--time", "2026-06-11T09:30:00Z"],
                Err("nothing requested: give --email, --sms --phone, --channel or --file")),
            ("sms without phone", &["--type", "cancelled", "--appointment-id", "A-1", "--sms"],
                Err("--sms needs --phone")),
            ("rescheduled without id", &["--type", "rescheduled", "--time", "2026-06-12T10:00:00Z"],
                Err("--type rescheduled needs --appointment-id (the appointment to move)")),
            ("rescheduled without time", &["--type", "rescheduled", "--appointment-id", "A-1"],
                Err("--type rescheduled needs --time (the new time, RFC 3339)")),
            ("cancelled without id", &["--type", "cancelled", "--email", "a@b.co"],
                Err("--type cancelled needs --appointment-id (the appointment to cancel)")),
            ("bad time zone", &["--email", "a@b.co", "--time-zone", "Europe/Berln"],
                Err("--time-zone \"Europe/Berln\" is not an IANA time zone name (e.g. Europe/Berlin)")),
            ("bad time", &["--type", "rescheduled", "--appointment-id", "A-1", "--time", "tomorrow"],
                Err("--time \"tomorrow\" is not an RFC 3339 timestamp (e.g. 2026-06-11T09:30:00+02:00)")),
        ];
        for (what, flags, want) in cases {
            let args = parse(flags).unwrap_or_else(|e| panic!("{what}: flags do not parse: {e}"));
            let got = build_event(&args, now(), &mut counter()).map_err(|e| e.to_string());
            assert_eq!(got, want.clone().map_err(str::to_string), "{what}");
        }
    }

    #[test]
    fn flags_clap_refuses() {
        let cases: &[&[&str]] = &[
            &["--type", "deleted", "--appointment-id", "A-1"],
            &["--file", "e.json", "--type", "cancelled"],
            &["--file", "e.json", "--no-reminders"],
            &["--file", "e.json", "--time-zone", "UTC"],
            &["--file", "e.json", "--appointment-id", "A-1"],
        ];
        for flags in cases {
            assert!(parse(flags).is_err(), "{flags:?} should not parse");
        }
        // --type's default does not count as given next to --file.
        let args = parse(&["--file", "e.json", "--count", "3"]).expect("parses");
        assert_eq!(args.event_type, EventType::Created);
        assert_eq!(args.count, 3);
    }

    #[test]
    fn every_type_maps_to_its_event_type() {
        for t in EventType::value_variants() {
            let flag = t.to_possible_value().expect("not skipped");
            let want = format!("appointments.{}", flag.get_name());
            assert_eq!(t.kind().event_type(), want);
        }
    }

    #[test]
    fn describe_reads_built_and_file_events() {
        let built = json!({"event_id": "e-1", "event_type": "appointments.cancelled", "appointment": {"appointment_id": "A-1"}});
        assert_eq!(
            describe(&built),
            (
                "e-1".into(),
                "appointments.cancelled".into(),
                Some("A-1".into())
            )
        );
        // A file's event may omit event_type (created) or use integer ids.
        let file = json!({"event_id": 7, "appointment": {"appointment_id": 42}});
        assert_eq!(
            describe(&file),
            ("7".into(), "appointments.created".into(), Some("42".into()))
        );
        // Not an event at all (the file is published as is regardless).
        assert_eq!(
            describe(&Value::Null),
            ("null".into(), "appointments.created".into(), None)
        );
    }
}
