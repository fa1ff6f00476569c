//! Signing keys the controller announced (key rotation, see [`loa_protocol::key_announcement`]). An accepted
//! announcement's envelope is kept, exactly as received, as `<state_dir>/keys/<kid>.json`; at boot each one is
//! verified again as of its own `issued_at` (so a key outlives its announcement's expiry) and its key added to
//! the config file's keys, following chains (A announces B, B announces C) in any order. A file that no longer
//! verifies (damaged, or its signer no longer trusted) adds nothing and is logged.
//!
//! While running, [`Agent::on_key`] accepts announcements from `rx/{id}/key/{kid}`. Messages refused for an
//! unknown key are parked (at most [`MAX_PARKED`]) and handled again once a new key is trusted: after a long
//! time offline, the broker may hand a receiver the retained plan signed with the new key before the
//! announcement of that key.

use std::path::Path;

use loa_protocol::{KeyAnnouncement, KeyId, ProtocolError, Signed, TrustedKeys};

use super::Agent;
use crate::cache::fsutil::write_atomic;
use crate::error::ReceiverError;

/// Most messages kept for a retry after a key announcement.
pub(crate) const MAX_PARKED: usize = 32;

fn file(dir: &Path, kid: &KeyId) -> std::path::PathBuf {
    dir.join("keys").join(format!("{kid}.json"))
}

/// Adds the keys of the announcements kept under `dir` to `keys`; returns how many were added.
pub(crate) fn load(dir: &Path, keys: &mut TrustedKeys) -> Result<usize, ReceiverError> {
    let kdir = dir.join("keys");
    let io = |source| ReceiverError::State { path: kdir.clone(), source };
    let entries = match std::fs::read_dir(&kdir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut pending = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let bytes = std::fs::read(&path).map_err(|source| ReceiverError::State { path: path.clone(), source })?;
            pending.push((path, bytes));
        }
    }
    let mut added = 0;
    loop {
        let before = pending.len();
        pending.retain(|(path, bytes)| {
            let accepted = Signed::<KeyAnnouncement>::from_json(bytes)
                .and_then(|env| keys.accept_announcement(bytes, env.issued_at));
            match accepted {
                Ok(Some(a)) => {
                    tracing::info!(kid = %a.kid, "announced signing key trusted");
                    added += 1;
                    false
                }
                Ok(None) => false,
                // Perhaps signed by a key another file announces: try again after the others.
                Err(ProtocolError::UnknownKey { .. }) => true,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "stored key announcement ignored");
                    false
                }
            }
        });
        if pending.len() == before {
            break;
        }
    }
    for (path, _) in pending {
        tracing::warn!(file = %path.display(), "stored key announcement signed by a key no longer trusted; ignored");
    }
    Ok(added)
}

impl Agent {
    /// A key announcement on `rx/{id}/key/{kid}`.
    pub(super) fn on_key(&mut self, kid: &KeyId, payload: &[u8]) -> Result<(), ReceiverError> {
        if payload.is_empty() {
            tracing::info!(%kid, "key announcement cleared; the key stays trusted");
            return Ok(());
        }
        let mut keys = self.rx.checked.keys.clone();
        match keys.accept_announcement(payload, self.now()) {
            Ok(Some(a)) if a.kid == *kid => {
                let path = file(&self.rx.cfg.state_dir, kid);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| ReceiverError::State { path: parent.to_path_buf(), source })?;
                }
                write_atomic(&path, payload)?;
                self.rx.checked.keys = keys;
                tracing::info!(%kid, valid_from = %a.valid_from, "new signing key trusted");
                for (topic, payload, retain) in std::mem::take(&mut self.parked) {
                    self.on_message(&topic, &payload, retain)?;
                }
            }
            Ok(Some(a)) => {
                let why = format!("announcement of key {} on the topic of key {kid}", a.kid);
                self.reject("key", &ProtocolError::Invalid { what: "key", why });
            }
            Ok(None) => tracing::debug!(%kid, "announced key already trusted"),
            Err(e) => self.reject("key", &e),
        }
        Ok(())
    }

    /// Keeps a message refused for an unknown key, to handle again after a key announcement.
    pub(super) fn park(&mut self, topic: &str, payload: &[u8], retain: bool) {
        if self.parked.len() >= MAX_PARKED {
            self.parked.remove(0);
        }
        self.parked.retain(|(t, _, _)| t != topic);
        self.parked.push((topic.to_string(), payload.to_vec(), retain));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::{keys, signer, ts};
    use loa_protocol::hash::encode_hex;
    use loa_protocol::Signer;

    fn announce(by: &Signer, new: &Signer, at: i64) -> Vec<u8> {
        let a =
            KeyAnnouncement { kid: new.kid().clone(), public_key: encode_hex(&new.public_key()), valid_from: ts(at) };
        by.sign(&a, ts(at), ts(at + 1000)).unwrap().to_json().unwrap()
    }

    #[test]
    fn stored_chains_load_in_any_order_and_outlive_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let b = Signer::from_seed(KeyId::new("ctl-b").unwrap(), &[2; 32]);
        let c = Signer::from_seed(KeyId::new("ctl-c").unwrap(), &[3; 32]);
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        // "ctl-c" sorts after "ctl-b" but a directory listing has no order: name them against it.
        std::fs::write(dir.path().join("keys/a-ctl-c.json"), announce(&b, &c, 2_000)).unwrap();
        std::fs::write(dir.path().join("keys/z-ctl-b.json"), announce(&signer(), &b, 1_000)).unwrap();
        std::fs::write(dir.path().join("keys/junk.json"), b"{not json").unwrap();
        let stranger = Signer::from_seed(KeyId::new("ctl-x").unwrap(), &[4; 32]);
        std::fs::write(dir.path().join("keys/x.json"), announce(&stranger, &stranger, 1_000)).unwrap();
        let mut k = keys(&signer());
        assert_eq!(load(dir.path(), &mut k).unwrap(), 2);
        assert_eq!(k.len(), 3);
        assert!(k.public_key("ctl-c").is_some());
        assert!(k.public_key("ctl-x").is_none());
        // Tampered on disk: not trusted.
        let mut k = keys(&signer());
        let tampered = String::from_utf8(announce(&signer(), &b, 1_000))
            .unwrap()
            .replace(&encode_hex(&b.public_key()), &encode_hex(&stranger.public_key()));
        std::fs::write(dir.path().join("keys/z-ctl-b.json"), tampered).unwrap();
        assert_eq!(load(dir.path(), &mut k).unwrap(), 0);
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn no_keys_folder_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = keys(&signer());
        assert_eq!(load(dir.path(), &mut k).unwrap(), 0);
        let _ = ts(0);
    }
}
