//! The pipeline: Kafka messages in, channel deliveries out, offsets committed
//! behind them.
//!
//! Invariants:
//! - An offset is committed only when every lower offset of its partition is
//!   done: every requested channel delivered, skipped or dead-lettered (with
//!   the dead letter acknowledged), and every delivery recorded durably in the
//!   dedup store.
//! - Events with the same key (the appointment id) are worked one at a time in
//!   offset order; other events run concurrently, up to
//!   `pipeline.max_in_flight` (and `max_in_flight_per_partition` for each
//!   partition). At a limit the pipeline stops taking
//!   messages, so librdkafka's bounded prefetch queue fills and its fetching
//!   stops; if no message could be taken for [`PAUSE_AFTER`], the partitions are paused
//!   so the consumer can keep polling (and stay in its group) while it waits.
//! - Work is never admitted beyond those limits: a message that arrives
//!   when admitting it would pass one (a straggler, or a newly assigned
//!   partition) is not begun; its partition is paused and sought back to
//!   it, so it is fetched again once there is room. Nothing is lost, and the
//!   commit point cannot pass it.
//! - Rebalances are events the loop reacts to: every newly assigned
//!   partition gets the wanted pause state explicitly (librdkafka keeps a
//!   partition's pause across assignments, and knows nothing of the
//!   limits), and a revoked partition's pause and full flags are forgotten.
//!   Work of a revoked partition sends nothing after the revocation: its
//!   token is cancelled in the rebalance callback, before the
//!   commit-on-revoke.
//! - A retrying event holds back only its own key and the commit point of its
//!   partition, never the work on other events.
//! - Every admitted event ends in a `Done`: a panic while working it (a host
//!   bug) is caught, the event is dead-lettered as `host_failed` with the
//!   panic message and counted, and its key and partition go on.
//! - On shutdown, fetching stops, in-flight work gets `shutdown_grace` to
//!   finish, what is done is committed, and the rest is left for redelivery.

mod deadline;
mod keyed;
mod lifecycle;
mod worker;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use lifecycle::fire;
pub use worker::{decide, ChannelOutcome, Decision, Facts, Shared};

use crate::kafka::{self, HostConsumer, Rebalanced, Tracker};
use crate::offsets::Partition;
use keyed::KeyedQueue;

/// How long the pipeline may stop taking messages before it pauses fetching.
///
/// Pausing discards what librdkafka prefetched, and resuming refetches it (a
/// broker round trip, and on some brokers a full `fetch.wait.max.ms`), so
/// pausing every time the limit is touched caps throughput at one window per
/// round trip; measured with tansu: 1,024 events per ~500 ms. Not polling is
/// free for short stalls, but a consumer that stops polling serves no
/// rebalance and is eventually dropped from its group, so a long stall pauses.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// One event admitted to the pipeline.
struct Job {
    msg: Arc<OwnedMessage>,
    partition: Partition,
    ticket: u64,
    key: Option<String>,
    /// Cancelled when the partition is revoked: the event's work stops
    /// before its next send (the partition's next owner redelivers it).
    revoked: CancellationToken,
}

struct Done {
    partition: Partition,
    offset: i64,
    ticket: u64,
    key: Option<String>,
}

