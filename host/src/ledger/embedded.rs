//! The embedded ledger: one redb file in the data directory, owned by one
//! host process (redb locks it).
//!
//! Layout: records live in time buckets, each a set of tables named by the
//! bucket's creation-time range (`deliveries@START-END` and its indexes:
//! `keys@…` key → id, `appointments@…` appointment → ids, `held@…` held ids).
//! A record stays in the bucket of its creation for its whole life, so the
//! retention pass drops whole buckets (a few table deletions in one short
//! transaction) instead of deleting rows one by one under the write lock.
//! The bucket width is an eighth of the retention (0.1 s to 1 day), so a record
//! is dropped between the retention and 9/8 of it, and a lookup looks in at
//! most nine buckets.
//!
//! Writes go through one writer thread that group-commits whatever is queued:
//! one transaction, and one fsync only when a record in it is final.
//!
//! A record's value is a short binary header (state, purpose, creation time,
//! channel) that list filters read without decoding, then the record's JSON.
//!
//! Outside the buckets, never dropped by the retention: open reminders
//! (`timers`: key → record, with `timer_due` (due ms, key) for the scheduler
//! and `timer_appointments` appointment → keys for cancels), and each
//! appointment's state (`appointment_state`, with `appointment_expiry`
//! (expiry ms, id) so the retention pass drops a state once its appointment
//! is past by the retention).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use redb::{
    Database, Durability, MultimapTableDefinition, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppointmentState, Backend, BackendInfo, Delivery, DeliveryKey, Filter, LedgerError, Purpose,
    Record, Scan, State, Stats, Sweep, TimerPos,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TIMERS: TableDefinition<&str, &[u8]> = TableDefinition::new("timers");
const TIMER_DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("timer_due");
const TIMER_APPOINTMENTS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("timer_appointments");
const APPOINTMENT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("appointment_state");
const APPOINTMENT_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("appointment_expiry");
/// Appointment states one retention pass drops at most (each a row delete,
/// unlike the buckets): the next pass goes on.
const APPOINTMENTS_PER_SWEEP: usize = 10_000;
const NEXT_ID: &str = "next_id";
const CURSOR_KEY: &str = "cursor_key";

/// Records taken into one transaction at most; bounds the time a batch holds
/// the writer.
const MAX_BATCH: usize = 4096;
/// How long the writer waits after the first queued write for more to
/// join its transaction. Each commit writes every index page it touched
/// and flushes: gathering costs this much latency per final record and
/// saves page writes (see the closing note of issue 12 for the numbers).
const GATHER: Duration = Duration::from_millis(2);
/// Records one list request looks at, at most: a rare filter over a big
/// ledger returns a short (even empty) page with a cursor to go on, instead
/// of reading the whole file in one request.
const SCAN_BUDGET: usize = 20_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn store_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Store(e.to_string())
}

/// One time bucket: records created in `[start, end)` (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Bucket {
    start: u64,
    end: u64,
}

impl Bucket {
    fn name(&self, table: &str) -> String {
        format!("{table}@{}-{}", self.start, self.end)
    }

    fn parse(name: &str) -> Option<Bucket> {
        let range = name.strip_prefix("deliveries@")?;
        let (start, end) = range.split_once('-')?;
        Some(Bucket {
            start: start.parse().ok()?,
            end: end.parse().ok()?,
        })
    }
}

struct Names {
    records: String,
    keys: String,
    appointments: String,
    held: String,
}

impl Names {
    fn of(b: &Bucket) -> Names {
        Names {
            records: b.name("deliveries"),
            keys: b.name("keys"),
            appointments: b.name("appointments"),
            held: b.name("held"),
        }
    }
    fn records(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.records)
    }
    fn keys(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.keys)
    }
    fn appointments(&self) -> MultimapTableDefinition<'_, &'static str, u64> {
        MultimapTableDefinition::new(&self.appointments)
    }
    fn held(&self) -> TableDefinition<'_, u64, &'static str> {
        TableDefinition::new(&self.held)
    }
}

/// The stored value: header, then JSON.
fn encode(record: &Record) -> Result<Vec<u8>, LedgerError> {
    let d = &record.delivery;
    let json = serde_json::to_vec(record).map_err(store_err)?;
    let channel = d.channel.as_bytes();
    let channel_len = u8::try_from(channel.len())
        .map_err(|_| LedgerError::Store(format!("channel name over 255 bytes: {}", d.channel)))?;
    let mut out = Vec::with_capacity(11 + channel.len() + json.len());
    out.push(state_code(d.state));
    out.push(purpose_code(d.purpose));
    out.extend_from_slice(&d.created_at.timestamp_millis().to_be_bytes());
    out.push(channel_len);
    out.extend_from_slice(channel);
    out.extend_from_slice(&json);
    Ok(out)
}

