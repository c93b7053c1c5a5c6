//! Authorization of each request by the ACLs (see `security::acl`), with
//! the operations Kafka's authorizer checks for each API. Requests that
//! name several topics are split: the handler gets the authorized part,
//! and the response carries TOPIC_AUTHORIZATION_FAILED for the rest, in
//! their own entries (never a failed request). APIs without a finer
//! mapping here need ALTER on the cluster (or a super user) while ACLs
//! are on: they are refused rather than left open.

use std::net::IpAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use super::connection::Session;
use super::security::acl::{CLUSTER_NAME, Operation, ResourceType};
use crate::metadata::TopicId;

const TOPIC_DENIED: i16 = 29; // TOPIC_AUTHORIZATION_FAILED

/// Takes the items `keep` refuses out of `items`, and returns them.
fn split<T>(items: &mut Vec<T>, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
    let (allowed, denied) = std::mem::take(items).into_iter().partition(|t| keep(t));
    *items = allowed;
    denied
}

/// What one connection may do.
pub struct Access {
    broker: Arc<Broker>,
    principal: Arc<str>,
    host: IpAddr,
}

impl Access {
    pub fn new(broker: &Arc<Broker>, session: &Session) -> Self {
        Self {
            broker: Arc::clone(broker),
            principal: Arc::clone(&session.principal),
            host: session.peer.ip(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.broker.authorizer.enabled()
    }

    pub fn can(&self, operation: Operation, resource: ResourceType, name: &str) -> bool {
        self.broker
            .authorizer
            .authorize(&self.principal, self.host, operation, resource, name)
    }

    pub fn on_cluster(&self, operation: Operation) -> bool {
        self.can(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    fn topic_name(&self, name: &str, id: uuid::Uuid) -> String {
        if !name.is_empty() || id.is_nil() {
            return name.to_string();
        }
        self.broker
            .catalog
            .by_id(TopicId(id))
            .map(|t| t.record.name.clone())
            .unwrap_or_default()
    }

    /// Produce: WRITE on the transactional id, if any, and on each topic.
    /// Returns the responses of what was taken out.
    pub fn produce(
        &self,
        request: &mut ProduceRequest,
    ) -> Vec<produce_response::TopicProduceResponse> {
        if !self.enabled() {
            return Vec::new();
        }
        let txn_denied = request
            .transactional_id
            .as_ref()
            .is_some_and(|id| !self.can(Operation::Write, ResourceType::TransactionalId, id));
        let denied = split(&mut request.topic_data, |t| {
            !txn_denied
                && self.can(
                    Operation::Write,
                    ResourceType::Topic,
                    &self.topic_name(&t.name, t.topic_id),
                )
        });
        let code = if txn_denied {
            ResponseError::TransactionalIdAuthorizationFailed.code()
        } else {
            TOPIC_DENIED
        };
        denied
            .into_iter()
            .map(|t| {
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                produce_response::PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(code)
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// Fetch: READ on each topic.
    pub fn fetch(&self, request: &mut FetchRequest) -> Vec<fetch_response::FetchableTopicResponse> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.topics, |t| {
            self.can(
                Operation::Read,
                ResourceType::Topic,
                &self.topic_name(&t.topic, t.topic_id),
            )
        });
        denied
            .into_iter()
            .map(|t| {
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(t.topic)
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                fetch_response::PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// ListOffsets: DESCRIBE on each topic.
    pub fn list_offsets(
        &self,
        request: &mut ListOffsetsRequest,
    ) -> Vec<list_offsets_response::ListOffsetsTopicResponse> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.topics, |t| {
            self.can(Operation::Describe, ResourceType::Topic, &t.name)
        });
        denied
            .into_iter()
            .map(|t| {
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                list_offsets_response::ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_timestamp(-1)
                                    .with_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// Metadata, before the handler: topics it may not see are not looked
    /// up, and topics it may not create are not created.
    pub fn metadata_request(&self, request: &mut MetadataRequest) {
        if !self.enabled() {
            return;
        }
        let may_create_any = self.on_cluster(Operation::Create);
        if let Some(topics) = &mut request.topics {
            topics.retain(|t| match &t.name {
                Some(name) => {
                    let exists = self.broker.catalog.by_name(name).is_some();
                    self.can(Operation::Describe, ResourceType::Topic, name)
                        && (exists
                            || may_create_any
                            || self.can(Operation::Create, ResourceType::Topic, name))
                }
                None => true,
            });
        }
    }

    /// Metadata, after the handler: topics it may not describe are left
    /// out of a listing of all topics; those it named are answered with
    /// TOPIC_AUTHORIZATION_FAILED (or, if it may describe but not create
    /// a missing one, UNKNOWN_TOPIC_OR_PARTITION).
    pub fn metadata_response(&self, asked: &Option<Vec<String>>, response: &mut MetadataResponse) {
        if !self.enabled() {
            return;
        }
        response.topics.retain(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| self.can(Operation::Describe, ResourceType::Topic, n))
        });
        if let Some(asked) = asked {
            for name in asked {
                if response
                    .topics
                    .iter()
                    .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
                {
                    continue;
                }
                let code = if self.can(Operation::Describe, ResourceType::Topic, name) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    TOPIC_DENIED
                };
                response.topics.push(
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(Some(TopicName(super::handlers::str_bytes(name.clone()))))
                        .with_error_code(code),
                );
            }
        }
    }

    /// CreateTopics: CREATE on the cluster or on each topic.
    pub fn create_topics(
        &self,
        request: &mut CreateTopicsRequest,
    ) -> Vec<create_topics_response::CreatableTopicResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let any = self.on_cluster(Operation::Create);
        let denied = split(&mut request.topics, |t| {
            any || self.can(Operation::Create, ResourceType::Topic, &t.name)
        });
        denied
            .into_iter()
            .map(|t| {
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC_DENIED)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            })
            .collect()
    }

    /// DeleteTopics: DELETE on each topic (named, or by id).
    pub fn delete_topics(
        &self,
        request: &mut DeleteTopicsRequest,
    ) -> Vec<delete_topics_response::DeletableTopicResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut denied = Vec::new();
        request.topic_names.retain(|name| {
            let ok = self.can(Operation::Delete, ResourceType::Topic, name);
            if !ok {
                denied.push(
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(name.clone()))
                        .with_error_code(TOPIC_DENIED),
                );
            }
            ok
        });
        request.topics.retain(|t| {
            let name = t
                .name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_else(|| self.topic_name("", t.topic_id));
            let ok = self.can(Operation::Delete, ResourceType::Topic, &name);
            if !ok {
                denied.push(
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_error_code(TOPIC_DENIED),
                );
            }
            ok
        });
        denied
    }

    /// OffsetCommit: READ on the group (else every partition fails with
    /// GROUP_AUTHORIZATION_FAILED), then READ on each topic.
    pub fn offset_commit(
        &self,
        request: &mut OffsetCommitRequest,
    ) -> Vec<offset_commit_response::OffsetCommitResponseTopic> {
        if !self.enabled() {
            return Vec::new();
        }
        let group_ok = self.can(Operation::Read, ResourceType::Group, &request.group_id);
        let denied = split(&mut request.topics, |t| {
            group_ok
                && self.can(
                    Operation::Read,
                    ResourceType::Topic,
                    &self.topic_name(&t.name, t.topic_id),
                )
        });
        let code = if group_ok {
            TOPIC_DENIED
        } else {
            ResponseError::GroupAuthorizationFailed.code()
        };
        denied
            .into_iter()
            .map(|t| {
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// OffsetFetch, after the handler: DESCRIBE on each group (else the
    /// group's answer is GROUP_AUTHORIZATION_FAILED) and on each topic
    /// (topics it may not describe are left out).
    pub fn offset_fetch(&self, response: &mut OffsetFetchResponse, single_group: &str) {
        if !self.enabled() {
            return;
        }
        let topic_ok = |name: &str| self.can(Operation::Describe, ResourceType::Topic, name);
        if !single_group.is_empty()
            && !self.can(Operation::Describe, ResourceType::Group, single_group)
        {
            response.topics.clear();
            response.error_code = ResponseError::GroupAuthorizationFailed.code();
        }
        response.topics.retain(|t| topic_ok(&t.name));
        for group in &mut response.groups {
            if !self.can(Operation::Describe, ResourceType::Group, &group.group_id) {
                group.topics.clear();
                group.error_code = ResponseError::GroupAuthorizationFailed.code();
            }
            group.topics.retain(|t| topic_ok(&t.name));
        }
    }

    fn group(&self, operation: Operation, group: &str) -> bool {
        self.can(operation, ResourceType::Group, group)
    }

    /// DescribeGroups and ConsumerGroupDescribe, after the handler.
    pub fn describe_groups(&self, response: &mut DescribeGroupsResponse) {
        if !self.enabled() {
            return;
        }
        for g in &mut response.groups {
            if !self.group(Operation::Describe, &g.group_id) {
                *g = describe_groups_response::DescribedGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code());
            }
        }
    }

    pub fn consumer_group_describe(&self, response: &mut ConsumerGroupDescribeResponse) {
        if !self.enabled() {
            return;
        }
        for g in &mut response.groups {
            if !self.group(Operation::Describe, &g.group_id) {
                *g = consumer_group_describe_response::DescribedGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code());
            }
        }
    }

    /// ListGroups, after the handler: every group with DESCRIBE on the
    /// cluster, else those it may describe.
    pub fn list_groups(&self, response: &mut ListGroupsResponse) {
        if !self.enabled() || self.on_cluster(Operation::Describe) {
            return;
        }
        response
            .groups
            .retain(|g| self.group(Operation::Describe, &g.group_id));
    }

    /// DeleteGroups: DELETE on each group.
    pub fn delete_groups(
        &self,
        request: &mut DeleteGroupsRequest,
    ) -> Vec<delete_groups_response::DeletableGroupResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.groups_names, |g| {
            self.group(Operation::Delete, g)
        });
        denied
            .into_iter()
            .map(|g| {
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            })
            .collect()
    }

    /// DescribeConfigs, after the handler: DESCRIBE_CONFIGS on each topic,
    /// or on the cluster for a broker's configs.
    pub fn describe_configs(&self, response: &mut DescribeConfigsResponse) {
        if !self.enabled() {
            return;
        }
        for r in &mut response.results {
            let (ok, code) = self.config_access(
                Operation::DescribeConfigs,
                r.resource_type,
                &r.resource_name,
            );
            if !ok {
                r.configs.clear();
                r.error_code = code;
                r.error_message = None;
            }
        }
    }

    /// Whether a config resource (2: topic, 4: broker) allows `operation`,
    /// and the error code if not.
    fn config_access(&self, operation: Operation, resource_type: i8, name: &str) -> (bool, i16) {
        match resource_type {
            2 => (self.can(operation, ResourceType::Topic, name), TOPIC_DENIED),
            _ => (
                self.on_cluster(operation),
                ResponseError::ClusterAuthorizationFailed.code(),
            ),
        }
    }

    /// AlterConfigs: ALTER_CONFIGS on each resource.
    pub fn alter_configs(
        &self,
        request: &mut AlterConfigsRequest,
    ) -> Vec<alter_configs_response::AlterConfigsResourceResponse> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut denied = Vec::new();
        request.resources.retain(|r| {
            let (ok, code) =
                self.config_access(Operation::AlterConfigs, r.resource_type, &r.resource_name);
            if !ok {
                denied.push(
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                        .with_error_code(code),
                );
            }
            ok
        });
        denied
    }

