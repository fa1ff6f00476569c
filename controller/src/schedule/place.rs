//! Placing plays: resolving targets to receivers, and putting each occurrence (with its repeats) on each
//! receiver while respecting quiet hours and not overlapping other plays. A higher tier may overlap (it
//! preempts); an equal or lower tier follows the schedule's `on_clash`: `refuse` or `queue` (move to just after
//! the other play). When a person is waiting (creating a schedule) a refusal is an error; when extending later,
//! the play is recorded as `cancelled` with the reason instead.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use loa_protocol::Tier;
use rusqlite::Connection;

use crate::store::areas::{area_settings, get_group, subtree, AreaSettings};
use crate::store::plays::{busy_between, insert_play, Busy, NewPlay};
use crate::store::receivers::{get_receiver, in_areas};
use crate::store::schedules::TargetKind;
use crate::store::StoreError;

/// How many times a queued play may be moved before it is given up.
const MAX_SHIFTS: usize = 50;
/// How many clashes a refusal lists.
const MAX_LISTED: usize = 5;

/// Parses a stored tier name.
pub fn parse_tier(s: &str) -> Tier {
    match s {
        "emergency" => Tier::Emergency,
        "priority" => Tier::Priority,
        _ => Tier::Normal,
    }
}

/// A tier's stored name.
pub fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Normal => "normal",
        Tier::Priority => "priority",
        Tier::Emergency => "emergency",
    }
}

/// Local time for messages: "06:00 on Tue 24 Nov 2026".
pub fn local_label(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M on %a %d %b %Y").to_string()
}

/// Receivers the targets reach, with the settings of the area each stands in.
pub(crate) fn resolve_targets(
    c: &Connection,
    targets: &[(TargetKind, String)],
) -> Result<BTreeMap<String, AreaSettings>, StoreError> {
    let mut rx_area: BTreeMap<String, i64> = BTreeMap::new();
    let add_area = |c: &Connection, area: i64, rx_area: &mut BTreeMap<String, i64>| -> Result<(), StoreError> {
        for (rx, a) in in_areas(c, &subtree(c, area)?)? {
            rx_area.insert(rx, a);
        }
        Ok(())
    };
    for (kind, target) in targets {
        match kind {
            TargetKind::Area => {
                let id = target.parse().map_err(|_| StoreError::not_found("area", target))?;
                add_area(c, id, &mut rx_area)?;
            }
            TargetKind::Group => {
                let id = target.parse().map_err(|_| StoreError::not_found("group", target))?;
                let group = get_group(c, id)?;
                for area in group.areas {
                    add_area(c, area, &mut rx_area)?;
                }
                for rx in group.receivers {
                    let r = get_receiver(c, &rx)?;
                    rx_area.insert(r.id, r.area_id);
                }
            }
            TargetKind::Receiver => {
                let r = get_receiver(c, target)?;
                rx_area.insert(r.id, r.area_id);
            }
        }
    }
    let mut cache: HashMap<i64, AreaSettings> = HashMap::new();
    let mut out = BTreeMap::new();
    for (rx, area) in rx_area {
        let settings = match cache.get(&area) {
            Some(s) => s.clone(),
            None => {
                let s = area_settings(c, area)?;
                cache.insert(area, s.clone());
                s
            }
        };
        out.insert(rx, settings);
    }
    Ok(out)
}

/// What is being placed.
pub(crate) struct Placement<'a> {
    pub schedule_id: i64,
    pub bulletin_id: &'a str,
    pub title: &'a str,
    pub tier: Tier,
    pub tz: Tz,
    pub queue: bool,
    pub slot_ms: i64,
    /// Start-to-start distance of repeats.
    pub repeat_every_ms: i64,
    pub repeat_count: i64,
    pub valid_until: Option<i64>,
    /// A person is waiting: refuse with an error instead of recording cancelled plays.
    pub strict: bool,
}

/// The quiet-hours refusal message.
pub(crate) fn quiet_message(t: DateTime<Utc>, tz: Tz, area: &AreaSettings) -> String {
    format!(
        "{} falls in the quiet hours of {} ({}–{}); choose another time, or send it as an emergency",
        local_label(t, tz),
        area.name,
        area.quiet_start.format("%H:%M"),
        area.quiet_end.format("%H:%M")
    )
}

