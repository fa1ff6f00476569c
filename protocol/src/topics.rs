//! The MQTT topic tree. No other crate formats or splits a topic string: they call [`Topics`].
//!
//! Every topic sits under `{root}/v1`, where `root` is configurable (default `loa`) and `v1` is
//! [`crate::PROTOCOL_VERSION`]. Downlink (controller → one receiver) is under `{prefix}/rx/{receiver}/...`;
//! uplink (receiver → controller) is under `{prefix}/up/{receiver}/...`. So the broker ACL for a receiver whose
//! MQTT username is its [`ReceiverId`] is two lines (mosquitto `pattern` syntax, `%u` = username):
//!
//! ```text
//! pattern read  loa/v1/rx/%u/#
//! pattern write loa/v1/up/%u/#
//! ```
//!
//! and the controller reads `loa/v1/up/#` and writes `loa/v1/rx/#`. Nothing is shared between receivers on the
//! wire: the controller fans a manifest out to each receiver's own topic, which costs broker memory, not link
//! bytes (each village downloads it once either way).

use crate::error::{clip, ProtocolError};
use crate::ids::{BulletinId, KeyId, ReceiverId};

/// Longest topic root.
pub const MAX_ROOT_LEN: usize = 100;

/// MQTT quality of service for a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// QoS 0: the pull loop or the next heartbeat is the retry.
    AtMostOnce = 0,
    /// QoS 1: the broker keeps it for an offline receiver with a persistent session.
    AtLeastOnce = 1,
}

/// Which side publishes on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Controller → one receiver (`{prefix}/rx/...`).
    Down,
    /// One receiver → controller (`{prefix}/up/...`).
    Up,
}

/// One concrete topic, parsed. Every variant names the receiver it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `rx/{receiver}/plan`: the receiver's signed [`crate::plan::Plan`]. Retained.
    Plan(ReceiverId),
    /// `rx/{receiver}/manifest/{bulletin}`: a signed [`crate::manifest::Manifest`]. Retained until the bulletin
    /// expires; the controller then clears it with an empty retained message.
    Manifest(ReceiverId, BulletinId),
    /// `rx/{receiver}/chunk`: binary [`crate::chunk::ChunkFrame`]s answering that receiver's requests.
    Chunks(ReceiverId),
    /// `rx/{receiver}/cmd`: a signed [`crate::command::Command`].
    Command(ReceiverId),
    /// `rx/{receiver}/ack`: a [`crate::report::ReportAck`].
    ReportAck(ReceiverId),
    /// `rx/{receiver}/key/{kid}`: a signed [`crate::key_announcement::KeyAnnouncement`] of key `kid`. Retained.
    Key(ReceiverId, KeyId),
    /// `up/{receiver}/status`: [`crate::health::Status`], online or offline (the MQTT last will). Retained.
    Status(ReceiverId),
    /// `up/{receiver}/health`: a [`crate::health::Health`] heartbeat.
    Health(ReceiverId),
    /// `up/{receiver}/chunk-req`: a [`crate::request::ChunkRequest`].
    ChunkRequest(ReceiverId),
    /// `up/{receiver}/report`: a [`crate::report::ReportBatch`].
    Reports(ReceiverId),
}

impl Topic {
    /// The receiver the topic belongs to (the sender for uplink, the addressee for downlink).
    pub fn receiver(&self) -> &ReceiverId {
        match self {
            Topic::Plan(r)
            | Topic::Manifest(r, _)
            | Topic::Chunks(r)
            | Topic::Command(r)
            | Topic::ReportAck(r)
            | Topic::Key(r, _)
            | Topic::Status(r)
            | Topic::Health(r)
            | Topic::ChunkRequest(r)
            | Topic::Reports(r) => r,
        }
    }

    /// Who publishes on it.
    pub fn direction(&self) -> Direction {
        match self {
            Topic::Plan(_)
            | Topic::Manifest(..)
            | Topic::Chunks(_)
            | Topic::Command(_)
            | Topic::ReportAck(_)
            | Topic::Key(..) => Direction::Down,
            Topic::Status(_) | Topic::Health(_) | Topic::ChunkRequest(_) | Topic::Reports(_) => Direction::Up,
        }
    }

