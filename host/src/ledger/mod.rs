//! The delivery ledger: every delivery's state on record, keyed by
//! (event_id, channel, purpose).
//!
//! Invariants:
//! - A delivery in a final state (`delivered`, `dead_lettered`, `held`,
//!   `expired`, `skipped`, `cancelled`) is on disk before [`Ledger::put`]
//!   resolves, so the pipeline commits a Kafka offset only after every
//!   delivery behind it is durable. In-between states (`pending`,
//!   `retrying`, `waiting`) are written without a flush: losing one in a
//!   crash loses nothing, the event is redelivered and worked again.
//! - What a redelivered (or replayed, or released) event does with a
//!   delivery already on record is decided in one place, [`admit`].
//! - Records are kept for the retention and then dropped whole, a time
//!   bucket at a time, so expiry never holds the writer for long.
//! - Contact data is stored masked; the event itself is kept only while a
//!   delivery is `held` (for its release) or a reminder is open (for its
//!   send), and in the appointment's state (for notices and reschedules).
//! - An open reminder (scheduled, or being sent) is a timer: it is kept
//!   outside the time buckets, so the retention never drops one that has
//!   not fired, and it is found by its due time. It joins the newest bucket
//!   when it ends, under a new id (ids and buckets keep one order, which
//!   paging relies on; the key stays the same).
//!
//! - When several hosts share the ledger ([`postgres`]), a delivery is
//!   worked by the host that holds its [`Claim`]: taken before the record
//!   is read for work, renewed while the host lives, given up with the
//!   delivery's final record (in the same transaction), and taken over by
//!   another host only once its lease ran out (its owner died or lost the
//!   database). A host whose lease may have run out sends nothing until it
//!   has claimed again ([`Backend::claims_held`]).
//!
//! The storage is behind [`Backend`]: the embedded default ([`embedded`],
//! redb, one host) and the shared PostgreSQL one ([`postgres`], any number
//! of hosts).

pub mod cursor;
pub mod embedded;
pub mod postgres;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::ChannelMode;

/// Header of an event re-published from the dead-letter topic
/// (`notify-host dlq replay`): `DLQ_TOPIC/PARTITION/OFFSET` of the dead
/// letter. Its dead-lettered deliveries are tried again ([`admit`]).
pub const REPLAY_OF_HEADER: &str = "notify.replay_of";
/// Header of a held event re-published by a release: the channel released.
/// Informational: a held delivery goes out once its channel is on.
pub const RELEASE_OF_HEADER: &str = "notify.release_of";

/// Attempts kept on a record (the newest); `attempt_count` has them all.
pub const ATTEMPTS_KEPT: usize = 5;
/// A provider answer's snippet on an attempt is cut here (after masking).
pub const SNIPPET_BYTES: usize = 8 * 1024;
/// Most records one list request returns.
pub const MAX_PAGE: usize = 500;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being worked on: rendered or about to be sent.
    Pending,
    /// The provider accepted it.
    Delivered,
    /// A send failed transiently; another attempt follows.
    Retrying,
    /// The channel's circuit is open: waiting for the provider to recover.
    Waiting,
    /// The channel is on hold: kept, with its event, for release.
    Held,
    /// It can never succeed; the dead-letter topic has it.
    DeadLettered,
    /// Past its useful time (the appointment started, or the event was too
    /// old); not sent.
    Expired,
    /// The channel is off; not sent and not kept.
    Skipped,
    /// The appointment was cancelled (or moved) before it was sent.
    Cancelled,
    /// A reminder waiting for its due time.
    Scheduled,
}

impl State {
    /// In storage-code order: new states go at the end.
    pub const ALL: [State; 10] = [
        State::Pending,
        State::Delivered,
        State::Retrying,
        State::Waiting,
        State::Held,
        State::DeadLettered,
        State::Expired,
        State::Skipped,
        State::Cancelled,
        State::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Retrying => "retrying",
            State::Waiting => "waiting",
            State::Held => "held",
            State::DeadLettered => "dead_lettered",
            State::Expired => "expired",
            State::Skipped => "skipped",
            State::Cancelled => "cancelled",
            State::Scheduled => "scheduled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the record must be on disk before the offset behind it is
    /// committed (see the module's invariants): every end state, and a
    /// scheduled reminder (the event that scheduled it is not seen again).
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Retrying | State::Waiting)
    }

    /// Whether a delivery in this state has not ended: for a reminder, that
    /// it is still a timer.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            State::Scheduled | State::Pending | State::Retrying | State::Waiting
        )
    }
}

