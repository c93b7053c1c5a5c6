//! Group inspection and cleanup: DescribeGroups, ListGroups, DeleteGroups,
//! OffsetDelete. Groups are known from the coordinator (live membership) and
//! from the metadata store (committed offsets, recorded protocol type), so an
//! empty group stays visible across restarts until its offsets expire.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::*;

use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;

/// `group -> (protocol type, state)` of every group this broker knows.
async fn known_groups(
    broker: &Broker,
) -> Result<BTreeMap<String, (String, &'static str)>, ResponseError> {
    let stored = broker.metadata.stored_groups().await.map_err(|error| {
        tracing::warn!(%error, "cannot list stored groups");
        ResponseError::CoordinatorNotAvailable
    })?;
    let mut groups: BTreeMap<String, (String, &'static str)> =
        stored.into_iter().map(|(g, t)| (g, (t, "Empty"))).collect();
    groups.extend(broker.groups.live_groups());
    Ok(groups)
}

pub async fn describe(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    for id in &request.groups {
        if broker.coordinates(id) {
            // Membership of a group taken over: as stored (a failed read
            // shows what this broker holds).
            let _ = broker.groups.load(id).await;
        }
    }
    let known = known_groups(broker).await.unwrap_or_default();
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            if let Some(view) = broker.groups.view(&id) {
                let members = view
                    .members
                    .into_iter()
                    .map(|(member, instance, client, host, metadata, assignment)| {
                        let m = DescribedGroupMember::default()
                            .with_member_id(str_bytes(member))
                            .with_client_id(str_bytes(client))
                            .with_client_host(str_bytes(host))
                            .with_member_metadata(metadata)
                            .with_member_assignment(assignment);
                        if version >= 4 {
                            m.with_group_instance_id(instance.map(str_bytes))
                        } else {
                            m
                        }
                    })
                    .collect();
                return described
                    .with_group_state(str_bytes(view.state))
                    .with_protocol_type(str_bytes(view.protocol_type))
                    .with_protocol_data(str_bytes(view.protocol))
                    .with_members(members);
            }
            match known.get(&id.to_string()) {
                Some((protocol_type, state)) => described
                    .with_group_state(str_bytes(*state))
                    .with_protocol_type(str_bytes(protocol_type.clone())),
                // Kafka describes an unknown group as Dead, without an error
                // up to v5; v6 answers GROUP_ID_NOT_FOUND.
                None if version >= 6 => described
                    .with_group_state(str_bytes("Dead"))
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "group '{}' does not exist",
                        &*id
                    )))),
                None => described.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list(
    broker: &Arc<Broker>,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let stored = match known_groups(broker).await {
        Ok(known) => known,
        Err(code) => return ListGroupsResponse::default().with_error_code(code.code()),
    };
    // Stored groups without live state are classic until a member says otherwise.
    let mut known: BTreeMap<String, (String, &'static str, &'static str)> = stored
        .into_iter()
        .map(|(id, (protocol_type, state))| (id, (protocol_type, state, "classic")))
        .collect();
    known.extend(broker.groups.live_groups_typed());
    let lower =
        |filter: &[StrBytes]| -> Vec<String> { filter.iter().map(|s| s.to_lowercase()).collect() };
    let states = lower(&request.states_filter);
    let types = lower(&request.types_filter);
    let groups = known
        .into_iter()
        .filter(|(_, (_, state, _))| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|(_, (_, _, kind))| types.is_empty() || types.contains(&kind.to_string()))
        .map(|(id, (protocol_type, state, kind))| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(kind));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let known = known_groups(broker).await;
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in request.groups_names {
        let code = match &known {
            Err(code) => Some(*code),
            Ok(_) if broker.groups.has_members(&id) => Some(ResponseError::NonEmptyGroup),
            Ok(known) if !known.contains_key(&id.to_string()) => {
                Some(ResponseError::GroupIdNotFound)
            }
            Ok(_) => match broker.metadata.delete_group(&id).await {
                Ok(()) => {
                    broker.groups.forget(&id);
                    None
                }
                Err(error) => {
                    tracing::warn!(group = %&*id, %error, "group delete failed");
                    Some(ResponseError::CoordinatorNotAvailable)
                }
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code.map(|c| c.code()).unwrap_or(0)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn delete_offsets(
    broker: &Arc<Broker>,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    match known_groups(broker).await {
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code.code()),
        Ok(known) if !known.contains_key(&group) => {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        }
        Ok(_) => {}
    }
    let subscribed = broker.groups.subscribed_topics(&group);
    let mut doomed = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let state = broker.catalog.by_name(&topic.name);
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let code = if subscribed.iter().any(|s| s.as_str() == &**topic.name) {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    match state
                        .as_ref()
                        .filter(|t| t.partition(p.partition_index).is_some())
                    {
                        None => Some(ResponseError::UnknownTopicOrPartition),
                        Some(t) => {
                            doomed.push((t.record.id, p.partition_index));
                            None
                        }
                    }
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.map(|c| c.code()).unwrap_or(0))
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(TopicName(str_bytes(topic.name.to_string())))
                .with_partitions(partitions),
        );
    }
    if let Err(error) = broker.metadata.delete_offsets(&group, doomed).await {
        tracing::warn!(%group, %error, "offset delete failed");
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
