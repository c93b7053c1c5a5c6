//! Topic administration shared by CreateTopics, DeleteTopics, Metadata
//! auto-creation and DescribeConfigs: name rules, the topic configs Strata
//! knows with their defaults, and the create/delete sequences that keep the
//! metadata store and the in-memory catalog in step.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::Broker;
use crate::metadata::{MetadataError, TopicId};
use crate::storage::catalog::TopicState;
use crate::storage::partition::PartitionLog;

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

/// The type of a topic config's value, for validation and DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Long,
    Int,
    String,
    List,
}

impl ConfigType {
    /// DescribeConfigs `config_type` code.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::String => 2,
            ConfigType::List => 7,
        }
    }
}

/// `(name, type, default)` of every topic config Strata accepts.
pub fn topic_config_defaults(broker: &Broker) -> Vec<(&'static str, ConfigType, String)> {
    let kafka = &broker.config.kafka;
    vec![
        ("cleanup.policy", ConfigType::List, "delete".into()),
        ("compression.type", ConfigType::String, "producer".into()),
        (
            "max.message.bytes",
            ConfigType::Int,
            kafka.message_max_bytes.to_string(),
        ),
        (
            "message.timestamp.type",
            ConfigType::String,
            "CreateTime".into(),
        ),
        ("min.insync.replicas", ConfigType::Int, "1".into()),
        ("retention.bytes", ConfigType::Long, "-1".into()),
        (
            "retention.ms",
            ConfigType::Long,
            kafka.retention_ms.to_string(),
        ),
        ("segment.bytes", ConfigType::Int, "1073741824".into()),
        ("segment.ms", ConfigType::Long, "604800000".into()),
    ]
}

fn validate_config_value(name: &str, kind: ConfigType, value: &str) -> Result<(), String> {
    let ok = match (name, kind) {
        ("cleanup.policy", _) => value
            .split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact")),
        ("compression.type", _) => matches!(
            value,
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"
        ),
        ("message.timestamp.type", _) => matches!(value, "CreateTime" | "LogAppendTime"),
        ("retention.ms" | "retention.bytes", ConfigType::Long) => {
            value.parse::<i64>().is_ok_and(|v| v >= -1)
        }
        (_, ConfigType::Long) => value.parse::<i64>().is_ok_and(|v| v >= 0),
        (_, ConfigType::Int) => value.parse::<i32>().is_ok_and(|v| v >= 0),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value '{value}' for config {name}"))
    }
}

/// Checks requested config overrides against the known configs.
pub fn validate_configs(
    broker: &Broker,
    configs: &BTreeMap<String, String>,
) -> Result<(), TopicError> {
    let known = topic_config_defaults(broker);
    for (name, value) in configs {
        let Some((_, kind, _)) = known.iter().find(|(n, _, _)| n == name) else {
            return Err(TopicError::new(
                ResponseError::InvalidConfig,
                format!("unknown topic config '{name}'"),
            ));
        };
        validate_config_value(name, *kind, value)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
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
    validate_configs(broker, &configs)?;
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
        .create_topic(name, partitions, configs, broker.node_id)
        .await
        .map_err(|e| match e {
            MetadataError::TopicExists(_) => {
                TopicError::new(ResponseError::TopicAlreadyExists, e.to_string())
            }
            other => TopicError::new(ResponseError::UnknownServerError, other.to_string()),
        })?;
    let commits = crate::storage::partition::topic_commits();
    let logs = (0..partitions)
        .map(|p| {
            Arc::new(PartitionLog::new(
                record.id,
                p,
                0,
                0,
                0,
                Vec::new(),
                Arc::clone(&commits),
            ))
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

    #[test]
    fn config_values_are_checked() {
        assert!(validate_config_value("retention.ms", ConfigType::Long, "-1").is_ok());
        assert!(validate_config_value("retention.ms", ConfigType::Long, "-2").is_err());
        assert!(
            validate_config_value("cleanup.policy", ConfigType::List, "compact,delete").is_ok()
        );
        assert!(validate_config_value("cleanup.policy", ConfigType::List, "forever").is_err());
        assert!(validate_config_value("max.message.bytes", ConfigType::Int, "abc").is_err());
    }
}
