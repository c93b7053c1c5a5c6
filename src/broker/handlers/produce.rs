//! Produce: validates each partition's batches, appends them to the write
//! buffer (offsets are assigned here, in request order), and answers once the
//! group commit made them durable. acks=0 gets no response; an error under
//! acks=0 closes the connection, as Kafka does, so the producer notices.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::topics::{internal_topic_error, is_internal, max_message_bytes};
use crate::metadata::TopicId;
use crate::protocol::batch::{BatchError, set_log_append_time, validate_produce_batches};
use crate::protocol::records::{RecordError, RecordFault, RecordRules, validate_records};
use crate::storage::catalog::TopicState;
use crate::storage::producers::SequenceError;
use crate::storage::wal::{AppendError, AppendTicket};

enum Outcome {
    Failed(ResponseError, String),
    /// Records of the batch broke the topic's rules (KIP-467): the batch is
    /// refused whole and the response names each record.
    RecordsRefused(ResponseError, String, Vec<RecordError>),
    Pending(AppendTicket),
}

struct PartitionOutcome {
    index: i32,
    outcome: Outcome,
    log_append_time: i64,
    log_start_offset: i64,
}

fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::CrcMismatch { .. }
        | BatchError::Truncated(_)
        | BatchError::LengthMismatch { .. } => ResponseError::CorruptMessage,
        BatchError::UnsupportedMagic(_)
        | BatchError::BadRecordCount { .. }
        | BatchError::Records(_) => ResponseError::InvalidRecord,
    }
}

