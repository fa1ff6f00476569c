//! Loa's wire protocol: the MQTT topics and payloads shared by the controller and the receivers, as serde types
//! and pure functions. No I/O, no clock, no MQTT client: callers pass bytes and "now" in and get values or a
//! [`ProtocolError`] out, and no input makes anything here panic.
//!
//! One message kind per module, each with byte-level tests: [`topics`] builds and parses every topic string;
//! [`manifest`] describes one bulletin file (hashes, chunking, codec); [`plan`] is a receiver's schedule for the
//! next 48 hours or more; [`command`] is a remote action; those three travel inside the Ed25519 envelope of
//! [`signing`], and so does a [`key_announcement`], which moves receivers to a new signing key. [`request`] is a
//! receiver's ask for missing chunks and [`chunk`] the binary frame that answers it. [`health`] is the heartbeat
//! and the online/offline status; [`report`] holds play reports and their acknowledgement. Underneath: [`ids`]
//! (validated ids), [`time`] (UTC milliseconds), [`hash`] (SHA-256, hex), [`error`]. `docs/protocol.md`
//! documents the same with the golden examples of `tests/golden/`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backoff;
pub mod broker_url;
pub mod chunk;
pub mod command;
pub mod error;
pub mod hash;
pub mod health;
pub mod ids;
pub mod key_announcement;
pub mod manifest;
pub mod plan;
pub mod report;
pub mod request;
pub mod signing;
pub mod time;
pub mod topics;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use backoff::Backoff;
pub use broker_url::BrokerUrl;
pub use chunk::{BulletinTag, ChunkFrame};
pub use command::{Action, Command};
pub use error::{ProtocolError, Rejection};
pub use hash::Sha256;
pub use health::{AmpState, Health, LinkKind, Rejections, SpeakerState, Status, StatusState};
pub use ids::{BulletinId, KeyId, Language, PlayId, ReceiverId};
pub use key_announcement::KeyAnnouncement;
pub use manifest::{BulletinInfo, Category, Codec, CodecName, Manifest, Tier, DEFAULT_CHUNK_SIZE};
pub use plan::{Plan, PlannedPlay};
pub use report::{MissReason, PlayEvent, PlayReport, ReportAck, ReportBatch};
pub use request::{ChunkRange, ChunkRequest};
pub use signing::{Signable, Signed, Signer, TrustedKeys, VerifyOptions};
pub use time::Timestamp;
pub use topics::{Direction, QoS, Topic, Topics};

/// The protocol version: the `v1` level of every topic and the version byte of chunk frames. Within a version,
/// changes are additive only (receivers ignore JSON fields they do not know).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest sequence number, report id or session number: 2^53 - 1, so that JavaScript dashboards read every
/// number of this protocol exactly.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

pub(crate) fn check_seq(what: &'static str, field: &str, value: u64) -> Result<(), ProtocolError> {
    if value > MAX_SEQ {
        return Err(ProtocolError::invalid(what, format!("{field} {value} is above 2^53 - 1")));
    }
    Ok(())
}

/// A JSON message kind: how big it may be, how it is checked, and its compact encoding.
pub trait Message: Serialize + DeserializeOwned {
    /// Its name in errors and in the `kind` of a signed envelope.
    const KIND: &'static str;
    /// The largest encoding accepted; bigger input is refused before it is parsed.
    const MAX_BYTES: usize;

    /// Checks the rules that the types alone do not (ranges, ordering, lengths).
    fn validate(&self) -> Result<(), ProtocolError> {
        Ok(())
    }

    /// Parses and validates a received message.
    fn from_json(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(ProtocolError::TooLarge { what: Self::KIND, limit: Self::MAX_BYTES, got: bytes.len() });
        }
        let value: Self = serde_json::from_slice(bytes).map_err(|e| ProtocolError::malformed(Self::KIND, e))?;
        value.validate()?;
        Ok(value)
    }

    /// Validates and encodes compactly (no whitespace, fields in declaration order, `None` fields left out).
    fn to_json(&self) -> Result<Vec<u8>, ProtocolError> {
        self.validate()?;
        let bytes = serde_json::to_vec(self).map_err(|e| ProtocolError::malformed(Self::KIND, e))?;
        if bytes.len() > Self::MAX_BYTES {
            return Err(ProtocolError::TooLarge { what: Self::KIND, limit: Self::MAX_BYTES, got: bytes.len() });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(bytes: &[u8]) {
        let _ = Manifest::from_json(bytes);
        let _ = Plan::from_json(bytes);
        let _ = Command::from_json(bytes);
        let _ = ChunkRequest::from_json(bytes);
        let _ = Health::from_json(bytes);
        let _ = Status::from_json(bytes);
        let _ = ReportBatch::from_json(bytes);
        let _ = ReportAck::from_json(bytes);
        let _ = Signed::<Manifest>::from_json(bytes);
        let _ = Signed::<Plan>::from_json(bytes);
        let _ = KeyAnnouncement::from_json(bytes);
        let _ = Signed::<KeyAnnouncement>::from_json(bytes);
        let _ = Signed::<Command>::from_json(bytes);
        let _ = ChunkFrame::decode(bytes);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let payload = r#"{"receiver":"rx1","seq":5,"seq":6,"do":"restart"}"#;
        assert!(Command::from_json(payload.as_bytes()).is_err());
        let env = r#"{"kind":"command","kid":"k","issued_at":1,"expires_at":2,"payload":{},"payload":{},"sig":"00"}"#;
        assert!(Signed::<Command>::from_json(env.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            feed(&bytes);
        }

        #[test]
        fn json_like_text_never_panics(text in r#"[{}\[\]",:a-z0-9 .\-]{0,200}"#) {
            feed(text.as_bytes());
        }

        #[test]
        fn any_topic_never_panics(topic in r"[a-z0-9/+#$ -]{0,80}") {
            let t = Topics::default();
            if let Ok(parsed) = t.parse(&topic) {
                prop_assert_eq!(t.topic(&parsed), topic.clone());
            }
            let _ = t.parse(&format!("loa/v1/{topic}"));
        }
    }
}
