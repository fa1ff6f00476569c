//! TLS for MQTT (rustls with the ring provider): the embedded broker's public listener accepts TLS when
//! `mqtt_tls_cert_file` and `mqtt_tls_key_file` (PEM) are set ([`server_acceptor`]), and the controller's own client
//! to an external `mqtts://` broker verifies the broker's certificate and host name against `broker_ca_file` or
//! the system's trust roots ([`client_config`]). The provider is always named explicitly, so nothing depends on a
//! process-wide default provider being installed.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// What is wrong with the TLS files; each message names the file and what it should hold.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate: fix `mqtt_tls_cert_file`.
    #[error("TLS certificate file {path}: {why} (expected PEM with the server certificate, then its chain)")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The key file is missing, unreadable or holds no PEM private key: fix `mqtt_tls_key_file`.
    #[error("TLS private key file {path}: {why} (expected one PEM private key: PKCS#8, RSA or EC)")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The CA file is missing, unreadable or holds no usable certificate: fix `broker_ca_file`.
    #[error("CA file {path}: {why} (expected PEM certificates of the authorities that sign the broker's certificate)")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// No CA file was given and the system has no trust roots: set `broker_ca_file`.
    #[error("no system CA certificates found ({0}); set broker_ca_file")]
    NoSystemRoots(String),
    /// rustls refused the combination (e.g. the key does not belong to the certificate).
    #[error("TLS setup: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every PEM certificate in `path`.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in it".into());
    }
    Ok(certs)
}

/// The acceptor for the embedded broker's public listener, from a PEM certificate chain and a PEM private key.
pub fn server_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(cert_file).map_err(|why| TlsError::Cert { path: cert_file.display().to_string(), why })?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError::Key { path: key_file.display().to_string(), why: e.to_string() })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client configuration that verifies the server's certificate (and, by rustls, its host name) against the
/// certificates in `ca_file`, or the system's trust roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_certs(path).map_err(|why| TlsError::Ca { path: path.display().to_string(), why })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                let why = "none of its certificates can be used as a trust root".to_string();
                return Err(TlsError::Ca { path: path.display().to_string(), why });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| e.to_string()).unwrap_or_else(|| "none installed".into());
                return Err(TlsError::NoSystemRoots(why));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = server_acceptor(&missing, &junk).err().unwrap().to_string();
        assert!(err.contains("missing.pem") && err.contains("certificate"), "{err}");
        let err = server_acceptor(&junk, &junk).err().unwrap().to_string();
        assert!(err.contains("junk.pem") && err.contains("no CERTIFICATE"), "{err}");
        let err = client_config(Some(&junk)).unwrap_err().to_string();
        assert!(err.contains("CA file") && err.contains("junk.pem"), "{err}");
    }
}
