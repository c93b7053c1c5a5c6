//! ACLs with Kafka's semantics (`StandardAuthorizer`): bindings of a
//! resource pattern (type, name, LITERAL or PREFIXED; the literal name `*`
//! matches every name) to a principal (`User:NAME` or `User:*`), a host
//! (an address or `*`), an operation and ALLOW or DENY.
//!
//! A request is authorized when the authorizer is off, the principal is a
//! super user, or: no DENY binding matches, and an ALLOW binding does
//! (`ALL` matches every operation; ALLOW of Read, Write, Delete or Alter
//! implies Describe, ALLOW of AlterConfigs implies DescribeConfigs). A
//! resource that no binding names at all is allowed only with
//! `allow_everyone_if_no_acl_found`. Bindings live in the metadata store;
//! each broker keeps a copy, re-read every `acl.refresh_interval_ms`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::metadata::AclRecord;

/// Kafka's resource type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
}

impl ResourceType {
    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            2 => Self::Topic,
            3 => Self::Group,
            4 => Self::Cluster,
            5 => Self::TransactionalId,
            6 => Self::DelegationToken,
            _ => return None,
        })
    }
}

/// Kafka's pattern type codes (of stored bindings).
pub const PATTERN_LITERAL: i8 = 3;
pub const PATTERN_PREFIXED: i8 = 4;
/// Filter-only pattern types.
pub const PATTERN_ANY: i8 = 1;
pub const PATTERN_MATCH: i8 = 2;

/// Kafka's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

impl Operation {
    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            2 => Self::All,
            3 => Self::Read,
            4 => Self::Write,
            5 => Self::Create,
            6 => Self::Delete,
            7 => Self::Alter,
            8 => Self::Describe,
            9 => Self::ClusterAction,
            10 => Self::DescribeConfigs,
            11 => Self::AlterConfigs,
            12 => Self::IdempotentWrite,
            13 => Self::CreateTokens,
            14 => Self::DescribeTokens,
            _ => return None,
        })
    }

    /// The operations an ALLOW of which grants `self`.
    fn granted_by(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Describe => &[Describe, Read, Write, Delete, Alter],
            DescribeConfigs => &[DescribeConfigs, AlterConfigs],
            Read => &[Read],
            Write => &[Write],
            Create => &[Create],
            Delete => &[Delete],
            Alter => &[Alter],
            ClusterAction => &[ClusterAction],
            AlterConfigs => &[AlterConfigs],
            IdempotentWrite => &[IdempotentWrite],
            CreateTokens => &[CreateTokens],
            DescribeTokens => &[DescribeTokens],
            All => &[All],
        }
    }
}

/// Kafka's permission type codes.
pub const PERMISSION_DENY: i8 = 2;
pub const PERMISSION_ALLOW: i8 = 3;

/// Kafka's name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The authorizer of one broker.
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
    bindings: RwLock<Arc<Vec<AclRecord>>>,
}

impl Authorizer {
    pub fn new(enabled: bool, super_users: &str, allow_if_no_acl: bool) -> Self {
        Self {
            enabled,
            super_users: super_users
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            allow_if_no_acl,
            bindings: RwLock::new(Arc::new(Vec::new())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replaces the bindings (as read from the store).
    pub fn set_bindings(&self, bindings: Vec<AclRecord>) {
        if let Ok(mut slot) = self.bindings.write() {
            *slot = Arc::new(bindings);
        }
    }

    pub fn bindings(&self) -> Arc<Vec<AclRecord>> {
        self.bindings
            .read()
            .map(|b| Arc::clone(&b))
            .unwrap_or_default()
    }

    /// Whether `principal` at `host` may do `operation` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: IpAddr,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let bindings = self.bindings();
        let matching: Vec<&AclRecord> = bindings
            .iter()
            .filter(|b| b.resource_type == resource as i8 && names_match(b, name))
            .collect();
        if matching.is_empty() {
            return self.allow_if_no_acl;
        }
        let host = host.to_string();
        let applies = |b: &&&AclRecord| {
            (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
        };
        let denied = matching.iter().filter(applies).any(|b| {
            b.permission_type == PERMISSION_DENY
                && (b.operation == Operation::All as i8 || b.operation == operation as i8)
        });
        if denied {
            return false;
        }
        let granted = operation.granted_by();
        matching.iter().filter(applies).any(|b| {
            b.permission_type == PERMISSION_ALLOW
                && (b.operation == Operation::All as i8
                    || granted.iter().any(|op| b.operation == *op as i8))
        })
    }
}

impl Authorizer {
    /// Whether some ALLOW binding lets `principal` write some topic (Kafka
    /// accepts that for an idempotent producer's InitProducerId), and no
    /// DENY of all topics stops it.
    pub fn may_write_some_topic(&self, principal: &str, host: IpAddr) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let host = host.to_string();
        self.bindings().iter().any(|b| {
            b.resource_type == ResourceType::Topic as i8
                && b.permission_type == PERMISSION_ALLOW
                && (b.operation == Operation::Write as i8 || b.operation == Operation::All as i8)
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
        })
    }
}

fn names_match(binding: &AclRecord, name: &str) -> bool {
    match binding.pattern_type {
        PATTERN_LITERAL => binding.resource_name == name || binding.resource_name == "*",
        PATTERN_PREFIXED => name.starts_with(binding.resource_name.as_str()),
        _ => false,
    }
}

/// Whether a stored binding matches a DescribeAcls/DeleteAcls filter
/// (`None` fields and the ANY codes match everything; pattern MATCH
/// matches the bindings that would apply to the named resource).
pub fn filter_matches(binding: &AclRecord, filter: &AclFilter) -> bool {
    let any = |code: i8| code == 1;
    if !any(filter.resource_type) && binding.resource_type != filter.resource_type {
        return false;
    }
    let name_ok = match (filter.pattern_type, &filter.resource_name) {
        (_, None) => match filter.pattern_type {
            PATTERN_ANY | PATTERN_MATCH => true,
            pattern => binding.pattern_type == pattern,
        },
        (PATTERN_ANY, Some(name)) => binding.resource_name == *name,
        (PATTERN_MATCH, Some(name)) => names_match(binding, name),
        (pattern, Some(name)) => binding.pattern_type == pattern && binding.resource_name == *name,
    };
    name_ok
        && filter
            .principal
            .as_ref()
            .is_none_or(|p| *p == binding.principal)
        && filter.host.as_ref().is_none_or(|h| *h == binding.host)
        && (any(filter.operation) || binding.operation == filter.operation)
        && (any(filter.permission_type) || binding.permission_type == filter.permission_type)
}

/// A DescribeAcls/DeleteAcls filter, in Kafka's codes.
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission_type: i8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rtype: ResourceType,
        name: &str,
        pattern: i8,
        principal: &str,
        op: Operation,
        permission: i8,
    ) -> AclRecord {
        AclRecord {
            resource_type: rtype as i8,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op as i8,
            permission_type: permission,
        }
    }

