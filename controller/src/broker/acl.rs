//! Topic ACLs of the embedded broker, enforced in the relay in front of rumqttd (rumqttd 0.20 checks logins
//! but has no per-client topic permissions: its only hook is the `(client id, user, password) -> bool` login
//! handler). The relay reads the client's packets with [`super::packet`] and lets through:
//!
//! - from the controller's client id: everything;
//! - from a receiver `X` (client id = username = `X`, password checked by rumqttd): SUBSCRIBE only to filters
//!   that match nothing outside `{prefix}/rx/X` (so no `#`, no `+` in the receiver position, no other id, no
//!   `$share/...`), PUBLISH (and a last will) only on `{prefix}/up/X/{status,health,chunk-req,report}` — exactly
//!   the topics [`Topics::parse`] knows as uplink of `X`. There are no area-level topics: everything a receiver
//!   reads is on its own topics.
//!
//! MQTT 3.1.1 has no way to refuse one PUBLISH, so any violation closes the connection (a SUBSCRIBE is refused
//! the same way rather than with a 0x80 SUBACK: a receiver that asks for another's topics is not one of ours, and
//! a closed connection is the stronger answer). Each violation is logged with the client and topic and counted
//! in [`super::WireCounters::acl_denied`].

use loa_protocol::{Direction, Topics};

use super::packet::{Inspected, PacketError};

/// Who a connection is, from its CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The controller's own client: no limits.
    Controller,
    /// A receiver, by id.
    Receiver(String),
}

/// The permissions of one broker.
#[derive(Debug, Clone)]
pub struct AclRules {
    topics: Topics,
    controller_id: String,
}

/// Why a packet is not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A receiver asked for something it may not have. Counted as an ACL violation.
    #[error("{client} may not {action} {topic:?}")]
    Denied {
        /// The client id.
        client: String,
        /// `subscribe to`, `publish on` or `leave a will on`.
        action: &'static str,
        /// The topic or filter.
        topic: String,
    },
    /// The client did not speak MQTT 3.1.1 as the relay understands it (rumqttd would drop it too).
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<PacketError> for Refusal {
    fn from(e: PacketError) -> Self {
        Refusal::Protocol(e.to_string())
    }
}

impl AclRules {
    /// Rules for topics under `topics`, with `controller_id` the controller's client id.
    pub fn new(topics: Topics, controller_id: impl Into<String>) -> Self {
        AclRules { topics, controller_id: controller_id.into() }
    }

    /// The role of a CONNECT's client. Usernames must equal client ids (rumqttd's login handler checks the
    /// password); a client id that cannot be a receiver id is refused here already.
    pub fn role(&self, client_id: &str, username: Option<&str>) -> Result<Role, Refusal> {
        if username != Some(client_id) {
            return Err(Refusal::Protocol("the username must be the client id".into()));
        }
        if client_id == self.controller_id {
            return Ok(Role::Controller);
        }
        loa_protocol::ReceiverId::new(client_id)
            .map(|_| Role::Receiver(client_id.to_string()))
            .map_err(|_| Refusal::Protocol(format!("{client_id:?} is not a receiver id")))
    }

    /// Whether `role` may subscribe to `filter`: it must match nothing outside `{prefix}/rx/{receiver}`.
    pub fn may_subscribe(&self, role: &Role, filter: &str) -> bool {
        let id = match role {
            Role::Controller => return true,
            Role::Receiver(id) => id,
        };
        let mut levels = filter.split('/');
        let mut own = self.topics.prefix().split('/').chain(["rx", id.as_str()]);
        // Every level of the receiver's own root must be there, literally (a wildcard would reach further).
        own.all(|want| levels.next() == Some(want))
    }

    /// Whether `role` may publish on `topic`: one of the receiver's own uplink topics.
    pub fn may_publish(&self, role: &Role, topic: &str) -> bool {
        match role {
            Role::Controller => true,
            Role::Receiver(id) => self
                .topics
                .parse(topic)
                .is_ok_and(|t| t.direction() == Direction::Up && t.receiver().as_str() == id.as_str()),
        }
    }
}

