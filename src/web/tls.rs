//! TLS for the HTTPS listener: rustls with the ring provider chosen explicitly, TLS 1.2 and
//! 1.3 only, AEAD cipher suites only (the ring provider offers no others), on the configured
//! certificate or on a self-signed one made at first start and reused after.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp, ToSpan};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// Builds the rustls server configuration.
pub fn server_config(files: &CertificateFiles) -> Result<rustls::ServerConfig, TlsError> {
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

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
