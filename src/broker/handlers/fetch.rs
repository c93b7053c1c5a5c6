//! Fetch: record batches as stored (zero copy from the cache), never above
//! the high watermark. Long-polls up to `max_wait_ms` until `min_bytes` are
//! available, woken by each partition's high-watermark watch (by its
//! topics' commit signals when it names many partitions). Honours the
//! response `max_bytes` and each `partition_max_bytes`, but always returns at
//! least one whole batch of the first partition with data (KIP-74) so a
//! consumer can make progress past a large batch. No fetch sessions: the
//! response's session id is 0, which tells clients to send full fetches.
//!
//! Any broker serves any partition: one this broker does not lead is read
//! from its view of the metadata store (see `broker::replicas`). A leader
//! sends a consumer that names its rack (v11+) to a broker of that rack
//! (KIP-392 preferred read replica), with no records.

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::watch;
use tokio::time::Instant;

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::cluster::now_ms;
use crate::broker::replicas;
use crate::metadata::TopicId;
use crate::storage::catalog::TopicState;
use crate::storage::partition::ReadError;

/// Longest long-poll honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Target {
    name: TopicName,
    topic_id: uuid::Uuid,
    state: Option<Arc<TopicState>>,
    partitions: Vec<(i32, i64, i32)>, // (partition, fetch offset, partition max bytes)
}

pub async fn handle(
    broker: Arc<Broker>,
    version: i16,
    request: FetchRequest,
    memory: &mut crate::broker::memory::ResponseMemory,
) -> FetchResponse {
    let targets: Vec<Target> = request
        .topics
        .into_iter()
        .map(|t| {
            let state = if version >= 13 {
                broker.catalog.by_id(TopicId(t.topic_id))
            } else {
                broker.catalog.by_name(&t.topic)
            };
            // v13+ names topics by id only; the name field must stay empty.
            let name = match (&state, version >= 13) {
                (_, true) => TopicName::default(),
                (Some(s), false) => TopicName(str_bytes(s.record.name.clone())),
                (None, false) => t.topic.clone(),
            };
            Target {
                name,
                topic_id: if version >= 13 {
                    t.topic_id
                } else {
                    uuid::Uuid::nil()
                },
                state,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes))
                    .collect(),
            }
        })
        .collect();
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    // read_committed (1): up to the last stable offset, with the aborted
    // transactions in range so the client drops their records.
    let committed = request.isolation_level == 1;
    // The broker's own limit bounds every response (Kafka's fetch.max.bytes).
    let cap = broker.config.kafka.fetch_max_bytes;
    let max_bytes = if request.max_bytes <= 0 {
        cap
    } else {
        (request.max_bytes as usize).min(cap)
    };
    let limits = Limits {
        max_bytes,
        committed,
        rack: if version >= 11 {
            request.rack_id.to_string()
        } else {
            String::new()
        },
    };
    prepare_replicas(&broker, &targets).await;
    loop {
        // Subscribe before reading so no commit slips between the two.
        let mut watches = subscribe(&targets);
        let (response, bytes, answer_now) = read_once(&broker, version, &targets, &limits).await;
        if bytes >= min_bytes || answer_now || watches.is_empty() || Instant::now() >= deadline {
            return response;
        }
        let any_change = select_all(watches.iter_mut().map(|w| w.changed()));
        let _waiting = broker.requests.fetch_waiting();
        // Waiting holds no response memory; reading again needs it back,
        // and without room the Fetch answers with what it read.
        memory.pause();
        tokio::select! {
            _ = any_change => {}
            _ = tokio::time::sleep_until(deadline) => {
                if !memory.resume() {
                    return response;
                }
                return read_once(&broker, version, &targets, &limits).await.0;
            }
        }
        if !memory.resume() {
            return response;
        }
    }
}

/// What every partition of one Fetch is read with.
struct Limits {
    max_bytes: usize,
    /// read_committed.
    committed: bool,
    /// The consumer's rack (`client.rack`), empty if it names none.
    rack: String,
}

