//! SyncGroup: the leader hands in assignments; every member waits (as a
//! task) for its own.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::group::Pending;
use crate::broker::group::state::SyncResult;

pub fn prepare(broker: &Arc<Broker>, request: SyncGroupRequest) -> Pending<SyncResult> {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                bytes::Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let instance = request.group_instance_id.map(|s| s.to_string());
    let protocol_type = request.protocol_type.map(|s| s.to_string());
    let protocol_name = request.protocol_name.map(|s| s.to_string());
    broker.groups.sync(
        &request.group_id,
        request.generation_id,
        &request.member_id,
        instance.as_deref(),
        protocol_type.as_deref(),
        protocol_name.as_deref(),
        assignments,
    )
}

pub fn response(version: i16, result: SyncResult) -> SyncGroupResponse {
    let response = SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        response
    }
}

pub fn dropped() -> SyncResult {
    SyncResult::error(ResponseError::CoordinatorNotAvailable)
}
