//! JoinGroup: registers the member (in request order) and waits, as a task,
//! until the rebalance completes. See `broker::group` for the state machine.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::group::state::JoinResult;
use crate::broker::group::{JoinRequest, Pending};

pub fn prepare(
    broker: &Arc<Broker>,
    version: i16,
    request: JoinGroupRequest,
    client_id: String,
    peer: SocketAddr,
) -> Pending<JoinResult> {
    let session = request.session_timeout_ms;
    broker.groups.join(JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: session,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            session
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    bytes::Bytes::copy_from_slice(&p.metadata),
                )
            })
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    })
}

pub fn response(version: i16, result: JoinResult) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id))
                .with_metadata(metadata);
            if version >= 5 {
                member.with_group_instance_id(instance.map(str_bytes))
            } else {
                member
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_name(Some(str_bytes(result.protocol_name.unwrap_or_default())))
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(result.protocol_type.map(str_bytes));
    }
    if version >= 9 {
        response = response.with_skip_assignment(result.skip_assignment);
    }
    response
}

/// What a waiting JoinGroup gets if the coordinator dropped it.
pub fn dropped() -> JoinResult {
    JoinResult::error(ResponseError::CoordinatorNotAvailable, "")
}
