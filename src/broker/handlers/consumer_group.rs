//! KIP-848: ConsumerGroupHeartbeat (join, heartbeat, leave, reconcile;
//! subscriptions by topic name or by a regular expression the broker
//! resolves against every topic, internal ones included, as Kafka does) and
//! ConsumerGroupDescribe. The state machine lives in `broker::group::consumer`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::group::consumer::{Heartbeat, TopicPartition};
use crate::metadata::TopicId;

fn grouped(partitions: &BTreeSet<TopicPartition>) -> BTreeMap<TopicId, Vec<i32>> {
    let mut by_topic: BTreeMap<TopicId, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(*topic).or_default().push(*partition);
    }
    by_topic
}

pub fn heartbeat(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    client_id: String,
    peer: SocketAddr,
) -> ConsumerGroupHeartbeatResponse {
    let owned = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (TopicId(t.topic_id), *p)))
            .collect::<BTreeSet<_>>()
    });
    let interval = broker.groups.heartbeat_interval_ms();
    let catalog = &broker.catalog;
    let all_topics = || {
        catalog
            .all()
            .iter()
            .map(|t| t.record.name.clone())
            .collect::<Vec<_>>()
    };
    let resolve = |name: &str| {
        catalog
            .by_name(name)
            .map(|t| (t.record.id, t.record.partitions))
    };
    let result = broker.groups.consumer_heartbeat(
        &request.group_id,
        Heartbeat {
            member_id: request.member_id.to_string(),
            member_epoch: request.member_epoch,
            instance_id: request.instance_id.map(|s| s.to_string()),
            rack_id: request.rack_id.map(|s| s.to_string()),
            client_id,
            client_host: format!("/{}", peer.ip()),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed: request
                .subscribed_topic_names
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
            // librdkafka sends an empty string when it has no expression.
            subscribed_regex: request.subscribed_topic_regex.map(|r| r.to_string()),
            server_assignor: request.server_assignor.map(|s| s.to_string()),
            owned,
        },
        &resolve,
        &all_topics,
    );
    let response = ConsumerGroupHeartbeatResponse::default().with_heartbeat_interval_ms(interval);
    if let Some((code, message)) = result.error {
        return response
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)));
    }
    let assignment = result.assignment.map(|partitions| {
        Assignment::default().with_topic_partitions(
            grouped(&partitions)
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic_id(topic.0)
                        .with_partitions(partitions)
                })
                .collect(),
        )
    });
    response
        .with_member_id(Some(str_bytes(result.member_id)))
        .with_member_epoch(result.member_epoch)
        .with_assignment(assignment)
}

fn described_assignment(
    broker: &Broker,
    partitions: &BTreeSet<TopicPartition>,
) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        grouped(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                let name = broker
                    .catalog
                    .by_id(topic)
                    .map(|t| t.record.name.clone())
                    .unwrap_or_default();
                describe::TopicPartitions::default()
                    .with_topic_id(topic.0)
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub fn describe(
    broker: &Arc<Broker>,
    version: i16,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let groups = request
        .group_ids
        .into_iter()
        .map(|id| {
            let found = broker.groups.with_consumer_group(&id, |g| {
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let target = g.target.get(&m.id).cloned().unwrap_or_default();
                        let member = describe::Member::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                            .with_rack_id(m.rack_id.clone().map(str_bytes))
                            .with_member_epoch(m.epoch)
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_subscribed_topic_regex(
                                m.regex.as_ref().map(|(e, _)| str_bytes(e.clone())),
                            )
                            .with_subscribed_topic_names(
                                m.subscribed
                                    .iter()
                                    .map(|t| TopicName(str_bytes(t.clone())))
                                    .collect(),
                            )
                            .with_assignment(described_assignment(broker, &m.assigned))
                            .with_target_assignment(described_assignment(broker, &target));
                        // member_type (v1): 1 = consumer protocol member.
                        if version >= 1 {
                            member.with_member_type(1)
                        } else {
                            member
                        }
                    })
                    .collect();
                describe::DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(str_bytes(g.state()))
                    .with_group_epoch(g.group_epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(str_bytes(g.assignor.clone()))
                    .with_members(members)
            });
            found.unwrap_or_else(|| {
                describe::DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!("no consumer group '{}'", &*id))))
            })
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
