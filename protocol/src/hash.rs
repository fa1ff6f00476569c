//! SHA-256 digests as they travel: 64 lowercase hex digits in JSON. Also the crate's small hex codec (used for
//! signatures too), so no other crate is needed for it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::ProtocolError;

/// A SHA-256 digest. JSON: a string of 64 lowercase hex digits (uppercase is accepted when parsed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ProtocolError> {
        let mut out = [0u8; 32];
        decode_hex_into(s, &mut out).map_err(|detail| ProtocolError::Malformed { what: "sha256", detail })?;
        Ok(Sha256(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl TryFrom<String> for Sha256 {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::from_hex(&s)
    }
}

impl From<Sha256> for String {
    fn from(h: Sha256) -> String {
        h.to_hex()
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes exactly `out.len()` bytes of hex (either case) from `s`.
pub(crate) fn decode_hex_into(s: &str, out: &mut [u8]) -> Result<(), String> {
    let digits = s.as_bytes();
    if digits.len() != out.len() * 2 {
        return Err(format!("expected {} hex digits, got {}", out.len() * 2, digits.len()));
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err("not a hex digit".to_string());
        };
        *byte = (hi << 4) | lo;
    }
    Ok(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let h = Sha256::of(b"abc");
        assert_eq!(h.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{}\"", h.to_hex()));
        assert_eq!(Sha256::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert!(Sha256::from_hex("abc").is_err());
        assert!(Sha256::from_hex(&"g".repeat(64)).is_err());
        assert!(Sha256::from_hex(&"é".repeat(32)).is_err());
        assert!(serde_json::from_str::<Sha256>("\"00\"").is_err());
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        assert_eq!(encode_hex(&bytes), "000fa5ff");
        let mut out = [0u8; 4];
        decode_hex_into("000FA5ff", &mut out).unwrap();
        assert_eq!(out, bytes);
    }
}
