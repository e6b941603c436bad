//! `notify-host publish`: produce test events, like the prototype's
//! publish_appointment_event.py.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use notify_host::kafka;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

use super::{load_config, ConfigArg};

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Recipient e-mail; requests the email channel.
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
    /// Appointment time (RFC 3339); default: tomorrow at this time.
    #[arg(long)]
    time: Option<String>,
    /// Appointment id; default: a fresh UUID per event.
    #[arg(long)]
    appointment_id: Option<String>,
    /// Publish this JSON file as is (one event), instead of building one.
    #[arg(long, conflicts_with_all = ["email", "phone", "sms", "channels"])]
    file: Option<PathBuf>,
    /// How many events to publish.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Topic; default: kafka.topic from the config.
    #[arg(long)]
    topic: Option<String>,
}

fn uuid_v4() -> String {
    let b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0x0f, b[7], 8 | (b[8] & 0x3), b[8] >> 4, b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn build_event(args: &PublishArgs) -> Result<Value> {
    let mut notify = serde_json::Map::new();
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
    if notify.is_empty() {
        bail!("nothing requested: give --email, --sms --phone, --channel or --file");
    }
    let now = chrono::Utc::now();
    let time = args.time.clone().unwrap_or_else(|| {
        (now + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    Ok(json!({
        "event_id": uuid_v4(),
        "event_type": "appointments.created",
        "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "notify": notify,
        "appointment": {
            "appointment_id": args.appointment_id.clone().unwrap_or_else(uuid_v4),
            "time": time,
            "email": args.email,
            "phone_e164": args.phone,
        }
    }))
}

pub fn run(args: PublishArgs) -> Result<ExitCode> {
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
    let fixed = match &args.file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    runtime.block_on(async {
        for _ in 0..args.count {
            let (payload, event_id, key) = match &fixed {
                Some(bytes) => {
                    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                    let id = v["event_id"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v["event_id"].to_string());
                    let key = v["appointment"]["appointment_id"]
                        .as_str()
                        .map(str::to_string);
                    (bytes.clone(), id, key)
                }
                None => {
                    let event = build_event(&args)?;
                    let id = event["event_id"].as_str().unwrap_or_default().to_string();
                    let key = event["appointment"]["appointment_id"]
                        .as_str()
                        .map(str::to_string);
                    (serde_json::to_vec(&event)?, id, key)
                }
            };
            // Keyed by appointment: all events of one appointment land in
            // one partition, in order.
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&topic).payload(&payload);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            let delivery = producer.send(record, Duration::from_secs(30)).await;
            match delivery {
                Ok(d) => println!("{event_id} partition={} offset={}", d.partition, d.offset),
                Err((e, _)) => bail!("publishing to {topic} failed: {e}"),
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