/// Why a message is sent (the plugin contract's `purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Confirmation,
    Reminder,
    Cancellation,
    Reschedule,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Confirmation,
        Purpose::Reminder,
        Purpose::Cancellation,
        Purpose::Reschedule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Confirmation => "confirmation",
            Purpose::Reminder => "reminder",
            Purpose::Cancellation => "cancellation",
            Purpose::Reschedule => "reschedule",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What identifies a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub event_id: String,
    pub channel: String,
    pub purpose: Purpose,
    /// The reminder's name, for a reminder (one event schedules one per
    /// configured reminder and channel).
    pub reminder: Option<String>,
}

impl DeliveryKey {
    /// A confirmation's or a notice's key.
    pub fn new(event_id: &str, channel: &str, purpose: Purpose) -> DeliveryKey {
        DeliveryKey {
            event_id: event_id.to_string(),
            channel: channel.to_string(),
            purpose,
            reminder: None,
        }
    }

    /// The storage key: channel names, purposes and reminder names never
    /// hold the separator, so the last fields always parse back, whatever
    /// the event id holds.
    pub fn encode(&self) -> String {
        match &self.reminder {
            None => format!(
                "{}\u{1f}{}\u{1f}{}",
                self.event_id,
                self.channel,
                self.purpose.as_str()
            ),
            Some(name) => format!(
                "{}\u{1f}{}\u{1f}{}:{name}",
                self.event_id,
                self.channel,
                self.purpose.as_str()
            ),
        }
    }

    /// The prefix every key of `event_id` starts with.
    pub fn event_prefix(event_id: &str) -> String {
        format!("{event_id}\u{1f}")
    }
}

/// The recipient, masked as in the logs (`j***@example.com`, `+1******4567`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// One send of the delivery's request(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptRecord {
    /// The event's attempt number for the channel (1 for the first send).
    pub number: u32,
    pub at: DateTime<Utc>,
    /// `delivered`, `retry`, `channel_down`, `permanent`, `unreachable` or
    /// `unclassified`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    /// Request sent to answer received (none when there was no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The start of the provider's answer (or the error), contact data
    /// masked and credentials scrubbed, at most 8 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

/// Where the event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One delivery, as stored and as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Ledger-wide sequence number: newer deliveries have larger ids.
    #[serde(default)]
    pub id: u64,
    pub event_id: String,
    pub channel: String,
    pub purpose: Purpose,
    pub state: State,
    pub appointment_id: String,
    /// For a reminder: its configured name (`day-before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<String>,
    /// For a reminder: when it is (or was) due, after quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub recipient: Recipient,
    /// The newest attempts (at most 5).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Every attempt made, counted.
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// For `dead_lettered`: the dead-letter class (e.g. `permanent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Why it is in its state, when that needs saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Until when sending it is worth anything (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub useful_until: Option<DateTime<Utc>>,
    /// How often the event came again after this record was final.
    #[serde(default)]
    pub duplicates: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// The event was a replay of this dead letter (`topic/partition/offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    /// A new record in `pending`.
    pub fn new(key: &DeliveryKey, appointment_id: &str, recipient: Recipient) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: 0,
            event_id: key.event_id.clone(),
            channel: key.channel.clone(),
            purpose: key.purpose,
            state: State::Pending,
            appointment_id: appointment_id.to_string(),
            reminder: key.reminder.clone(),
            due_at: None,
            recipient,
            attempts: Vec::new(),
            attempt_count: 0,
            provider_message_id: None,
            error_class: None,
            reason: None,
            useful_until: None,
            duplicates: 0,
            source: None,
            replay_of: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn key(&self) -> DeliveryKey {
        DeliveryKey {
            event_id: self.event_id.clone(),
            channel: self.channel.clone(),
            purpose: self.purpose,
            reminder: self.reminder.clone(),
        }
    }

    /// Whether this is an open reminder: a timer (see the module doc).
    pub fn is_timer(&self) -> bool {
        self.purpose == Purpose::Reminder && self.state.is_open()
    }

    /// Appends an attempt, keeping the newest [`ATTEMPTS_KEPT`].
    pub fn push_attempt(&mut self, attempt: AttemptRecord) {
        self.attempt_count = self.attempt_count.max(attempt.number);
        self.attempts.push(attempt);
        if self.attempts.len() > ATTEMPTS_KEPT {
            let extra = self.attempts.len() - ATTEMPTS_KEPT;
            self.attempts.drain(..extra);
        }
    }

    /// Moves to `state` with an optional reason, now.
    pub fn set(&mut self, state: State, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.updated_at = Utc::now();
    }
}

