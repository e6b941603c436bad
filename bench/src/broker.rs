//! Kafka side: a tansu broker process, topics per run, the publisher, and the
//! committed-offset reader that says when a run is finished.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::events::{self, EventRef};
use crate::sys;

/// The tansu binary: `--tansu` / `NOTIFY_TANSU`, else what
/// `scripts/ensure-tansu.sh` installs (it prints the path).
pub fn locate_tansu(root: &Path, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let script = root.join("scripts/ensure-tansu.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A tansu broker on 127.0.0.1 with in-memory storage; killed on drop.
pub struct Broker {
    pub bootstrap: String,
    pub pid: u32,
    child: Child,
    watchdog: Child,
    pub log: PathBuf,
}

impl Broker {
    pub fn start(tansu: &Path, workdir: &Path) -> Result<Broker> {
        let port = sys::free_port()?;
        let log = workdir.join("tansu.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            // tansu reads its options from these too; a value left in the
            // caller's environment would override ours. A CI's RUST_LOG=debug
            // would flood the log and cost the broker CPU.
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", tansu.display()))?;
        let pid = child.id();
        let watchdog = match sys::watchdog(pid) {
            Ok(w) => w,
            Err(e) => {
                sys::kill_and_reap(&mut child);
                return Err(e);
            }
        };
        let broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            pid,
            child,
            watchdog,
            log,
        };
        broker.wait_listening(port)?;
        Ok(broker)
    }

    fn wait_listening(&self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen on {port} within 30 s; its log:\n{}",
                    sys::tail(&self.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Creates topics, one partition each.
    pub async fn create_topics(&self, names: &[&str]) -> Result<()> {
        let with: Vec<(&str, i32)> = names.iter().map(|n| (*n, 1)).collect();
        self.create_topics_with(&with).await
    }

    /// Creates topics with the given partition counts.
    pub async fn create_topics_with(&self, topics: &[(&str, i32)]) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().context("admin client")?;
        let topics: Vec<NewTopic> = topics
            .iter()
            .map(|(n, partitions)| NewTopic::new(n, *partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .context("create topics")?;
        for r in results {
            r.map_err(|(name, e)| anyhow!("create topic {name}: {e}"))?;
        }
        Ok(())
    }

    /// A reader of `group`'s committed offsets for partitions
    /// `0..partitions` of `topic`.
    pub fn offset_reader(&self, group: &str, topic: &str, partitions: i32) -> Result<OffsetReader> {
        // Never subscribes, so it does not join the host's group; it only
        // asks the coordinator for the group's offsets.
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("offset reader")?;
        Ok(OffsetReader {
            consumer,
            topic: topic.to_string(),
            partitions: partitions.max(1),
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        sys::kill_and_reap(&mut self.watchdog);
        sys::kill_and_reap(&mut self.child);
    }
}

/// Publishes `count` events of run `run` to `topic` (of `partitions`
/// partitions), keyed by appointment id, with `keys` distinct ids: the
/// producer's default partitioner hashes the key, so an appointment's events
/// stay on one partition, in order. `rate` None publishes as fast as
/// librdkafka batches (linger 5 ms, every send in flight at once); Some
/// paces the sends at that many events per second and sends each at once
/// (linger 0), as an application publishing per request would, so the
/// produce time is not inflated by batching. It owns its arguments so a
/// paced run can publish on the runtime while the main thread watches the
/// host.
pub async fn publish(
    bootstrap: String,
    topic: String,
    partitions: i32,
    run: u32,
    count: u64,
    keys: u64,
    rate: Option<f64>,
) -> Result<Published> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", if rate.is_some() { "0" } else { "5" })
        // The default queue (100k messages) holds a default run, but a
        // larger --events would hit QueueFull; it is handled below anyway.
        .set("queue.buffering.max.messages", "1000000")
        // A broker that stopped answering should fail the run, not hang it
        // for librdkafka's default five minutes.
        .set("message.timeout.ms", "30000")
        .create()
        .context("producer")?;
    // Fixed seed: the same key sequence every run, so runs compare.
    let mut rng = fastrand::Rng::with_seed(0x6e6f_7469_6679);
    let mut acks = tokio::task::JoinSet::new();
    let mut sent_at = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for index in 0..count {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(index as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let key_no = rng.u64(..keys.max(1));
        let id = EventRef { run, index };
        let key = events::appointment_id(key_no);
        let payload = events::payload(id, key_no);
        let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
        let delivery = loop {
            let at = Instant::now();
            match producer.send_result(record) {
                Ok(d) => break (d, at),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's queue is full: let it drain.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => bail!("publish event {index}: {e}"),
            }
        };
        sent_at.push(delivery.1);
        let future = delivery.0;
        // One task per delivery, so each ack's arrival time is taken when
        // it arrives, not when a loop gets round to it.
        acks.spawn(async move {
            let result = future.await;
            (index, Instant::now(), result)
        });
    }
    let mut acked_at = vec![start; count as usize];
    let mut offsets = vec![-1; count as usize];
    let mut end_offsets = vec![0i64; partitions.max(1) as usize];
    while let Some(joined) = acks.join_next().await {
        let (index, at, result) = joined.context("ack task")?;
        let delivery = result
            .map_err(|_| anyhow!("event {index}: the producer dropped its delivery report"))?
            .map_err(|(e, _)| anyhow!("event {index} not delivered: {e}"))?;
        let Some(end) = usize::try_from(delivery.partition)
            .ok()
            .and_then(|p| end_offsets.get_mut(p))
        else {
            bail!(
                "event {index} went to partition {} of a topic of {partitions}",
                delivery.partition
            );
        };
        acked_at[index as usize] = at;
        offsets[index as usize] = delivery.offset;
        *end = (*end).max(delivery.offset + 1);
    }
    Ok(Published {
        sent_at,
        acked_at,
        offsets,
        end_offset: end_offsets.iter().sum(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What publishing took: per event (by index) when it was handed to the
/// producer, when the broker acknowledged it and at which offset (of its
/// partition), and where the group's committed offsets stand when all are
/// done (from the acks: tansu's high watermark is unreliable after batched
/// produces).
pub struct Published {
    pub sent_at: Vec<Instant>,
    pub acked_at: Vec<Instant>,
    pub offsets: Vec<i64>,
    /// The partitions' end offsets added up: what
    /// [`OffsetReader::committed`] reaches when every partition is done
    /// (each partition's committed offset stays at or below its end). With
    /// one partition, its end offset.
    pub end_offset: i64,
    pub seconds: f64,
}

pub struct OffsetReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl OffsetReader {
    /// The committed offsets summed over the partitions (one partition: its
    /// committed offset), None while the group has committed nothing.
    pub fn committed(&self) -> Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let offsets = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .context("read committed offsets")?;
        let committed: Vec<i64> = (0..self.partitions)
            .filter_map(
                |p| match offsets.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect();
        Ok((!committed.is_empty()).then(|| committed.iter().sum()))
    }
}
