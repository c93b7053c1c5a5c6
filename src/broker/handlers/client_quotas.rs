//! DescribeClientQuotas and AlterClientQuotas (KIP-546), as
//! `kafka-configs.sh --entity-type users|clients` and the admin clients use
//! them. Quotas live in the metadata store; every broker re-reads them with
//! the ACLs, the one that changed them at once.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::broker::quotas::{
    CLIENT_ID, CONSUMER_BYTE_RATE, Entity, KEYS, PRODUCER_BYTE_RATE, USER,
};
use crate::metadata::QuotaRecord;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// An entity from (type, name) pairs, or why it is not one.
fn entity_of<'a>(
    parts: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Entity, String> {
    let mut entity = Entity::default();
    for (kind, name) in parts {
        let slot = match kind {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            "ip" => return Err("ip quotas (connection_creation_rate) are not supported".into()),
            other => return Err(format!("unknown entity type '{other}'")),
        };
        if slot.is_some() {
            return Err(format!("entity type '{kind}' given twice"));
        }
        *slot = Some(name.map(String::from));
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("an entity needs a user or a client-id".into());
    }
    Ok(entity)
}

pub async fn describe(
    broker: &Broker,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let failed = |message: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(text(message)))
    };
    // (type, match type, name): 0 exact, 1 default, 2 any.
    let mut seen = HashSet::new();
    for component in &request.components {
        let kind = component.entity_type.as_str();
        if kind != USER && kind != CLIENT_ID {
            return failed(format!("unknown entity type '{kind}'"));
        }
        if !seen.insert(kind.to_string()) {
            return failed(format!("entity type '{kind}' filtered twice"));
        }
        if !(0..=2).contains(&component.match_type) {
            return failed(format!("unknown match type {}", component.match_type));
        }
        if component.match_type == 0 && component._match.is_none() {
            return failed(format!("an exact match on '{kind}' needs a name"));
        }
    }
    let table = broker.quotas.table();
    let mut entries: Vec<EntryData> = table
        .iter()
        .filter(|(entity, _)| {
            let parts = entity.components();
            if request.strict && parts.len() != request.components.len() {
                return false;
            }
            request.components.iter().all(|component| {
                let kind = component.entity_type.as_str();
                let Some((_, name)) = parts.iter().find(|(k, _)| *k == kind) else {
                    return false;
                };
                match component.match_type {
                    0 => name.as_deref() == component._match.as_deref(),
                    1 => name.is_none(),
                    _ => true,
                }
            })
        })
        .map(|(entity, values)| {
            let mut values: Vec<ValueData> = values
                .iter()
                .map(|(key, value)| {
                    ValueData::default()
                        .with_key(text(key.clone()))
                        .with_value(*value)
                })
                .collect();
            values.sort_by(|a, b| a.key.cmp(&b.key));
            EntryData::default()
                .with_entity(
                    entity
                        .components()
                        .into_iter()
                        .map(|(kind, name)| {
                            EntityData::default()
                                .with_entity_type(text(kind))
                                .with_entity_name(name.map(text))
                        })
                        .collect(),
                )
                .with_values(values)
        })
        .collect();
    entries.sort_by_key(|e| format!("{:?}", e.entity));
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// Checks one entry's operations; the records to set and the keys to remove.
type Changes = (Vec<QuotaRecord>, Vec<(String, String)>);

fn changes(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<Changes, String> {
    let entity = entity_of(
        entry
            .entity
            .iter()
            .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
    )?;
    let canonical = entity.canonical();
    let mut keys = HashSet::new();
    let (mut set, mut remove) = (Vec::new(), Vec::new());
    for op in &entry.ops {
        let key = op.key.as_str();
        if !KEYS.contains(&key) {
            return Err(format!(
                "quota '{key}' is not supported (Strata enforces {})",
                KEYS.join(", ")
            ));
        }
        if !keys.insert(key.to_string()) {
            return Err(format!("quota '{key}' given twice"));
        }
        if op.remove {
            remove.push((canonical.clone(), key.to_string()));
            continue;
        }
        let whole = key == PRODUCER_BYTE_RATE || key == CONSUMER_BYTE_RATE;
        if !op.value.is_finite() || op.value <= 0.0 || (whole && op.value.fract() != 0.0) {
            return Err(format!(
                "invalid value {} for {key}: {}",
                op.value,
                if whole {
                    "a whole number of bytes per second above 0"
                } else {
                    "a percentage above 0"
                }
            ));
        }
        set.push(QuotaRecord {
            entity: canonical.clone(),
            key: key.to_string(),
            value: op.value,
        });
    }
    Ok((set, remove))
}

pub async fn alter(
    broker: &Broker,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let mut results = Vec::with_capacity(request.entries.len());
    let mut changed = false;
    for entry in &request.entries {
        let echo: Vec<AlteredEntity> = entry
            .entity
            .iter()
            .map(|e| {
                AlteredEntity::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let outcome = match changes(entry) {
            Err(message) => Err((ResponseError::InvalidRequest, message)),
            Ok(_) if request.validate_only => Ok(()),
            Ok((set, remove)) => broker
                .metadata
                .alter_client_quotas(set, remove)
                .await
                .map(|()| changed = true)
                .map_err(|e| (ResponseError::UnknownServerError, e.to_string())),
        };
        let result = AlteredEntry::default().with_entity(echo);
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(text(message))),
        });
    }
    if changed {
        broker.refresh_acls().await;
    }
    AlterClientQuotasResponse::default().with_entries(results)
}