    /// The QoS to publish with.
    pub fn qos(&self) -> QoS {
        match self {
            Topic::Chunks(_) | Topic::ChunkRequest(_) | Topic::Health(_) => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    /// Whether to publish retained.
    pub fn retained(&self) -> bool {
        matches!(self, Topic::Plan(_) | Topic::Manifest(..) | Topic::Status(_) | Topic::Key(..))
    }

    /// The leaf after `{prefix}/{rx|up}/{receiver}/`.
    fn leaf(&self) -> String {
        match self {
            Topic::Plan(_) => "plan".into(),
            Topic::Manifest(_, b) => format!("manifest/{b}"),
            Topic::Chunks(_) => "chunk".into(),
            Topic::Command(_) => "cmd".into(),
            Topic::ReportAck(_) => "ack".into(),
            Topic::Key(_, kid) => format!("key/{kid}"),
            Topic::Status(_) => "status".into(),
            Topic::Health(_) => "health".into(),
            Topic::ChunkRequest(_) => "chunk-req".into(),
            Topic::Reports(_) => "report".into(),
        }
    }
}

/// Builds and parses topics under one prefix `{root}/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    /// Root `loa`: prefix `loa/v1`.
    fn default() -> Self {
        Topics { prefix: format!("loa/v{}", crate::PROTOCOL_VERSION) }
    }
}

impl Topics {
    /// Topics under `{root}/v1`. `root` is one or more `/`-separated levels, each made of `A-Z a-z 0-9 _ -`
    /// (so no wildcard, no `$`, no empty level), at most [`MAX_ROOT_LEN`] characters in all.
    pub fn new(root: &str) -> Result<Self, ProtocolError> {
        let what = "topic root";
        if root.len() > MAX_ROOT_LEN {
            return Err(ProtocolError::InvalidId { what, why: "too long" });
        }
        for level in root.split('/') {
            if level.is_empty() {
                return Err(ProtocolError::InvalidId { what, why: "empty level" });
            }
            if !level.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(ProtocolError::InvalidId { what, why: "only A-Z a-z 0-9 _ - and / are allowed" });
            }
        }
        Ok(Topics { prefix: format!("{root}/v{}", crate::PROTOCOL_VERSION) })
    }

    /// `{root}/v1`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic string of `topic`.
    pub fn topic(&self, topic: &Topic) -> String {
        let side = match topic.direction() {
            Direction::Down => "rx",
            Direction::Up => "up",
        };
        format!("{}/{side}/{}/{}", self.prefix, topic.receiver(), topic.leaf())
    }

