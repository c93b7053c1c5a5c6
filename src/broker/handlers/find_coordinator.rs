//! FindCoordinator: a group's or transactional id's coordinator is the
//! leader of the `__consumer_offsets` partition its key hashes to (see
//! `Broker::coordinator_for`); the first lookup creates that topic, as in
//! Kafka. v0-v3 ask for one key; v4+ batch keys.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

type Found = (BrokerId, StrBytes, i32);

fn lookup(
    broker: &Broker,
    listener: &str,
    key_type: i8,
    key: &str,
) -> Result<Found, (ResponseError, &'static str)> {
    match key_type {
        KEY_GROUP if key.is_empty() => {
            return Err((ResponseError::InvalidGroupId, "the group id is empty"));
        }
        KEY_TRANSACTION if key.is_empty() => {
            return Err((
                ResponseError::InvalidRequest,
                "the transactional id is empty",
            ));
        }
        KEY_GROUP | KEY_TRANSACTION => {}
        _ => {
            return Err((
                ResponseError::InvalidRequest,
                "unknown coordinator key type",
            ));
        }
    }
    let Some(coordinator) = broker.coordinator_for(key) else {
        return Err((
            ResponseError::CoordinatorNotAvailable,
            "the coordinator is moving; retry",
        ));
    };
    match coordinator.endpoint(listener) {
        Some((host, port)) => Ok((
            BrokerId(coordinator.node_id),
            str_bytes(host.to_string()),
            port,
        )),
        None => Err((
            ResponseError::CoordinatorNotAvailable,
            "the coordinator has no listener of the name this connection uses",
        )),
    }
}

pub async fn handle(
    broker: &Broker,
    listener: &str,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // As Kafka creates __consumer_offsets when a group coordinator is first
    // looked for.
    crate::broker::topics::ensure_offsets_topic(broker).await;
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = lookup(broker, listener, request.key_type, &key);
                let entry = Coordinator::default().with_key(StrBytes::from_string(key.to_string()));
                match found {
                    Ok((node, host, port)) => {
                        entry.with_node_id(node).with_host(host).with_port(port)
                    }
                    Err((code, message)) => entry
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let key_type = if version >= 1 {
        request.key_type
    } else {
        KEY_GROUP
    };
    match lookup(broker, listener, key_type, &request.key) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err((code, message)) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(message)))
            } else {
                response
            }
        }
    }
}
