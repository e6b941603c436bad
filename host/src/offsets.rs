//! Which offset of each partition may be committed, and what is in flight
//! on each assigned partition.
//!
//! Invariants:
//! - The committable offset of a partition is the lowest offset not yet done
//!   (Kafka commits name the *next* offset to read), so a commit never passes
//!   an unfinished event, however far later events have got. Events of one
//!   partition may finish in any order.
//! - Each assignment of a partition is its own state: a generation (the
//!   ticket a task hands back, so a task from an earlier assignment cannot
//!   finish an offset redelivered to this one) and a revocation token,
//!   cancelled when the partition is revoked. A partition assigned again gets
//!   a fresh state, ticket and token.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug)]
struct PartitionState {
    /// Which assignment of the partition this is: a task from an earlier
    /// assignment (revoked, then assigned again) must not finish an offset
    /// redelivered to the new one.
    generation: u64,
    /// Cancelled when this assignment ends (the partition is revoked).
    revoked: CancellationToken,
    /// Offsets handed out and not yet done, with when each began.
    pending: BTreeMap<i64, Instant>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// What was last committed (or is being committed).
    committed: Option<i64>,
}

impl PartitionState {
    fn new(generation: u64) -> Self {
        PartitionState {
            generation,
            revoked: CancellationToken::new(),
            pending: BTreeMap::new(),
            next: None,
            committed: None,
        }
    }

    fn committable(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }
}

/// What [`OffsetTracker::begin`] hands out for one event.
#[derive(Debug, Clone)]
pub struct Begun {
    /// To hand back to [`OffsetTracker::finish`].
    pub ticket: u64,
    /// Cancelled when the event's partition is revoked.
    pub revoked: CancellationToken,
}

