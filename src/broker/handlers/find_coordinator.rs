//! FindCoordinator: this broker coordinates every group (single node); the
//! first lookup creates the internal `__consumer_offsets` topic, as in Kafka.
//! v0-v3 ask for one key; v4+ batch keys. It is also the transaction
//! coordinator of every transactional id (key type 1).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

fn lookup(key_type: i8, key: &str) -> Result<(), (ResponseError, &'static str)> {
    match key_type {
        KEY_GROUP if key.is_empty() => {
            Err((ResponseError::InvalidGroupId, "the group id is empty"))
        }
        KEY_GROUP => Ok(()),
        KEY_TRANSACTION if key.is_empty() => Err((
            ResponseError::InvalidRequest,
            "the transactional id is empty",
        )),
        KEY_TRANSACTION => Ok(()),
        _ => Err((
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        )),
    }
}

pub async fn handle(
    broker: &Broker,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // As Kafka creates __consumer_offsets when a group coordinator is first
    // looked for.
    if request.key_type == KEY_GROUP {
        crate::broker::topics::ensure_offsets_topic(broker).await;
    }
    let node = BrokerId(broker.node_id);
    let host = str_bytes(broker.advertised_host.clone());
    let port = broker.advertised_port;
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = lookup(request.key_type, &key);
                let entry = Coordinator::default().with_key(StrBytes::from_string(key.to_string()));
                match found {
                    Ok(()) => entry
                        .with_node_id(node)
                        .with_host(host.clone())
                        .with_port(port),
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
    match lookup(key_type, &request.key) {
        Ok(()) => FindCoordinatorResponse::default()
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
