//! ApiVersions: advertises exactly the APIs and versions in
//! `protocol::versions::SUPPORTED`, and (v3+) the feature
//! `transaction.version` at level 2: transactions per KIP-890 part 2
//! (partitions added by Produce v12+, the group by TxnOffsetCommit v5+, a
//! new producer epoch from every EndTxn v5+) for clients that use it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::versions::SUPPORTED;

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// The transaction protocol level Strata runs (`transaction.version`).
pub const TRANSACTION_VERSION: i16 = 2;

pub fn handle() -> ApiVersionsResponse {
    let name = StrBytes::from_static_str("transaction.version");
    ApiVersionsResponse::default()
        .with_api_keys(api_list())
        .with_supported_features(vec![
            SupportedFeatureKey::default()
                .with_name(name.clone())
                .with_min_version(0)
                .with_max_version(TRANSACTION_VERSION),
        ])
        .with_finalized_features_epoch(1)
        .with_finalized_features(vec![
            FinalizedFeatureKey::default()
                .with_name(name)
                .with_min_version_level(TRANSACTION_VERSION)
                .with_max_version_level(TRANSACTION_VERSION),
        ])
}

/// The answer to an ApiVersions version we do not know, encoded as v0.
pub fn unsupported_version() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list())
}
