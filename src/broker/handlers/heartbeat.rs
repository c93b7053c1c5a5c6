//! Heartbeat: keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS) or that it was fenced.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub fn handle(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let instance = request.group_instance_id.map(|s| s.to_string());
    let code = match broker.groups.heartbeat(
        &request.group_id,
        request.generation_id,
        &request.member_id,
        instance.as_deref(),
    ) {
        Ok(()) => 0,
        Err(code) => code.code(),
    };
    HeartbeatResponse::default().with_error_code(code)
}
