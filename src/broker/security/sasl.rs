//! SASL on SASL_PLAINTEXT and SASL_SSL listeners, as Kafka's brokers run
//! it (KIP-43, KIP-152): before a connection is authenticated it may send
//! only ApiVersions, SaslHandshake (v1: the mechanism) and SaslAuthenticate
//! (the mechanism's tokens), in frames of at most
//! `PRE_AUTH_MAX_FRAME_BYTES`; anything else closes it. A failed
//! authentication is answered with SASL_AUTHENTICATION_FAILED and the
//! connection closed.
//!
//! Mechanisms: SCRAM-SHA-256 and SCRAM-SHA-512 over the credentials in the
//! metadata store (kept as salt, iterations, StoredKey and ServerKey, as
//! Kafka keeps them), and PLAIN, whose password is checked against the
//! same stored SCRAM credentials (so one set of users serves both).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::scram::{self, Mechanism, ScramCredential};
use crate::broker::Broker;
use crate::protocol::frame::{RequestFrame, encode_response};

/// Kafka's `sasl.server.max.receive.size`: the largest frame a connection
/// may send before it is authenticated.
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 512 * 1024;

/// The mechanisms Strata serves, in the order SaslHandshake lists them.
pub const MECHANISMS: &[&str] = &["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

#[derive(Debug)]
enum State {
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done; waiting for the first SaslAuthenticate.
    Chosen(Chosen),
    /// SCRAM: the server-first message was sent.
    Scram {
        credential: ScramCredential,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Chosen {
    Plain,
    Scram(Mechanism),
}

/// What to do after a request of the exchange.
pub enum Step {
    /// Send this response and go on.
    Answer(Bytes),
    /// Send this response: the connection is authenticated as `principal`.
    Authenticated(Bytes, String),
    /// Send this response, then close the connection (`reason` is logged).
    Failed(Bytes, String),
    /// Close the connection without an answer.
    Close(String),
}

/// The server side of one connection's SASL exchange.
#[derive(Debug)]
pub struct Authenticator {
    state: State,
    enabled: Arc<[String]>,
}

impl Authenticator {
    pub fn new(enabled: Arc<[String]>) -> Self {
        Self {
            state: State::Handshake,
            enabled,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Handles SaslHandshake or SaslAuthenticate before authentication.
    pub async fn handle(&mut self, broker: &Broker, mut frame: RequestFrame) -> Step {
        let correlation = frame.header.correlation_id;
        let version = frame.api_version;
        match frame.api_key {
            ApiKey::SaslHandshake => {
                let Ok(request) = SaslHandshakeRequest::decode(&mut frame.body, version) else {
                    return Step::Close("malformed SaslHandshake".into());
                };
                let mechanisms: Vec<StrBytes> = self
                    .enabled
                    .iter()
                    .map(|m| StrBytes::from_string(m.clone()))
                    .collect();
                let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
                let asked = request.mechanism.to_string();
                let chosen = match asked.as_str() {
                    _ if !matches!(self.state, State::Handshake) => None,
                    _ if !self.enabled.contains(&asked) => None,
                    "PLAIN" => Some(Chosen::Plain),
                    other => Mechanism::from_name(other).map(Chosen::Scram),
                };
                let Some(chosen) = chosen else {
                    let code = if matches!(self.state, State::Handshake) {
                        ResponseError::UnsupportedSaslMechanism
                    } else {
                        ResponseError::IllegalSaslState
                    };
                    return match encode(
                        ApiKey::SaslHandshake,
                        version,
                        correlation,
                        &response.with_error_code(code.code()),
                    ) {
                        Some(bytes) => {
                            Step::Failed(bytes, format!("SASL mechanism {asked} refused"))
                        }
                        None => Step::Close("cannot encode".into()),
                    };
                };
                self.state = State::Chosen(chosen);
                match encode(ApiKey::SaslHandshake, version, correlation, &response) {
                    Some(bytes) => Step::Answer(bytes),
                    None => Step::Close("cannot encode".into()),
                }
            }
            ApiKey::SaslAuthenticate => {
                let Ok(request) = SaslAuthenticateRequest::decode(&mut frame.body, version) else {
                    return Step::Close("malformed SaslAuthenticate".into());
                };
                let outcome = self.authenticate(broker, &request.auth_bytes).await;
                let response = SaslAuthenticateResponse::default();
                let (response, principal, failure) = match outcome {
                    Ok((bytes, principal)) => (response.with_auth_bytes(bytes), principal, None),
                    Err((code, message)) => (
                        response
                            .with_error_code(code.code())
                            .with_error_message(Some(StrBytes::from_string(message.clone()))),
                        None,
                        Some(message),
                    ),
                };
                let Some(bytes) = encode(ApiKey::SaslAuthenticate, version, correlation, &response)
                else {
                    return Step::Close("cannot encode".into());
                };
                match (principal, failure) {
                    (_, Some(reason)) => Step::Failed(bytes, reason),
                    (Some(principal), None) => Step::Authenticated(bytes, principal),
                    (None, None) => Step::Answer(bytes),
                }
            }
            other => Step::Close(format!("{other:?} before authentication")),
        }
    }

    /// One SaslAuthenticate token: the answer's token and, once done, the
    /// principal; or the error to answer with.
    async fn authenticate(
        &mut self,
        broker: &Broker,
        token: &[u8],
    ) -> Result<(Bytes, Option<String>), (ResponseError, String)> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let failed = |mechanism: &str| {
            (
                ResponseError::SaslAuthenticationFailed,
                format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                ),
            )
        };
        match state {
            State::Chosen(Chosen::Plain) => {
                let (user, password) =
                    parse_plain(token).map_err(|e| (ResponseError::SaslAuthenticationFailed, e))?;
                let credentials = stored(broker, &user).await?;
                let valid = credentials.iter().any(|c| {
                    let salted =
                        c.mechanism
                            .salted_password(password.as_bytes(), &c.salt, c.iterations);
                    ScramCredential::from_salted(
                        &user,
                        c.mechanism,
                        c.salt.clone(),
                        c.iterations,
                        &salted,
                    )
                    .stored_key
                        == c.stored_key
                });
                if !valid {
                    return Err(failed("PLAIN"));
                }
                Ok((Bytes::new(), Some(format!("User:{user}"))))
            }
            State::Chosen(Chosen::Scram(mechanism)) => {
                let first = scram::parse_client_first(token).map_err(|e| {
                    (
                        ResponseError::SaslAuthenticationFailed,
                        format!("invalid SCRAM client-first message: {e}"),
                    )
                })?;
                let credential = stored(broker, &first.user)
                    .await?
                    .into_iter()
                    .find(|c| c.mechanism == mechanism)
                    .ok_or_else(|| failed(mechanism.name()))?;
                let (server_first, nonce) = scram::server_first(&first, &credential);
                let answer = Bytes::from(server_first.clone().into_bytes());
                self.state = State::Scram {
                    credential,
                    client_first_bare: first.client_first_bare,
                    server_first,
                    nonce,
                };
                Ok((answer, None))
            }
            State::Scram {
                credential,
                client_first_bare,
                server_first,
                nonce,
            } => {
                let server_final = scram::verify_client_final(
                    token,
                    &credential,
                    &client_first_bare,
                    &server_first,
                    &nonce,
                )
                .map_err(|_| failed(credential.mechanism.name()))?;
                Ok((
                    Bytes::from(server_final.into_bytes()),
                    Some(format!("User:{}", credential.user)),
                ))
            }
            State::Handshake | State::Done => Err((
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake".into(),
            )),
        }
    }
}

/// A user's stored SCRAM credentials (a store failure is a failed
/// authentication the client may retry).
async fn stored(
    broker: &Broker,
    user: &str,
) -> Result<Vec<ScramCredential>, (ResponseError, String)> {
    let records = broker
        .metadata
        .scram_credentials(Some(vec![user.to_string()]))
        .await
        .map_err(|error| {
            tracing::warn!(%error, "cannot read SCRAM credentials");
            (
                ResponseError::SaslAuthenticationFailed,
                "credentials cannot be checked now; retry".to_string(),
            )
        })?;
    Ok(records
        .into_iter()
        .filter_map(ScramCredential::from_record)
        .collect())
}

/// PLAIN's token: `authzid NUL user NUL password` (an authzid, if any,
/// must be the user).
fn parse_plain(token: &[u8]) -> Result<(String, String), String> {
    let text =
        std::str::from_utf8(token).map_err(|_| "the PLAIN token is not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the PLAIN token is not authzid NUL user NUL password".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("PLAIN needs a user name and a password".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("authorization id differs from the user name".into());
    }
    Ok((user.to_string(), password.to_string()))
}

fn encode<M: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation: i32,
    body: &M,
) -> Option<Bytes> {
    encode_response(api, version, correlation, body)
        .map_err(|e| tracing::error!(error = %e, "cannot encode a SASL response"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_parsed_strictly() {
        assert_eq!(
            parse_plain(b"\0alice\0secret").expect("ok"),
            ("alice".to_string(), "secret".to_string())
        );
        assert!(parse_plain(b"alice\0alice\0secret").is_ok());
        assert!(parse_plain(b"bob\0alice\0secret").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0\0secret").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }
}