/// Offsets in flight, per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Partition, PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&mut self, p: &Partition) -> &mut PartitionState {
        let generations = &mut self.generations;
        self.partitions.entry(p.clone()).or_insert_with(|| {
            *generations += 1;
            PartitionState::new(*generations)
        })
    }

    /// The partition was assigned: its assignment starts (a no-op when it is
    /// already tracked, i.e. no revoke came in between).
    pub fn assign(&mut self, p: &Partition) {
        self.state(p);
    }

    /// An event at `offset` was received at `now` and is being worked on.
    pub fn begin(&mut self, p: &Partition, offset: i64, now: Instant) -> Begun {
        let state = self.state(p);
        state.pending.insert(offset, now);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Begun {
            ticket: state.generation,
            revoked: state.revoked.clone(),
        }
    }

    /// The event at `offset` is done (delivered, skipped or dead-lettered).
    /// Returns false when the partition was revoked since `begin`.
    pub fn finish(&mut self, p: &Partition, offset: i64, ticket: u64) -> bool {
        match self.partitions.get_mut(p) {
            Some(state) if state.generation == ticket => state.pending.remove(&offset).is_some(),
            _ => false,
        }
    }

    /// Events in flight on all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }

    pub fn in_flight_on(&self, p: &Partition) -> usize {
        self.partitions.get(p).map_or(0, |s| s.pending.len())
    }

    /// The offset to commit for `p`, if any has been seen.
    pub fn committable(&self, p: &Partition) -> Option<i64> {
        self.partitions.get(p).and_then(PartitionState::committable)
    }

    /// Partitions whose committable offset moved past the last commit, with
    /// that offset; marks them committed.
    pub fn take_commits(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (p, state) in &mut self.partitions {
            if let Some(offset) = state.committable() {
                if state.committed.is_none_or(|c| offset > c) {
                    state.committed = Some(offset);
                    out.push((p.clone(), offset));
                }
            }
        }
        out.sort();
        out
    }

    /// A commit of `offset` for `p` failed: unless a later one was sent
    /// since, [`Self::take_commits`] offers the partition again.
    pub fn commit_failed(&mut self, p: &Partition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(p) {
            if state.committed == Some(offset) {
                state.committed = None;
            }
        }
    }

    /// Every partition's committable offset, whether or not it moved (for
    /// the final, synchronous commit at shutdown).
    pub fn all_commits(&self) -> Vec<(Partition, i64)> {
        let mut out: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| s.committable().map(|o| (p.clone(), o)))
            .collect();
        out.sort();
        out
    }

    /// Ends a partition's assignment (revoked in a rebalance): cancels its
    /// token, so its events stop before their next send, forgets it, and
    /// returns its committable offset so the caller can commit what is done
    /// before letting go.
    pub fn revoke(&mut self, p: &Partition) -> Option<i64> {
        let state = self.partitions.remove(p)?;
        state.revoked.cancel();
        state.committable()
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.keys()
    }

    /// For every tracked partition, how long its oldest unfinished event has
    /// been in flight at `now` (zero when none is), sorted by partition.
    pub fn oldest_unfinished(&self, now: Instant) -> Vec<(Partition, Duration)> {
        let mut out: Vec<_> = self
            .partitions
            .iter()
            .map(|(p, s)| {
                // Offsets begin in order within an assignment, but the minimum
                // over all of them does not rely on that.
                let age = s.pending.values().min().map_or(Duration::ZERO, |began| {
                    now.saturating_duration_since(*began)
                });
                (p.clone(), age)
            })
            .collect();
        out.sort();
        out
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

    fn p0() -> Partition {
        p(0)
    }

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn commit_never_passes_an_unfinished_event() {
        let mut t = OffsetTracker::new();
        let mut ticket = 0;
        for o in 10..15 {
            ticket = t.begin(&p0(), o, now()).ticket;
        }
        assert_eq!(t.committable(&p0()), Some(10));
        // Later events finish first: the commit stays at the oldest pending.
        t.finish(&p0(), 12, ticket);
        t.finish(&p0(), 13, ticket);
        t.finish(&p0(), 14, ticket);
        assert_eq!(t.committable(&p0()), Some(10));
        t.finish(&p0(), 10, ticket);
        assert_eq!(t.committable(&p0()), Some(11));
        t.finish(&p0(), 11, ticket);
        assert_eq!(t.committable(&p0()), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn take_commits_reports_only_progress() {
        let mut t = OffsetTracker::new();
        let ticket = t.begin(&p0(), 0, now()).ticket;
        assert_eq!(t.take_commits(), vec![(p0(), 0)]);
        assert_eq!(t.take_commits(), vec![]);
        t.finish(&p0(), 0, ticket);
        assert_eq!(t.take_commits(), vec![(p0(), 1)]);
        assert_eq!(t.take_commits(), vec![]);
    }

    #[test]
    fn a_failed_commit_is_sent_again_unless_a_later_one_was() {
        let mut t = OffsetTracker::new();
        let ticket = t.begin(&p0(), 0, now()).ticket;
        t.finish(&p0(), 0, ticket);
        assert_eq!(t.take_commits(), vec![(p0(), 1)]);
        // Refused during a rebalance: offered again though nothing moved.
        t.commit_failed(&p0(), 1);
        assert_eq!(t.take_commits(), vec![(p0(), 1)]);
        assert_eq!(t.take_commits(), vec![]);
        // A failure reported after a later commit was sent changes nothing.
        let ticket = t.begin(&p0(), 1, now()).ticket;
        t.finish(&p0(), 1, ticket);
        assert_eq!(t.take_commits(), vec![(p0(), 2)]);
        t.commit_failed(&p0(), 1);
        assert_eq!(t.take_commits(), vec![]);
        // Nor does one for a partition no longer assigned.
        t.revoke(&p0());
        t.commit_failed(&p0(), 2);
        assert_eq!(t.take_commits(), vec![]);
    }

    #[test]
    fn revoked_partitions_ignore_late_completions() {
        let mut t = OffsetTracker::new();
        let old = t.begin(&p0(), 5, now()).ticket;
        t.begin(&p0(), 6, now());
        t.finish(&p0(), 6, old);
        assert_eq!(t.revoke(&p0()), Some(5));
        assert!(!t.finish(&p0(), 5, old));
        assert_eq!(t.committable(&p0()), None);
        // Assigned again and offset 5 redelivered: the stale task cannot finish it.
        let new = t.begin(&p0(), 5, now()).ticket;
        assert_ne!(old, new);
        assert!(!t.finish(&p0(), 5, old));
        assert_eq!(t.committable(&p0()), Some(5));
        assert!(t.finish(&p0(), 5, new));
    }

    #[test]
    fn each_assignment_has_its_own_revocation_token() {
        let mut t = OffsetTracker::new();
        t.assign(&p0());
        t.assign(&p(1));
        let first = t.begin(&p0(), 0, now());
        let same = t.begin(&p0(), 1, now());
        let other = t.begin(&p(1), 0, now());
        // Assigning again without a revoke keeps the assignment.
        t.assign(&p0());
        assert_eq!(t.begin(&p0(), 2, now()).ticket, first.ticket);

        t.revoke(&p0());
        assert!(first.revoked.is_cancelled() && same.revoked.is_cancelled());
        assert!(
            !other.revoked.is_cancelled(),
            "only the revoked partition's work stops"
        );
        // Revoking what is not assigned changes nothing.
        assert_eq!(t.revoke(&p0()), None);

        t.assign(&p0());
        let again = t.begin(&p0(), 0, now());
        assert!(
            !again.revoked.is_cancelled(),
            "a fresh token per assignment"
        );
        assert_ne!(again.ticket, first.ticket);
    }

    #[test]
    fn oldest_unfinished_age_per_partition() {
        let t0 = now();
        let s = Duration::from_secs;
        // (partition, offset, began after t0, finished)
        let events = [
            (0, 10, 0, true),
            (0, 11, 2, false),
            (0, 12, 5, false),
            (1, 0, 1, true),
            (2, 7, 9, false),
        ];
        let mut t = OffsetTracker::new();
        t.assign(&p(3));
        for (n, offset, began, finished) in events {
            let b = t.begin(&p(n), offset, t0 + s(began));
            if finished {
                t.finish(&p(n), offset, b.ticket);
            }
        }
        assert_eq!(
            t.oldest_unfinished(t0 + s(10)),
            vec![
                (p(0), s(8)),
                (p(1), Duration::ZERO),
                (p(2), s(1)),
                (p(3), Duration::ZERO),
            ]
        );
        t.revoke(&p(2));
        assert_eq!(
            t.oldest_unfinished(t0 + s(20)).len(),
            3,
            "a revoked partition is not reported"
        );
    }
}
