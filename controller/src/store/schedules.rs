//! Schedules as stored: the rule (JSON), tier, repeats, validity, volume, time zone, clash policy and targets.
//! The rule logic itself (parsing, expansion, quiet hours, clashes) lives in [`crate::schedule`]; this module
//! only reads and writes rows. `expanded_until` records how far the schedule has been turned into plays.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// What a target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An area and its whole subtree.
    Area,
    /// A group: its areas' subtrees and its receivers.
    Group,
    /// One receiver.
    Receiver,
}

impl TargetKind {
    fn as_str(self) -> &'static str {
        match self {
            TargetKind::Area => "area",
            TargetKind::Group => "group",
            TargetKind::Receiver => "receiver",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "area" => TargetKind::Area,
            "group" => TargetKind::Group,
            _ => TargetKind::Receiver,
        }
    }
}

/// A schedule to store (already validated by [`crate::schedule`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// The bulletin.
    pub bulletin_id: String,
    /// The rule, JSON (`{"daily": ["06:00"]}`).
    pub rule: String,
    /// `normal` | `priority` | `emergency`.
    pub tier: String,
    /// Plays per occurrence (1 = no repeat).
    pub repeat_count: i64,
    /// Silence between repeats, seconds.
    pub repeat_gap_s: i64,
    /// No play before, UTC ms.
    pub valid_from: Option<i64>,
    /// No play at or after, UTC ms.
    pub valid_until: Option<i64>,
    /// 0..1, `None` = receiver default.
    pub volume: Option<f64>,
    /// IANA time zone of the rule's wall times.
    pub tz: String,
    /// `refuse` | `queue`.
    pub on_clash: String,
    /// Length assumed for one play, ms.
    pub slot_ms: i64,
    /// Times the audio plays back to back within one play, `repeat_gap_s` apart (emergencies: 3).
    pub play_times: i64,
    /// Targets.
    pub targets: Vec<(TargetKind, String)>,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    /// Id.
    pub id: i64,
    /// Everything it was created with.
    pub spec: NewSchedule,
    /// Created, UTC ms.
    pub created_at: i64,
    /// Cancelled, UTC ms.
    pub cancelled_at: Option<i64>,
    /// Occurrences before this have been expanded into plays.
    pub expanded_until: Option<i64>,
}

const COLUMNS: &str = "id, bulletin_id, rule, tier, repeat_count, repeat_gap_s, valid_from, valid_until, volume, tz, \
                       on_clash, slot_ms, created_at, cancelled_at, expanded_until, play_times";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        id: r.get(0)?,
        spec: NewSchedule {
            bulletin_id: r.get(1)?,
            rule: r.get(2)?,
            tier: r.get(3)?,
            repeat_count: r.get(4)?,
            repeat_gap_s: r.get(5)?,
            valid_from: r.get(6)?,
            valid_until: r.get(7)?,
            volume: r.get(8)?,
            tz: r.get(9)?,
            on_clash: r.get(10)?,
            slot_ms: r.get(11)?,
            play_times: r.get(15)?,
            targets: Vec::new(),
        },
        created_at: r.get(12)?,
        cancelled_at: r.get(13)?,
        expanded_until: r.get(14)?,
    })
}

fn with_targets(c: &Connection, mut s: ScheduleRow) -> Result<ScheduleRow, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT kind, target FROM schedule_targets WHERE schedule_id = ?1 ORDER BY rowid")?;
    s.spec.targets = stmt
        .query_map([s.id], |r| Ok((TargetKind::parse(&r.get::<_, String>(0)?), r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(s)
}

pub(crate) fn insert_schedule(c: &Connection, s: &NewSchedule, now_ms: i64) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO schedules (bulletin_id, rule, tier, repeat_count, repeat_gap_s, valid_from, valid_until, volume,
         tz, on_clash, slot_ms, created_at, play_times) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            s.bulletin_id,
            s.rule,
            s.tier,
            s.repeat_count,
            s.repeat_gap_s,
            s.valid_from,
            s.valid_until,
            s.volume,
            s.tz,
            s.on_clash,
            s.slot_ms,
            now_ms,
            s.play_times
        ],
    )?;
    let id = c.last_insert_rowid();
    for (kind, target) in &s.targets {
        c.execute(
            "INSERT INTO schedule_targets (schedule_id, kind, target) VALUES (?1, ?2, ?3)",
            params![id, kind.as_str(), target],
        )?;
    }
    Ok(id)
}

pub(crate) fn get_schedule(c: &Connection, id: i64) -> Result<ScheduleRow, StoreError> {
    let s = c
        .query_row(&format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"), [id], row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("schedule", id))?;
    with_targets(c, s)
}

/// Schedules not cancelled and not over by `now_ms`, whose bulletin is not cancelled.
pub(crate) fn active_schedules(c: &Connection, now_ms: i64) -> Result<Vec<ScheduleRow>, StoreError> {
    let cols = COLUMNS.split(", ").map(|c| format!("s.{}", c.trim())).collect::<Vec<_>>().join(", ");
    let mut stmt = c.prepare(&format!(
        "SELECT {cols} FROM schedules s JOIN bulletins b ON b.id = s.bulletin_id
         WHERE s.cancelled_at IS NULL AND b.cancelled_at IS NULL AND (s.valid_until IS NULL OR s.valid_until > ?1)
         ORDER BY s.id"
    ))?;
    let rows = stmt.query_map([now_ms], row)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(|s| with_targets(c, s)).collect()
}

pub(crate) fn set_expanded_until(c: &Connection, id: i64, until_ms: i64) -> Result<(), StoreError> {
    c.execute("UPDATE schedules SET expanded_until = ?2 WHERE id = ?1", params![id, until_ms])?;
    Ok(())
}

impl Store {
    /// One schedule with its targets.
    pub fn schedule(&self, id: i64) -> Result<ScheduleRow, StoreError> {
        self.with_conn(|c| get_schedule(c, id))
    }

    /// Every schedule, newest first.
    pub fn list_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM schedules ORDER BY id DESC"))?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(|s| with_targets(c, s)).collect()
        })
    }

    /// Cancels a schedule and its plays not yet started; returns how many plays were cancelled.
    pub fn cancel_schedule(&self, id: i64, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            get_schedule(&tx, id)?;
            tx.execute(
                "UPDATE schedules SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL",
                params![id, now_ms],
            )?;
            let n = tx.execute(
                "UPDATE plays SET status = 'cancelled', reason = 'the schedule was cancelled'
                 WHERE schedule_id = ?1 AND status IN ('planned', 'downloading', 'ready')",
                [id],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }
}
