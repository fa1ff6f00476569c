//! Alerts as stored (`alerts` in `schema_v5.sql`): listing and acknowledging them for the API, and what the
//! evaluator in [`crate::alerts`] reads (the fleet's state, the open alerts, missed plays) and writes (opens,
//! resolves). Every reading function takes `within`: the root of an area subtree the caller may see (`None` =
//! everything); an alert is in it when its area is.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};

/// What an alert is about: one per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The receiver has been offline too long during broadcast hours.
    Offline,
    /// A play did not happen (one alert per missed play).
    MissedPlay,
    /// The loudspeaker line is open or shorted.
    SpeakerFault,
    /// The amplifier reports a fault.
    AmpFault,
    /// Too little free disk.
    DiskFull,
    /// The receiver's clock is too far off.
    ClockOffset,
    /// The receiver runs too hot.
    Temperature,
}

impl AlertKind {
    /// Every kind, in a stable order (metrics list them all, zeros included).
    pub const ALL: [AlertKind; 7] = [
        AlertKind::Offline,
        AlertKind::MissedPlay,
        AlertKind::SpeakerFault,
        AlertKind::AmpFault,
        AlertKind::DiskFull,
        AlertKind::ClockOffset,
        AlertKind::Temperature,
    ];

    /// The name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Offline => "offline",
            AlertKind::MissedPlay => "missed_play",
            AlertKind::SpeakerFault => "speaker_fault",
            AlertKind::AmpFault => "amp_fault",
            AlertKind::DiskFull => "disk_full",
            AlertKind::ClockOffset => "clock_offset",
            AlertKind::Temperature => "temperature",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An alert, with the names people recognise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Id.
    pub id: i64,
    /// Which rule.
    pub kind: AlertKind,
    /// The receiver, if it is about one.
    pub receiver_id: Option<String>,
    /// Its name.
    pub receiver_name: Option<String>,
    /// The receiver's area when the alert opened.
    pub area_id: Option<i64>,
    /// That area's name.
    pub area_name: Option<String>,
    /// The play, for a missed play.
    pub play_id: Option<String>,
    /// What is wrong, for people.
    pub detail: String,
    /// Opened, UTC ms.
    pub opened_at: i64,
    /// Acknowledged, UTC ms.
    pub acknowledged_at: Option<i64>,
    /// By whom.
    pub acknowledged_by: Option<String>,
    /// Resolved, UTC ms (`None`: open).
    pub resolved_at: Option<i64>,
}

/// An open alert, as the evaluator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    /// Id.
    pub id: i64,
    /// Which rule.
    pub kind: AlertKind,
    /// The receiver.
    pub receiver_id: Option<String>,
}

/// One receiver's state, as the alert rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverState {
    /// Receiver id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its area.
    pub area_id: i64,
    /// Connected, as far as the controller knows.
    pub online: bool,
    /// Last heard from, UTC ms.
    pub last_seen: Option<i64>,
    /// Registered, UTC ms.
    pub created_at: i64,
    /// Last heartbeat, JSON as received.
    pub health: Option<String>,
    /// When it came.
    pub health_at: Option<i64>,
}

/// A missed play that has no alert yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedPlay {
    /// Play id.
    pub play_id: String,
    /// Receiver.
    pub receiver_id: String,
    /// Receiver name.
    pub receiver_name: String,
    /// Its area.
    pub area_id: i64,
    /// Bulletin title.
    pub title: String,
    /// When it should have played, UTC ms.
    pub planned_at: i64,
    /// Why it did not.
    pub reason: Option<String>,
}

/// An SQL condition saying that `column` (an area id) lies in the subtree of `within`: `1` for `None`, else
/// `column IN (ids)`. The ids are integers read from the database, so formatting them in is safe.
pub(crate) fn within_clause(c: &Connection, column: &str, within: Option<i64>) -> Result<String, StoreError> {
    match within {
        None => Ok("1".into()),
        Some(root) => {
            let ids = super::areas::subtree(c, root)?;
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            Ok(format!("{column} IN ({list})"))
        }
    }
}

const ALERT_SELECT: &str = "SELECT al.id, al.kind, al.receiver_id, r.name, al.area_id, a.name, al.play_id, al.detail,
        al.opened_at, al.acknowledged_at, al.acknowledged_by, al.resolved_at
   FROM alerts al LEFT JOIN receivers r ON r.id = al.receiver_id LEFT JOIN areas a ON a.id = al.area_id";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let kind: String = r.get(1)?;
    Ok(Alert {
        id: r.get(0)?,
        kind: AlertKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("alert kind {kind}").into(),
            )
        })?,
        receiver_id: r.get(2)?,
        receiver_name: r.get(3)?,
        area_id: r.get(4)?,
        area_name: r.get(5)?,
        play_id: r.get(6)?,
        detail: r.get(7)?,
        opened_at: r.get(8)?,
        acknowledged_at: r.get(9)?,
        acknowledged_by: r.get(10)?,
        resolved_at: r.get(11)?,
    })
}

fn get_alert(c: &Connection, id: i64, within: Option<i64>) -> Result<Alert, StoreError> {
    let scope = within_clause(c, "al.area_id", within)?;
    c.query_row(&format!("{ALERT_SELECT} WHERE al.id = ?1 AND {scope}"), [id], alert_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("alert", id))
}

