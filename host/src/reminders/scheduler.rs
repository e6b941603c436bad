//! The reminder scheduler: fires open timers of the ledger when they are due.
//!
//! Invariants:
//! - A timer is handed to `fire` only when due, and only once at a time in
//!   this process (the keys being fired are remembered until `fire` ends;
//!   `fire` ends only once the timer's outcome is on record, which takes it
//!   out of the open timers).
//! - What was due while the host was down is fired at start (the first pass
//!   starts from the earliest open timer): the boot scan. Whether it is
//!   still worth sending is `fire`'s decision (its useful-until).
//! - At most `max_in_flight` fires run at once; a timer waits its turn in
//!   due order.
//! - The loop wakes at the earliest due time, at the latest every
//!   [`MAX_IDLE`], and at once when a new timer is scheduled ([`Scheduler::wake`]).
//!
//! Time is read from a clock given at start, so tests drive it with
//! `tokio::time::pause()`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, Record, TimerPos};

/// The longest the loop sleeps: its tick, which readiness watches.
pub const MAX_IDLE: Duration = Duration::from_secs(1);
/// Timers read per pass.
const BATCH: usize = 256;

/// A wall clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// What the scheduler shows readiness and metrics.
#[derive(Debug, Default)]
pub struct Status {
    /// Wall-clock ms of the loop's last pass (0: not started).
    last_tick_ms: AtomicI64,
    /// Seconds since the earliest open timer was due (0 when none is due).
    overdue_s: AtomicU64,
    in_flight: AtomicUsize,
}

impl Status {
    /// (ms since the last pass at `now`, if it ran; overdue s; in flight).
    pub fn read(&self, now: DateTime<Utc>) -> (Option<i64>, u64, usize) {
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        (
            (last != 0).then(|| now.timestamp_millis() - last),
            self.overdue_s.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        )
    }
}

