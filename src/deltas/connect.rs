//! How the worker reaches Redis: `redis://` in the clear, `rediss://` over
//! TLS (the redis crate's rustls support, on ring like the rest of the tree).
//!
//! Guarantees:
//! - A `rediss://` server is verified (chain and host name) against the
//!   system roots plus the CA certificates of `PLANSYNC_REDIS_CA_FILE`; there
//!   is no switch to skip verification.
//! - Every error names the server by its URL with the password replaced.
//! - A server certificate no trusted CA signed is reported as such
//!   ([`is_untrusted_certificate`]), not as a generic outage, so the log says
//!   which setting to fix.

use std::path::{Path, PathBuf};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::config::{redacted_url, RedisSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `REDIS_URL` is not a URL the redis crate accepts: fix the setting.
    #[error("REDIS_URL {url} is invalid")]
    InvalidUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The CA file cannot be used: fix the setting or the file.
    #[error("PLANSYNC_REDIS_CA_FILE {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    /// Neither the system nor `PLANSYNC_REDIS_CA_FILE` provides a trusted
    /// root, so no TLS server could ever be verified.
    #[error(
        "no trusted CA for {url}: the system has no root certificates ({reason}); \
         set PLANSYNC_REDIS_CA_FILE"
    )]
    NoRoots { url: String, reason: String },
}

/// Whether Redis answers a `PING` within about a second (a fresh connection
/// each time, so a probe never shares the relay's). For `/readyz` and the
/// `plansync_redis_up` gauge.
pub async fn ping(client: &redis::Client) -> Result<(), redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(1))
        .set_response_timeout(std::time::Duration::from_secs(1));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

/// A client for `settings.url`; nothing is connected yet.
pub fn client(settings: &RedisSettings) -> Result<redis::Client, ConnectError> {
    let url = redacted_url(&settings.url);
    let invalid = |source| ConnectError::InvalidUrl {
        url: url.clone(),
        source,
    };
    if !settings.url.starts_with("rediss://") {
        return redis::Client::open(settings.url.as_str()).map_err(invalid);
    }
    let roots = trusted_roots(&url, settings.ca_file.as_deref())?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(roots),
    };
    redis::Client::build_with_tls(settings.url.as_str(), certificates).map_err(invalid)
}

/// The PEM bundle handed to the redis crate: the system roots plus the CA
/// file's certificates. The crate replaces the system roots with whatever
/// bundle it is given, so the system roots are part of the bundle.
fn trusted_roots(url: &str, ca_file: Option<&Path>) -> Result<Vec<u8>, ConnectError> {
    let mut pem = Vec::new();
    let mut trusted = 0;
    let system = rustls_native_certs::load_native_certs();
    for cert in system.certs {
        // The crate rejects the whole bundle if one anchor does not parse;
        // a malformed system certificate is skipped instead.
        if RootCertStore::empty().add(cert.clone()).is_ok() {
            append_pem(&mut pem, &cert);
            trusted += 1;
        }
    }
    if let Some(path) = ca_file {
        let ca_error = |reason: String| ConnectError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| ca_error(format!("cannot be read: {e}")))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| ca_error(format!("is not valid PEM: {e}")))?;
            RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| ca_error(format!("holds an unusable CA certificate: {e}")))?;
            append_pem(&mut pem, &cert);
            found += 1;
        }
        if found == 0 {
            return Err(ca_error("holds no PEM certificate".to_owned()));
        }
        trusted += found;
    }
    if trusted == 0 {
        let reason = system
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(ConnectError::NoRoots {
            url: url.to_owned(),
            reason,
        });
    }
    Ok(pem)
}

fn append_pem(out: &mut Vec<u8>, cert: &CertificateDer<'_>) {
    let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

/// Whether `err` is a TLS server certificate that failed verification (an
/// unknown CA, a wrong host name, an expired certificate).
pub fn is_untrusted_certificate(err: &redis::RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return matches!(
                        tls,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    );
                }
            }
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, ca_file: Option<PathBuf>) -> RedisSettings {
        RedisSettings {
            url: url.to_owned(),
            ca_file,
            ..RedisSettings::default()
        }
    }

    #[test]
    fn plain_urls_need_no_roots() {
        assert!(client(&settings("redis://127.0.0.1:6379", None)).is_ok());
    }

    #[test]
    fn a_bad_ca_file_is_named_and_the_password_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client(&settings(
            "rediss://:hunter2@127.0.0.1:6380",
            Some(missing.clone()),
        ))
        .unwrap_err();
        assert!(matches!(err, ConnectError::CaFile { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("PLANSYNC_REDIS_CA_FILE"), "{text}");
        assert!(text.contains("missing.pem"), "{text}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client(&settings("rediss://:hunter2@127.0.0.1:6380", Some(empty))).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn pem_round_trips() {
        let der = CertificateDer::from(vec![7u8; 100]);
        let mut pem = Vec::new();
        append_pem(&mut pem, &der);
        let back: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![der]);
    }
}
