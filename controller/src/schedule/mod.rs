//! Schedules: from a request ("play this bulletin in these villages daily at 06:00") to plays per receiver.
//!
//! [`rule`] parses and expands the rule (once, daily, weekly, cron; local wall time in the schedule's zone,
//! Asia/Ho_Chi_Minh by default). [`create_schedule`] checks everything an official can get wrong (rule,
//! validity, targets, a failed or cancelled bulletin, quiet hours over the next 8 days) and, in one
//! transaction, stores the schedule and its plays for the planning horizon ([`HORIZON_MS`], 72 h), refusing
//! clashes or queueing after them ([`place`]). [`extend_plays`] moves every active schedule's horizon forward;
//! it is idempotent (each schedule remembers how far it was expanded, and plays are unique per schedule,
//! receiver and time).

pub mod place;
pub mod rule;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use loa_protocol::{Tier, Timestamp};
use rusqlite::Connection;
use serde::Deserialize;

use crate::store::bulletins::{get_bulletin, VariantStatus};
use crate::store::schedules::{
    active_schedules, insert_schedule, set_expanded_until, NewSchedule, ScheduleRow, TargetKind,
};
use crate::store::{Store, StoreError};
use place::{local_label, parse_tier, quiet_message, resolve_targets, tier_name, Placement};
pub use rule::{Compiled, Rule, Weekly};

/// How far ahead plays are expanded.
pub const HORIZON_MS: i64 = 72 * 3_600_000;
/// How far ahead a new schedule is checked against quiet hours.
pub const QUIET_CHECK_MS: i64 = 8 * 24 * 3_600_000;
/// Length assumed for a bulletin whose audio is still encoding.
pub const DEFAULT_SLOT_MS: i64 = 5 * 60_000;
/// Most repeats per occurrence.
pub const MAX_REPEAT: u32 = 20;
/// Most times the audio plays within one play.
pub const MAX_PLAY_TIMES: u32 = loa_protocol::plan::MAX_TIMES as u32;
/// The default time zone.
pub const DEFAULT_TZ: Tz = chrono_tz::Asia::Ho_Chi_Minh;

/// Who a schedule reaches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Area ids (with their subtrees).
    #[serde(default)]
    pub areas: Vec<i64>,
    /// Group ids.
    #[serde(default)]
    pub groups: Vec<i64>,
    /// Receiver ids.
    #[serde(default)]
    pub receivers: Vec<String>,
}

/// What to do when a play would overlap another of equal or higher tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnClash {
    /// Refuse the schedule (HTTP 409).
    #[default]
    Refuse,
    /// Play just after the other play.
    Queue,
}

/// A schedule request (the body of `POST /api/v1/schedules`). Exactly one of `at`, `daily`, `weekly`, `cron`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The bulletin.
    pub bulletin_id: String,
    /// Who hears it.
    pub targets: Targets,
    /// Once at this time.
    #[serde(default)]
    pub at: Option<String>,
    /// Daily at these times.
    #[serde(default)]
    pub daily: Option<Vec<String>>,
    /// Weekly.
    #[serde(default)]
    pub weekly: Option<Weekly>,
    /// Cron.
    #[serde(default)]
    pub cron: Option<String>,
    /// IANA zone of the wall times (default: the controller's).
    #[serde(default)]
    pub tz: Option<String>,
    /// Tier (default normal).
    #[serde(default)]
    pub priority: Option<Tier>,
    /// Plays per occurrence (default 1).
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Silence between repeats, seconds (default 60).
    #[serde(default)]
    pub repeat_gap_s: Option<u32>,
    /// No play before this.
    #[serde(default)]
    pub valid_from: Option<String>,
    /// No play at or after this (a date alone means the end of that day).
    #[serde(default)]
    pub valid_until: Option<String>,
    /// 0..1.
    #[serde(default)]
    pub volume: Option<f64>,
    /// Clash policy (default refuse).
    #[serde(default)]
    pub on_clash: Option<OnClash>,
    /// Times the audio plays back to back within each play, `repeat_gap_s` apart (set by the emergency API;
    /// not part of the schedule body).
    #[serde(skip)]
    pub play_times: Option<u32>,
}

