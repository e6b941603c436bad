//! The shared ledger: one PostgreSQL database that any number of hosts in
//! one consumer group use together (`ledger.backend = "postgres"`).
//!
//! Layout (migrations in `host/migrations/`, applied at start under
//! PostgreSQL's advisory lock by `sqlx::migrate!`; additive only, so an
//! older host runs against a newer schema during a rolling deploy):
//! - `notify_deliveries`: every delivery that is not an open reminder,
//!   partitioned by its creation-time bucket. A record stays in the bucket of
//!   its creation; the retention drops a whole partition (`DROP TABLE`), never
//!   a long `DELETE`. The bucket width is an eighth of the retention (1 s to
//!   1 day), fixed by the first host in `notify_meta` so every host cuts the
//!   same ranges.
//! - `notify_timers`: open reminders, outside the buckets, by due time.
//! - `notify_appointments`: each appointment's state, with its expiry.
//! - `notify_hosts` and `notify_claims`: who works what (below).
//!
//! Claims. Before a host reads a delivery for work it claims its key: a row
//! in `notify_claims` with its owner name. The claim is granted when there is
//! none, when it is the host's own, or when its owner's lease ran out. A
//! lease is per host, not per claim: each host renews its row in
//! `notify_hosts` about every second, and its claims are live while
//! `greatest(renewed_at, pg_postmaster_start_time()) + lease` is ahead of the
//! database's `now()`. Every time is the database's, so the hosts' clocks
//! never matter; and a database restart gives every host a fresh lease, so
//! an outage of the database never hands one host's work to another. A
//! delivery's final record gives its claim up in the same transaction.
//!
//! Invariants:
//! - Writes go through one writer task that group-commits whatever is
//!   queued, in call order, in one transaction (a handful of statements
//!   whatever the batch size); the commit is synchronous only when the batch
//!   holds a final record or an appointment state, so an in-between state
//!   costs no flush.
//! - A host whose renewals failed for a while ([`Backend::claims_held`])
//!   sends nothing; once they fail for a whole lease its claims may have been
//!   taken over, so [`Backend::claim_epoch`] moves on and each delivery in
//!   work is claimed again before its next send.
//! - Claims left behind by a path that could not give them up (the database
//!   was away at that moment) are swept by their own host: a claim older than
//!   a minute that the host no longer works is dropped.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use super::{
    AppointmentState, Backend, BackendInfo, Claim, Delivery, DeliveryKey, Filter, LedgerError,
    PoolUse, Record, Scan, State, Stats, Sweep, TimerPos,
};
use crate::config::PostgresLedger;

/// Records (and appointment states) taken into one transaction at most.
const MAX_BATCH: usize = 2048;
/// Appointment states one retention pass drops at most (row deletes, unlike
/// the buckets); the next pass goes on.
const APPOINTMENTS_PER_SWEEP: i64 = 10_000;
/// Advisory lock ids ("notify" + a digit): partition DDL, and the
/// retention pass, one host at a time.
const LOCK_PARTITIONS: i64 = 0x6e6f_7469_6679_0001;
const LOCK_SWEEP: i64 = 0x6e6f_7469_6679_0002;
/// How often a host renews its lease, at most: a second keeps the window in
/// which a host that lost the database may still send short, for one cheap
/// `UPDATE` a second per host.
const MAX_RENEW_EVERY: Duration = Duration::from_secs(1);
/// A claim of this host older than this that it no longer works is dropped
/// by its heartbeat (a path that could not give it up).
const STALE_CLAIM: Duration = Duration::from_secs(60);

/// A lease of a host row `h` is live (see the module doc).
const LIVE: &str = "greatest(h.renewed_at, pg_postmaster_start_time()) + h.lease_ms * interval '1 millisecond' > now()";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn store_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Store(e.to_string())
}

/// Whether a database error is the database being away (retried, waited
/// out) rather than a statement it refused.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 57P01..57P03: admin shutdown, crash shutdown, cannot connect
            // now (starting up); 08*: connection exceptions.
            c.starts_with("57P") || c.starts_with("08")
        }),
        _ => false,
    }
}

fn db_err(e: sqlx::Error) -> LedgerError {
    if is_unavailable(&e) {
        LedgerError::Unavailable(e.to_string())
    } else {
        LedgerError::Store(e.to_string())
    }
}

/// PostgreSQL text holds no NUL; ids from events may. The record's JSON
/// (which escapes it) stays exact; only the indexed columns are mapped.
fn col(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn decode(id: i64, json: &str) -> Result<Record, LedgerError> {
    let mut record: Record = serde_json::from_str(json).map_err(|e| LedgerError::Corrupt {
        id: id as u64,
        reason: e.to_string(),
    })?;
    record.delivery.id = id as u64;
    Ok(record)
}

/// A timer's due time in ms (its creation when it has none).
fn due_ms(d: &Delivery) -> i64 {
    d.due_at.unwrap_or(d.created_at).timestamp_millis().max(0)
}

/// The lease as this host sees it (monotonic clock).
struct Lease {
    base: Instant,
    /// ms after `base` of the last successful renewal.
    renewed_ms: AtomicU64,
    /// Moves on each time renewals failed for a whole lease.
    epoch: AtomicU64,
    lease: Duration,
    /// Sends stop when the last renewal is older than this.
    hold: Duration,
}

impl Lease {
    fn since_renewal(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.renewed_ms.load(Ordering::Acquire)))
    }

    fn renewed(&self) {
        if self.since_renewal() >= self.lease {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                lease_ms = self.lease.as_millis() as u64,
                "the ledger lease was not renewed for a whole lease (the database was away): every delivery in work is claimed again before its next send"
            );
        }
        self.renewed_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Release);
    }
}

