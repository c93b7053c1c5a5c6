//! ListOffsets: earliest (-2, and -4 "earliest local", the same here), latest
//! (-1: the high watermark, or the last stable offset for read_committed
//! requests, isolation level 1), max timestamp (-3), latest tiered (-5, v9+:
//! -1/-1 as Kafka answers without its remote log tier; Strata's tiering is
//! its own and every offset is readable), or the first offset whose record
//! timestamp is at or after a given time (-1/-1 when there is none).
//! The log start offset (moved by DeleteRecords) bounds every answer.
//! (Timestamp lookups are not capped at the last stable offset for
//! read_committed; the consumer's fetch still stops there.)

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let committed = request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let state = broker.catalog.by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let Some(log) = state.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                partitions
                    .push(response.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if log.leader_id() != broker.node_id {
                partitions
                    .push(response.with_error_code(ResponseError::NotLeaderOrFollower.code()));
                continue;
            }
            let response = if version >= 4 {
                response.with_leader_epoch(log.leader_epoch())
            } else {
                response
            };
            let found = match p.timestamp {
                LATEST if committed => Ok(Some((log.last_stable_offset(), -1))),
                LATEST => Ok(Some((log.high_watermark(), -1))),
                EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                MAX_TIMESTAMP => log.max_timestamp_offset(&broker.cache).await,
                LATEST_TIERED if version >= 9 => Ok(None),
                ts if ts >= 0 => log.offset_for_timestamp(&broker.cache, ts).await,
                _ => {
                    partitions.push(response.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                }
            };
            partitions.push(match found {
                // A record below the log start offset is deleted: the first
                // one after it answers instead.
                Ok(Some((offset, timestamp))) if offset < log.log_start_offset() => response
                    .with_offset(log.log_start_offset())
                    .with_timestamp(timestamp),
                Ok(Some((offset, timestamp))) => response.with_offset(offset).with_timestamp(timestamp),
                Ok(None) => response,
                Err(error) => {
                    tracing::warn!(topic = %&*topic.name, partition = p.partition_index, %error, "list offsets failed");
                    response.with_error_code(ResponseError::KafkaStorageError.code())
                }
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
