//! The one error type of the protocol crate. Each variant tells the caller what to do with the message that
//! caused it: drop it and count the rejection ([`ProtocolError::rejection`] says under which counter of the
//! heartbeat), fix the caller's own input (`InvalidId`, `Invalid`), or fetch the data again (`ChunkHashMismatch`).

use crate::time::Timestamp;

/// Anything that can be wrong with a topic, an id or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The topic is not one of this protocol's topics (wrong prefix, unknown leaf, bad id in it). Ignore the
    /// message; the broker ACL should not have let it through.
    #[error("not a Loa topic: {topic:?} ({why})")]
    BadTopic {
        /// The topic as received (cut to 200 characters).
        topic: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// An id or topic prefix given to a constructor breaks the id rules (see [`crate::ids`]). Fix the caller.
    #[error("invalid {what}: {why}")]
    InvalidId {
        /// Which kind of id.
        what: &'static str,
        /// Which rule it breaks.
        why: &'static str,
    },

    /// The bytes do not parse as the expected message (bad JSON, missing field, bad frame header). Drop it.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What the parser said.
        detail: String,
    },

    /// The message parses but its content breaks a rule (volume above 100, unsorted plan, ...). Drop it when
    /// received; fix the caller when building.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which message or field.
        what: &'static str,
        /// Which rule it breaks.
        why: String,
    },

    /// The message is bigger than this protocol allows for its kind. Drop it without parsing.
    #[error("{what} is too large: {got} bytes (limit {limit})")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// The limit, in bytes (or items for lists).
        limit: usize,
        /// What came.
        got: usize,
    },

    /// A binary frame or message declares a version this build does not speak. Update the receiver.
    #[error("unsupported {what} version {got}")]
    UnsupportedVersion {
        /// Which message.
        what: &'static str,
        /// The version found.
        got: u32,
    },

    /// The envelope carries no signature. Drop it.
    #[error("message is not signed")]
    Unsigned,

    /// The envelope says it holds another kind of payload than the one expected on this topic. Drop it.
    #[error("expected a signed {expected}, got a signed {got:?}")]
    WrongKind {
        /// The kind this caller expected.
        expected: &'static str,
        /// The kind the envelope names (cut to 64 characters).
        got: String,
    },

    /// The envelope was signed by a key this receiver does not hold. Drop it (or re-provision the key).
    #[error("signed with unknown key {kid:?}")]
    UnknownKey {
        /// The key id the envelope names (cut to 64 characters).
        kid: String,
    },

    /// The signature does not match the bytes: tampered, or signed by another key under a known key id. Drop it.
    #[error("bad signature")]
    BadSignature,

    /// The envelope's validity ended. Drop it.
    #[error("expired at {expires_at} (now {now})")]
    Expired {
        /// When it stopped being valid.
        expires_at: Timestamp,
        /// The time it was checked at.
        now: Timestamp,
    },

    /// The message is addressed to another receiver (a replay from someone else's topic). Drop it.
    #[error("addressed to receiver {got:?}, not to us ({expected:?})")]
    WrongReceiver {
        /// This receiver's id.
        expected: String,
        /// The id the message names.
        got: String,
    },

    /// The message's sequence number is not greater than the one already held: a replay or a stale copy. Drop it.
    #[error("replayed or stale: sequence {got} is not above the held {held}")]
    Replay {
        /// The sequence number already held.
        held: u64,
        /// The sequence number of this message.
        got: u64,
    },

    /// A chunk index beyond the bulletin's last chunk. Drop the chunk.
    #[error("chunk {index} is out of range (the bulletin has {count} chunks)")]
    ChunkOutOfRange {
        /// The index asked for or received.
        index: u32,
        /// How many chunks the bulletin has.
        count: u32,
    },

    /// A chunk has the wrong length for its index. Drop it and ask for it again.
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    ChunkSizeMismatch {
        /// The chunk index.
        index: u32,
        /// The length the manifest implies.
        expected: u32,
        /// The length received.
        got: u32,
    },

    /// A chunk's bytes do not hash to the manifest's value. Drop it and ask for it again.
    #[error("chunk {index} does not match its hash")]
    ChunkHashMismatch {
        /// The chunk index.
        index: u32,
    },

    /// The assembled file does not match the manifest's size or hash. Delete it and download again.
    #[error("bulletin file does not match its manifest: {why}")]
    FileMismatch {
        /// Size or hash, in words.
        why: String,
    },
}

/// Which heartbeat counter a rejected message is counted under (see [`crate::health::Rejections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No signature.
    Unsigned,
    /// Signature does not match.
    BadSignature,
    /// Signed with a key we do not hold.
    UnknownKey,
    /// Validity ended.
    Expired,
    /// Sequence not above the held one.
    Replay,
    /// Unparseable, invalid, wrong kind, wrong receiver, too large, unsupported version, bad topic.
    Malformed,
    /// Chunk or file does not match the manifest.
    HashMismatch,
}

impl ProtocolError {
    /// The counter a received message that failed with this error is counted under, or `None` for errors that
    /// only come from the caller's own input (`InvalidId`).
    pub fn rejection(&self) -> Option<Rejection> {
        Some(match self {
            ProtocolError::InvalidId { .. } => return None,
            ProtocolError::Unsigned => Rejection::Unsigned,
            ProtocolError::BadSignature => Rejection::BadSignature,
            ProtocolError::UnknownKey { .. } => Rejection::UnknownKey,
            ProtocolError::Expired { .. } => Rejection::Expired,
            ProtocolError::Replay { .. } => Rejection::Replay,
            ProtocolError::ChunkOutOfRange { .. }
            | ProtocolError::ChunkSizeMismatch { .. }
            | ProtocolError::ChunkHashMismatch { .. }
            | ProtocolError::FileMismatch { .. } => Rejection::HashMismatch,
            ProtocolError::BadTopic { .. }
            | ProtocolError::Malformed { .. }
            | ProtocolError::Invalid { .. }
            | ProtocolError::TooLarge { .. }
            | ProtocolError::UnsupportedVersion { .. }
            | ProtocolError::WrongKind { .. }
            | ProtocolError::WrongReceiver { .. } => Rejection::Malformed,
        })
    }

    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        ProtocolError::Malformed { what, detail: detail.to_string() }
    }

    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        ProtocolError::Invalid { what, why: why.into() }
    }
}

/// Cuts an untrusted string for inclusion in an error, on a character boundary.
pub(crate) fn clip(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_received_error_has_a_counter() {
        assert_eq!(ProtocolError::Unsigned.rejection(), Some(Rejection::Unsigned));
        assert_eq!(ProtocolError::Replay { held: 2, got: 1 }.rejection(), Some(Rejection::Replay));
        assert_eq!(ProtocolError::ChunkHashMismatch { index: 3 }.rejection(), Some(Rejection::HashMismatch));
        assert_eq!(ProtocolError::invalid("plan", "x").rejection(), Some(Rejection::Malformed));
        assert_eq!(ProtocolError::InvalidId { what: "receiver id", why: "empty" }.rejection(), None);
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("bản tin", 3), "bản");
        assert_eq!(clip("ab", 10), "ab");
    }

    #[test]
    fn messages_say_what_to_do_with_numbers() {
        let e = ProtocolError::Replay { held: 7, got: 5 };
        assert_eq!(e.to_string(), "replayed or stale: sequence 5 is not above the held 7");
    }
}