/// A schedule made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its id.
    pub id: i64,
    /// Plays planned within the horizon.
    pub plays: usize,
}

impl ScheduleRequest {
    fn rule(&self) -> Result<Rule, StoreError> {
        let mut rules = Vec::new();
        if let Some(at) = &self.at {
            rules.push(Rule::At(at.clone()));
        }
        if let Some(daily) = &self.daily {
            rules.push(Rule::Daily(daily.clone()));
        }
        if let Some(weekly) = &self.weekly {
            rules.push(Rule::Weekly(weekly.clone()));
        }
        if let Some(cron) = &self.cron {
            rules.push(Rule::Cron(cron.clone()));
        }
        match rules.len() {
            1 => Ok(rules.remove(0)),
            0 => Err(StoreError::invalid("say when: give one of at, daily, weekly or cron")),
            _ => Err(StoreError::invalid("give only one of at, daily, weekly or cron")),
        }
    }
}

/// Parses a zone name.
pub fn parse_tz(name: &str) -> Result<Tz, StoreError> {
    name.parse::<Tz>()
        .map_err(|_| StoreError::invalid(format!("\"{name}\" is not a time zone; use e.g. Asia/Ho_Chi_Minh")))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Checks a request and stores the schedule with its plays for the next [`HORIZON_MS`].
pub fn create_schedule(
    store: &Store,
    req: &ScheduleRequest,
    now: DateTime<Utc>,
    default_tz: Tz,
) -> Result<Created, StoreError> {
    let tz = req.tz.as_deref().map(parse_tz).transpose()?.unwrap_or(default_tz);
    let rule = req.rule()?;
    let compiled = rule.compile(tz)?;
    let tier = req.priority.unwrap_or(Tier::Normal);
    let repeat = req.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(StoreError::invalid(format!("repeat must be between 1 and {MAX_REPEAT}")));
    }
    let gap_s = req.repeat_gap_s.unwrap_or(60);
    let play_times = req.play_times.unwrap_or(1);
    if !(1..=MAX_PLAY_TIMES).contains(&play_times) {
        return Err(StoreError::invalid(format!("times must be between 1 and {MAX_PLAY_TIMES}")));
    }
    if gap_s > 24 * 3600 {
        return Err(StoreError::invalid("repeat_gap_s must be at most 86400 (one day)"));
    }
    if let Some(v) = req.volume {
        if !(0.0..=1.0).contains(&v) {
            return Err(StoreError::invalid("volume must be between 0 and 1"));
        }
    }
    let valid_from = req.valid_from.as_deref().map(|s| rule::parse_bound(s, tz, false)).transpose()?;
    let valid_until = req.valid_until.as_deref().map(|s| rule::parse_bound(s, tz, true)).transpose()?;
    if let (Some(f), Some(u)) = (valid_from, valid_until) {
        if f >= u {
            return Err(StoreError::invalid("valid_from must be before valid_until"));
        }
    }
    if valid_until.is_some_and(|u| u <= now) {
        return Err(StoreError::invalid("valid_until is in the past"));
    }
    if let Compiled::At(at) = &compiled {
        if *at < now {
            return Err(StoreError::invalid(format!("{} is in the past", local_label(*at, tz))));
        }
        if valid_from.is_some_and(|f| *at < f) || valid_until.is_some_and(|u| *at >= u) {
            return Err(StoreError::invalid("the time is outside valid_from..valid_until"));
        }
    }
    let mut targets: Vec<(TargetKind, String)> = Vec::new();
    targets.extend(req.targets.areas.iter().map(|a| (TargetKind::Area, a.to_string())));
    targets.extend(req.targets.groups.iter().map(|g| (TargetKind::Group, g.to_string())));
    targets.extend(req.targets.receivers.iter().map(|r| (TargetKind::Receiver, r.clone())));
    if targets.is_empty() {
        return Err(StoreError::invalid("say who hears it: give targets.areas, targets.groups or targets.receivers"));
    }
    let rule_json = serde_json::to_string(&rule).map_err(|e| StoreError::invalid(e.to_string()))?;

    store.with_conn(|c| {
        let tx = c.transaction()?;
        let bulletin = get_bulletin(&tx, &req.bulletin_id)?;
        if bulletin.cancelled_at.is_some() {
            return Err(StoreError::invalid(format!("bulletin {} is cancelled", bulletin.id)));
        }
        if !bulletin.variants.is_empty() && bulletin.status() == VariantStatus::Failed {
            let why = bulletin.variants.iter().find_map(|v| v.error.clone()).unwrap_or_default();
            return Err(StoreError::invalid(format!(
                "bulletin {} has no usable audio ({why}); upload the recording again",
                bulletin.id
            )));
        }
        let receivers = resolve_targets(&tx, &targets)?;
        if receivers.is_empty() {
            return Err(StoreError::invalid("the targets hold no receivers yet; register receivers first"));
        }
        let one_ms = bulletin.duration_ms().unwrap_or(DEFAULT_SLOT_MS).max(1000);
        let times = i64::from(play_times);
        let slot_ms = one_ms * times + i64::from(gap_s) * 1000 * (times - 1);
        let spec = NewSchedule {
            bulletin_id: bulletin.id.clone(),
            rule: rule_json.clone(),
            tier: tier_name(tier).to_string(),
            repeat_count: i64::from(repeat),
            repeat_gap_s: i64::from(gap_s),
            valid_from: valid_from.map(ms),
            valid_until: valid_until.map(ms),
            volume: req.volume,
            tz: tz.name().to_string(),
            on_clash: if req.on_clash == Some(OnClash::Queue) { "queue" } else { "refuse" }.to_string(),
            slot_ms,
            play_times: times,
            targets: targets.clone(),
        };
        let id = insert_schedule(&tx, &spec, ms(now))?;
        let placement = placement_for(id, &spec, &bulletin.title, true)?;
        if tier != Tier::Emergency {
            let mut quiet_until = now + Duration::milliseconds(QUIET_CHECK_MS);
            if let Compiled::At(at) = &compiled {
                quiet_until = quiet_until.max(*at + Duration::milliseconds(1));
            }
            let (from, until) = clip(now, quiet_until, &spec);
            for base in compiled.occurrences(tz, from, until) {
                for t in placement.repeats(ms(base)) {
                    let local = from_ms(t).with_timezone(&tz).time();
                    if let Some(area) = receivers.values().find(|a| a.is_quiet(local)) {
                        return Err(StoreError::Invalid(quiet_message(from_ms(t), tz, area)));
                    }
                }
            }
        }
        let horizon = now + Duration::milliseconds(HORIZON_MS);
        let (from, until) = clip(now, horizon, &spec);
        let plays = placement.place(&tx, &receivers, &compiled.occurrences(tz, from, until))?;
        set_expanded_until(&tx, id, ms(horizon))?;
        tx.commit()?;
        Ok(Created { id, plays })
    })
}

