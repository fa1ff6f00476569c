//! Heartbeat and online status, published by a receiver (unsigned: the broker's login and ACL say who sent them).
//!
//! [`Health`] goes to `{prefix}/up/{receiver}/health` every few minutes at QoS 0 and is at most 300 bytes
//! (tested with every field at its longest). Short keys keep it so; fields that a device cannot read are left
//! out. [`Status`] goes to `{prefix}/up/{receiver}/status`, retained: `online` when the receiver connects, and
//! `offline` as its MQTT last will, which the broker publishes when the link dies.

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, Rejection};
use crate::ids::PlayId;
use crate::Message;

/// Longest software version string.
pub const MAX_VERSION_LEN: usize = 16;

/// The network link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// GSM/GPRS/EDGE.
    #[serde(rename = "2g")]
    G2,
    /// UMTS/HSPA.
    #[serde(rename = "3g")]
    G3,
    /// LTE.
    #[serde(rename = "4g")]
    G4,
    /// Wi-Fi.
    Wifi,
    /// Wired Ethernet.
    Eth,
    /// Could not tell; also what unknown values from a newer receiver parse as.
    #[serde(other)]
    Unknown,
}

/// The amplifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmpState {
    /// Powered down (between plays).
    Off,
    /// Powered up.
    On,
    /// Reported a fault (overheat, short, no load).
    Fault,
    /// No way to read it; also what unknown values parse as.
    #[serde(other)]
    Unknown,
}

/// The loudspeaker line, as the receiver's line monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerState {
    /// Load within range.
    Ok,
    /// No load: a cut cable or a blown horn.
    Open,
    /// Too little resistance: a shorted cable.
    Short,
    /// What unknown values from a newer receiver parse as.
    #[serde(other)]
    Unknown,
}

/// Counters of messages refused since the receiver started, one per [`Rejection`] kind, saturating at 65535.
/// JSON: an array in this order: `[unsigned, bad_signature, unknown_key, expired, replay, malformed,
/// hash_mismatch]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u16; 7]", into = "[u16; 7]")]
pub struct Rejections {
    /// No signature.
    pub unsigned: u16,
    /// Signature did not match.
    pub bad_signature: u16,
    /// Unknown signing key.
    pub unknown_key: u16,
    /// Expired.
    pub expired: u16,
    /// Sequence not above the held one (true replays; duplicates of the held message are not counted).
    pub replay: u16,
    /// Unparseable or invalid.
    pub malformed: u16,
    /// Chunk or file hash mismatch.
    pub hash_mismatch: u16,
}

impl Rejections {
    /// Counts one refused message under its kind. Duplicates of the message already held (`Replay` with
    /// `got == held`, normal with QoS 1 and retained messages) and the caller's own errors are not counted.
    pub fn record(&mut self, error: &ProtocolError) {
        if let ProtocolError::Replay { held, got } = error {
            if held == got {
                return;
            }
        }
        let counter = match error.rejection() {
            None => return,
            Some(Rejection::Unsigned) => &mut self.unsigned,
            Some(Rejection::BadSignature) => &mut self.bad_signature,
            Some(Rejection::UnknownKey) => &mut self.unknown_key,
            Some(Rejection::Expired) => &mut self.expired,
            Some(Rejection::Replay) => &mut self.replay,
            Some(Rejection::Malformed) => &mut self.malformed,
            Some(Rejection::HashMismatch) => &mut self.hash_mismatch,
        };
        *counter = counter.saturating_add(1);
    }
}

impl From<[u16; 7]> for Rejections {
    fn from(a: [u16; 7]) -> Self {
        let [unsigned, bad_signature, unknown_key, expired, replay, malformed, hash_mismatch] = a;
        Rejections { unsigned, bad_signature, unknown_key, expired, replay, malformed, hash_mismatch }
    }
}

impl From<Rejections> for [u16; 7] {
    fn from(r: Rejections) -> Self {
        [r.unsigned, r.bad_signature, r.unknown_key, r.expired, r.replay, r.malformed, r.hash_mismatch]
    }
}

/// The heartbeat. The controller takes its receipt time as the heartbeat's time (QoS 0 messages are not queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Seconds since the receiver service started.
    pub up_s: u32,
    /// Receiver software version (at most 16 characters).
    pub ver: String,
    /// Free disk, MiB.
    pub disk_mb: u32,
    /// Bulletin cache size, MiB.
    pub cache_mb: u32,
    /// CPU temperature, °C, if readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<i8>,
    /// Link type.
    pub link: LinkKind,
    /// Signal strength, dBm, if readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbm: Option<i8>,
    /// Receiver clock minus controller clock, ms (positive: receiver ahead), if measured; saturates at ±24 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<i32>,
    /// Amplifier state.
    pub amp: AmpState,
    /// The play being played now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playing: Option<PlayId>,
    /// Plays of the current plan whose bulletins are all downloaded and verified.
    pub ready: u16,
    /// `seq` of the plan held, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<u64>,
    /// Refused messages by kind.
    pub rej: Rejections,
    /// The loudspeaker line, if the receiver monitors it and it is not `ok` (receivers leave it out when the
    /// line is fine, to keep the heartbeat small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spk: Option<SpeakerState>,
}

impl Message for Health {
    const KIND: &'static str = "health";
    const MAX_BYTES: usize = 300;

    fn validate(&self) -> Result<(), ProtocolError> {
        if self.ver.len() > MAX_VERSION_LEN || !self.ver.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(ProtocolError::invalid(Self::KIND, "version must be 0-16 printable ASCII characters"));
        }
        self.plan.map_or(Ok(()), |seq| crate::check_seq(Self::KIND, "plan", seq))
    }
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// Connected.
    Online,
    /// Disconnected (the last will).
    Offline,
}

