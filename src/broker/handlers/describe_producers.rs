//! DescribeProducers: the idempotent and transactional producers with
//! committed state in each partition (id, epoch, last sequence, time of
//! their last write, and the first offset of a transaction open there).
//! The coordinator epoch is -1 (one coordinator, no epochs).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::str_bytes;
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let state = broker.catalog.by_name(&topic.name);
            let partitions = topic
                .partition_indexes
                .into_iter()
                .map(|index| {
                    let answer = PartitionResponse::default().with_partition_index(index);
                    let Some(log) = state.as_ref().and_then(|t| t.partition(index)) else {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "{}-{index} does not exist",
                                &*topic.name
                            ))));
                    };
                    let producers = log
                        .producers()
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.batches.last().map_or(-1, |b| b.last_seq))
                                .with_last_timestamp(p.last_append_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.txn_first_offset.unwrap_or(-1))
                        })
                        .collect();
                    answer.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