/// A lock whose holder panicked still guards plain sets: take it as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the writer and the readers share.
struct Shared {
    pool: PgPool,
    /// One connection of its own for the lease: a busy pool never delays a
    /// renewal (which would stop this host's sends).
    lease_pool: PgPool,
    owner: String,
    width_ms: i64,
    retention_ms: i64,
    /// Partitions known to exist (bucket starts).
    partitions: Mutex<BTreeSet<i64>>,
    /// Keys this host holds a claim on.
    claimed: Mutex<HashSet<String>>,
    lease: Lease,
}

impl Shared {
    fn partitions(&self) -> BTreeSet<i64> {
        lock(&self.partitions).clone()
    }

    fn with_partitions(&self, f: impl FnOnce(&mut BTreeSet<i64>)) {
        f(&mut lock(&self.partitions))
    }

    fn with_claimed<T>(&self, f: impl FnOnce(&mut HashSet<String>) -> T) -> T {
        f(&mut lock(&self.claimed))
    }

    /// The bucket a record created now goes to.
    fn current_bucket(&self) -> i64 {
        let now = now_ms();
        now - now.rem_euclid(self.width_ms)
    }

    /// Creates the partition of `bucket` unless it is known to exist.
    async fn ensure_partition(&self, bucket: i64) -> Result<(), sqlx::Error> {
        if self.partitions().contains(&bucket) {
            return Ok(());
        }
        // DDL under an advisory lock: two hosts creating the same partition
        // at once would otherwise collide in the catalog.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_PARTITIONS)
            .execute(&mut *tx)
            .await?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS notify_deliveries_{bucket} PARTITION OF notify_deliveries FOR VALUES FROM ({bucket}) TO ({end})",
            end = bucket + self.width_ms
        );
        sqlx::query(&ddl).execute(&mut *tx).await?;
        tx.commit().await?;
        self.with_partitions(|p| {
            p.insert(bucket);
        });
        Ok(())
    }

    /// Re-reads the partitions that exist (another host may have made or
    /// dropped some).
    async fn load_partitions(&self) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'notify_deliveries'::regclass",
        )
        .fetch_all(&self.pool)
        .await?;
        let found: BTreeSet<i64> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter_map(|name| name.strip_prefix("notify_deliveries_")?.parse().ok())
            .collect();
        self.with_partitions(|p| *p = found);
        Ok(())
    }

    /// One renewal of this host's lease.
    async fn renew(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO notify_hosts (owner, renewed_at, lease_ms, started_at) VALUES ($1, now(), $2, now()) \
             ON CONFLICT (owner) DO UPDATE SET renewed_at = now(), lease_ms = EXCLUDED.lease_ms",
        )
        .bind(&self.owner)
        .bind(self.lease.lease.as_millis() as i64)
        .execute(&self.lease_pool)
        .await?;
        self.lease.renewed();
        Ok(())
    }

    /// Drops this host's claims that nothing works any more.
    async fn drop_stale_claims(&self) -> Result<u64, sqlx::Error> {
        let active: Vec<String> = self.with_claimed(|c| c.iter().cloned().collect());
        let done = sqlx::query(
            "DELETE FROM notify_claims WHERE owner = $1 AND claimed_at < now() - $2 * interval '1 millisecond' \
             AND NOT (key = ANY($3))",
        )
        .bind(&self.owner)
        .bind(STALE_CLAIM.as_millis() as i64)
        .bind(&active)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

enum Op {
    Put {
        record: Box<Record>,
        done: oneshot::Sender<Result<(), LedgerError>>,
    },
    Appointment {
        state: Box<AppointmentState>,
        done: oneshot::Sender<Result<(), LedgerError>>,
    },
}

/// The PostgreSQL backend; see the module doc.
pub struct Postgres {
    shared: Arc<Shared>,
    writer: Option<mpsc::UnboundedSender<Op>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cursor_key: [u8; 32],
    location: String,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and drained; the
        // heartbeat stops at once (the lease then runs out, as at a crash).
        self.writer.take();
        if let Some(heartbeat) = self.tasks.first() {
            heartbeat.abort();
        }
    }
}