/// The header's view of a stored value.
struct Header<'a> {
    state: Option<State>,
    purpose: Option<Purpose>,
    created_ms: i64,
    channel: &'a [u8],
    json: &'a [u8],
}

fn header(bytes: &[u8]) -> Option<Header<'_>> {
    let state = *bytes.first()?;
    let purpose = *bytes.get(1)?;
    let created: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    let channel_len = *bytes.get(10)? as usize;
    let channel = bytes.get(11..11 + channel_len)?;
    Some(Header {
        state: State::ALL.get(state as usize).copied(),
        purpose: Purpose::ALL.get(purpose as usize).copied(),
        created_ms: i64::from_be_bytes(created),
        channel,
        json: bytes.get(11 + channel_len..)?,
    })
}

fn state_code(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn purpose_code(p: Purpose) -> u8 {
    Purpose::ALL.iter().position(|x| *x == p).unwrap_or(0) as u8
}

fn decode(id: u64, bytes: &[u8]) -> Result<Record, LedgerError> {
    let h = header(bytes).ok_or_else(|| LedgerError::Corrupt {
        id,
        reason: "header cut short".into(),
    })?;
    let mut record: Record = serde_json::from_slice(h.json).map_err(|e| LedgerError::Corrupt {
        id,
        reason: e.to_string(),
    })?;
    // Timers keep their id in the JSON (they are keyed by delivery key).
    if id != 0 {
        record.delivery.id = id;
    }
    Ok(record)
}

/// A timer's due time in ms (its creation when it has none, which a
/// reminder always has).
fn due_ms(d: &Delivery) -> u64 {
    d.due_at.unwrap_or(d.created_at).timestamp_millis().max(0) as u64
}

/// Whether the header passes `filter` (the same test as [`Filter::matches`],
/// without decoding the JSON).
fn header_matches(h: &Header<'_>, filter: &Filter) -> bool {
    filter
        .channel
        .as_ref()
        .is_none_or(|c| c.as_bytes() == h.channel)
        && filter.state.is_none_or(|s| Some(s) == h.state)
        && filter.purpose.is_none_or(|p| Some(p) == h.purpose)
        && filter
            .since
            .is_none_or(|t| h.created_ms >= t.timestamp_millis())
        && filter
            .until
            .is_none_or(|t| h.created_ms < t.timestamp_millis())
}

enum Op {
    Put {
        record: Box<Record>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Appointment {
        state: Box<AppointmentState>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Sweep {
        done: oneshot::Sender<Result<Sweep, String>>,
    },
}

/// What the writer thread and the readers share.
struct Shared {
    db: Database,
    /// Every bucket, oldest first.
    buckets: RwLock<Vec<Bucket>>,
    width_ms: u64,
    retention_ms: u64,
}

impl Shared {
    fn buckets(&self) -> Vec<Bucket> {
        match self.buckets.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_buckets(&self, f: impl FnOnce(&mut Vec<Bucket>)) {
        match self.buckets.write() {
            Ok(mut b) => f(&mut b),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The embedded backend; see the module doc.
pub struct Embedded {
    shared: Arc<Shared>,
    writer: Option<mpsc::UnboundedSender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    cursor_key: [u8; 32],
    path: PathBuf,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closing the queue ends the writer; joining it releases the file
        // lock before a reopen (tests, restarts in one process).
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Embedded {
    /// Opens (or creates) the ledger file and starts its writer thread.
    pub fn open(
        path: &Path,
        retention: Duration,
        cache_bytes: usize,
    ) -> Result<Embedded, LedgerError> {
        let fail = |e: &dyn std::fmt::Display| LedgerError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        let (cursor_key, buckets) = {
            let mut meta = txn.open_table(META).map_err(|e| fail(&e))?;
            let existing = meta
                .get(CURSOR_KEY)
                .map_err(|e| fail(&e))?
                .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
            let key = match existing {
                Some(k) => k,
                None => {
                    let mut k = [0u8; 32];
                    for chunk in k.chunks_mut(8) {
                        chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
                    }
                    meta.insert(CURSOR_KEY, k.as_slice())
                        .map_err(|e| fail(&e))?;
                    k
                }
            };
            let mut buckets: Vec<Bucket> = txn
                .list_tables()
                .map_err(|e| fail(&e))?
                .filter_map(|t| Bucket::parse(t.name()))
                .collect();
            buckets.sort();
            (key, buckets)
        };
        txn.commit().map_err(|e| fail(&e))?;

        let retention_ms = retention.as_millis().max(1) as u64;
        let width_ms = (retention_ms / 8).clamp(100, 86_400_000);
        let shared = Arc::new(Shared {
            db,
            buckets: RwLock::new(buckets),
            width_ms,
            retention_ms,
        });
        let (writer, rx) = mpsc::unbounded_channel();
        let for_writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(&for_writer, rx))
            .map_err(|e| fail(&e))?;
        Ok(Embedded {
            shared,
            writer: Some(writer),
            thread: Some(thread),
            cursor_key,
            path: path.to_path_buf(),
        })
    }

    fn send(&self, op: Op) -> Result<(), LedgerError> {
        self.writer
            .as_ref()
            .ok_or(LedgerError::WriterGone)?
            .send(op)
            .map_err(|_| LedgerError::WriterGone)
    }

    /// Runs `f` on a blocking thread with a read transaction.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &ReadTransaction) -> Result<T, LedgerError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LedgerError>> {
        let shared = self.shared.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let txn = shared.db.begin_read().map_err(store_err)?;
                f(&shared, &txn)
            })
            .await
            .map_err(|e| LedgerError::Store(format!("ledger read task failed: {e}")))?
        }
        .boxed()
    }
}

/// A table of `txn`, or `None` when it does not exist (yet, or any more):
/// readers see the buckets of their snapshot, which may lag the list.
fn existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, LedgerError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(store_err(e)),
    }
}

/// The record of `key`, looking newest bucket first.
fn lookup(
    shared: &Shared,
    txn: &ReadTransaction,
    key: &str,
) -> Result<Option<Record>, LedgerError> {
    if let Some(timers) = existing(txn, TIMERS)? {
        if let Some(v) = timers.get(key).map_err(store_err)? {
            return decode(0, v.value()).map(Some);
        }
    }
    for b in shared.buckets().iter().rev() {
        let names = Names::of(b);
        let Some(keys) = existing(txn, names.keys())? else {
            continue;
        };
        let Some(id) = keys.get(key).map_err(store_err)?.map(|v| v.value()) else {
            continue;
        };
        let records = txn.open_table(names.records()).map_err(store_err)?;
        return match records.get(id).map_err(store_err)? {
            Some(v) => decode(id, v.value()).map(Some),
            None => Ok(None),
        };
    }
    Ok(None)
}

/// Records of `ids` in `bucket`, skipping ids whose record is gone.
fn load(txn: &ReadTransaction, b: &Bucket, ids: &[u64]) -> Result<Vec<Record>, LedgerError> {
    let names = Names::of(b);
    let Some(records) = existing(txn, names.records())? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(v) = records.get(*id).map_err(store_err)? {
            out.push(decode(*id, v.value())?);
        }
    }
    Ok(out)
}