/// The retained online/offline status.
///
/// `session` is the same number in the last will and in the `online` message of one MQTT connection (the
/// receiver picks a new one per connection, e.g. its connect time in unix ms), so the controller can ignore a
/// late `offline` will of an older connection that arrives after the new connection's `online`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Online or offline.
    pub state: StatusState,
    /// The connection this status belongs to.
    pub session: u64,
}

impl Message for Status {
    const KIND: &'static str = "status";
    const MAX_BYTES: usize = 128;

    fn validate(&self) -> Result<(), ProtocolError> {
        crate::check_seq(Self::KIND, "session", self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst() -> Health {
        Health {
            up_s: u32::MAX,
            ver: "0.10.100-rc.1234".into(),
            disk_mb: u32::MAX,
            cache_mb: u32::MAX,
            temp_c: Some(i8::MIN),
            link: LinkKind::Unknown,
            dbm: Some(i8::MIN),
            clock_ms: Some(i32::MIN),
            amp: AmpState::Unknown,
            playing: Some(PlayId::new("p".repeat(crate::ids::MAX_PLAY_ID_LEN)).unwrap()),
            ready: u16::MAX,
            plan: Some(crate::MAX_SEQ),
            rej: [u16::MAX; 7].into(),
            spk: None,
        }
    }

    #[test]
    fn worst_case_fits_in_300_bytes() {
        let h = worst();
        assert_eq!(h.ver.len(), MAX_VERSION_LEN);
        let json = h.to_json().unwrap();
        assert!(json.len() <= 300, "{} bytes: {}", json.len(), String::from_utf8_lossy(&json));
        assert_eq!(json.len(), 293, "the worst case changed: update docs/protocol.md");
        assert_eq!(Health::from_json(&json).unwrap(), h);
        // A speaker fault fits too, from a receiver that cannot read the signal strength (Loa's receiver).
        let faulty = Health { spk: Some(SpeakerState::Short), dbm: None, ..h };
        let json = faulty.to_json().unwrap();
        assert_eq!(json.len(), 296, "{}", String::from_utf8_lossy(&json));
        assert_eq!(Health::from_json(&json).unwrap(), faulty);
    }

    #[test]
    fn exact_json_of_a_minimal_heartbeat() {
        let h = Health {
            up_s: 60,
            ver: "0.1.0".into(),
            disk_mb: 900,
            cache_mb: 3,
            temp_c: None,
            link: LinkKind::G2,
            dbm: None,
            clock_ms: None,
            amp: AmpState::Off,
            playing: None,
            ready: 0,
            plan: None,
            rej: Rejections::default(),
            spk: None,
        };
        let json = r#"{"up_s":60,"ver":"0.1.0","disk_mb":900,"cache_mb":3,"link":"2g","amp":"off","ready":0,"rej":[0,0,0,0,0,0,0]}"#;
        assert_eq!(String::from_utf8(h.to_json().unwrap()).unwrap(), json);
        assert_eq!(Health::from_json(json.as_bytes()).unwrap(), h);
        let newer = json.replace("\"2g\"", "\"5g\"").replace("\"off\"", "\"standby\"");
        let parsed = Health::from_json(newer.as_bytes()).unwrap();
        assert_eq!((parsed.link, parsed.amp), (LinkKind::Unknown, AmpState::Unknown));
        let spk = json.replace("]}", "],\"spk\":\"open\"}");
        assert_eq!(Health::from_json(spk.as_bytes()).unwrap().spk, Some(SpeakerState::Open));
        let spk = json.replace("]}", "],\"spk\":\"melted\"}");
        assert_eq!(Health::from_json(spk.as_bytes()).unwrap().spk, Some(SpeakerState::Unknown));
    }

    #[test]
    fn bad_versions_and_sizes() {
        let mut h = worst();
        h.ver = "x".repeat(17);
        assert!(h.to_json().is_err());
        h.ver = "a\"b".into();
        assert!(h.to_json().is_err());
        h.ver = "0.1.0".into();
        h.plan = Some(crate::MAX_SEQ + 1);
        assert!(h.to_json().is_err());
        let big = vec![b' '; 301];
        assert!(matches!(Health::from_json(&big), Err(ProtocolError::TooLarge { .. })));
        assert!(Health::from_json(br#"{"rej":[1,2,3]}"#).is_err());
    }

    #[test]
    fn rejections_count_by_kind() {
        let mut r = Rejections::default();
        r.record(&ProtocolError::BadSignature);
        r.record(&ProtocolError::BadSignature);
        r.record(&ProtocolError::Replay { held: 5, got: 5 });
        r.record(&ProtocolError::Replay { held: 5, got: 4 });
        r.record(&ProtocolError::ChunkHashMismatch { index: 1 });
        r.record(&ProtocolError::InvalidId { what: "x", why: "y" });
        assert_eq!(<[u16; 7]>::from(r), [0, 2, 0, 0, 1, 0, 1]);
        let mut full = Rejections { expired: u16::MAX, ..Rejections::default() };
        full.record(&ProtocolError::Expired { expires_at: crate::Timestamp::EPOCH, now: crate::Timestamp::EPOCH });
        assert_eq!(full.expired, u16::MAX);
    }

    #[test]
    fn status_json() {
        let online = Status { state: StatusState::Online, session: 1_748_736_000_000 };
        assert_eq!(online.to_json().unwrap(), br#"{"state":"online","session":1748736000000}"#);
        let will = br#"{"state":"offline","session":1748736000000}"#;
        assert_eq!(Status::from_json(will).unwrap(), Status { state: StatusState::Offline, ..online });
        assert!(Status::from_json(br#"{"state":"away","session":1}"#).is_err());
    }
}