impl Postgres {
    /// Connects (one attempt: a database that is not there yet is
    /// [`LedgerError::Unavailable`], for the caller to wait out), applies the
    /// migrations, registers this host's lease and starts its writer and
    /// heartbeat. Needs a Tokio runtime.
    pub async fn connect(
        config: &PostgresLedger,
        retention: Duration,
    ) -> Result<Postgres, LedgerError> {
        let location = config.url_shown.clone();
        let open = |reason: String| LedgerError::Open {
            path: location.clone(),
            reason,
        };
        let options = PgConnectOptions::from_str(config.url.expose())
            .map_err(|e| open(format!("ledger.url: {e}")))?
            .application_name("notify-host")
            // Claims and in-between states commit without waiting for the
            // flush; the writer asks for it when a batch holds a final
            // record (see the module doc).
            .options([("synchronous_commit", "off")]);
        let lease_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options.clone());
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(1)
            .acquire_timeout(config.connect_timeout)
            // A round trip per acquire would cost a fifth of the writes;
            // a connection broken by a restart fails its statement once,
            // and every caller retries.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| match db_err(e) {
                LedgerError::Unavailable(reason) => LedgerError::Unavailable(reason),
                other => open(other.to_string()),
            })?;

        migrator().run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) if is_unavailable(&e) => {
                LedgerError::Unavailable(e.to_string())
            }
            other => open(format!("cannot apply the ledger's migrations: {other}")),
        })?;

        let retention_ms = retention.as_millis().max(1) as i64;
        let wanted_width = (retention_ms / 8).clamp(1_000, 86_400_000);
        let width_ms = meta(&pool, "bucket_width_ms", &wanted_width.to_string())
            .await
            .map_err(db_err)?
            .parse::<i64>()
            .map_err(|e| open(format!("notify_meta.bucket_width_ms: {e}")))?;
        if width_ms != wanted_width {
            tracing::info!(
                bucket_width_ms = width_ms,
                this_host_would_use = wanted_width,
                "the ledger's time buckets were set by the first host (ledger.retention_hours may differ between hosts); using the database's"
            );
        }
        let key_hex = meta(&pool, "cursor_key", &random_hex32())
            .await
            .map_err(db_err)?;
        let cursor_key = parse_hex32(&key_hex)
            .ok_or_else(|| open("notify_meta.cursor_key is not 64 hex digits".into()))?;

        let lease = config.lease;
        let hold = (lease / 2).min(MAX_RENEW_EVERY * 3);
        let shared = Arc::new(Shared {
            pool,
            lease_pool,
            owner: config.owner.clone(),
            width_ms,
            retention_ms,
            partitions: Mutex::new(BTreeSet::new()),
            claimed: Mutex::new(HashSet::new()),
            lease: Lease {
                base: Instant::now(),
                renewed_ms: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                lease,
                hold,
            },
        });
        shared.renew().await.map_err(db_err)?;
        shared.load_partitions().await.map_err(db_err)?;
        let bucket = shared.current_bucket();
        shared.ensure_partition(bucket).await.map_err(db_err)?;

        let heartbeat = tokio::spawn(heartbeat(shared.clone()));
        let (writer, rx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_loop(shared.clone(), rx));
        Ok(Postgres {
            shared,
            writer: Some(writer),
            tasks: vec![heartbeat, writer_task],
            cursor_key,
            location,
        })
    }

    /// This host's name on its claims.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    fn send(&self, op: Op) -> Result<(), LedgerError> {
        self.writer
            .as_ref()
            .ok_or(LedgerError::WriterGone)?
            .send(op)
            .map_err(|_| LedgerError::WriterGone)
    }

    fn pool(&self) -> PgPool {
        self.shared.pool.clone()
    }
}

/// The ledger's schema migrations (`host/migrations/`), as `connect`
/// applies them: under PostgreSQL's advisory lock (one host migrates, the
/// others wait), tolerating versions this host does not know (a newer host
/// migrated first in a rolling deploy; migrations are additive).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// The value of `name` in `notify_meta`, set to `default` by the first host.
async fn meta(pool: &PgPool, name: &str, default: &str) -> Result<String, sqlx::Error> {
    sqlx::query(
        "INSERT INTO notify_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(default)
    .execute(pool)
    .await?;
    sqlx::query_scalar("SELECT value FROM notify_meta WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
}

fn random_hex32() -> String {
    (0..32)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Renews the lease about every second (a tenth of the lease when that is
/// shorter), keeps the next bucket's partition made ahead of time (creating
/// one locks the parent table briefly), and drops stale claims.
async fn heartbeat(shared: Arc<Shared>) {
    let every = (shared.lease.lease / 10).clamp(Duration::from_millis(50), MAX_RENEW_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut last_upkeep = Instant::now();
    loop {
        tick.tick().await;
        match shared.renew().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "the ledger database answers again; lease renewed");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::error!(error = %e, failures, "cannot renew the ledger lease; no sends until the database answers");
                }
                continue;
            }
        }
        if last_upkeep.elapsed() >= Duration::from_secs(10) {
            last_upkeep = Instant::now();
            let next = shared.current_bucket() + shared.width_ms;
            if let Err(e) = shared.ensure_partition(next).await {
                tracing::warn!(error = %e, "cannot make the ledger's next partition ahead of time; it is made when first written");
            }
            match shared.drop_stale_claims().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(claims = n, "dropped this host's claims left behind"),
                Err(e) => tracing::warn!(error = %e, "cannot drop stale claims"),
            }
        }
    }
}

