//! Key-ordered admission: events with the same key run one after another,
//! in offset order; events with different keys run concurrently.
//!
//! Invariant: at most one event per key is running; the others wait in
//! arrival order. An event with no key runs at once.

use std::collections::{HashMap, VecDeque};

/// Queues per busy key.
#[derive(Debug)]
pub struct KeyedQueue<T> {
    busy: HashMap<String, VecDeque<T>>,
}

impl<T> Default for KeyedQueue<T> {
    fn default() -> Self {
        KeyedQueue {
            busy: HashMap::new(),
        }
    }
}

impl<T> KeyedQueue<T> {
    /// Offers a job; returns it back when it may start now.
    pub fn admit(&mut self, key: Option<&str>, job: T) -> Option<T> {
        let Some(key) = key else {
            return Some(job);
        };
        match self.busy.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(job);
                None
            }
            None => {
                self.busy.insert(key.to_string(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The running job of `key` finished; returns the next one to start.
    pub fn finish(&mut self, key: Option<&str>) -> Option<T> {
        let key = key?;
        let waiting = self.busy.get_mut(key)?;
        match waiting.pop_front() {
            Some(next) => Some(next),
            None => {
                self.busy.remove(key);
                None
            }
        }
    }

    /// Jobs waiting behind a running one.
    pub fn waiting(&self) -> usize {
        self.busy.values().map(VecDeque::len).sum()
    }

    /// Drops every waiting job (shutdown).
    pub fn clear(&mut self) -> usize {
        let n = self.waiting();
        self.busy.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedQueue;

    #[test]
    fn same_key_waits_other_keys_run() {
        let mut q = KeyedQueue::default();
        assert_eq!(q.admit(Some("a"), 1), Some(1));
        assert_eq!(q.admit(Some("a"), 2), None);
        assert_eq!(q.admit(Some("b"), 3), Some(3));
        assert_eq!(q.admit(None, 4), Some(4));
        assert_eq!(q.admit(Some("a"), 5), None);
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.finish(Some("a")), Some(2));
        assert_eq!(q.finish(Some("a")), Some(5));
        assert_eq!(q.finish(Some("a")), None);
        // The key is free again.
        assert_eq!(q.admit(Some("a"), 6), Some(6));
        assert_eq!(q.finish(Some("b")), None);
        assert_eq!(q.finish(None), None);
    }
}
