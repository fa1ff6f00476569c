//! People: users (argon2id password hashes, a role, a scope = the root of the subtree of the admin tree they may
//! see and target, an emergency right), console sessions and API tokens (random 32 bytes, stored as hex SHA-256,
//! shown once), and the in-memory login throttle.
//!
//! There are no default passwords: [`Store::ensure_first_admin`] creates the user `admin` with a generated
//! password the first time the controller starts (printed once), and `loa-controller user add|passwd` sets one
//! from the shell.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{sha256_hex, Store, StoreError};

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password (argon2 is happy with more, but nobody types this).
pub const MAX_PASSWORD_CHARS: usize = 200;
/// How long a console session lasts.
pub const SESSION_MS: i64 = 12 * 3_600_000;
/// Length of generated passwords.
pub const GENERATED_PASSWORD_CHARS: usize = 20;

/// What a user may do (within their scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users and the audit log.
    Admin,
    /// Writes bulletins (upload, variants, submit) and schedules approved ones.
    Editor,
    /// Approves or rejects submitted bulletins.
    Approver,
    /// Registers receivers and sends them remote commands.
    Operator,
    /// Reads only.
    Viewer,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Result<Role, StoreError> {
        match s {
            "admin" => Ok(Role::Admin),
            "editor" => Ok(Role::Editor),
            "approver" => Ok(Role::Approver),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(StoreError::invalid(format!(
                "\"{other}\" is not a role; use admin, editor, approver, operator or viewer"
            ))),
        }
    }
}

/// A user as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Name shown in the console.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Root of the subtree this user sees; `None` = the whole tree.
    pub area_id: Option<i64>,
    /// May send and cancel emergencies.
    pub emergency: bool,
    /// Created, UTC ms.
    pub created_at: i64,
    /// Disabled, UTC ms.
    pub disabled_at: Option<i64>,
}

/// A new user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name: 3 to 32 of a-z 0-9 . _ -
    pub username: String,
    /// Shown name (defaults to the username).
    pub display_name: Option<String>,
    /// Argon2id PHC string from [`hash_password`].
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Scope root.
    pub area_id: Option<i64>,
    /// Emergency right.
    pub emergency: bool,
}

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New shown name.
    pub display_name: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// New scope root (`Some(None)` = the whole tree).
    pub area_id: Option<Option<i64>>,
    /// New emergency right.
    pub emergency: Option<bool>,
    /// Disable (`true`, ends sessions) or enable again.
    pub disabled: Option<bool>,
    /// New password hash (ends sessions).
    pub password_hash: Option<String>,
}

/// One of a user's API tokens, as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiTokenInfo {
    /// First 12 hex digits of the token's SHA-256: enough to name it when revoking.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Created, UTC ms.
    pub created_at: i64,
    /// Revoked, UTC ms.
    pub revoked_at: Option<i64>,
}

/// A console session found by its cookie.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whose.
    pub user: User,
    /// The CSRF token state-changing requests must carry.
    pub csrf: String,
    /// Expires, UTC ms.
    pub expires_at: i64,
}

/// Hashes a password with argon2id (default parameters) into a PHC string. Slow on purpose (tens of ms):
/// call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    check_password(password)?;
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::invalid(format!("the password could not be hashed: {e}")))
}

/// Whether `password` matches the PHC string (false for a malformed hash).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A password nobody can guess, for first runs and resets.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), GENERATED_PASSWORD_CHARS)
}

/// A new random secret (session or API token): 32 random bytes, hex.
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Checks a password's length.
pub fn check_password(password: &str) -> Result<(), StoreError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(StoreError::invalid(format!("the password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(StoreError::invalid(format!("the password is longer than {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// Checks a username: 3 to 32 of a-z 0-9 . _ -
pub fn check_username(name: &str) -> Result<(), StoreError> {
    let ok = (3..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "\"{name}\" is not a username: use 3 to 32 lowercase letters, digits, '.', '_' or '-'"
        )))
    }
}

const COLUMNS: &str = "id, username, display_name, role, area_id, emergency, created_at, disabled_at";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        // The CHECK constraint keeps the column to known roles; fall back to the least right.
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        area_id: r.get(4)?,
        emergency: r.get::<_, i64>(5)? != 0,
        created_at: r.get(6)?,
        disabled_at: r.get(7)?,
    })
}