/// The ordering key: the appointment id, when the payload has one.
fn ordering_key(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        appointment: Option<Appt>,
    }
    #[derive(Deserialize)]
    struct Appt {
        appointment_id: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    match probe.appointment?.appointment_id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Runs until `shutdown` resolves, then drains and commits.
pub async fn run(
    shared: Arc<Shared>,
    consumer: Arc<HostConsumer>,
    tracker: Tracker,
    shutdown: impl Future<Output = ()>,
) {
    let pipeline = shared.config.pipeline;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut keyed: KeyedQueue<Job> = KeyedQueue::default();
    let mut in_flight = 0usize;
    let mut paused = Pauses::default();
    let mut commits = interval(pipeline.commit_interval);
    commits.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_error: Option<(String, Instant)> = None;

    let start = |job: Job, tasks: &mut tokio::task::JoinSet<()>| {
        let shared = shared.clone();
        let done_tx = done_tx.clone();
        tasks.spawn(async move {
            let work = worker::process(shared.clone(), job.msg.clone(), job.revoked.clone());
            if let Err(panic) = supervised(work).await {
                worker::host_failed(&shared, &job.msg, &panic, &job.revoked).await;
            }
            let _ = done_tx.send(Done {
                partition: job.partition,
                offset: job.msg.offset(),
                ticket: job.ticket,
                key: job.key,
            });
        });
    };

    // Partitions at their own in-flight limit.
    let mut full_partitions: HashSet<Partition> = HashSet::new();
    // Since when a limit (global or a partition's) has held without a
    // message taken, and whether that has lasted long enough to pause.
    let mut blocked_since: Option<Instant> = None;
    let mut escalated = false;
    let rebalances = consumer.context().rebalances();
    let limits = Limits {
        global: pipeline.max_in_flight,
        per_partition: pipeline.max_in_flight_per_partition,
    };
    tokio::pin!(shutdown);
    loop {
        let global_full = in_flight >= limits.global;
        let blocked = global_full || !full_partitions.is_empty();
        if blocked {
            blocked_since.get_or_insert_with(Instant::now);
        } else {
            blocked_since = None;
            escalated = false;
        }
        // Once pausing, the global pause follows the global limit; full
        // partitions stay paused on their own until they have room.
        apply(&consumer, paused.set_global(escalated && global_full));
        // While blocked, messages wait in librdkafka's bounded queue; once
        // paused, polling goes on for rebalances (stragglers are refused).
        let take = !blocked || escalated;
        let pause_at = blocked_since.map_or_else(Instant::now, |t| t + PAUSE_AFTER);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(pause_at), if blocked && !escalated => {
                tracing::debug!(in_flight, full_partitions = full_partitions.len(), "limit held for {PAUSE_AFTER:?}; pausing fetching");
                escalated = true;
                apply(&consumer, paused.set_global(global_full));
                for p in &full_partitions {
                    apply(&consumer, paused.set_partition(p, true));
                }
            }
            // Before messages: a message of a newly assigned partition must
            // find its pause state applied.
            _ = rebalances.arrived() => {
                for event in rebalances.drain() {
                    react(&consumer, &mut paused, &mut full_partitions, event);
                }
            }
            Some(done) = done_rx.recv() => {
                in_flight -= 1;
                shared.metrics.in_flight.set(in_flight as i64);
                let on_partition = {
                    let mut t = kafka::lock(&tracker);
                    t.finish(&done.partition, done.offset, done.ticket);
                    t.in_flight_on(&done.partition)
                };
                if on_partition < limits.per_partition
                    && full_partitions.remove(&done.partition)
                {
                    apply(&consumer, paused.set_partition(&done.partition, false));
                }
                if let Some(next) = keyed.finish(done.key.as_deref()) {
                    start(next, &mut tasks);
                }
            }
            _ = commits.tick() => {
                commit(&consumer, &tracker, &shared, CommitMode::Async);
                export_ages(&tracker, &shared);
            }
            // Reaped so the set does not grow; results arrive through done_rx.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            received = consumer.recv(), if take => match received {
                Ok(m) => {
                    // A rebalance served inside this recv comes first.
                    for event in rebalances.drain() {
                        react(&consumer, &mut paused, &mut full_partitions, event);
                    }
                    let partition = Partition { topic: m.topic().to_string(), partition: m.partition() };
                    let offset = m.offset();
                    let on_partition = kafka::lock(&tracker).in_flight_on(&partition);
                    if let Admission::Refuse(limit) = limits.admission(in_flight, on_partition) {
                        // Pausing mode from here on, so the pause is lifted
                        // only when there is room again.
                        escalated = true;
                        let changes = match limit {
                            Limit::Global => paused.set_global(true),
                            Limit::Partition => {
                                full_partitions.insert(partition.clone());
                                paused.set_partition(&partition, true)
                            }
                        };
                        apply(&consumer, changes);
                        // Paused whatever the bookkeeping says: a message came,
                        // so librdkafka is fetching it.
                        apply(&consumer, vec![(partition.clone(), true)]);
                        if refuse(&consumer, &partition, offset, limit) {
                            continue;
                        }
                    }
                    let msg = Arc::new(m.detach());
                    let (begun, on_partition) = {
                        let mut t = kafka::lock(&tracker);
                        let begun = t.begin(&partition, offset, Instant::now());
                        (begun, t.in_flight_on(&partition))
                    };
                    if on_partition >= limits.per_partition
                        && full_partitions.insert(partition.clone())
                        && escalated
                    {
                        apply(&consumer, paused.set_partition(&partition, true));
                    }
                    let key = ordering_key(msg.payload().unwrap_or_default());
                    // A message taken is progress: the clock towards pausing
                    // measures a stall, not time spent at the limit.
                    blocked_since = None;
                    in_flight += 1;
                    shared.metrics.events_consumed.inc();
                    shared.metrics.in_flight.set(in_flight as i64);
                    let job = Job { msg, partition, ticket: begun.ticket, key, revoked: begun.revoked };
                    let key = job.key.clone();
                    if let Some(job) = keyed.admit(key.as_deref(), job) {
                        start(job, &mut tasks);
                    }
                }
                Err(e) => {
                    // While the broker is away this repeats every poll; one
                    // line per distinct error per 30 s is enough at 3 a.m.
                    let text = e.to_string();
                    let now = Instant::now();
                    if last_error.as_ref().is_none_or(|(t, at)| *t != text || now - *at > Duration::from_secs(30)) {
                        tracing::warn!(error = %text, "kafka consume error (repeats are logged every 30 s)");
                        last_error = Some((text, now));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    // Shutdown: stop fetching, give in-flight work its grace, commit what is done.
    tracing::info!(
        in_flight,
        waiting = keyed.waiting(),
        grace_ms = pipeline.shutdown_grace.as_millis() as u64,
        "stopping: finishing in-flight events"
    );
    apply(&consumer, paused.set_global(true));
    let dropped_waiting = keyed.clear();
    let mut running = in_flight - dropped_waiting;
    let deadline = Instant::now() + pipeline.shutdown_grace;
    while running > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(done)) => {
                running -= 1;
                kafka::lock(&tracker).finish(&done.partition, done.offset, done.ticket);
            }
            Ok(None) | Err(_) => break,
        }
    }
    tasks.abort_all();
    let offsets = kafka::lock(&tracker).all_commits();
    if let Err(e) = kafka::commit(&consumer, &offsets, CommitMode::Sync) {
        tracing::warn!(error = %e, "final offset commit failed; finished events will be redelivered and skipped by dedup");
    }
    tracing::info!(
        unfinished = running + dropped_waiting,
        "stopped; unfinished events will be redelivered"
    );
}

/// Runs `work`, turning a panic inside it into `Err` with the panic's
/// message, so the caller can still finish the event (a panicking task
/// would otherwise never send its `Done`, and its offset would stay in
/// flight for good).
async fn supervised(work: impl Future<Output = ()>) -> Result<(), String> {
    use futures_util::FutureExt as _;
    // Nothing the work shares is left half-updated in a way that matters:
    // shared state is behind locks that tolerate poisoning, and the event
    // itself is dead-lettered.
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn commit(consumer: &HostConsumer, tracker: &Tracker, shared: &Shared, mode: CommitMode) {
    let offsets = kafka::lock(tracker).take_commits();
    if offsets.is_empty() {
        return;
    }
    shared.metrics.offset_commits.inc();
    for (p, o) in &offsets {
        tracing::debug!(topic = %p.topic, partition = p.partition, offset = o, "committing");
    }
    if let Err(e) = kafka::commit(consumer, &offsets, mode) {
        tracing::warn!(error = %e, "offset commit failed; will retry with the next commit");
    }
}

/// The in-flight limits a message is admitted under.
#[derive(Debug, Clone, Copy)]
struct Limits {
    global: usize,
    per_partition: usize,
}

/// Which limit a refused message would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Global,
    Partition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admit,
    /// Not begun: its partition is paused and sought back to it.
    Refuse(Limit),
}

impl Limits {
    /// Whether one more event, with `in_flight` in flight overall and
    /// `on_partition` on its partition, stays within the limits.
    fn admission(&self, in_flight: usize, on_partition: usize) -> Admission {
        if in_flight >= self.global {
            Admission::Refuse(Limit::Global)
        } else if on_partition >= self.per_partition {
            Admission::Refuse(Limit::Partition)
        } else {
            Admission::Admit
        }
    }
}

/// Seeks `partition` back to the refused message at `offset` (its
/// partition is already paused), so it is fetched again on resume. librdkafka
/// keeps a paused partition paused through a seek; the seek also drops what
/// was prefetched after the message. Returns false when the seek failed: the
/// message must then be admitted after all, since skipping it would let the
/// commit point pass it.
fn refuse(consumer: &HostConsumer, partition: &Partition, offset: i64, limit: Limit) -> bool {
    // A seek is a local operation, answered by librdkafka's own thread in
    // microseconds; a second means something is badly wrong.
    const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
    match consumer.seek(
        &partition.topic,
        partition.partition,
        Offset::Offset(offset),
        SEEK_TIMEOUT,
    ) {
        Ok(()) => {
            tracing::debug!(topic = %partition.topic, partition = partition.partition, offset, ?limit, "at the in-flight limit: message refused, partition paused and sought back to it");
            true
        }
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.partition, offset, ?limit, error = %e, "cannot seek back to a refused message; admitting it over the limit rather than skipping it");
            false
        }
    }
}