impl Placement<'_> {
    /// The start instants (ms) of one occurrence's plays, within validity.
    pub fn repeats(&self, base_ms: i64) -> impl Iterator<Item = i64> + '_ {
        (0..self.repeat_count.max(1))
            .map(move |i| base_ms + i * self.repeat_every_ms)
            .filter(|t| self.valid_until.is_none_or(|u| *t < u))
    }

    /// Places `bases` on every receiver; returns the number of plays planned.
    pub fn place(
        &self,
        c: &Connection,
        receivers: &BTreeMap<String, AreaSettings>,
        bases: &[DateTime<Utc>],
    ) -> Result<usize, StoreError> {
        let (Some(first), Some(last)) = (bases.first(), bases.last()) else { return Ok(0) };
        let span = self.repeat_count.max(1) * self.repeat_every_ms + self.slot_ms;
        let mut planned = 0;
        let mut clashes = Vec::new();
        for (rx, area) in receivers {
            let mut busy = busy_between(
                c,
                rx,
                first.timestamp_millis(),
                last.timestamp_millis() + span + MAX_SHIFTS as i64 * 3_600_000,
            )?;
            for base in bases {
                for t in self.repeats(base.timestamp_millis()) {
                    match self.fit(t, area, &busy) {
                        Ok(at) => {
                            let play = NewPlay {
                                schedule_id: self.schedule_id,
                                receiver_id: rx,
                                bulletin_id: self.bulletin_id,
                                planned_at: at,
                                tier: tier_name(self.tier),
                                cancelled: None,
                            };
                            if insert_play(c, &play)? {
                                planned += 1;
                                busy.push(Busy {
                                    bulletin_id: self.bulletin_id.to_string(),
                                    title: self.title.to_string(),
                                    start: at,
                                    end: at + self.slot_ms,
                                    tier: tier_name(self.tier).to_string(),
                                });
                            }
                        }
                        Err(Unfit::Quiet(msg)) if self.strict => return Err(StoreError::Invalid(msg)),
                        Err(Unfit::Clash(msg)) if self.strict => {
                            clashes.push(format!("on {rx} ({}): {msg}", area.name));
                            if clashes.len() >= MAX_LISTED {
                                return Err(clash_error(&clashes));
                            }
                        }
                        Err(Unfit::Quiet(reason) | Unfit::Clash(reason)) => {
                            let play = NewPlay {
                                schedule_id: self.schedule_id,
                                receiver_id: rx,
                                bulletin_id: self.bulletin_id,
                                planned_at: t,
                                tier: tier_name(self.tier),
                                cancelled: Some(reason),
                            };
                            insert_play(c, &play)?;
                        }
                    }
                }
            }
        }
        if !clashes.is_empty() {
            return Err(clash_error(&clashes));
        }
        Ok(planned)
    }

    /// Where a play meant for `t` can go on a receiver with these settings and plays.
    fn fit(&self, mut t: i64, area: &AreaSettings, busy: &[Busy]) -> Result<i64, Unfit> {
        for _ in 0..MAX_SHIFTS {
            let at = DateTime::from_timestamp_millis(t).unwrap_or_default();
            if self.tier != Tier::Emergency && area.is_quiet(at.with_timezone(&self.tz).time()) {
                return Err(Unfit::Quiet(quiet_message(at, self.tz, area)));
            }
            let end = t + self.slot_ms;
            let blocking: Vec<&Busy> =
                busy.iter().filter(|b| b.start < end && t < b.end && parse_tier(&b.tier) >= self.tier).collect();
            if blocking.is_empty() {
                return Ok(t);
            }
            if !self.queue {
                let list: Vec<String> = blocking
                    .iter()
                    .map(|b| {
                        let start = DateTime::from_timestamp_millis(b.start).unwrap_or_default();
                        let end = DateTime::from_timestamp_millis(b.end).unwrap_or_default();
                        format!(
                            "\"{}\" ({}, {}–{})",
                            b.title,
                            b.tier,
                            start.with_timezone(&self.tz).format("%H:%M"),
                            end.with_timezone(&self.tz).format("%H:%M")
                        )
                    })
                    .collect();
                return Err(Unfit::Clash(format!(
                    "at {} it would overlap {}",
                    local_label(at, self.tz),
                    list.join(", ")
                )));
            }
            t = blocking.iter().map(|b| b.end).max().unwrap_or(t);
        }
        Err(Unfit::Clash("no free time found after the plays already there".into()))
    }
}

enum Unfit {
    Quiet(String),
    Clash(String),
}

fn clash_error(clashes: &[String]) -> StoreError {
    StoreError::Conflict(format!(
        "the schedule clashes with plays already planned: {}; set on_clash to \"queue\" to play after them, \
         choose another time, or use a higher priority",
        clashes.join("; ")
    ))
}