    /// IncrementalAlterConfigs: ALTER_CONFIGS on each resource.
    pub fn incremental_alter_configs(
        &self,
        request: &mut IncrementalAlterConfigsRequest,
    ) -> Vec<incremental_alter_configs_response::AlterConfigsResourceResponse> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut denied = Vec::new();
        request.resources.retain(|r| {
            let (ok, code) =
                self.config_access(Operation::AlterConfigs, r.resource_type, &r.resource_name);
            if !ok {
                denied.push(
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                        .with_error_code(code),
                );
            }
            ok
        });
        denied
    }

    /// CreatePartitions: ALTER on each topic.
    pub fn create_partitions(
        &self,
        request: &mut CreatePartitionsRequest,
    ) -> Vec<create_partitions_response::CreatePartitionsTopicResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.topics, |t| {
            self.can(Operation::Alter, ResourceType::Topic, &t.name)
        });
        denied
            .into_iter()
            .map(|t| {
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC_DENIED)
            })
            .collect()
    }

    /// DeleteRecords: DELETE on each topic.
    pub fn delete_records(
        &self,
        request: &mut DeleteRecordsRequest,
    ) -> Vec<delete_records_response::DeleteRecordsTopicResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.topics, |t| {
            self.can(Operation::Delete, ResourceType::Topic, &t.name)
        });
        denied
            .into_iter()
            .map(|t| {
                delete_records_response::DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                delete_records_response::DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p.partition_index)
                                    .with_low_watermark(-1)
                                    .with_error_code(TOPIC_DENIED)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// OffsetForLeaderEpoch (from consumers): DESCRIBE on each topic.
    pub fn offset_for_leader_epoch(
        &self,
        request: &mut OffsetForLeaderEpochRequest,
    ) -> Vec<offset_for_leader_epoch_response::OffsetForLeaderTopicResult> {
        if !self.enabled() {
            return Vec::new();
        }
        let denied = split(&mut request.topics, |t| {
            self.can(Operation::Describe, ResourceType::Topic, &t.topic)
        });
        denied
            .into_iter()
            .map(|t| {
                offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                offset_for_leader_epoch_response::EpochEndOffset::default()
                                    .with_partition(p.partition)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// DescribeProducers, after the handler: READ on each topic.
    pub fn describe_producers(&self, response: &mut DescribeProducersResponse) {
        if !self.enabled() {
            return;
        }
        for t in &mut response.topics {
            if !self.can(Operation::Read, ResourceType::Topic, &t.name) {
                for p in &mut t.partitions {
                    p.error_code = TOPIC_DENIED;
                    p.error_message = None;
                    p.active_producers.clear();
                }
            }
        }
    }

    fn txn(&self, operation: Operation, id: &str) -> bool {
        self.can(operation, ResourceType::TransactionalId, id)
    }

    /// DescribeTransactions, after the handler.
    pub fn describe_transactions(&self, response: &mut DescribeTransactionsResponse) {
        if !self.enabled() {
            return;
        }
        for t in &mut response.transaction_states {
            if !self.txn(Operation::Describe, &t.transactional_id) {
                *t = describe_transactions_response::TransactionState::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
        }
    }

    /// ListTransactions, after the handler: those it may describe.
    pub fn list_transactions(&self, response: &mut ListTransactionsResponse) {
        if !self.enabled() {
            return;
        }
        response
            .transaction_states
            .retain(|t| self.txn(Operation::Describe, &t.transactional_id));
    }

    /// InitProducerId: WRITE on the transactional id; without one (an
    /// idempotent producer), IDEMPOTENT_WRITE on the cluster or WRITE on
    /// some topic. The error to answer with, if refused.
    pub fn init_producer_id(&self, request: &InitProducerIdRequest) -> Option<ResponseError> {
        if !self.enabled() {
            return None;
        }
        match request
            .transactional_id
            .as_ref()
            .filter(|id| !id.is_empty())
        {
            Some(id) => (!self.txn(Operation::Write, id))
                .then_some(ResponseError::TransactionalIdAuthorizationFailed),
            None => (!self.on_cluster(Operation::IdempotentWrite)
                && !self
                    .broker
                    .authorizer
                    .may_write_some_topic(&self.principal, self.host))
            .then_some(ResponseError::ClusterAuthorizationFailed),
        }
    }

    /// A transactional id's WRITE (EndTxn, AddOffsetsToTxn with READ on
    /// its group too, TxnOffsetCommit, AddPartitionsToTxn v0-3).
    pub fn txn_write(&self, id: &str) -> bool {
        !self.enabled() || self.txn(Operation::Write, id)
    }

    pub fn group_read(&self, group: &str) -> bool {
        !self.enabled() || self.group(Operation::Read, group)
    }

    pub fn cluster_op(&self, operation: Operation) -> bool {
        !self.enabled() || self.on_cluster(operation)
    }

    /// FindCoordinator, after the handler: DESCRIBE on each group or
    /// transactional id asked about.
    pub fn find_coordinator(
        &self,
        key_type: i8,
        single_key: &str,
        response: &mut FindCoordinatorResponse,
    ) {
        if !self.enabled() {
            return;
        }
        let (resource, code) = if key_type == 1 {
            (
                ResourceType::TransactionalId,
                ResponseError::TransactionalIdAuthorizationFailed.code(),
            )
        } else {
            (
                ResourceType::Group,
                ResponseError::GroupAuthorizationFailed.code(),
            )
        };
        if response.coordinators.is_empty() {
            if !self.can(Operation::Describe, resource, single_key) {
                response.error_code = code;
                response.node_id = BrokerId(-1);
                response.host = Default::default();
                response.port = -1;
            }
            return;
        }
        for c in &mut response.coordinators {
            if !self.can(Operation::Describe, resource, &c.key) {
                c.error_code = code;
                c.node_id = BrokerId(-1);
                c.host = Default::default();
                c.port = -1;
            }
        }
    }

    /// AddPartitionsToTxn: from producers (v0-3), WRITE on the
    /// transactional id and each topic (a refused topic fails with
    /// TOPIC_AUTHORIZATION_FAILED, the others OPERATION_NOT_ATTEMPTED);
    /// from brokers (v4+), CLUSTER_ACTION. The answer, if refused.
    pub fn add_partitions_to_txn(
        &self,
        version: i16,
        request: &AddPartitionsToTxnRequest,
    ) -> Option<AddPartitionsToTxnResponse> {
        if !self.enabled() {
            return None;
        }
        if version >= 4 {
            return (!self.on_cluster(Operation::ClusterAction)).then(|| {
                AddPartitionsToTxnResponse::default()
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            });
        }
        let txn_ok = self.txn(Operation::Write, &request.v3_and_below_transactional_id);
        let topic_ok = |name: &str| self.can(Operation::Write, ResourceType::Topic, name);
        if txn_ok
            && request
                .v3_and_below_topics
                .iter()
                .all(|t| topic_ok(&t.name))
        {
            return None;
        }
        let results = request
            .v3_and_below_topics
            .iter()
            .map(|t| {
                let code = if !txn_ok {
                    ResponseError::TransactionalIdAuthorizationFailed.code()
                } else if !topic_ok(&t.name) {
                    TOPIC_DENIED
                } else {
                    ResponseError::OperationNotAttempted.code()
                };
                add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
    }

    /// TxnOffsetCommit: WRITE on the transactional id, READ on the group
    /// and on each topic; the answer, if refused (then nothing is written).
    pub fn txn_offset_commit(
        &self,
        request: &TxnOffsetCommitRequest,
    ) -> Option<TxnOffsetCommitResponse> {
        if !self.enabled() {
            return None;
        }
        let txn_ok = self.txn(Operation::Write, &request.transactional_id);
        let group_ok = self.group(Operation::Read, &request.group_id);
        let topic_ok = |name: &str| self.can(Operation::Read, ResourceType::Topic, name);
        if txn_ok && group_ok && request.topics.iter().all(|t| topic_ok(&t.name)) {
            return None;
        }
        let topics = request
            .topics
            .iter()
            .map(|t| {
                let code = if !txn_ok {
                    ResponseError::TransactionalIdAuthorizationFailed.code()
                } else if !group_ok {
                    ResponseError::GroupAuthorizationFailed.code()
                } else if !topic_ok(&t.name) {
                    TOPIC_DENIED
                } else {
                    ResponseError::OperationNotAttempted.code()
                };
                txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(TxnOffsetCommitResponse::default().with_topics(topics))
    }
}

/// WriteTxnMarkers refused (no CLUSTER_ACTION): every partition fails.
pub fn refused_markers(request: &WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let markers = request
        .markers
        .iter()
        .map(|m| {
            write_txn_markers_response::WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(
                    m.topics
                        .iter()
                        .map(|t| {
                            write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|p| {
                                            write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                                .with_partition_index(*p)
                                                .with_error_code(
                                                    ResponseError::ClusterAuthorizationFailed.code(),
                                                )
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// AlterUserScramCredentials refused (no ALTER on the cluster).
pub fn refused_scram_changes(
    request: &AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut users: Vec<StrBytes> = Vec::new();
    for name in request
        .deletions
        .iter()
        .map(|d| &d.name)
        .chain(request.upsertions.iter().map(|u| &u.name))
    {
        if !users.contains(name) {
            users.push(name.clone());
        }
    }
    let results = users
        .into_iter()
        .map(|user| {
            alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                .with_user(user)
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
