//! DescribeConfigs for topic resources (every known config with its value and
//! whether it is a default or an override) and broker resources (the broker
//! settings that act as topic defaults).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topic_configs::{ConfigType, effective};
use crate::broker::topics::find_topic;
use crate::config::join_host_port;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn entry(
    name: &str,
    value: String,
    kind: ConfigType,
    source: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_config_type(kind.code())
        .with_read_only(read_only)
}

fn synonym(name: &str, value: String, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

fn broker_configs(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let k = &broker.config.kafka;
    let joined = |f: &dyn Fn(&crate::broker::Listener) -> String| {
        broker
            .listeners
            .iter()
            .map(|l| f(l))
            .collect::<Vec<_>>()
            .join(",")
    };
    let advertised = joined(&|l| {
        let port = u16::try_from(l.advertised_port).unwrap_or(0);
        format!("{}://{}", l.name, join_host_port(&l.advertised_host, port))
    });
    let listeners = joined(&|l| format!("{}://{}", l.name, l.local_addr));
    let protocols = joined(&|l| format!("{}:{}", l.name, l.protocol.name()));
    vec![
        entry(
            "advertised.listeners",
            advertised,
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "auto.create.topics.enable",
            k.auto_create_topics.to_string(),
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "broker.id",
            broker.node_id.to_string(),
            ConfigType::Int,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "delete.topic.enable",
            k.delete_topic_enable.to_string(),
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "inter.broker.listener.name",
            broker.inter_broker_listener.clone(),
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "listener.security.protocol.map",
            protocols,
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "listeners",
            listeners,
            ConfigType::String,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "log.retention.bytes",
            k.retention_bytes.to_string(),
            ConfigType::Long,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "log.retention.ms",
            k.retention_ms.to_string(),
            ConfigType::Long,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "message.max.bytes",
            k.message_max_bytes.to_string(),
            ConfigType::Int,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "num.partitions",
            k.default_partitions.to_string(),
            ConfigType::Int,
            SOURCE_STATIC_BROKER,
            true,
        ),
        entry(
            "socket.request.max.bytes",
            k.max_frame_bytes.to_string(),
            ConfigType::Int,
            SOURCE_STATIC_BROKER,
            true,
        ),
    ]
}

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let base = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let configs = match resource.resource_type {
            // A topic created through another broker since this one last
            // followed the store is found there.
            RESOURCE_TOPIC => match find_topic(broker, &name).await {
                Ok(topic) => effective(broker, &topic.record.configs)
                    .into_iter()
                    .map(|(def, value, is_override)| {
                        let default = def.default_value(broker);
                        let source = if is_override {
                            SOURCE_TOPIC
                        } else {
                            SOURCE_DEFAULT
                        };
                        let described = entry(def.name, value.clone(), def.kind, source, false);
                        if !request.include_synonyms {
                            return described;
                        }
                        // Kafka's synonyms, most specific first: the topic
                        // override, then the broker-level default.
                        let mut synonyms = Vec::new();
                        if is_override {
                            synonyms.push(synonym(def.name, value, SOURCE_TOPIC));
                        }
                        synonyms.push(synonym(
                            def.broker_synonym().unwrap_or(def.name),
                            default,
                            SOURCE_DEFAULT,
                        ));
                        described.with_synonyms(synonyms)
                    })
                    .collect::<Vec<_>>(),
                Err(error) => {
                    results.push(
                        base.with_error_code(error.code.code())
                            .with_error_message(Some(str_bytes(error.message))),
                    );
                    continue;
                }
            },
            RESOURCE_BROKER => {
                if !name.is_empty() && name != broker.node_id.to_string() {
                    results.push(
                        base.with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes(format!(
                                "unknown broker '{name}'"
                            )))),
                    );
                    continue;
                }
                broker_configs(broker)
            }
            other => {
                results.push(
                    base.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(str_bytes(format!(
                            "unsupported resource type {other}"
                        )))),
                );
                continue;
            }
        };
        let configs = match &resource.configuration_keys {
            Some(keys) => configs
                .into_iter()
                .filter(|c| keys.iter().any(|k| **k == *c.name))
                .collect(),
            None => configs,
        };
        let configs = if version >= 3 {
            configs
        } else {
            configs.into_iter().map(|c| c.with_config_type(0)).collect()
        };
        results.push(base.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(results)
}
