//! The controller's Ed25519 signing key: a 32-byte seed in `DATA/keys/signing.key` (mode 0600), made on first
//! start. Its key id is `ctl-` + the first 8 hex digits of SHA-256(public key), so the id follows the key and
//! two controllers never share an id by accident. Receivers get the public key in their config file.

use std::path::{Path, PathBuf};

use loa_protocol::{KeyId, Signer};

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file or its directory could not be read or written: check the data directory's permissions.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file exists but is not 32 bytes (or 64 hex digits): restore it from backup, or remove it to make
    /// a new key (and re-provision every receiver with the new public key).
    #[error("{path} is not a signing key ({why}); restore it from a backup, or remove it to create a new key")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Where the seed lives.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing.key")
}

/// Loads the signing key from `DATA/keys/signing.key`, creating it (mode 0600) if missing.
pub fn load_or_create(data_dir: &Path) -> Result<Signer, KeyError> {
    let path = key_path(data_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let seed = match std::fs::read(&path) {
        Ok(bytes) => parse_seed(&bytes).map_err(|why| KeyError::Corrupt { path: path.clone(), why })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = data_dir.join("keys");
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let seed: [u8; 32] = rand::random();
            write_private(&path, &seed).map_err(io(&path))?;
            tracing::info!(path = %path.display(), "created a new signing key");
            seed
        }
        Err(e) => return Err(KeyError::Io { path, source: e }),
    };
    signer_from_seed(&seed).map_err(|e| KeyError::Corrupt { path, why: e.to_string() })
}

/// The signer for `seed`, with the key id derived from its public key.
pub fn signer_from_seed(seed: &[u8; 32]) -> Result<Signer, loa_protocol::ProtocolError> {
    let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes();
    Ok(Signer::from_seed(kid_for(&public)?, seed))
}

/// `ctl-` + the first 8 hex digits of SHA-256(public key).
pub fn kid_for(public_key: &[u8; 32]) -> Result<KeyId, loa_protocol::ProtocolError> {
    let digest = crate::store::sha256_hex(public_key);
    KeyId::new(format!("ctl-{}", &digest[..8]))
}

/// The public key as 64 hex digits, as a receiver's config file holds it.
pub fn public_key_hex(signer: &Signer) -> String {
    hex::encode(signer.public_key())
}

fn parse_seed(bytes: &[u8]) -> Result<[u8; 32], String> {
    if let Ok(seed) = <[u8; 32]>::try_from(bytes) {
        return Ok(seed);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{} bytes, expected 32", bytes.len()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| format!("{} bytes, expected 32", bytes.len()))?;
    Ok(seed)
}

fn write_private(path: &Path, seed: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    file.write_all(seed)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.kid(), b.kid());
        assert!(a.kid().as_str().starts_with("ctl-"));
        assert_eq!(a.kid().as_str().len(), 12);
        assert_eq!(public_key_hex(&a).len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn refuses_a_damaged_key_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::write(key_path(dir.path()), b"short").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(KeyError::Corrupt { .. })));
    }

    #[test]
    fn signatures_verify_with_the_published_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = load_or_create(dir.path()).unwrap();
        let mut keys = loa_protocol::TrustedKeys::new();
        keys.insert_hex(signer.kid().clone(), &public_key_hex(&signer)).unwrap();
    }
}
