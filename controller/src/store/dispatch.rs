//! What dispatch reads and writes: each receiver's upcoming plays with their ready language variants, the plan
//! version last published, online state and health, play reports (deduplicated) and download progress.
//! Plain SQL on the tables of `schema_v1.sql`; the API side lives in the sibling modules.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// A receiver, as dispatch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverRow {
    /// Receiver id (MQTT client id).
    pub id: String,
    /// The village (or other node) it belongs to.
    pub area_id: i64,
}

/// One upcoming play of one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayRow {
    /// 'p-' + 16 hex.
    pub id: String,
    /// UTC ms.
    pub planned_at: i64,
    /// normal | priority | emergency.
    pub tier: String,
    /// The bulletin.
    pub bulletin_id: String,
    /// 0..1, if set on the schedule.
    pub volume: Option<f64>,
    /// Times the audio plays within the play.
    pub times: i64,
    /// Silence between those times, seconds.
    pub gap_s: i64,
    /// The schedule's end of validity (an emergency's expiry), UTC ms.
    pub valid_until: Option<i64>,
    /// Length of the whole play (all its times), ms.
    pub slot_ms: i64,
}

/// One ready (encoded) language variant of a bulletin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRow {
    /// Bulletin id.
    pub bulletin_id: String,
    /// Language code.
    pub language: String,
    /// Hex SHA-256 of the Ogg Opus file.
    pub sha256: String,
    /// File size.
    pub bytes: i64,
    /// Playing time.
    pub duration_ms: i64,
    /// Bulletin title.
    pub title: String,
    /// Bulletin category.
    pub category: String,
}

impl VariantRow {
    /// Its id on the wire: `{bulletin_id}-{language}`.
    pub fn protocol_id(&self) -> String {
        format!("{}-{}", self.bulletin_id, self.language)
    }
}