impl Backend for Embedded {
    fn get(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<Option<Delivery>, LedgerError>> {
        // A point read takes microseconds from the cache: done in place, as
        // the dedup lookup always was, rather than paying a thread hop.
        let result = (|| {
            let txn = self.shared.db.begin_read().map_err(store_err)?;
            Ok(lookup(&self.shared, &txn, &key.encode())?.map(|r| r.delivery))
        })();
        std::future::ready(result).boxed()
    }

    fn put(&self, record: Record) -> BoxFuture<'static, Result<(), LedgerError>> {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Op::Put {
            record: Box::new(record),
            done,
        });
        answered(sent, rx)
    }

    fn event(&self, event_id: &str) -> BoxFuture<'static, Result<Vec<Delivery>, LedgerError>> {
        let event_id = event_id.to_string();
        self.read(move |shared, txn| {
            let prefix = DeliveryKey::event_prefix(&event_id);
            let mut out = Vec::new();
            if let Some(timers) = existing(txn, TIMERS)? {
                for entry in timers.range(prefix.as_str()..).map_err(store_err)? {
                    let (k, v) = entry.map_err(store_err)?;
                    if !k.value().starts_with(&prefix) {
                        break;
                    }
                    let r = decode(0, v.value())?;
                    if r.delivery.event_id == event_id {
                        out.push(r.delivery);
                    }
                }
            }
            for b in shared.buckets() {
                let names = Names::of(&b);
                let Some(keys) = existing(txn, names.keys())? else {
                    continue;
                };
                let mut ids = Vec::new();
                for entry in keys.range(prefix.as_str()..).map_err(store_err)? {
                    let (k, v) = entry.map_err(store_err)?;
                    if !k.value().starts_with(&prefix) {
                        break;
                    }
                    ids.push(v.value());
                }
                out.extend(
                    load(txn, &b, &ids)?
                        .into_iter()
                        .map(|r| r.delivery)
                        // An id holding the separator shares the prefix.
                        .filter(|d| d.event_id == event_id),
                );
            }
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
    }

    fn appointment(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, LedgerError>> {
        let appointment_id = appointment_id.to_string();
        self.read(move |shared, txn| {
            let mut out = Vec::new();
            for b in shared.buckets() {
                let names = Names::of(&b);
                let index = match txn.open_multimap_table(names.appointments()) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => continue,
                    Err(e) => return Err(store_err(e)),
                };
                let mut ids = Vec::new();
                for v in index.get(appointment_id.as_str()).map_err(store_err)? {
                    ids.push(v.map_err(store_err)?.value());
                }
                out.extend(load(txn, &b, &ids)?.into_iter().map(|r| r.delivery));
            }
            out.sort_by_key(|d| std::cmp::Reverse(d.id));
            out.extend(
                timers_of(txn, &appointment_id)?
                    .into_iter()
                    .map(|r| r.delivery),
            );
            Ok(out)
        })
    }

    fn list(
        &self,
        filter: Filter,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Scan, LedgerError>> {
        self.read(move |shared, txn| {
            let mut found = Vec::new();
            let mut scanned = 0usize;
            let mut last_seen = None;
            for b in shared.buckets().iter().rev() {
                // Buckets are creation-time ranges: skip those the time
                // filters rule out whole.
                let since = filter.since.map(|t| t.timestamp_millis());
                let until = filter.until.map(|t| t.timestamp_millis());
                if since.is_some_and(|s| (b.end as i64) <= s)
                    || until.is_some_and(|u| (b.start as i64) >= u)
                {
                    continue;
                }
                let names = Names::of(b);
                let Some(records) = existing(txn, names.records())? else {
                    continue;
                };
                let range = match before {
                    Some(before) => records.range(..before),
                    None => records.range::<u64>(..),
                }
                .map_err(store_err)?;
                for entry in range.rev() {
                    let (k, v) = entry.map_err(store_err)?;
                    let id = k.value();
                    if scanned == SCAN_BUDGET {
                        // Out of budget: the next page starts at this record.
                        return Ok(Scan {
                            deliveries: found,
                            next_before: last_seen,
                        });
                    }
                    scanned += 1;
                    let bytes = v.value();
                    let passes = header(bytes).is_some_and(|h| header_matches(&h, &filter));
                    if passes {
                        if found.len() == limit {
                            // One more exists: the page is full and has a next.
                            return Ok(Scan {
                                deliveries: found,
                                next_before: last_seen,
                            });
                        }
                        found.push(decode(id, bytes)?.delivery);
                    }
                    last_seen = Some(id);
                }
            }
            Ok(Scan {
                deliveries: found,
                next_before: None,
            })
        })
    }

    fn held(
        &self,
        channel: &str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>> {
        let channel = channel.to_string();
        self.read(move |shared, txn| {
            let mut out = Vec::new();
            for b in shared.buckets() {
                let names = Names::of(&b);
                let Some(held) = existing(txn, names.held())? else {
                    continue;
                };
                let from = after.map_or(0, |a| a.saturating_add(1));
                let mut ids = Vec::new();
                for entry in held.range(from..).map_err(store_err)? {
                    let (k, v) = entry.map_err(store_err)?;
                    if v.value() == channel {
                        ids.push(k.value());
                    }
                    if out.len() + ids.len() >= limit {
                        break;
                    }
                }
                out.extend(
                    load(txn, &b, &ids)?
                        .into_iter()
                        .filter(|r| r.delivery.state == State::Held),
                );
                if out.len() >= limit {
                    out.truncate(limit);
                    break;
                }
            }
            Ok(out)
        })
    }

    fn sweep(&self) -> BoxFuture<'static, Result<Sweep, LedgerError>> {
        // One bucket per transaction: the writes queued meanwhile go in
        // between, so the writer is held for one bucket's drop at a time.
        let writer = self.writer.clone();
        async move {
            let mut total = Sweep::default();
            loop {
                let (done, rx) = oneshot::channel();
                writer
                    .as_ref()
                    .ok_or(LedgerError::WriterGone)?
                    .send(Op::Sweep { done })
                    .map_err(|_| LedgerError::WriterGone)?;
                let one = match rx.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(message)) => return Err(LedgerError::Store(message)),
                    Err(_) => return Err(LedgerError::WriterGone),
                };
                total.appointments_dropped += one.appointments_dropped;
                if one.buckets_dropped == 0
                    && one.appointments_dropped < APPOINTMENTS_PER_SWEEP as u64
                {
                    return Ok(total);
                }
                total.buckets_dropped += one.buckets_dropped;
                total.records_dropped += one.records_dropped;
                total.held_writer = total.held_writer.max(one.held_writer);
            }
        }
        .boxed()
    }

    fn stats(&self) -> BoxFuture<'static, Result<Stats, LedgerError>> {
        let path = self.path.clone();
        self.read(move |shared, txn| {
            let buckets = shared.buckets();
            let mut records = 0;
            for b in &buckets {
                match txn.open_table(Names::of(b).records()) {
                    Ok(t) => records += t.len().map_err(store_err)?,
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
            let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let timers = match existing(txn, TIMERS)? {
                Some(t) => t.len().map_err(store_err)?,
                None => 0,
            };
            Ok(Stats {
                records,
                timers,
                file_bytes,
                buckets: buckets.len(),
            })
        })
    }

    fn cursor_key(&self) -> [u8; 32] {
        self.cursor_key
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "embedded",
            location: self.path.display().to_string(),
            shared: false,
        }
    }

    fn timers(
        &self,
        after: Option<&TimerPos>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<(TimerPos, Record)>, LedgerError>> {
        // A point read: answered in place, no writer round trip.
        std::future::ready(self.timers_now(after, limit)).boxed()
    }

    fn appointment_timers(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>> {
        let appointment_id = appointment_id.to_string();
        self.read(move |_, txn| timers_of(txn, &appointment_id))
    }

    fn timer_count(&self) -> BoxFuture<'static, Result<u64, LedgerError>> {
        std::future::ready(self.timer_count_now()).boxed()
    }

    fn appointment_state(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Option<AppointmentState>, LedgerError>> {
        std::future::ready(self.appointment_state_now(appointment_id)).boxed()
    }

    fn put_appointment(
        &self,
        state: AppointmentState,
    ) -> BoxFuture<'static, Result<(), LedgerError>> {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Op::Appointment {
            state: Box::new(state),
            done,
        });
        answered(sent, rx)
    }
}