/// The event of a held delivery, byte for byte, for its release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMessage {
    pub topic: String,
    /// Base64 of the record's key, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// The payload (always UTF-8 JSON: anything else breaks the contract
    /// and is never held).
    pub payload: String,
    /// The record's headers, values in base64.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// What is written: the delivery, and its event while it is held or an
/// open reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldMessage>,
}

/// Where an appointment stands, as its events said: what a later event
/// (a create after its cancel, a reschedule) and the scheduler check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppointmentState {
    pub appointment_id: String,
    pub status: AppointmentStatus,
    /// The appointment's time as last announced (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The event that last changed it.
    pub last_event_id: String,
    /// The channels its booking asked for (reminders and notices go there
    /// when a later event names none).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Whether reminders are wanted (`"reminders": false` opts out).
    #[serde(default = "yes")]
    pub reminders: bool,
    pub updated_at: DateTime<Utc>,
    /// The latest event with contact data (a reminder or notice renders
    /// from it when a later event carries none). Not shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub event: Option<HeldMessage>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Active,
    Cancelled,
}

/// A timer's place in the due order: (due, ms since the epoch; key).
pub type TimerPos = (u64, String);

/// Filters of a list request; every one optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub channel: Option<String>,
    pub state: Option<State>,
    pub purpose: Option<Purpose>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn matches(&self, d: &Delivery) -> bool {
        self.channel.as_ref().is_none_or(|c| *c == d.channel)
            && self.state.is_none_or(|s| s == d.state)
            && self.purpose.is_none_or(|p| p == d.purpose)
            && self.since.is_none_or(|t| d.created_at >= t)
            && self.until.is_none_or(|t| d.created_at < t)
    }
}

/// One backend answer to a list request, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub deliveries: Vec<Delivery>,
    /// Where the next page starts (ids below it), when there may be more.
    pub next_before: Option<u64>,
}

/// One page for the API, with the opaque cursor of the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page {
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    pub buckets_dropped: usize,
    pub records_dropped: u64,
    /// Appointment states past their appointment by the retention.
    pub appointments_dropped: u64,
    /// The longest the pass held the writer: it drops one bucket per
    /// transaction (commit included), letting queued writes in between.
    pub held_writer: std::time::Duration,
}

/// Size of the ledger, for readiness, metrics and the closing numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    /// Open reminders (scheduled or being sent).
    pub timers: u64,
    pub file_bytes: u64,
    pub buckets: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("ledger: {0}")]
    Store(String),
    #[error("ledger record {id} cannot be read: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("the ledger's writer stopped")]
    WriterGone,
    /// The database is away (refused, cut off, restarting): waited out.
    #[error("the ledger database is unavailable: {0}")]
    Unavailable(String),
}

/// Why a list request cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0}")]
    BadCursor(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Who works a delivery (see the module's invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This host holds it: new, renewed, or taken over from an owner whose
    /// lease ran out.
    Granted,
    /// Another host holds it until `until` (renewed while that host lives).
    Busy { owner: String, until: DateTime<Utc> },
}

/// What the ledger is, for logs, readiness and `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `embedded` or `postgres`.
    pub kind: &'static str,
    /// The file, or the database URL without its password.
    pub location: String,
    /// Whether other hosts may share it (claims matter).
    pub shared: bool,
}

/// A connection pool's use, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

