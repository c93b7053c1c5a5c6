//! CreateAcls, DescribeAcls and DeleteAcls: what `kafka-acls.sh` and the
//! admin clients manage ACLs with. Bindings are stored in the metadata
//! store (every broker enforces the same set, re-read within
//! `acl.refresh_interval_ms`; this broker re-reads at once). Checked as
//! Kafka checks them; with the authorizer off they are still stored, and
//! enforced once it is on.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::security::acl::{
    AclFilter, CLUSTER_NAME, Operation, PATTERN_LITERAL, PATTERN_PREFIXED, PERMISSION_ALLOW,
    PERMISSION_DENY, ResourceType, filter_matches,
};
use crate::metadata::AclRecord;

/// Why a binding cannot be created, as Kafka says it.
fn invalid(b: &AclRecord) -> Option<String> {
    let Some(resource) = ResourceType::from_code(b.resource_type) else {
        return Some(format!("Invalid resource type {}", b.resource_type));
    };
    if b.pattern_type != PATTERN_LITERAL && b.pattern_type != PATTERN_PREFIXED {
        return Some("Invalid pattern type: must be LITERAL or PREFIXED".into());
    }
    if b.resource_name.is_empty() {
        return Some("Resource name must not be empty".into());
    }
    if resource == ResourceType::Cluster
        && (b.resource_name != CLUSTER_NAME || b.pattern_type != PATTERN_LITERAL)
    {
        return Some(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    match Operation::from_code(b.operation) {
        None => return Some(format!("Invalid operation {}", b.operation)),
        Some(Operation::CreateTokens | Operation::DescribeTokens)
            if resource != ResourceType::DelegationToken && resource != ResourceType::Cluster =>
        {
            return Some("Invalid operation for the resource type".into());
        }
        Some(_) => {}
    }
    if b.permission_type != PERMISSION_ALLOW && b.permission_type != PERMISSION_DENY {
        return Some("Invalid permission type: must be ALLOW or DENY".into());
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Some(format!(
                "Invalid principal '{}': expected TYPE:NAME, such as User:alice",
                b.principal
            ));
        }
    }
    if b.host.is_empty() {
        return Some("Host must not be empty (use * for any)".into());
    }
    None
}

pub async fn create(broker: &Broker, request: CreateAclsRequest) -> CreateAclsResponse {
    let mut results = Vec::with_capacity(request.creations.len());
    let mut valid = Vec::new();
    for c in &request.creations {
        let binding = AclRecord {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission_type: c.permission_type,
        };
        match invalid(&binding) {
            Some(message) => results.push(Some(message)),
            None => {
                results.push(None);
                valid.push(binding);
            }
        }
    }
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        broker.metadata.create_acls(valid).await
    };
    if stored.is_ok() {
        broker.refresh_acls().await;
    }
    let results = results
        .into_iter()
        .map(|invalid| match (invalid, &stored) {
            (Some(message), _) => AclCreationResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(message))),
            (None, Err(error)) => AclCreationResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes(error.to_string()))),
            (None, Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn describe_filter(request: &DescribeAclsRequest) -> AclFilter {
    AclFilter {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.as_ref().map(|s| s.to_string()),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.as_ref().map(|s| s.to_string()),
        host: request.host_filter.as_ref().map(|s| s.to_string()),
        operation: request.operation,
        permission_type: request.permission_type,
    }
}

pub async fn describe(broker: &Broker, request: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = describe_filter(&request);
    let bindings = match broker.metadata.acls().await {
        Ok(bindings) => bindings,
        Err(error) => {
            return DescribeAclsResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes(error.to_string())));
        }
    };
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in bindings.iter().filter(|b| filter_matches(b, &filter)) {
        by_resource
            .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(b.principal.clone()))
                    .with_host(str_bytes(b.host.clone()))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission_type),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((rtype, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rtype)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(broker: &Broker, request: DeleteAclsRequest) -> DeleteAclsResponse {
    let bindings = match broker.metadata.acls().await {
        Ok(bindings) => bindings,
        Err(error) => {
            let results = request
                .filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_error_message(Some(str_bytes(error.to_string())))
                })
                .collect();
            return DeleteAclsResponse::default().with_filter_results(results);
        }
    };
    let mut results = Vec::with_capacity(request.filters.len());
    for f in &request.filters {
        let filter = AclFilter {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.as_ref().map(|s| s.to_string()),
            host: f.host_filter.as_ref().map(|s| s.to_string()),
            operation: f.operation,
            permission_type: f.permission_type,
        };
        let matching: Vec<AclRecord> = bindings
            .iter()
            .filter(|b| filter_matches(b, &filter))
            .cloned()
            .collect();
        let deleted = broker.metadata.delete_acls(matching.clone()).await;
        let result = match deleted {
            Err(error) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes(error.to_string()))),
            Ok(_) => DeleteAclsFilterResult::default().with_matching_acls(
                matching
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(str_bytes(b.resource_name))
                            .with_pattern_type(b.pattern_type)
                            .with_principal(str_bytes(b.principal))
                            .with_host(str_bytes(b.host))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission_type)
                    })
                    .collect(),
            ),
        };
        results.push(result);
    }
    broker.refresh_acls().await;
    DeleteAclsResponse::default().with_filter_results(results)
}
