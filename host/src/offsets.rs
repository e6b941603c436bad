//! Which offset of each partition may be committed.
//!
//! Invariant: the committable offset of a partition is the lowest offset not
//! yet done (Kafka commits name the *next* offset to read), so a commit never
//! passes an unfinished event, however far later events have got. Events of
//! one partition may finish in any order.

use std::collections::{BTreeSet, HashMap};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Which assignment of the partition this is: a task from an earlier
    /// assignment (revoked, then assigned again) must not finish an offset
    /// redelivered to the new one.
    generation: u64,
    /// Offsets handed out and not yet done.
    pending: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// What was last committed (or is being committed).
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
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

    /// An event at `offset` was received and is being worked on. Returns the
    /// ticket to hand back to [`Self::finish`].
    pub fn begin(&mut self, p: &Partition, offset: i64) -> u64 {
        let generations = &mut self.generations;
        let state = self.partitions.entry(p.clone()).or_insert_with(|| {
            *generations += 1;
            PartitionState {
                generation: *generations,
                ..Default::default()
            }
        });
        state.pending.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        state.generation
    }

    /// The event at `offset` is done (delivered, skipped or dead-lettered).
    /// Returns false when the partition was revoked since `begin`.
    pub fn finish(&mut self, p: &Partition, offset: i64, ticket: u64) -> bool {
        match self.partitions.get_mut(p) {
            Some(state) if state.generation == ticket => state.pending.remove(&offset),
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

    /// Forgets a partition (revoked in a rebalance); returns its committable
    /// offset so the caller can commit what is done before letting go.
    pub fn revoke(&mut self, p: &Partition) -> Option<i64> {
        self.partitions.remove(p).and_then(|s| s.committable())
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p0() -> Partition {
        Partition {
            topic: "t".into(),
            partition: 0,
        }
    }

    #[test]
    fn commit_never_passes_an_unfinished_event() {
        let mut t = OffsetTracker::new();
        let mut ticket = 0;
        for o in 10..15 {
            ticket = t.begin(&p0(), o);
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
        let ticket = t.begin(&p0(), 0);
        assert_eq!(t.take_commits(), vec![(p0(), 0)]);
        assert_eq!(t.take_commits(), vec![]);
        t.finish(&p0(), 0, ticket);
        assert_eq!(t.take_commits(), vec![(p0(), 1)]);
        assert_eq!(t.take_commits(), vec![]);
    }

    #[test]
    fn revoked_partitions_ignore_late_completions() {
        let mut t = OffsetTracker::new();
        let old = t.begin(&p0(), 5);
        t.begin(&p0(), 6);
        t.finish(&p0(), 6, old);
        assert_eq!(t.revoke(&p0()), Some(5));
        assert!(!t.finish(&p0(), 5, old));
        assert_eq!(t.committable(&p0()), None);
        // Assigned again and offset 5 redelivered: the stale task cannot finish it.
        let new = t.begin(&p0(), 5);
        assert_ne!(old, new);
        assert!(!t.finish(&p0(), 5, old));
        assert_eq!(t.committable(&p0()), Some(5));
        assert!(t.finish(&p0(), 5, new));
    }
}
