//! What people read about the fleet: health samples (kept from heartbeats for the receiver page's chart), the
//! dashboard (receivers by commune, what plays now, today's plays), proof of play per bulletin and area, and the
//! counts behind `/metrics`. Reading functions take `within`: the root of the area subtree the caller may see
//! (`None` = everything).

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::alerts::within_clause;
use super::{Store, StoreError};

/// At most one health sample per receiver this often.
pub const HEALTH_SAMPLE_EVERY_MS: i64 = 5 * 60 * 1000;
/// Health samples are kept this long.
pub const HEALTH_SAMPLE_KEEP_MS: i64 = 14 * 24 * 3600 * 1000;

/// One stored heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSample {
    /// Received, UTC ms.
    pub at: i64,
    /// The Health message, JSON as received.
    pub health: String,
}

/// A receiver on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DashboardReceiver {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its area (village).
    pub area_id: i64,
    /// That area's name.
    pub area_name: String,
    /// Connected.
    pub online: bool,
    /// Last heard from, UTC ms.
    pub last_seen: Option<i64>,
    /// Open alerts about it.
    pub open_alerts: i64,
}

/// Receivers of one commune (or of an area outside any commune).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommuneGroup {
    /// The commune's area id.
    pub area_id: i64,
    /// Its name.
    pub name: String,
    /// Receivers online.
    pub online: i64,
    /// Receivers offline.
    pub offline: i64,
    /// The receivers, by name.
    pub receivers: Vec<DashboardReceiver>,
}

/// A play on air now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NowPlaying {
    /// Play id.
    pub play_id: String,
    /// Receiver.
    pub receiver_id: String,
    /// Receiver name.
    pub receiver_name: String,
    /// Bulletin.
    pub bulletin_id: String,
    /// Bulletin title.
    pub title: String,
    /// normal | priority | emergency.
    pub tier: String,
    /// Planned, UTC ms.
    pub planned_at: i64,
    /// Started, UTC ms.
    pub started_at: Option<i64>,
}

/// The dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dashboard {
    /// Receivers online.
    pub online: i64,
    /// Receivers offline.
    pub offline: i64,
    /// Alerts open.
    pub open_alerts: i64,
    /// Receivers by commune, communes by name.
    pub communes: Vec<CommuneGroup>,
    /// Plays on air now.
    pub playing: Vec<NowPlaying>,
    /// The day's plays by status (every status listed).
    pub today: BTreeMap<String, i64>,
}

/// Every play status, in lifecycle order.
pub const PLAY_STATUSES: [&str; 8] =
    ["planned", "downloading", "ready", "playing", "played", "missed", "preempted", "cancelled"];

/// Which plays a proof-of-play report covers.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// From this instant (UTC ms, inclusive).
    pub from_ms: i64,
    /// Until this instant (UTC ms, exclusive).
    pub until_ms: i64,
    /// Only receivers in this area's subtree.
    pub area: Option<i64>,
    /// Only this bulletin.
    pub bulletin: Option<String>,
    /// At most this many play rows (the summary always counts them all).
    pub max_rows: usize,
}

/// Planned vs played vs missed for one bulletin in one area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    /// Bulletin.
    pub bulletin_id: String,
    /// Its title.
    pub title: String,
    /// The receivers' area.
    pub area_id: i64,
    /// Its name.
    pub area_name: String,
    /// Plays meant to go on air (every play but cancelled ones).
    pub planned: i64,
    /// Played to the end.
    pub played: i64,
    /// Did not play.
    pub missed: i64,
    /// Cut off by something more urgent or stopped.
    pub preempted: i64,
    /// Cancelled before air (not counted in `planned`).
    pub cancelled: i64,
    /// Not yet played (planned, downloading, ready, playing).
    pub pending: i64,
    /// Why plays were missed: (reason, count), most frequent first.
    pub missed_reasons: Vec<(String, i64)>,
}

