//! The ledger's behaviour, one suite run on both backends: every case is a
//! test of `embedded` (redb in a temp dir) and of `postgres` (a fresh
//! database on a real PostgreSQL, see pg_harness.rs), so a failure names
//! the backend (`ledger_suite::postgres::…`). Then what only one of them
//! does: the embedded ledger is one host's and grants every claim; the
//! PostgreSQL one is shared, and its claims decide which host works a
//! delivery.
//!
//! Nothing here sleeps to guess timing: what takes time (the retention, a
//! lease running out) is polled for with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notify_host::config::{PostgresLedger, Secret};
use notify_host::ledger::embedded::Embedded;
use notify_host::ledger::postgres::{migrator, Postgres};
use notify_host::ledger::{
    AppointmentState, AppointmentStatus, Claim, Delivery, DeliveryKey, Filter, HeldMessage, Ledger,
    LedgerError, ListError, Purpose, Recipient, Record, State, TimerPos, MAX_PAGE,
};

use crate::pg_harness::{fresh_database, PgServer, PG_PASSWORD};

/// redb's page cache for the embedded ledger (small: the tests' ledgers are).
const CACHE: usize = 1 << 20;
/// A retention no test outlives.
const LONG: Duration = Duration::from_secs(3600);
/// The hosts' lease unless a case needs it short (the default's).
const LEASE: Duration = Duration::from_secs(30);
/// How long a poll waits for what takes time, at most (a busy 2-core
/// machine builds in parallel).
const DEADLINE: Duration = Duration::from_secs(60);
/// Between two looks of a poll.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Postgres,
}

/// Where one case's ledger lives, so it can open it again (a restart) or
/// open it as a second host.
struct Store {
    kind: Kind,
    dir: tempfile::TempDir,
    /// The database, for `postgres`.
    url: String,
    /// How long a host waits for a connection (`ledger.connect_timeout_seconds`).
    connect_timeout: Duration,
}

