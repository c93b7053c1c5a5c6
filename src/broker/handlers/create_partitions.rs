//! CreatePartitions: grows topics. New partitions start empty at offset 0;
//! existing data never moves. Replica assignments, when given, must name
//! one entry per new partition (every broker holds every partition's data
//! in the object store, so their broker ids do not place anything).

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topics::{TopicError, add_partitions};

pub async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen = BTreeSet::new();
    let repeated: BTreeSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.to_string();
        let outcome = if repeated.contains(&name) {
            Err(TopicError::new(
                ResponseError::InvalidRequest,
                format!("topic '{name}' appears more than once in the request"),
            ))
        } else {
            let current = broker
                .catalog
                .by_name(&name)
                .map(|t| t.partitions.len() as i32);
            match (&topic.assignments, current) {
                (Some(assignments), Some(current))
                    if assignments.len() as i64 != i64::from(topic.count) - i64::from(current)
                        || assignments.iter().any(|a| a.broker_ids.is_empty()) =>
                {
                    Err(TopicError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "{} replica assignments given for {} new partitions",
                            assignments.len(),
                            i64::from(topic.count) - i64::from(current)
                        ),
                    ))
                }
                _ => add_partitions(broker, &name, topic.count, request.validate_only).await,
            }
        };
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name);
        if let Err(error) = outcome {
            result = result
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(error.message)));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
