//! CreateTopics: validates names, partition counts and configs, then creates
//! each topic on its own (one bad topic does not fail the others).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topic_configs::effective;
use crate::broker::topics::{TopicError, create_topic};

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.to_string();
        // Explicit replica assignments give the partition count (Kafka
        // wants num_partitions and replication_factor at -1 with them).
        let assigned = topic.assignments.len() as i32;
        let partitions = if assigned > 0 {
            assigned
        } else if topic.num_partitions == -1 {
            broker.config.kafka.default_partitions
        } else {
            topic.num_partitions
        };
        let mut configs = BTreeMap::new();
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        let mut invalid = None;
        for config in topic.configs {
            match config.value {
                Some(value) => {
                    configs.insert(config.name.to_string(), value.to_string());
                }
                None => {
                    invalid = Some(TopicError::new(
                        ResponseError::InvalidConfig,
                        format!("config {} has a null value", &*config.name),
                    ))
                }
            }
        }
        let assignment_error = if assigned > 0
            && (topic.num_partitions != -1 || topic.replication_factor != -1)
        {
            Some("with replica assignments, num_partitions and replication_factor must be -1")
        } else if !consecutive_from_zero(topic.assignments.iter().map(|a| a.partition_index))
            || topic.assignments.iter().any(|a| a.broker_ids.is_empty())
        {
            Some("replica assignments must cover partitions 0..n, each with at least one broker")
        } else {
            None
        };
        if let Some(message) = assignment_error {
            invalid = Some(TopicError::new(ResponseError::InvalidRequest, message));
        }
        if assigned == 0 && (topic.replication_factor == 0 || topic.replication_factor < -1) {
            invalid = Some(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor must be positive, got {}",
                    topic.replication_factor
                ),
            ));
        }
        let outcome = match invalid {
            Some(error) => Err(error),
            None => {
                create_topic(
                    broker,
                    &name,
                    partitions,
                    configs.clone(),
                    request.validate_only,
                )
                .await
            }
        };
        match outcome {
            Ok(created) => {
                // Durability comes from the object store, so every topic is
                // reported with replication factor 1 whatever was asked.
                if version >= 5 {
                    result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(effective_configs(broker, &configs)));
                }
                if let Some(topic) = created
                    && version >= 7
                {
                    result = result.with_topic_id(topic.record.id.0);
                }
            }
            Err(error) => {
                tracing::debug!(topic = %name, code = ?error.code, message = %error.message, "create topic refused");
                result = result
                    .with_error_code(error.code.code())
                    .with_error_message(Some(str_bytes(error.message)));
                if version >= 5 {
                    result = result
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_configs(None);
                }
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn effective_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    effective(broker, overrides)
        .into_iter()
        .map(|(def, value, is_override)| {
            // TOPIC_CONFIG or DEFAULT_CONFIG
            let source = if is_override { 1 } else { 5 };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(def.name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source)
        })
        .collect()
}

/// Whether the partition indexes are exactly 0..n, in any order.
fn consecutive_from_zero(indexes: impl Iterator<Item = i32>) -> bool {
    let mut indexes: Vec<i32> = indexes.collect();
    indexes.sort_unstable();
    indexes.iter().enumerate().all(|(i, p)| *p == i as i32)
}
