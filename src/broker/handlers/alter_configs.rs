//! IncrementalAlterConfigs and AlterConfigs for topics. The new set of
//! overrides is validated as a whole (Kafka's names, types and ranges, see
//! `topic_configs`), stored in the metadata store, and in effect from the
//! next request on. Incremental operations: SET, DELETE, APPEND and
//! SUBTRACT (list configs only); the legacy AlterConfigs replaces every
//! override. Broker configs are static in Strata (its config file), so
//! altering them is refused with INVALID_REQUEST, as Kafka refuses a config
//! it cannot change dynamically.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as LegacyResult;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topic_configs::{ConfigType, lookup, validate_configs};
use crate::broker::topics::{TopicError, find_topic, set_topic_configs};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn invalid_request(message: impl Into<String>) -> TopicError {
    TopicError::new(ResponseError::InvalidRequest, message)
}

/// Refuses what is not a topic; returns the topic's current overrides.
/// A topic created through another broker since this one last followed the
/// store is found there.
async fn current_overrides(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, TopicError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(find_topic(broker, name).await?.record.configs.clone()),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => Err(invalid_request(
            "broker configs are static in Strata: set them in its config file, \
             environment or flags and restart",
        )),
        other => Err(invalid_request(format!(
            "resource type {other} cannot be altered (topics only)"
        ))),
    }
}

/// Applies one incremental operation to `configs`.
fn apply_op(
    broker: &Broker,
    configs: &mut BTreeMap<String, String>,
    name: &str,
    op: i8,
    value: Option<String>,
) -> Result<(), TopicError> {
    let def = lookup(name).ok_or_else(|| {
        TopicError::new(
            ResponseError::InvalidConfig,
            format!("unknown topic config '{name}'"),
        )
    })?;
    match op {
        OP_SET => {
            let value = value.ok_or_else(|| {
                TopicError::new(
                    ResponseError::InvalidConfig,
                    format!("SET of {name} needs a value"),
                )
            })?;
            configs.insert(name.to_string(), value);
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            if def.kind != ConfigType::List {
                return Err(TopicError::new(
                    ResponseError::InvalidConfig,
                    format!("APPEND and SUBTRACT apply to list configs; {name} is not one"),
                ));
            }
            let current = configs
                .get(name)
                .cloned()
                .unwrap_or_else(|| def.default_value(broker));
            let mut items: Vec<String> = current
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let given: Vec<String> = value
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if op == OP_APPEND {
                for item in given {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            } else {
                items.retain(|item| !given.contains(item));
            }
            configs.insert(name.to_string(), items.join(","));
        }
        other => return Err(invalid_request(format!("unknown config operation {other}"))),
    }
    Ok(())
}

/// Validates the new overrides and stores them unless `validate_only`.
async fn store(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), TopicError> {
    validate_configs(&configs)?;
    if validate_only {
        return Ok(());
    }
    set_topic_configs(broker, name, configs).await
}

fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    names
        .filter(|n| !seen.insert(*n))
        .map(str::to_string)
        .next()
}

pub async fn incremental(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = async {
            let mut configs = current_overrides(broker, resource.resource_type, &name).await?;
            if let Some(dup) = duplicates(resource.configs.iter().map(|c| &*c.name)) {
                return Err(invalid_request(format!("config {dup} appears twice")));
            }
            for config in resource.configs {
                apply_op(
                    broker,
                    &mut configs,
                    &config.name,
                    config.config_operation,
                    config.value.map(|v| v.to_string()),
                )?;
            }
            store(broker, &name, configs, request.validate_only).await
        }
        .await;
        let mut result = IncrementalResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err(error) = outcome {
            tracing::debug!(resource = %name, code = ?error.code, message = %error.message, "alter configs refused");
            result = result
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(error.message)));
        }
        responses.push(result);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub async fn legacy(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = async {
            current_overrides(broker, resource.resource_type, &name).await?;
            if let Some(dup) = duplicates(resource.configs.iter().map(|c| &*c.name)) {
                return Err(invalid_request(format!("config {dup} appears twice")));
            }
            let mut configs = BTreeMap::new();
            for config in resource.configs {
                let value = config.value.ok_or_else(|| {
                    TopicError::new(
                        ResponseError::InvalidConfig,
                        format!("config {} has a null value", &*config.name),
                    )
                })?;
                configs.insert(config.name.to_string(), value.to_string());
            }
            store(broker, &name, configs, request.validate_only).await
        }
        .await;
        let mut result = LegacyResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err(error) = outcome {
            result = result
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(error.message)));
        }
        responses.push(result);
    }
    AlterConfigsResponse::default().with_responses(responses)
}