/// Handle to a running scheduler.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    wake: Arc<Notify>,
    pub status: Arc<Status>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// A timer was scheduled (maybe earlier than the loop's next wake).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown`: each due timer goes to `fire`, which resolves
    /// once its outcome is on record. Returns after the fires in flight end
    /// (they see `shutdown` too and stop before their next send).
    pub async fn run<F, Fut>(
        &self,
        ledger: Ledger,
        max_in_flight: usize,
        clock: Clock,
        fire: F,
        shutdown: CancellationToken,
    ) where
        F: Fn(Record) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_in_flight = max_in_flight.max(1);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut in_flight: HashSet<String> = HashSet::new();
        // Where the last pass stopped: everything before it is being fired.
        let mut cursor: Option<TimerPos> = None;
        let mut tasks = tokio::task::JoinSet::new();
        let mut read_failures = 0u32;
        loop {
            while let Ok(key) = done_rx.try_recv() {
                in_flight.remove(&key);
            }
            if in_flight.is_empty() {
                cursor = None;
            }
            let now = clock();
            let now_ms = now.timestamp_millis().max(0) as u64;
            self.status
                .last_tick_ms
                .store(now.timestamp_millis(), Ordering::Relaxed);
            let mut next_due: Option<u64> = None;
            let mut read_error = false;
            'take: while in_flight.len() < max_in_flight {
                let batch = match ledger.timers(cursor.as_ref(), BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        read_failures += 1;
                        if read_failures == 1 || read_failures.is_multiple_of(60) {
                            tracing::error!(error = %e, "cannot read the reminder timers; retrying every second");
                        }
                        read_error = true;
                        break;
                    }
                };
                read_failures = 0;
                let full = batch.len() == BATCH;
                for (pos, record) in batch {
                    if pos.0 > now_ms {
                        next_due = Some(pos.0);
                        break 'take;
                    }
                    let key = pos.1.clone();
                    cursor = Some(pos);
                    if !in_flight.insert(key.clone()) {
                        continue;
                    }
                    let work = fire(record);
                    let done = done_tx.clone();
                    tasks.spawn(async move {
                        work.await;
                        let _ = done.send(key);
                    });
                    if in_flight.len() >= max_in_flight {
                        break 'take;
                    }
                }
                if !full {
                    break;
                }
            }
            self.status
                .in_flight
                .store(in_flight.len(), Ordering::Relaxed);
            // The earliest open timer (fired or not) tells how late the
            // scheduler runs.
            let overdue = match ledger.timers(None, 1).await {
                Ok(head) => head
                    .first()
                    .map_or(0, |((due, _), _)| now_ms.saturating_sub(*due) / 1000),
                Err(_) => 0,
            };
            self.status.overdue_s.store(overdue, Ordering::Relaxed);

            let sleep = if read_error {
                MAX_IDLE
            } else {
                match next_due {
                    Some(due) => Duration::from_millis(due - now_ms).min(MAX_IDLE),
                    None => MAX_IDLE,
                }
            };
            let full = in_flight.len() >= max_in_flight;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(key) = done_rx.recv() => {
                    in_flight.remove(&key);
                }
                _ = self.wake.notified() => {
                    // A new timer may sort before the cursor.
                    cursor = None;
                }
                _ = tokio::time::sleep(sleep), if !full => {}
                _ = tokio::time::sleep(MAX_IDLE), if full => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::embedded::Embedded;
    use crate::ledger::{Delivery, DeliveryKey, Purpose, Recipient, State};
    use std::sync::Mutex;

    /// A clock that follows tokio's (paused) time from `base`.
    fn paused_clock(base: DateTime<Utc>) -> Clock {
        let start = tokio::time::Instant::now();
        Arc::new(move || base + chrono::TimeDelta::from_std(start.elapsed()).unwrap_or_default())
    }

    fn timer(name: &str, due: DateTime<Utc>) -> Record {
        let mut key = DeliveryKey::new("e1", "sms", Purpose::Reminder);
        key.reminder = Some(name.to_string());
        let mut d = Delivery::new(&key, "a1", Recipient::default());
        d.state = State::Scheduled;
        d.due_at = Some(due);
        Record {
            delivery: d,
            held: None,
        }
    }

    fn base() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    type Fired = Arc<Mutex<Vec<(String, i64)>>>;

    /// A fire that records (reminder, ms after base) and ends the timer
    /// (`delivered`), as the real one does once the outcome is on record.
    fn recorder(
        ledger: Ledger,
        fired: Fired,
        clock: Clock,
        hold: Duration,
    ) -> impl Fn(Record) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        move |mut r: Record| {
            let ledger = ledger.clone();
            let fired = fired.clone();
            let clock = clock.clone();
            Box::pin(async move {
                let at = (clock() - base()).num_milliseconds();
                if let Ok(mut f) = fired.lock() {
                    f.push((r.delivery.reminder.clone().unwrap_or_default(), at));
                }
                tokio::time::sleep(hold).await;
                r.delivery.state = State::Delivered;
                // Blocking on the writer thread: awaiting it would leave the
                // paused runtime idle, and its clock would run ahead.
                let _ = futures_executor::block_on(ledger.put(r));
            })
        }
    }

    async fn ledger_with(dir: &std::path::Path, timers: &[Record]) -> Ledger {
        let ledger = Ledger::new(Arc::new(
            Embedded::open(&dir.join("l.redb"), Duration::from_secs(3600), 1 << 20).expect("open"),
        ));
        for t in timers {
            ledger.put(t.clone()).await.expect("put");
        }
        ledger
    }

    #[tokio::test]
    async fn due_timers_fire_at_their_time_in_due_order_and_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = base();
        let secs = |s: i64| b + chrono::TimeDelta::seconds(s);
        // Written in real time, before the clock is paused.
        let ledger = ledger_with(
            dir.path(),
            &[
                timer("late", secs(30)),
                timer("soon", secs(5)),
                // Due before the start: the boot scan fires it at once.
                timer("missed", secs(-600)),
            ],
        )
        .await;
        tokio::time::pause();
        let clock = paused_clock(b);
        let fired: Fired = Arc::default();
        let scheduler = Scheduler::new();
        let shutdown = CancellationToken::new();
        let run = {
            let s = scheduler.clone();
            let fire = recorder(ledger.clone(), fired.clone(), clock.clone(), Duration::ZERO);
            let (l, c, stop) = (ledger.clone(), clock.clone(), shutdown.clone());
            tokio::spawn(async move { s.run(l, 8, c, fire, stop).await })
        };
        tokio::time::sleep(Duration::from_secs(40)).await;
        shutdown.cancel();
        run.await.expect("scheduler");
        let fired = fired.lock().expect("lock").clone();
        let names: Vec<&str> = fired.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["missed", "soon", "late"], "each once, in due order");
        // Within one tick of the due time (paused time: the sleep ends
        // exactly at the due ms; the writer thread may add real moments).
        for (name, want_ms) in [("missed", 0), ("soon", 5_000), ("late", 30_000)] {
            let at = fired.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
            let at = at.unwrap_or(-1);
            assert!(
                at >= want_ms && at < want_ms + MAX_IDLE.as_millis() as i64,
                "{name} fired at {at} ms, due at {want_ms} ms"
            );
        }
        assert_eq!(ledger.timer_count().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn a_timer_scheduled_while_the_loop_sleeps_wakes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = base();
        let ledger = ledger_with(dir.path(), &[]).await;
        let fired: Fired = Arc::default();
        let scheduler = Scheduler::new();
        let shutdown = CancellationToken::new();
        let clock = system_clock();
        let run = {
            let s = scheduler.clone();
            let fire = recorder(ledger.clone(), fired.clone(), clock.clone(), Duration::ZERO);
            let (l, c, stop) = (ledger.clone(), clock.clone(), shutdown.clone());
            tokio::spawn(async move { s.run(l, 8, c, fire, stop).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Due now: written, then the loop is woken rather than waiting a tick.
        ledger.put(timer("now", Utc::now())).await.expect("put");
        let woken = tokio::time::Instant::now();
        scheduler.wake();
        while fired.lock().expect("lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(woken.elapsed() < Duration::from_secs(5), "never fired");
        }
        assert!(
            woken.elapsed() < MAX_IDLE,
            "fired {:?} after the wake, not at the next tick",
            woken.elapsed()
        );
        shutdown.cancel();
        run.await.expect("scheduler");
        let _ = b;
    }

    #[tokio::test]
    async fn no_more_than_max_in_flight_fire_at_once_and_the_rest_wait_their_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = base();
        let timers: Vec<Record> = (0..10)
            .map(|i| timer(&format!("r{i:02}"), b + chrono::TimeDelta::milliseconds(i)))
            .collect();
        let ledger = ledger_with(dir.path(), &timers).await;
        tokio::time::pause();
        let clock = paused_clock(b + chrono::TimeDelta::seconds(1));
        let fired: Fired = Arc::default();
        let scheduler = Scheduler::new();
        let shutdown = CancellationToken::new();
        let run = {
            let s = scheduler.clone();
            // Each fire takes 10 s of (paused) time.
            let fire = recorder(
                ledger.clone(),
                fired.clone(),
                clock.clone(),
                Duration::from_secs(10),
            );
            let (l, c, stop) = (ledger.clone(), clock.clone(), shutdown.clone());
            tokio::spawn(async move { s.run(l, 4, c, fire, stop).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(fired.lock().expect("lock").len(), 4, "4 at once");
        assert_eq!(scheduler.status.read(clock()).2, 4);
        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
        run.await.expect("scheduler");
        let names: Vec<String> = fired
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("r{i:02}")).collect();
        assert_eq!(names, want, "every timer once, in due order");
    }
}
