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
use crate::broker::topics::{TopicError, create_topic, topic_config_defaults};

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.to_string();
        let partitions = if topic.num_partitions == -1 {
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
        if topic.replication_factor == 0 || topic.replication_factor < -1 {
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
    topic_config_defaults(broker)
        .into_iter()
        .map(|(name, _, default)| {
            let (value, source) = match overrides.get(name) {
                Some(v) => (v.clone(), 1), // TOPIC_CONFIG
                None => (default, 5),      // DEFAULT_CONFIG
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source)
        })
        .collect()
}