impl Store {
    fn new(kind: Kind, name: &str) -> Store {
        Store {
            kind,
            dir: tempfile::tempdir().expect("temp dir"),
            url: match kind {
                Kind::Embedded => String::new(),
                Kind::Postgres => fresh_database(name),
            },
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// A PostgreSQL ledger in the database of `url`.
    fn postgres_at(url: String) -> Store {
        Store {
            kind: Kind::Postgres,
            dir: tempfile::tempdir().expect("temp dir"),
            url,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The ledger as the host `host-a`.
    async fn open(&self, retention: Duration) -> Ledger {
        self.open_as("host-a", retention, LEASE).await
    }

    async fn open_as(&self, owner: &str, retention: Duration, lease: Duration) -> Ledger {
        match self.kind {
            Kind::Embedded => Ledger::new(Arc::new(
                Embedded::open(&self.dir.path().join("ledger.redb"), retention, CACHE)
                    .expect("open the embedded ledger"),
            )),
            Kind::Postgres => {
                let config = PostgresLedger {
                    url: Secret::new(self.url.clone()),
                    url_shown: self.url.replace(&format!(":{PG_PASSWORD}@"), "@"),
                    pool_size: 4,
                    lease,
                    connect_timeout: self.connect_timeout,
                    owner: owner.to_string(),
                };
                Ledger::new(Arc::new(
                    Postgres::connect(&config, retention)
                        .await
                        .unwrap_or_else(|e| panic!("connect {owner} to the ledger: {e}")),
                ))
            }
        }
    }
}

fn key(event: &str, channel: &str) -> DeliveryKey {
    DeliveryKey::new(event, channel, Purpose::Confirmation)
}

/// A confirmation of `event` on `channel`, appointment `appt-EVENT`.
fn record(event: &str, channel: &str, state: State) -> Record {
    let mut d = Delivery::new(
        &key(event, channel),
        &format!("appt-{event}"),
        Recipient::default(),
    );
    d.state = state;
    Record {
        delivery: d,
        held: None,
    }
}

fn message(event: &str) -> HeldMessage {
    HeldMessage {
        topic: "appointments".into(),
        key_b64: None,
        payload: format!("{{\"event_id\":\"{event}\"}}"),
        headers: vec![("h".into(), "dg==".into())],
    }
}

fn reminder_key(event: &str, channel: &str, name: &str) -> DeliveryKey {
    DeliveryKey {
        reminder: Some(name.to_string()),
        ..DeliveryKey::new(event, channel, Purpose::Reminder)
    }
}

/// A scheduled reminder (a timer) with its event.
fn reminder(event: &str, name: &str, appointment: &str, due: DateTime<Utc>) -> Record {
    let mut d = Delivery::new(
        &reminder_key(event, "sms", name),
        appointment,
        Recipient::default(),
    );
    d.state = State::Scheduled;
    d.due_at = Some(due);
    Record {
        delivery: d,
        held: Some(message(event)),
    }
}

fn in_minutes(m: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::minutes(m)
}

async fn get(ledger: &Ledger, key: &DeliveryKey) -> Option<Delivery> {
    ledger.get(key).await.expect("get")
}

async fn put(ledger: &Ledger, record: Record) {
    ledger.put(record).await.expect("put");
}

// ---------------------------------------------------------------------------
// Both backends.

async fn records_survive_reopening_and_keep_their_id(kind: Kind) {
    let store = Store::new(kind, "reopen");
    let (id, cursor) = {
        let ledger = store.open(LONG).await;
        assert_eq!(get(&ledger, &key("e1", "email")).await, None);
        put(&ledger, record("e1", "email", State::Pending)).await;
        put(&ledger, record("e1", "email", State::Delivered)).await;
        put(&ledger, record("e0", "email", State::Delivered)).await;
        let d = get(&ledger, &key("e1", "email")).await.expect("there");
        assert_eq!(d.state, State::Delivered);
        assert_ne!(d.id, 0, "a stored record has an id");
        assert_eq!(get(&ledger, &key("e1", "sms")).await, None);
        let page = ledger
            .list(&Filter::default(), 1, None)
            .await
            .expect("list");
        (d.id, page.next_cursor.expect("a second page"))
    };
    let ledger = store.open(LONG).await;
    let d = get(&ledger, &key("e1", "email")).await.expect("there");
    assert_eq!((d.id, d.state), (id, State::Delivered));
    // A page cursor outlives the restart (its key is the ledger's).
    let page = ledger
        .list(&Filter::default(), 10, Some(&cursor))
        .await
        .expect("a cursor from before the reopen");
    assert_eq!(
        page.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
        [id]
    );
    // A new record after the reopen gets a new, larger id.
    put(&ledger, record("e2", "email", State::Delivered)).await;
    let d2 = get(&ledger, &key("e2", "email")).await.expect("there");
    assert!(d2.id > id, "{} > {id}", d2.id);
    assert_eq!(ledger.stats().await.expect("stats").records, 3);
}

async fn concurrent_writes_are_batched_and_all_applied(kind: Kind) {
    let store = Store::new(kind, "concurrent");
    let ledger = store.open(LONG).await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let l = ledger.clone();
            // In-between and final states mixed: one batch may hold both.
            let state = if i % 3 == 0 {
                State::Pending
            } else {
                State::Delivered
            };
            tokio::spawn(async move { l.put(record(&format!("e{i}"), "sms", state)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("put");
    }
    assert_eq!(ledger.stats().await.expect("stats").records, 300);
    let mut ids = Vec::new();
    for i in 0..300 {
        let d = get(&ledger, &key(&format!("e{i}"), "sms"))
            .await
            .expect("every write applied");
        ids.push(d.id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "every record its own id");

    // Writes of one caller are applied in the order made, not awaited.
    let writes: Vec<_> = [State::Pending, State::Retrying, State::Delivered]
        .into_iter()
        .map(|s| ledger.put(record("ordered", "sms", s)))
        .collect();
    for w in writes {
        w.await.expect("put");
    }
    let d = get(&ledger, &key("ordered", "sms")).await.expect("there");
    assert_eq!(d.state, State::Delivered);
}

async fn events_and_appointments_find_their_deliveries(kind: Kind) {
    let store = Store::new(kind, "events");
    let ledger = store.open(LONG).await;
    for (e, c) in [
        ("e1", "email"),
        ("e1", "sms"),
        ("e10", "email"),
        ("e1\u{1f}sms", "email"),
    ] {
        put(&ledger, record(e, c, State::Delivered)).await;
    }
    let mut of_e1: Vec<String> = ledger
        .event("e1")
        .await
        .expect("event")
        .into_iter()
        .map(|d| format!("{}/{}", d.event_id, d.channel))
        .collect();
    of_e1.sort();
    assert_eq!(of_e1, ["e1/email", "e1/sms"], "no other event's record");
    let appt = ledger.appointment("appt-e1").await.expect("appointment");
    assert_eq!(appt.len(), 2);
    assert!(appt[0].id > appt[1].id, "newest first");
    assert!(appt.iter().all(|d| d.appointment_id == "appt-e1"));
    assert!(ledger.event("nope").await.expect("event").is_empty());
    assert!(ledger
        .appointment("appt-nope")
        .await
        .expect("appointment")
        .is_empty());
}

async fn open_reminders_are_found_with_their_event_and_appointment(kind: Kind) {
    let store = Store::new(kind, "event-timers");
    let ledger = store.open(LONG).await;
    put(&ledger, record("e1", "email", State::Delivered)).await;
    put(
        &ledger,
        reminder("e1", "hour-before", "appt-e1", in_minutes(90)),
    )
    .await;
    put(
        &ledger,
        reminder("e1", "day-before", "appt-e1", in_minutes(60)),
    )
    .await;
    put(
        &ledger,
        reminder("e2", "day-before", "appt-e2", in_minutes(30)),
    )
    .await;

    let mut of_e1: Vec<(String, Option<String>, State)> = ledger
        .event("e1")
        .await
        .expect("event")
        .into_iter()
        .map(|d| {
            assert_ne!(d.id, 0, "{d:?}");
            (d.channel, d.reminder, d.state)
        })
        .collect();
    of_e1.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        of_e1,
        [
            ("email".to_string(), None, State::Delivered),
            (
                "sms".to_string(),
                Some("day-before".into()),
                State::Scheduled
            ),
            (
                "sms".to_string(),
                Some("hour-before".into()),
                State::Scheduled
            ),
        ]
    );
    // The appointment: its deliveries newest first, then its open
    // reminders in due order.
    let appt: Vec<(Purpose, Option<String>)> = ledger
        .appointment("appt-e1")
        .await
        .expect("appointment")
        .into_iter()
        .map(|d| (d.purpose, d.reminder))
        .collect();
    assert_eq!(
        appt,
        [
            (Purpose::Confirmation, None),
            (Purpose::Reminder, Some("day-before".into())),
            (Purpose::Reminder, Some("hour-before".into())),
        ]
    );
    let timer = get(&ledger, &reminder_key("e1", "sms", "day-before"))
        .await
        .expect("a timer is read by its key");
    assert_eq!(timer.state, State::Scheduled);
    assert_ne!(timer.id, 0);
}

async fn pages_walk_every_record_once_while_new_ones_arrive(kind: Kind) {
    let store = Store::new(kind, "pages");
    let ledger = store.open(LONG).await;
    for i in 0..250 {
        let state = if i % 5 == 0 {
            State::DeadLettered
        } else {
            State::Delivered
        };
        put(&ledger, record(&format!("e{i}"), "email", state)).await;
    }
    let filter = Filter::default();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let page = ledger
            .list(&filter, 40, cursor.as_deref())
            .await
            .expect("list");
        seen.extend(page.deliveries.iter().map(|d| d.id));
        // New deliveries arrive between pages: never in this walk.
        for _ in 0..7 {
            put(
                &ledger,
                record(&format!("new{added}"), "email", State::Pending),
            )
            .await;
            added += 1;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted, seen, "newest first, no repeats");

    let dead = Filter {
        state: Some(State::DeadLettered),
        ..Filter::default()
    };
    let page = ledger.list(&dead, MAX_PAGE, None).await.expect("list");
    assert_eq!(page.deliveries.len(), 50);
    assert!(page.next_cursor.is_none());
    assert!(page
        .deliveries
        .iter()
        .all(|d| d.state == State::DeadLettered));
    let other_channel = Filter {
        channel: Some("sms".into()),
        ..Filter::default()
    };
    let page = ledger
        .list(&other_channel, MAX_PAGE, None)
        .await
        .expect("list");
    assert!(page.deliveries.is_empty() && page.next_cursor.is_none());
    let refused = ledger.list(&dead, 10, Some("AAAA")).await;
    assert!(
        matches!(refused, Err(ListError::BadCursor(_))),
        "{refused:?}"
    );
}

async fn held_deliveries_keep_their_event_until_they_leave_hold(kind: Kind) {
    let store = Store::new(kind, "held");
    let ledger = store.open(LONG).await;
    for i in 0..3 {
        let mut r = record(&format!("h{i}"), "sms", State::Held);
        r.held = Some(message(&format!("h{i}")));
        put(&ledger, r).await;
    }
    put(&ledger, record("other", "email", State::Delivered)).await;
    let held = ledger.held("sms", None, 100).await.expect("held");
    assert_eq!(held.len(), 3);
    assert_eq!(
        held.iter()
            .map(|r| r.held.clone().expect("its event"))
            .collect::<Vec<_>>(),
        [message("h0"), message("h1"), message("h2")],
        "oldest first, each with its event byte for byte"
    );
    let first_two = ledger.held("sms", None, 2).await.expect("held");
    assert_eq!(first_two.len(), 2);
    let rest = ledger
        .held("sms", Some(first_two[1].delivery.id), 100)
        .await
        .expect("held");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].delivery.event_id, "h2");
    // Sent: no longer held, and its event is no longer kept (even if the
    // record written says so).
    let mut sent = record("h0", "sms", State::Delivered);
    sent.held = Some(message("h0"));
    put(&ledger, sent).await;
    let held = ledger.held("sms", None, 100).await.expect("held");
    assert_eq!(
        held.iter()
            .map(|r| r.delivery.event_id.as_str())
            .collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    assert!(ledger
        .held("email", None, 100)
        .await
        .expect("held")
        .is_empty());
    // Held again (the channel went back on hold and the event came again):
    // listed again, with the event it came with.
    let mut again = record("h0", "sms", State::Held);
    again.held = Some(message("h0-again"));
    put(&ledger, again).await;
    let held = ledger.held("sms", None, 100).await.expect("held");
    assert_eq!(held.len(), 3);
    let h0 = held
        .iter()
        .find(|r| r.delivery.event_id == "h0")
        .expect("h0 held again");
    assert_eq!(h0.held, Some(message("h0-again")));
}

async fn the_retention_pass_drops_old_records_and_never_a_timer(kind: Kind) {
    let store = Store::new(kind, "retention");
    // Short: the embedded ledger cuts it in 250 ms buckets, PostgreSQL in
    // 1 s partitions (its narrowest); a record goes between the retention
    // and the retention plus a bucket after its write.
    let retention = Duration::from_secs(2);
    let ledger = store.open(retention).await;
    let written = Instant::now();
    put(&ledger, record("old", "email", State::Delivered)).await;
    // A timer due long after the retention: kept outside the buckets.
    let timer = reminder("old", "day-before", "appt-old", in_minutes(60));
    let timer_key = timer.delivery.key();
    put(&ledger, timer).await;
    let nothing = ledger.sweep().await.expect("sweep");
    assert_eq!(nothing.records_dropped, 0);
    assert!(get(&ledger, &key("old", "email")).await.is_some());

    let mut dropped = 0;
    let mut buckets = 0;
    let deadline = Instant::now() + retention + DEADLINE;
    while get(&ledger, &key("old", "email")).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the record was not dropped within {:?} of its retention",
            DEADLINE
        );
        tokio::time::sleep(POLL).await;
        let sweep = ledger.sweep().await.expect("sweep");
        dropped += sweep.records_dropped;
        buckets += sweep.buckets_dropped;
    }
    let age = written.elapsed();
    // Wall clock (the ledger's) and the monotonic one may differ by a hair.
    assert!(
        age + Duration::from_millis(100) >= retention,
        "dropped {age:?} after its write, before its retention {retention:?}"
    );
    assert_eq!(dropped, 1, "just the old record");
    assert!(buckets >= 1, "its bucket went whole");

    put(&ledger, record("new", "email", State::Delivered)).await;
    let sweep = ledger.sweep().await.expect("sweep");
    assert_eq!(
        sweep.records_dropped, 0,
        "a record younger than the retention stays"
    );
    assert!(get(&ledger, &key("new", "email")).await.is_some());
    let stats = ledger.stats().await.expect("stats");
    assert_eq!((stats.records, stats.timers), (1, 1));
    let kept = get(&ledger, &timer_key).await.expect("the timer is kept");
    assert_eq!(kept.state, State::Scheduled);
    assert_eq!(ledger.timer_count().await.expect("timer count"), 1);
}

async fn timers_come_in_due_order_and_one_that_ends_joins_the_newest_records(kind: Kind) {
    let store = Store::new(kind, "timers");
    let ledger = store.open(LONG).await;
    let base = in_minutes(60);
    let at = |s: i64| base + chrono::Duration::seconds(s);
    // Written out of due order; two due at once (then ordered by key).
    let timers = [
        reminder("e3", "hour-before", "appt-1", at(30)),
        reminder("e1", "day-before", "appt-1", at(10)),
        reminder("e2", "day-before", "appt-2", at(20)),
        reminder("e4", "day-before", "appt-2", at(20)),
        reminder("e5", "day-before", "appt-3", at(5)),
    ];
    for t in &timers {
        put(&ledger, t.clone()).await;
    }
    // Not a timer: a confirmation, and a reminder that already ended.
    put(&ledger, record("e1", "sms", State::Delivered)).await;
    let mut sent = reminder("e9", "day-before", "appt-1", at(1));
    sent.delivery.state = State::Delivered;
    sent.held = None;
    put(&ledger, sent).await;

    let want = ["e5", "e1", "e2", "e4", "e3"];
    let all = ledger.timers(None, 100).await.expect("timers");
    assert_eq!(
        all.iter()
            .map(|(_, r)| r.delivery.event_id.as_str())
            .collect::<Vec<_>>(),
        want
    );
    for ((due, k), r) in &all {
        assert_eq!(*k, r.delivery.key().encode(), "the position holds the key");
        assert_eq!(
            *due,
            r.delivery.due_at.expect("due").timestamp_millis() as u64
        );
        assert_ne!(r.delivery.id, 0, "a timer has its id");
        assert_eq!(
            r.held,
            Some(message(&r.delivery.event_id)),
            "with its event"
        );
    }
    // Walked two at a time with the `after` cursor: the same order.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let batch = ledger.timers(after.as_ref(), 2).await.expect("timers");
        assert!(batch.len() <= 2);
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        walked.extend(batch.into_iter().map(|(_, r)| r.delivery.event_id));
    }
    assert_eq!(walked, want);
    assert_eq!(ledger.timer_count().await.expect("timer count"), 5);
    assert_eq!(ledger.stats().await.expect("stats").timers, 5);

    let mut of_appt_1: Vec<String> = ledger
        .appointment_timers("appt-1")
        .await
        .expect("appointment timers")
        .into_iter()
        .map(|r| r.delivery.event_id)
        .collect();
    of_appt_1.sort();
    assert_eq!(of_appt_1, ["e1", "e3"], "the ended one is no timer");
    assert!(ledger
        .appointment_timers("appt-none")
        .await
        .expect("appointment timers")
        .is_empty());

    // Moved (a reschedule): same id, new place in the order.
    let e5_key = reminder_key("e5", "sms", "day-before");
    let id = get(&ledger, &e5_key).await.expect("the timer").id;
    put(&ledger, reminder("e5", "day-before", "appt-3", at(25))).await;
    let order: Vec<String> = ledger
        .timers(None, 100)
        .await
        .expect("timers")
        .into_iter()
        .map(|(_, r)| {
            if r.delivery.event_id == "e5" {
                assert_eq!(r.delivery.id, id, "a moved timer keeps its id");
            }
            r.delivery.event_id
        })
        .collect();
    assert_eq!(order, ["e1", "e2", "e4", "e5", "e3"]);

    // Being sent is still a timer; sent, it ends: out of the timers, on
    // record (under a new id, below).
    let mut sending = reminder("e5", "day-before", "appt-3", at(25));
    sending.delivery.state = State::Pending;
    // Written as the pipeline notes an in-between state: without the event.
    // The timer keeps it, so a host that fires it again after a crash
    // mid-send still has what to render.
    put(
        &ledger,
        Record {
            delivery: sending.delivery.clone(),
            held: None,
        },
    )
    .await;
    assert_eq!(ledger.timer_count().await.expect("timer count"), 5);
    let kept = ledger.timers(None, 100).await.expect("timers");
    let (_, e5) = kept
        .iter()
        .find(|(_, r)| r.delivery.event_id == "e5")
        .expect("e5 is still a timer");
    assert_eq!(e5.delivery.state, State::Pending);
    assert_eq!(e5.held, Some(message("e5")), "the timer kept its event");
    let of_appt_3 = ledger
        .appointment_timers("appt-3")
        .await
        .expect("appointment timers");
    assert_eq!(of_appt_3[0].held, Some(message("e5")));
    sending.delivery.state = State::Delivered;
    put(&ledger, sending).await;
    assert_eq!(ledger.timer_count().await.expect("timer count"), 4);
    assert!(ledger
        .timers(None, 100)
        .await
        .expect("timers")
        .iter()
        .all(|(_, r)| r.delivery.event_id != "e5"));
    // On record under a new, larger id: it joined the newest bucket, and
    // ids keep the buckets' order (paging relies on it).
    let ended = get(&ledger, &e5_key).await.expect("on record");
    assert_eq!(ended.state, State::Delivered);
    assert!(
        ended.id > id,
        "an ended timer joins the newest records: {} > {id}",
        ended.id
    );
    assert!(ledger
        .appointment("appt-3")
        .await
        .expect("appointment")
        .iter()
        .any(|d| d.id == ended.id && d.state == State::Delivered));
}

fn appointment(id: &str, time: DateTime<Utc>, updated_at: DateTime<Utc>) -> AppointmentState {
    AppointmentState {
        appointment_id: id.to_string(),
        status: AppointmentStatus::Active,
        time: Some(time),
        time_zone: Some("Europe/Berlin".into()),
        last_event_id: format!("{id}-created"),
        channels: vec!["email".into(), "sms".into()],
        reminders: true,
        updated_at,
        event: Some(message(&format!("{id}-created"))),
    }
}

async fn appointment_states_are_kept_until_the_retention_after_the_appointment(kind: Kind) {
    let store = Store::new(kind, "appointments");
    let retention = Duration::from_secs(3600);
    let ledger = store.open(retention).await;
    assert_eq!(ledger.appointment_state("a1").await.expect("state"), None);
    let now = Utc::now();
    let first = appointment("a1", now + chrono::Duration::days(1), now);
    ledger
        .put_appointment(first.clone())
        .await
        .expect("put appointment");
    assert_eq!(
        ledger.appointment_state("a1").await.expect("state"),
        Some(first)
    );
    let cancelled = AppointmentState {
        status: AppointmentStatus::Cancelled,
        last_event_id: "a1-cancelled".into(),
        ..appointment("a1", now + chrono::Duration::days(2), Utc::now())
    };
    ledger
        .put_appointment(cancelled.clone())
        .await
        .expect("put appointment");
    assert_eq!(
        ledger.appointment_state("a1").await.expect("state"),
        Some(cancelled),
        "replaced"
    );

    // Past by more than the retention (its time, and its last change).
    let long_ago = now - chrono::Duration::hours(3);
    ledger
        .put_appointment(appointment("past", long_ago, long_ago))
        .await
        .expect("put appointment");
    // Its time is past the retention, but it changed since: kept.
    ledger
        .put_appointment(appointment("changed", long_ago, now))
        .await
        .expect("put appointment");
    let sweep = ledger.sweep().await.expect("sweep");
    assert_eq!(sweep.appointments_dropped, 1);
    assert_eq!(ledger.appointment_state("past").await.expect("state"), None);
    assert!(ledger
        .appointment_state("changed")
        .await
        .expect("state")
        .is_some());
    assert!(ledger
        .appointment_state("a1")
        .await
        .expect("state")
        .is_some());
}

// ---------------------------------------------------------------------------
// The embedded ledger: one host's.

async fn a_ledger_no_other_host_shares_grants_every_claim() {
    let store = Store::new(Kind::Embedded, "claims");
    let ledger = store.open(LONG).await;
    let k = key("e1", "sms");
    assert_eq!(ledger.claim(&k).await.expect("claim"), Claim::Granted);
    assert_eq!(ledger.claim(&k).await.expect("claim"), Claim::Granted);
    ledger.release(&k).await.expect("release");
    assert_eq!(ledger.claim(&k).await.expect("claim"), Claim::Granted);
    assert!(ledger.claims_held());
    assert!(!ledger.info().shared);
    assert_eq!(ledger.info().kind, "embedded");
    assert_eq!(ledger.release_all().await.expect("release all"), 0);
}

// ---------------------------------------------------------------------------
// The PostgreSQL ledger: shared by hosts, worked by claims.

/// `ledger`'s claim of `key` is held by `owner`; until when, as of now.
async fn busy_with(ledger: &Ledger, key: &DeliveryKey, owner: &str) -> DateTime<Utc> {
    let asked = Utc::now();
    match ledger.claim(key).await.expect("claim") {
        Claim::Busy {
            owner: holder,
            until,
        } => {
            assert_eq!(holder, owner);
            // The database's clock is this machine's.
            assert!(
                until >= asked,
                "a live claim's lease ran out at {until}, before {asked}"
            );
            until
        }
        Claim::Granted => panic!("{key:?} granted, but {owner} holds it"),
    }
}

async fn a_claim_is_one_hosts_until_its_final_record_or_its_release() {
    let store = Store::new(Kind::Postgres, "claims");
    let a = store.open_as("host-a", LONG, LEASE).await;
    let b = store.open_as("host-b", LONG, LEASE).await;
    assert!(a.info().shared && b.info().shared);
    assert_eq!(a.info().kind, "postgres");
    assert!(
        !a.info().location.contains(PG_PASSWORD),
        "{}",
        a.info().location
    );
    let k = key("e1", "sms");

    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
    assert_eq!(
        a.claim(&k).await.expect("claim"),
        Claim::Granted,
        "idempotent for its holder"
    );
    busy_with(&b, &k, "host-a").await;
    // An in-between state keeps the claim; another host's final record of
    // the key does not give up A's.
    put(&a, record("e1", "sms", State::Pending)).await;
    busy_with(&b, &k, "host-a").await;
    put(&b, record("e1", "sms", State::Expired)).await;
    busy_with(&b, &k, "host-a").await;
    // Both see the one record.
    assert_eq!(get(&a, &k).await.expect("shared").state, State::Expired);

    // A's final record gives its claim up, in the same write.
    put(&a, record("e1", "sms", State::Delivered)).await;
    assert_eq!(b.claim(&k).await.expect("claim"), Claim::Granted);
    busy_with(&a, &k, "host-b").await;

    // A release gives it up without a record.
    b.release(&k).await.expect("release");
    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
    busy_with(&b, &k, "host-a").await;
    // Releasing what another host holds changes nothing.
    b.release(&k).await.expect("release");
    busy_with(&b, &k, "host-a").await;

    // Claims are per key.
    let other = key("e1", "email");
    assert_eq!(b.claim(&other).await.expect("claim"), Claim::Granted);

    // At shutdown every claim goes at once.
    let k2 = key("e2", "sms");
    assert_eq!(a.claim(&k2).await.expect("claim"), Claim::Granted);
    assert_eq!(a.release_all().await.expect("release all"), 2);
    assert_eq!(b.claim(&k).await.expect("claim"), Claim::Granted);
    assert_eq!(b.claim(&k2).await.expect("claim"), Claim::Granted);
    assert!(a.claims_held() && b.claims_held());
}

async fn hosts_claiming_at_once_get_each_key_one_of_them() {
    let store = Store::new(Kind::Postgres, "claim-race");
    let a = store.open_as("host-a", LONG, LEASE).await;
    let b = store.open_as("host-b", LONG, LEASE).await;
    let races: Vec<_> = (0..100)
        .map(|i| {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let k = key(&format!("e{i}"), "sms");
                let (by_a, by_b) = tokio::join!(a.claim(&k), b.claim(&k));
                (k, by_a.expect("claim"), by_b.expect("claim"))
            })
        })
        .collect();
    for race in races {
        let (k, by_a, by_b) = race.await.expect("join");
        match (&by_a, &by_b) {
            (Claim::Granted, Claim::Busy { owner, .. }) if owner == "host-a" => {}
            (Claim::Busy { owner, .. }, Claim::Granted) if owner == "host-b" => {}
            _ => panic!("{k:?}: host-a {by_a:?}, host-b {by_b:?}"),
        }
    }
    // Each winner keeps its keys.
    for i in 0..100 {
        let k = key(&format!("e{i}"), "sms");
        let (by_a, by_b) = (
            a.claim(&k).await.expect("claim"),
            b.claim(&k).await.expect("claim"),
        );
        assert!(
            (by_a == Claim::Granted) != (by_b == Claim::Granted),
            "{k:?}: host-a {by_a:?}, host-b {by_b:?}"
        );
    }
}

