//! OffsetForLeaderEpoch: what consumers ask after a leader change to detect
//! log truncation (KIP-320). Strata never truncates a committed log, so the
//! end offset of any epoch up to the current one is the high watermark: a
//! consumer's position is never found truncated. The client's current
//! leader epoch is checked as Kafka does (FENCED_LEADER_EPOCH if older,
//! UNKNOWN_LEADER_EPOCH if newer); an epoch newer than the leader's gets
//! the undefined answer (-1, -1).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let state = broker.catalog.by_name(&topic.topic);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(log) = state.as_ref().and_then(|t| t.partition(p.partition)) else {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if log.leader_id() != broker.node_id {
                        return answer.with_error_code(ResponseError::NotLeaderOrFollower.code());
                    }
                    let epoch = log.leader_epoch();
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                        return answer.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    }
                    if p.current_leader_epoch > epoch {
                        return answer.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    if p.leader_epoch > epoch || p.leader_epoch < 0 {
                        return answer;
                    }
                    answer
                        .with_leader_epoch(p.leader_epoch)
                        .with_end_offset(log.high_watermark())
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
