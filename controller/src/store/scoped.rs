//! Queries limited to a set of areas (a user's subtree of the admin tree): what `store::plays` answers for the
//! whole tree, answered for the receivers standing in those areas only, filtered in SQL so that limits count
//! only what the user may see.

use rusqlite::params;

use super::plays::{Play, PlayFilter};
use super::{Store, StoreError};

impl Store {
    /// Plays matching `filter` on receivers standing in `areas`, by planned time.
    pub fn plays_in_areas(&self, filter: &PlayFilter, areas: &[i64]) -> Result<Vec<Play>, StoreError> {
        let areas = serde_json::Value::from(areas.to_vec()).to_string();
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT p.id, p.schedule_id, p.receiver_id, p.bulletin_id, p.planned_at, p.tier, p.status, p.progress,
                        p.started_at, p.finished_at, p.reason
                 FROM plays p JOIN receivers r ON r.id = p.receiver_id
                 WHERE r.area_id IN (SELECT value FROM json_each(?5))
                   AND (?1 IS NULL OR p.schedule_id = ?1) AND (?2 IS NULL OR p.receiver_id = ?2)
                   AND (?3 IS NULL OR p.bulletin_id = ?3)
                   AND (?6 IS NULL OR p.planned_at >= ?6) AND (?7 IS NULL OR p.planned_at < ?7)
                 {} LIMIT ?4",
                filter.order_by("p.")
            ))?;
            let list = stmt
                .query_map(
                    params![
                        filter.schedule_id,
                        filter.receiver_id,
                        filter.bulletin_id,
                        filter.limit.unwrap_or(1000),
                        areas,
                        filter.from,
                        filter.until
                    ],
                    super::plays::row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }
}
