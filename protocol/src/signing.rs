//! The signed envelope. The controller signs manifests, plans and commands with Ed25519; receivers hold the
//! controller's public key(s) and accept nothing unsigned on those topics.
//!
//! JSON: `{"kind":"plan","kid":"ctl-1","issued_at":…,"expires_at":…,"payload":{…},"sig":"<128 hex>"}`. The
//! payload is embedded as raw JSON and its bytes are signed exactly as they travel: the receiver verifies the
//! bytes it received and only then parses them; nothing is ever re-serialized to be verified. The signature
//! covers, in this order, separated by `\n`:
//!
//! ```text
//! loa-signed-v1 \n kind \n kid \n issued_at (decimal) \n expires_at (decimal) \n payload bytes
//! ```
//!
//! [`Signed::verify`] checks, in order, and stops at the first failure, each with its own error: kind
//! (`WrongKind`), signature present (`Unsigned`), key known (`UnknownKey`), signature valid (`BadSignature`),
//! payload parses and validates (`Malformed`/`Invalid`), not expired (`Expired`), addressed to this receiver
//! (`WrongReceiver`), sequence above the held one (`Replay`). `issued_at` in the future is not an error: a
//! receiver's clock may be wrong, which is what `expires_at` bounds.

use std::fmt;
use std::marker::PhantomData;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{clip, ProtocolError};
use crate::hash::{decode_hex_into, encode_hex};
use crate::ids::{KeyId, ReceiverId};
use crate::time::Timestamp;
use crate::Message;

/// A message kind that travels signed.
pub trait Signable: Message {
    /// The sequence number checked against replay, if this kind has one.
    fn sequence(&self) -> Option<u64>;
    /// The receiver the message is for, if it is for one only.
    fn addressee(&self) -> Option<&ReceiverId>;
}

/// What [`Signed::verify`] checks against besides the keys.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The receiver's current time (UTC).
    pub now: Timestamp,
    /// This receiver's id: messages addressed to another are refused. `None` skips the check.
    pub receiver: Option<&'a ReceiverId>,
    /// The sequence number of this kind already held: anything not above it is refused. `None` if none held.
    pub held_seq: Option<u64>,
}

/// A signed message of kind `T`. See the module doc.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    /// The payload's [`Message::KIND`].
    pub kind: String,
    /// The signing key's id.
    pub kid: String,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    payload: Box<RawValue>,
    /// The Ed25519 signature, 128 hex digits; empty or absent when unsigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
    #[serde(skip)]
    kind_of: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("payload", &self.payload.get())
            .field("sig", &self.sig)
            .finish()
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.kid == other.kid
            && self.issued_at == other.issued_at
            && self.expires_at == other.expires_at
            && self.payload.get() == other.payload.get()
            && self.sig == other.sig
    }
}

fn preimage(kind: &str, kid: &str, issued_at: Timestamp, expires_at: Timestamp, payload: &str) -> Vec<u8> {
    format!("loa-signed-v1\n{kind}\n{kid}\n{}\n{}\n{payload}", issued_at.unix_ms(), expires_at.unix_ms()).into_bytes()
}

impl<T: Signable> Signed<T> {
    /// The largest envelope accepted: the payload's limit plus room for the envelope fields.
    pub const MAX_BYTES: usize = T::MAX_BYTES + 1024;

