//! The security sections of the configuration: TLS of the SSL listeners,
//! SASL, and ACLs (Kafka's `ssl.*`, `sasl.*`, `super.users`, ...).

use std::path::PathBuf;

use serde::Deserialize;

/// TLS of the SSL (and SASL_SSL) listeners: PEM files, reloaded when they
/// change (Kafka's `ssl.*` broker settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM).
    pub ca_file: Option<PathBuf>,
    /// `ssl.client.auth`: `none`, `requested` or `required`.
    pub client_auth: String,
    /// `ssl.principal.mapping.rules`: how a client certificate's subject
    /// becomes the principal's name.
    pub principal_mapping_rules: String,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            ca_file: None,
            client_auth: "none".into(),
            principal_mapping_rules: "DEFAULT".into(),
            reload_interval_ms: 5_000,
        }
    }
}

/// SASL of the SASL_PLAINTEXT and SASL_SSL listeners.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// `sasl.enabled.mechanisms`: of SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN.
    pub enabled_mechanisms: String,
    /// A user whose SCRAM credentials are created at start when it has
    /// none (the first administrator), with `bootstrap_password`.
    pub bootstrap_user: Option<String>,
    pub bootstrap_password: Option<String>,
}

impl Default for SaslConfig {
    fn default() -> Self {
        Self {
            enabled_mechanisms: "SCRAM-SHA-256,SCRAM-SHA-512".into(),
            bootstrap_user: None,
            bootstrap_password: None,
        }
    }
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("enabled_mechanisms", &self.enabled_mechanisms)
            .field("bootstrap_user", &self.bootstrap_user)
            .field(
                "bootstrap_password",
                &super::secret::Hidden(&self.bootstrap_password),
            )
            .finish()
    }
}

impl SaslConfig {
    /// The enabled mechanisms, upper-cased.
    pub fn mechanisms(&self) -> Vec<String> {
        self.enabled_mechanisms
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect()
    }
}

/// Authorization by ACLs (Kafka's `authorizer.class.name`, `super.users`,
/// `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Enforce ACLs (off: every request is allowed, as Kafka without an
    /// authorizer).
    pub enabled: bool,
    /// `super.users`: principals allowed everything, `;`-separated
    /// (`User:admin;User:CN=broker`).
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL names is open.
    pub allow_everyone_if_no_acl_found: bool,
    /// How often each broker re-reads the ACLs from the metadata store.
    pub refresh_interval_ms: u64,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            refresh_interval_ms: 2_000,
        }
    }
}
