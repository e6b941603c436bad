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
//! - A retrying event holds back only its own key and the commit point of its
//!   partition, never the work on other events.
//! - On shutdown, fetching stops, in-flight work gets `shutdown_grace` to
//!   finish, what is done is committed, and the rest is left for redelivery.

mod keyed;
mod worker;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{interval, Instant, MissedTickBehavior};

pub use worker::{decide, ChannelOutcome, Decision, Observed, Shared};

use crate::kafka::{self, HostConsumer, Tracker};
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
            worker::process(shared, job.msg.clone()).await;
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
    tokio::pin!(shutdown);
    loop {
        let global_full = in_flight >= pipeline.max_in_flight;
        let blocked = global_full || !full_partitions.is_empty();
        if blocked {
            blocked_since.get_or_insert_with(Instant::now);
            if escalated && global_full {
                paused.set_global(&consumer, true);
            }
        } else {
            blocked_since = None;
            escalated = false;
            paused.set_global(&consumer, false);
        }
        // While blocked, messages wait in librdkafka's bounded queue; once
        // paused, polling goes on for rebalances and stragglers.
        let take = !blocked || escalated;
        let pause_at = blocked_since.map_or_else(Instant::now, |t| t + PAUSE_AFTER);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(pause_at), if blocked && !escalated => {
                tracing::debug!(in_flight, full_partitions = full_partitions.len(), "limit held for {PAUSE_AFTER:?}; pausing fetching");
                escalated = true;
                if global_full {
                    paused.set_global(&consumer, true);
                }
                for p in &full_partitions {
                    paused.set_partition(&consumer, p, true);
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
                if on_partition < pipeline.max_in_flight_per_partition
                    && full_partitions.remove(&done.partition)
                {
                    paused.set_partition(&consumer, &done.partition, false);
                }
                if let Some(next) = keyed.finish(done.key.as_deref()) {
                    start(next, &mut tasks);
                }
            }
            _ = commits.tick() => commit(&consumer, &tracker, &shared, CommitMode::Async),
            // Reaped so the set does not grow; results arrive through done_rx.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            received = consumer.recv(), if take => match received {
                Ok(m) => {
                    let msg = Arc::new(m.detach());
                    let partition = Partition { topic: msg.topic().to_string(), partition: msg.partition() };
                    let (ticket, on_partition) = {
                        let mut t = kafka::lock(&tracker);
                        let ticket = t.begin(&partition, msg.offset());
                        (ticket, t.in_flight_on(&partition))
                    };
                    if on_partition >= pipeline.max_in_flight_per_partition
                        && full_partitions.insert(partition.clone())
                        && escalated
                    {
                        paused.set_partition(&consumer, &partition, true);
                    }
                    let key = ordering_key(msg.payload().unwrap_or_default());
                    // A message taken is progress: the clock towards pausing
                    // measures a stall, not time spent at the limit.
                    blocked_since = None;
                    in_flight += 1;
                    shared.metrics.events_consumed.inc();
                    shared.metrics.in_flight.set(in_flight as i64);
                    let job = Job { msg, partition, ticket, key };
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
    paused.set_global(&consumer, true);
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

/// Which fetching is paused: everything (the global limit) or single
/// partitions (their own limit). Pausing stops fetching; librdkafka refetches
/// from the application's position on resume, so memory stays bounded while
/// the consumer keeps polling and stays in its group. Changes are applied
/// only when the wanted state changes.
#[derive(Default)]
struct Pauses {
    global: bool,
    partitions: HashSet<Partition>,
}

impl Pauses {
    fn set_global(&mut self, consumer: &HostConsumer, pause: bool) {
        if self.global != pause {
            self.global = pause;
            self.apply(consumer);
        }
    }

    fn set_partition(&mut self, consumer: &HostConsumer, p: &Partition, pause: bool) {
        let changed = if pause {
            self.partitions.insert(p.clone())
        } else {
            self.partitions.remove(p)
        };
        if changed {
            self.apply(consumer);
        }
    }

    fn apply(&self, consumer: &HostConsumer) {
        let assignment = match consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause/resume");
                return;
            }
        };
        let mut pause = rdkafka::TopicPartitionList::new();
        let mut resume = rdkafka::TopicPartitionList::new();
        for e in assignment.elements() {
            let p = Partition {
                topic: e.topic().to_string(),
                partition: e.partition(),
            };
            if self.global || self.partitions.contains(&p) {
                pause.add_partition(e.topic(), e.partition());
            } else {
                resume.add_partition(e.topic(), e.partition());
            }
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
}
