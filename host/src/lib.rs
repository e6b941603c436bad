//! notify-host: consumes `appointments.created` events and delivers each
//! requested channel through a sandboxed WebAssembly channel plugin.
//!
//! Data flows one way:
//! ```text
//! config ──► channels (plugin runtime + transport) ──► provider
//!   event ──► validation ──┘
//! ```
//! - [`config`]: config.toml, `${VAR}` interpolation, validation.
//! - [`event`]: the event contract.
//! - [`plugin`]: the sandboxed wasm runtime (render + classify).
//! - [`transport`]: the host's HTTP client, allow-list and auth.
//! - [`channels`]: enabled channels = config + plugin.
//! - [`attempt`]: one send of one request and its classification (pipeline and CLI).
//! - [`health`]: each channel's circuit, throttle and rate limit.
//! - [`ledger`]: every delivery's state on record (dedup, status API, hold, replay).
//! - [`pipeline`]: Kafka messages in, deliveries out, offsets committed behind them.
//! - [`redact`], [`telemetry`]: masked, structured logs.
//! - [`scrub`]: credentials kept out of plugin input and output, CLI output and logs.

pub mod admin;
pub mod attempt;
pub mod channels;
pub mod config;
pub mod dlq;
pub mod event;
pub mod health;
pub mod kafka;
pub mod ledger;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod plugin;
pub mod redact;
pub mod reload;
pub mod reminders;
pub mod replay;
pub mod retry;
pub mod scrub;
pub mod telemetry;
pub mod transport;
