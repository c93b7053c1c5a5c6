//! Routes a decoded request header to its handler and encodes the response.
//! ApiVersions answers an unknown version with UNSUPPORTED_VERSION in the v0
//! layout so a client can downgrade. An API Strata does not implement is
//! answered with UNSUPPORTED_VERSION in its own response layout wherever
//! that layout has a top-level error code (ACLs, SASL, quotas,
//! telemetry, ...), so a client that sends it without checking ApiVersions
//! gets a clear error. What cannot be answered (a version no codec knows, an
//! unknown API key, a body that does not decode) closes the connection, as
//! Kafka does.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use super::Broker;
use super::authz::{self, Access};
use super::connection::Session;
use super::handlers;
use super::quotas::{QuotaType, user_of};
use super::security::acl::{Operation, ResourceType};
use crate::protocol::frame::{RequestFrame, encode_response};
use crate::protocol::versions::is_supported;

pub enum Dispatched {
    /// Ready now.
    Response(Bytes),
    /// Computed by a task; written in order when done. An error closes the
    /// connection (a response we could not encode is our bug; say so loudly).
    Deferred(BoxFuture<'static, Result<Bytes, String>>),
    /// Like `Deferred`, holding response memory until it is written.
    Held(BoxFuture<'static, Result<(Bytes, super::memory::ResponseMemory), String>>),
    /// acks=0 produce: Kafka sends nothing back.
    NoResponse,
}

fn decode<T: Decodable>(frame: &mut RequestFrame) -> Result<T, String> {
    T::decode(&mut frame.body, frame.api_version).map_err(|e| {
        format!(
            "malformed {:?} v{} request: {e}",
            frame.api_key, frame.api_version
        )
    })
}

/// What a response needs from its request. Deferred responses keep only this,
/// never the request frame, whose buffer may be up to `max_frame_bytes`.
#[derive(Debug, Clone, Copy)]
struct ResponseMeta {
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
}

fn encode<M: Encodable + HeaderVersion>(meta: &ResponseMeta, body: &M) -> Result<Bytes, String> {
    encode_response(meta.api_key, meta.api_version, meta.correlation_id, body).map_err(|e| {
        tracing::error!(api = ?meta.api_key, version = meta.api_version, error = %e, "cannot encode response");
        e.to_string()
    })
}

pub async fn dispatch(
    broker: &Arc<Broker>,
    mut frame: RequestFrame,
    session: &Session,
) -> Result<Dispatched, String> {
    let peer = session.peer;
    let listener = session.listener.name.as_str();
    let api = frame.api_key;
    let version = frame.api_version;
    let meta = ResponseMeta {
        api_key: api,
        api_version: version,
        correlation_id: frame.header.correlation_id,
    };
    if !is_supported(api, version) {
        if api == ApiKey::ApiVersions {
            let body = handlers::api_versions::unsupported_version();
            let bytes = encode_response(api, 0, frame.header.correlation_id, &body)
                .map_err(|e| e.to_string())?;
            return Ok(Dispatched::Response(bytes));
        }
        let known = api.valid_versions();
        if (known.min..=known.max).contains(&version)
            && let Some(response) = unsupported(&meta)
        {
            tracing::debug!(
                ?api,
                version,
                "answered an unimplemented API with UNSUPPORTED_VERSION"
            );
            return Ok(Dispatched::Response(response?));
        }
        return Err(format!("unsupported {api:?} version {version}"));
    }
    // A group or transactional id coordinated by another broker (its
    // `__consumer_offsets` partition moved): NOT_COORDINATOR, and the
    // client looks the coordinator up again.
    macro_rules! elsewhere {
        ($request:expr, $key:ident, $response:ty) => {
            if !broker.coordinates(&$request.$key) {
                let mut answer = <$response>::default();
                answer.error_code = kafka_protocol::error::ResponseError::NotCoordinator.code();
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
        };
    }
    // A group this broker took over since it last held it: its membership
    // is read from the store first (see group/stored.rs).
    macro_rules! loaded {
        ($request:expr, $key:ident, $response:ty) => {
            if let Err(code) = broker.groups.load(&$request.$key).await {
                let mut answer = <$response>::default();
                answer.error_code = code.code();
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
        };
    }
    let access = Access::new(broker, session);
    // A request refused as a whole: the API's response with `code`.
    macro_rules! refuse {
        ($response:ty, $code:expr) => {{
            let mut answer = <$response>::default();
            answer.error_code = $code.code();
            return Ok(Dispatched::Response(encode(&meta, &answer)?));
        }};
    }
    use kafka_protocol::error::ResponseError as E;
    let response = match api {
        ApiKey::ApiVersions => {
            let _request: kafka_protocol::messages::ApiVersionsRequest = decode(&mut frame)?;
            encode(&meta, &handlers::api_versions::handle())?
        }
        ApiKey::Metadata => {
            let mut request: kafka_protocol::messages::MetadataRequest = decode(&mut frame)?;
            let asked: Option<Vec<String>> = request
                .topics
                .as_ref()
                .filter(|t| !t.is_empty() || version > 0)
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                        .collect()
                });
            access.metadata_request(&mut request);
            let mut response = handlers::metadata::handle(broker, listener, version, request).await;
            access.metadata_response(&asked, &mut response);
            encode(&meta, &response)?
        }
        ApiKey::CreateTopics => {
            let mut request = decode(&mut frame)?;
            let denied = access.create_topics(&mut request);
            let mut response = handlers::create_topics::handle(broker, version, request).await;
            response.topics.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::DeleteTopics => {
            let mut request = decode(&mut frame)?;
            let denied = access.delete_topics(&mut request);
            let mut response = handlers::delete_topics::handle(broker, version, request).await;
            response.responses.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::DescribeConfigs => {
            let request = decode(&mut frame)?;
            let mut response = handlers::describe_configs::handle(broker, version, request).await;
            access.describe_configs(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::ListOffsets => {
            let mut request = decode(&mut frame)?;
            let denied = access.list_offsets(&mut request);
            let mut response = handlers::list_offsets::handle(broker, version, request).await;
            response.topics.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::Produce => {
            let request_bytes = frame.body.len() as f64;
            let mut request = decode(&mut frame)?;
            let denied = access.produce(&mut request);
            // producer_byte_rate: the request's bytes; past the quota the
            // response says how long to wait and the connection is muted.
            let throttle = match broker.quotas.active() {
                true => broker.quotas.record(
                    QuotaType::Produce,
                    user_of(&session.principal),
                    frame.header.client_id.as_deref().unwrap_or(""),
                    request_bytes,
                ),
                false => 0,
            };
            session.mute.for_ms(throttle);
            return match handlers::produce::prepare(broker, version, request).await? {
                None => Ok(Dispatched::NoResponse),
                Some(pending) => Ok(Dispatched::Deferred(
                    async move {
                        let mut response = pending.await;
                        response.throttle_time_ms = throttle.min(i32::MAX as u64) as i32;
                        response.responses.extend(denied);
                        encode(&meta, &response)
                    }
                    .boxed(),
                )),
            };
        }
        ApiKey::Fetch => {
            let mut request: kafka_protocol::messages::FetchRequest = decode(&mut frame)?;
            let denied = access.fetch(&mut request);
            // The most this response may hold (one batch past max_bytes
            // aside), reserved before anything is read.
            let cap = broker.config.kafka.fetch_max_bytes;
            let partition_bytes: usize = request
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| usize::try_from(p.partition_max_bytes).unwrap_or(0) + 64 * 1024)
                .sum();
            let most = usize::try_from(request.max_bytes)
                .ok()
                .filter(|&m| m > 0)
                .map_or(cap, |m| m.min(cap))
                .min(partition_bytes.max(64 * 1024))
                + 64 * 1024;
            // Reserved here, in request order: the responses of one
            // connection are written in order, so a later Fetch must not
            // take the memory an earlier one waits for.
            let mut memory = broker
                .memory
                .reserve_response(Arc::clone(&session.responses), most)
                .await
                .ok_or_else(|| "shutting down".to_string())?;
            let broker = Arc::clone(broker);
            let quota_client = broker.quotas.active().then(|| {
                (
                    user_of(&session.principal).to_string(),
                    frame.header.client_id.as_deref().unwrap_or("").to_string(),
                    Arc::clone(&session.mute),
                )
            });
            return Ok(Dispatched::Held(
                async move {
                    let mut response =
                        handlers::fetch::handle(Arc::clone(&broker), version, request, &mut memory)
                            .await;
                    response.responses.extend(denied);
                    let mut bytes = encode(&meta, &response)?;
                    // consumer_byte_rate: the response's bytes. A client still
                    // throttled gets no data, as in Kafka; either way a
                    // throttle mutes the connection.
                    if let Some((user, client, mute)) = quota_client {
                        match broker.quotas.fetch(&user, &client, bytes.len() as f64) {
                            Ok(throttle) => {
                                if throttle > 0 {
                                    mute.for_ms(throttle);
                                    response.throttle_time_ms =
                                        throttle.min(i32::MAX as u64) as i32;
                                    bytes = encode(&meta, &response)?;
                                }
                            }
                            Err(throttle) => {
                                mute.for_ms(throttle);
                                let throttled = kafka_protocol::messages::FetchResponse::default()
                                    .with_throttle_time_ms(throttle.min(i32::MAX as u64) as i32)
                                    .with_session_id(response.session_id);
                                bytes = encode(&meta, &throttled)?;
                            }
                        }
                    }
                    memory.keep_only(bytes.len());
                    Ok((bytes, memory))
                }
                .boxed(),
            ));
        }
        ApiKey::FindCoordinator => {
            let request: kafka_protocol::messages::FindCoordinatorRequest = decode(&mut frame)?;
            let key_type = if version >= 1 { request.key_type } else { 0 };
            let key = request.key.to_string();
            let mut response =
                handlers::find_coordinator::handle(broker, listener, version, request).await;
            access.find_coordinator(key_type, &key, &mut response);
            encode(&meta, &response)?
        }
        ApiKey::JoinGroup => {
            let request: kafka_protocol::messages::JoinGroupRequest = decode(&mut frame)?;
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::JoinGroupResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                group_id,
                kafka_protocol::messages::JoinGroupResponse
            );
            loaded!(
                request,
                group_id,
                kafka_protocol::messages::JoinGroupResponse
            );
            let client_id = frame
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let pending = handlers::join_group::prepare(broker, version, request, client_id, peer);
            return Ok(Dispatched::Deferred(
                async move {
                    let result = pending.wait(handlers::join_group::dropped()).await;
                    encode(&meta, &handlers::join_group::response(version, result))
                }
                .boxed(),
            ));
        }
        ApiKey::SyncGroup => {
            let request: kafka_protocol::messages::SyncGroupRequest = decode(&mut frame)?;
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::SyncGroupResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                group_id,
                kafka_protocol::messages::SyncGroupResponse
            );
            loaded!(
                request,
                group_id,
                kafka_protocol::messages::SyncGroupResponse
            );
            let pending = handlers::sync_group::prepare(broker, request);
            return Ok(Dispatched::Deferred(
                async move {
                    let result = pending.wait(handlers::sync_group::dropped()).await;
                    encode(&meta, &handlers::sync_group::response(version, result))
                }
                .boxed(),
            ));
        }
        ApiKey::Heartbeat => {
            let request: kafka_protocol::messages::HeartbeatRequest = decode(&mut frame)?;
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::HeartbeatResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                group_id,
                kafka_protocol::messages::HeartbeatResponse
            );
            loaded!(
                request,
                group_id,
                kafka_protocol::messages::HeartbeatResponse
            );
            encode(&meta, &handlers::heartbeat::handle(broker, request))?
        }
        ApiKey::LeaveGroup => {
            let request: kafka_protocol::messages::LeaveGroupRequest = decode(&mut frame)?;
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::LeaveGroupResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                group_id,
                kafka_protocol::messages::LeaveGroupResponse
            );
            loaded!(
                request,
                group_id,
                kafka_protocol::messages::LeaveGroupResponse
            );
            encode(
                &meta,
                &handlers::leave_group::handle(broker, version, request),
            )?
        }
        ApiKey::OffsetCommit => {
            let mut request = decode(&mut frame)?;
            let denied = access.offset_commit(&mut request);
            let mut response = handlers::offset_commit::handle(broker, request).await;
            response.topics.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::OffsetFetch => {
            let request: kafka_protocol::messages::OffsetFetchRequest = decode(&mut frame)?;
            let group = request.group_id.to_string();
            let mut response = handlers::offset_fetch::handle(broker, version, request).await;
            access.offset_fetch(&mut response, &group);
            encode(&meta, &response)?
        }
        ApiKey::OffsetDelete => {
            let request: kafka_protocol::messages::OffsetDeleteRequest = decode(&mut frame)?;
            if access.enabled()
                && !access.can(Operation::Delete, ResourceType::Group, &request.group_id)
            {
                refuse!(
                    kafka_protocol::messages::OffsetDeleteResponse,
                    E::GroupAuthorizationFailed
                );
            }
            encode(
                &meta,
                &handlers::groups_admin::delete_offsets(broker, request).await,
            )?
        }
        ApiKey::DescribeGroups => {
            let request = decode(&mut frame)?;
            let mut response = handlers::groups_admin::describe(broker, version, request).await;
            access.describe_groups(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::ListGroups => {
            let request = decode(&mut frame)?;
            let mut response = handlers::groups_admin::list(broker, version, request).await;
            access.list_groups(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::DeleteGroups => {
            let mut request = decode(&mut frame)?;
            let denied = access.delete_groups(&mut request);
            let mut response = handlers::groups_admin::delete(broker, request).await;
            response.results.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let request: kafka_protocol::messages::ConsumerGroupHeartbeatRequest =
                decode(&mut frame)?;
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::ConsumerGroupHeartbeatResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                group_id,
                kafka_protocol::messages::ConsumerGroupHeartbeatResponse
            );
            loaded!(
                request,
                group_id,
                kafka_protocol::messages::ConsumerGroupHeartbeatResponse
            );
            let client_id = frame
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            encode(
                &meta,
                &handlers::consumer_group::heartbeat(broker, request, client_id, peer),
            )?
        }
        ApiKey::ConsumerGroupDescribe => {
            let request = decode(&mut frame)?;
            let mut response = handlers::consumer_group::describe(broker, version, request);
            access.consumer_group_describe(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::InitProducerId => {
            let request: kafka_protocol::messages::InitProducerIdRequest = decode(&mut frame)?;
            if let Some(code) = access.init_producer_id(&request) {
                let answer = kafka_protocol::messages::InitProducerIdResponse::default()
                    .with_error_code(code.code())
                    .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                    .with_producer_epoch(-1);
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            // A transactional id belongs to its coordinator (idempotent
            // producers without one can ask any broker).
            if let Some(id) = request
                .transactional_id
                .as_ref()
                .filter(|id| !id.is_empty())
                && !broker.coordinates(id)
            {
                let answer = kafka_protocol::messages::InitProducerIdResponse::default()
                    .with_error_code(kafka_protocol::error::ResponseError::NotCoordinator.code())
                    .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                    .with_producer_epoch(-1);
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(
                &meta,
                &handlers::init_producer_id::handle(broker, version, request).await,
            )?
        }
        ApiKey::CreatePartitions => {
            let mut request = decode(&mut frame)?;
            let denied = access.create_partitions(&mut request);
            let mut response = handlers::create_partitions::handle(broker, request).await;
            response.results.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut request = decode(&mut frame)?;
            let denied = access.incremental_alter_configs(&mut request);
            let mut response = handlers::alter_configs::incremental(broker, request).await;
            response.responses.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::AlterConfigs => {
            let mut request = decode(&mut frame)?;
            let denied = access.alter_configs(&mut request);
            let mut response = handlers::alter_configs::legacy(broker, request).await;
            response.responses.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::DeleteRecords => {
            let mut request = decode(&mut frame)?;
            let denied = access.delete_records(&mut request);
            let mut response = handlers::delete_records::handle(broker, request).await;
            response.topics.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::DescribeCluster => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::describe_cluster::handle(broker, listener, version, request),
            )?
        }
        ApiKey::OffsetForLeaderEpoch => {
            let mut request = decode(&mut frame)?;
            let denied = access.offset_for_leader_epoch(&mut request);
            let mut response = handlers::offset_for_leader_epoch::handle(broker, request);
            response.topics.extend(denied);
            encode(&meta, &response)?
        }
        ApiKey::DescribeProducers => {
            let request = decode(&mut frame)?;
            let mut response = handlers::describe_producers::handle(broker, request);
            access.describe_producers(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::AddPartitionsToTxn => {
            let request: kafka_protocol::messages::AddPartitionsToTxnRequest = decode(&mut frame)?;
            if let Some(answer) = access.add_partitions_to_txn(version, &request) {
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(
                &meta,
                &handlers::transactions::add_partitions_to_txn(broker, version, request).await,
            )?
        }
        ApiKey::WriteTxnMarkers => {
            let request: kafka_protocol::messages::WriteTxnMarkersRequest = decode(&mut frame)?;
            if !access.cluster_op(Operation::ClusterAction) {
                return Ok(Dispatched::Response(encode(
                    &meta,
                    &authz::refused_markers(&request),
                )?));
            }
            encode(
                &meta,
                &handlers::transactions::write_txn_markers(broker, request).await,
            )?
        }
        ApiKey::AddOffsetsToTxn => {
            let request: kafka_protocol::messages::AddOffsetsToTxnRequest = decode(&mut frame)?;
            if !access.txn_write(&request.transactional_id) {
                refuse!(
                    kafka_protocol::messages::AddOffsetsToTxnResponse,
                    E::TransactionalIdAuthorizationFailed
                );
            }
            if !access.group_read(&request.group_id) {
                refuse!(
                    kafka_protocol::messages::AddOffsetsToTxnResponse,
                    E::GroupAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                transactional_id,
                kafka_protocol::messages::AddOffsetsToTxnResponse
            );
            encode(
                &meta,
                &handlers::transactions::add_offsets_to_txn(broker, version, request).await,
            )?
        }
        ApiKey::TxnOffsetCommit => {
            let request: kafka_protocol::messages::TxnOffsetCommitRequest = decode(&mut frame)?;
            if let Some(answer) = access.txn_offset_commit(&request) {
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(
                &meta,
                &handlers::transactions::txn_offset_commit(broker, version, request).await,
            )?
        }
        ApiKey::EndTxn => {
            let request: kafka_protocol::messages::EndTxnRequest = decode(&mut frame)?;
            if !access.txn_write(&request.transactional_id) {
                refuse!(
                    kafka_protocol::messages::EndTxnResponse,
                    E::TransactionalIdAuthorizationFailed
                );
            }
            elsewhere!(
                request,
                transactional_id,
                kafka_protocol::messages::EndTxnResponse
            );
            encode(
                &meta,
                &handlers::transactions::end_txn(broker, version, request).await,
            )?
        }
        ApiKey::DescribeTransactions => {
            let request = decode(&mut frame)?;
            let mut response = handlers::transactions::describe_transactions(broker, request).await;
            access.describe_transactions(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::ListTransactions => {
            let request = decode(&mut frame)?;
            let mut response = handlers::transactions::list_transactions(broker, request).await;
            access.list_transactions(&mut response);
            encode(&meta, &response)?
        }
        ApiKey::CreateAcls => {
            let request: kafka_protocol::messages::CreateAclsRequest = decode(&mut frame)?;
            if !access.cluster_op(Operation::Alter) {
                let results = request
                    .creations
                    .iter()
                    .map(|_| {
                        kafka_protocol::messages::create_acls_response::AclCreationResult::default()
                            .with_error_code(E::ClusterAuthorizationFailed.code())
                    })
                    .collect();
                let answer =
                    kafka_protocol::messages::CreateAclsResponse::default().with_results(results);
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(&meta, &handlers::acls::create(broker, request).await)?
        }
        ApiKey::DescribeAcls => {
            let request = decode(&mut frame)?;
            if !access.cluster_op(Operation::Describe) {
                refuse!(
                    kafka_protocol::messages::DescribeAclsResponse,
                    E::ClusterAuthorizationFailed
                );
            }
            encode(&meta, &handlers::acls::describe(broker, request).await)?
        }
        ApiKey::DeleteAcls => {
            let request: kafka_protocol::messages::DeleteAclsRequest = decode(&mut frame)?;
            if !access.cluster_op(Operation::Alter) {
                let results = request
                    .filters
                    .iter()
                    .map(|_| {
                        kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult::default()
                            .with_error_code(E::ClusterAuthorizationFailed.code())
                    })
                    .collect();
                let answer = kafka_protocol::messages::DeleteAclsResponse::default()
                    .with_filter_results(results);
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(&meta, &handlers::acls::delete(broker, request).await)?
        }
        ApiKey::DescribeClientQuotas => {
            let request = decode(&mut frame)?;
            if !access.cluster_op(Operation::DescribeConfigs) {
                refuse!(
                    kafka_protocol::messages::DescribeClientQuotasResponse,
                    E::ClusterAuthorizationFailed
                );
            }
            encode(
                &meta,
                &handlers::client_quotas::describe(broker, request).await,
            )?
        }
        ApiKey::AlterClientQuotas => {
            let request: kafka_protocol::messages::AlterClientQuotasRequest = decode(&mut frame)?;
            if !access.cluster_op(Operation::AlterConfigs) {
                let entries = request
                    .entries
                    .iter()
                    .map(|entry| {
                        kafka_protocol::messages::alter_client_quotas_response::EntryData::default()
                            .with_error_code(E::ClusterAuthorizationFailed.code())
                            .with_entity(
                                entry
                                    .entity
                                    .iter()
                                    .map(|e| {
                                        kafka_protocol::messages::alter_client_quotas_response::EntityData::default()
                                            .with_entity_type(e.entity_type.clone())
                                            .with_entity_name(e.entity_name.clone())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let answer = kafka_protocol::messages::AlterClientQuotasResponse::default()
                    .with_entries(entries);
                return Ok(Dispatched::Response(encode(&meta, &answer)?));
            }
            encode(
                &meta,
                &handlers::client_quotas::alter(broker, request).await,
            )?
        }
        ApiKey::DescribeUserScramCredentials => {
            let request = decode(&mut frame)?;
            if !access.cluster_op(Operation::Describe) {
                refuse!(
                    kafka_protocol::messages::DescribeUserScramCredentialsResponse,
                    E::ClusterAuthorizationFailed
                );
            }
            encode(
                &meta,
                &handlers::scram_users::describe(broker, request).await,
            )?
        }
        ApiKey::AlterUserScramCredentials => {
            let request: kafka_protocol::messages::AlterUserScramCredentialsRequest =
                decode(&mut frame)?;
            if !access.cluster_op(Operation::Alter) {
                return Ok(Dispatched::Response(encode(
                    &meta,
                    &authz::refused_scram_changes(&request),
                )?));
            }
            encode(&meta, &handlers::scram_users::alter(broker, request).await)?
        }
        // Outside a SASL listener's exchange (see connection.rs), as Kafka
        // answers a handshake it does not expect.
        ApiKey::SaslHandshake => {
            let _request: kafka_protocol::messages::SaslHandshakeRequest = decode(&mut frame)?;
            encode(
                &meta,
                &kafka_protocol::messages::SaslHandshakeResponse::default()
                    .with_error_code(kafka_protocol::error::ResponseError::IllegalSaslState.code()),
            )?
        }
        ApiKey::SaslAuthenticate => {
            let _request: kafka_protocol::messages::SaslAuthenticateRequest = decode(&mut frame)?;
            encode(
                &meta,
                &kafka_protocol::messages::SaslAuthenticateResponse::default()
                    .with_error_code(kafka_protocol::error::ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(handlers::str_bytes(
                        "this connection is not in a SASL exchange",
                    ))),
            )?
        }
        other => return Err(format!("no handler for {other:?}")),
    };
    Ok(Dispatched::Response(response))
}

/// UNSUPPORTED_VERSION in the response layout of an API Strata does not
/// implement, where that layout has a top-level error code.
fn unsupported(meta: &ResponseMeta) -> Option<Result<Bytes, String>> {
    use kafka_protocol::error::ResponseError::UnsupportedVersion;
    use kafka_protocol::messages::*;
    macro_rules! answer {
        ($($key:ident => $response:ident),* $(,)?) => {
            match meta.api_key {
                $(ApiKey::$key => Some(encode(
                    meta,
                    &$response::default().with_error_code(UnsupportedVersion.code()),
                )),)*
                _ => None,
            }
        };
    }
    answer!(
        DescribeLogDirs => DescribeLogDirsResponse,
        CreateDelegationToken => CreateDelegationTokenResponse,
        RenewDelegationToken => RenewDelegationTokenResponse,
        ExpireDelegationToken => ExpireDelegationTokenResponse,
        DescribeDelegationToken => DescribeDelegationTokenResponse,
        ElectLeaders => ElectLeadersResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse,
        DescribeQuorum => DescribeQuorumResponse,
        UpdateFeatures => UpdateFeaturesResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        ListConfigResources => ListConfigResourcesResponse,
    )
}
