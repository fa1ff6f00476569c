//! Signing-key rotation: the controller announces a new public key in a [`KeyAnnouncement`] signed by a key the
//! receivers already trust, so that no receiver has to be visited to move to a new key.
//!
//! The announcement travels in the usual envelope ([`crate::signing`], kind `key`), retained on
//! `{prefix}/rx/{receiver}/key` so that a receiver offline for weeks still gets it when it comes back. It is the
//! same for every receiver (no addressee, no sequence: receiving it twice changes nothing). A receiver opens it
//! with [`TrustedKeys::accept_announcement`], which verifies it like any signed message (signature by a trusted
//! key, not expired) and then adds the new key, refusing to replace a key already held under the same id (an
//! announcement never changes what an existing key id means) and to hold more than [`MAX_TRUSTED_KEYS`] keys.
//! The receiver keeps the envelope on disk and verifies it again at boot, at its `issued_at`, so the key it adds
//! outlives the envelope's expiry. `valid_from` is when the controller starts signing with the new key; it is
//! informational: receivers trust the key at once, so that clock skew never refuses the first messages signed
//! with it. The old key stays trusted: retiring it takes a config change on the receiver.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::hash::decode_hex_into;
use crate::ids::{KeyId, ReceiverId};
use crate::signing::{Signable, Signed, TrustedKeys, VerifyOptions};
use crate::time::Timestamp;
use crate::Message;

/// Most keys a receiver trusts at once (those of its config file plus the announced ones).
pub const MAX_TRUSTED_KEYS: usize = 8;

/// A new controller public key. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAnnouncement {
    /// The new key's id, as the envelopes it signs will name it.
    pub kid: KeyId,
    /// The new Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// When the controller starts signing with the new key.
    pub valid_from: Timestamp,
}

impl KeyAnnouncement {
    /// The public key's 32 bytes (checked to be an Ed25519 point by [`Message::validate`]).
    pub fn public_key_bytes(&self) -> Result<[u8; 32], ProtocolError> {
        let mut bytes = [0u8; 32];
        decode_hex_into(&self.public_key, &mut bytes)
            .map_err(|_| ProtocolError::invalid(Self::KIND, "public_key is not 64 hex digits"))?;
        Ok(bytes)
    }
}

impl Message for KeyAnnouncement {
    const KIND: &'static str = "key";
    const MAX_BYTES: usize = 512;

    fn validate(&self) -> Result<(), ProtocolError> {
        let bytes = self.public_key_bytes()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ProtocolError::invalid(Self::KIND, "public_key is not an Ed25519 public key"))?;
        Ok(())
    }
}

impl Signable for KeyAnnouncement {
    fn sequence(&self) -> Option<u64> {
        None
    }

    fn addressee(&self) -> Option<&ReceiverId> {
        None
    }
}

impl TrustedKeys {
    /// Verifies a signed [`KeyAnnouncement`] (`bytes`, as received) at `now` and trusts the key it announces.
    /// Returns the announcement if the key was added, `None` if the same key was already trusted under that id.
    /// Errors: any verification error of [`Signed::verify`] (count it like any refused message), `Invalid` if
    /// the id is already trusted with another key or [`MAX_TRUSTED_KEYS`] are held.
    pub fn accept_announcement(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Option<KeyAnnouncement>, ProtocolError> {
        let opts = VerifyOptions { now, receiver: None, held_seq: None };
        let announced = Signed::<KeyAnnouncement>::open(bytes, self, &opts)?;
        let public_key = announced.public_key_bytes()?;
        match self.public_key(announced.kid.as_str()) {
            Some(held) if held == public_key => return Ok(None),
            Some(_) => {
                return Err(ProtocolError::invalid(
                    KeyAnnouncement::KIND,
                    format!("key id {} is already trusted with another key", announced.kid),
                ))
            }
            None => {}
        }
        if self.len() >= MAX_TRUSTED_KEYS {
            return Err(ProtocolError::invalid(
                KeyAnnouncement::KIND,
                format!("already {MAX_TRUSTED_KEYS} trusted keys; retire one in the config file first"),
            ));
        }
        self.insert(announced.kid.clone(), &public_key)?;
        Ok(Some(announced))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::encode_hex;
    use crate::signing::tests::signer;
    use crate::signing::Signer;
    use proptest::prelude::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms).unwrap()
    }

    fn new_signer(seed: u8) -> Signer {
        Signer::from_seed(KeyId::new(format!("ctl-new{seed}")).unwrap(), &[seed; 32])
    }

    fn announce(by: &Signer, new: &Signer, issued: i64, expires: i64) -> Vec<u8> {
        let a = KeyAnnouncement {
            kid: new.kid().clone(),
            public_key: encode_hex(&new.public_key()),
            valid_from: t(issued),
        };
        by.sign(&a, t(issued), t(expires)).unwrap().to_json().unwrap()
    }

    fn old_keys() -> TrustedKeys {
        let mut k = TrustedKeys::new();
        k.insert(signer().kid().clone(), &signer().public_key()).unwrap();
        k
    }

    fn command_signed_by(s: &Signer) -> Vec<u8> {
        let c = crate::Command { receiver: ReceiverId::new("rx1").unwrap(), seq: 1, action: crate::Action::Resync };
        s.sign(&c, t(1_000), t(9_000)).unwrap().to_json().unwrap()
    }

