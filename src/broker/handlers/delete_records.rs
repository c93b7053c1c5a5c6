//! DeleteRecords: moves a partition's log start offset (the low watermark)
//! up to the requested offset (-1: the high watermark), durably in the
//! metadata store before answering, together with the chunks wholly below it
//! (their objects are deleted by the collector once nothing references
//! them). Fetch below it then gets OFFSET_OUT_OF_RANGE and ListOffsets
//! earliest returns it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;

/// The high watermark as a DeleteRecords offset.
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let state = broker.catalog.by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let Some(log) = state.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                partitions
                    .push(result.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if log.leader_id() != broker.node_id {
                partitions.push(result.with_error_code(ResponseError::NotLeaderOrFollower.code()));
                continue;
            }
            let high_watermark = log.high_watermark();
            let target = if p.offset == HIGH_WATERMARK {
                high_watermark
            } else {
                p.offset
            };
            if target < 0 || target > high_watermark {
                partitions.push(result.with_error_code(ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            match broker
                .metadata
                .advance_log_start(log.topic_id, log.partition, target)
                .await
            {
                Ok(start) => {
                    log.advance_log_start(start);
                    tracing::info!(topic = %&*topic.name, partition = p.partition_index, log_start_offset = start, "records deleted");
                    partitions.push(result.with_low_watermark(start));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot move the log start offset");
                    partitions
                        .push(result.with_error_code(ResponseError::KafkaStorageError.code()));
                }
            }
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
