//! InitProducerId for idempotent producers: a producer id never handed out
//! before, with epoch 0. A producer that sends the id and epoch it has
//! (v3+, KIP-360) gets the same id with the next epoch, which fences its
//! older epoch and restarts its sequences; at the last epoch it gets a new
//! id. With a transactional id the transaction coordinator answers
//! (`broker::txn`): the id's producer id at its next epoch.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.is_empty())
    {
        let known =
            (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
        return match broker
            .txn
            .init_producer_id(broker, id, request.transaction_timeout_ms, known)
            .await
        {
            Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            // PRODUCER_FENCED is v4+ (KIP-588).
            Err(ResponseError::ProducerFenced) if version < 4 => {
                failed(ResponseError::InvalidProducerEpoch)
            }
            Err(code) => failed(code),
        };
    }
    let (known_id, known_epoch) = (request.producer_id.0, request.producer_epoch);
    if known_id >= 0 && (0..i16::MAX - 1).contains(&known_epoch) {
        match broker.metadata.producer_id_issued(known_id).await {
            Ok(true) => {
                return InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(known_id))
                    .with_producer_epoch(known_epoch + 1);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot look up a producer id");
                return failed(ResponseError::CoordinatorNotAvailable);
            }
        }
    }
    match broker.metadata.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "cannot allocate a producer id");
            failed(ResponseError::CoordinatorNotAvailable)
        }
    }
}
