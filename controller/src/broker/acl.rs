//! Topic ACLs of the embedded broker, checked by each connection ([`super::connection`]) on CONNECT, SUBSCRIBE
//! and PUBLISH. It lets through:
//!
//! - from the controller's client id: everything;
//! - from a receiver `X` (client id = username = `X`, password checked at login): SUBSCRIBE only to filters
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
    /// The client did not speak MQTT 3.1.1, or did not log in.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl AclRules {
    /// Rules for topics under `topics`, with `controller_id` the controller's client id.
    pub fn new(topics: Topics, controller_id: impl Into<String>) -> Self {
        AclRules { topics, controller_id: controller_id.into() }
    }

    /// The role of a CONNECT's client. Usernames must equal client ids (the login checks the
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
