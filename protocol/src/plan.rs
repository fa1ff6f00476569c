//! The plan: one receiver's schedule for at least the next 48 hours, signed and retained on
//! `{prefix}/rx/{receiver}/plan`. A new plan replaces the old one whole; `seq` rises with every plan for the
//! receiver (the receiver refuses a plan whose `seq` is not above the one it holds).
//!
//! Each play names one or more bulletins played back to back (the language variants of one announcement, in
//! the village's language order, resolved by the controller), `times` over, starting at `at` (UTC). If the
//! receiver cannot start by `at + late_s` it reports the play missed instead of playing it late.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::{BulletinId, PlayId, ReceiverId};
use crate::manifest::Tier;
use crate::signing::Signable;
use crate::time::Timestamp;
use crate::Message;

/// A plan must cover at least this much time from `from` to `until`: 48 hours, so that a receiver cut off for
/// two days still plays everything that was scheduled.
pub const MIN_HORIZON_MS: i64 = 48 * 3600 * 1000;
/// Most plays in one plan.
pub const MAX_PLAYS: usize = 1000;
/// Most bulletins in one play (language variants).
pub const MAX_VARIANTS: usize = 8;
/// Most repetitions of one play.
pub const MAX_TIMES: u8 = 5;
/// Longest allowed lateness, seconds (one day).
pub const MAX_LATE_S: u32 = 86_400;
/// Longest silence between repeats, seconds (ten minutes).
pub const MAX_GAP_S: u16 = 600;

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// One scheduled play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPlay {
    /// Unique within the plan; play reports refer to it.
    pub id: PlayId,
    /// Start, UTC.
    pub at: Timestamp,
    /// Bulletins played back to back, in this order (1 to [`MAX_VARIANTS`]).
    pub bulletins: Vec<BulletinId>,
    /// How many times the whole sequence plays, back to back (1 to [`MAX_TIMES`]).
    pub times: u8,
    /// Its tier: a higher tier preempts a lower one that is playing.
    pub tier: Tier,
    /// Volume, percent (0 to 100), scaled by the receiver's master volume.
    pub volume: u8,
    /// How late it may still start, seconds; after `at + late_s` it is missed.
    pub late_s: u32,
    /// Silence between repeats, seconds (0 to [`MAX_GAP_S`]): the receiver plays the bulletins, the gap, the
    /// bulletins, ... `times` times. Left out of the JSON when 0 (back to back); receivers that predate it
    /// ignore it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_s: u16,
}

impl PlannedPlay {
    /// The last instant it may start.
    pub fn latest_start(&self) -> Timestamp {
        self.at.saturating_add_ms(i64::from(self.late_s) * 1000)
    }
}

/// A receiver's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The receiver it is for.
    pub receiver: ReceiverId,
    /// Rises with every plan for this receiver.
    pub seq: u64,
    /// Start of the period it covers.
    pub from: Timestamp,
    /// End of the period it covers (at least 48 h after `from`); plays after it come in the next plan.
    pub until: Timestamp,
    /// The plays, in strictly increasing `at` order.
    pub plays: Vec<PlannedPlay>,
    /// The session of the receiver's `online` status this plan answers (added in v1; only on the live plan the
    /// controller sends when a receiver comes online). The controller signs it after that status arrived, so
    /// the receiver measures its clock by the round trip. Left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_session: Option<u64>,
}

impl Message for Plan {
    const KIND: &'static str = "plan";
    const MAX_BYTES: usize = 256 * 1024;

    fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: String| Err(ProtocolError::invalid(Self::KIND, why));
        crate::check_seq(Self::KIND, "seq", self.seq)?;
        if let Some(session) = self.answers_session {
            crate::check_seq(Self::KIND, "answers_session", session)?;
        }
        if self.until.ms_since(self.from) < MIN_HORIZON_MS {
            return bad("covers less than 48 hours".into());
        }
        if self.plays.len() > MAX_PLAYS {
            return bad(format!("more than {MAX_PLAYS} plays"));
        }
        let mut ids = BTreeSet::new();
        for p in &self.plays {
            if !ids.insert(&p.id) {
                return bad(format!("play id {} twice", p.id));
            }
            if p.at < self.from || p.at > self.until {
                return bad(format!("play {} is outside from..until", p.id));
            }
            if p.bulletins.is_empty() || p.bulletins.len() > MAX_VARIANTS {
                return bad(format!("play {} has {} bulletins", p.id, p.bulletins.len()));
            }
            if !(1..=MAX_TIMES).contains(&p.times) {
                return bad(format!("play {} plays {} times", p.id, p.times));
            }
            if p.volume > 100 {
                return bad(format!("play {} volume {} is above 100", p.id, p.volume));
            }
            if p.late_s > MAX_LATE_S {
                return bad(format!("play {} may be {} s late", p.id, p.late_s));
            }
            if p.gap_s > MAX_GAP_S {
                return bad(format!("play {} has a gap of {} s between repeats", p.id, p.gap_s));
            }
        }
        if self.plays.windows(2).any(|w| w[0].at >= w[1].at) {
            return bad("plays are not in strictly increasing time order".into());
        }
        Ok(())
    }
}

impl Signable for Plan {
    fn sequence(&self) -> Option<u64> {
        Some(self.seq)
    }

    fn addressee(&self) -> Option<&ReceiverId> {
        Some(&self.receiver)
    }
}

impl Plan {
    /// Every bulletin the plan needs, once each: what the receiver must have downloaded.
    pub fn bulletins(&self) -> BTreeSet<&BulletinId> {
        self.plays.iter().flat_map(|p| &p.bulletins).collect()
    }