impl Embedded {
    fn timers_now(
        &self,
        after: Option<&TimerPos>,
        limit: usize,
    ) -> Result<Vec<(TimerPos, Record)>, LedgerError> {
        let txn = self.shared.db.begin_read().map_err(store_err)?;
        let (Some(due), Some(timers)) = (existing(&txn, TIMER_DUE)?, existing(&txn, TIMERS)?)
        else {
            return Ok(Vec::new());
        };
        let range = match after {
            Some((ms, key)) => due.range((*ms, key.as_str())..),
            None => due.range::<(u64, &str)>(..),
        }
        .map_err(store_err)?;
        let mut out = Vec::new();
        for entry in range {
            let (k, _) = entry.map_err(store_err)?;
            let (ms, key) = k.value();
            if after.is_some_and(|(a_ms, a_key)| *a_ms == ms && a_key == key) {
                continue;
            }
            if let Some(v) = timers.get(key).map_err(store_err)? {
                out.push(((ms, key.to_string()), decode(0, v.value())?));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn timer_count_now(&self) -> Result<u64, LedgerError> {
        let txn = self.shared.db.begin_read().map_err(store_err)?;
        match existing(&txn, TIMERS)? {
            Some(t) => t.len().map_err(store_err),
            None => Ok(0),
        }
    }

    fn appointment_state_now(
        &self,
        appointment_id: &str,
    ) -> Result<Option<AppointmentState>, LedgerError> {
        let txn = self.shared.db.begin_read().map_err(store_err)?;
        let Some(t) = existing(&txn, APPOINTMENT_STATE)? else {
            return Ok(None);
        };
        match t.get(appointment_id).map_err(store_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| LedgerError::Store(format!("appointment {appointment_id}: {e}"))),
            None => Ok(None),
        }
    }
}

/// The writer's answer to a queued write (queued before this returns).
fn answered(
    sent: Result<(), LedgerError>,
    rx: oneshot::Receiver<Result<(), String>>,
) -> BoxFuture<'static, Result<(), LedgerError>> {
    async move {
        sent?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(LedgerError::Store(message)),
            Err(_) => Err(LedgerError::WriterGone),
        }
    }
    .boxed()
}

