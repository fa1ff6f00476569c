//! Plays: one schedule occurrence on one receiver (`p-` + 16 hex), unique per (schedule, receiver, planned_at)
//! so expanding a schedule twice adds nothing. Listing by schedule, receiver, bulletin or time, for the whole
//! admin tree or a user's areas; counted per schedule and time for a week view ([`PlaySlot`]); the "busy" view
//! that clash checks use (active plays with the length of their bulletin).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{random_id, Store, StoreError};

/// A play as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Play {
    /// `p-` + 16 hex.
    pub id: String,
    /// The schedule it comes from.
    pub schedule_id: i64,
    /// The receiver.
    pub receiver_id: String,
    /// The bulletin.
    pub bulletin_id: String,
    /// When, UTC ms.
    pub planned_at: i64,
    /// `normal` | `priority` | `emergency`.
    pub tier: String,
    /// `planned` | `downloading` | `ready` | `playing` | `played` | `missed` | `preempted` | `cancelled`.
    pub status: String,
    /// Download percent.
    pub progress: i64,
    /// Started, UTC ms.
    pub started_at: Option<i64>,
    /// Finished, UTC ms.
    pub finished_at: Option<i64>,
    /// Why it was missed, preempted or cancelled.
    pub reason: Option<String>,
}

/// Which plays to list (all given conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct PlayFilter {
    /// Of this schedule.
    pub schedule_id: Option<i64>,
    /// On this receiver.
    pub receiver_id: Option<String>,
    /// Of this bulletin.
    pub bulletin_id: Option<String>,
    /// Planned at or after this instant (UTC ms).
    pub from: Option<i64>,
    /// Planned before this instant (UTC ms).
    pub until: Option<i64>,
    /// Latest first (the default is earliest first).
    pub newest_first: bool,
    /// At most this many (default 1000).
    pub limit: Option<u32>,
}

impl PlayFilter {
    /// The ORDER BY clause for this filter, on columns of `table` (`""` or an alias with a dot).
    pub(super) fn order_by(&self, table: &str) -> String {
        let dir = if self.newest_first { "DESC" } else { "ASC" };
        format!("ORDER BY {table}planned_at {dir}, {table}receiver_id")
    }
}

/// A play to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewPlay<'a> {
    pub schedule_id: i64,
    pub receiver_id: &'a str,
    pub bulletin_id: &'a str,
    pub planned_at: i64,
    pub tier: &'a str,
    /// `planned`, or `cancelled` with a reason (a later occurrence that could not be placed).
    pub cancelled: Option<String>,
}

/// An active play occupying a receiver, for clash checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Busy {
    pub bulletin_id: String,
    pub title: String,
    pub start: i64,
    pub end: i64,
    pub tier: String,
}

/// The plays of one schedule at one planned time, counted ([`Store::play_slots`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaySlot {
    /// The schedule.
    pub schedule_id: i64,
    /// The bulletin.
    pub bulletin_id: String,
    /// When, UTC ms.
    pub planned_at: i64,
    /// `normal` | `priority` | `emergency`.
    pub tier: String,
    /// On how many receivers (not cancelled).
    pub receivers: i64,
}

/// SQL: "the play's receiver stands in the areas of the JSON array parameter `param`, or `param` is NULL".
fn in_areas(param: &str) -> String {
    format!(
        "({param} IS NULL OR receiver_id IN
          (SELECT id FROM receivers WHERE area_id IN (SELECT value FROM json_each({param}))))"
    )
}

const COLUMNS: &str =
    "id, schedule_id, receiver_id, bulletin_id, planned_at, tier, status, progress, started_at, finished_at, reason";

/// A play from a row of the columns in [`COLUMNS`]' order.
pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Play> {
    Ok(Play {
        id: r.get(0)?,
        schedule_id: r.get(1)?,
        receiver_id: r.get(2)?,
        bulletin_id: r.get(3)?,
        planned_at: r.get(4)?,
        tier: r.get(5)?,
        status: r.get(6)?,
        progress: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        reason: r.get(10)?,
    })
}

/// Inserts a play unless (schedule, receiver, planned_at) exists; returns whether it was inserted.
pub(crate) fn insert_play(c: &Connection, p: &NewPlay<'_>) -> Result<bool, StoreError> {
    let (status, reason) = match &p.cancelled {
        Some(reason) => ("cancelled", Some(reason.as_str())),
        None => ("planned", None),
    };
    let mut stmt = c.prepare_cached(
        "INSERT OR IGNORE INTO plays (id, schedule_id, receiver_id, bulletin_id, planned_at, tier, status, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let n = stmt.execute(params![
        random_id("p-", 8),
        p.schedule_id,
        p.receiver_id,
        p.bulletin_id,
        p.planned_at,
        p.tier,
        status,
        reason
    ])?;
    Ok(n == 1)
}

