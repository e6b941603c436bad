//! The durable record of which (event_id, channel) pairs were delivered.
//!
//! Invariants:
//! - A pair is recorded right after its provider accepted, and
//!   [`DedupStore::record_delivered`] returns only once the record is on disk
//!   (fsync), so the pipeline commits a Kafka offset only after every
//!   delivery behind it is durable.
//! - A recorded pair is never sent again while it is retained, whether Kafka
//!   redelivers the event after a crash or the producer published it twice.
//! - Writes are group-committed: concurrent records share one transaction and
//!   one fsync, so throughput does not pay one disk flush per message.
//!
//! The store is embedded (redb, a pure-Rust ACID key-value store): one file in
//! the data directory, owned by one host process. Entries expire after the
//! retention (default 7 days, the topic's retention): older events cannot be
//! redelivered by Kafka anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

/// (channel, event_id) joined by a unit separator → delivery time (ms since epoch).
const DELIVERED: TableDefinition<&str, u64> = TableDefinition::new("delivered");

/// Records taken into one transaction at most; bounds the time a batch holds
/// the writer.
const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("cannot open the dedup store {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::Error },
    #[error("dedup store: {0}")]
    Store(#[from] redb::Error),
    #[error("dedup store writer stopped")]
    WriterGone,
}

fn key(event_id: &str, channel: &str) -> String {
    format!("{channel}\u{1f}{event_id}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Pending {
    key: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct DedupStore {
    db: Arc<Database>,
    writer: mpsc::UnboundedSender<Pending>,
    retention: Duration,
}

impl std::fmt::Debug for DedupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupStore")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl DedupStore {
    /// Opens (or creates) the store file and starts its writer thread.
    pub fn open(path: &Path, retention: Duration, cache_bytes: usize) -> Result<Self, DedupError> {
        let fail = |source: redb::Error| DedupError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(redb::Error::Io(e)))?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| fail(e.into()))?;
        // Create the table up front so readers never see it missing.
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(DELIVERED).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        let db = Arc::new(db);

        let (writer, rx) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("dedup-writer".into())
            .spawn(move || write_loop(&writer_db, rx))
            .map_err(|e| fail(redb::Error::Io(e)))?;
        Ok(DedupStore {
            db,
            writer,
            retention,
        })
    }

    /// Whether the pair was delivered within the retention.
    pub fn is_delivered(&self, event_id: &str, channel: &str) -> Result<bool, DedupError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(DELIVERED).map_err(redb::Error::from)?;
        let at = table
            .get(key(event_id, channel).as_str())
            .map_err(redb::Error::from)?;
        Ok(match at {
            Some(at) => now_ms().saturating_sub(at.value()) < self.retention.as_millis() as u64,
            None => false,
        })
    }

    /// Records the pair as delivered; resolves once it is durable.
    pub async fn record_delivered(&self, event_id: &str, channel: &str) -> Result<(), DedupError> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Pending {
                key: key(event_id, channel),
                done,
            })
            .map_err(|_| DedupError::WriterGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DedupError::Store(redb::Error::Corrupted(message))),
            Err(_) => Err(DedupError::WriterGone),
        }
    }

    /// Deletes entries older than the retention; returns how many.
    pub fn sweep_expired(&self) -> Result<usize, DedupError> {
        let cutoff = now_ms().saturating_sub(self.retention.as_millis() as u64);
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(DELIVERED).map_err(redb::Error::from)?;
            table
                .retain(|_, at| {
                    let keep = at >= cutoff;
                    removed += usize::from(!keep);
                    keep
                })
                .map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(removed)
    }

    /// Entries currently held (for readiness and tests).
    pub fn len(&self) -> Result<u64, DedupError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(DELIVERED).map_err(redb::Error::from)?;
        Ok(table.len().map_err(redb::Error::from)?)
    }

    pub fn is_empty(&self) -> Result<bool, DedupError> {
        Ok(self.len()? == 0)
    }
}

/// Takes whatever records are waiting, writes them in one durable
/// transaction, and answers each.
fn write_loop(db: &Database, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let at = now_ms();
        let result = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(DELIVERED)?;
                for p in &batch {
                    table.insert(p.key.as_str(), at)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        let result = result.map_err(|e| e.to_string());
        for p in batch {
            // The caller may have given up (shutdown); nothing to do then.
            let _ = p.done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_CACHE: usize = 1 << 20;

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/dedup.redb");
        {
            let store =
                DedupStore::open(&path, Duration::from_secs(3600), TEST_CACHE).expect("open");
            assert!(!store.is_delivered("e1", "email").expect("read"));
            store.record_delivered("e1", "email").await.expect("record");
            assert!(store.is_delivered("e1", "email").expect("read"));
            assert!(
                !store.is_delivered("e1", "sms").expect("read"),
                "channels are separate"
            );
        }
        // The writer thread holds the database until its channel closes.
        std::thread::sleep(Duration::from_millis(50));
        let store = DedupStore::open(&path, Duration::from_secs(3600), TEST_CACHE).expect("reopen");
        assert!(store.is_delivered("e1", "email").expect("read"));
    }

    #[tokio::test]
    async fn concurrent_records_are_batched_and_all_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DedupStore::open(
            &dir.path().join("d.redb"),
            Duration::from_secs(3600),
            TEST_CACHE,
        )
        .expect("open");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.record_delivered(&format!("e{i}"), "sms").await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("record");
        }
        assert_eq!(store.len().expect("len"), 200);
    }

    #[tokio::test]
    async fn expired_entries_are_swept_and_not_matched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DedupStore::open(
            &dir.path().join("d.redb"),
            Duration::from_millis(50),
            TEST_CACHE,
        )
        .expect("open");
        store
            .record_delivered("old", "email")
            .await
            .expect("record");
        assert!(store.is_delivered("old", "email").expect("read"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!store.is_delivered("old", "email").expect("read"));
        assert_eq!(store.sweep_expired().expect("sweep"), 1);
        assert!(store.is_empty().expect("len"));
    }
}