    /// The plays that may still start at `now` or later (latest start not passed), in order.
    pub fn upcoming(&self, now: Timestamp) -> impl Iterator<Item = &PlannedPlay> {
        self.plays.iter().filter(move |p| p.latest_start() >= now)
    }

    /// The play with this id.
    pub fn play(&self, id: &PlayId) -> Option<&PlannedPlay> {
        self.plays.iter().find(|p| p.id == *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_748_736_000_000;

    fn play(id: &str, at_min: i64, bulletins: &[&str]) -> PlannedPlay {
        PlannedPlay {
            id: PlayId::new(id).unwrap(),
            at: Timestamp::from_unix_ms(T0 + at_min * 60_000).unwrap(),
            bulletins: bulletins.iter().map(|b| BulletinId::new(*b).unwrap()).collect(),
            times: 1,
            tier: Tier::Normal,
            volume: 80,
            late_s: 900,
            gap_s: 0,
        }
    }

    fn plan() -> Plan {
        Plan {
            receiver: ReceiverId::new("rx1").unwrap(),
            seq: 3,
            from: Timestamp::from_unix_ms(T0).unwrap(),
            until: Timestamp::from_unix_ms(T0 + MIN_HORIZON_MS).unwrap(),
            plays: vec![play("p1", 30, &["b-vi", "b-hmn"]), play("p2", 90, &["b-vi"])],
            answers_session: None,
        }
    }

    #[test]
    fn exact_json() {
        let json = String::from_utf8(plan().to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"receiver":"rx1","seq":3,"from":1748736000000,"until":1748908800000,"plays":[{"id":"p1","at":1748737800000,"bulletins":["b-vi","b-hmn"],"times":1,"tier":"normal","volume":80,"late_s":900},{"id":"p2","at":1748741400000,"bulletins":["b-vi"],"times":1,"tier":"normal","volume":80,"late_s":900}]}"#
        );
        assert_eq!(Plan::from_json(json.as_bytes()).unwrap(), plan());
        // A gap between repeats is sent only when set.
        let mut gapped = plan();
        gapped.plays[1].gap_s = 5;
        let json = String::from_utf8(gapped.to_json().unwrap()).unwrap();
        assert!(json.ends_with(r#""late_s":900,"gap_s":5}]}"#), "{json}");
        assert_eq!(Plan::from_json(json.as_bytes()).unwrap(), gapped);
        // The session answered is sent only on the live plan that answers an `online`.
        let answer = Plan { answers_session: Some(1_748_736_000_000), ..plan() };
        let json = String::from_utf8(answer.to_json().unwrap()).unwrap();
        assert!(json.ends_with(r#"}],"answers_session":1748736000000}"#), "{json}");
        assert_eq!(Plan::from_json(json.as_bytes()).unwrap(), answer);
        let too_big = Plan { answers_session: Some(crate::MAX_SEQ + 1), ..plan() };
        assert!(Plan::from_json(&serde_json::to_vec(&too_big).unwrap()).is_err());
    }

    #[test]
    fn helpers() {
        let p = plan();
        let needed: Vec<&str> = p.bulletins().into_iter().map(BulletinId::as_str).collect();
        assert_eq!(needed, ["b-hmn", "b-vi"]);
        let now = Timestamp::from_unix_ms(T0 + 46 * 60_000).unwrap(); // p1 started 16 min ago, 15 min allowed
        let ids: Vec<&str> = p.upcoming(now).map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["p2"]);
        assert_eq!(p.play(&PlayId::new("p2").unwrap()).map(|x| x.bulletins.len()), Some(1));
        assert_eq!(p.sequence(), Some(3));
    }

    #[test]
    fn rules_are_enforced() {
        type Breaker = Box<dyn Fn(&mut Plan)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("short horizon", Box::new(|p| p.until = p.until.saturating_add_ms(-1))),
            ("duplicate id", Box::new(|p| p.plays[1].id = p.plays[0].id.clone())),
            ("unsorted", Box::new(|p| p.plays.swap(0, 1))),
            ("same time", Box::new(|p| p.plays[1].at = p.plays[0].at)),
            ("before from", Box::new(|p| p.plays[0].at = p.from.saturating_add_ms(-1))),
            ("after until", Box::new(|p| p.plays[1].at = p.until.saturating_add_ms(1))),
            ("no bulletins", Box::new(|p| p.plays[0].bulletins.clear())),
            ("too many variants", Box::new(|p| p.plays[0].bulletins = vec![BulletinId::new("b").unwrap(); 9])),
            ("zero times", Box::new(|p| p.plays[0].times = 0)),
            ("too many times", Box::new(|p| p.plays[0].times = MAX_TIMES + 1)),
            ("loud", Box::new(|p| p.plays[0].volume = 101)),
            ("very late", Box::new(|p| p.plays[0].late_s = MAX_LATE_S + 1)),
            ("long gap", Box::new(|p| p.plays[0].gap_s = MAX_GAP_S + 1)),
        ];
        for (name, break_it) in cases {
            let mut p = plan();
            break_it(&mut p);
            assert!(p.validate().is_err(), "{name}");
            assert!(p.to_json().is_err(), "{name}");
        }
        let mut empty = plan();
        empty.plays.clear();
        assert!(empty.validate().is_ok());
    }

    #[test]
    fn malformed_json_is_an_error() {
        for json in ["", "{}", "[]", r#"{"receiver":"rx1"}"#, "null", "{\"receiver\":\"a/b\"}"] {
            assert!(Plan::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }
}
