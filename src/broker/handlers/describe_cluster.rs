//! DescribeCluster: the cluster id and every live broker (as Metadata lists
//! them, with their racks); the broker asked is the controller as far as
//! clients are concerned (any broker takes admin requests). With no
//! authorizer every cluster operation is allowed, so the authorized
//! operations, when asked for, are all of them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::broker::Broker;

const ENDPOINT_BROKERS: i8 = 1;

/// ACL operation codes that apply to the cluster resource: CREATE (5),
/// ALTER (7), DESCRIBE (8), CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10),
/// ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12).
fn all_cluster_operations() -> i32 {
    [5, 7, 8, 9, 10, 11, 12]
        .iter()
        .fold(0, |bits, op| bits | (1 << op))
}

pub fn handle(
    broker: &Broker,
    listener: &str,
    version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_endpoint_type(ENDPOINT_BROKERS);
    if version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "this is a broker endpoint; Strata has no separate controller endpoint",
            )))
            .with_controller_id(BrokerId(-1))
            .with_cluster_authorized_operations(i32::MIN);
    }
    let operations = if request.include_cluster_authorized_operations {
        all_cluster_operations()
    } else {
        i32::MIN
    };
    let brokers = broker
        .live_on(listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    response
        .with_controller_id(BrokerId(broker.node_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations)
}