/// Open reminders of one appointment.
fn timers_of(txn: &ReadTransaction, appointment_id: &str) -> Result<Vec<Record>, LedgerError> {
    let index = match txn.open_multimap_table(TIMER_APPOINTMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(store_err(e)),
    };
    let Some(timers) = existing(txn, TIMERS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for key in index.get(appointment_id).map_err(store_err)? {
        let key = key.map_err(store_err)?;
        if let Some(v) = timers.get(key.value()).map_err(store_err)? {
            out.push(decode(0, v.value())?);
        }
    }
    out.sort_by_key(|r| due_ms(&r.delivery));
    Ok(out)
}

/// One bucket's tables, open for a write transaction.
struct BucketTables<'t> {
    records: redb::Table<'t, u64, &'static [u8]>,
    keys: redb::Table<'t, &'static str, u64>,
    appointments: redb::MultimapTable<'t, &'static str, u64>,
    held: redb::Table<'t, u64, &'static str>,
}

/// The tables a batch touched, each opened once for the whole batch:
/// opening a redb table per write (and writing its root back at each
/// close) cost more than the writes themselves.
#[derive(Default)]
struct OpenTables<'t> {
    buckets: Vec<(Bucket, BucketTables<'t>)>,
}

impl<'t> OpenTables<'t> {
    fn of(
        &mut self,
        txn: &'t WriteTransaction,
        bucket: Bucket,
    ) -> Result<&mut BucketTables<'t>, redb::Error> {
        let at = match self.buckets.iter().position(|(b, _)| *b == bucket) {
            Some(i) => i,
            None => {
                let names = Names::of(&bucket);
                let tables = BucketTables {
                    records: txn.open_table(names.records())?,
                    keys: txn.open_table(names.keys())?,
                    appointments: txn.open_multimap_table(names.appointments())?,
                    held: txn.open_table(names.held())?,
                };
                self.buckets.push((bucket, tables));
                self.buckets.len() - 1
            }
        };
        Ok(&mut self.buckets[at].1)
    }
}

