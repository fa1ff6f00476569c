//! The soak's verdict, from three independent records: what the controller planned and what it was told
//! ([`Planned`]: each play's final status, from `GET /plays`), what each receiver's player put on air
//! ([`Aired`]: its air events) and what each sink heard ([`PlayRecord`]: a digest of each play's sound). Pure, so
//! that each rule has a test.
//!
//! The rules: a planned play either started on air within [`ON_TIME_MS`] of its time, or the controller holds
//! a `missed` report with a reason for it, or — the one allowed lateness — it started after its time because
//! its file arrived late (a receiver back from a power cut or an outage just before air time; a normal play
//! may start up to its plan's `late_s`, 5 minutes, late: a village would rather hear the market prices a few
//! seconds late than not at all) and the controller holds that late start, within [`ON_TIME_MS`] of the real
//! one, so the operator sees it; no play starts twice; every complete play of a bulletin has the same
//! sound as the others (the most common digest); every start and end seen on air reached the controller.

use std::collections::HashMap;

use serde::Serialize;

use crate::fleet::PlayRecord;

/// How far from its planned time a play may start and still be on time, ms.
pub const ON_TIME_MS: i64 = 2_000;

/// A play as the controller knows it at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Play id.
    pub play_id: String,
    /// Receiver id.
    pub receiver_id: String,
    /// Bulletin id.
    pub bulletin_id: String,
    /// Planned start, UTC ms.
    pub at_ms: i64,
    /// Final status: `played`, `missed`, `planned`, ...
    pub status: String,
    /// Why it was missed.
    pub reason: Option<String>,
    /// The controller holds its start.
    pub started: bool,
    /// When the controller says it started, UTC ms (whole seconds).
    pub started_at_ms: Option<i64>,
    /// The controller holds its end.
    pub finished: bool,
}

/// What one receiver's player did with one play.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aired {
    /// When its speech started, UTC ms (more than one: it went out more than once).
    pub starts_ms: Vec<i64>,
    /// How many times it played to its end.
    pub finished: u32,
    /// Times the source ran dry while it played.
    pub underruns: u32,
}