/// Partitions another broker leads are read from this broker's view of
/// the store: loaded on their first read here, and read again first when a
/// fetch asks past what this broker knows of them.
async fn prepare_replicas(broker: &Broker, targets: &[Target]) {
    let now = now_ms();
    for target in targets {
        let Some(state) = &target.state else { continue };
        for &(index, offset, _) in &target.partitions {
            let Some(log) = state.partition(index) else {
                continue;
            };
            if log.leader_id() == broker.node_id {
                continue;
            }
            log.touch_replica(now);
            let never = log.replica_synced_ms() == 0;
            if (never || offset > log.high_watermark())
                && let Err(error) = replicas::refresh_now(broker, log, never).await
            {
                tracing::warn!(partition = index, %error, "cannot read a partition led elsewhere from the store");
            }
        }
    }
}

/// A fetch naming at most this many partitions waits on each one's high
/// watermark; beyond, on its topics' commit signals (one receiver per topic,
/// woken by commits to any partition of it), so a consumer of thousands of
/// partitions does not subscribe to, and poll, thousands of channels per
/// long poll.
const WATCH_EACH_PARTITION_UP_TO: usize = 32;

/// Something a long-polling fetch can wait on.
enum Watch {
    Partition(watch::Receiver<i64>),
    Topic(watch::Receiver<u64>),
}

