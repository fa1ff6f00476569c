//! The audit log: who did what, when, from where. Entries are only ever added. Each carries the area its object
//! belongs to (`None` = the whole tree) so that an admin scoped to a subtree reads only that subtree's entries.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};

/// One entry to add.
#[derive(Debug, Clone, Default)]
pub struct NewAudit<'a> {
    /// Who: a user id (`None` for the admin token, or nobody).
    pub user_id: Option<i64>,
    /// Who, by name (kept even if the user is renamed or removed).
    pub username: &'a str,
    /// What: `login`, `bulletin_approve`, ...
    pub action: &'a str,
    /// On what kind of thing: `bulletin`, `schedule`, `receiver`, `user`, ...
    pub object_kind: Option<&'a str>,
    /// Which one.
    pub object_id: Option<String>,
    /// The area the object belongs to.
    pub area_id: Option<i64>,
    /// More, as JSON.
    pub detail: serde_json::Value,
    /// Client address, or "unknown".
    pub ip: &'a str,
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Id (rising).
    pub id: i64,
    /// When, UTC ms.
    pub at: i64,
    /// User id.
    pub user_id: Option<i64>,
    /// User name.
    pub username: String,
    /// Action.
    pub action: String,
    /// Object kind.
    pub object_kind: Option<String>,
    /// Object id.
    pub object_id: Option<String>,
    /// Area of the object.
    pub area_id: Option<i64>,
    /// Detail (JSON).
    pub detail: serde_json::Value,
    /// Client address.
    pub ip: String,
}

impl Store {
    /// Adds an entry; returns its id.
    pub fn audit(&self, e: &NewAudit<'_>, now_ms: i64) -> Result<i64, StoreError> {
        let detail = if e.detail.is_null() { "{}".to_string() } else { e.detail.to_string() };
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO audit (at, user_id, username, action, object_kind, object_id, area_id, detail, ip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![now_ms, e.user_id, e.username, e.action, e.object_kind, e.object_id, e.area_id, detail, e.ip],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Entries newest first, with id below `before` (if given), at most `limit`. `areas`: only entries whose
    /// area is one of these (`None`: all entries, including those of the whole tree).
    pub fn audit_entries(
        &self,
        areas: Option<&[i64]>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let area_json = areas.map(|a| serde_json::Value::from(a.to_vec()).to_string());
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, at, user_id, username, action, object_kind, object_id, area_id, detail, ip FROM audit
                 WHERE (?1 IS NULL OR id < ?1)
                   AND (?2 IS NULL OR area_id IN (SELECT value FROM json_each(?2)))
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let list = stmt
                .query_map(params![before, area_json, limit], |r| {
                    let detail: String = r.get(8)?;
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        user_id: r.get(2)?,
                        username: r.get(3)?,
                        action: r.get(4)?,
                        object_kind: r.get(5)?,
                        object_id: r.get(6)?,
                        area_id: r.get(7)?,
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                        ip: r.get(9)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_listed_newest_first_and_by_area() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, area) in [None, Some(1), Some(2)].into_iter().enumerate() {
            let e = NewAudit {
                username: "admin",
                action: "test",
                area_id: area,
                detail: serde_json::json!({"i": i}),
                ip: "unknown",
                ..NewAudit::default()
            };
            store.audit(&e, i as i64).unwrap();
        }
        let all = store.audit_entries(None, None, 10).unwrap();
        assert_eq!(all.iter().map(|e| e.at).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert_eq!(all[0].detail["i"], 2);
        let one = store.audit_entries(Some(&[1]), None, 10).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(store.audit_entries(None, Some(all[1].id), 10).unwrap().len(), 1);
        assert!(store.audit_entries(Some(&[]), None, 10).unwrap().is_empty());
    }
}