/// A storage engine for the ledger. Reads see every write that resolved
/// before them; writes of one caller are applied in the order made.
pub trait Backend: Send + Sync + 'static {
    /// What this is, for logs, readiness and `check-config`.
    fn info(&self) -> BackendInfo;
    /// The delivery on record for `key`, if any.
    fn get(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<Option<Delivery>, LedgerError>>;
    /// Creates or replaces the record of `record.delivery.key()`. Queued in
    /// call order as soon as this is called; resolves once applied, and for
    /// a final state once on disk. Assigns the id of a new record.
    fn put(&self, record: Record) -> BoxFuture<'static, Result<(), LedgerError>>;
    /// Every delivery of one event.
    fn event(&self, event_id: &str) -> BoxFuture<'static, Result<Vec<Delivery>, LedgerError>>;
    /// Every delivery of one appointment, newest first.
    fn appointment(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, LedgerError>>;
    /// Deliveries matching `filter` with ids below `before`, newest first, at
    /// most `limit`. May return fewer with `next_before` set, to bound the
    /// work of one request.
    fn list(
        &self,
        filter: Filter,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Scan, LedgerError>>;
    /// Held deliveries of `channel` with their events, oldest first, ids
    /// above `after`, at most `limit`.
    fn held(
        &self,
        channel: &str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>>;
    /// Drops whatever is past the retention.
    fn sweep(&self) -> BoxFuture<'static, Result<Sweep, LedgerError>>;
    /// Counts; fails when the store cannot be read.
    fn stats(&self) -> BoxFuture<'static, Result<Stats, LedgerError>>;
    /// Whether the store answers and this host may work (readiness): cheap,
    /// called at every probe.
    fn check(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        let stats = self.stats();
        Box::pin(async move { stats.await.map(|_| ()) })
    }
    /// A key for the cursors of this ledger (stable across restarts).
    fn cursor_key(&self) -> [u8; 32];
    /// Open reminders in due order, from just after `after`, at most
    /// `limit`, with their events. A shared ledger leaves out the timers
    /// another host holds a live claim on (it is firing them).
    fn timers(
        &self,
        after: Option<&TimerPos>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<(TimerPos, Record)>, LedgerError>>;
    /// Open reminders of one appointment, with their events.
    fn appointment_timers(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>>;
    /// Open reminders, counted (cheap).
    fn timer_count(&self) -> BoxFuture<'static, Result<u64, LedgerError>>;
    /// What the appointment's events said so far.
    fn appointment_state(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Option<AppointmentState>, LedgerError>>;
    /// Replaces the appointment's state; resolves once on disk.
    fn put_appointment(
        &self,
        state: AppointmentState,
    ) -> BoxFuture<'static, Result<(), LedgerError>>;

    /// Claims `key` for this host (see [`Claim`]); idempotent for the
    /// holder. A ledger no other host shares always grants.
    fn claim(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<Claim, LedgerError>> {
        let _ = key;
        Box::pin(std::future::ready(Ok(Claim::Granted)))
    }
    /// Gives up this host's claim on `key` without a final record (the
    /// partition was revoked, the host is stopping): the next owner need not
    /// wait out the lease. A final [`Backend::put`] gives it up by itself.
    fn release(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<(), LedgerError>> {
        let _ = key;
        Box::pin(std::future::ready(Ok(())))
    }
    /// Gives up every claim of this host (at shutdown); how many there were.
    fn release_all(&self) -> BoxFuture<'static, Result<u64, LedgerError>> {
        Box::pin(std::future::ready(Ok(0)))
    }
    /// Whether this host's claims are surely still its own: its lease was
    /// renewed less than a lease ago. When not, another host may have taken
    /// them over, and nothing is sent before claiming again.
    fn claims_held(&self) -> bool {
        true
    }
    /// Moves on each time this host's claims may have been taken over (its
    /// lease lapsed): a delivery claimed under an older epoch is claimed
    /// again before its next send.
    fn claim_epoch(&self) -> u64 {
        0
    }
    /// The connection pool's use, if there is one.
    fn pool(&self) -> Option<PoolUse> {
        None
    }
}

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    pub fn new(backend: Arc<dyn Backend>) -> Ledger {
        Ledger { backend }
    }

    pub async fn get(&self, key: &DeliveryKey) -> Result<Option<Delivery>, LedgerError> {
        self.backend.get(key).await
    }

    /// See [`Backend::put`]: the write is queued before this returns its
    /// future, so a caller that does not await an in-between state still
    /// has it applied before its next write.
    pub fn put(&self, record: Record) -> BoxFuture<'static, Result<(), LedgerError>> {
        self.backend.put(record)
    }

    pub async fn event(&self, event_id: &str) -> Result<Vec<Delivery>, LedgerError> {
        self.backend.event(event_id).await
    }

    pub async fn appointment(&self, appointment_id: &str) -> Result<Vec<Delivery>, LedgerError> {
        self.backend.appointment(appointment_id).await
    }

    /// One page of `filter`, newest first; `cursor` is a previous page's
    /// `next_cursor`. `limit` is clamped to 1..=[`MAX_PAGE`].
    pub async fn list(
        &self,
        filter: &Filter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, ListError> {
        let key = self.backend.cursor_key();
        let before = match cursor {
            Some(c) => Some(cursor::decode(&key, filter, c).map_err(ListError::BadCursor)?),
            None => None,
        };
        let scan = self
            .backend
            .list(filter.clone(), before, limit.clamp(1, MAX_PAGE))
            .await?;
        Ok(Page {
            deliveries: scan.deliveries,
            next_cursor: scan
                .next_before
                .map(|before| cursor::encode(&key, filter, before)),
        })
    }

    pub async fn held(
        &self,
        channel: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        self.backend.held(channel, after, limit).await
    }

    pub async fn sweep(&self) -> Result<Sweep, LedgerError> {
        self.backend.sweep().await
    }

    pub async fn stats(&self) -> Result<Stats, LedgerError> {
        self.backend.stats().await
    }

    pub async fn timers(
        &self,
        after: Option<&TimerPos>,
        limit: usize,
    ) -> Result<Vec<(TimerPos, Record)>, LedgerError> {
        self.backend.timers(after, limit).await
    }

    pub async fn appointment_timers(
        &self,
        appointment_id: &str,
    ) -> Result<Vec<Record>, LedgerError> {
        self.backend.appointment_timers(appointment_id).await
    }

    pub async fn timer_count(&self) -> Result<u64, LedgerError> {
        self.backend.timer_count().await
    }

    pub fn appointment_state(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Option<AppointmentState>, LedgerError>> {
        self.backend.appointment_state(appointment_id)
    }

    pub fn info(&self) -> BackendInfo {
        self.backend.info()
    }

    pub async fn claim(&self, key: &DeliveryKey) -> Result<Claim, LedgerError> {
        self.backend.claim(key).await
    }

    pub async fn release(&self, key: &DeliveryKey) -> Result<(), LedgerError> {
        self.backend.release(key).await
    }

    pub async fn release_all(&self) -> Result<u64, LedgerError> {
        self.backend.release_all().await
    }

    pub fn claims_held(&self) -> bool {
        self.backend.claims_held()
    }

    pub fn claim_epoch(&self) -> u64 {
        self.backend.claim_epoch()
    }

    pub async fn check(&self) -> Result<(), LedgerError> {
        self.backend.check().await
    }

    pub fn pool(&self) -> Option<PoolUse> {
        self.backend.pool()
    }

    pub fn put_appointment(
        &self,
        state: AppointmentState,
    ) -> BoxFuture<'static, Result<(), LedgerError>> {
        self.backend.put_appointment(state)
    }
}

/// How the event at hand came to the host again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// From the topic as published (or redelivered after a crash).
    Normal,
    /// Re-published from the dead-letter topic (`notify.replay_of`).
    Replay,
}

/// What to do with one requested delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Work it: render and send.
    Send,
    /// Record it `held`, with its event.
    Hold,
    /// Record it `skipped` (the channel is off).
    Skip,
    /// Leave the record as it is: the delivery already ended (delivered,
    /// dead-lettered, expired, cancelled) or is already held.
    AlreadyDone(State),
}

/// The one place a delivery's record, the channel's mode and how the event
/// arrived decide what happens to it.
///
/// - Delivered, expired and cancelled deliveries are never sent again.
/// - A dead-lettered one is sent again only by a replay, so a redelivered
///   event does not dead-letter twice.
/// - An unfinished one (pending, retrying, waiting: the host stopped during
///   its work) is worked again: nothing says it was accepted.
/// - A held one goes out once the channel is on; a skipped one too (the
///   channel was off then, and the event came again).
pub fn admit(existing: Option<State>, mode: ChannelMode, arrival: Arrival) -> Admission {
    use State as S;
    match existing {
        Some(s @ (S::Delivered | S::Expired | S::Cancelled)) => Admission::AlreadyDone(s),
        Some(S::DeadLettered) if arrival == Arrival::Normal => {
            Admission::AlreadyDone(S::DeadLettered)
        }
        Some(S::Held) if mode != ChannelMode::On => Admission::AlreadyDone(S::Held),
        _ => match mode {
            ChannelMode::On => Admission::Send,
            ChannelMode::Hold => Admission::Hold,
            ChannelMode::Off => Admission::Skip,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_table() {
        use Admission as A;
        use Arrival::{Normal, Replay};
        use ChannelMode::{Hold, Off, On};
        use State as S;
        let cases: &[(Option<State>, ChannelMode, Arrival, Admission)] = &[
            (None, On, Normal, A::Send),
            (None, Hold, Normal, A::Hold),
            (None, Off, Normal, A::Skip),
            (None, On, Replay, A::Send),
            (Some(S::Delivered), On, Normal, A::AlreadyDone(S::Delivered)),
            (Some(S::Delivered), On, Replay, A::AlreadyDone(S::Delivered)),
            (
                Some(S::Delivered),
                Hold,
                Normal,
                A::AlreadyDone(S::Delivered),
            ),
            (
                Some(S::DeadLettered),
                On,
                Normal,
                A::AlreadyDone(S::DeadLettered),
            ),
            (Some(S::DeadLettered), On, Replay, A::Send),
            (Some(S::DeadLettered), Hold, Replay, A::Hold),
            (Some(S::Held), On, Normal, A::Send),
            (Some(S::Held), Hold, Normal, A::AlreadyDone(S::Held)),
            (Some(S::Held), Off, Normal, A::AlreadyDone(S::Held)),
            (Some(S::Pending), On, Normal, A::Send),
            (Some(S::Retrying), On, Normal, A::Send),
            (Some(S::Waiting), On, Normal, A::Send),
            (Some(S::Waiting), Hold, Normal, A::Hold),
            (Some(S::Skipped), On, Normal, A::Send),
            (Some(S::Skipped), Off, Normal, A::Skip),
            (Some(S::Expired), On, Replay, A::AlreadyDone(S::Expired)),
            (Some(S::Cancelled), On, Normal, A::AlreadyDone(S::Cancelled)),
        ];
        for (existing, mode, arrival, want) in cases {
            assert_eq!(
                admit(*existing, *mode, *arrival),
                *want,
                "{existing:?} {mode:?} {arrival:?}"
            );
        }
    }

    #[test]
    fn only_in_between_states_are_written_without_a_flush() {
        let unflushed: Vec<State> = State::ALL.into_iter().filter(|s| !s.is_final()).collect();
        assert_eq!(unflushed, [State::Pending, State::Retrying, State::Waiting]);
    }

    #[test]
    fn a_reminder_key_names_the_reminder() {
        let mut k = DeliveryKey::new("e1", "sms", Purpose::Reminder);
        k.reminder = Some("day-before".into());
        assert_eq!(k.encode(), "e1\u{1f}sms\u{1f}reminder:day-before");
        assert_eq!(
            DeliveryKey::new("e1", "sms", Purpose::Confirmation).encode(),
            "e1\u{1f}sms\u{1f}confirmation"
        );
    }

    #[test]
    fn names_parse_back() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(State::parse("Delivered"), None);
    }

    #[test]
    fn only_the_newest_attempts_are_kept() {
        let key = DeliveryKey::new("e", "sms", Purpose::Confirmation);
        let mut d = Delivery::new(&key, "a1", Recipient::default());
        for n in 1..=7 {
            d.push_attempt(AttemptRecord {
                number: n,
                at: Utc::now(),
                outcome: "retry".into(),
                provider_status: Some(503),
                latency_ms: Some(3),
                snippet: None,
            });
        }
        assert_eq!(d.attempt_count, 7);
        let kept: Vec<u32> = d.attempts.iter().map(|a| a.number).collect();
        assert_eq!(kept, [3, 4, 5, 6, 7]);
    }
}