    /// `{prefix}/rx/{receiver}/plan`.
    pub fn plan(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Plan(receiver.clone()))
    }

    /// `{prefix}/rx/{receiver}/manifest/{bulletin}`.
    pub fn manifest(&self, receiver: &ReceiverId, bulletin: &BulletinId) -> String {
        self.topic(&Topic::Manifest(receiver.clone(), bulletin.clone()))
    }

    /// `{prefix}/rx/{receiver}/chunk`.
    pub fn chunks(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Chunks(receiver.clone()))
    }

    /// `{prefix}/rx/{receiver}/cmd`.
    pub fn command(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Command(receiver.clone()))
    }

    /// `{prefix}/rx/{receiver}/ack`.
    pub fn report_ack(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::ReportAck(receiver.clone()))
    }

    /// `{prefix}/rx/{receiver}/key/{kid}`.
    pub fn key(&self, receiver: &ReceiverId, kid: &KeyId) -> String {
        self.topic(&Topic::Key(receiver.clone(), kid.clone()))
    }

    /// `{prefix}/up/{receiver}/status`: also the topic of the receiver's MQTT last will.
    pub fn status(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Status(receiver.clone()))
    }

    /// `{prefix}/up/{receiver}/health`.
    pub fn health(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Health(receiver.clone()))
    }

    /// `{prefix}/up/{receiver}/chunk-req`.
    pub fn chunk_request(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::ChunkRequest(receiver.clone()))
    }

    /// `{prefix}/up/{receiver}/report`.
    pub fn reports(&self, receiver: &ReceiverId) -> String {
        self.topic(&Topic::Reports(receiver.clone()))
    }

    /// What a receiver subscribes to: `{prefix}/rx/{receiver}/#` (QoS 1).
    pub fn receiver_subscription(&self, receiver: &ReceiverId) -> String {
        format!("{}/rx/{receiver}/#", self.prefix)
    }

    /// Every receiver's chunk topic, as a filter: `{prefix}/rx/+/chunk` (for broker settings per topic).
    pub fn chunks_filter(&self) -> String {
        format!("{}/rx/+/chunk", self.prefix)
    }

    /// What the controller subscribes to: `{prefix}/up/+/#` (QoS 1).
    pub fn controller_subscription(&self) -> String {
        format!("{}/up/+/#", self.prefix)
    }

    /// Parses an incoming topic. Errors (never panics) for anything that [`Topics::topic`] would not produce.
    pub fn parse(&self, topic: &str) -> Result<Topic, ProtocolError> {
        let bad = |why| ProtocolError::BadTopic { topic: clip(topic, 200), why };
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| bad("wrong prefix"))?;
        let levels: Vec<&str> = rest.split('/').collect();
        let (side, receiver, leaf) = match levels.as_slice() {
            [side, receiver, leaf @ ..] if !leaf.is_empty() => (*side, *receiver, leaf),
            _ => return Err(bad("too few levels")),
        };
        let receiver = ReceiverId::new(receiver).map_err(|_| bad("bad receiver id"))?;
        Ok(match (side, leaf) {
            ("rx", ["plan"]) => Topic::Plan(receiver),
            ("rx", ["manifest", bulletin]) => {
                Topic::Manifest(receiver, BulletinId::new(*bulletin).map_err(|_| bad("bad bulletin id"))?)
            }
            ("rx", ["chunk"]) => Topic::Chunks(receiver),
            ("rx", ["cmd"]) => Topic::Command(receiver),
            ("rx", ["ack"]) => Topic::ReportAck(receiver),
            ("rx", ["key", kid]) => Topic::Key(receiver, KeyId::new(*kid).map_err(|_| bad("bad key id"))?),
            ("up", ["status"]) => Topic::Status(receiver),
            ("up", ["health"]) => Topic::Health(receiver),
            ("up", ["chunk-req"]) => Topic::ChunkRequest(receiver),
            ("up", ["report"]) => Topic::Reports(receiver),
            _ => return Err(bad("unknown topic")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx() -> ReceiverId {
        ReceiverId::new("laocai-01").unwrap()
    }

    fn all(r: &ReceiverId) -> Vec<Topic> {
        let b = BulletinId::new("b1").unwrap();
        vec![
            Topic::Plan(r.clone()),
            Topic::Manifest(r.clone(), b),
            Topic::Chunks(r.clone()),
            Topic::Command(r.clone()),
            Topic::ReportAck(r.clone()),
            Topic::Status(r.clone()),
            Topic::Health(r.clone()),
            Topic::ChunkRequest(r.clone()),
            Topic::Reports(r.clone()),
            Topic::Key(r.clone(), crate::ids::KeyId::new("ctl-1").unwrap()),
        ]
    }

    #[test]
    fn exact_strings() {
        let t = Topics::default();
        let r = rx();
        assert_eq!(t.plan(&r), "loa/v1/rx/laocai-01/plan");
        assert_eq!(t.manifest(&r, &BulletinId::new("b1").unwrap()), "loa/v1/rx/laocai-01/manifest/b1");
        assert_eq!(t.chunks(&r), "loa/v1/rx/laocai-01/chunk");
        assert_eq!(t.command(&r), "loa/v1/rx/laocai-01/cmd");
        assert_eq!(t.report_ack(&r), "loa/v1/rx/laocai-01/ack");
        assert_eq!(t.status(&r), "loa/v1/up/laocai-01/status");
        assert_eq!(t.health(&r), "loa/v1/up/laocai-01/health");
        assert_eq!(t.chunk_request(&r), "loa/v1/up/laocai-01/chunk-req");
        assert_eq!(t.reports(&r), "loa/v1/up/laocai-01/report");
        assert_eq!(t.key(&r, &crate::ids::KeyId::new("ctl-1").unwrap()), "loa/v1/rx/laocai-01/key/ctl-1");
        assert_eq!(t.receiver_subscription(&r), "loa/v1/rx/laocai-01/#");
        assert_eq!(t.controller_subscription(), "loa/v1/up/+/#");
    }

    #[test]
    fn every_topic_parses_back_and_sits_under_its_acl() {
        for root in ["loa", "vn/laocai"] {
            let t = Topics::new(root).unwrap();
            let r = rx();
            for topic in all(&r) {
                let s = t.topic(&topic);
                assert_eq!(t.parse(&s).unwrap(), topic);
                let acl = match topic.direction() {
                    Direction::Down => format!("{root}/v1/rx/{r}/"),
                    Direction::Up => format!("{root}/v1/up/{r}/"),
                };
                assert!(s.starts_with(&acl), "{s}");
            }
        }
    }

    #[test]
    fn policy_table() {
        let r = rx();
        let retained: Vec<bool> = all(&r).iter().map(Topic::retained).collect();
        assert_eq!(retained, [true, true, false, false, false, true, false, false, false, true]);
        let qos: Vec<u8> = all(&r).iter().map(|t| t.qos() as u8).collect();
        assert_eq!(qos, [1, 1, 0, 1, 1, 1, 0, 0, 1, 1]);
    }

    #[test]
    fn bad_roots_are_refused() {
        for root in ["", "/loa", "loa/", "a//b", "lo+a", "#", "$SYS", "l o a", &"x".repeat(MAX_ROOT_LEN + 1)] {
            assert!(Topics::new(root).is_err(), "{root:?}");
        }
    }

    #[test]
    fn bad_topics_are_errors() {
        let t = Topics::default();
        for s in [
            "",
            "loa",
            "loa/v1",
            "loa/v1/",
            "loa/v2/rx/a/plan",
            "loa/v1x/rx/a/plan",
            "other/v1/rx/a/plan",
            "loa/v1/rx/a",
            "loa/v1/rx/a/plan/extra",
            "loa/v1/up/a/plan",
            "loa/v1/rx/a/status",
            "loa/v1/rx//plan",
            "loa/v1/rx/+/plan",
            "loa/v1/rx/a/manifest",
            "loa/v1/rx/a/manifest/",
            "loa/v1/rx/a/manifest/x#",
            "loa/v1/xx/a/plan",
            "loa/v1/rx/a/key",
            "loa/v1/rx/a/key/x+",
            "loa/v1/up/a/key/k",
        ] {
            assert!(matches!(t.parse(s), Err(ProtocolError::BadTopic { .. })), "{s:?}");
        }
    }
}