/// Takes whatever is queued, applies it in one transaction, and answers
/// each. A batch the database refuses is applied again one write at a time,
/// so one bad record fails alone.
async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Op>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = apply(&shared, &batch).await;
        match result {
            Ok(()) => answer(batch, || Ok(())),
            Err(e) if batch.len() > 1 && !is_unavailable(&e) => {
                tracing::warn!(error = %e, writes = batch.len(), "the ledger refused a batch; applying its writes one by one");
                for op in batch {
                    let one = [op];
                    let r = apply(&shared, &one).await.map_err(db_err);
                    let [op] = one;
                    answer(vec![op], || match &r {
                        Ok(()) => Ok(()),
                        Err(e) => Err(LedgerError::Store(e.to_string())),
                    });
                }
            }
            Err(e) => {
                let message = e.to_string();
                let unavailable = is_unavailable(&e);
                answer(batch, || {
                    Err(if unavailable {
                        LedgerError::Unavailable(message.clone())
                    } else {
                        LedgerError::Store(message.clone())
                    })
                })
            }
        }
    }
}

fn answer(batch: Vec<Op>, result: impl Fn() -> Result<(), LedgerError>) {
    for op in batch {
        let done = match op {
            Op::Put { done, .. } | Op::Appointment { done, .. } => done,
        };
        let _ = done.send(result());
    }
}

/// The columns of one delivery row.
#[derive(Default)]
struct DeliveryRows {
    bucket: Vec<i64>,
    id: Vec<i64>,
    key: Vec<String>,
    event_id: Vec<String>,
    channel: Vec<String>,
    purpose: Vec<String>,
    state: Vec<String>,
    appointment_id: Vec<String>,
    created_ms: Vec<i64>,
    updated_ms: Vec<i64>,
    record: Vec<String>,
}

