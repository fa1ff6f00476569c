//! The controller's Ed25519 signing key: a 32-byte seed in `DATA/keys/signing.key` (mode 0600), made on first
//! start. Its key id is `ctl-` + the first 8 hex digits of SHA-256(public key), so the id follows the key and
//! two controllers never share an id by accident. Receivers get the public key in their config file.
//!
//! Rotation ([`rotate`], `loa-controller rotate-key`): a new seed becomes `signing.key`; the old one is kept as
//! `DATA/keys/previous/{kid}.key`, and a [`KeyAnnouncement`] of the new key signed with the old one (valid a
//! year) is kept as `DATA/keys/announcements/{new kid}.json`. [`publish_announcements`] puts every kept
//! announcement, retained, on each receiver's `key/{kid}` topic when the controller starts, so receivers
//! provisioned with an old key learn the new one (a chain of rotations is followed) without a visit.

use std::path::{Path, PathBuf};

use loa_protocol::{KeyAnnouncement, KeyId, Signer, Timestamp, Topics};

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
    /// There is no signing key to rotate yet: start the controller once (it makes one) first.
    #[error("{path} does not exist: start the controller once to create a signing key, then rotate it")]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// The announcement could not be signed (a bug: the new key is always valid).
    #[error("cannot sign the key announcement: {0}")]
    Sign(#[from] loa_protocol::ProtocolError),
}

/// How long a key announcement stays valid: receivers offline for longer need a visit.
pub const ANNOUNCEMENT_VALID_MS: i64 = 365 * 24 * 3_600_000;

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

/// Where previous seeds are kept, one `{kid}.key` each.
pub fn previous_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("previous")
}

/// Where key announcements are kept, one `{kid}.json` (the signed envelope) each.
pub fn announcements_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("announcements")
}

/// What [`rotate`] did.
#[derive(Debug)]
pub struct Rotation {
    /// The key signing until now (kept in [`previous_dir`]).
    pub old: Signer,
    /// The new key, now in `signing.key`.
    pub new: Signer,
    /// The signed announcement of the new key, as published.
    pub announcement: Vec<u8>,
}

/// Moves to a new signing key: makes it, announces it under the current key (valid from `now` for
/// [`ANNOUNCEMENT_VALID_MS`]), keeps the current seed in [`previous_dir`] and the announcement in
/// [`announcements_dir`], then makes the new seed current (atomically). The running controller keeps signing
/// with the old key until it restarts.
pub fn rotate(data_dir: &Path, now: Timestamp) -> Result<Rotation, KeyError> {
    let path = key_path(data_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let old_seed = match std::fs::read(&path) {
        Ok(bytes) => parse_seed(&bytes).map_err(|why| KeyError::Corrupt { path: path.clone(), why })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing { path }),
        Err(e) => return Err(KeyError::Io { path, source: e }),
    };
    let old = signer_from_seed(&old_seed)?;
    let new_seed: [u8; 32] = rand::random();
    let new = signer_from_seed(&new_seed)?;
    let announcement = KeyAnnouncement { kid: new.kid().clone(), public_key: public_key_hex(&new), valid_from: now };
    let signed = old.sign(&announcement, now, now.saturating_add_ms(ANNOUNCEMENT_VALID_MS))?.to_json()?;

    let previous = previous_dir(data_dir);
    std::fs::create_dir_all(&previous).map_err(io(&previous))?;
    let kept = previous.join(format!("{}.key", old.kid()));
    match write_private(&kept, &old_seed) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => other.map_err(io(&kept))?,
    }
    let dir = announcements_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let file = dir.join(format!("{}.json", new.kid()));
    replace(&file, &signed, false).map_err(io(&file))?;
    replace(&path, &new_seed, true).map_err(io(&path))?;
    tracing::info!(old = %old.kid(), new = %new.kid(), "signing key rotated");
    Ok(Rotation { old, new, announcement: signed })
}

