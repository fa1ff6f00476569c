//! Receivers: registration (id `rx-` + 12 hex, a random MQTT password shown once and stored as its hex
//! SHA-256), lookup, and which receivers sit in a set of areas. Online state and health are written by
//! dispatch (`store::dispatch`); this module only reads them.

use rand::distr::{Alphanumeric, SampleString};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{random_id, sha256_hex, Store, StoreError};

/// Length of a generated receiver secret.
pub const SECRET_CHARS: usize = 32;

/// A receiver as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receiver {
    /// `rx-` + 12 hex.
    pub id: String,
    /// A name people recognise ("Loa chợ Bản Vược").
    pub name: String,
    /// The area it stands in.
    pub area_id: i64,
    /// Connected to the broker now (as far as the controller knows).
    pub online: bool,
    /// Last heard from, UTC ms.
    pub last_seen: Option<i64>,
    /// Last health message, JSON text as received.
    pub health: Option<String>,
    /// When that health message came, UTC ms.
    pub health_at: Option<i64>,
    /// Registered, UTC ms.
    pub created_at: i64,
}

/// A freshly registered receiver: the secret exists only here.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Receiver id.
    pub id: String,
    /// MQTT password, in clear (stored hashed).
    pub secret: String,
}

const COLUMNS: &str = "id, name, area_id, online, last_seen, health, health_at, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Receiver> {
    Ok(Receiver {
        id: r.get(0)?,
        name: r.get(1)?,
        area_id: r.get(2)?,
        online: r.get::<_, i64>(3)? != 0,
        last_seen: r.get(4)?,
        health: r.get(5)?,
        health_at: r.get(6)?,
        created_at: r.get(7)?,
    })
}

pub(crate) fn get_receiver(c: &Connection, id: &str) -> Result<Receiver, StoreError> {
    c.query_row(&format!("SELECT {COLUMNS} FROM receivers WHERE id = ?1"), [id], row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("receiver", id))
}

/// Receivers standing in any of `areas`, with their area.
pub(crate) fn in_areas(c: &Connection, areas: &[i64]) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT id, area_id FROM receivers WHERE area_id = ?1 ORDER BY id")?;
    let mut out = Vec::new();
    for &area in areas {
        for r in stmt.query_map([area], |r| Ok((r.get(0)?, r.get(1)?)))? {
            out.push(r?);
        }
    }
    Ok(out)
}

impl Store {
    /// Registers a receiver in `area_id`; returns its id and (only now) its secret.
    pub fn register_receiver(&self, name: &str, area_id: i64, now_ms: i64) -> Result<Registered, StoreError> {
        let name = super::areas::check_name("receiver", name)?;
        let secret = Alphanumeric.sample_string(&mut rand::rng(), SECRET_CHARS);
        let mosquitto_hash = crate::broker::mosquitto::password_hash(&secret);
        self.with_conn(|c| {
            super::areas::get_area(c, area_id)?;
            loop {
                let id = random_id("rx-", 6);
                let inserted = c.execute(
                    "INSERT OR IGNORE INTO receivers (id, name, area_id, secret_hash, mosquitto_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, name, area_id, sha256_hex(secret.as_bytes()), mosquitto_hash, now_ms],
                )?;
                if inserted == 1 {
                    return Ok(Registered { id, secret: secret.clone() });
                }
            }
        })
    }

    /// One receiver.
    pub fn receiver(&self, id: &str) -> Result<Receiver, StoreError> {
        self.with_conn(|c| get_receiver(c, id))
    }

    /// Every receiver, by id.
    pub fn list_receivers(&self) -> Result<Vec<Receiver>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM receivers ORDER BY id"))?;
            let list = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// Whether `secret` is receiver `id`'s password.
    pub fn check_receiver_secret(&self, id: &str, secret: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let hash: Option<String> =
                c.query_row("SELECT secret_hash FROM receivers WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            Ok(hash.is_some_and(|h| h == sha256_hex(secret.as_bytes())))
        })
    }

    /// Every receiver's id and Mosquitto password hash (`None` if registered before hashes were kept), by id.
    pub fn broker_logins(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare("SELECT id, mosquitto_hash FROM receivers ORDER BY id")?;
            let list = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::areas::NewArea;

    #[test]
    fn registers_with_a_hashed_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let area = store.create_area(&NewArea::root_village("Thôn 1"), 5).unwrap();
        let reg = store.register_receiver("Loa chợ", area, 7).unwrap();
        assert!(reg.id.starts_with("rx-") && reg.id.len() == 15);
        assert!(reg.secret.len() >= 24);
        assert!(store.check_receiver_secret(&reg.id, &reg.secret).unwrap());
        assert!(!store.check_receiver_secret(&reg.id, "wrong").unwrap());
        let rx = store.receiver(&reg.id).unwrap();
        assert_eq!((rx.name.as_str(), rx.area_id, rx.online, rx.created_at), ("Loa chợ", area, false, 7));
        assert_eq!(store.list_receivers().unwrap().len(), 1);
        let logins = store.broker_logins().unwrap();
        assert_eq!(logins.len(), 1);
        let hash = logins[0].1.as_deref().unwrap();
        let salt = hash.split('$').nth(3).unwrap();
        assert!(hash.starts_with("$7$101$") && hash.len() > 100 && !hash.contains(&reg.secret), "{hash}");
        assert!(!salt.is_empty());
        assert!(matches!(store.receiver("rx-000000000000"), Err(StoreError::NotFound { .. })));
        assert!(matches!(store.register_receiver("x", 99, 0), Err(StoreError::NotFound { .. })));
    }
}