impl Watch {
    fn changed(&mut self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        match self {
            Watch::Partition(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
            Watch::Topic(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
        }
    }
}

fn subscribe(targets: &[Target]) -> Vec<Watch> {
    let named: usize = targets
        .iter()
        .filter(|t| t.state.is_some())
        .map(|t| t.partitions.len())
        .sum();
    let per_partition = named <= WATCH_EACH_PARTITION_UP_TO;
    let mut watches = Vec::new();
    for target in targets {
        let Some(state) = &target.state else { continue };
        let mut logs = target
            .partitions
            .iter()
            .filter_map(|(p, _, _)| state.partition(*p));
        if per_partition {
            watches.extend(logs.map(|log| Watch::Partition(log.subscribe())));
        } else if let Some(log) = logs.next() {
            watches.push(Watch::Topic(log.subscribe_topic()));
        }
    }
    watches
}

/// One pass over the requested partitions: (response, bytes, whether to
/// answer now whatever the bytes: an error, or a consumer sent elsewhere).
async fn read_once(
    broker: &Broker,
    version: i16,
    targets: &[Target],
    limits: &Limits,
) -> (FetchResponse, usize, bool) {
    let (max_bytes, committed) = (limits.max_bytes, limits.committed);
    let live = if limits.rack.is_empty() {
        Vec::new()
    } else {
        broker.cluster.live()
    };
    let mut total = 0usize;
    let mut any_error = false;
    // A partition named twice is read once; the repeat gets no records.
    let mut seen =
        std::collections::HashSet::with_capacity(targets.iter().map(|t| t.partitions.len()).sum());
    let mut topics = Vec::with_capacity(targets.len());
    for target in targets {
        let mut partitions = Vec::with_capacity(target.partitions.len());
        for &(index, offset, partition_max) in &target.partitions {
            // Fields are set in place rather than through the `with_*`
            // builders: each of those moves the whole struct, which showed in
            // profiles of fetches over 1,000 partitions.
            let mut data = PartitionData::default();
            data.partition_index = index;
            data.aborted_transactions = None;
            // Clients expect an empty record set, not null, when there is no data.
            data.records = Some(bytes::Bytes::new());
            let Some(log) = target.state.as_ref().and_then(|s| s.partition(index)) else {
                any_error = true;
                let code = if version >= 13 && target.state.is_none() {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                data.error_code = code.code();
                data.high_watermark = -1;
                partitions.push(data);
                continue;
            };
            let replica = log.leader_id() != broker.node_id;
            if replica && log.replica_synced_ms() == 0 {
                // Not readable from the store just now: the leader serves it.
                any_error = true;
                data.error_code = ResponseError::NotLeaderOrFollower.code();
                data.high_watermark = -1;
                partitions.push(data);
                continue;
            }
            data.log_start_offset = log.log_start_offset();
            if !replica
                && let Some(node) = replicas::preferred_read_replica(
                    broker,
                    &live,
                    &limits.rack,
                    log.topic_id,
                    index,
                )
            {
                any_error = true;
                broker.requests.preferred_replica_sent();
                data.preferred_read_replica = BrokerId(node);
                data.high_watermark = log.high_watermark();
                data.last_stable_offset = log.last_stable_offset().min(data.high_watermark);
                partitions.push(data);
                continue;
            }
            if !seen.insert((log.topic_id, index)) {
                data.high_watermark = log.high_watermark();
                partitions.push(data);
                continue;
            }
            let hw = log.high_watermark();
            // After the high watermark, so never above it.
            let lso = log.last_stable_offset().min(hw);
            data.high_watermark = hw;
            data.last_stable_offset = lso;
            let visible = if committed { lso } else { hw };
            if committed {
                data.aborted_transactions = Some(Vec::new());
            }
            // KIP-74: the first batch returned may exceed the limits.
            let budget = (partition_max.max(0) as usize).min(max_bytes.saturating_sub(total));
            if budget == 0 && total > 0 {
                partitions.push(data);
                continue;
            }
            let mut read = log
                .read(&broker.cache, offset, hw, visible, budget.max(1))
                .await;
            if replica && matches!(read, Err(ReadError::Missing(_) | ReadError::Storage { .. })) {
                // The view named an object sealed and collected since:
                // read the store's index again, then the records.
                if replicas::refresh_now(broker, log, true).await.is_ok() {
                    read = log
                        .read(&broker.cache, offset, hw, visible, budget.max(1))
                        .await;
                }
            }
            match read {
                Ok(records) => {
                    if !records.is_empty() && total > 0 && records.len() > budget {
                        // Does not fit the response any more; the client asks again.
                        partitions.push(data);
                        continue;
                    }
                    total += records.len();
                    if replica {
                        broker.requests.replica_fetched(records.len());
                    }
                    if committed {
                        // Read after the last stable offset, so every
                        // aborted range below it is known (ranges are
                        // recorded first); only those overlapping the
                        // records returned, as Kafka bounds the list.
                        let end = crate::protocol::batch::iter_batches(&records)
                            .last()
                            .map_or(offset, |(_, h)| h.last_offset() + 1);
                        let aborted = match crate::storage::partition::aborted_in(
                            log,
                            broker.metadata.as_ref(),
                            offset,
                            end,
                        )
                        .await
                        {
                            Ok((aborted, from_store)) => {
                                if from_store {
                                    broker.requests.aborted_store_read();
                                }
                                aborted
                            }
                            Err(error) => {
                                // Without them aborted records would pass
                                // as committed: the client retries.
                                tracing::warn!(%error, "cannot read aborted transactions");
                                any_error = true;
                                data.error_code = ResponseError::KafkaStorageError.code();
                                partitions.push(data);
                                continue;
                            }
                        };
                        data.aborted_transactions = Some(
                            aborted
                                .into_iter()
                                .map(|a| {
                                    let mut t = AbortedTransaction::default();
                                    t.producer_id = ProducerId(a.producer_id);
                                    t.first_offset = a.first_offset;
                                    t
                                })
                                .collect(),
                        );
                    }
                    data.records = Some(records);
                    partitions.push(data);
                }
                Err(error) => {
                    any_error = true;
                    let code = match error {
                        ReadError::OutOfRange { .. } => ResponseError::OffsetOutOfRange,
                        ReadError::Missing(_) | ReadError::Storage { .. } => {
                            tracing::warn!(topic = %&*target.name, partition = index, %error, "fetch read failed");
                            ResponseError::KafkaStorageError
                        }
                    };
                    data.error_code = code.code();
                    partitions.push(data);
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(target.name.clone())
                .with_topic_id(target.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(topics),
        total,
        any_error,
    )
}