/// The writer's own state: the next id, known after the first transaction.
struct Writer {
    next_id: Option<u64>,
    /// A new id was taken in this transaction: `next_id` is written once,
    /// at its end.
    ids_taken: bool,
}

impl Writer {
    fn next_id(&mut self, txn: &WriteTransaction) -> Result<u64, redb::Error> {
        if let Some(n) = self.next_id {
            return Ok(n);
        }
        let meta = txn.open_table(META)?;
        let n = meta
            .get(NEXT_ID)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(1, u64::from_be_bytes);
        Ok(n)
    }

    /// The bucket a record created now goes to (created if new). Never
    /// earlier than the newest bucket, so ids and buckets stay in the same
    /// order whatever the clock does.
    fn current_bucket(&self, shared: &Shared) -> Bucket {
        let now = now_ms();
        let start = now - now % shared.width_ms;
        let newest = shared.buckets().last().copied();
        match newest {
            Some(b) if b.end > now || b.start >= start => b,
            _ => {
                let b = Bucket {
                    start,
                    end: start + shared.width_ms,
                };
                shared.set_buckets(|all| all.push(b));
                b
            }
        }
    }

    fn put<'t>(
        &mut self,
        shared: &Shared,
        txn: &'t WriteTransaction,
        open: &mut OpenTables<'t>,
        record: &Record,
    ) -> Result<(), redb::Error> {
        let key = record.delivery.key().encode();
        let corrupt = |e: LedgerError| redb::Error::Corrupted(e.to_string());
        // An open reminder is a timer; one that ends leaves the timers.
        let old_timer = {
            let timers = txn.open_table(TIMERS)?;
            let old = timers.get(key.as_str())?;
            match old {
                Some(v) => Some(decode(0, v.value()).map_err(corrupt)?),
                None => None,
            }
        };
        if let Some(old) = &old_timer {
            txn.open_table(TIMER_DUE)?
                .remove((due_ms(&old.delivery), key.as_str()))?;
        }
        if record.delivery.is_timer() {
            let mut record = record.clone();
            // An in-between state (pending, retrying) is written without the
            // event; the timer keeps it, so a host that fires it again (after
            // a crash mid-send) still has what to render.
            if record.held.is_none() {
                record.held = old_timer.as_ref().and_then(|old| old.held.clone());
            }
            if record.delivery.id == 0 {
                record.delivery.id = match &old_timer {
                    Some(old) if old.delivery.id != 0 => old.delivery.id,
                    _ => {
                        let id = self.next_id(txn)?;
                        self.next_id = Some(id + 1);
                        self.ids_taken = true;
                        id
                    }
                };
            }
            let bytes = encode(&record).map_err(corrupt)?;
            txn.open_table(TIMERS)?
                .insert(key.as_str(), bytes.as_slice())?;
            txn.open_table(TIMER_DUE)?
                .insert((due_ms(&record.delivery), key.as_str()), ())?;
            if old_timer.is_none() {
                txn.open_multimap_table(TIMER_APPOINTMENTS)?
                    .insert(record.delivery.appointment_id.as_str(), key.as_str())?;
            }
            return Ok(());
        }
        if let Some(old) = &old_timer {
            txn.open_table(TIMERS)?.remove(key.as_str())?;
            txn.open_multimap_table(TIMER_APPOINTMENTS)?
                .remove(old.delivery.appointment_id.as_str(), key.as_str())?;
        }
        // The bucket already holding the key, if any (newest first).
        let mut found = None;
        for b in shared.buckets().iter().rev() {
            if let Some(id) = open.of(txn, *b)?.keys.get(key.as_str())? {
                found = Some((*b, id.value()));
                break;
            }
        }
        let (bucket, id) = match found {
            Some(hit) => hit,
            None => {
                let id = self.next_id(txn)?;
                self.next_id = Some(id + 1);
                self.ids_taken = true;
                (self.current_bucket(shared), id)
            }
        };
        let held = record.delivery.state == State::Held;
        // The id is the table key (decode sets it); the event is kept only
        // while held.
        let bytes = if held || record.held.is_none() {
            encode(record)
        } else {
            encode(&Record {
                delivery: record.delivery.clone(),
                held: None,
            })
        }
        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        let tables = open.of(txn, bucket)?;
        tables.records.insert(id, bytes.as_slice())?;
        if found.is_none() {
            tables.keys.insert(key.as_str(), id)?;
            tables
                .appointments
                .insert(record.delivery.appointment_id.as_str(), id)?;
        }
        if held {
            tables.held.insert(id, record.delivery.channel.as_str())?;
        } else if found.is_some() {
            tables.held.remove(id)?;
        }
        Ok(())
    }

    /// Replaces an appointment's state and its expiry entry.
    fn put_appointment(
        &self,
        shared: &Shared,
        txn: &WriteTransaction,
        state: &AppointmentState,
    ) -> Result<(), redb::Error> {
        let mut states = txn.open_table(APPOINTMENT_STATE)?;
        let mut expiry = txn.open_table(APPOINTMENT_EXPIRY)?;
        let id = state.appointment_id.as_str();
        let old: Option<AppointmentState> = states
            .get(id)?
            .and_then(|v| serde_json::from_slice(v.value()).ok());
        if let Some(old) = old {
            expiry.remove((appointment_expiry(shared, &old), id))?;
        }
        let bytes = serde_json::to_vec(state).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        states.insert(id, bytes.as_slice())?;
        expiry.insert((appointment_expiry(shared, state), id), ())?;
        Ok(())
    }

    /// Drops appointment states past their expiry, a bounded number.
    fn sweep_appointments(
        &self,
        shared: &Shared,
        txn: &WriteTransaction,
    ) -> Result<u64, redb::Error> {
        let now = now_ms();
        let mut expiry = txn.open_table(APPOINTMENT_EXPIRY)?;
        let mut states = txn.open_table(APPOINTMENT_STATE)?;
        let gone: Vec<(u64, String)> = expiry
            .range::<(u64, &str)>(..)?
            .take(APPOINTMENTS_PER_SWEEP)
            .filter_map(Result::ok)
            .map(|(k, _)| {
                let (ms, id) = k.value();
                (ms, id.to_string())
            })
            .take_while(|(ms, _)| *ms <= now)
            .collect();
        let _ = shared;
        for (ms, id) in &gone {
            expiry.remove((*ms, id.as_str()))?;
            states.remove(id.as_str())?;
        }
        Ok(gone.len() as u64)
    }

    /// Drops the oldest bucket past the retention, if any; returns it.
    fn sweep(
        &self,
        shared: &Shared,
        txn: &WriteTransaction,
        dropped: &mut Vec<Bucket>,
    ) -> Result<Sweep, redb::Error> {
        let cutoff = now_ms().saturating_sub(shared.retention_ms);
        let old: Vec<Bucket> = shared
            .buckets()
            .into_iter()
            .filter(|b| b.end <= cutoff && !dropped.contains(b))
            .take(1)
            .collect();
        dropped.extend(&old);
        let mut sweep = Sweep::default();
        for b in &old {
            let names = Names::of(b);
            if let Ok(t) = txn.open_table(names.records()) {
                sweep.records_dropped += t.len()?;
            }
            txn.delete_table(names.records())?;
            txn.delete_table(names.keys())?;
            txn.delete_multimap_table(names.appointments())?;
            txn.delete_table(names.held())?;
            sweep.buckets_dropped += 1;
        }
        Ok(sweep)
    }
}