/// One play in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportPlay {
    /// Play id.
    pub play_id: String,
    /// Planned, UTC ms.
    pub planned_at: i64,
    /// Bulletin.
    pub bulletin_id: String,
    /// Its title.
    pub title: String,
    /// The receiver's area.
    pub area_id: i64,
    /// Its name.
    pub area_name: String,
    /// Receiver.
    pub receiver_id: String,
    /// Its name.
    pub receiver_name: String,
    /// normal | priority | emergency.
    pub tier: String,
    /// Status.
    pub status: String,
    /// Started, UTC ms.
    pub started_at: Option<i64>,
    /// Finished, UTC ms.
    pub finished_at: Option<i64>,
    /// Why missed, preempted or cancelled.
    pub reason: Option<String>,
}

/// A proof-of-play report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlayReport {
    /// Per bulletin and area, by title then area name.
    pub summary: Vec<ReportSummary>,
    /// Per play, by time.
    pub plays: Vec<ReportPlay>,
    /// More plays matched than `max_rows`.
    pub truncated: bool,
}

/// The counts behind `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetCounts {
    /// Receivers connected.
    pub receivers_online: i64,
    /// Receivers seen once, not connected now.
    pub receivers_offline: i64,
    /// Receivers never heard from.
    pub receivers_never_seen: i64,
    /// Plays by status (every status listed).
    pub plays: Vec<(&'static str, i64)>,
}

const PLAY_COLUMNS: &str = "p.id, p.planned_at, p.bulletin_id, b.title, r.area_id, a.name, p.receiver_id, r.name,
     p.tier, p.status, p.started_at, p.finished_at, p.reason";
const PLAY_JOINS: &str = "FROM plays p JOIN receivers r ON r.id = p.receiver_id JOIN areas a ON a.id = r.area_id
     JOIN bulletins b ON b.id = p.bulletin_id";

