//! The transaction APIs (KIP-98): AddPartitionsToTxn (v0-3 from producers;
//! v4-5 batched, as brokers send it, `verify_only` included),
//! AddOffsetsToTxn, TxnOffsetCommit (v5+ adds the group itself), EndTxn
//! (v5+ bumps the epoch and answers the new one), DescribeTransactions and
//! ListTransactions. The coordinator (`broker::txn`) holds the rules; this
//! file maps names to topic ids and errors to each version's codes.
//!
//! PRODUCER_FENCED (KIP-588) goes to clients that know it (InitProducerId
//! v4+, AddPartitionsToTxn v2+, AddOffsetsToTxn v2+, EndTxn v2+,
//! TxnOffsetCommit v3+); older versions get INVALID_PRODUCER_EPOCH, as Kafka
//! answers them.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::metadata::{CommittedOffset, TopicId, TxnState};

/// The code an older client understands for `error`.
fn for_version(error: ResponseError, version: i16, fenced_since: i16) -> i16 {
    if error == ResponseError::ProducerFenced && version < fenced_since {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        error.code()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One transaction's AddPartitionsToTxn: every partition gets the same
/// answer, except unknown ones (UNKNOWN_TOPIC_OR_PARTITION, the others
/// OPERATION_NOT_ATTEMPTED, as Kafka answers).
async fn add_partitions(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    // Every partition of the request in order, with its topic id if it exists.
    let mut named = Vec::new();
    for topic in topics {
        let state = broker.catalog.by_name(&topic.name);
        for &p in &topic.partitions {
            let id = state
                .as_ref()
                .filter(|s| s.partition(p).is_some())
                .map(|s| s.record.id);
            named.push((id, p));
        }
    }
    let known: Vec<(TopicId, i32)> = named
        .iter()
        .filter_map(|(id, p)| id.map(|id| (id, *p)))
        .collect();
    let codes: Vec<i16> = if known.len() < named.len() {
        named
            .iter()
            .map(|(id, _)| match id {
                Some(_) => ResponseError::OperationNotAttempted.code(),
                None => ResponseError::UnknownTopicOrPartition.code(),
            })
            .collect()
    } else if verify_only {
        match broker
            .txn
            .verify_partitions(broker, transactional_id, producer_id, epoch, &known)
            .await
        {
            Ok(added) => added
                .into_iter()
                .map(|added| {
                    if added {
                        0
                    } else {
                        ResponseError::InvalidTxnState.code()
                    }
                })
                .collect(),
            Err(error) => vec![for_version(error, version, 2); named.len()],
        }
    } else {
        let code = match broker
            .txn
            .add_partitions(broker, transactional_id, producer_id, epoch, &known)
            .await
        {
            Ok(()) => 0,
            Err(error) => for_version(error, version, 2),
        };
        vec![code; named.len()]
    };
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect()
}

pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let results = add_partitions(
            broker,
            &request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
            version,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for txn in &request.transactions {
        let topic_results = add_partitions(
            broker,
            &txn.transactional_id,
            txn.producer_id.0,
            txn.producer_epoch,
            txn.verify_only,
            &txn.topics,
            version,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    version: i16,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = if request.group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        match broker
            .txn
            .add_offsets(
                broker,
                &request.transactional_id,
                request.producer_id.0,
                request.producer_epoch,
                &request.group_id,
            )
            .await
        {
            Ok(()) => 0,
            Err(error) => for_version(error, version, 2),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

/// `(partition, error code)`; `None`: stored with the others.
type PartitionAnswer = (i32, Option<i16>);

pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    version: i16,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.to_string();
    let memberless = request.member_id.is_empty() && request.generation_id < 0;
    // The group's fencing needs the group's coordinator.
    if !group.is_empty() && !memberless && !broker.coordinates(&group) {
        return every_partition(&request, ResponseError::NotCoordinator.code());
    }
    // The group's fencing, as for OffsetCommit; a producer that names no
    // member (generation -1, v0-v2 or `sendOffsetsToTransaction(groupId)`)
    // commits without it, as Kafka lets transactional commits do.
    let fenced = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if memberless {
        Ok(())
    } else {
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        broker.groups.validate_commit(
            &group,
            request.generation_id,
            &request.member_id,
            instance.as_deref(),
        )
    };
    if fenced.is_ok() && !broker.coordinates(&request.transactional_id) {
        return forward_txn_offsets(broker, version, request).await;
    }
    let max_metadata = broker.config.groups.offset_metadata_max_bytes;
    let now = now_ms();
    // Per partition: Some(error) at once, or None if it goes to the store.
    let mut answers: Vec<(TopicName, Vec<PartitionAnswer>)> = Vec::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let state = broker.catalog.by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let error = match (&fenced, &state) {
                (Err(code), _) => Some(code.code()),
                (Ok(()), Some(t)) if t.partition(p.partition_index).is_some() => {
                    if p.committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > max_metadata)
                    {
                        Some(ResponseError::OffsetMetadataTooLarge.code())
                    } else {
                        offsets.push(CommittedOffset {
                            topic_id: t.record.id,
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_ms: now,
                        });
                        None
                    }
                }
                (Ok(()), _) => Some(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push((p.partition_index, error));
        }
        answers.push((topic.name.clone(), partitions));
    }
    let stored = if offsets.is_empty() {
        0
    } else {
        match broker
            .txn
            .commit_offsets(
                broker,
                &request.transactional_id,
                request.producer_id.0,
                request.producer_epoch,
                &group,
                offsets,
                version >= 5,
            )
            .await
        {
            Ok(()) => 0,
            Err(error) => for_version(error, version, 3),
        }
    };
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, error)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(error.unwrap_or(stored))
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The same answer for every partition of a TxnOffsetCommit.
fn every_partition(request: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// A TxnOffsetCommit whose group fencing passed here, for a transaction
/// another broker coordinates: the offsets belong to that coordinator's
/// transaction, so it takes them (as a member-less commit: the group's
/// fencing is done).
async fn forward_txn_offsets(
    broker: &Arc<Broker>,
    version: i16,
    mut request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let unavailable = ResponseError::CoordinatorNotAvailable.code();
    let Some(coordinator) = broker.coordinator_for(&request.transactional_id) else {
        return every_partition(&request, unavailable);
    };
    request.generation_id = -1;
    request.member_id = Default::default();
    request.group_instance_id = None;
    match broker.peers.call(&coordinator, version, &request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "cannot hand transactional offsets to their coordinator");
            every_partition(&request, unavailable)
        }
    }
}

pub async fn end_txn(broker: &Arc<Broker>, version: i16, request: EndTxnRequest) -> EndTxnResponse {
    let result = broker
        .txn
        .end_txn(
            broker,
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            version >= 5,
        )
        .await;
    let response = EndTxnResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match result {
        Ok((producer_id, epoch)) => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => response.with_error_code(for_version(error, version, 2)),
    }
}

fn state_topics(
    broker: &Broker,
    partitions: &[(TopicId, i32)],
) -> Vec<kafka_protocol::messages::describe_transactions_response::TopicData> {
    use kafka_protocol::messages::describe_transactions_response::TopicData;
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for (topic, p) in partitions {
        if let Some(state) = broker.catalog.by_id(*topic) {
            by_topic
                .entry(state.record.name.clone())
                .or_default()
                .push(*p);
        }
    }
    by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_unstable();
            TopicData::default()
                .with_topic(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect()
}

pub async fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::TransactionState;
    let ids: Vec<String> = request
        .transactional_ids
        .iter()
        .map(|id| id.to_string())
        .collect();
    let states = broker
        .txn
        .views(Some(&ids))
        .await
        .into_iter()
        .map(|(id, view)| {
            let answer =
                TransactionState::default().with_transactional_id(TransactionalId(str_bytes(id)));
            match view {
                None => answer
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_transaction_state(str_bytes(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Some(view) => {
                    let r = view.record;
                    let ongoing = matches!(
                        r.state,
                        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                    );
                    answer
                        .with_transaction_state(str_bytes(r.state.name()))
                        .with_transaction_timeout_ms(r.timeout_ms)
                        .with_transaction_start_time_ms(if ongoing { r.start_ms } else { -1 })
                        .with_producer_id(ProducerId(r.producer_id))
                        .with_producer_epoch(r.producer_epoch)
                        .with_topics(if ongoing {
                            state_topics(broker, &r.partitions)
                        } else {
                            Vec::new()
                        })
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub async fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    const STATES: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pattern = match request
        .transactional_id_pattern
        .as_ref()
        .filter(|p| !p.is_empty())
        .map(|p| regex::Regex::new(&format!("^(?:{})$", p.as_str())))
        .transpose()
    {
        Ok(pattern) => pattern,
        Err(_) => {
            return ListTransactionsResponse::default()
                .with_error_code(ResponseError::InvalidRegularExpression.code());
        }
    };
    let now = now_ms();
    let states = broker
        .txn
        .views(None)
        .await
        .into_iter()
        .filter_map(|(id, view)| {
            let r = view?.record;
            let state_ok = request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == r.state.name());
            let producer_ok = request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == r.producer_id);
            // v1+: only transactions running longer than this many ms.
            let duration_ok = request.duration_filter < 0
                || (r.state == TxnState::Ongoing && now - r.start_ms >= request.duration_filter);
            let id_ok = pattern.as_ref().is_none_or(|p| p.is_match(&id));
            (state_ok && producer_ok && duration_ok && id_ok).then(|| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(id)))
                    .with_producer_id(ProducerId(r.producer_id))
                    .with_transaction_state(str_bytes(r.state.name()))
            })
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// WriteTxnMarkers (from the coordinator of a transaction, another
/// broker): a marker into each named partition this broker leads, once
/// the producer's transaction view here is closed; answered when every
/// marker is durable. A partition led elsewhere gets NOT_LEADER_OR_FOLLOWER
/// and the coordinator tries again.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    request: kafka_protocol::messages::WriteTxnMarkersRequest,
) -> kafka_protocol::messages::WriteTxnMarkersResponse {
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let mut markers = Vec::with_capacity(request.markers.len());
    for marker in &request.markers {
        let producer_id = marker.producer_id.0;
        broker.txn.close_remote(producer_id);
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in &marker.topics {
            let state = broker.catalog.by_name(&topic.name);
            let mut pending = Vec::with_capacity(topic.partition_indexes.len());
            for &index in &topic.partition_indexes {
                let log = state.as_ref().and_then(|s| s.partition(index).cloned());
                let answer = match log {
                    None => Err(ResponseError::UnknownTopicOrPartition),
                    Some(log) if log.leader_id() != broker.node_id => {
                        Err(ResponseError::NotLeaderOrFollower)
                    }
                    Some(log) => broker
                        .writer
                        .append_marker(
                            &log,
                            producer_id,
                            marker.producer_epoch,
                            marker.transaction_result,
                        )
                        .await
                        .map_err(|e| {
                            tracing::warn!(topic = %&*topic.name, partition = index, error = %e, "cannot write a transaction marker");
                            ResponseError::NotLeaderOrFollower
                        }),
                };
                pending.push((index, answer));
            }
            let mut partitions = Vec::with_capacity(pending.len());
            for (index, answer) in pending {
                let code = match answer {
                    Ok(ticket) => match ticket.committed().await {
                        Ok(_) => 0,
                        Err(crate::storage::wal::AppendError::TopicDeleted) => {
                            ResponseError::UnknownTopicOrPartition.code()
                        }
                        Err(error) => {
                            tracing::warn!(topic = %&*topic.name, partition = index, %error, "a transaction marker was not written");
                            ResponseError::NotLeaderOrFollower.code()
                        }
                    },
                    Err(error) => error.code(),
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    kafka_protocol::messages::WriteTxnMarkersResponse::default().with_markers(markers)
}