async fn the_claim_of_a_host_that_stopped_renewing_is_taken_over_after_its_lease() {
    let store = Store::new(Kind::Postgres, "takeover");
    let lease = Duration::from_secs(3);
    let a = store.open_as("host-a", LONG, lease).await;
    let b = store.open_as("host-b", LONG, lease).await;
    let k = key("e1", "sms");
    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
    busy_with(&b, &k, "host-a").await;
    // A renews its lease while it lives: B keeps waiting past a lease.
    let alive = Instant::now();
    while alive.elapsed() < lease + Duration::from_secs(1) {
        busy_with(&b, &k, "host-a").await;
        tokio::time::sleep(POLL * 4).await;
    }

    // A dies (its heartbeat stops with it).
    let until = busy_with(&b, &k, "host-a").await;
    drop(a);
    let deadline = Instant::now() + lease + DEADLINE;
    loop {
        match b.claim(&k).await.expect("claim") {
            Claim::Granted => break,
            Claim::Busy { owner, .. } => {
                assert_eq!(owner, "host-a");
                assert!(
                    Instant::now() < deadline,
                    "host-b did not take the claim over within {DEADLINE:?} of the lease"
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
    // Not before the lease of A's last renewal ran out.
    let taken = Utc::now();
    assert!(
        taken >= until,
        "taken over at {taken}, before the lease ran out at {until}"
    );
    // A restarted A (same name) finds it taken.
    let a = store.open_as("host-a", LONG, lease).await;
    busy_with(&a, &k, "host-b").await;
}

async fn the_ledger_answers_again_once_the_database_is_back_and_claims_stay_put() {
    let server = PgServer::start();
    let mut store = Store::postgres_at(server.create_database("restart"));
    // Waits for a connection this long while the database is away.
    store.connect_timeout = Duration::from_secs(2);
    let a = store.open_as("host-a", LONG, LEASE).await;
    put(&a, record("before", "sms", State::Delivered)).await;
    let k = key("held-over", "sms");
    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
    assert!(a.claims_held());

    server.stop();
    match a.put(record("during", "sms", State::Delivered)).await {
        Err(LedgerError::Unavailable(_)) => {}
        other => panic!("a write while the database is away: {other:?}"),
    }
    assert!(
        a.get(&k).await.is_err(),
        "a read while the database is away"
    );
    // Its lease is not renewed: it stops counting on its claims.
    let deadline = Instant::now() + DEADLINE;
    while a.claims_held() {
        assert!(
            Instant::now() < deadline,
            "claims_held() stayed true with the database away"
        );
        tokio::time::sleep(POLL).await;
    }

    server.start_again();
    // Broken connections may fail a statement once each: written again
    // until it is on record, as the pipeline does.
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = a.put(record("after", "sms", State::Delivered)).await {
        assert!(
            Instant::now() < deadline,
            "the ledger did not answer again after the restart: {e}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        get(&a, &key("before", "sms")).await.map(|d| d.state),
        Some(State::Delivered),
        "a final record survives the restart"
    );
    assert!(get(&a, &key("after", "sms")).await.is_some());
    while !a.claims_held() {
        assert!(
            Instant::now() < deadline,
            "claims_held() never came back after the restart"
        );
        tokio::time::sleep(POLL).await;
    }
    // The restart handed nothing over: A's claim is still A's.
    let b = store.open_as("host-b", LONG, LEASE).await;
    busy_with(&b, &k, "host-a").await;
    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
}

async fn a_timer_another_host_claimed_is_left_out_of_the_timers() {
    let store = Store::new(Kind::Postgres, "timer-claims");
    let a = store.open_as("host-a", LONG, LEASE).await;
    let b = store.open_as("host-b", LONG, LEASE).await;
    let first = reminder("e1", "day-before", "appt-1", in_minutes(1));
    let second = reminder("e2", "day-before", "appt-2", in_minutes(2));
    put(&a, first.clone()).await;
    put(&a, second.clone()).await;
    let events = |timers: Vec<(TimerPos, Record)>| -> Vec<String> {
        timers
            .into_iter()
            .map(|(_, r)| r.delivery.event_id)
            .collect()
    };
    assert_eq!(
        events(b.timers(None, 10).await.expect("timers")),
        ["e1", "e2"]
    );

    let k = first.delivery.key();
    assert_eq!(a.claim(&k).await.expect("claim"), Claim::Granted);
    assert_eq!(
        events(b.timers(None, 10).await.expect("timers")),
        ["e2"],
        "A fires it"
    );
    assert_eq!(
        events(a.timers(None, 10).await.expect("timers")),
        ["e1", "e2"],
        "its holder still sees it"
    );
    // Still a timer for every count.
    assert_eq!(b.timer_count().await.expect("timer count"), 2);
    assert_eq!(
        b.appointment_timers("appt-1")
            .await
            .expect("appointment timers")
            .len(),
        1
    );

    a.release(&k).await.expect("release");
    assert_eq!(
        events(b.timers(None, 10).await.expect("timers")),
        ["e1", "e2"]
    );
}

/// The schema moves forward from an empty database and from the previous
/// version (data kept), and a host starts against a newer schema than it
/// knows (a rolling deploy where a newer host migrated first).
async fn migrations_go_forward_from_empty_and_from_the_previous_version() {
    use sqlx::Row as _;
    let versions = |url: String| async move {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("migrations table");
        rows.iter()
            .map(|r| r.get::<i64, _>(0))
            .collect::<Vec<i64>>()
    };
    let all: Vec<i64> = migrator().iter().map(|m| m.version).collect();
    assert!(all.len() >= 2, "at least two versions: {all:?}");

    // From empty.
    let empty = Store::new(Kind::Postgres, "migrate-empty");
    drop(empty.open(LONG).await);
    assert_eq!(versions(empty.url.clone()).await, all);

    // From the previous version, with a reminder on record in it.
    let previous = Store::new(Kind::Postgres, "migrate-previous");
    {
        let pool = sqlx::PgPool::connect(&previous.url).await.expect("connect");
        let mut older = migrator();
        older.migrations = older.migrations[..all.len() - 1].to_vec().into();
        older.run(&pool).await.expect("apply all but the newest");
        sqlx::query(
            "INSERT INTO notify_timers (key, id, due_ms, event_id, appointment_id, record) \
             VALUES ($1, 77, $2, 'e-old', 'appt-old', $3)",
        )
        .bind(reminder_key("e-old", "sms", "day-before").encode())
        .bind(in_minutes(60).timestamp_millis())
        .bind(
            serde_json::to_string(&reminder("e-old", "day-before", "appt-old", in_minutes(60)))
                .expect("json"),
        )
        .execute(&pool)
        .await
        .expect("a timer written by the previous version");
    }
    let ledger = previous.open(LONG).await;
    assert_eq!(versions(previous.url.clone()).await, all);
    let kept = get(&ledger, &reminder_key("e-old", "sms", "day-before"))
        .await
        .expect("the previous version's timer");
    assert_eq!((kept.id, kept.state), (77, State::Scheduled));
    assert_eq!(
        ledger.claim(&key("e-new", "sms")).await.expect("claim"),
        Claim::Granted,
        "the newest version's tables work"
    );
    drop(ledger);

    // A newer schema than this host knows.
    {
        let pool = sqlx::PgPool::connect(&previous.url).await.expect("connect");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer host', true, '\\x00'::bytea, 0)",
        )
        .execute(&pool)
        .await
        .expect("record a newer migration");
    }
    let ledger = previous.open(LONG).await;
    assert!(get(&ledger, &reminder_key("e-old", "sms", "day-before"))
        .await
        .is_some());
}

/// Each case as a test per backend: `ledger_suite::embedded::CASE` and
/// `ledger_suite::postgres::CASE`; then the cases of one backend.
macro_rules! suite {
    (
        both: [$($case:ident),* $(,)?],
        embedded: [$($embedded:ident),* $(,)?],
        postgres: [$($postgres:ident),* $(,)?] $(,)?
    ) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Embedded).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $embedded() {
                    super::$embedded().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Postgres).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $postgres() {
                    super::$postgres().await;
                }
            )*
        }
    };
}

suite! {
    both: [
        records_survive_reopening_and_keep_their_id,
        concurrent_writes_are_batched_and_all_applied,
        events_and_appointments_find_their_deliveries,
        open_reminders_are_found_with_their_event_and_appointment,
        pages_walk_every_record_once_while_new_ones_arrive,
        held_deliveries_keep_their_event_until_they_leave_hold,
        the_retention_pass_drops_old_records_and_never_a_timer,
        timers_come_in_due_order_and_one_that_ends_joins_the_newest_records,
        appointment_states_are_kept_until_the_retention_after_the_appointment,
    ],
    embedded: [a_ledger_no_other_host_shares_grants_every_claim],
    postgres: [
        a_claim_is_one_hosts_until_its_final_record_or_its_release,
        hosts_claiming_at_once_get_each_key_one_of_them,
        the_claim_of_a_host_that_stopped_renewing_is_taken_over_after_its_lease,
        the_ledger_answers_again_once_the_database_is_back_and_claims_stay_put,
        a_timer_another_host_claimed_is_left_out_of_the_timers,
        migrations_go_forward_from_empty_and_from_the_previous_version,
    ],
}
