//! Topic administration shared by CreateTopics, DeleteTopics,
//! CreatePartitions, the config-altering APIs and Metadata auto-creation:
//! name rules, and the sequences that keep the metadata store and the
//! in-memory catalog in step (store first, then catalog, under
//! `Broker::admin_lock`). Topic configs live in `topic_configs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::Broker;
use super::topic_configs::validate_configs;
use crate::metadata::{MetadataError, TopicId};
use crate::storage::catalog::TopicState;
use crate::storage::partition::PartitionLog;

/// Kafka's internal topic for group offsets. Strata keeps offsets in its
/// metadata store; the topic exists (created, as in Kafka, when a client
/// first looks for a group coordinator) so that tools and clients that
/// expect it find it, marked internal. It stays empty: clients cannot
/// produce to it, delete it or grow it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether `name` is an internal topic (see [`OFFSETS_TOPIC`]).
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// The error for a client write or admin change to an internal topic.
pub fn internal_topic_error(name: &str) -> TopicError {
    TopicError::new(
        ResponseError::InvalidTopicException,
        format!("'{name}' is an internal topic: clients cannot write, delete or alter it"),
    )
}

/// Creates [`OFFSETS_TOPIC`] if it does not exist yet, with
/// `groups.offsets_topic_num_partitions` partitions.
pub async fn ensure_offsets_topic(broker: &Broker) {
    if broker.catalog.by_name(OFFSETS_TOPIC).is_some() {
        return;
    }
    let partitions = broker.config.groups.offsets_topic_num_partitions;
    let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    match create_topic(broker, OFFSETS_TOPIC, partitions, configs, false).await {
        Ok(_) => {}
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {}
        Err(e) => tracing::warn!(error = %e.message, "cannot create {OFFSETS_TOPIC}"),
    }
}

/// Upper bound on partitions per topic, so one request cannot make the broker
/// allocate without limit.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// An error for one topic, with the Kafka code a handler puts on the wire.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| {
        Err(TopicError::new(
            ResponseError::InvalidTopicException,
            format!("invalid topic name '{name}': {why}"),
        ))
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return invalid("longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The effective `max.message.bytes` of a topic.
pub fn max_message_bytes(broker: &Broker, topic: &TopicState) -> usize {
    topic
        .record
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(broker.config.kafka.message_max_bytes.max(0) as usize)
}

/// Creates a topic in the metadata store and the catalog (`None` when
/// `validate_only` and everything checked out).
pub async fn create_topic(
    broker: &Broker,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Option<Arc<TopicState>>, TopicError> {
    validate_topic_name(name)?;
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!(
                "number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}"
            ),
        ));
    }
    validate_configs(&configs)?;
    let _guard = broker.admin_lock.lock().await;
    if broker.catalog.by_name(name).is_some() {
        return Err(TopicError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists"),
        ));
    }
    if validate_only {
        return Ok(None);
    }
    let record = broker
        .metadata
        .create_topic(name, partitions, configs, broker.cluster.candidates())
        .await
        .map_err(|e| match e {
            MetadataError::TopicExists(_) => {
                TopicError::new(ResponseError::TopicAlreadyExists, e.to_string())
            }
            MetadataError::Unavailable(_) => {
                TopicError::new(ResponseError::RequestTimedOut, e.to_string())
            }
            other => TopicError::new(ResponseError::UnknownServerError, other.to_string()),
        })?;
    let commits = crate::storage::partition::topic_commits();
    let leaders = broker.cluster.candidates();
    let logs = (0..partitions)
        .map(|p| {
            let log = PartitionLog::new(record.id, p, 0, 0, 0, Vec::new(), Arc::clone(&commits));
            log.set_leader(crate::metadata::leader_of(&leaders, p), 0);
            Arc::new(log)
        })
        .collect();
    tracing::info!(topic = name, id = %record.id, partitions, "topic created");
    Ok(Some(broker.catalog.insert(TopicState {
        record,
        partitions: logs,
    })))
}