/// Reacts to one rebalance: newly assigned partitions get the wanted pause
/// state, revoked ones are forgotten.
fn react(
    consumer: &HostConsumer,
    paused: &mut Pauses,
    full_partitions: &mut HashSet<Partition>,
    event: Rebalanced,
) {
    match event {
        Rebalanced::Assigned(partitions) => apply(consumer, paused.assign(&partitions)),
        Rebalanced::Revoked(partitions) => {
            for p in &partitions {
                full_partitions.remove(p);
            }
            paused.revoke(&partitions);
        }
    }
}

/// Sets `notify_oldest_unfinished_seconds` for every assigned partition
/// (revoked ones are removed by the rebalance callback).
fn export_ages(tracker: &Tracker, shared: &Shared) {
    let ages = kafka::lock(tracker).oldest_unfinished(Instant::now());
    for (p, age) in ages {
        shared
            .metrics
            .oldest_unfinished
            .get_or_create(&crate::metrics::PartitionLabels {
                topic: p.topic,
                partition: p.partition.to_string(),
            })
            .set(age.as_secs_f64());
    }
}

/// One partition to pause (true) or resume (false).
type Change = (Partition, bool);

/// Which fetching is wanted paused: everything (the global limit) or single
/// partitions (their own limit), over the partitions assigned now. Pure
/// bookkeeping: each method returns the changes to [`apply`]. Pausing stops
/// fetching; librdkafka refetches from the application's position on
/// resume, so memory stays bounded while the consumer keeps polling and
/// stays in its group.
#[derive(Debug, Default)]
struct Pauses {
    global: bool,
    partitions: HashSet<Partition>,
    assigned: BTreeSet<Partition>,
}

