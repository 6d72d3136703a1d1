//! TLS for the HTTPS listener: rustls with the ring provider chosen explicitly, TLS 1.2 and
//! 1.3 only, AEAD cipher suites only (the ring provider offers no others), on the configured
//! certificate or on a self-signed one made at first start and reused after. A reload (SIGHUP)
//! swaps the certificate for new connections without closing the ones already open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use jiff::{SignedDuration, Timestamp, ToSpan};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::store::files;

/// Self-signed certificates are made for this long, and remade at start when less than
/// `RENEW_BEFORE_DAYS` remain.
const SELF_SIGNED_DAYS: i32 = 397;
pub const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {problem}")]
    Read {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("cannot write the self-signed certificate into {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the TLS certificate and key do not make a valid server configuration: {0}")]
    Config(String),
}

/// Paths of the certificate in use and whether it is the generated one.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub self_signed: bool,
}

/// The certificate files the configuration points at (without creating anything).
#[must_use]
pub fn certificate_files(config: &Config) -> CertificateFiles {
    match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => CertificateFiles {
            cert: cert.clone(),
            key: key.clone(),
            self_signed: false,
        },
        _ => CertificateFiles {
            cert: config.tls_dir().join("cert.pem"),
            key: config.tls_dir().join("key.pem"),
            self_signed: true,
        },
    }
}

/// Makes the self-signed certificate when it is missing or about to expire.
pub fn ensure_self_signed(
    config: &Config,
    now: Timestamp,
) -> Result<Option<CertificateFiles>, TlsError> {
    let files = certificate_files(config);
    if !files.self_signed {
        return Ok(None);
    }
    let fresh = files.cert.exists()
        && files.key.exists()
        && expiry(&files.cert).is_ok_and(|not_after| {
            now.checked_add(SignedDuration::from_hours(RENEW_BEFORE_DAYS * 24))
                .is_ok_and(|renew_at| not_after > renew_at)
        });
    if fresh {
        return Ok(None);
    }
    let dir = config.tls_dir();
    files::create_private_dir(&dir, 0o700).map_err(|source| TlsError::Write {
        path: dir.clone(),
        source,
    })?;

    let mut params = rcgen::CertificateParams::new(config.server.certificate_names.clone())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let start = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let end = start.saturating_add(SELF_SIGNED_DAYS.days());
    let (year, month, day) = ymd(start);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    let (year, month, day) = ymd(end);
    params.not_after = rcgen::date_time_ymd(year, month, day);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Clientele appliance (self-signed)",
    );
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;

    files::write_atomic(&files.key, key.serialize_pem().as_bytes(), 0o600).map_err(|source| {
        TlsError::Write {
            path: files.key.clone(),
            source,
        }
    })?;
    files::write_atomic(&files.cert, cert.pem().as_bytes(), 0o644).map_err(|source| {
        TlsError::Write {
            path: files.cert.clone(),
            source,
        }
    })?;
    Ok(Some(files))
}

/// Builds the rustls server configuration on a certificate that is read once.
pub fn server_config(files: &CertificateFiles) -> Result<rustls::ServerConfig, TlsError> {
    Ok(reloadable_server_config(files)?.0)
}

/// Builds the rustls server configuration on a certificate that [`ReloadableCertificate::reload`]
/// can replace while the server runs.
pub fn reloadable_server_config(
    files: &CertificateFiles,
) -> Result<(rustls::ServerConfig, Arc<ReloadableCertificate>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = Arc::new(ReloadableCertificate {
        current: RwLock::new(load_certified_key(files, &provider)?),
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, certificate))
}

/// The certificate and key the listener presents, swapped whole by a reload (SIGHUP). A
/// handshake takes the pair current when it starts; connections already open keep theirs, so
/// a reload drops none of them.
#[derive(Debug)]
pub struct ReloadableCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ReloadableCertificate {
    /// Reads `files` and, only when the chain and key are valid and match, presents them to
    /// new connections. On error the certificate in use stays.
    pub fn reload(&self, files: &CertificateFiles) -> Result<(), TlsError> {
        let fresh = load_certified_key(files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The DER of the end-entity certificate in use.
    #[must_use]
    pub fn end_entity(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.cert.first().cloned()
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current))
    }
}

/// Reads a PEM chain and key and checks that the key belongs to the first certificate.
fn load_certified_key(
    files: &CertificateFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read_error("certificate", &files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error("certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(TlsError::Read {
            what: "certificate",
            path: files.cert.clone(),
            problem: "no PEM certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| read_error("private key", &files.key, &e))?;
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        TlsError::Config(format!(
            "{e} (certificate {}, key {})",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// Year, month and day as rcgen takes them.
fn ymd(date: jiff::civil::Date) -> (i32, u8, u8) {
    let small = |n: i8| u8::try_from(n).unwrap_or(1);
    (
        i32::from(date.year()),
        small(date.month()),
        small(date.day()),
    )
}

fn read_error(what: &'static str, path: &Path, err: &dyn std::fmt::Display) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_owned(),
        problem: err.to_string(),
    }
}

/// The `notAfter` time of the first certificate in a PEM file.
pub fn expiry(cert: &Path) -> Result<Timestamp, TlsError> {
    let der =
        CertificateDer::from_pem_file(cert).map_err(|e| read_error("certificate", cert, &e))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| read_error("certificate", cert, &e))?;
    Timestamp::from_second(parsed.validity().not_after.timestamp())
        .map_err(|e| read_error("certificate", cert, &e))
}