    /// Parses an envelope (not yet verified: call [`Signed::verify`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(ProtocolError::TooLarge { what: T::KIND, limit: Self::MAX_BYTES, got: bytes.len() });
        }
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::malformed(T::KIND, e))
    }

    /// The envelope's compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, ProtocolError> {
        serde_json::to_vec(self).map_err(|e| ProtocolError::malformed(T::KIND, e))
    }

    /// The payload's bytes exactly as signed and received.
    pub fn payload_bytes(&self) -> &[u8] {
        self.payload.get().as_bytes()
    }

    /// Parses and verifies in one step: the usual receiver call.
    pub fn open(bytes: &[u8], keys: &TrustedKeys, opts: &VerifyOptions<'_>) -> Result<T, ProtocolError> {
        Self::from_json(bytes)?.verify(keys, opts)
    }

    /// Checks everything listed in the module doc and returns the payload.
    pub fn verify(&self, keys: &TrustedKeys, opts: &VerifyOptions<'_>) -> Result<T, ProtocolError> {
        if self.kind != T::KIND {
            return Err(ProtocolError::WrongKind { expected: T::KIND, got: clip(&self.kind, 64) });
        }
        if self.sig.is_empty() {
            return Err(ProtocolError::Unsigned);
        }
        let key = keys.get(&self.kid).ok_or_else(|| ProtocolError::UnknownKey { kid: clip(&self.kid, 64) })?;
        let mut sig = [0u8; 64];
        decode_hex_into(&self.sig, &mut sig).map_err(|_| ProtocolError::BadSignature)?;
        let message = preimage(&self.kind, &self.kid, self.issued_at, self.expires_at, self.payload.get());
        key.verify_strict(&message, &Signature::from_bytes(&sig)).map_err(|_| ProtocolError::BadSignature)?;

        let payload = T::from_json(self.payload_bytes())?;
        if self.expires_at < self.issued_at {
            return Err(ProtocolError::invalid(T::KIND, "envelope expires before it is issued"));
        }
        if opts.now >= self.expires_at {
            return Err(ProtocolError::Expired { expires_at: self.expires_at, now: opts.now });
        }
        if let (Some(me), Some(to)) = (opts.receiver, payload.addressee()) {
            if me != to {
                return Err(ProtocolError::WrongReceiver { expected: me.to_string(), got: to.to_string() });
            }
        }
        if let (Some(held), Some(got)) = (opts.held_seq, payload.sequence()) {
            if got <= held {
                return Err(ProtocolError::Replay { held, got });
            }
        }
        Ok(payload)
    }
}

/// The controller's signing key. Its `Debug` does not show the secret.
pub struct Signer {
    kid: KeyId,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ kid: {}, public: {} }}", self.kid, encode_hex(&self.public_key()))
    }
}

impl Signer {
    /// The key whose 32-byte Ed25519 secret seed is `seed` (the controller loads it; this crate does no I/O).
    pub fn from_seed(kid: KeyId, seed: &[u8; 32]) -> Self {
        Signer { kid, key: SigningKey::from_bytes(seed) }
    }

    /// The key id.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// The 32-byte public key to provision receivers with.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Validates `payload`, encodes it compactly and signs it.
    pub fn sign<T: Signable>(
        &self,
        payload: &T,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Signed<T>, ProtocolError> {
        if expires_at < issued_at {
            return Err(ProtocolError::invalid(T::KIND, "envelope expires before it is issued"));
        }
        let json = String::from_utf8(payload.to_json()?).map_err(|e| ProtocolError::malformed(T::KIND, e))?;
        let signature = self.key.sign(&preimage(T::KIND, self.kid.as_str(), issued_at, expires_at, &json));
        Ok(Signed {
            kind: T::KIND.to_string(),
            kid: self.kid.to_string(),
            issued_at,
            expires_at,
            payload: RawValue::from_string(json).map_err(|e| ProtocolError::malformed(T::KIND, e))?,
            sig: encode_hex(&signature.to_bytes()),
            kind_of: PhantomData,
        })
    }
}

/// The controller public keys a receiver trusts, by key id (two or more after a key rotation, see
/// [`crate::key_announcement`]).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, VerifyingKey)>,
}

impl TrustedKeys {
    /// No keys: everything is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key. Errors if the bytes are not an Ed25519 public key.
    pub fn insert(&mut self, kid: KeyId, public_key: &[u8; 32]) -> Result<(), ProtocolError> {
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|_| ProtocolError::InvalidId { what: "public key", why: "not an Ed25519 point" })?;
        self.keys.retain(|(k, _)| *k != kid);
        self.keys.push((kid, key));
        Ok(())
    }

    /// Adds a key given as 64 hex digits (as in a receiver's config file).
    pub fn insert_hex(&mut self, kid: KeyId, public_key_hex: &str) -> Result<(), ProtocolError> {
        let mut bytes = [0u8; 32];
        decode_hex_into(public_key_hex, &mut bytes)
            .map_err(|_| ProtocolError::InvalidId { what: "public key", why: "not 64 hex digits" })?;
        self.insert(kid, &bytes)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted (everything is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public key trusted under `kid`, if any.
    pub fn public_key(&self, kid: &str) -> Option<[u8; 32]> {
        self.get(kid).map(VerifyingKey::to_bytes)
    }

    /// The trusted key ids, in the order they were added.
    pub fn kids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|(k, _)| k)
    }

    fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k.as_str() == kid).map(|(_, key)| key)
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
pub(crate) mod tests;