/// The ACL state of one connection: waits for CONNECT, then checks each packet against the client's role.
#[derive(Debug)]
pub struct Gate {
    rules: std::sync::Arc<AclRules>,
    role: Option<Role>,
}

impl Gate {
    /// A gate for a new connection.
    pub fn new(rules: std::sync::Arc<AclRules>) -> Self {
        Gate { rules, role: None }
    }

    /// The client's role, once it has sent CONNECT.
    pub fn role(&self) -> Option<&Role> {
        self.role.as_ref()
    }

    /// Checks one whole packet from the client; `Ok` means pass it on unchanged.
    pub fn check(&mut self, packet: &[u8]) -> Result<(), Refusal> {
        if self.role == Some(Role::Controller) {
            return Ok(());
        }
        let inspected = super::packet::inspect(packet)?;
        let Some(role) = &self.role else {
            let Inspected::Connect { client_id, username, will_topic } = inspected else {
                return Err(Refusal::Protocol("the first packet must be CONNECT".into()));
            };
            let role = self.rules.role(&client_id, username.as_deref())?;
            if let Some(topic) = will_topic {
                if !self.rules.may_publish(&role, &topic) {
                    return Err(Refusal::Denied { client: client_id, action: "leave a will on", topic });
                }
            }
            self.role = Some(role);
            return Ok(());
        };
        let client = match role {
            Role::Controller => return Ok(()),
            Role::Receiver(id) => id,
        };
        match inspected {
            Inspected::Connect { .. } => Err(Refusal::Protocol("a second CONNECT".into())),
            Inspected::Subscribe { filters } => {
                match filters.into_iter().find(|f| !self.rules.may_subscribe(role, f)) {
                    Some(topic) => Err(Refusal::Denied { client: client.clone(), action: "subscribe to", topic }),
                    None => Ok(()),
                }
            }
            Inspected::Publish { topic } if !self.rules.may_publish(role, &topic) => {
                Err(Refusal::Denied { client: client.clone(), action: "publish on", topic })
            }
            Inspected::Publish { .. } | Inspected::Other(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::tests::{connect_packet, publish_packet, subscribe_packet};
    use super::*;
    use std::sync::Arc;

    const A: &str = "rx-aaaaaaaaaaaa";
    const B: &str = "rx-bbbbbbbbbbbb";

    fn rules(root: &str) -> AclRules {
        AclRules::new(Topics::new(root).unwrap(), "loa-controller")
    }

    #[test]
    fn receivers_subscribe_only_under_their_own_root() {
        let r = rules("loa");
        let a = Role::Receiver(A.into());
        for ok in [
            "loa/v1/rx/rx-aaaaaaaaaaaa/#",
            "loa/v1/rx/rx-aaaaaaaaaaaa/plan",
            "loa/v1/rx/rx-aaaaaaaaaaaa/manifest/+",
            "loa/v1/rx/rx-aaaaaaaaaaaa/+",
            "loa/v1/rx/rx-aaaaaaaaaaaa",
        ] {
            assert!(r.may_subscribe(&a, ok), "{ok}");
        }
        for bad in [
            "#",
            "+/#",
            "loa/#",
            "loa/v1/#",
            "loa/v1/rx/#",
            "loa/v1/rx/+/#",
            "loa/v1/rx/+/plan",
            "loa/v1/+/rx-aaaaaaaaaaaa/#",
            "loa/+/rx/rx-aaaaaaaaaaaa/#",
            "+/v1/rx/rx-aaaaaaaaaaaa/#",
            "loa/v1/rx/rx-bbbbbbbbbbbb/#",
            "loa/v1/rx/rx-bbbbbbbbbbbb/plan",
            "loa/v1/up/rx-aaaaaaaaaaaa/#",
            "loa/v1/up/+/#",
            "loa/v1/rx/rx-aaaaaaaaaaaa#",
            "loa/v1/rx/rx-aaaaaaaaaaa+",
            "$share/g/loa/v1/rx/rx-aaaaaaaaaaaa/#",
            "$SYS/#",
            "loa/v1/rx",
            "",
        ] {
            assert!(!r.may_subscribe(&a, bad), "{bad}");
        }
        assert!(r.may_subscribe(&Role::Controller, "#"));
        let deep = rules("vn/laocai");
        assert!(deep.may_subscribe(&a, "vn/laocai/v1/rx/rx-aaaaaaaaaaaa/#"));
        assert!(!deep.may_subscribe(&a, "vn/+/v1/rx/rx-aaaaaaaaaaaa/#"));
        assert!(!deep.may_subscribe(&a, "loa/v1/rx/rx-aaaaaaaaaaaa/#"));
    }

    #[test]
    fn receivers_publish_only_their_own_uplink() {
        let r = rules("loa");
        let a = Role::Receiver(A.into());
        for leaf in ["status", "health", "chunk-req", "report"] {
            assert!(r.may_publish(&a, &format!("loa/v1/up/{A}/{leaf}")), "{leaf}");
            assert!(!r.may_publish(&a, &format!("loa/v1/up/{B}/{leaf}")), "{leaf}");
        }
        for bad in [
            format!("loa/v1/rx/{A}/plan"),
            format!("loa/v1/rx/{B}/cmd"),
            format!("loa/v1/rx/{A}/manifest/b-0123456789ab-vi"),
            format!("loa/v1/up/{A}/other"),
            format!("loa/v1/up/{A}/status/x"),
            format!("loa/v2/up/{A}/status"),
            format!("other/v1/up/{A}/status"),
            "loa/v1/up/+/status".into(),
            "#".into(),
            String::new(),
        ] {
            assert!(!r.may_publish(&a, &bad), "{bad}");
        }
        assert!(r.may_publish(&Role::Controller, &format!("loa/v1/rx/{B}/plan")));
    }

    #[test]
    fn gate_follows_the_connection() {
        let rules = Arc::new(rules("loa"));
        // A receiver: its own traffic passes, another's topics are refused.
        let mut g = Gate::new(rules.clone());
        assert!(matches!(g.check(&subscribe_packet(&["#"])), Err(Refusal::Protocol(_))));
        let will = format!("loa/v1/up/{A}/status");
        g.check(&connect_packet(A, Some(A), Some(&will))).unwrap();
        assert_eq!(g.role(), Some(&Role::Receiver(A.into())));
        g.check(&subscribe_packet(&[&format!("loa/v1/rx/{A}/#")])).unwrap();
        g.check(&publish_packet(&format!("loa/v1/up/{A}/report"), b"{}")).unwrap();
        g.check(&[0xc0, 0]).unwrap();
        let refused = g.check(&subscribe_packet(&[&format!("loa/v1/rx/{A}/#"), &format!("loa/v1/rx/{B}/plan")]));
        assert_eq!(
            refused,
            Err(Refusal::Denied { client: A.into(), action: "subscribe to", topic: format!("loa/v1/rx/{B}/plan") })
        );
        let refused = g.check(&publish_packet(&format!("loa/v1/up/{B}/report"), b"{}"));
        assert!(matches!(refused, Err(Refusal::Denied { action: "publish on", .. })), "{refused:?}");
        assert!(matches!(g.check(&connect_packet(B, Some(B), None)), Err(Refusal::Protocol(_))));

        // A will on another receiver's status, a username that is not the client id, a bad id.
        let mut g = Gate::new(rules.clone());
        let refused = g.check(&connect_packet(A, Some(A), Some(&format!("loa/v1/up/{B}/status"))));
        assert!(matches!(refused, Err(Refusal::Denied { action: "leave a will on", .. })), "{refused:?}");
        assert!(Gate::new(rules.clone()).check(&connect_packet(A, Some(B), None)).is_err());
        assert!(Gate::new(rules.clone()).check(&connect_packet(A, None, None)).is_err());
        assert!(Gate::new(rules.clone()).check(&connect_packet("a/+", Some("a/+"), None)).is_err());

        // The controller: anything.
        let mut g = Gate::new(rules);
        g.check(&connect_packet("loa-controller", Some("loa-controller"), None)).unwrap();
        g.check(&subscribe_packet(&["#"])).unwrap();
        g.check(&publish_packet(&format!("loa/v1/rx/{B}/plan"), b"x")).unwrap();
        g.check(&[0xff, 0xff]).unwrap();
    }
}
