//! DeleteTopics: by name (v1-v5) or by topic id (v6).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topics::{TopicError, delete_topic, find_topic};
use crate::metadata::TopicId;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // (name, id) pairs as the client named them.
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut results = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        // By name, a topic created through another broker since this one
        // last followed the store is found there.
        let topic = match &name {
            Some(name) => find_topic(broker, name).await,
            None => broker.catalog.by_id(TopicId(id)).ok_or_else(|| {
                TopicError::new(ResponseError::UnknownTopicId, "topic does not exist")
            }),
        };
        let mut result = DeletableTopicResult::default().with_name(name.clone());
        if version >= 6 {
            result = result.with_topic_id(id);
        }
        let topic = match topic {
            Ok(topic) => topic,
            Err(error) => {
                results.push(
                    result
                        .with_error_code(error.code.code())
                        .with_error_message((version >= 5).then(|| str_bytes(error.message))),
                );
                continue;
            }
        };
        result = result.with_name(Some(TopicName(str_bytes(topic.record.name.clone()))));
        if version >= 6 {
            result = result.with_topic_id(topic.record.id.0);
        }
        if !broker.config.kafka.delete_topic_enable {
            results.push(
                result
                    .with_error_code(ResponseError::TopicDeletionDisabled.code())
                    .with_error_message(
                        (version >= 5)
                            .then(|| str_bytes("topic deletion is disabled on this broker")),
                    ),
            );
            continue;
        }
        if let Err(error) = delete_topic(broker, topic.record.id).await {
            result = result
                .with_error_code(error.code.code())
                .with_error_message((version >= 5).then(|| str_bytes(error.message)));
        }
        results.push(result);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