/// Takes whatever is queued, applies it in one transaction, and answers
/// each. A batch is flushed to disk when it holds a final record or a sweep.
/// When an appointment's state may go: the retention after its time, or
/// after its last change when that is later (a cancelled one has no use
/// for its time).
fn appointment_expiry(shared: &Shared, state: &AppointmentState) -> u64 {
    let updated = state.updated_at.timestamp_millis().max(0) as u64;
    let time = state.time.map_or(0, |t| t.timestamp_millis().max(0) as u64);
    updated.max(time).saturating_add(shared.retention_ms)
}

fn write_loop(shared: &Shared, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut writer = Writer {
        next_id: None,
        ids_taken: false,
    };
    while let Some(first) = rx.blocking_recv() {
        // A moment for the writes close behind to join this transaction:
        // the two channels of one event, or the next events, then share
        // the index pages a commit writes and flushes.
        std::thread::sleep(GATHER);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|op| match op {
            Op::Put { record, .. } => record.delivery.state.is_final(),
            Op::Appointment { .. } | Op::Sweep { .. } => true,
        });
        let started = Instant::now();
        let id_before = writer.next_id;
        let buckets_before = shared.buckets();
        let mut sweeps = Vec::new();
        let mut dropped: Vec<Bucket> = Vec::new();
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = shared.db.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            writer.ids_taken = false;
            let mut open = OpenTables::default();
            for op in &batch {
                match op {
                    Op::Put { record, .. } => writer.put(shared, &txn, &mut open, record)?,
                    Op::Appointment { state, .. } => writer.put_appointment(shared, &txn, state)?,
                    Op::Sweep { .. } => {}
                }
            }
            // Closed before a sweep, which deletes tables.
            drop(open);
            let mut appointments_swept = false;
            for op in &batch {
                if let Op::Sweep { .. } = op {
                    let mut one = writer.sweep(shared, &txn, &mut dropped)?;
                    if !appointments_swept {
                        appointments_swept = true;
                        one.appointments_dropped = writer.sweep_appointments(shared, &txn)?;
                    }
                    sweeps.push(one);
                }
            }
            if let (true, Some(next)) = (writer.ids_taken, writer.next_id) {
                txn.open_table(META)?
                    .insert(NEXT_ID, next.to_be_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })();
        let held_writer = started.elapsed();
        match &result {
            Ok(()) => {
                // Dropped buckets are forgotten only once the drop committed.
                if !dropped.is_empty() {
                    shared.set_buckets(|all| all.retain(|b| !dropped.contains(b)));
                }
            }
            Err(_) => {
                // Nothing of the batch happened: ids and buckets as before.
                writer.next_id = id_before;
                shared.set_buckets(|all| *all = buckets_before.clone());
            }
        }
        let result = result.map_err(|e| e.to_string());
        let mut sweeps = sweeps.into_iter();
        for op in batch {
            // A caller may have given up (shutdown); nothing to do then.
            match op {
                Op::Put { done, .. } | Op::Appointment { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Op::Sweep { done } => {
                    let answer = result.clone().map(|()| {
                        let mut s = sweeps.next().unwrap_or_default();
                        s.held_writer = held_writer;
                        s
                    });
                    let _ = done.send(answer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! What only the redb file does. The ledger's behaviour, the same on
    //! both backends, is tested on both by tests/integration/ledger_suite.rs.

    use super::*;
    use crate::ledger::{Ledger, Recipient};

    const CACHE: usize = 1 << 20;

    fn key(event: &str) -> DeliveryKey {
        DeliveryKey::new(event, "email", Purpose::Confirmation)
    }

    fn delivered(event: &str) -> Record {
        let mut d = Delivery::new(&key(event), &format!("appt-{event}"), Recipient::default());
        d.state = State::Delivered;
        Record {
            delivery: d,
            held: None,
        }
    }

    #[tokio::test]
    async fn a_second_open_of_the_file_fails_while_the_first_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.redb");
        let first = Embedded::open(&path, Duration::from_secs(3600), CACHE).expect("open");
        match Embedded::open(&path, Duration::from_secs(3600), CACHE) {
            Err(LedgerError::Open { path: named, .. }) => {
                assert_eq!(named, path.display().to_string());
            }
            Err(other) => panic!("expected LedgerError::Open, got {other}"),
            Ok(_) => panic!("a second open of a held ledger file succeeded"),
        }
        // Dropping the first releases the lock (its writer is joined).
        drop(first);
        Embedded::open(&path, Duration::from_secs(3600), CACHE).expect("open again");
    }

    #[tokio::test]
    async fn the_retention_pass_drops_old_buckets_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 800 ms retention: 100 ms buckets.
        let retention = Duration::from_millis(800);
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&dir.path().join("ledger.redb"), retention, CACHE).expect("open"),
        ));
        ledger.put(delivered("old")).await.expect("put");
        assert_eq!(ledger.stats().await.expect("stats").buckets, 1);
        assert_eq!(ledger.sweep().await.expect("sweep").records_dropped, 0);
        // Polled: the bucket goes between 800 and 900 ms after the write.
        let deadline = Instant::now() + Duration::from_secs(60);
        let sweep = loop {
            let sweep = ledger.sweep().await.expect("sweep");
            if sweep.records_dropped > 0 {
                break sweep;
            }
            assert_eq!(sweep.buckets_dropped, 0, "an empty bucket: {sweep:?}");
            assert!(
                Instant::now() < deadline,
                "the old bucket was never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // One table set dropped, not a record deleted.
        assert_eq!((sweep.buckets_dropped, sweep.records_dropped), (1, 1));
        assert_eq!(ledger.get(&key("old")).await.expect("get"), None);
        ledger.put(delivered("new")).await.expect("put");
        let stats = ledger.stats().await.expect("stats");
        assert_eq!((stats.records, stats.buckets), (1, 1));
    }
}