fn append_error(error: &AppendError) -> ResponseError {
    match error {
        AppendError::TopicDeleted => ResponseError::UnknownTopicOrPartition,
        AppendError::Storage(_) => ResponseError::KafkaStorageError,
        AppendError::Fenced(_) | AppendError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        AppendError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        AppendError::Transaction(_) => ResponseError::InvalidTxnState,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What `topic` asks of each record: a key on compacted topics; on
/// CreateTime topics a timestamp within `message.timestamp.before.max.ms`
/// before and `message.timestamp.after.max.ms` after the broker's time.
fn record_rules(broker: &Broker, topic: &TopicState) -> RecordRules {
    let configs = &topic.record.configs;
    let value = |name: &str| -> Option<String> {
        configs.get(name).cloned().or_else(|| {
            crate::broker::topic_configs::lookup(name).map(|def| def.default_value(broker))
        })
    };
    let require_keys =
        value("cleanup.policy").is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"));
    let create_time = value("message.timestamp.type").as_deref() != Some("LogAppendTime");
    let bound = |name: &str| {
        value(name)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(i64::MAX)
            .max(0)
    };
    let now = now_ms();
    let timestamp_window = create_time.then(|| {
        (
            now.saturating_sub(bound("message.timestamp.before.max.ms")),
            now.saturating_add(bound("message.timestamp.after.max.ms")),
        )
    });
    RecordRules {
        require_keys,
        timestamp_window,
    }
}

#[allow(clippy::too_many_arguments)]
async fn append_partition(
    broker: &Broker,
    version: i16,
    transactional_id: Option<&str>,
    topic: Option<&Arc<TopicState>>,
    topic_id: Option<uuid::Uuid>,
    index: i32,
    records: Option<bytes::Bytes>,
) -> PartitionOutcome {
    let failed = |code, message: String| PartitionOutcome {
        index,
        outcome: Outcome::Failed(code, message),
        log_append_time: -1,
        log_start_offset: -1,
    };
    let Some(topic) = topic else {
        // v13+ names topics by id only (KIP-516).
        return match topic_id {
            Some(id) => failed(
                ResponseError::UnknownTopicId,
                format!("unknown topic id {id}"),
            ),
            None => failed(
                ResponseError::UnknownTopicOrPartition,
                "unknown topic".into(),
            ),
        };
    };
    if is_internal(&topic.record.name) {
        let error = internal_topic_error(&topic.record.name);
        return failed(error.code, error.message);
    }
    let Some(log) = topic.partition(index) else {
        return failed(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{}' has no partition {index}", topic.record.name),
        );
    };
    if log.leader_id() != broker.node_id {
        return failed(
            ResponseError::NotLeaderOrFollower,
            format!(
                "broker {} does not lead {}-{index} (broker {} does)",
                broker.node_id,
                topic.record.name,
                log.leader_id()
            ),
        );
    }
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return failed(
            ResponseError::CorruptMessage,
            "no record batch in the request".into(),
        );
    };
    let mut summary = match validate_produce_batches(&records) {
        Ok(summary) => summary,
        Err(e) => return failed(batch_error(&e), e.to_string()),
    };
    // The records themselves, as Kafka checks them: counts and offset deltas
    // (inflating compressed batches, off the async workers), then the
    // topic's rules record by record.
    let rules = record_rules(broker, topic);
    let checked = if summary.compressed {
        // At most one inflating thread per core (memory.rs): each may
        // hold an inflated batch of up to MAX_INFLATED_BYTES.
        match broker.memory.inflating.acquire().await {
            Ok(_inflating) => {
                let records = records.clone();
                tokio::task::spawn_blocking(move || validate_records(&records, rules))
                    .await
                    .unwrap_or_else(|e| {
                        Err(BatchError::Records(format!("validation task failed: {e}")))
                    })
            }
            Err(_) => Err(BatchError::Records("shutting down".into())),
        }
    } else {
        validate_records(&records, rules)
    };
    let refused = match checked {
        Ok(refused) => refused,
        Err(e) => return failed(batch_error(&e), e.to_string()),
    };
    if let Some(first) = refused.first() {
        // As Kafka: INVALID_TIMESTAMP if any record's timestamp is out of
        // range, else INVALID_RECORD; the message is the first record's.
        let code = if refused
            .iter()
            .any(|r| r.fault == RecordFault::TimestampOutOfRange)
        {
            ResponseError::InvalidTimestamp
        } else {
            ResponseError::InvalidRecord
        };
        let message = first.message.clone();
        return PartitionOutcome {
            index,
            outcome: Outcome::RecordsRefused(code, message, refused),
            log_append_time: -1,
            log_start_offset: -1,
        };
    }
    if summary.any_control {
        return failed(
            ResponseError::InvalidRecord,
            "clients may not write control batches".into(),
        );
    }
    // Transactional batches: only into a partition added to the producer's
    // ongoing transaction, at its epoch (KIP-890 part 1).
    let mut txn = None;
    if summary.any_transactional {
        let Some(producer) = summary
            .producer
            .filter(|_| summary.producer_batches == summary.batch_count)
        else {
            return failed(
                ResponseError::InvalidRecord,
                "a transactional batch needs a producer id, and transactional and other batches cannot be mixed"
                    .into(),
            );
        };
        // v12+ (KIP-890 part 2): the batch adds its partition itself.
        let verified = if version >= 12 {
            broker
                .txn
                .add_partition_implicitly(
                    broker,
                    producer.producer_id,
                    producer.epoch,
                    topic.record.id,
                    index,
                )
                .await
        } else {
            broker
                .txn
                .verify_produce(producer.producer_id, producer.epoch, topic.record.id, index)
        };
        // A transactional id another broker coordinates: that coordinator
        // says whether the partition is in the transaction (or adds it).
        let verified = match (verified, transactional_id) {
            (Err((code, _)), Some(id))
                if code != ResponseError::InvalidProducerEpoch && !broker.coordinates(id) =>
            {
                broker
                    .txn
                    .ask_coordinator(
                        broker,
                        id,
                        producer.producer_id,
                        producer.epoch,
                        (topic.record.id, &topic.record.name),
                        index,
                        version >= 12,
                    )
                    .await
            }
            (verified, _) => verified,
        };
        match verified {
            Ok(open) => txn = Some(open),
            Err((code, message)) => return failed(code, message),
        }
    }
    if summary.producer_batches > 0 && summary.batch_count > 1 {
        return failed(
            ResponseError::InvalidRecord,
            format!(
                "a produce request carries one record batch per partition from an \
                 idempotent producer, got {}",
                summary.batch_count
            ),
        );
    }
    let limit = max_message_bytes(broker, topic);
    if summary.largest_batch > limit {
        return failed(
            ResponseError::MessageTooLarge,
            format!(
                "record batch of {} bytes exceeds max.message.bytes {limit}",
                summary.largest_batch
            ),
        );
    }
    let mut records = BytesMut::from(records);
    let mut log_append_time = -1;
    if topic
        .record
        .configs
        .get("message.timestamp.type")
        .map(String::as_str)
        == Some("LogAppendTime")
    {
        log_append_time = now_ms();
        set_log_append_time(&mut records, log_append_time);
        // The chunk's newest timestamp (retention, ListOffsets by time) is
        // the broker's, as in the batches now.
        summary.max_timestamp = log_append_time;
    }
    match broker
        .writer
        .append(log, records, summary, summary.producer, txn.as_deref())
        .await
    {
        Ok(ticket) => PartitionOutcome {
            index,
            outcome: Outcome::Pending(ticket),
            log_append_time,
            log_start_offset: log.log_start_offset(),
        },
        Err(e) => failed(append_error(&e), e.to_string()),
    }
}

/// KIP-890 part 2: the partitions this request's transactional batches go
/// to join their producers' transactions in one coordinator store (each
/// batch is still checked on its own afterwards).
async fn add_transaction_partitions(broker: &Broker, request: &ProduceRequest) {
    let mut wanted = Vec::new();
    for topic in &request.topic_data {
        let state = if topic.name.is_empty() {
            broker.catalog.by_id(TopicId(topic.topic_id))
        } else {
            broker.catalog.by_name(&topic.name)
        };
        let Some(state) = state else { continue };
        for partition in &topic.partition_data {
            let Some(records) = partition.records.as_ref() else {
                continue;
            };
            if let Ok(header) = crate::protocol::batch::BatchHeader::new(records)
                && header.is_transactional()
                && !header.is_control()
                && state.partition(partition.index).is_some()
            {
                wanted.push((
                    header.producer_id(),
                    header.producer_epoch(),
                    state.record.id,
                    partition.index,
                ));
            }
        }
    }
    if !wanted.is_empty() {
        broker.txn.add_request_partitions(broker, &wanted).await;
    }
}

/// The ordered part of a Produce: validation and append. Returns the future
/// of the response, or `None` for acks=0.
pub async fn prepare(
    broker: &Arc<Broker>,
    version: i16,
    request: ProduceRequest,
) -> Result<Option<BoxFuture<'static, ProduceResponse>>, String> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    if version >= 12 {
        add_transaction_partitions(broker, &request).await;
    }
    let transactional_id = request.transactional_id.as_ref().map(|id| id.to_string());
    let mut topics: Vec<(TopicName, uuid::Uuid, Vec<PartitionOutcome>)> = Vec::new();
    for topic in request.topic_data {
        let state = if topic.name.is_empty() {
            broker.catalog.by_id(TopicId(topic.topic_id))
        } else {
            broker.catalog.by_name(&topic.name)
        };
        let mut outcomes = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            if !valid_acks {
                outcomes.push(PartitionOutcome {
                    index: partition.index,
                    outcome: Outcome::Failed(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be -1, 0 or 1, got {acks}"),
                    ),
                    log_append_time: -1,
                    log_start_offset: -1,
                });
                continue;
            }
            outcomes.push(
                append_partition(
                    broker,
                    version,
                    transactional_id.as_deref(),
                    state.as_ref(),
                    topic.name.is_empty().then_some(topic.topic_id),
                    partition.index,
                    partition.records,
                )
                .await,
            );
        }
        // A fresh copy: the request's name is a slice of the whole frame,
        // which must not stay alive until the group commit completes.
        let name = TopicName(str_bytes(topic.name.to_string()));
        topics.push((name, topic.topic_id, outcomes));
    }
    if acks == 0 {
        for (name, _, outcomes) in &topics {
            for p in outcomes {
                if let Outcome::Failed(code, message) | Outcome::RecordsRefused(code, message, _) =
                    &p.outcome
                {
                    return Err(format!(
                        "acks=0 produce to {}-{} failed ({code:?}): {message}",
                        &**name, p.index
                    ));
                }
            }
        }
        return Ok(None);
    }
    Ok(Some(
        async move {
            let mut responses = Vec::with_capacity(topics.len());
            for (name, topic_id, outcomes) in topics {
                let mut partitions = Vec::with_capacity(outcomes.len());
                for p in outcomes {
                    let mut response = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(p.log_append_time)
                        .with_log_start_offset(-1);
                    let result = match p.outcome {
                        Outcome::Failed(code, message) => Err((code, message)),
                        Outcome::RecordsRefused(code, message, refused) => {
                            if version >= 8 {
                                response = response.with_record_errors(
                                    refused
                                        .into_iter()
                                        .map(|r| {
                                            BatchIndexAndErrorMessage::default()
                                                .with_batch_index(r.batch_index)
                                                .with_batch_index_error_message(Some(str_bytes(
                                                    r.message,
                                                )))
                                        })
                                        .collect(),
                                );
                            }
                            Err((code, message))
                        }
                        Outcome::Pending(ticket) => ticket
                            .committed()
                            .await
                            .map_err(|e| (append_error(&e), e.to_string())),
                    };
                    match result {
                        Ok(base_offset) => {
                            response = response.with_base_offset(base_offset);
                            if version >= 5 {
                                response = response.with_log_start_offset(p.log_start_offset);
                            }
                        }
                        Err((code, message)) => {
                            tracing::debug!(topic = %&*name, partition = p.index, ?code, %message, "produce failed");
                            response = response.with_error_code(code.code());
                            if version >= 8 {
                                response = response.with_error_message(Some(str_bytes(message)));
                            }
                        }
                    }
                    partitions.push(response);
                }
                responses.push(
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_topic_id(topic_id)
                        .with_partition_responses(partitions),
                );
            }
            ProduceResponse::default().with_responses(responses)
        }
        .boxed(),
    ))
}