impl Pauses {
    fn wanted(&self, p: &Partition) -> bool {
        self.global || self.partitions.contains(p)
    }

    /// Every assigned partition without a pause of its own follows.
    fn set_global(&mut self, pause: bool) -> Vec<Change> {
        if self.global == pause {
            return Vec::new();
        }
        self.global = pause;
        self.assigned
            .iter()
            .filter(|p| !self.partitions.contains(*p))
            .map(|p| (p.clone(), pause))
            .collect()
    }

    fn set_partition(&mut self, p: &Partition, pause: bool) -> Vec<Change> {
        let changed = if pause {
            self.partitions.insert(p.clone())
        } else {
            self.partitions.remove(p)
        };
        // Under the global pause it stays paused either way.
        if changed && !self.global {
            vec![(p.clone(), pause)]
        } else {
            Vec::new()
        }
    }

    /// Newly assigned partitions, each set explicitly: librdkafka keeps a
    /// partition's pause across assignments, so one paused before it moved
    /// away would come back paused, and a new one arrives unpaused.
    fn assign(&mut self, partitions: &[Partition]) -> Vec<Change> {
        for p in partitions {
            self.assigned.insert(p.clone());
        }
        partitions
            .iter()
            .map(|p| (p.clone(), self.wanted(p)))
            .collect()
    }

    /// Revoked partitions are forgotten, their own pause with them.
    fn revoke(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.assigned.remove(p);
            self.partitions.remove(p);
        }
    }
}