/// Applies a batch in one transaction (see the module doc).
async fn apply(shared: &Shared, batch: &[Op]) -> Result<(), sqlx::Error> {
    // The last write of each key wins: applying them in order leaves the
    // same rows.
    let mut puts: Vec<&Record> = Vec::new();
    let mut put_at: HashMap<String, usize> = HashMap::new();
    let mut appointments: Vec<&AppointmentState> = Vec::new();
    let mut appointment_at: HashMap<&str, usize> = HashMap::new();
    let mut durable = false;
    for op in batch {
        match op {
            Op::Put { record, .. } => {
                durable |= record.delivery.state.is_final();
                let key = record.delivery.key().encode();
                match put_at.get(&key) {
                    Some(&i) => puts[i] = record,
                    None => {
                        put_at.insert(key, puts.len());
                        puts.push(record);
                    }
                }
            }
            Op::Appointment { state, .. } => {
                durable = true;
                match appointment_at.get(state.appointment_id.as_str()) {
                    Some(&i) => appointments[i] = state,
                    None => {
                        appointment_at.insert(&state.appointment_id, appointments.len());
                        appointments.push(state);
                    }
                }
            }
        }
    }
    let keyed: Vec<(String, &Record)> = puts
        .iter()
        .map(|r| (col(&r.delivery.key().encode()).into_owned(), *r))
        .collect();
    let (timers, deliveries): (Vec<_>, Vec<_>) =
        keyed.iter().partition(|(_, r)| r.delivery.is_timer());

    let bucket = shared.current_bucket();
    if !deliveries.is_empty() {
        shared.ensure_partition(bucket).await?;
    }

    let mut tx = shared.pool.begin().await?;
    if durable {
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await?;
    }

    if !timers.is_empty() {
        let mut key = Vec::new();
        let mut id = Vec::new();
        let mut due = Vec::new();
        let mut event_id = Vec::new();
        let mut appointment_id = Vec::new();
        let mut record = Vec::new();
        let mut event: Vec<Option<String>> = Vec::new();
        let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
        for (k, r) in &timers {
            let d = &r.delivery;
            key.push(k.clone());
            id.push(d.id as i64);
            due.push(due_ms(d));
            event_id.push(col(&d.event_id).into_owned());
            appointment_id.push(col(&d.appointment_id).into_owned());
            // The event goes in its own column (kept when a write has none).
            record.push(
                serde_json::to_string(&Record {
                    delivery: d.clone(),
                    held: None,
                })
                .map_err(encode)?,
            );
            event.push(match &r.held {
                Some(h) => Some(serde_json::to_string(h).map_err(encode)?),
                None => None,
            });
        }
        sqlx::query(
            "INSERT INTO notify_timers (key, id, due_ms, event_id, appointment_id, record, event) \
             SELECT k, CASE WHEN i > 0 THEN i ELSE nextval('notify_delivery_ids') END, d, e, a, r, v \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS t(k, i, d, e, a, r, v) \
             ON CONFLICT (key) DO UPDATE SET due_ms = EXCLUDED.due_ms, record = EXCLUDED.record, \
             appointment_id = EXCLUDED.appointment_id, \
             event = COALESCE(EXCLUDED.event, notify_timers.event)",
        )
        .bind(&key)
        .bind(&id)
        .bind(&due)
        .bind(&event_id)
        .bind(&appointment_id)
        .bind(&record)
        .bind(&event)
        .execute(&mut *tx)
        .await?;
    }

    if !deliveries.is_empty() {
        let keys: Vec<String> = deliveries.iter().map(|(k, _)| k.clone()).collect();
        // Timers that end here leave the timers and join the newest bucket
        // under a new id (as the embedded ledger does): ids and buckets
        // stay in the same order, which paging relies on.
        sqlx::query("DELETE FROM notify_timers WHERE key = ANY($1)")
            .bind(&keys)
            .execute(&mut *tx)
            .await?;
        let existing: HashMap<String, (i64, i64)> = sqlx::query(
            "SELECT DISTINCT ON (key) key, bucket, id FROM notify_deliveries WHERE key = ANY($1) ORDER BY key, bucket DESC",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get::<String, _>(0).ok()?,
                (r.try_get::<i64, _>(1).ok()?, r.try_get::<i64, _>(2).ok()?),
            ))
        })
        .collect();
        let fresh = keys.iter().filter(|k| !existing.contains_key(*k)).count();
        let mut new_ids: Vec<i64> = if fresh > 0 {
            sqlx::query_scalar("SELECT nextval('notify_delivery_ids') FROM generate_series(1, $1)")
                .bind(fresh as i64)
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        new_ids.reverse();
        let mut rows = DeliveryRows::default();
        for (k, r) in &deliveries {
            let d = &r.delivery;
            let (b, id) = match existing.get(k) {
                Some(&(b, id)) => (b, id),
                None => (bucket, new_ids.pop().unwrap_or_default()),
            };
            // The event is kept only while held.
            let json = if d.state == State::Held || r.held.is_none() {
                serde_json::to_string(r)
            } else {
                serde_json::to_string(&Record {
                    delivery: d.clone(),
                    held: None,
                })
            }
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            rows.bucket.push(b);
            rows.id.push(id);
            rows.key.push(k.clone());
            rows.event_id.push(col(&d.event_id).into_owned());
            rows.channel.push(col(&d.channel).into_owned());
            rows.purpose.push(d.purpose.as_str().to_string());
            rows.state.push(d.state.as_str().to_string());
            rows.appointment_id
                .push(col(&d.appointment_id).into_owned());
            rows.created_ms.push(d.created_at.timestamp_millis());
            rows.updated_ms.push(d.updated_at.timestamp_millis());
            rows.record.push(json);
        }
        sqlx::query(
            "INSERT INTO notify_deliveries (bucket, id, key, event_id, channel, purpose, state, appointment_id, created_ms, updated_ms, record) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[]) \
             ON CONFLICT (key, bucket) DO UPDATE SET state = EXCLUDED.state, updated_ms = EXCLUDED.updated_ms, \
             record = EXCLUDED.record, channel = EXCLUDED.channel, purpose = EXCLUDED.purpose, \
             appointment_id = EXCLUDED.appointment_id",
        )
        .bind(&rows.bucket)
        .bind(&rows.id)
        .bind(&rows.key)
        .bind(&rows.event_id)
        .bind(&rows.channel)
        .bind(&rows.purpose)
        .bind(&rows.state)
        .bind(&rows.appointment_id)
        .bind(&rows.created_ms)
        .bind(&rows.updated_ms)
        .bind(&rows.record)
        .execute(&mut *tx)
        .await?;
    }

    // A final record gives its claim up (this host's only).
    let done: Vec<String> = keyed
        .iter()
        .filter(|(_, r)| r.delivery.state.is_final())
        .map(|(k, _)| k.clone())
        .collect();
    if !done.is_empty() {
        sqlx::query("DELETE FROM notify_claims WHERE owner = $1 AND key = ANY($2)")
            .bind(&shared.owner)
            .bind(&done)
            .execute(&mut *tx)
            .await?;
    }

    if !appointments.is_empty() {
        let mut id = Vec::new();
        let mut expires = Vec::new();
        let mut state = Vec::new();
        for s in &appointments {
            id.push(col(&s.appointment_id).into_owned());
            expires.push(appointment_expiry(shared.retention_ms, s));
            state.push(serde_json::to_string(s).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        }
        sqlx::query(
            "INSERT INTO notify_appointments (appointment_id, expires_ms, state) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT (appointment_id) DO UPDATE SET expires_ms = EXCLUDED.expires_ms, state = EXCLUDED.state",
        )
        .bind(&id)
        .bind(&expires)
        .bind(&state)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !done.is_empty() {
        shared.with_claimed(|c| {
            for k in &done {
                c.remove(k);
            }
        });
    }
    Ok(())
}

/// When an appointment's state may go: the retention after its time, or
/// after its last change when that is later.
fn appointment_expiry(retention_ms: i64, state: &AppointmentState) -> i64 {
    let updated = state.updated_at.timestamp_millis();
    let time = state.time.map_or(0, |t| t.timestamp_millis());
    updated.max(time).saturating_add(retention_ms)
}

/// Rows of (id, record JSON) decoded, deliveries only.
fn deliveries_of(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Delivery>, LedgerError> {
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get(0).map_err(store_err)?;
            let json: String = r.try_get(1).map_err(store_err)?;
            decode(id, &json).map(|rec| rec.delivery)
        })
        .collect()
}

