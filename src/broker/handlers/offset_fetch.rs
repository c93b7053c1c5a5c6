//! OffsetFetch: committed offsets of one group (v1-v7) or several (v8+),
//! for the listed partitions or all of them. A partition without a commit
//! answers offset -1 with empty metadata, as Kafka does. With
//! `require_stable` (v7+), a partition whose offset is in a transaction not
//! decided yet answers UNSTABLE_OFFSET_COMMIT (the client retries).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;

/// `(partition, offset, leader epoch, metadata, error code)`
type Row = (i32, i64, i32, String, i16);
/// `(topic, rows)`
type GroupOffsets = Vec<(String, Vec<Row>)>;

async fn offsets_of(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<GroupOffsets, ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    // Before the committed offsets: a transaction that completes between
    // the two reads is reported unstable, never answered with the offset
    // from before it.
    let pending = if require_stable {
        // With other brokers, transactions holding this group's offsets
        // may be coordinated elsewhere.
        let in_cluster = broker.cluster.live().len() > 1;
        broker.txn.pending_partitions(group, in_cluster).await
    } else {
        Default::default()
    };
    let committed = broker
        .metadata
        .fetch_offsets(group)
        .await
        .map_err(|error| {
            tracing::warn!(%group, %error, "offset fetch failed");
            ResponseError::CoordinatorNotAvailable
        })?;
    let mut by_topic: HashMap<String, Vec<Row>> = HashMap::new();
    for c in committed {
        let Some(topic) = broker.catalog.by_id(c.topic_id) else {
            continue;
        };
        by_topic
            .entry(topic.record.name.clone())
            .or_default()
            .push((
                c.partition,
                c.offset,
                c.leader_epoch,
                c.metadata.unwrap_or_default(),
                0,
            ));
    }
    let mut offsets = match wanted {
        None => {
            let mut all: GroupOffsets = by_topic.into_iter().collect();
            all.sort();
            all
        }
        Some(list) => list
            .into_iter()
            .map(|(topic, partitions)| {
                let known = by_topic.get(&topic);
                let rows = partitions
                    .into_iter()
                    .map(|p| {
                        known
                            .and_then(|rows| rows.iter().find(|r| r.0 == p).cloned())
                            .unwrap_or((p, -1, -1, String::new(), 0))
                    })
                    .collect();
                (topic, rows)
            })
            .collect(),
    };
    if !pending.is_empty() {
        for (topic, rows) in &mut offsets {
            let Some(state) = broker.catalog.by_name(topic) else {
                continue;
            };
            for row in rows.iter_mut() {
                if pending.contains(&(state.record.id, row.0)) {
                    *row = (
                        row.0,
                        -1,
                        -1,
                        String::new(),
                        ResponseError::UnstableOffsetCommit.code(),
                    );
                }
            }
        }
    }
    Ok(offsets)
}

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let wanted = g.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let stable = request.require_stable;
            groups.push(
                match offsets_of(broker, &g.group_id, wanted, stable).await {
                    Err(code) => group.with_error_code(code.code()),
                    Ok(offsets) => group.with_topics(
                        offsets
                            .into_iter()
                            .map(|(topic, rows)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(topic)))
                                    .with_partitions(
                                        rows.into_iter()
                                            .map(|(p, offset, epoch, metadata, error)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(metadata)))
                                                    .with_error_code(error)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let stable = version >= 7 && request.require_stable;
    match offsets_of(broker, &request.group_id, wanted, stable).await {
        // v1 has no top-level error code: an empty answer is all it can carry.
        Err(code) if version >= 2 => OffsetFetchResponse::default().with_error_code(code.code()),
        Err(_) => OffsetFetchResponse::default(),
        Ok(offsets) => OffsetFetchResponse::default().with_topics(
            offsets
                .into_iter()
                .map(|(topic, rows)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, offset, epoch, metadata, error)| {
                                    let partition = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_metadata(Some(str_bytes(metadata)))
                                        .with_error_code(error);
                                    if version >= 5 {
                                        partition.with_committed_leader_epoch(epoch)
                                    } else {
                                        partition
                                    }
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
