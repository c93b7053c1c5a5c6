//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! what `kafka-configs.sh --entity-type users` and the admin clients use to
//! manage SCRAM users. The client salts and hashes the password; the broker
//! stores only salt, iterations, StoredKey and ServerKey. Errors per user,
//! as Kafka gives them.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::security::scram::{MAX_ITERATIONS, MIN_ITERATIONS, Mechanism, ScramCredential};

pub async fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let asked: Option<Vec<String>> = request
        .users
        .filter(|users| !users.is_empty())
        .map(|users| users.iter().map(|u| u.name.to_string()).collect());
    let records = match broker.metadata.scram_credentials(asked.clone()).await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(%error, "cannot read SCRAM credentials");
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes("the metadata store did not answer; retry")));
        }
    };
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for r in records {
        by_user.entry(r.user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(r.mechanism)
                .with_iterations(r.iterations),
        );
    }
    let results = match asked {
        None => by_user
            .into_iter()
            .map(|(user, infos)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_credential_infos(infos)
            })
            .collect(),
        Some(users) => {
            let mut seen = BTreeSet::new();
            let duplicated: BTreeSet<String> = users
                .iter()
                .filter(|u| !seen.insert(u.as_str()))
                .cloned()
                .collect();
            let mut listed = BTreeSet::new();
            users
                .into_iter()
                .filter(|u| listed.insert(u.clone()))
                .map(|user| {
                    let result = DescribeUserScramCredentialsResult::default()
                        .with_user(str_bytes(user.clone()));
                    if duplicated.contains(&user) {
                        return result
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(str_bytes(format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                            ))));
                    }
                    match by_user.remove(&user) {
                        Some(infos) => result.with_credential_infos(infos),
                        None => result
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(Some(str_bytes(format!(
                                "Attempt to describe a user credential that does not exist: {user}"
                            )))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

type Errors = BTreeMap<String, (ResponseError, String)>;

/// Records `user`'s error unless it already has one.
fn fail(errors: &mut Errors, user: &str, code: ResponseError, message: String) {
    errors.entry(user.to_string()).or_insert((code, message));
}

pub async fn alter(
    broker: &Broker,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // The first error of each user, Kafka's checks in Kafka's order.
    let mut errors = Errors::new();
    let mut users: Vec<String> = Vec::new();
    let mut note = |user: &str| {
        if !users.iter().any(|u| u == user) {
            users.push(user.to_string());
        }
    };
    let mut pairs: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for d in &request.deletions {
        note(&d.name);
        *pairs.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
    }
    for u in &request.upsertions {
        note(&u.name);
        *pairs.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
    }
    for ((user, _), count) in &pairs {
        if *count > 1 {
            fail(
                &mut errors,
                user,
                ResponseError::DuplicateResource,
                format!("A user credential cannot be altered twice in the same request: {user}"),
            );
        }
    }
    for d in &request.deletions {
        let user = d.name.to_string();
        if user.is_empty() {
            fail(
                &mut errors,
                &user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
        } else if Mechanism::from_code(d.mechanism).is_none() {
            fail(
                &mut errors,
                &user,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", d.mechanism),
            );
        }
    }
    let mut upserts = Vec::new();
    for u in &request.upsertions {
        let user = u.name.to_string();
        let Some(mechanism) = Mechanism::from_code(u.mechanism) else {
            fail(
                &mut errors,
                &user,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", u.mechanism),
            );
            continue;
        };
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        if user.is_empty() {
            fail(
                &mut errors,
                &user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
        } else if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            fail(
                &mut errors,
                &user,
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {} must be between {MIN_ITERATIONS} and {MAX_ITERATIONS} for {}",
                    u.iterations,
                    mechanism.name()
                ),
            );
        } else if u.salt.is_empty() || u.salted_password.is_empty() {
            fail(
                &mut errors,
                &user,
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty".into(),
            );
        } else {
            upserts.push(ScramCredential::from_salted(
                &user,
                mechanism,
                u.salt.to_vec(),
                iterations,
                &u.salted_password,
            ));
        }
    }
    // Deletions of credentials that do not exist fail their user.
    for d in &request.deletions {
        let user = d.name.to_string();
        if errors.contains_key(&user) {
            continue;
        }
        let exists = broker
            .metadata
            .scram_credentials(Some(vec![user.clone()]))
            .await
            .map(|records| records.iter().any(|r| r.mechanism == d.mechanism));
        match exists {
            Ok(true) => {}
            Ok(false) => fail(
                &mut errors,
                &user,
                ResponseError::ResourceNotFound,
                format!("Attempt to delete a user credential that does not exist: {user}"),
            ),
            Err(error) => fail(
                &mut errors,
                &user,
                ResponseError::UnknownServerError,
                error.to_string(),
            ),
        }
    }
    for d in &request.deletions {
        let user = d.name.to_string();
        if errors.contains_key(&user) {
            continue;
        }
        if let Err(error) = broker
            .metadata
            .delete_scram_credential(&user, d.mechanism)
            .await
        {
            fail(
                &mut errors,
                &user,
                ResponseError::UnknownServerError,
                error.to_string(),
            );
        }
    }
    for credential in upserts {
        if errors.contains_key(&credential.user) {
            continue;
        }
        if let Err(error) = broker
            .metadata
            .put_scram_credential(credential.to_record())
            .await
        {
            fail(
                &mut errors,
                &credential.user,
                ResponseError::UnknownServerError,
                error.to_string(),
            );
        }
    }
    let results = users
        .into_iter()
        .map(|user| {
            let result =
                AlterUserScramCredentialsResult::default().with_user(str_bytes(user.clone()));
            match errors.get(&user) {
                Some((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message.clone()))),
                None => result,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