/// Active plays on `receiver` that may overlap [from, until): started up to 6 h before `from`.
pub(crate) fn busy_between(c: &Connection, receiver: &str, from: i64, until: i64) -> Result<Vec<Busy>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT p.bulletin_id, b.title, p.planned_at, p.planned_at + COALESCE(
                (SELECT MAX(v.duration_ms) FROM variants v WHERE v.bulletin_id = p.bulletin_id AND v.status = 'ready'),
                s.slot_ms), p.tier
         FROM plays p JOIN bulletins b ON b.id = p.bulletin_id JOIN schedules s ON s.id = p.schedule_id
         WHERE p.receiver_id = ?1 AND p.planned_at >= ?2 AND p.planned_at < ?3
           AND p.status IN ('planned', 'downloading', 'ready', 'playing')
         ORDER BY p.planned_at",
    )?;
    let rows = stmt
        .query_map(params![receiver, from - 6 * 3_600_000, until], |r| {
            Ok(Busy { bulletin_id: r.get(0)?, title: r.get(1)?, start: r.get(2)?, end: r.get(3)?, tier: r.get(4)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().filter(|b| b.end > from).collect())
}

impl Store {
    /// Plays matching `filter`, by planned time.
    pub fn plays(&self, filter: &PlayFilter) -> Result<Vec<Play>, StoreError> {
        self.plays_scoped(filter, None)
    }

    /// Plays matching `filter` on receivers standing in `areas` (a user's subtree of the admin tree), by planned
    /// time; filtered in SQL so that the limit counts only what the user may see.
    pub fn plays_in_areas(&self, filter: &PlayFilter, areas: &[i64]) -> Result<Vec<Play>, StoreError> {
        self.plays_scoped(filter, Some(areas))
    }

    fn plays_scoped(&self, filter: &PlayFilter, areas: Option<&[i64]>) -> Result<Vec<Play>, StoreError> {
        let areas = areas.map(|a| serde_json::Value::from(a.to_vec()).to_string());
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM plays
                 WHERE (?1 IS NULL OR schedule_id = ?1) AND (?2 IS NULL OR receiver_id = ?2)
                   AND (?3 IS NULL OR bulletin_id = ?3)
                   AND (?5 IS NULL OR planned_at >= ?5) AND (?6 IS NULL OR planned_at < ?6)
                   AND {}
                 {} LIMIT ?4",
                in_areas("?7"),
                filter.order_by("")
            ))?;
            let list = stmt
                .query_map(
                    params![
                        filter.schedule_id,
                        filter.receiver_id,
                        filter.bulletin_id,
                        filter.limit.unwrap_or(1000),
                        filter.from,
                        filter.until,
                        areas
                    ],
                    row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// The plays planned in `[from, until)` (UTC ms), not cancelled, counted per (schedule, planned time): what
    /// a week on one screen shows, however many receivers a schedule reaches. `areas` as in
    /// [`Store::plays_in_areas`]; `None` is the whole tree.
    pub fn play_slots(&self, from: i64, until: i64, areas: Option<&[i64]>) -> Result<Vec<PlaySlot>, StoreError> {
        let areas = areas.map(|a| serde_json::Value::from(a.to_vec()).to_string());
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT schedule_id, bulletin_id, planned_at, tier, COUNT(*) FROM plays
                 WHERE planned_at >= ?1 AND planned_at < ?2 AND status != 'cancelled' AND {}
                 GROUP BY schedule_id, planned_at, bulletin_id, tier
                 ORDER BY planned_at, schedule_id",
                in_areas("?3")
            ))?;
            let list = stmt
                .query_map(params![from, until, areas], |r| {
                    Ok(PlaySlot {
                        schedule_id: r.get(0)?,
                        bulletin_id: r.get(1)?,
                        planned_at: r.get(2)?,
                        tier: r.get(3)?,
                        receivers: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// One play.
    pub fn play(&self, id: &str) -> Result<Play, StoreError> {
        self.with_conn(|c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM plays WHERE id = ?1"), [id], row)
                .optional()?
                .ok_or_else(|| StoreError::not_found("play", id))
        })
    }

    /// Cancels one play not yet started; returns whether it was.
    pub fn cancel_play(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE plays SET status = 'cancelled', reason = ?2
                 WHERE id = ?1 AND status IN ('planned', 'downloading', 'ready')",
                params![id, reason],
            )?;
            Ok(n == 1)
        })
    }
}
