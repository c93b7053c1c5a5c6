//! DeleteTopics: by name (v1-v5) or by topic id (v6).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topics::delete_topic;
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
        let topic = match &name {
            // Created through another broker since this one last
            // followed the store: found there.
            Some(name) => match crate::broker::cluster::sync_named(broker, name).await {
                Ok(topic) => topic,
                Err(error) => {
                    results.push(
                        DeletableTopicResult::default()
                            .with_name(Some(name.clone()))
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_error_message((version >= 5).then(|| {
                                str_bytes(format!("cannot read the metadata store: {error}"))
                            })),
                    );
                    continue;
                }
            },
            None => broker.catalog.by_id(TopicId(id)),
        };
        let mut result = DeletableTopicResult::default().with_name(name.clone());
        if version >= 6 {
            result = result.with_topic_id(id);
        }
        let Some(topic) = topic else {
            let code = if name.is_none() {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            results.push(
                result
                    .with_error_code(code.code())
                    .with_error_message((version >= 5).then(|| str_bytes("topic does not exist"))),
            );
            continue;
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