/// The soak's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Plays the controller planned.
    pub plays_planned: usize,
    /// Started within ±2 s.
    pub played_on_time: usize,
    /// Started further than 2 s from the planned time, and the controller does not hold that start.
    pub played_late: usize,
    /// Started after its time (its file arrived late), and the controller holds the late start.
    pub started_late_reported: usize,
    /// Not played, and the controller holds a `missed` report with a reason.
    pub reported_missed: usize,
    /// Missed reports by reason.
    pub missed_reasons: HashMap<String, usize>,
    /// Neither played nor reported missed.
    pub unaccounted: usize,
    /// Plays that started more than once.
    pub duplicate_plays: usize,
    /// Complete plays whose sound differs from the other plays of the same bulletin.
    pub corrupt_plays: usize,
    /// Complete plays checked for corruption.
    pub plays_checked: usize,
    /// Starts or ends seen on air that the controller does not hold.
    pub reports_lost: usize,
    /// Underruns during normal plays (each should play from a complete, verified file).
    pub underruns: u32,
    /// Largest distance of a start from its planned time, ms.
    pub max_offset_ms: i64,
    /// 99th percentile of that distance, ms.
    pub p99_offset_ms: i64,
    /// The first problems found, in words.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Everything planned was played on time or reported missed; nothing corrupt, duplicated or lost.
    pub fn passed(&self) -> bool {
        self.played_late + self.unaccounted + self.duplicate_plays + self.corrupt_plays + self.reports_lost == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// Judges the soak. `aired` is keyed by (receiver id, play id); `records` carry the receiver id of each member
/// through `receiver_of`.
pub fn judge(
    planned: &[Planned],
    aired: &HashMap<(String, String), Aired>,
    records: &[PlayRecord],
    receiver_of: &dyn Fn(usize) -> Option<String>,
) -> Verdict {
    let mut v = Verdict { plays_planned: planned.len(), ..Verdict::default() };
    let mut offsets = Vec::new();
    let none = Aired::default();
    for p in planned {
        let a = aired.get(&(p.receiver_id.clone(), p.play_id.clone())).unwrap_or(&none);
        v.underruns += a.underruns;
        if a.starts_ms.len() > 1 {
            v.duplicate_plays += 1;
            v.problem(format!("{} on {} started {} times", p.play_id, p.receiver_id, a.starts_ms.len()));
        }
        match a.starts_ms.first() {
            Some(start) => {
                let offset = (start - p.at_ms).abs();
                offsets.push(offset);
                let known = p.started_at_ms.is_some_and(|s| (s - start).abs() <= ON_TIME_MS);
                if offset <= ON_TIME_MS {
                    v.played_on_time += 1;
                } else if *start > p.at_ms && known {
                    v.started_late_reported += 1;
                } else {
                    v.played_late += 1;
                    v.problem(format!(
                        "{} on {} started {} ms from its time; the controller has its start at {:?}",
                        p.play_id,
                        p.receiver_id,
                        start - p.at_ms,
                        p.started_at_ms.map(|s| s - p.at_ms)
                    ));
                }
                if !p.started || (a.finished > 0 && !p.finished) {
                    v.reports_lost += 1;
                    v.problem(format!(
                        "{} on {} went on air (finished: {}) but the controller has it {}",
                        p.play_id,
                        p.receiver_id,
                        a.finished > 0,
                        p.status
                    ));
                }
            }
            None if p.status == "missed" && p.reason.as_deref().is_some_and(|r| !r.is_empty()) => {
                v.reported_missed += 1;
                *v.missed_reasons.entry(p.reason.clone().unwrap_or_default()).or_default() += 1;
            }
            None => {
                v.unaccounted += 1;
                v.problem(format!(
                    "{} on {} never went on air and the controller has it {} ({})",
                    p.play_id,
                    p.receiver_id,
                    p.status,
                    p.reason.as_deref().unwrap_or("no reason")
                ));
            }
        }
    }
    offsets.sort_unstable();
    v.max_offset_ms = offsets.last().copied().unwrap_or(0);
    v.p99_offset_ms = offsets.get((offsets.len().saturating_sub(1)) * 99 / 100).copied().unwrap_or(0);

    // Corruption: the sound of every complete play of one bulletin is the same.
    let bulletin_of: HashMap<&str, &str> =
        planned.iter().map(|p| (p.play_id.as_str(), p.bulletin_id.as_str())).collect();
    let mut by_bulletin: HashMap<&str, Vec<&PlayRecord>> = HashMap::new();
    for r in records.iter().filter(|r| r.complete) {
        if let Some(b) = bulletin_of.get(r.play_id.as_str()) {
            by_bulletin.entry(b).or_default().push(r);
        }
    }
    for (bulletin, plays) in by_bulletin {
        let mut counts: HashMap<(&str, u64), usize> = HashMap::new();
        for r in &plays {
            *counts.entry((r.sha256.as_str(), r.samples)).or_default() += 1;
        }
        let Some((&common, _)) = counts.iter().max_by_key(|(_, n)| **n) else { continue };
        v.plays_checked += plays.len();
        for r in plays.iter().filter(|r| (r.sha256.as_str(), r.samples) != common) {
            v.corrupt_plays += 1;
            let rx = receiver_of(r.member).unwrap_or_default();
            v.problem(format!(
                "{} on {rx} put other sound on air than the other plays of {bulletin} ({} samples, {} expected)",
                r.play_id, r.samples, common.1
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(play: &str, rx: &str, status: &str, started: bool) -> Planned {
        Planned {
            play_id: play.into(),
            receiver_id: rx.into(),
            bulletin_id: "b-1-vi".into(),
            at_ms: 10_000,
            status: status.into(),
            reason: (status == "missed").then(|| "link down".to_string()),
            started,
            started_at_ms: started.then_some(10_000),
            finished: started,
        }
    }

    fn aired(starts: &[i64]) -> Aired {
        Aired { starts_ms: starts.to_vec(), finished: starts.len() as u32, underruns: 0 }
    }

    fn record(member: usize, play: &str, sha: &str) -> PlayRecord {
        PlayRecord { member, play_id: play.into(), sha256: sha.into(), samples: 100, complete: true }
    }

    fn key(rx: &str, play: &str) -> (String, String) {
        (rx.to_string(), play.to_string())
    }

    #[test]
    fn on_time_and_reported_misses_pass() {
        let plan = vec![planned("p-1", "rx-a", "played", true), planned("p-2", "rx-b", "missed", false)];
        let air = HashMap::from([(key("rx-a", "p-1"), aired(&[11_500]))]);
        let v = judge(&plan, &air, &[record(0, "p-1", "aa")], &|_| Some("rx-a".into()));
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.played_on_time, v.reported_missed, v.max_offset_ms, v.plays_checked), (1, 1, 1_500, 1));
        assert_eq!(v.missed_reasons.get("link down"), Some(&1));
    }

    #[test]
    fn late_duplicate_unaccounted_lost_and_corrupt_plays_fail() {
        let mut playing = planned("p-4", "rx-b", "playing", true);
        playing.finished = false;
        let plan = vec![
            planned("p-1", "rx-a", "played", true),
            planned("p-2", "rx-a", "played", true),
            planned("p-3", "rx-a", "ready", false),
            playing,
            planned("p-5", "rx-c", "played", true),
        ];
        let air = HashMap::from([
            (key("rx-a", "p-1"), aired(&[12_500])),
            (key("rx-a", "p-2"), aired(&[10_000, 20_000])),
            (key("rx-b", "p-4"), aired(&[10_000])),
            (key("rx-c", "p-5"), aired(&[10_000])),
        ]);
        let records = vec![record(0, "p-2", "aa"), record(1, "p-4", "aa"), record(2, "p-5", "bb")];
        let v = judge(&plan, &air, &records, &|m| Some(format!("member {m}")));
        assert!(!v.passed());
        assert_eq!(v.played_late, 1, "{v:?}");
        assert_eq!(v.duplicate_plays, 1);
        assert_eq!(v.unaccounted, 1);
        assert_eq!(v.reports_lost, 1, "p-4 finished on air but the controller has it playing");
        assert_eq!(v.corrupt_plays, 1);
        assert!(v.problems.iter().any(|p| p.contains("p-5 on member 2")), "{:?}", v.problems);
    }

    #[test]
    fn a_late_start_passes_only_when_the_controller_holds_it() {
        let mut known = planned("p-1", "rx-a", "played", true);
        known.started_at_ms = Some(14_000);
        let mut unknown = planned("p-2", "rx-a", "played", true);
        unknown.started_at_ms = Some(10_000);
        let early = planned("p-3", "rx-a", "played", true);
        let air = HashMap::from([
            (key("rx-a", "p-1"), aired(&[14_300])),
            (key("rx-a", "p-2"), aired(&[14_300])),
            (key("rx-a", "p-3"), aired(&[7_000])),
        ]);
        let v = judge(&[known, unknown, early], &air, &[], &|_| None);
        assert_eq!((v.started_late_reported, v.played_late), (1, 2), "{v:?}");
        assert!(v.problems.iter().any(|p| p.contains("p-2")) && v.problems.iter().any(|p| p.contains("p-3")));
        assert!(!v.passed());
    }

    #[test]
    fn a_missed_report_needs_a_reason_and_a_play_that_aired_is_not_missed() {
        let mut p = planned("p-1", "rx-a", "missed", false);
        p.reason = None;
        let v = judge(&[p], &HashMap::new(), &[], &|_| None);
        assert_eq!(v.unaccounted, 1);
        let p = planned("p-1", "rx-a", "missed", false);
        let air = HashMap::from([(key("rx-a", "p-1"), aired(&[10_000]))]);
        let v = judge(&[p], &air, &[], &|_| None);
        assert_eq!(v.reports_lost, 1, "on air, but the controller says missed");
    }
}
