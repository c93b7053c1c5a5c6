//! TLS to PostgreSQL with libpq's URL parameters: `sslmode` (`disable`,
//! `prefer` (the default, as libpq's), `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (the CA bundle a `verify-*` mode checks
//! the server against, for example AWS RDS's `global-bundle.pem`).
//! tokio-postgres knows only the first three modes, so these parameters are
//! taken off the URL and the TLS connector (rustls, through
//! tokio-postgres-rustls) does the checking: `prefer` and `require`
//! encrypt without checking the certificate (libpq without a root file),
//! `verify-ca` checks that it chains to `sslrootcert`, `verify-full` also
//! that it names the host.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::metadata::{MetadataError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub root_cert: Option<PathBuf>,
}

fn invalid(message: String) -> MetadataError {
    MetadataError::Backend(format!("invalid PostgreSQL URL: {message}"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes libpq's TLS parameters off `url`: the URL tokio-postgres parses,
/// and the settings.
pub fn split(url: &str) -> Result<(String, Settings)> {
    let mut settings = Settings {
        mode: Mode::Prefer,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), settings));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                settings.mode = match percent_decode(value).as_str() {
                    "disable" => Mode::Disable,
                    // libpq's allow: plaintext first; TLS only if refused.
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "sslmode={other}: expected disable, allow, prefer, require, verify-ca or verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(percent_decode(value))),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(invalid(format!(
                    "{key} is not supported (client certificates to PostgreSQL); use a password"
                )));
            }
            _ => kept.push(pair),
        }
    }
    if matches!(settings.mode, Mode::VerifyCa | Mode::VerifyFull) && settings.root_cert.is_none() {
        return Err(invalid(
            "sslmode=verify-ca and verify-full need sslrootcert=PATH, the CA bundle to check the server against"
                .into(),
        ));
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

impl Settings {
    /// tokio-postgres's mode for these settings.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The TLS connector checking what the mode asks.
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.mode, &self.root_cert) {
            (Mode::VerifyCa | Mode::VerifyFull, Some(path)) => {
                let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                    invalid(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    let cert =
                        cert.map_err(|e| invalid(format!("sslrootcert {}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid(format!("sslrootcert {}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(invalid(format!(
                        "sslrootcert {} holds no PEM certificate",
                        path.display()
                    )));
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| invalid(format!("sslrootcert: {e}")))?;
                Arc::new(Checked {
                    inner: webpki,
                    names: self.mode == Mode::VerifyFull,
                })
            }
            _ => Arc::new(Unchecked(Arc::clone(&provider))),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// verify-ca and verify-full: the chain must lead to a root; the host name
/// must match only for verify-full.
#[derive(Debug)]
struct Checked {
    inner: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer and require: encrypted, the certificate taken as it is (the
/// handshake's signatures are still checked).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_come_off_the_url() {
        let (url, settings) = split(
            "postgres://u:p@db:5432/x?options=-csearch_path%3Ds&sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem",
        )
        .expect("split");
        assert_eq!(url, "postgres://u:p@db:5432/x?options=-csearch_path%3Ds");
        assert_eq!(settings.mode, Mode::VerifyFull);
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/rds.pem")));
        let (url, settings) = split("postgres://u@db/x").expect("split");
        assert_eq!(
            (url.as_str(), settings.mode),
            ("postgres://u@db/x", Mode::Prefer)
        );
        let (url, settings) = split("postgres://u@db/x?sslmode=require").expect("split");
        assert_eq!(
            (url.as_str(), settings.mode),
            ("postgres://u@db/x", Mode::Require)
        );
        let err = |u: &str| split(u).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("postgres://db/x?sslmode=verify-full").contains("need sslrootcert"));
        assert!(err("postgres://db/x?sslmode=strict").contains("sslmode=strict"));
        assert!(err("postgres://db/x?sslcert=a.pem").contains("not supported"));
    }
}