pub(crate) fn get_user(c: &Connection, id: i64) -> Result<User, StoreError> {
    c.query_row(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"), [id], user_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("user", id))
}

fn check_display_name(name: &str) -> Result<String, StoreError> {
    super::areas::check_name("user", name)
}

impl Store {
    /// Adds a user; returns its id. The username must be unused; the scope area must exist.
    pub fn create_user(&self, new: &NewUser, now_ms: i64) -> Result<i64, StoreError> {
        check_username(&new.username)?;
        let display = check_display_name(new.display_name.as_deref().unwrap_or(&new.username))?;
        self.with_conn(|c| {
            if let Some(area) = new.area_id {
                super::areas::get_area(c, area)?;
            }
            let taken: bool =
                c.query_row("SELECT EXISTS(SELECT 1 FROM users WHERE username = ?1)", [&new.username], |r| r.get(0))?;
            if taken {
                return Err(StoreError::Conflict(format!("the username \"{}\" is taken", new.username)));
            }
            c.execute(
                "INSERT INTO users (username, display_name, password_hash, role, area_id, emergency, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.username,
                    display,
                    new.password_hash,
                    new.role.as_str(),
                    new.area_id,
                    i64::from(new.emergency),
                    now_ms
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Creates the user `admin` (whole tree, emergency right) with a generated password if there is no user
    /// at all; returns the password to print once, or `None` when users exist.
    pub fn ensure_first_admin(&self, now_ms: i64) -> Result<Option<String>, StoreError> {
        let any: bool = self.with_conn(|c| Ok(c.query_row("SELECT EXISTS(SELECT 1 FROM users)", [], |r| r.get(0))?))?;
        if any {
            return Ok(None);
        }
        let password = generate_password();
        let new = NewUser {
            username: "admin".into(),
            display_name: Some("Administrator".into()),
            password_hash: hash_password(&password)?,
            role: Role::Admin,
            area_id: None,
            emergency: true,
        };
        self.create_user(&new, now_ms)?;
        Ok(Some(password))
    }

    /// One user.
    pub fn user(&self, id: i64) -> Result<User, StoreError> {
        self.with_conn(|c| get_user(c, id))
    }

    /// A user by login name, with the password hash.
    pub fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        self.with_conn(|c| {
            let found = c
                .query_row(
                    &format!("SELECT {COLUMNS}, password_hash FROM users WHERE username = ?1"),
                    [username],
                    |r| Ok((user_row(r)?, r.get::<_, String>(8)?)),
                )
                .optional()?;
            Ok(found)
        })
    }

    /// Every user, by username.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))?;
            let list = stmt.query_map([], user_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// Changes a user; disabling or a new password ends their sessions. Returns the user as it is now.
    pub fn update_user(&self, id: i64, patch: &UserPatch, now_ms: i64) -> Result<User, StoreError> {
        let display = patch.display_name.as_deref().map(check_display_name).transpose()?;
        self.with_conn(|c| {
            let tx = c.transaction()?;
            get_user(&tx, id)?;
            if let Some(d) = display {
                tx.execute("UPDATE users SET display_name = ?2 WHERE id = ?1", params![id, d])?;
            }
            if let Some(role) = patch.role {
                tx.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![id, role.as_str()])?;
            }
            if let Some(area) = patch.area_id {
                if let Some(a) = area {
                    super::areas::get_area(&tx, a)?;
                }
                tx.execute("UPDATE users SET area_id = ?2 WHERE id = ?1", params![id, area])?;
            }
            if let Some(e) = patch.emergency {
                tx.execute("UPDATE users SET emergency = ?2 WHERE id = ?1", params![id, i64::from(e)])?;
            }
            if let Some(hash) = &patch.password_hash {
                tx.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![id, hash])?;
                tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
            }
            match patch.disabled {
                Some(true) => {
                    tx.execute(
                        "UPDATE users SET disabled_at = ?2 WHERE id = ?1 AND disabled_at IS NULL",
                        params![id, now_ms],
                    )?;
                    tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
                }
                Some(false) => {
                    tx.execute("UPDATE users SET disabled_at = NULL WHERE id = ?1", [id])?;
                }
                None => {}
            }
            let user = get_user(&tx, id)?;
            tx.commit()?;
            Ok(user)
        })
    }

    /// Starts a console session; returns (session token for the cookie, CSRF token). Expired sessions are
    /// swept at the same time.
    pub fn create_session(&self, user_id: i64, ip: &str, now_ms: i64) -> Result<(String, String), StoreError> {
        let (token, csrf) = (generate_secret(), generate_secret());
        self.with_conn(|c| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now_ms])?;
            c.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf, created_at, expires_at, ip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sha256_hex(token.as_bytes()), user_id, csrf, now_ms, now_ms + SESSION_MS, ip],
            )?;
            Ok(())
        })?;
        Ok((token, csrf))
    }

    /// The live session of this cookie value, if any (not expired, user not disabled).
    pub fn session(&self, token: &str, now_ms: i64) -> Result<Option<Session>, StoreError> {
        let cols = COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
        self.with_conn(|c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {cols}, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
                         WHERE s.token_sha256 = ?1 AND s.expires_at > ?2 AND u.disabled_at IS NULL"
                    ),
                    params![sha256_hex(token.as_bytes()), now_ms],
                    |r| Ok(Session { user: user_row(r)?, csrf: r.get(8)?, expires_at: r.get(9)? }),
                )
                .optional()?;
            Ok(found)
        })
    }

    /// Ends a session (logging out twice is harmless).
    pub fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute("DELETE FROM sessions WHERE token_sha256 = ?1", [sha256_hex(token.as_bytes())])?;
            Ok(())
        })
    }

    /// Makes an API token for a user; returns it (shown once).
    pub fn create_api_token(&self, user_id: i64, name: &str, now_ms: i64) -> Result<String, StoreError> {
        let name = super::areas::check_name("token", name)?;
        let token = format!("loa-u-{}", generate_secret());
        self.with_conn(|c| {
            get_user(c, user_id)?;
            c.execute(
                "INSERT INTO api_tokens (token_sha256, user_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![sha256_hex(token.as_bytes()), user_id, name, now_ms],
            )?;
            Ok(())
        })?;
        Ok(token)
    }

    /// The user an API token belongs to, if the token is valid (not revoked, user not disabled).
    pub fn api_token_user(&self, token: &str) -> Result<Option<User>, StoreError> {
        let cols = COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
        self.with_conn(|c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {cols} FROM api_tokens t JOIN users u ON u.id = t.user_id
                         WHERE t.token_sha256 = ?1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL"
                    ),
                    [sha256_hex(token.as_bytes())],
                    user_row,
                )
                .optional()?;
            Ok(found)
        })
    }

    /// A user's API tokens, newest first.
    pub fn api_tokens(&self, user_id: i64) -> Result<Vec<ApiTokenInfo>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT substr(token_sha256, 1, 12), name, created_at, revoked_at FROM api_tokens
                 WHERE user_id = ?1 ORDER BY created_at DESC, token_sha256",
            )?;
            let list = stmt
                .query_map([user_id], |r| {
                    Ok(ApiTokenInfo { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// Revokes a user's token named by [`ApiTokenInfo::id`].
    pub fn revoke_api_token(&self, user_id: i64, token_id: &str, now_ms: i64) -> Result<(), StoreError> {
        if token_id.len() != 12 || !token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::not_found("token", token_id));
        }
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE user_id = ?1 AND substr(token_sha256, 1, 12) = ?2",
                params![user_id, token_id.to_ascii_lowercase(), now_ms],
            )?;
            if n == 0 {
                return Err(StoreError::not_found("token", token_id));
            }
            Ok(())
        })
    }
}