    #[test]
    fn exact_shape() {
        let a = KeyAnnouncement {
            kid: KeyId::new("ctl-9f86d081").unwrap(),
            public_key: "ab".repeat(32),
            valid_from: t(1_795_392_000_000),
        };
        // "ab" * 32 is not necessarily a curve point: use a real key for the validated encoding.
        let real = KeyAnnouncement { public_key: encode_hex(&signer().public_key()), ..a };
        let json = String::from_utf8(real.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"kid":"ctl-9f86d081","public_key":"{}","valid_from":1795392000000}}"#,
                encode_hex(&signer().public_key())
            )
        );
        assert_eq!(KeyAnnouncement::from_json(json.as_bytes()).unwrap(), real);
    }

    #[test]
    fn a_key_announced_under_the_old_key_is_trusted_then_verifies() {
        let new = new_signer(3);
        let mut keys = old_keys();
        assert_eq!(
            Signed::<crate::Command>::open(
                &command_signed_by(&new),
                &keys,
                &VerifyOptions { now: t(1_500), receiver: None, held_seq: None }
            ),
            Err(ProtocolError::UnknownKey { kid: "ctl-new3".into() })
        );
        let msg = announce(&signer(), &new, 1_000, 9_000);
        let got = keys.accept_announcement(&msg, t(1_500)).unwrap().unwrap();
        assert_eq!(got.kid, *new.kid());
        assert_eq!(keys.len(), 2);
        let opts = VerifyOptions { now: t(1_500), receiver: None, held_seq: None };
        assert!(Signed::<crate::Command>::open(&command_signed_by(&new), &keys, &opts).is_ok());
        assert!(Signed::<crate::Command>::open(&command_signed_by(&signer()), &keys, &opts).is_ok());
        // Again: nothing changes.
        assert_eq!(keys.accept_announcement(&msg, t(1_500)), Ok(None));
        assert_eq!(keys.len(), 2);
        // A chain: the new key announces a third.
        let third = new_signer(4);
        assert!(keys.accept_announcement(&announce(&new, &third, 2_000, 9_000), t(2_500)).unwrap().is_some());
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn announcements_are_refused_like_any_signed_message() {
        let new = new_signer(3);
        let stranger = new_signer(5);
        let mut keys = old_keys();
        // Signed by a key we do not hold.
        let by_stranger = announce(&stranger, &new, 1_000, 9_000);
        assert!(matches!(keys.accept_announcement(&by_stranger, t(1_500)), Err(ProtocolError::UnknownKey { .. })));
        // Expired.
        let msg = announce(&signer(), &new, 1_000, 2_000);
        assert!(matches!(keys.accept_announcement(&msg, t(2_000)), Err(ProtocolError::Expired { .. })));
        // Tampered: another public key swapped in after signing.
        let msg = String::from_utf8(announce(&signer(), &new, 1_000, 9_000)).unwrap();
        let swapped = msg.replace(&encode_hex(&new.public_key()), &encode_hex(&stranger.public_key()));
        assert_eq!(keys.accept_announcement(swapped.as_bytes(), t(1_500)), Err(ProtocolError::BadSignature));
        // Re-defining a key id we hold, even signed by a trusted key.
        let evil = Signer::from_seed(signer().kid().clone(), &[6; 32]);
        let msg = announce(&signer(), &evil, 1_000, 9_000);
        assert!(matches!(keys.accept_announcement(&msg, t(1_500)), Err(ProtocolError::Invalid { .. })));
        // Not a point.
        let a = KeyAnnouncement { kid: new.kid().clone(), public_key: "zz".repeat(32), valid_from: t(1) };
        assert!(signer().sign(&a, t(1_000), t(9_000)).is_err());
        assert_eq!(keys.len(), 1, "nothing was added");
    }

    #[test]
    fn at_most_max_trusted_keys() {
        let mut keys = old_keys();
        for seed in 1..MAX_TRUSTED_KEYS as u8 {
            keys.accept_announcement(&announce(&signer(), &new_signer(seed + 10), 1_000, 9_000), t(1_500)).unwrap();
        }
        assert_eq!(keys.len(), MAX_TRUSTED_KEYS);
        let one_more = announce(&signer(), &new_signer(99), 1_000, 9_000);
        assert!(matches!(keys.accept_announcement(&one_more, t(1_500)), Err(ProtocolError::Invalid { .. })));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_or_add_a_key(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut keys = old_keys();
            let _ = keys.accept_announcement(&bytes, t(1_500));
            prop_assert_eq!(keys.len(), 1);
        }

        #[test]
        fn a_flipped_byte_never_adds_another_key(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let new = new_signer(3);
            let mut bad = announce(&signer(), &new, 1_000, 9_000);
            let i = at.index(bad.len());
            bad[i] ^= flip;
            let mut keys = old_keys();
            if let Ok(Some(a)) = keys.accept_announcement(&bad, t(1_500)) {
                prop_assert_eq!(&a.kid, new.kid());
                prop_assert_eq!(a.public_key_bytes().unwrap(), new.public_key());
            }
        }
    }
}
