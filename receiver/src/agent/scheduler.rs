//! The play scheduler, as pure functions of the plan, the (corrected) time and what is cached, so they need
//! neither a broker nor a real clock.
//!
//! [`decide`] looks at every play of the plan not yet handled: one due within `lead_ms` whose variants are all
//! cached becomes [`Action::Play`] (the player gets it ahead of time and starts it exactly at `at`); one still
//! not ready after `at + late_s` becomes [`Action::Missed`] (`not_downloaded`, or `expired` when every variant's
//! manifest expired before the play). Variants whose manifest expired before `at` are left out of a play.
//!
//! Emergencies may start before they are downloaded: once one is due (`at` has come) and every variant is
//! cached or downloading, the caller's `streamable` test (enough held to play through at the measured rate, see
//! `emergency`) decides, and the play goes out with [`Item::Stream`] for the variants still arriving. For an
//! emergency `late_s` runs to its expiry, so one not started by then is missed `expired` (a receiver that was
//! offline does not play a stale warning), and never `not_downloaded` before.
//!
//! [`download_order`] says which bulletins to fetch first: higher tier, then earlier play; emergencies' are
//! marked urgent.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::path::PathBuf;

use loa_protocol::{BulletinId, MissReason, Plan, PlannedPlay, PlayId, Tier, Timestamp};

/// Whether one variant can be played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Cached and verified at this path.
    Ready(PathBuf),
    /// Being downloaded (its manifest is held).
    Partial,
    /// No manifest yet, or not downloading.
    Missing,
    /// Its manifest expires before the play.
    Expired,
}

/// One variant of a play handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// Play this cached file.
    File(PathBuf),
    /// Play this bulletin while it downloads.
    Stream(BulletinId),
}

/// What to do about one play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// Hand it to the player now; its audio starts `start_in_ms` from now.
    Play {
        /// The play.
        play: &'a PlannedPlay,
        /// Its variants, in order (repeats not expanded).
        items: Vec<Item>,
        /// Milliseconds until `at` (0 if it is already due).
        start_in_ms: u64,
    },
    /// Report it missed.
    Missed {
        /// The play.
        play: &'a PlannedPlay,
        /// Why.
        reason: MissReason,
    },
}

/// The actions due at `now`. See the module documentation.
pub(crate) fn decide<'a>(
    plan: &'a Plan,
    now: Timestamp,
    lead_ms: u64,
    is_done: impl Fn(&PlayId) -> bool,
    variant: impl Fn(&BulletinId, Timestamp) -> Readiness,
    streamable: impl Fn(&PlannedPlay) -> bool,
) -> Vec<Action<'a>> {
    let mut actions = Vec::new();
    for play in plan.plays.iter().filter(|p| !is_done(&p.id)) {
        let until = play.at.ms_since(now);
        if until > i64::try_from(lead_ms).unwrap_or(i64::MAX) {
            // Plays are sorted by `at`: the rest are later still.
            break;
        }
        let states: Vec<Readiness> = play.bulletins.iter().map(|b| variant(b, play.at)).collect();
        let all_expired = states.iter().all(|s| *s == Readiness::Expired);
        let complete = states.iter().all(|s| matches!(s, Readiness::Ready(_) | Readiness::Expired));
        let emergency = play.tier == Tier::Emergency;
        let stream = emergency
            && until <= 0
            && states.iter().all(|s| *s != Readiness::Missing)
            && states.contains(&Readiness::Partial)
            && streamable(play);
        if now > play.latest_start() || all_expired {
            // Ready but past its latest start: the receiver was off (or restarting) at the time.
            let reason = match (all_expired || emergency, complete) {
                (true, _) => MissReason::Expired,
                (false, true) => MissReason::PoweredOff,
                (false, false) => MissReason::NotDownloaded,
            };
            actions.push(Action::Missed { play, reason });
        } else if complete || stream {
            let items = states
                .into_iter()
                .zip(&play.bulletins)
                .filter_map(|(s, b)| match s {
                    Readiness::Ready(path) => Some(Item::File(path)),
                    Readiness::Partial => Some(Item::Stream(b.clone())),
                    Readiness::Missing | Readiness::Expired => None,
                })
                .collect();
            actions.push(Action::Play { play, items, start_in_ms: until.max(0) as u64 });
        }
    }
    actions
}