/// Every receiver.
pub fn receivers(store: &Store) -> Result<Vec<ReceiverRow>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare("SELECT id, area_id FROM receivers ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok(ReceiverRow { id: r.get(0)?, area_id: r.get(1)? }))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// A receiver's plays with `from_ms <= planned_at <= until_ms` that may still happen or are on air, in time
/// order.
pub fn upcoming_plays(store: &Store, receiver: &str, from_ms: i64, until_ms: i64) -> Result<Vec<PlayRow>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT p.id, p.planned_at, p.tier, p.bulletin_id, s.volume, s.play_times, s.repeat_gap_s, s.valid_until,
                    s.slot_ms
               FROM plays p
               JOIN schedules s ON s.id = p.schedule_id
               JOIN bulletins b ON b.id = p.bulletin_id
              WHERE p.receiver_id = ?1 AND p.planned_at BETWEEN ?2 AND ?3
                AND p.status IN ('planned', 'downloading', 'ready', 'playing')
                AND s.cancelled_at IS NULL AND b.cancelled_at IS NULL
              ORDER BY p.planned_at, p.id",
        )?;
        let rows = stmt.query_map(params![receiver, from_ms, until_ms], |r| {
            Ok(PlayRow {
                id: r.get(0)?,
                planned_at: r.get(1)?,
                tier: r.get(2)?,
                bulletin_id: r.get(3)?,
                volume: r.get(4)?,
                times: r.get(5)?,
                gap_s: r.get(6)?,
                valid_until: r.get(7)?,
                slot_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// The ready variants of a bulletin, in language order of creation.
pub fn ready_variants(store: &Store, bulletin: &str) -> Result<Vec<VariantRow>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare(
            "SELECT v.bulletin_id, v.language, v.sha256, v.bytes, v.duration_ms, b.title, b.category
               FROM variants v JOIN bulletins b ON b.id = v.bulletin_id
              WHERE v.bulletin_id = ?1 AND v.status = 'ready' AND v.sha256 IS NOT NULL
              ORDER BY v.id",
        )?;
        let rows = stmt.query_map([bulletin], variant_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// The ready variant whose wire id is `protocol_id` (`{bulletin_id}-{language}`), if any.
pub fn variant_by_protocol_id(store: &Store, protocol_id: &str) -> Result<Option<VariantRow>, StoreError> {
    // `b-<hex>-<language>`: bulletin ids hold no '-' after their prefix, so the language is what follows the
    // next one. Looked up by (bulletin_id, language), the variants' unique index: every chunk request asks.
    let Some((bulletin, language)) = protocol_id
        .strip_prefix("b-")
        .and_then(|rest| rest.split_once('-'))
        .map(|(hex, lang)| (format!("b-{hex}"), lang))
    else {
        return Ok(None);
    };
    store.with_conn(|c| {
        Ok(c.query_row(
            "SELECT v.bulletin_id, v.language, v.sha256, v.bytes, v.duration_ms, b.title, b.category
               FROM variants v JOIN bulletins b ON b.id = v.bulletin_id
              WHERE v.bulletin_id = ?1 AND v.language = ?2 AND v.status = 'ready' AND v.sha256 IS NOT NULL",
            params![bulletin, language],
            variant_row,
        )
        .optional()?)
    })
}

fn variant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VariantRow> {
    Ok(VariantRow {
        bulletin_id: r.get(0)?,
        language: r.get(1)?,
        sha256: r.get(2)?,
        bytes: r.get(3)?,
        duration_ms: r.get(4)?,
        title: r.get(5)?,
        category: r.get(6)?,
    })
}

/// The plan last published to a receiver: `(seq, digest, published_at)`.
pub fn plan_version(store: &Store, receiver: &str) -> Result<Option<(u64, String, i64)>, StoreError> {
    store.with_conn(|c| {
        let row: Option<(i64, String, i64)> = c
            .query_row("SELECT seq, digest, published_at FROM plan_versions WHERE receiver_id = ?1", [receiver], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        Ok(row.map(|(seq, digest, at)| (u64::try_from(seq).unwrap_or(0), digest, at)))
    })
}

/// Records the plan just published.
pub fn set_plan_version(store: &Store, receiver: &str, seq: u64, digest: &str, now_ms: i64) -> Result<(), StoreError> {
    let seq = i64::try_from(seq).map_err(|_| StoreError::Invalid("plan sequence overflow".into()))?;
    store.with_conn(|c| {
        c.execute(
            "INSERT INTO plan_versions (receiver_id, seq, published_at, digest) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(receiver_id) DO UPDATE SET seq = excluded.seq, published_at = excluded.published_at,
                                                    digest = excluded.digest",
            params![receiver, seq, now_ms, digest],
        )?;
        Ok(())
    })
}

/// Online / offline, from the receiver's retained status.
pub fn set_online(store: &Store, receiver: &str, online: bool, now_ms: i64) -> Result<(), StoreError> {
    store.with_conn(|c| {
        c.execute(
            "UPDATE receivers SET online = ?2, last_seen = ?3 WHERE id = ?1",
            params![receiver, i64::from(online), now_ms],
        )?;
        Ok(())
    })
}

/// The receiver's latest heartbeat (JSON as received, already validated).
pub fn set_health(store: &Store, receiver: &str, health_json: &str, now_ms: i64) -> Result<(), StoreError> {
    store.with_conn(|c| {
        c.execute(
            "UPDATE receivers SET health = ?2, health_at = ?3, last_seen = ?3, online = 1 WHERE id = ?1",
            params![receiver, health_json, now_ms],
        )?;
        Ok(())
    })
}

/// Marks missed, with reason `no_report`, the plays nobody reported on long after they could have ended: a
/// normal play `late_normal_ms` after its time plus its length plus `grace_ms`, an emergency after its expiry
/// plus its length plus `grace_ms`. A report arriving later still counts (`finished` turns it into `played`).
/// Returns how many plays were marked.
pub fn mark_unreported(
    store: &Store,
    now_ms: i64,
    late_normal_ms: i64,
    late_emergency_ms: i64,
    grace_ms: i64,
) -> Result<usize, StoreError> {
    store.with_conn(|c| {
        Ok(c.execute(
            "UPDATE plays SET status = 'missed',
                    reason = 'no_report: the receiver never said it played (offline or powered off?)'
              WHERE id IN (
                    SELECT p.id FROM plays p JOIN schedules s ON s.id = p.schedule_id
                     WHERE p.status IN ('planned', 'downloading', 'ready') AND p.planned_at < ?1
                       AND CASE WHEN p.tier = 'emergency' THEN COALESCE(s.valid_until, p.planned_at + ?3)
                                ELSE p.planned_at + ?2 END + s.slot_ms + ?4 < ?1)",
            params![now_ms, late_normal_ms, late_emergency_ms, grace_ms],
        )?)
    })
}

/// What a report does to a play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayUpdate {
    /// Audio started at this instant.
    Started(i64),
    /// Played to the end at this instant.
    Finished(i64),
    /// Cut off.
    Preempted(i64, String),
    /// Did not play.
    Missed(String),
}

/// Stores a play report and applies it to the receiver's play (only that receiver's: a report about another's
/// play changes nothing), in one transaction, once: returns `None` if this (receiver, report id) was stored
/// before (a resend), else whether a play was updated.
pub fn store_report(
    store: &Store,
    receiver: &str,
    report_id: u64,
    body: &str,
    now_ms: i64,
    play_id: &str,
    update: &PlayUpdate,
) -> Result<Option<bool>, StoreError> {
    let report_id = i64::try_from(report_id).map_err(|_| StoreError::Invalid("report id overflow".into()))?;
    store.with_conn(|c| {
        let tx = c.transaction()?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO reports (receiver_id, report_id, received_at, body) VALUES (?1, ?2, ?3, ?4)",
            params![receiver, report_id, now_ms, body],
        )?;
        if new == 0 {
            return Ok(None);
        }
        let n = match update {
            PlayUpdate::Started(at) => tx.execute(
                "UPDATE plays SET status = 'playing', started_at = ?3, progress = 100
                  WHERE id = ?1 AND receiver_id = ?2 AND status IN ('planned', 'downloading', 'ready', 'playing')",
                params![play_id, receiver, at],
            )?,
            PlayUpdate::Finished(at) => tx.execute(
                "UPDATE plays SET status = 'played', finished_at = ?3, progress = 100
                  WHERE id = ?1 AND receiver_id = ?2 AND status <> 'cancelled'",
                params![play_id, receiver, at],
            )?,
            PlayUpdate::Preempted(at, reason) => tx.execute(
                "UPDATE plays SET status = 'preempted', finished_at = ?3, reason = ?4
                  WHERE id = ?1 AND receiver_id = ?2 AND status NOT IN ('played', 'cancelled')",
                params![play_id, receiver, at, reason],
            )?,
            // Also over `playing`: a play cut off on air by a power cut or a device fault is missed, with its
            // start kept.
            PlayUpdate::Missed(reason) => tx.execute(
                "UPDATE plays SET status = 'missed', reason = ?3
                  WHERE id = ?1 AND receiver_id = ?2 AND status NOT IN ('played', 'preempted', 'cancelled')",
                params![play_id, receiver, reason],
            )?,
        };
        tx.commit()?;
        Ok(Some(n > 0))
    })
}

/// Download progress (percent) of the receiver's upcoming plays of `bulletin`: 'downloading', or 'ready' at 100.
pub fn set_progress(store: &Store, receiver: &str, bulletin: &str, percent: u8, now_ms: i64) -> Result<(), StoreError> {
    let status = if percent >= 100 { "ready" } else { "downloading" };
    store.with_conn(|c| {
        c.execute(
            "UPDATE plays SET progress = ?3, status = ?4
              WHERE receiver_id = ?1 AND bulletin_id = ?2 AND status IN ('planned', 'downloading')
                AND planned_at >= ?5",
            params![receiver, bulletin, i64::from(percent.min(100)), status, now_ms - 24 * 3600 * 1000],
        )?;
        Ok(())
    })
}

/// Whether `receiver` has an upcoming or recent play of `bulletin` (it may fetch only those).
pub fn may_fetch(store: &Store, receiver: &str, bulletin: &str, now_ms: i64) -> Result<bool, StoreError> {
    store.with_conn(|c| {
        let found: Option<i64> = c
            .query_row(
                "SELECT 1 FROM plays WHERE receiver_id = ?1 AND bulletin_id = ?2 AND planned_at >= ?3 LIMIT 1",
                params![receiver, bulletin, now_ms - 24 * 3600 * 1000],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn variants_are_found_by_their_protocol_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, v) = store.create_bulletin("Giá lúa", "market", "vi", 1).unwrap();
        let wire = format!("{id}-vi");
        assert!(variant_by_protocol_id(&store, &wire).unwrap().is_none(), "still encoding");
        store.variant_ready(v, &"ab".repeat(32), 1000, 2000).unwrap();
        let row = variant_by_protocol_id(&store, &wire).unwrap().unwrap();
        assert_eq!(row.protocol_id(), wire);
        assert_eq!(row.title, "Giá lúa");
        for other in [format!("{id}-tay"), id.clone(), format!("{id}vi"), "b-".into(), "x-1-vi".into(), String::new()] {
            assert!(variant_by_protocol_id(&store, &other).unwrap().is_none(), "{other:?}");
        }
    }
}
