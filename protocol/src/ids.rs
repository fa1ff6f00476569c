//! Validated identifiers. Every id that can appear in a topic or a file name is one of these types, and the only
//! way to get one is a constructor (or a parser) that checks it, so a topic can never be built with a `/`, `+`,
//! `#` or an empty level in it.
//!
//! Rule for ids: 1 to [`MAX_ID_LEN`] characters from `A-Z a-z 0-9 _ -` ([`PlayId`]: at most
//! [`MAX_PLAY_ID_LEN`], so that a heartbeat stays small). Case matters. Languages follow their own rule, see
//! [`Language`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Longest receiver, bulletin or key id.
pub const MAX_ID_LEN: usize = 64;
/// Longest play id.
pub const MAX_PLAY_ID_LEN: usize = 24;

fn check_id(what: &'static str, s: &str, max: usize) -> Result<(), ProtocolError> {
    if s.is_empty() {
        return Err(ProtocolError::InvalidId { what, why: "empty" });
    }
    if s.len() > max {
        return Err(ProtocolError::InvalidId { what, why: "too long" });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ProtocolError::InvalidId { what, why: "only A-Z a-z 0-9 _ - are allowed" });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s` against the id rule.
            pub fn new(s: impl Into<String>) -> Result<Self, ProtocolError> {
                let s = s.into();
                check_id($what, &s, $max)?;
                Ok($name(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtocolError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ProtocolError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// One receiver (one Raspberry Pi in one village), e.g. `laocai-batxat-denthang-01`. Also its MQTT username
    /// and client id, so that the broker ACL can use it.
    ReceiverId,
    "receiver id",
    MAX_ID_LEN
);
id_type!(
    /// One bulletin in one language, e.g. `2025-06-01-market-hmn`. A bulletin's content never changes under its
    /// id: a corrected recording gets a new id.
    BulletinId,
    "bulletin id",
    MAX_ID_LEN
);
id_type!(
    /// Names one controller signing key, e.g. `ctl-2025a`; receivers may hold several during a key rotation.
    KeyId,
    "key id",
    MAX_ID_LEN
);
id_type!(
    /// One scheduled play of a plan, unique per receiver, e.g. `p-0601-0630`. Play reports refer to it.
    PlayId,
    "play id",
    MAX_PLAY_ID_LEN
);

/// A language, BCP-47-ish: a primary subtag of 2 or 3 lowercase letters (`vi`, `hmn`, `tay`, `nut`, `dao`),
/// then optional `-` subtags of 1 to 8 letters or digits (`hmn-Latn`); at most 35 characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    /// Checks `s` against the language rule.
    pub fn new(s: impl Into<String>) -> Result<Self, ProtocolError> {
        let s = s.into();
        let what = "language";
        if s.len() > 35 {
            return Err(ProtocolError::InvalidId { what, why: "too long" });
        }
        let mut parts = s.split('-');
        let primary = parts.next().unwrap_or_default();
        if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ProtocolError::InvalidId { what, why: "primary subtag must be 2-3 lowercase letters" });
        }
        if !parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return Err(ProtocolError::InvalidId { what, why: "subtags must be 1-8 letters or digits" });
        }
        Ok(Language(s))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Language {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.0
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Language({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for s in ["a", "laocai-batxat-01", "RX_7", &"x".repeat(MAX_ID_LEN)] {
            assert_eq!(ReceiverId::new(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn rejects_topic_breakers_and_oversize() {
        for s in ["", "a/b", "+", "#", "a b", "$SYS", "a.b", "bản", "a\0", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(ReceiverId::new(s).is_err(), "{s:?}");
            assert!(BulletinId::new(s).is_err(), "{s:?}");
        }
        assert!(PlayId::new("x".repeat(MAX_PLAY_ID_LEN + 1)).is_err());
        assert!(PlayId::new("x".repeat(MAX_PLAY_ID_LEN)).is_ok());
    }

    #[test]
    fn parsing_checks_too() {
        assert!(serde_json::from_str::<ReceiverId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<ReceiverId>("\"a/#\"").is_err());
        assert_eq!(serde_json::to_string(&KeyId::new("ctl-1").unwrap()).unwrap(), "\"ctl-1\"");
    }

    #[test]
    fn languages() {
        for s in ["vi", "hmn", "tay", "nut", "dao", "hmn-Latn", "vi-VN"] {
            assert!(Language::new(s).is_ok(), "{s}");
        }
        for s in ["", "v", "viet", "VI", "vi-", "vi--x", "vi-abcdefghi", "vi/x", "vi_VN"] {
            assert!(Language::new(s).is_err(), "{s}");
        }
    }
}