/// The kept announcements, oldest key first (by file time), as (announced kid, signed envelope).
pub fn announcements(data_dir: &Path) -> Result<Vec<(KeyId, Vec<u8>)>, KeyError> {
    let dir = announcements_dir(data_dir);
    let io = |source| KeyError::Io { path: dir.clone(), source };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        let Some(kid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let Ok(kid) = KeyId::new(kid) else { continue };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let bytes = std::fs::read(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?;
        out.push((modified, kid, bytes));
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(out.into_iter().map(|(_, kid, bytes)| (kid, bytes)).collect())
}

/// Publishes every kept announcement, retained, on every registered receiver's `key/{kid}` topic; returns how
/// many messages were queued. Call once the MQTT link is made (at start); a failure is logged, not fatal.
pub async fn publish_announcements(
    data_dir: &Path,
    store: &crate::store::Store,
    topics: &Topics,
    client: &rumqttc::AsyncClient,
) -> usize {
    let list = match announcements(data_dir) {
        Ok(list) if list.is_empty() => return 0,
        Ok(list) => list,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the key announcements; receivers will not learn new keys");
            return 0;
        }
    };
    let receivers = match store.list_receivers() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot list receivers to announce keys to");
            return 0;
        }
    };
    let mut sent = 0;
    for rx in receivers {
        let Ok(id) = loa_protocol::ReceiverId::new(rx.id.as_str()) else { continue };
        for (kid, bytes) in &list {
            let topic = topics.key(&id, kid);
            match client.publish(topic, rumqttc::QoS::AtLeastOnce, true, bytes.clone()).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::error!(error = %e, "cannot queue a key announcement");
                    return sent;
                }
            }
        }
    }
    tracing::info!(messages = sent, keys = list.len(), "key announcements published");
    sent
}

/// Writes `bytes` to `path` through a temporary file and a rename (mode 0600 if `private`).
fn replace(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

    #[test]
    fn rotation_announces_the_new_key_under_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_unix_ms(1_795_392_000_000).unwrap();
        assert!(matches!(rotate(dir.path(), now), Err(KeyError::Missing { .. })));
        let first = load_or_create(dir.path()).unwrap();
        let r = rotate(dir.path(), now).unwrap();
        assert_eq!(r.old.kid(), first.kid());
        assert_ne!(r.new.kid(), first.kid());
        // The controller now signs with the new key; the old seed is kept.
        let loaded = load_or_create(dir.path()).unwrap();
        assert_eq!(loaded.public_key(), r.new.public_key());
        let kept = std::fs::read(previous_dir(dir.path()).join(format!("{}.key", first.kid()))).unwrap();
        assert_eq!(signer_from_seed(&parse_seed(&kept).unwrap()).unwrap().public_key(), first.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [key_path(dir.path()), previous_dir(dir.path()).join(format!("{}.key", first.kid()))] {
                assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
            }
        }
        // A receiver holding only the first key learns the new one, and then verifies what it signs.
        let mut keys = loa_protocol::TrustedKeys::new();
        keys.insert_hex(first.kid().clone(), &public_key_hex(&first)).unwrap();
        let listed = announcements(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(&listed[0].0, r.new.kid());
        assert_eq!(listed[0].1, r.announcement);
        let later = now.saturating_add_ms(ANNOUNCEMENT_VALID_MS - 1);
        assert!(keys.accept_announcement(&listed[0].1, later).unwrap().is_some());
        assert_eq!(keys.public_key(r.new.kid().as_str()), Some(r.new.public_key()));
        // A second rotation chains from the second key.
        let r2 = rotate(dir.path(), now.saturating_add_ms(1000)).unwrap();
        assert_eq!(r2.old.kid(), r.new.kid());
        assert!(keys.accept_announcement(&r2.announcement, now).unwrap().is_some());
        assert_eq!(announcements(dir.path()).unwrap().len(), 2);
    }
}
