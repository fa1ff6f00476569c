//! The controller's SQLite store (rusqlite, WAL) in the data directory, with versioned migrations in code.
//!
//! [`Store`] owns one connection behind a mutex; every query module adds methods to it in its own file:
//! [`areas`] (admin tree and groups), [`receivers`], [`bulletins`] (and language variants, files on disk under
//! `DATA/bulletins/<sha256>.opus`), [`schedules`], [`plays`] (planned plays and what became of them), and
//! [`dispatch`] (what the MQTT side reads and writes: plans, reports, health), [`users`] (people, sessions,
//! API tokens), [`approval`] (draft → submitted → approved / rejected) and [`audit`] (who did what). Queries
//! are short, so async callers call them directly; nothing holds the lock across an `.await`.

pub mod alerts;
pub mod approval;
pub mod areas;
pub mod audit;
pub mod bulletins;
pub mod dispatch;
mod migrations;
pub mod plays;
pub mod receivers;
pub mod reports;
pub mod schedules;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// What went wrong in the store. `NotFound` and `Invalid` are the caller's to report (HTTP 404 / 400);
/// `Conflict` means the request clashes with what is stored (HTTP 409); the rest are server faults.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing: "area", "bulletin", ...
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request breaks a rule of the data (bad parent, wrong kind, ...): the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file in the data directory could not be read or written.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database was left by a newer version of Loa.
    #[error("the database is at schema version {found}, newer than this controller ({known}); upgrade Loa")]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

impl StoreError {
    /// Shorthand for [`StoreError::NotFound`].
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound { what, id: id.to_string() }
    }

    /// Shorthand for [`StoreError::Invalid`].
    pub fn invalid(why: impl Into<String>) -> Self {
        StoreError::Invalid(why.into())
    }
}

/// A new random id: `prefix` followed by `bytes` random bytes in lowercase hex (`rx-3f2a9c1b7d4e`).
pub fn random_id(prefix: &str, bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    format!("{prefix}{}", hex::encode(raw))
}

/// Hex SHA-256 of `bytes` (how secrets and tokens are stored).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a part: a temporary
/// file next to it, fsync, rename, then fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| StoreError::invalid(format!("{} has no directory", path.display())))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_id("", 6)));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Directory fsync is best effort (not supported everywhere).
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The controller's database and data directory.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    data_dir: PathBuf,
    /// Failed logins, in memory, shared by every clone of the store (so by every request handler).
    throttle: Arc<users::LoginThrottle>,
}

impl Store {
    /// Opens (creating if needed) `DATA/loa.sqlite3` and `DATA/bulletins/`, and brings the schema up to date.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir.join("bulletins"))?;
        std::fs::create_dir_all(data_dir.join("uploads"))?;
        let mut conn = Connection::open(data_dir.join("loa.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), data_dir: data_dir.to_path_buf(), throttle: Arc::default() })
    }

    /// Runs `f` with the connection. Keep `f` short: it holds the lock.
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn)
    }

    /// The login throttle (in memory: a restart forgets it).
    pub fn login_throttle(&self) -> &users::LoginThrottle {
        &self.throttle
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the encoded file with this SHA-256 (hex) lives.
    pub fn bulletin_path(&self, sha256_hex: &str) -> PathBuf {
        self.data_dir.join("bulletins").join(format!("{sha256_hex}.opus"))
    }

    /// Where the upload of variant `variant_id` waits for its encode job.
    pub fn upload_path(&self, variant_id: i64) -> PathBuf {
        self.data_dir.join("uploads").join(format!("variant-{variant_id}.upload"))
    }

    /// A small setting, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.with_conn(|c| {
            Ok(c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
        })
    }

    /// Sets a small setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            Ok(())
        })
    }
}
