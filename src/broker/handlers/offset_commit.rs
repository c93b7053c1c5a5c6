//! OffsetCommit: fenced like Kafka (generation, member id, instance id;
//! simple commits with generation -1 only while the group has no members),
//! then every valid partition of the request written in one transaction.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::metadata::{CommittedOffset, MetadataError};

/// `(partition, error)` in request order; `None` once written.
type PartitionAnswer = (i32, Option<ResponseError>);

pub async fn handle(broker: &Arc<Broker>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let member = !request.member_id.is_empty() || request.generation_id_or_member_epoch >= 0;
    let fenced = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if !broker.coordinates(&group) {
        Err(ResponseError::NotCoordinator)
    } else {
        // A member's commit is fenced by the group as stored when this
        // broker took it over.
        let loaded = match member {
            true => broker.groups.load(&group).await,
            false => Ok(()),
        };
        loaded.and_then(|()| {
            broker.groups.validate_commit(
                &group,
                request.generation_id_or_member_epoch,
                &request.member_id,
                instance.as_deref(),
            )
        })
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let max_metadata = broker.config.groups.offset_metadata_max_bytes;
    let mut answers: Vec<(TopicName, Vec<PartitionAnswer>)> = Vec::new();
    let mut to_write = Vec::new();
    // Where each offset to write sits in `answers`: (topic, partition).
    let mut to_write_at = Vec::new();
    for topic in &request.topics {
        let state = broker.catalog.by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let error = match (&fenced, &state) {
                (Err(code), _) => Some(*code),
                (Ok(()), None) => Some(ResponseError::UnknownTopicOrPartition),
                (Ok(()), Some(t)) if t.partition(p.partition_index).is_none() => {
                    Some(ResponseError::UnknownTopicOrPartition)
                }
                (Ok(()), Some(_))
                    if p.committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > max_metadata) =>
                {
                    Some(ResponseError::OffsetMetadataTooLarge)
                }
                (Ok(()), Some(t)) => {
                    to_write_at.push((answers.len(), partitions.len()));
                    to_write.push(CommittedOffset {
                        topic_id: t.record.id,
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_ms: now_ms,
                    });
                    None
                }
            };
            partitions.push((p.partition_index, error));
        }
        answers.push((TopicName(str_bytes(topic.name.to_string())), partitions));
    }
    let mut write_error = None;
    if !to_write.is_empty() {
        let epoch = broker.coordinator_epoch(&group);
        match broker
            .metadata
            .commit_offsets(&group, epoch, to_write)
            .await
        {
            Err(MetadataError::Fenced(why)) => {
                // Another broker took the group over: the client finds it.
                tracing::info!(%group, %why, "offset commit fenced");
                write_error = Some(ResponseError::NotCoordinator);
            }
            Err(error) => {
                tracing::warn!(%group, %error, "offset commit failed");
                write_error = Some(ResponseError::CoordinatorNotAvailable);
            }
            Ok(written) => {
                for ((topic, partition), written) in to_write_at.into_iter().zip(written) {
                    if !written {
                        answers[topic].1[partition].1 =
                            Some(ResponseError::UnknownTopicOrPartition);
                    }
                }
                if fenced.is_ok() {
                    broker.groups.touch(&group, &request.member_id);
                }
            }
        }
    }
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            let code = error.or(write_error).map(|c| c.code()).unwrap_or(0);
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
