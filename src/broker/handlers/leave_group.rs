//! LeaveGroup: one member (v0-v2) or a batch of members by id or static
//! instance id (v3+, KIP-345); the rest of the group rebalances.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::broker::Broker;

pub fn handle(broker: &Broker, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match broker.groups.leave(&request.group_id, &members) {
        Err(code) => LeaveGroupResponse::default().with_error_code(code.code()),
        Ok(results) if version < 3 => {
            let code = results
                .first()
                .copied()
                .flatten()
                .map(|c| c.code())
                .unwrap_or(0);
            LeaveGroupResponse::default().with_error_code(code)
        }
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), result)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_error_code(result.map(|c| c.code()).unwrap_or(0))
                })
                .collect(),
        ),
    }
}