/// Rows of (id, record JSON, event JSON or NULL): a timer's event is in
/// its own column.
fn records_of(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Record>, LedgerError> {
    rows.iter().map(record_of).collect()
}

fn record_of(r: &sqlx::postgres::PgRow) -> Result<Record, LedgerError> {
    let id: i64 = r.try_get(0).map_err(store_err)?;
    let json: String = r.try_get(1).map_err(store_err)?;
    let event: Option<String> = r.try_get(2).map_err(store_err)?;
    let mut record = decode(id, &json)?;
    if let Some(event) = event {
        record.held = Some(
            serde_json::from_str(&event).map_err(|e| LedgerError::Corrupt {
                id: id as u64,
                reason: format!("the timer's event: {e}"),
            })?,
        );
    }
    Ok(record)
}

impl Backend for Postgres {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "postgres",
            location: self.location.clone(),
            shared: true,
        }
    }

    fn get(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<Option<Delivery>, LedgerError>> {
        let pool = self.pool();
        let key = col(&key.encode()).into_owned();
        async move {
            let row = sqlx::query(
                "(SELECT id, record, 0 AS o FROM notify_timers WHERE key = $1) \
                 UNION ALL (SELECT id, record, 1 FROM notify_deliveries WHERE key = $1 ORDER BY bucket DESC LIMIT 1) \
                 ORDER BY o LIMIT 1",
            )
            .bind(&key)
            .fetch_optional(&pool)
            .await
            .map_err(db_err)?;
            match row {
                Some(r) => Ok(deliveries_of(&[r])?.pop()),
                None => Ok(None),
            }
        }
        .boxed()
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
        let pool = self.pool();
        let event_id = event_id.to_string();
        async move {
            let rows = sqlx::query(
                "SELECT id, record FROM notify_timers WHERE event_id = $1 \
                 UNION ALL SELECT id, record FROM notify_deliveries WHERE event_id = $1 ORDER BY 1",
            )
            .bind(col(&event_id).as_ref())
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            Ok(deliveries_of(&rows)?
                .into_iter()
                .filter(|d| d.event_id == event_id)
                .collect())
        }
        .boxed()
    }

    fn appointment(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, LedgerError>> {
        let pool = self.pool();
        let appointment_id = appointment_id.to_string();
        async move {
            let id = col(&appointment_id).into_owned();
            let rows = sqlx::query(
                "SELECT id, record FROM notify_deliveries WHERE appointment_id = $1 ORDER BY id DESC",
            )
            .bind(&id)
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            let mut out = deliveries_of(&rows)?;
            let rows = sqlx::query(
                "SELECT id, record FROM notify_timers WHERE appointment_id = $1 ORDER BY due_ms, key",
            )
            .bind(&id)
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            out.extend(deliveries_of(&rows)?);
            out.retain(|d| d.appointment_id == appointment_id);
            Ok(out)
        }
        .boxed()
    }

    fn list(
        &self,
        filter: Filter,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Scan, LedgerError>> {
        let pool = self.pool();
        async move {
            let rows = sqlx::query(
                "SELECT id, record FROM notify_deliveries \
                 WHERE ($1::bigint IS NULL OR id < $1) \
                 AND ($2::text IS NULL OR channel = $2) \
                 AND ($3::text IS NULL OR state = $3) \
                 AND ($4::text IS NULL OR purpose = $4) \
                 AND ($5::bigint IS NULL OR created_ms >= $5) \
                 AND ($6::bigint IS NULL OR created_ms < $6) \
                 ORDER BY id DESC LIMIT $7",
            )
            .bind(before.map(|b| b.min(i64::MAX as u64) as i64))
            .bind(filter.channel.as_deref().map(|c| col(c).into_owned()))
            .bind(filter.state.map(State::as_str))
            .bind(filter.purpose.map(|p| p.as_str()))
            .bind(filter.since.map(|t| t.timestamp_millis()))
            .bind(filter.until.map(|t| t.timestamp_millis()))
            .bind(limit as i64 + 1)
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            let mut deliveries = deliveries_of(&rows)?;
            let next_before = if deliveries.len() > limit {
                deliveries.truncate(limit);
                deliveries.last().map(|d| d.id)
            } else {
                None
            };
            Ok(Scan {
                deliveries,
                next_before,
            })
        }
        .boxed()
    }

    fn held(
        &self,
        channel: &str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>> {
        let pool = self.pool();
        let channel = col(channel).into_owned();
        async move {
            let rows = sqlx::query(
                "SELECT id, record, NULL::text FROM notify_deliveries WHERE state = 'held' AND channel = $1 AND id > $2 \
                 ORDER BY id LIMIT $3",
            )
            .bind(&channel)
            .bind(after.map_or(0, |a| a.min(i64::MAX as u64) as i64))
            .bind(limit as i64)
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            records_of(&rows)
        }
        .boxed()
    }

    fn sweep(&self) -> BoxFuture<'static, Result<Sweep, LedgerError>> {
        let shared = self.shared.clone();
        async move { sweep(&shared).await.map_err(db_err) }.boxed()
    }

    fn stats(&self) -> BoxFuture<'static, Result<Stats, LedgerError>> {
        let shared = self.shared.clone();
        async move {
            let row = sqlx::query(
                "SELECT (SELECT count(*) FROM notify_deliveries), (SELECT count(*) FROM notify_timers), \
                 pg_total_relation_size('notify_timers') + pg_total_relation_size('notify_appointments') + \
                 coalesce((SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i \
                   WHERE i.inhparent = 'notify_deliveries'::regclass), 0)::bigint, \
                 (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'notify_deliveries'::regclass)",
            )
            .fetch_one(&shared.pool)
            .await
            .map_err(db_err)?;
            let get = |i: usize| -> Result<i64, LedgerError> { row.try_get::<i64, _>(i).map_err(store_err) };
            Ok(Stats {
                records: get(0)?.max(0) as u64,
                timers: get(1)?.max(0) as u64,
                file_bytes: get(2)?.max(0) as u64,
                buckets: get(3)?.max(0) as usize,
            })
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        let pool = self.pool();
        let held = self.claims_held();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map_err(db_err)?;
            if !held {
                return Err(LedgerError::Unavailable(
                    "this host's lease is not renewed yet (the database was away)".into(),
                ));
            }
            Ok(())
        }
        .boxed()
    }

    fn cursor_key(&self) -> [u8; 32] {
        self.cursor_key
    }

    fn timers(
        &self,
        after: Option<&TimerPos>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<(TimerPos, Record)>, LedgerError>> {
        let pool = self.pool();
        let owner = self.shared.owner.clone();
        let (after_ms, after_key) = match after {
            Some((ms, key)) => (*ms as i64, key.clone()),
            None => (-1, String::new()),
        };
        async move {
            let sql = format!(
                "SELECT t.id, t.record, t.event, t.due_ms, t.key FROM notify_timers t \
                 WHERE (t.due_ms, t.key) > ($1, $2) \
                 AND NOT EXISTS (SELECT 1 FROM notify_claims c JOIN notify_hosts h ON h.owner = c.owner \
                   WHERE c.key = t.key AND c.owner <> $3 AND {LIVE}) \
                 ORDER BY t.due_ms, t.key LIMIT $4"
            );
            let rows = sqlx::query(&sql)
                .bind(after_ms)
                .bind(&after_key)
                .bind(&owner)
                .bind(limit as i64)
                .fetch_all(&pool)
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| {
                    let due: i64 = r.try_get(3).map_err(store_err)?;
                    let key: String = r.try_get(4).map_err(store_err)?;
                    Ok(((due.max(0) as u64, key), record_of(r)?))
                })
                .collect()
        }
        .boxed()
    }

    fn appointment_timers(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Vec<Record>, LedgerError>> {
        let pool = self.pool();
        let appointment_id = appointment_id.to_string();
        async move {
            let rows = sqlx::query(
                "SELECT id, record, event FROM notify_timers WHERE appointment_id = $1 ORDER BY due_ms, key",
            )
            .bind(col(&appointment_id).as_ref())
            .fetch_all(&pool)
            .await
            .map_err(db_err)?;
            Ok(records_of(&rows)?
                .into_iter()
                .filter(|r| r.delivery.appointment_id == appointment_id)
                .collect())
        }
        .boxed()
    }

    fn timer_count(&self) -> BoxFuture<'static, Result<u64, LedgerError>> {
        let pool = self.pool();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notify_timers")
                .fetch_one(&pool)
                .await
                .map_err(db_err)?;
            Ok(n.max(0) as u64)
        }
        .boxed()
    }

    fn appointment_state(
        &self,
        appointment_id: &str,
    ) -> BoxFuture<'static, Result<Option<AppointmentState>, LedgerError>> {
        let pool = self.pool();
        let appointment_id = appointment_id.to_string();
        async move {
            let json: Option<String> = sqlx::query_scalar(
                "SELECT state FROM notify_appointments WHERE appointment_id = $1",
            )
            .bind(col(&appointment_id).as_ref())
            .fetch_optional(&pool)
            .await
            .map_err(db_err)?;
            match json {
                Some(j) => serde_json::from_str(&j)
                    .map(Some)
                    .map_err(|e| LedgerError::Store(format!("appointment {appointment_id}: {e}"))),
                None => Ok(None),
            }
        }
        .boxed()
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

    fn claim(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<Claim, LedgerError>> {
        let shared = self.shared.clone();
        let key = col(&key.encode()).into_owned();
        async move {
            let claim_sql = format!(
                "INSERT INTO notify_claims AS c (key, owner, claimed_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, claimed_at = now() \
                 WHERE c.owner = EXCLUDED.owner \
                 OR NOT EXISTS (SELECT 1 FROM notify_hosts h WHERE h.owner = c.owner AND {LIVE}) \
                 RETURNING owner"
            );
            // Three tries: a holder may give its claim up between the two
            // statements.
            for _ in 0..3 {
                let granted = sqlx::query(&claim_sql)
                    .bind(&key)
                    .bind(&shared.owner)
                    .fetch_optional(&shared.pool)
                    .await
                    .map_err(db_err)?;
                if granted.is_some() {
                    shared.with_claimed(|c| c.insert(key.clone()));
                    return Ok(Claim::Granted);
                }
                let holder = sqlx::query(
                    "SELECT c.owner, greatest(h.renewed_at, pg_postmaster_start_time()) + h.lease_ms * interval '1 millisecond' \
                     FROM notify_claims c LEFT JOIN notify_hosts h ON h.owner = c.owner WHERE c.key = $1",
                )
                .bind(&key)
                .fetch_optional(&shared.pool)
                .await
                .map_err(db_err)?;
                if let Some(row) = holder {
                    let owner: String = row.try_get(0).map_err(store_err)?;
                    let until: Option<DateTime<Utc>> = row.try_get(1).map_err(store_err)?;
                    return Ok(Claim::Busy {
                        owner,
                        until: until.unwrap_or_else(Utc::now),
                    });
                }
            }
            Err(LedgerError::Store(format!(
                "the claim of {key} kept changing hands"
            )))
        }
        .boxed()
    }

    fn release(&self, key: &DeliveryKey) -> BoxFuture<'static, Result<(), LedgerError>> {
        let shared = self.shared.clone();
        let key = col(&key.encode()).into_owned();
        async move {
            sqlx::query("DELETE FROM notify_claims WHERE key = $1 AND owner = $2")
                .bind(&key)
                .bind(&shared.owner)
                .execute(&shared.pool)
                .await
                .map_err(db_err)?;
            shared.with_claimed(|c| c.remove(&key));
            Ok(())
        }
        .boxed()
    }

    fn release_all(&self) -> BoxFuture<'static, Result<u64, LedgerError>> {
        let shared = self.shared.clone();
        async move {
            let done = sqlx::query("DELETE FROM notify_claims WHERE owner = $1")
                .bind(&shared.owner)
                .execute(&shared.pool)
                .await
                .map_err(db_err)?;
            // Gone at once, not after its lease: the next owner of this
            // host's partitions need not wait.
            sqlx::query("DELETE FROM notify_hosts WHERE owner = $1")
                .bind(&shared.owner)
                .execute(&shared.pool)
                .await
                .map_err(db_err)?;
            shared.with_claimed(HashSet::clear);
            Ok(done.rows_affected())
        }
        .boxed()
    }

    fn claims_held(&self) -> bool {
        self.shared.lease.since_renewal() < self.shared.lease.hold
    }

    fn claim_epoch(&self) -> u64 {
        self.shared.lease.epoch.load(Ordering::Acquire)
    }

    fn pool(&self) -> Option<PoolUse> {
        let pool = &self.shared.pool;
        Some(PoolUse {
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        })
    }
}