/// How many plays still to come have every variant ready (the heartbeat's `ready`).
pub(crate) fn ready_count(plan: &Plan, now: Timestamp, variant: impl Fn(&BulletinId, Timestamp) -> Readiness) -> u16 {
    let ready = plan.upcoming(now).filter(|p| {
        let states: Vec<Readiness> = p.bulletins.iter().map(|b| variant(b, p.at)).collect();
        states.iter().any(|s| matches!(s, Readiness::Ready(_)))
            && states.iter().all(|s| matches!(s, Readiness::Ready(_) | Readiness::Expired))
    });
    u16::try_from(ready.count()).unwrap_or(u16::MAX)
}

/// Bulletins of plays still to come, most urgent first: higher tier, then earlier `at`; each once, with
/// whether an emergency needs it.
pub(crate) fn download_order(plan: &Plan, now: Timestamp) -> Vec<(BulletinId, bool)> {
    let mut plays: Vec<&PlannedPlay> = plan.upcoming(now).collect();
    plays.sort_by_key(|p| (Reverse(p.tier), p.at));
    let mut seen = HashSet::new();
    plays
        .iter()
        .flat_map(|p| p.bulletins.iter().map(|b| (b, p.tier == Tier::Emergency)))
        .filter(|(b, _)| seen.insert((*b).clone()))
        .map(|(b, urgent)| (b.clone(), urgent))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::{plan_with, ts};
    use loa_protocol::ReceiverId;
    use proptest::prelude::*;

    fn me() -> ReceiverId {
        ReceiverId::new("rx-000000000001").unwrap()
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn plays_are_handed_over_ahead_and_missed_after_late_s() {
        let at = ts(T0 + 60_000);
        let plan = plan_with(&me(), 1, ts(T0), &[("p1", at, "b-000000000001-vi")]);
        let ready = |_: &BulletinId, _| Readiness::Ready(PathBuf::from("/a.opus"));
        let missing = |_: &BulletinId, _| Readiness::Missing;
        assert!(decide(&plan, ts(T0), 5000, |_| false, ready, |_| false).is_empty(), "too early");
        let actions = decide(&plan, ts(T0 + 56_000), 5000, |_| false, ready, |_| false);
        assert_eq!(
            actions,
            [Action::Play {
                play: &plan.plays[0],
                items: vec![Item::File(PathBuf::from("/a.opus"))],
                start_in_ms: 4000
            }]
        );
        assert!(decide(&plan, ts(T0 + 56_000), 5000, |_| true, ready, |_| false).is_empty(), "done");
        assert!(decide(&plan, ts(T0 + 56_000), 5000, |_| false, missing, |_| false).is_empty(), "waits");
        let late = plan.plays[0].latest_start();
        let actions = decide(&plan, late, 5000, |_| false, ready, |_| false);
        assert!(matches!(actions[..], [Action::Play { start_in_ms: 0, .. }]), "late but still allowed");
        let actions = decide(&plan, late.saturating_add_ms(1), 5000, |_| false, missing, |_| false);
        assert_eq!(actions, [Action::Missed { play: &plan.plays[0], reason: MissReason::NotDownloaded }]);
        let actions = decide(&plan, late.saturating_add_ms(1), 5000, |_| false, ready, |_| false);
        assert_eq!(
            actions,
            [Action::Missed { play: &plan.plays[0], reason: MissReason::PoweredOff }],
            "ready but too late: the receiver was off"
        );
        let expired = |_: &BulletinId, _| Readiness::Expired;
        let actions = decide(&plan, ts(T0), 5000, |_| false, expired, |_| false);
        assert!(actions.is_empty(), "an expired play is reported when it is due");
        let actions = decide(&plan, ts(T0 + 58_000), 5000, |_| false, expired, |_| false);
        assert_eq!(actions, [Action::Missed { play: &plan.plays[0], reason: MissReason::Expired }]);
        assert_eq!(ready_count(&plan, ts(T0), ready), 1);
        assert_eq!(ready_count(&plan, ts(T0), missing), 0);
    }

    #[test]
    fn downloads_go_by_tier_then_time() {
        let mut plan = plan_with(
            &me(),
            1,
            ts(T0),
            &[
                ("p1", ts(T0 + 1000), "b-000000000001-vi"),
                ("p2", ts(T0 + 2000), "b-000000000002-vi"),
                ("p3", ts(T0 + 3000), "b-000000000001-vi"),
            ],
        );
        plan.plays[1].tier = Tier::Emergency;
        let order = download_order(&plan, ts(T0));
        let names: Vec<(&str, bool)> = order.iter().map(|(b, u)| (b.as_str(), *u)).collect();
        assert_eq!(names, [("b-000000000002-vi", true), ("b-000000000001-vi", false)]);
    }

    #[test]
    fn emergencies_stream_when_due_and_expire_instead_of_missing() {
        let at = ts(T0 + 10_000);
        let mut plan = plan_with(&me(), 1, ts(T0), &[("e1", at, "b-0000000000e1-vi")]);
        plan.plays[0].tier = Tier::Emergency;
        plan.plays[0].late_s = 600;
        let partial = |_: &BulletinId, _| Readiness::Partial;
        let missing = |_: &BulletinId, _| Readiness::Missing;
        // Not before `at`, even if it could stream.
        assert!(decide(&plan, ts(T0 + 5_000), 5000, |_| false, partial, |_| true).is_empty());
        // Due: waits while the download cannot keep up, goes once it can.
        assert!(decide(&plan, at, 5000, |_| false, partial, |_| false).is_empty());
        assert!(decide(&plan, at, 5000, |_| false, missing, |_| true).is_empty(), "no manifest: nothing to stream");
        let actions = decide(&plan, at, 5000, |_| false, partial, |_| true);
        let stream = vec![Item::Stream(plan.plays[0].bulletins[0].clone())];
        assert_eq!(actions, [Action::Play { play: &plan.plays[0], items: stream, start_in_ms: 0 }]);
        // Never missed before its expiry; expired after it, even if it was downloaded.
        let late = plan.plays[0].latest_start();
        assert!(decide(&plan, late, 5000, |_| false, missing, |_| false).is_empty());
        let ready = |_: &BulletinId, _| Readiness::Ready(PathBuf::from("/e.opus"));
        let after = late.saturating_add_ms(1);
        let actions = decide(&plan, after, 5000, |_| false, ready, |_| true);
        assert_eq!(actions, [Action::Missed { play: &plan.plays[0], reason: MissReason::Expired }]);
        // A normal play never streams.
        plan.plays[0].tier = Tier::Priority;
        assert!(decide(&plan, at, 5000, |_| false, partial, |_| true).is_empty());
    }

    proptest! {
        #[test]
        fn each_play_gets_at_most_one_timely_action(
            offsets in proptest::collection::vec(1i64..100_000, 1..20),
            now_off in -10_000i64..2_000_000,
            ready_mask in any::<u32>(),
            lead in 0u64..20_000,
        ) {
            let mut at = T0;
            let mut plays = Vec::new();
            for (i, o) in offsets.iter().enumerate() {
                at += o;
                plays.push((format!("p{i}"), ts(at), format!("b-{:012}-vi", i)));
            }
            let specs: Vec<(&str, Timestamp, &str)> = plays.iter().map(|(a, b, c)| (a.as_str(), *b, c.as_str())).collect();
            let plan = plan_with(&me(), 1, ts(T0), &specs);
            let now = ts(T0 + now_off);
            let variant = |b: &BulletinId, _| {
                let i: u32 = b.as_str()[2..14].parse().unwrap();
                if ready_mask & (1 << (i % 32)) != 0 { Readiness::Ready(PathBuf::from("/x")) } else { Readiness::Missing }
            };
            let actions = decide(&plan, now, lead, |_| false, variant, |_| false);
            let mut seen = HashSet::new();
            for a in &actions {
                match a {
                    Action::Play { play, start_in_ms, .. } => {
                        prop_assert!(seen.insert(play.id.clone()));
                        prop_assert!(now <= play.latest_start());
                        prop_assert!(play.at.ms_since(now) <= lead as i64);
                        prop_assert_eq!(*start_in_ms as i64, play.at.ms_since(now).max(0));
                    }
                    Action::Missed { play, .. } => {
                        prop_assert!(seen.insert(play.id.clone()));
                        prop_assert!(now > play.latest_start());
                    }
                }
            }
        }
    }
}