/// Deletes a topic: its metadata (chunks included) now, its objects at the
/// next sweep once no other topic's chunks share them.
pub async fn delete_topic(broker: &Broker, id: TopicId) -> Result<(), TopicError> {
    let _guard = broker.admin_lock.lock().await;
    let Some(topic) = broker.catalog.by_id(id) else {
        return Err(TopicError::new(
            ResponseError::UnknownTopicOrPartition,
            "unknown topic",
        ));
    };
    if is_internal(&topic.record.name) {
        return Err(internal_topic_error(&topic.record.name));
    }
    broker
        .metadata
        .delete_topic(id)
        .await
        .map_err(|e| TopicError::new(ResponseError::UnknownServerError, e.to_string()))?;
    broker.catalog.remove(id);
    broker.writer.forget_topic(id);
    tracing::info!(topic = %topic.record.name, %id, "topic deleted");
    Ok(())
}

/// Replaces a topic's config overrides (already validated): stored first,
/// then in effect for the next request, without a restart.
pub async fn set_topic_configs(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<(), TopicError> {
    let _guard = broker.admin_lock.lock().await;
    let topic = known_topic(broker, name).await?;
    broker
        .metadata
        .set_topic_configs(topic.record.id, configs.clone())
        .await
        .map_err(|e| TopicError::new(ResponseError::UnknownServerError, e.to_string()))?;
    let mut record = topic.record.clone();
    record.configs = configs;
    broker.catalog.insert(TopicState {
        record,
        partitions: topic.partitions.clone(),
    });
    tracing::info!(topic = name, "topic configs changed");
    Ok(())
}

/// The topic named `name`, from the catalog or, when it was created through
/// another broker since this one last followed the store, from the store;
/// UNKNOWN_TOPIC_OR_PARTITION if it does not exist.
pub async fn find_topic(broker: &Broker, name: &str) -> Result<Arc<TopicState>, TopicError> {
    found(name, super::cluster::sync_named(broker, name).await)
}

/// [`find_topic`] for a caller holding `admin_lock`.
async fn known_topic(broker: &Broker, name: &str) -> Result<Arc<TopicState>, TopicError> {
    found(name, super::cluster::sync_named_locked(broker, name).await)
}

fn found(
    name: &str,
    lookup: anyhow::Result<Option<Arc<TopicState>>>,
) -> Result<Arc<TopicState>, TopicError> {
    match lookup {
        Ok(Some(topic)) => Ok(topic),
        Ok(None) => Err(unknown_topic(name)),
        Err(e) => Err(TopicError::new(
            ResponseError::UnknownServerError,
            format!("cannot read topic '{name}' from the metadata store: {e}"),
        )),
    }
}

fn unknown_topic(name: &str) -> TopicError {
    TopicError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("topic '{name}' does not exist"),
    )
}

/// Grows a topic to `count` partitions (CreatePartitions).
pub async fn add_partitions(
    broker: &Broker,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), TopicError> {
    let _guard = broker.admin_lock.lock().await;
    let topic = known_topic(broker, name).await?;
    if is_internal(name) {
        return Err(internal_topic_error(name));
    }
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!(
                "topic '{name}' has {current} partitions; the new count must be higher, got {count}"
            ),
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}, got {count}"),
        ));
    }
    if validate_only {
        return Ok(());
    }
    let added = broker
        .metadata
        .add_partitions(topic.record.id, count, broker.cluster.candidates())
        .await
        .map_err(|e| TopicError::new(ResponseError::UnknownServerError, e.to_string()))?;
    let commits = topic
        .partitions
        .first()
        .map(|p| p.topic_commits())
        .unwrap_or_else(crate::storage::partition::topic_commits);
    let mut partitions = topic.partitions.clone();
    for p in added {
        let log = PartitionLog::new(
            topic.record.id,
            p.partition,
            p.leader_epoch,
            p.log_start_offset,
            p.high_watermark,
            Vec::new(),
            Arc::clone(&commits),
        );
        log.set_leader(p.leader_id, p.leader_epoch);
        partitions.push(Arc::new(log));
    }
    let mut record = topic.record.clone();
    record.partitions = count;
    broker.catalog.insert(TopicState { record, partitions });
    tracing::info!(topic = name, from = current, to = count, "partitions added");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "has space", "ünïcode", &"x".repeat(250)] {
            let err = validate_topic_name(bad).expect_err(bad);
            assert_eq!(err.code, ResponseError::InvalidTopicException);
        }
    }
}
