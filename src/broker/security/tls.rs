//! TLS of the SSL listeners (rustls): the certificate chain and key, and
//! for mutual TLS the CAs client certificates must chain to, all PEM files
//! re-read when they change (checked every `tls.reload_interval_ms`), so a
//! renewed certificate is served without a restart; a file that does not
//! load leaves the previous configuration in place. New connections take
//! the configuration current when they arrive.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use super::principal::{PrincipalMapper, rfc2253};
use crate::config::TlsConfig;

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            other => Err(format!("'{other}' is not none, requested or required")),
        }
    }
}

/// The files' modification times and sizes, to notice a change.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// TLS of this broker, swapped whole when its files change: the server
/// side of its SSL listeners, and the client side of its connections to
/// other brokers' (trusting `tls.ca_file`, presenting its own certificate).
pub struct TlsServer {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    client: RwLock<Option<Arc<rustls::ClientConfig>>>,
    stamp: RwLock<Stamp>,
    pub mapper: PrincipalMapper,
}

impl TlsServer {
    /// Loads the files `settings` names (failing with what is wrong).
    pub fn load(settings: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let mapper = PrincipalMapper::parse(&settings.principal_mapping_rules)
            .map_err(|e| anyhow::anyhow!("tls.principal_mapping_rules: {e}"))?;
        let stamp = stamp(settings);
        let config = server_config(settings)?;
        let client = client_config(settings)?.map(Arc::new);
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            client: RwLock::new(client),
            stamp: RwLock::new(stamp),
            mapper,
        }))
    }

    /// The configuration for a connection arriving now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()));
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// A connector to another broker's SSL listener, or `None` without
    /// `tls.ca_file` to trust its certificate with.
    pub fn connector(&self) -> Option<tokio_rustls::TlsConnector> {
        let client = self.client.read().ok()?.clone()?;
        Some(tokio_rustls::TlsConnector::from(client))
    }

    /// Re-reads the files if they changed; true if the new ones are served.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.settings);
        let changed = self.stamp.read().map(|s| *s != now).unwrap_or(true);
        if !changed {
            return false;
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = now;
        }
        let loaded = server_config(&self.settings)
            .and_then(|server| Ok((server, client_config(&self.settings)?)));
        match loaded {
            Ok((config, client)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(config);
                }
                if let Ok(mut current) = self.client.write() {
                    *current = client.map(Arc::new);
                }
                tracing::info!("TLS certificate files changed: reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate files changed but do not load: serving the previous ones");
                false
            }
        }
    }

    /// Reloads changed files until `shutdown`.
    pub async fn run_reload(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.settings.reload_interval_ms.max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            self.reload_if_changed();
        }
    }

    /// The principal of a client that presented `chain` (its leaf first),
    /// or `ANONYMOUS` without one; `Err` when no mapping rule matches.
    pub fn principal(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<String, String> {
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return Ok(super::principal::ANONYMOUS.to_string());
        };
        let dn = subject_dn(leaf)?;
        self.mapper
            .map(&dn)
            .map(|name| format!("User:{name}"))
            .ok_or_else(|| format!("no ssl.principal.mapping.rules rule matches '{dn}'"))
    }
}

fn stamp(settings: &TlsConfig) -> Stamp {
    [&settings.cert_file, &settings.key_file, &settings.ca_file]
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path.as_ref()?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn required<'a>(path: &'a Option<PathBuf>, key: &str) -> anyhow::Result<&'a Path> {
    path.as_deref()
        .with_context(|| format!("an SSL listener needs {key} (PEM)"))
}

/// This broker's certificate chain and key.
fn identity(
    settings: &TlsConfig,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_path = required(&settings.cert_file, "tls.cert_file")?;
    let key_path = required(&settings.key_file, "tls.key_file")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read tls.cert_file {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "tls.cert_file {} is not PEM certificates",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        bail!("tls.cert_file {} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "tls.key_file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        )
    })?;
    Ok((chain, key))
}

/// The CA certificates of `path`.
fn roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read tls.ca_file {}", path.display()))?
    {
        let cert = cert
            .with_context(|| format!("tls.ca_file {} is not PEM certificates", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a CA in {} is not usable", path.display()))?;
    }
    if roots.is_empty() {
        bail!("tls.ca_file {} holds no certificate", path.display());
    }
    Ok(roots)
}

fn server_config(settings: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let (chain, key) = identity(settings)?;
    let auth = ClientAuth::parse(&settings.client_auth)
        .map_err(|e| anyhow::anyhow!("tls.client_auth: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let ca_path = required(&settings.ca_file, "tls.ca_file (client_auth is on)")?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_path)?), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    builder
        .with_single_cert(chain, key)
        .context("tls.key_file does not match tls.cert_file")
}

/// The client side: trusts `tls.ca_file`, presents this broker's own
/// certificate (for listeners that require one). `None` without a CA file.
fn client_config(settings: &TlsConfig) -> anyhow::Result<Option<rustls::ClientConfig>> {
    let Some(ca_path) = settings.ca_file.as_deref() else {
        return Ok(None);
    };
    let roots = roots(ca_path)?;
    let (chain, key) = identity(settings)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("tls.key_file does not match tls.cert_file")?;
    Ok(Some(config))
}

/// The RFC 2253 subject of a DER certificate.
fn subject_dn(cert: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let rdns: Vec<Vec<(String, String)>> = parsed
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let id = oid.to_id_string();
                    let name = short_name(&id).map_or(id.clone(), str::to_string);
                    let value = attribute
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|_| format!("#{}", hex(attribute.attr_value().data)));
                    (name, value)
                })
                .collect()
        })
        .collect();
    Ok(rfc2253(&rdns))
}

/// The keywords RFC 2253 (and Java's `X500Principal`) write attributes
/// with; others are written as their OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