/// `[from, until)` narrowed to the schedule's validity.
fn clip(from: DateTime<Utc>, until: DateTime<Utc>, spec: &NewSchedule) -> (DateTime<Utc>, DateTime<Utc>) {
    let from = spec.valid_from.map_or(from, |f| from.max(from_ms(f)));
    let until = spec.valid_until.map_or(until, |u| until.min(from_ms(u)));
    (from, until)
}

fn placement_for<'a>(
    id: i64,
    spec: &'a NewSchedule,
    title: &'a str,
    strict: bool,
) -> Result<Placement<'a>, StoreError> {
    Ok(Placement {
        schedule_id: id,
        bulletin_id: &spec.bulletin_id,
        title,
        tier: parse_tier(&spec.tier),
        tz: parse_tz(&spec.tz)?,
        queue: spec.on_clash == "queue",
        slot_ms: spec.slot_ms,
        repeat_every_ms: spec.slot_ms + spec.repeat_gap_s * 1000,
        repeat_count: spec.repeat_count,
        valid_until: spec.valid_until,
        strict,
    })
}

/// Expands every active schedule into plays up to `now + HORIZON_MS`; returns how many plays were planned.
/// Idempotent: calling it twice at the same `now` adds nothing. A schedule that cannot be expanded (its rule
/// or targets became invalid) is logged and skipped.
pub fn extend_plays(store: &Store, now: Timestamp) -> Result<usize, StoreError> {
    let now_ms = now.unix_ms();
    let schedules = store.with_conn(|c| active_schedules(c, now_ms))?;
    let mut total = 0;
    for s in schedules {
        match store.with_conn(|c| extend_one(c, &s, now_ms)) {
            Ok(n) => total += n,
            Err(e) => tracing::warn!(schedule = s.id, error = %e, "could not extend a schedule"),
        }
    }
    Ok(total)
}

