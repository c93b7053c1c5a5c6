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
use super::connection::Session;
use super::handlers;
use crate::protocol::frame::{RequestFrame, encode_response};
use crate::protocol::versions::is_supported;

pub enum Dispatched {
    /// Ready now.
    Response(Bytes),
    /// Computed by a task; written in order when done. An error closes the
    /// connection (a response we could not encode is our bug; say so loudly).
    Deferred(BoxFuture<'static, Result<Bytes, String>>),
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
    let response = match api {
        ApiKey::ApiVersions => {
            let _request: kafka_protocol::messages::ApiVersionsRequest = decode(&mut frame)?;
            encode(&meta, &handlers::api_versions::handle())?
        }
        ApiKey::Metadata => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::metadata::handle(broker, listener, version, request).await,
            )?
        }
        ApiKey::CreateTopics => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::create_topics::handle(broker, version, request).await,
            )?
        }
        ApiKey::DeleteTopics => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::delete_topics::handle(broker, version, request).await,
            )?
        }
        ApiKey::DescribeConfigs => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::describe_configs::handle(broker, version, request).await,
            )?
        }
        ApiKey::ListOffsets => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::list_offsets::handle(broker, version, request).await,
            )?
        }
        ApiKey::Produce => {
            let request = decode(&mut frame)?;
            return match handlers::produce::prepare(broker, version, request).await? {
                None => Ok(Dispatched::NoResponse),
                Some(pending) => Ok(Dispatched::Deferred(
                    async move {
                        let response = pending.await;
                        encode(&meta, &response)
                    }
                    .boxed(),
                )),
            };
        }
        ApiKey::Fetch => {
            let request = decode(&mut frame)?;
            let pending = handlers::fetch::handle(Arc::clone(broker), version, request);
            return Ok(Dispatched::Deferred(
                async move {
                    let response = pending.await;
                    encode(&meta, &response)
                }
                .boxed(),
            ));
        }
        ApiKey::FindCoordinator => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::find_coordinator::handle(broker, listener, version, request).await,
            )?
        }
        ApiKey::JoinGroup => {
            let request: kafka_protocol::messages::JoinGroupRequest = decode(&mut frame)?;
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
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::offset_commit::handle(broker, request).await,
            )?
        }
        ApiKey::OffsetFetch => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::offset_fetch::handle(broker, version, request).await,
            )?
        }
        ApiKey::OffsetDelete => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::groups_admin::delete_offsets(broker, request).await,
            )?
        }
        ApiKey::DescribeGroups => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::groups_admin::describe(broker, version, request).await,
            )?
        }
        ApiKey::ListGroups => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::groups_admin::list(broker, version, request).await,
            )?
        }
        ApiKey::DeleteGroups => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::groups_admin::delete(broker, request).await,
            )?
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let request: kafka_protocol::messages::ConsumerGroupHeartbeatRequest =
                decode(&mut frame)?;
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
            encode(
                &meta,
                &handlers::consumer_group::describe(broker, version, request),
            )?
        }
        ApiKey::InitProducerId => {
            let request: kafka_protocol::messages::InitProducerIdRequest = decode(&mut frame)?;
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
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::create_partitions::handle(broker, request).await,
            )?
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::alter_configs::incremental(broker, request).await,
            )?
        }
        ApiKey::AlterConfigs => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::alter_configs::legacy(broker, request).await,
            )?
        }
        ApiKey::DeleteRecords => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::delete_records::handle(broker, request).await,
            )?
        }
        ApiKey::DescribeCluster => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::describe_cluster::handle(broker, listener, version, request),
            )?
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::offset_for_leader_epoch::handle(broker, request),
            )?
        }
        ApiKey::DescribeProducers => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::describe_producers::handle(broker, request),
            )?
        }
        ApiKey::AddPartitionsToTxn => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::transactions::add_partitions_to_txn(broker, version, request).await,
            )?
        }
        ApiKey::WriteTxnMarkers => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::transactions::write_txn_markers(broker, request).await,
            )?
        }
        ApiKey::AddOffsetsToTxn => {
            let request: kafka_protocol::messages::AddOffsetsToTxnRequest = decode(&mut frame)?;
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
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::transactions::txn_offset_commit(broker, version, request).await,
            )?
        }
        ApiKey::EndTxn => {
            let request: kafka_protocol::messages::EndTxnRequest = decode(&mut frame)?;
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
            encode(
                &meta,
                &handlers::transactions::describe_transactions(broker, request).await,
            )?
        }
        ApiKey::ListTransactions => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::transactions::list_transactions(broker, request).await,
            )?
        }
        ApiKey::DescribeClientQuotas => {
            // No client quota exists yet (nothing sets one): an empty
            // answer, which kafka-configs.sh --describe needs for users.
            let _request: kafka_protocol::messages::DescribeClientQuotasRequest =
                decode(&mut frame)?;
            encode(
                &meta,
                &kafka_protocol::messages::DescribeClientQuotasResponse::default()
                    .with_entries(Some(Vec::new())),
            )?
        }
        ApiKey::DescribeUserScramCredentials => {
            let request = decode(&mut frame)?;
            encode(
                &meta,
                &handlers::scram_users::describe(broker, request).await,
            )?
        }
        ApiKey::AlterUserScramCredentials => {
            let request = decode(&mut frame)?;
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
        DescribeAcls => DescribeAclsResponse,
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