    fn localhost() -> IpAddr {
        "127.0.0.1".parse().expect("ip")
    }

    #[test]
    fn kafkas_rules_hold() {
        let authorizer = Authorizer::new(true, "User:admin", false);
        authorizer.set_bindings(vec![
            acl(
                ResourceType::Topic,
                "orders",
                PATTERN_LITERAL,
                "User:alice",
                Operation::Read,
                PERMISSION_ALLOW,
            ),
            acl(
                ResourceType::Topic,
                "logs-",
                PATTERN_PREFIXED,
                "User:*",
                Operation::Write,
                PERMISSION_ALLOW,
            ),
            acl(
                ResourceType::Topic,
                "logs-secret",
                PATTERN_LITERAL,
                "User:bob",
                Operation::All,
                PERMISSION_DENY,
            ),
            acl(
                ResourceType::Group,
                "*",
                PATTERN_LITERAL,
                "User:alice",
                Operation::All,
                PERMISSION_ALLOW,
            ),
        ]);
        let can = |who: &str, op, rtype, name: &str| {
            authorizer.authorize(who, localhost(), op, rtype, name)
        };
        use Operation::*;
        use ResourceType::*;
        assert!(can("User:alice", Read, Topic, "orders"));
        assert!(
            can("User:alice", Describe, Topic, "orders"),
            "Read implies Describe"
        );
        assert!(!can("User:alice", Write, Topic, "orders"));
        assert!(!can("User:bob", Read, Topic, "orders"));
        assert!(
            can("User:bob", Write, Topic, "logs-app"),
            "prefixed, any user"
        );
        assert!(!can("User:bob", Write, Topic, "logs-secret"), "DENY wins");
        assert!(can("User:carol", Write, Topic, "logs-secret"));
        assert!(
            can("User:alice", Read, Group, "any-group"),
            "wildcard name, ALL"
        );
        assert!(
            !can("User:alice", Read, Topic, "unnamed"),
            "no ACL: denied by default"
        );
        assert!(can("User:admin", Delete, Topic, "unnamed"), "super user");
        let open = Authorizer::new(true, "", true);
        assert!(
            open.authorize("User:x", localhost(), Read, Topic, "t"),
            "no ACL found: allowed"
        );
        assert!(Authorizer::new(false, "", false).authorize(
            "User:x",
            localhost(),
            Delete,
            Cluster,
            CLUSTER_NAME
        ));
    }

    #[test]
    fn hosts_must_match() {
        let authorizer = Authorizer::new(true, "", false);
        let mut binding = acl(
            ResourceType::Topic,
            "t",
            PATTERN_LITERAL,
            "User:a",
            Operation::Read,
            PERMISSION_ALLOW,
        );
        binding.host = "10.0.0.1".into();
        authorizer.set_bindings(vec![binding]);
        assert!(authorizer.authorize(
            "User:a",
            "10.0.0.1".parse().expect("ip"),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(!authorizer.authorize(
            "User:a",
            localhost(),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn filters_match_as_kafka_defines_them() {
        let literal = acl(
            ResourceType::Topic,
            "orders",
            PATTERN_LITERAL,
            "User:a",
            Operation::Read,
            PERMISSION_ALLOW,
        );
        let prefixed = acl(
            ResourceType::Topic,
            "ord",
            PATTERN_PREFIXED,
            "User:a",
            Operation::Read,
            PERMISSION_ALLOW,
        );
        let filter = |pattern, name: Option<&str>| AclFilter {
            resource_type: 1,
            resource_name: name.map(String::from),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: 1,
            permission_type: 1,
        };
        assert!(filter_matches(&literal, &filter(PATTERN_ANY, None)));
        assert!(filter_matches(
            &prefixed,
            &filter(PATTERN_MATCH, Some("orders"))
        ));
        assert!(filter_matches(
            &literal,
            &filter(PATTERN_MATCH, Some("orders"))
        ));
        assert!(!filter_matches(
            &prefixed,
            &filter(PATTERN_LITERAL, Some("orders"))
        ));
        assert!(filter_matches(
            &prefixed,
            &filter(PATTERN_PREFIXED, Some("ord"))
        ));
        assert!(!filter_matches(&literal, &filter(PATTERN_ANY, Some("ord"))));
    }
}