fn extend_one(c: &mut Connection, s: &ScheduleRow, now_ms: i64) -> Result<usize, StoreError> {
    let from_at = s.expanded_until.unwrap_or(s.created_at).max(now_ms);
    let horizon = now_ms + HORIZON_MS;
    if from_at >= horizon {
        return Ok(0);
    }
    let tx = c.transaction()?;
    let n = place_stored(&tx, s, None, from_at, horizon)?;
    set_expanded_until(&tx, s.id, horizon)?;
    tx.commit()?;
    Ok(n)
}

/// Places a stored schedule's occurrences in `[start_ms, until_ms)` (narrowed to its validity) on its targets, or
/// only on `only` if that receiver is one of them; returns the plays planned.
fn place_stored(
    tx: &Connection,
    s: &ScheduleRow,
    only: Option<&str>,
    start_ms: i64,
    until_ms: i64,
) -> Result<usize, StoreError> {
    let mut receivers = resolve_targets(tx, &s.spec.targets)?;
    if let Some(id) = only {
        receivers.retain(|r, _| r == id);
    }
    if receivers.is_empty() {
        return Ok(0);
    }
    let bulletin = get_bulletin(tx, &s.spec.bulletin_id)?;
    let placement = placement_for(s.id, &s.spec, &bulletin.title, false)?;
    let rule: Rule = serde_json::from_str(&s.spec.rule)
        .map_err(|e| StoreError::invalid(format!("schedule {} has an unreadable rule: {e}", s.id)))?;
    let compiled = rule.compile(placement.tz)?;
    let (from, until) = clip(from_ms(start_ms), from_ms(until_ms), &s.spec);
    placement.place(tx, &receivers, &compiled.occurrences(placement.tz, from, until))
}

/// Plans a newly registered (or moved) receiver into every active schedule that targets it, from `now` up to
/// where each schedule has already been expanded (later occurrences come with [`extend_plays`]). Returns how
/// many plays were planned. Emergencies still running reach it too.
pub fn expand_for_receiver(store: &Store, receiver_id: &str, now: Timestamp) -> Result<usize, StoreError> {
    let now_ms = now.unix_ms();
    let schedules = store.with_conn(|c| active_schedules(c, now_ms))?;
    let mut total = 0;
    for s in schedules {
        let result = store.with_conn(|c| {
            let tx = c.transaction()?;
            // An emergency sent moments ago still counts: its occurrence is at most its validity old.
            let since = if parse_tier(&s.spec.tier) == Tier::Emergency { s.created_at.min(now_ms) } else { now_ms };
            let until = s.expanded_until.unwrap_or(now_ms).max(now_ms);
            let n = place_stored(&tx, &s, Some(receiver_id), since, until)?;
            tx.commit()?;
            Ok(n)
        });
        match result {
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!(schedule = s.id, receiver = receiver_id, error = %e, "could not plan a new receiver")
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
