//! The APIs and version ranges Strata answers. ApiVersions advertises exactly
//! this table; the dispatcher refuses anything outside it.

use kafka_protocol::messages::ApiKey;

/// `(api, min_version, max_version)` for every implemented API.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeProducers, 0, 0),
    // Transactions, KIP-890 part 2 included (Produce v12+, TxnOffsetCommit
    // v5+ and EndTxn v5+ carry its semantics; see api_versions).
    (ApiKey::AddPartitionsToTxn, 0, 5),
    // From another broker's transaction coordinator.
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    // SASL (KIP-152: v1 handshakes only, as Kafka 4 serves them).
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The supported version range of `api`, if Strata implements it at all.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|(_, min, max)| (*min, *max))
}

pub fn is_supported(api: ApiKey, version: i16) -> bool {
    supported_range(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_stays_within_what_the_codec_knows() {
        for (api, min, max) in SUPPORTED {
            let known = api.valid_versions();
            assert!(
                *min >= known.min && *max <= known.max,
                "{api:?} {min}..={max}"
            );
        }
        assert!(is_supported(ApiKey::ApiVersions, 4));
        assert!(!is_supported(ApiKey::ApiVersions, 5));
        assert!(is_supported(ApiKey::JoinGroup, 0));
        assert!(is_supported(ApiKey::InitProducerId, 0));
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 0));
        assert!(is_supported(ApiKey::DescribeAcls, 1));
        assert!(!is_supported(ApiKey::DescribeAcls, 0));
        assert!(!is_supported(ApiKey::DescribeLogDirs, 0));
    }
}