impl Store {
    /// Alerts, newest first: only open ones (not resolved) if `open_only`; at most `limit`.
    pub fn alerts(&self, open_only: bool, limit: u32, within: Option<i64>) -> Result<Vec<Alert>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "al.area_id", within)?;
            let open = if open_only { "al.resolved_at IS NULL" } else { "1" };
            let mut stmt = c.prepare(&format!(
                "{ALERT_SELECT} WHERE {open} AND {scope} ORDER BY al.opened_at DESC, al.id DESC LIMIT ?1"
            ))?;
            let list = stmt.query_map([limit], alert_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// One alert.
    pub fn alert(&self, id: i64, within: Option<i64>) -> Result<Alert, StoreError> {
        self.with_conn(|c| get_alert(c, id, within))
    }

    /// Acknowledges an alert (once: a second acknowledgement keeps the first). A condition alert stays open
    /// until its cause goes away; a missed-play alert, which has no cause left to go away, is resolved too.
    pub fn ack_alert(&self, id: i64, by: &str, now_ms: i64, within: Option<i64>) -> Result<Alert, StoreError> {
        self.with_conn(|c| {
            let alert = get_alert(c, id, within)?;
            if alert.acknowledged_at.is_none() {
                c.execute(
                    "UPDATE alerts SET acknowledged_at = ?2, acknowledged_by = ?3 WHERE id = ?1",
                    params![id, now_ms, by],
                )?;
            }
            if alert.kind == AlertKind::MissedPlay && alert.resolved_at.is_none() {
                c.execute("UPDATE alerts SET resolved_at = ?2 WHERE id = ?1", params![id, now_ms])?;
            }
            get_alert(c, id, within)
        })
    }

    /// Open alerts per kind (every kind listed, zeros included).
    pub fn open_alert_counts(&self, within: Option<i64>) -> Result<Vec<(AlertKind, i64)>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "al.area_id", within)?;
            let mut stmt = c.prepare(&format!(
                "SELECT al.kind, COUNT(*) FROM alerts al WHERE al.resolved_at IS NULL AND {scope} GROUP BY al.kind"
            ))?;
            let found = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AlertKind::ALL
                .into_iter()
                .map(|k| (k, found.iter().find(|(name, _)| name == k.as_str()).map_or(0, |(_, n)| *n)))
                .collect())
        })
    }

    /// Every receiver's state, for the rules.
    pub fn fleet_state(&self, within: Option<i64>) -> Result<Vec<ReceiverState>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "area_id", within)?;
            let mut stmt = c.prepare(&format!(
                "SELECT id, name, area_id, online, last_seen, created_at, health, health_at
                   FROM receivers WHERE {scope} ORDER BY id"
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok(ReceiverState {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    area_id: r.get(2)?,
                    online: r.get::<_, i64>(3)? != 0,
                    last_seen: r.get(4)?,
                    created_at: r.get(5)?,
                    health: r.get(6)?,
                    health_at: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Open alerts about receivers' conditions (every kind but missed plays).
    pub fn open_condition_alerts(&self, within: Option<i64>) -> Result<Vec<OpenAlert>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "area_id", within)?;
            let mut stmt = c.prepare(&format!(
                "SELECT id, kind, receiver_id FROM alerts
                  WHERE resolved_at IS NULL AND kind <> 'missed_play' AND {scope} ORDER BY id"
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, receiver_id) = row?;
                if let Some(kind) = AlertKind::parse(&kind) {
                    out.push(OpenAlert { id, kind, receiver_id });
                }
            }
            Ok(out)
        })
    }

    /// Opens an alert unless the same (kind, receiver, play) is open already; returns whether it opened one.
    pub fn open_alert(
        &self,
        kind: AlertKind,
        receiver_id: Option<&str>,
        area_id: Option<i64>,
        play_id: Option<&str>,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO alerts (kind, receiver_id, area_id, play_id, detail, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![kind.as_str(), receiver_id, area_id, play_id, detail, now_ms],
            )?;
            Ok(n == 1)
        })
    }

    /// Resolves an open alert; returns whether it was open.
    pub fn resolve_alert(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE alerts SET resolved_at = ?2 WHERE id = ?1 AND resolved_at IS NULL",
                params![id, now_ms],
            )?;
            Ok(n == 1)
        })
    }

    /// Missed plays planned since `since_ms` that never had an alert (open or closed), in time order.
    pub fn missed_plays_without_alert(
        &self,
        since_ms: i64,
        within: Option<i64>,
    ) -> Result<Vec<MissedPlay>, StoreError> {
        self.with_conn(|c| {
            let scope = within_clause(c, "r.area_id", within)?;
            let mut stmt = c.prepare(&format!(
                "SELECT p.id, p.receiver_id, r.name, r.area_id, b.title, p.planned_at, p.reason
                   FROM plays p JOIN receivers r ON r.id = p.receiver_id JOIN bulletins b ON b.id = p.bulletin_id
                  WHERE p.status = 'missed' AND p.planned_at >= ?1 AND {scope}
                    AND NOT EXISTS (SELECT 1 FROM alerts al WHERE al.play_id = p.id AND al.kind = 'missed_play')
                  ORDER BY p.planned_at, p.id"
            ))?;
            let rows = stmt.query_map([since_ms], |r| {
                Ok(MissedPlay {
                    play_id: r.get(0)?,
                    receiver_id: r.get(1)?,
                    receiver_name: r.get(2)?,
                    area_id: r.get(3)?,
                    title: r.get(4)?,
                    planned_at: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Resolves the open missed-play alerts whose play is no longer missed (a late report said it played);
    /// returns how many.
    pub fn resolve_recovered_plays(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "UPDATE alerts SET resolved_at = ?1
                  WHERE kind = 'missed_play' AND resolved_at IS NULL
                    AND EXISTS (SELECT 1 FROM plays p WHERE p.id = alerts.play_id AND p.status <> 'missed')",
                [now_ms],
            )?)
        })
    }
}