/// The writer's answer to a queued write (queued before this returns).
fn answered(
    sent: Result<(), LedgerError>,
    rx: oneshot::Receiver<Result<(), LedgerError>>,
) -> BoxFuture<'static, Result<(), LedgerError>> {
    async move {
        sent?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::WriterGone),
        }
    }
    .boxed()
}

/// One retention pass: drops the partitions past the retention whole, then
/// a bounded number of appointment states, and hosts long gone with their
/// claims. One host at a time (an advisory lock); the others skip.
async fn sweep(shared: &Shared) -> Result<Sweep, sqlx::Error> {
    let mut total = Sweep::default();
    let mut conn = shared.pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_SWEEP)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(total);
    }
    let result = async {
        shared.load_partitions().await?;
        let cutoff = now_ms().saturating_sub(shared.retention_ms);
        for start in shared.partitions() {
            if start + shared.width_ms > cutoff {
                break;
            }
            let started = Instant::now();
            let table = format!("notify_deliveries_{start}");
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&mut *conn)
                .await?;
            shared.with_partitions(|p| {
                p.remove(&start);
            });
            total.buckets_dropped += 1;
            total.records_dropped += rows.max(0) as u64;
            total.held_writer = total.held_writer.max(started.elapsed());
        }
        loop {
            let gone = sqlx::query(
                "DELETE FROM notify_appointments WHERE appointment_id IN \
                 (SELECT appointment_id FROM notify_appointments WHERE expires_ms <= $1 LIMIT $2)",
            )
            .bind(now_ms())
            .bind(APPOINTMENTS_PER_SWEEP)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            total.appointments_dropped += gone;
            if gone < APPOINTMENTS_PER_SWEEP as u64 {
                break;
            }
        }
        // Hosts gone for a day, and what they still claimed: nobody waits on
        // a dead host's claim (its lease ran out long ago), this only keeps
        // the tables small.
        sqlx::query(
            "DELETE FROM notify_claims c USING notify_hosts h WHERE h.owner = c.owner \
             AND h.renewed_at < now() - interval '1 day'",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "DELETE FROM notify_claims c WHERE NOT EXISTS (SELECT 1 FROM notify_hosts h WHERE h.owner = c.owner) \
             AND c.claimed_at < now() - interval '1 day'",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM notify_hosts WHERE renewed_at < now() - interval '1 day'")
            .execute(&mut *conn)
            .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_SWEEP)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_never_reaches_an_indexed_column() {
        assert_eq!(col("a\0b"), "a\u{fffd}b");
        assert!(matches!(col("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn cursor_keys_round_trip_as_hex() {
        let hex = random_hex32();
        let key = parse_hex32(&hex).expect("hex");
        let again: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(again, hex);
        assert_eq!(parse_hex32("zz"), None);
        assert_eq!(parse_hex32(&"g".repeat(64)), None);
    }

    #[test]
    fn which_errors_are_the_database_being_away() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
