//! Metadata: this broker, the cluster id, and the requested topics (all when
//! the list is null), with topic ids. Unknown topics are created when both
//! the request and `kafka.auto_create_topics` allow it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topics::{create_topic, is_internal, validate_topic_name};
use crate::metadata::{BrokerRecord, TopicId};
use crate::storage::catalog::TopicState;

/// `live`: the live brokers, read once per request.
fn describe(live: &[BrokerRecord], version: i16, topic: &TopicState) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|log| {
            let leader = log.leader_id();
            // A leader whose lease expired is offline until the controller
            // moves the partition: clients retry.
            let partition = if live.iter().any(|b| b.node_id == leader) {
                // Every live broker serves the partition's reads (from the
                // object store), so all are its in-sync replicas, the
                // leader first: a client follows a preferred read replica
                // only to a broker listed here (KIP-392).
                let replicas: Vec<BrokerId> = std::iter::once(leader)
                    .chain(live.iter().map(|b| b.node_id).filter(|id| *id != leader))
                    .map(BrokerId)
                    .collect();
                MetadataResponsePartition::default()
                    .with_leader_id(BrokerId(leader))
                    .with_replica_nodes(replicas.clone())
                    .with_isr_nodes(replicas)
            } else {
                MetadataResponsePartition::default()
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_replica_nodes(vec![BrokerId(leader)])
                    .with_isr_nodes(Vec::new())
            }
            .with_partition_index(log.partition);
            if version >= 7 {
                partition.with_leader_epoch(log.leader_epoch())
            } else {
                partition
            }
        })
        .collect();
    let described = MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_is_internal(is_internal(&topic.record.name))
        .with_partitions(partitions);
    if version >= 10 {
        described.with_topic_id(topic.record.id.0)
    } else {
        described
    }
}

fn topic_error(
    name: Option<TopicName>,
    id: uuid::Uuid,
    code: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(id)
        .with_error_code(code.code())
}

/// `listener`: the one the request came through; brokers are described by
/// their address on it.
pub async fn handle(
    broker: &Arc<Broker>,
    listener: &str,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    let live = broker.live_on(listener);
    let auto_create = broker.config.kafka.auto_create_topics
        && (version < 4 || request.allow_auto_topic_creation);
    let topics = match request.topics {
        // v0 uses an empty list for "all topics"; later versions use null.
        None => broker
            .catalog
            .all()
            .iter()
            .map(|t| describe(&live, version, t))
            .collect(),
        Some(list) if list.is_empty() && version == 0 => broker
            .catalog
            .all()
            .iter()
            .map(|t| describe(&live, version, t))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for requested in list {
                out.push(match requested.name {
                    Some(name) => lookup_or_create(broker, &live, version, name, auto_create).await,
                    None => match broker.catalog.by_id(TopicId(requested.topic_id)) {
                        Some(topic) => describe(&live, version, &topic),
                        None => {
                            topic_error(None, requested.topic_id, ResponseError::UnknownTopicId)
                        }
                    },
                });
            }
            out
        }
    };
    let node = BrokerId(broker.node_id);
    let brokers = live
        .into_iter()
        .map(|b| {
            let described = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host))
                .with_port(b.port);
            if version >= 1 {
                described.with_rack(b.rack.map(str_bytes))
            } else {
                described
            }
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        // Any broker takes admin requests: the one asked is the controller
        // as far as clients are concerned.
        response = response.with_controller_id(node);
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(broker.cluster_id.clone())));
    }
    response
}

async fn lookup_or_create(
    broker: &Broker,
    live: &[BrokerRecord],
    version: i16,
    name: TopicName,
    auto_create: bool,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.catalog.by_name(&name) {
        return describe(live, version, &topic);
    }
    if let Err(e) = validate_topic_name(&name) {
        return topic_error(Some(name), uuid::Uuid::nil(), e.code);
    }
    // Created through another broker since this one last followed the store.
    match crate::broker::cluster::sync_named(broker, &name).await {
        Ok(Some(topic)) => return describe(live, version, &topic),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, topic = %name.as_str(), "cannot look the topic up in the metadata store");
            return topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::LeaderNotAvailable,
            );
        }
    }
    if !auto_create {
        return topic_error(
            Some(name),
            uuid::Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    let partitions = broker.config.kafka.default_partitions;
    match create_topic(broker, &name, partitions, BTreeMap::new(), false).await {
        Ok(Some(topic)) => describe(live, version, &topic),
        // Lost a race with another creator: describe theirs.
        Err(_) | Ok(None) => match broker.catalog.by_name(&name) {
            Some(topic) => describe(live, version, &topic),
            None => topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::LeaderNotAvailable,
            ),
        },
    }
}
