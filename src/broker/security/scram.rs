//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's brokers
//! run them: the server side of the exchange over stored credentials
//! (salt, iterations, StoredKey, ServerKey; never the password), and the
//! derivation of those credentials from a password or a salted password
//! (what AlterUserScramCredentials sends). Crypto is aws-lc-rs's.

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Kafka's lower bound on iterations.
pub const MIN_ITERATIONS: u32 = 4096;
/// Kafka's upper bound on iterations.
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The code AlterUserScramCredentials and DescribeUserScramCredentials use.
    pub fn code(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// Hi(password, salt, i): PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let iterations =
            std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password,
            &mut out,
        );
        out
    }
}

/// What the store keeps of a SCRAM password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub user: String,
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// From a salted password (as AlterUserScramCredentials carries it).
    pub fn from_salted(
        user: &str,
        mechanism: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            user: user.to_string(),
            mechanism,
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// From a password, with a fresh random salt.
    pub fn from_password(
        user: &str,
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Self {
        let salt: [u8; 24] = rand::random();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Self::from_salted(user, mechanism, salt.to_vec(), iterations, &salted)
    }
}

impl ScramCredential {
    /// A stored record, if its mechanism and iterations are valid.
    pub fn from_record(r: crate::metadata::ScramRecord) -> Option<Self> {
        Some(ScramCredential {
            mechanism: Mechanism::from_code(r.mechanism)?,
            iterations: u32::try_from(r.iterations).ok()?,
            user: r.user,
            salt: r.salt,
            stored_key: r.stored_key,
            server_key: r.server_key,
        })
    }

    pub fn to_record(&self) -> crate::metadata::ScramRecord {
        crate::metadata::ScramRecord {
            user: self.user.clone(),
            mechanism: self.mechanism.code(),
            salt: self.salt.clone(),
            iterations: i32::try_from(self.iterations).unwrap_or(i32::MAX),
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

/// Iterations of credentials Strata derives itself (the bootstrap user,
/// `strata user add`).
pub const DEFAULT_ITERATIONS: u32 = 8192;

/// Creates `user`'s SCRAM-SHA-256 and SCRAM-SHA-512 credentials from
/// `password`, for each mechanism it has none of (a later password change
/// through the admin API is kept).
pub async fn bootstrap_user(
    metadata: &dyn crate::metadata::MetadataStore,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    let existing = metadata
        .scram_credentials(Some(vec![user.to_string()]))
        .await?;
    for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
        if existing.iter().any(|r| r.mechanism == mechanism.code()) {
            continue;
        }
        let credential =
            ScramCredential::from_password(user, mechanism, password, DEFAULT_ITERATIONS);
        metadata
            .put_scram_credential(credential.to_record())
            .await?;
        tracing::info!(%user, mechanism = mechanism.name(), "created the bootstrap user's SCRAM credential");
    }
    Ok(())
}

/// The user a client-first message names, with `client_first_bare`.
pub struct ClientFirst {
    pub user: String,
    pub client_nonce: String,
    pub client_first_bare: String,
}

/// Parses a client-first message (`n,,n=user,r=nonce`).
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, String> {
    let text = std::str::from_utf8(message).map_err(|_| "not UTF-8".to_string())?;
    // gs2 header: channel binding flag, optional authzid.
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let _authzid = parts.next().ok_or("no gs2 header")?;
    let bare = parts.next().ok_or("no client-first-message-bare")?;
    if flag != "n" && flag != "y" {
        return Err("channel binding is not supported".into());
    }
    let mut user = None;
    let mut nonce = None;
    for attribute in bare.split(',') {
        if let Some(v) = attribute.strip_prefix("n=") {
            user = Some(unescape_name(v)?);
        } else if let Some(v) = attribute.strip_prefix("r=") {
            nonce = Some(v.to_string());
        } else if attribute.starts_with("m=") {
            return Err("mandatory extensions are not supported".into());
        }
        // Other attributes are extensions (Kafka's tokenauth=...): ignored.
    }
    let user = user.ok_or("no user name (n=)")?;
    let client_nonce = nonce.ok_or("no nonce (r=)")?;
    if client_nonce.is_empty() {
        return Err("empty nonce".into());
    }
    Ok(ClientFirst {
        user,
        client_nonce,
        client_first_bare: bare.to_string(),
    })
}

fn unescape_name(name: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3).unwrap_or_default();
        match code {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return Err(format!("invalid escape in user name '{name}'")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The server-first message for `credential`, and the combined nonce.
pub fn server_first(client: &ClientFirst, credential: &ScramCredential) -> (String, String) {
    let server_nonce: [u8; 18] = rand::random();
    let nonce = format!("{}{}", client.client_nonce, B64.encode(server_nonce));
    let message = format!(
        "r={nonce},s={},i={}",
        B64.encode(&credential.salt),
        credential.iterations
    );
    (message, nonce)
}

/// Checks a client-final message; the server-final message to send back.
pub fn verify_client_final(
    message: &[u8],
    credential: &ScramCredential,
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
) -> Result<String, String> {
    let text = std::str::from_utf8(message).map_err(|_| "not UTF-8".to_string())?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or("no proof (p=) in the client-final message")?;
    let mut got_nonce = None;
    for attribute in without_proof.split(',') {
        if let Some(v) = attribute.strip_prefix("r=") {
            got_nonce = Some(v);
        }
    }
    if got_nonce != Some(nonce) {
        return Err("the nonce does not match".into());
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| "the proof is not base64".to_string())?;
    let mechanism = credential.mechanism;
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err("the proof has the wrong length".into());
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
        return Err("invalid credentials".into());
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (SCRAM-SHA-256, user "user", password
    /// "pencil"), with its server nonce.
    #[test]
    fn the_rfc_7677_exchange_verifies() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let credential =
            ScramCredential::from_salted("user", Mechanism::Sha256, salt, 4096, &salted);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
        assert_eq!(first.user, "user");
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let server_final = verify_client_final(
            client_final.as_bytes(),
            &credential,
            &first.client_first_bare,
            &server_first,
            nonce,
        )
        .expect("verified");
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // A wrong password's proof is refused.
        let wrong = Mechanism::Sha256.salted_password(b"pencil!", &credential.salt, 4096);
        let other = ScramCredential::from_salted(
            "user",
            Mechanism::Sha256,
            credential.salt.clone(),
            4096,
            &wrong,
        );
        assert!(
            verify_client_final(
                client_final.as_bytes(),
                &other,
                &first.client_first_bare,
                &server_first,
                nonce
            )
            .is_err()
        );
    }

    #[test]
    fn client_first_messages_are_checked() {
        let first = parse_client_first(b"n,,n=a=2Cb=3Dc,r=xyz,tokenauth=true").expect("ok");
        assert_eq!(first.user, "a,b=c");
        assert!(parse_client_first(b"p=tls-unique,,n=a,r=x").is_err());
        assert!(parse_client_first(b"n,,n=a").is_err());
        assert!(parse_client_first(b"n,,n=a=2,r=x").is_err());
        assert!(parse_client_first(b"n,,m=x,n=a,r=x").is_err());
    }
}