/// Login throttling, in memory: per username and per client address, 5 failures in a row lock the key for
/// 60 s, doubling with each further failure (at most a day); a success clears the username's count.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    keys: Mutex<HashMap<String, Strikes>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    failures: u32,
    locked_until_ms: i64,
}

/// Failures allowed before a lock.
pub const THROTTLE_FREE_FAILURES: u32 = 5;
/// First lock.
pub const THROTTLE_FIRST_LOCK_MS: i64 = 60_000;
/// Longest lock.
pub const THROTTLE_MAX_LOCK_MS: i64 = 86_400_000;
/// Most keys remembered (oldest-unlocked are dropped past this, so a flood of names cannot fill memory).
const THROTTLE_MAX_KEYS: usize = 100_000;

impl LoginThrottle {
    /// Milliseconds until any of `keys` may try again (0: now).
    pub fn wait_ms(&self, keys: &[String], now_ms: i64) -> i64 {
        let map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().filter_map(|k| map.get(k)).map(|s| (s.locked_until_ms - now_ms).max(0)).max().unwrap_or(0)
    }

    /// Counts a failure against each key.
    pub fn failed(&self, keys: &[String], now_ms: i64) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= THROTTLE_MAX_KEYS {
            map.retain(|_, s| s.locked_until_ms > now_ms);
        }
        for k in keys {
            let s = map.entry(k.clone()).or_default();
            s.failures = s.failures.saturating_add(1);
            if s.failures >= THROTTLE_FREE_FAILURES {
                let doublings = (s.failures - THROTTLE_FREE_FAILURES).min(20);
                let lock = (THROTTLE_FIRST_LOCK_MS << doublings).min(THROTTLE_MAX_LOCK_MS);
                s.locked_until_ms = now_ms + lock;
            }
        }
    }

    /// Clears the keys' counts after a success.
    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "wrong horse battery"));
        assert!(!verify_password("not a hash", "x"));
        assert!(matches!(hash_password("short"), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn users_sessions_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pw = store.ensure_first_admin(1).unwrap().unwrap();
        assert!(store.ensure_first_admin(2).unwrap().is_none());
        let (admin, hash) = store.user_by_name("admin").unwrap().unwrap();
        assert!(verify_password(&hash, &pw));
        assert_eq!((admin.role, admin.area_id, admin.emergency), (Role::Admin, None, true));
        assert!(check_username("Bad Name").is_err());

        let (token, csrf) = store.create_session(admin.id, "10.0.0.1", 1000).unwrap();
        let s = store.session(&token, 2000).unwrap().unwrap();
        assert_eq!((s.user.id, s.csrf.as_str()), (admin.id, csrf.as_str()));
        assert!(store.session(&token, 1000 + SESSION_MS).unwrap().is_none());
        assert!(store.session("nope", 2000).unwrap().is_none());

        let api = store.create_api_token(admin.id, "scripts", 5).unwrap();
        assert_eq!(store.api_token_user(&api).unwrap().unwrap().id, admin.id);
        let listed = store.api_tokens(admin.id).unwrap();
        assert_eq!(listed.len(), 1);
        store.revoke_api_token(admin.id, &listed[0].id, 6).unwrap();
        assert!(store.api_token_user(&api).unwrap().is_none());

        let patch = UserPatch { disabled: Some(true), ..UserPatch::default() };
        let u = store.update_user(admin.id, &patch, 7).unwrap();
        assert_eq!(u.disabled_at, Some(7));
        assert!(store.session(&token, 2000).unwrap().is_none());
    }

    #[test]
    fn throttle_locks_and_doubles() {
        let t = LoginThrottle::default();
        let keys = vec!["user:a".to_string()];
        for _ in 0..4 {
            t.failed(&keys, 0);
        }
        assert_eq!(t.wait_ms(&keys, 0), 0);
        t.failed(&keys, 0);
        assert_eq!(t.wait_ms(&keys, 0), 60_000);
        t.failed(&keys, 60_000);
        assert_eq!(t.wait_ms(&keys, 60_000), 120_000);
        t.succeeded(&keys);
        assert_eq!(t.wait_ms(&keys, 60_000), 0);
    }
}