fn report_play(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportPlay> {
    Ok(ReportPlay {
        play_id: r.get(0)?,
        planned_at: r.get(1)?,
        bulletin_id: r.get(2)?,
        title: r.get(3)?,
        area_id: r.get(4)?,
        area_name: r.get(5)?,
        receiver_id: r.get(6)?,
        receiver_name: r.get(7)?,
        tier: r.get(8)?,
        status: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        reason: r.get(12)?,
    })
}

/// The nearest commune above (or at) each area, else the area itself.
fn commune_of(c: &Connection) -> Result<HashMap<i64, (i64, String)>, StoreError> {
    let mut stmt = c.prepare("SELECT id, name, kind, parent_id FROM areas")?;
    let areas: HashMap<i64, (String, String, Option<i64>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?.collect::<Result<_, _>>()?;
    let mut out = HashMap::new();
    for (&id, (name, _, _)) in &areas {
        let mut at = Some(id);
        let mut found = None;
        for _ in 0..64 {
            let Some(a) = at else { break };
            let Some((n, kind, parent)) = areas.get(&a) else { break };
            if kind == "commune" {
                found = Some((a, n.clone()));
                break;
            }
            at = *parent;
        }
        out.insert(id, found.unwrap_or_else(|| (id, name.clone())));
    }
    Ok(out)
}

fn count_by_status(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut map: BTreeMap<String, i64> = PLAY_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    let mut stmt = c.prepare(sql)?;
    for row in stmt.query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (status, n) = row?;
        map.insert(status, n);
    }
    Ok(map)
}

impl Store {
    /// Keeps a heartbeat for the history if the receiver's last kept one is at least
    /// [`HEALTH_SAMPLE_EVERY_MS`] old, and forgets its samples older than [`HEALTH_SAMPLE_KEEP_MS`]. Returns
    /// whether it kept this one. (Written by dispatch for every heartbeat: no scope.)
    pub fn record_health_sample(&self, receiver: &str, health_json: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let last: Option<i64> = tx
                .query_row("SELECT MAX(at) FROM health_samples WHERE receiver_id = ?1", [receiver], |r| r.get(0))
                .optional()?
                .flatten();
            let due = last.is_none_or(|l| now_ms - l >= HEALTH_SAMPLE_EVERY_MS || now_ms < l);
            if due {
                tx.execute(
                    "INSERT OR REPLACE INTO health_samples (receiver_id, at, health) VALUES (?1, ?2, ?3)",
                    params![receiver, now_ms, health_json],
                )?;
                tx.execute(
                    "DELETE FROM health_samples WHERE receiver_id = ?1 AND at < ?2",
                    params![receiver, now_ms - HEALTH_SAMPLE_KEEP_MS],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
    }

    /// A receiver's health samples since `since_ms`, oldest first. Not found outside `within`.
    pub fn health_history(
        &self,
        receiver: &str,
        since_ms: i64,
        within: Option<i64>,
    ) -> Result<Vec<HealthSample>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "area_id", within)?;
            let known: Option<i64> = c
                .query_row(&format!("SELECT 1 FROM receivers WHERE id = ?1 AND {scope}"), [receiver], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Err(StoreError::not_found("receiver", receiver));
            }
            let mut stmt =
                c.prepare("SELECT at, health FROM health_samples WHERE receiver_id = ?1 AND at >= ?2 ORDER BY at")?;
            let rows =
                stmt.query_map(params![receiver, since_ms], |r| Ok(HealthSample { at: r.get(0)?, health: r.get(1)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// A receiver's plays planned in `[from_ms, until_ms]`, newest first (at most 1000). Not found outside
    /// `within`.
    pub fn receiver_plays(
        &self,
        receiver: &str,
        from_ms: i64,
        until_ms: i64,
        within: Option<i64>,
    ) -> Result<Vec<ReportPlay>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "r.area_id", within)?;
            let known: Option<i64> = c
                .query_row(&format!("SELECT 1 FROM receivers r WHERE r.id = ?1 AND {scope}"), [receiver], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Err(StoreError::not_found("receiver", receiver));
            }
            let mut stmt = c.prepare(&format!(
                "SELECT {PLAY_COLUMNS} {PLAY_JOINS}
                  WHERE p.receiver_id = ?1 AND p.planned_at BETWEEN ?2 AND ?3
                  ORDER BY p.planned_at DESC, p.id LIMIT 1000"
            ))?;
            let rows = stmt.query_map(params![receiver, from_ms, until_ms], report_play)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The dashboard at `now_ms`, with "today" being `[day_from_ms, day_until_ms)`.
    pub fn dashboard(
        &self,
        now_ms: i64,
        day_from_ms: i64,
        day_until_ms: i64,
        within: Option<i64>,
    ) -> Result<Dashboard, StoreError> {
        self.with_conn(|c| {
            let communes = commune_of(c)?;
            let scope = within_clause(c, "r.area_id", within)?;
            let mut stmt = c.prepare(&format!(
                "SELECT r.id, r.name, r.area_id, a.name, r.online, r.last_seen,
                        (SELECT COUNT(*) FROM alerts al WHERE al.receiver_id = r.id AND al.resolved_at IS NULL)
                   FROM receivers r JOIN areas a ON a.id = r.area_id WHERE {scope} ORDER BY r.name, r.id"
            ))?;
            let receivers = stmt
                .query_map([], |r| {
                    Ok(DashboardReceiver {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        area_id: r.get(2)?,
                        area_name: r.get(3)?,
                        online: r.get::<_, i64>(4)? != 0,
                        last_seen: r.get(5)?,
                        open_alerts: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut groups: BTreeMap<(String, i64), CommuneGroup> = BTreeMap::new();
            let (mut online, mut offline) = (0, 0);
            for rx in receivers {
                let (id, name) = communes.get(&rx.area_id).cloned().unwrap_or((rx.area_id, rx.area_name.clone()));
                let group = groups.entry((name.clone(), id)).or_insert_with(|| CommuneGroup {
                    area_id: id,
                    name,
                    online: 0,
                    offline: 0,
                    receivers: Vec::new(),
                });
                if rx.online {
                    group.online += 1;
                    online += 1;
                } else {
                    group.offline += 1;
                    offline += 1;
                }
                group.receivers.push(rx);
            }
            let mut stmt = c.prepare(&format!(
                "SELECT p.id, p.receiver_id, r.name, p.bulletin_id, b.title, p.tier, p.planned_at, p.started_at
                   FROM plays p JOIN receivers r ON r.id = p.receiver_id JOIN bulletins b ON b.id = p.bulletin_id
                  WHERE p.status = 'playing' AND p.planned_at BETWEEN ?1 AND ?2 AND {scope}
                  ORDER BY p.planned_at, r.name"
            ))?;
            // A play still 'playing' six hours on lost its last report; it is not on air.
            let playing = stmt
                .query_map(params![now_ms - 6 * 3600 * 1000, now_ms + 60_000], |r| {
                    Ok(NowPlaying {
                        play_id: r.get(0)?,
                        receiver_id: r.get(1)?,
                        receiver_name: r.get(2)?,
                        bulletin_id: r.get(3)?,
                        title: r.get(4)?,
                        tier: r.get(5)?,
                        planned_at: r.get(6)?,
                        started_at: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let today = count_by_status(
                c,
                &format!(
                    "SELECT p.status, COUNT(*) FROM plays p JOIN receivers r ON r.id = p.receiver_id
                      WHERE p.planned_at >= ?1 AND p.planned_at < ?2 AND {scope} GROUP BY p.status"
                ),
                params![day_from_ms, day_until_ms],
            )?;
            let alert_scope = within_clause(c, "area_id", within)?;
            let open_alerts: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL AND {alert_scope}"),
                [],
                |r| r.get(0),
            )?;
            Ok(Dashboard { online, offline, open_alerts, communes: groups.into_values().collect(), playing, today })
        })
    }

    /// Proof of play: planned vs played vs missed per bulletin and area, and the plays themselves. An `area`
    /// outside `within` is not found.
    pub fn play_report(&self, q: &ReportQuery, within: Option<i64>) -> Result<PlayReport, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "r.area_id", within)?;
            let area = match q.area {
                None => "1".to_string(),
                Some(id) => {
                    let inside: Option<i64> = c
                        .query_row(
                            &format!("SELECT 1 FROM areas r WHERE {} AND r.id = ?1", within_clause(c, "r.id", within)?),
                            [id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if inside.is_none() {
                        return Err(StoreError::not_found("area", id));
                    }
                    within_clause(c, "r.area_id", Some(id))?
                }
            };
            if let Some(b) = &q.bulletin {
                let known: Option<i64> =
                    c.query_row("SELECT 1 FROM bulletins WHERE id = ?1", [b], |r| r.get(0)).optional()?;
                if known.is_none() {
                    return Err(StoreError::not_found("bulletin", b));
                }
            }
            let filter = format!(
                "{PLAY_JOINS}
                WHERE p.planned_at >= ?1 AND p.planned_at < ?2 AND (?3 IS NULL OR p.bulletin_id = ?3)
                  AND {scope} AND {area}"
            );
            let args = params![q.from_ms, q.until_ms, q.bulletin];
            let mut stmt = c.prepare(&format!(
                "SELECT p.bulletin_id, b.title, r.area_id, a.name,
                        SUM(p.status <> 'cancelled'), SUM(p.status = 'played'), SUM(p.status = 'missed'),
                        SUM(p.status = 'preempted'), SUM(p.status = 'cancelled'),
                        SUM(p.status IN ('planned', 'downloading', 'ready', 'playing'))
                 {filter} GROUP BY p.bulletin_id, r.area_id ORDER BY b.title, a.name, p.bulletin_id, r.area_id"
            ))?;
            let mut summary = stmt
                .query_map(args, |r| {
                    Ok(ReportSummary {
                        bulletin_id: r.get(0)?,
                        title: r.get(1)?,
                        area_id: r.get(2)?,
                        area_name: r.get(3)?,
                        planned: r.get(4)?,
                        played: r.get(5)?,
                        missed: r.get(6)?,
                        preempted: r.get(7)?,
                        cancelled: r.get(8)?,
                        pending: r.get(9)?,
                        missed_reasons: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = c.prepare(&format!(
                "SELECT p.bulletin_id, r.area_id, COALESCE(p.reason, 'unknown'), COUNT(*)
                 {filter} AND p.status = 'missed' GROUP BY 1, 2, 3 ORDER BY 4 DESC, 3"
            ))?;
            for row in stmt.query_map(args, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })? {
                let (bulletin, area, reason, n) = row?;
                if let Some(s) = summary.iter_mut().find(|s| s.bulletin_id == bulletin && s.area_id == area) {
                    s.missed_reasons.push((reason, n));
                }
            }
            let mut stmt = c.prepare(&format!(
                "SELECT {PLAY_COLUMNS} {filter} ORDER BY p.planned_at, a.name, r.name, p.id LIMIT ?4"
            ))?;
            let limit = i64::try_from(q.max_rows).unwrap_or(i64::MAX).saturating_add(1);
            let mut plays = stmt
                .query_map(params![q.from_ms, q.until_ms, q.bulletin, limit], report_play)?
                .collect::<Result<Vec<_>, _>>()?;
            let truncated = plays.len() > q.max_rows;
            plays.truncate(q.max_rows);
            Ok(PlayReport { summary, plays, truncated })
        })
    }

    /// Receivers by state and plays by status, for `/metrics`.
    pub fn fleet_counts(&self, within: Option<i64>) -> Result<FleetCounts, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "r.area_id", within)?;
            let (online, offline, never): (i64, i64, i64) = c.query_row(
                &format!(
                    "SELECT COALESCE(SUM(r.online = 1), 0), COALESCE(SUM(r.online = 0 AND r.last_seen IS NOT NULL), 0),
                            COALESCE(SUM(r.online = 0 AND r.last_seen IS NULL), 0)
                       FROM receivers r WHERE {scope}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let by_status = if within.is_none() {
                count_by_status(c, "SELECT status, COUNT(*) FROM plays GROUP BY status", [])?
            } else {
                count_by_status(
                    c,
                    &format!(
                        "SELECT p.status, COUNT(*) FROM plays p JOIN receivers r ON r.id = p.receiver_id
                          WHERE {scope} GROUP BY p.status"
                    ),
                    [],
                )?
            };
            let plays = PLAY_STATUSES.iter().map(|s| (*s, by_status.get(*s).copied().unwrap_or(0))).collect::<Vec<_>>();
            Ok(FleetCounts { receivers_online: online, receivers_offline: offline, receivers_never_seen: never, plays })
        })
    }
}

/// Fixtures for tests of alerts, reports and their routes.
#[cfg(test)]
pub(crate) mod testing {
    use rusqlite::{params, OptionalExtension};

    use crate::store::{random_id, Store};

    /// Inserts a bulletin (title only): for tests.
    pub(crate) fn add_bulletin(store: &Store, title: &str) -> String {
        let id = random_id("b-", 6);
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO bulletins (id, title, category, created_at) VALUES (?1, ?2, 'other', 0)",
                    params![id, title],
                )?;
                Ok(())
            })
            .unwrap();
        id
    }

    /// Inserts a play with this status (and, once per bulletin, a schedule for it): for tests. A played play
    /// started at its time and took a minute.
    pub(crate) fn add_play(
        store: &Store,
        receiver: &str,
        bulletin: &str,
        planned_at: i64,
        status: &str,
        reason: Option<&str>,
    ) -> String {
        let id = random_id("p-", 8);
        store
            .with_conn(|c| {
                let found: Option<i64> = c
                    .query_row("SELECT id FROM schedules WHERE bulletin_id = ?1", [bulletin], |r| r.get(0))
                    .optional()?;
                let schedule = match found {
                    Some(s) => s,
                    None => {
                        c.execute(
                            "INSERT INTO schedules (bulletin_id, rule, tier, created_at)
                             VALUES (?1, '{}', 'normal', 0)",
                            [bulletin],
                        )?;
                        c.last_insert_rowid()
                    }
                };
                let played = matches!(status, "played" | "playing");
                c.execute(
                    "INSERT INTO plays (id, schedule_id, receiver_id, bulletin_id, planned_at, tier, status, reason,
                                        started_at, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'normal', ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        schedule,
                        receiver,
                        bulletin,
                        planned_at,
                        status,
                        reason,
                        played.then_some(planned_at),
                        (status == "played").then_some(planned_at + 60_000)
                    ],
                )?;
                Ok(())
            })
            .unwrap();
        id
    }

    /// Sets a play's status and reason: for tests.
    pub(crate) fn set_status(store: &Store, play: &str, status: &str, reason: Option<&str>) {
        store
            .with_conn(|c| {
                c.execute("UPDATE plays SET status = ?2, reason = ?3 WHERE id = ?1", params![play, status, reason])?;
                Ok(())
            })
            .unwrap();
    }
}