fn apply(consumer: &HostConsumer, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for (p, is_pause) in &changes {
        let list = if *is_pause { &mut pause } else { &mut resume };
        list.add_partition(&p.topic, p.partition);
    }
    for (list, is_pause) in [(&pause, true), (&resume, false)] {
        if list.count() == 0 {
            continue;
        }
        let result = if is_pause {
            consumer.pause(list)
        } else {
            consumer.resume(list)
        };
        match result {
            Ok(()) => tracing::debug!(
                pause = is_pause,
                partitions = list.count(),
                "fetching paused/resumed"
            ),
            Err(e) => tracing::warn!(error = %e, pause = is_pause, "pause/resume failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        Partition {
            topic: "t".into(),
            partition: n,
        }
    }

    fn ps(ns: &[i32]) -> Vec<Partition> {
        ns.iter().map(|n| p(*n)).collect()
    }

    #[tokio::test]
    async fn a_panic_in_event_work_becomes_an_error_with_its_message() {
        let ok = supervised(async {}).await;
        assert_eq!(ok, Ok(()));
        let literal = supervised(async { panic!("boom") }).await;
        assert_eq!(literal, Err("boom".to_string()));
        let formatted = supervised(async {
            tokio::task::yield_now().await;
            let n = 24_600;
            panic!("too many headers: {n}")
        })
        .await;
        assert_eq!(formatted, Err("too many headers: 24600".to_string()));
        let other = supervised(async { std::panic::panic_any(7u8) }).await;
        assert_eq!(other, Err("a panic without a message".to_string()));
    }

    #[test]
    fn admission_never_passes_a_limit() {
        let limits = Limits {
            global: 16,
            per_partition: 4,
        };
        // (in flight, on the partition, verdict)
        let cases = [
            (0, 0, Admission::Admit),
            (15, 3, Admission::Admit),
            (16, 0, Admission::Refuse(Limit::Global)),
            (17, 4, Admission::Refuse(Limit::Global)),
            (10, 4, Admission::Refuse(Limit::Partition)),
            (10, 9, Admission::Refuse(Limit::Partition)),
        ];
        for (in_flight, on_partition, want) in cases {
            assert_eq!(
                limits.admission(in_flight, on_partition),
                want,
                "{in_flight} in flight, {on_partition} on the partition"
            );
        }
    }

    /// One step of the pipeline's pause bookkeeping.
    #[derive(Debug)]
    enum Step {
        Assign(&'static [i32]),
        Revoke(&'static [i32]),
        Global(bool),
        Partition(i32, bool),
    }

    #[test]
    fn pause_state_survives_rebalances() {
        use Step::*;
        // Each step with the changes it must produce: (partition, pause).
        let steps: &[(Step, &[(i32, bool)])] = &[
            // A first assignment is set explicitly, unpaused.
            (Assign(&[0, 1]), &[(0, false), (1, false)]),
            (Partition(1, true), &[(1, true)]),
            (Partition(1, true), &[]),
            (Global(true), &[(0, true)]),
            // Assigned while everything is paused: arrives paused.
            (Assign(&[2]), &[(2, true)]),
            // Revoked while paused: its own pause is forgotten...
            (Revoke(&[1]), &[]),
            (Global(false), &[(0, false), (2, false)]),
            // ...so it comes back unpaused, though librdkafka still has it paused.
            (Assign(&[1]), &[(1, false)]),
            (Partition(2, true), &[(2, true)]),
            // Under the global pause a partition's own flag changes nothing yet.
            (Global(true), &[(0, true), (1, true)]),
            (Partition(2, false), &[]),
            (Partition(0, true), &[]),
            (Global(false), &[(1, false), (2, false)]),
            (Partition(0, false), &[(0, false)]),
            (Revoke(&[0, 1, 2]), &[]),
            (Global(true), &[]),
        ];
        let mut pauses = Pauses::default();
        for (i, (step, want)) in steps.iter().enumerate() {
            let got = match step {
                Assign(ns) => pauses.assign(&ps(ns)),
                Revoke(ns) => {
                    pauses.revoke(&ps(ns));
                    Vec::new()
                }
                Global(on) => pauses.set_global(*on),
                Partition(n, on) => pauses.set_partition(&p(*n), *on),
            };
            let want: Vec<Change> = want.iter().map(|(n, on)| (p(*n), *on)).collect();
            assert_eq!(got, want, "step {i}: {step:?}");
        }
    }
}
