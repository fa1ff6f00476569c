//! Bulletins and their language variants. A bulletin is a title and a category; each variant is one language's
//! recording, encoded to one Ogg Opus file stored under its SHA-256 (`DATA/bulletins/<sha256>.opus`, written
//! atomically). A variant is `encoding` until its job ends `ready` (with sha256, bytes, duration) or `failed`
//! (with a message an official can read). Cancelling a bulletin cancels its future plays. Approval (draft →
//! submitted → approved / rejected) and the owning area are in [`super::approval`].

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use super::approval::{Approval, BulletinOwner};
use super::{random_id, write_atomic, Store, StoreError};

/// Categories a bulletin may have.
pub const CATEGORIES: &[&str] = &["policy", "market", "security", "disaster", "health", "other"];
/// Longest title, characters (as the protocol allows).
pub const MAX_TITLE_CHARS: usize = 200;

/// Where a variant (or, aggregated, a bulletin) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantStatus {
    /// The encode job has not finished.
    Encoding,
    /// The file is ready to send.
    Ready,
    /// Encoding failed; see the error.
    Failed,
}

impl VariantStatus {
    fn parse(s: &str) -> Self {
        match s {
            "ready" => VariantStatus::Ready,
            "failed" => VariantStatus::Failed,
            _ => VariantStatus::Encoding,
        }
    }
}

/// One language's recording of a bulletin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variant {
    /// Row id (not on the wire; the protocol id is `{bulletin_id}-{language}`).
    #[serde(skip)]
    pub id: i64,
    /// The bulletin.
    #[serde(skip)]
    pub bulletin_id: String,
    /// Language code.
    pub language: String,
    /// Where it stands.
    pub status: VariantStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// SHA-256 of the Ogg Opus file, hex.
    pub sha256: Option<String>,
    /// Size of the file.
    pub bytes: Option<i64>,
    /// Length of the audio.
    pub duration_ms: Option<i64>,
    /// Created, UTC ms.
    #[serde(skip)]
    pub created_at: i64,
}

impl Variant {
    /// The protocol's bulletin id of this variant, `b-1a2b3c4d5e6f-vi`.
    pub fn protocol_id(&self) -> String {
        format!("{}-{}", self.bulletin_id, self.language)
    }
}

/// A bulletin with its variants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bulletin {
    /// `b-` + 12 hex.
    pub id: String,
    /// Title.
    pub title: String,
    /// Category.
    pub category: String,
    /// Created, UTC ms.
    pub created_at: i64,
    /// Cancelled, UTC ms.
    pub cancelled_at: Option<i64>,
    /// Kept in the library of pre-recorded warnings, ready to send as an emergency.
    pub library: bool,
    /// Where it stands in approval.
    pub approval: Approval,
    /// The area that owns it (`None` = the whole tree).
    pub area_id: Option<i64>,
    /// The user who made it (`None`: the admin token, or made before users existed).
    pub created_by: Option<i64>,
    /// The user who approved or rejected it.
    pub reviewed_by: Option<i64>,
    /// The reviewer's comment.
    pub review_comment: Option<String>,
    /// When it was approved or rejected, UTC ms.
    pub reviewed_at: Option<i64>,
    /// Variants, oldest first.
    pub variants: Vec<Variant>,
}

impl Bulletin {
    /// `encoding` while any variant is; else `ready` if any variant is; else `failed`.
    pub fn status(&self) -> VariantStatus {
        if self.variants.iter().any(|v| v.status == VariantStatus::Encoding) {
            VariantStatus::Encoding
        } else if self.variants.iter().any(|v| v.status == VariantStatus::Ready) {
            VariantStatus::Ready
        } else {
            VariantStatus::Failed
        }
    }

    /// The longest ready variant's length.
    pub fn duration_ms(&self) -> Option<i64> {
        self.variants.iter().filter_map(|v| v.duration_ms).max()
    }

    /// All ready variants' bytes together.
    pub fn bytes(&self) -> Option<i64> {
        let sizes: Vec<i64> = self.variants.iter().filter_map(|v| v.bytes).collect();
        (!sizes.is_empty()).then(|| sizes.iter().sum())
    }
}

const VARIANT_COLUMNS: &str = "id, bulletin_id, language, status, error, sha256, bytes, duration_ms, created_at";

fn variant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Variant> {
    Ok(Variant {
        id: r.get(0)?,
        bulletin_id: r.get(1)?,
        language: r.get(2)?,
        status: VariantStatus::parse(&r.get::<_, String>(3)?),
        error: r.get(4)?,
        sha256: r.get(5)?,
        bytes: r.get(6)?,
        duration_ms: r.get(7)?,
        created_at: r.get(8)?,
    })
}

pub(crate) fn get_bulletin(c: &Connection, id: &str) -> Result<Bulletin, StoreError> {
    let mut b = c
        .query_row(
            "SELECT id, title, category, created_at, cancelled_at, library, status, area_id, created_by, reviewed_by,
                    review_comment, reviewed_at FROM bulletins WHERE id = ?1",
            [id],
            |r| {
                Ok(Bulletin {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    category: r.get(2)?,
                    created_at: r.get(3)?,
                    cancelled_at: r.get(4)?,
                    library: r.get(5)?,
                    approval: Approval::parse(&r.get::<_, String>(6)?),
                    area_id: r.get(7)?,
                    created_by: r.get(8)?,
                    reviewed_by: r.get(9)?,
                    review_comment: r.get(10)?,
                    reviewed_at: r.get(11)?,
                    variants: Vec::new(),
                })
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::not_found("bulletin", id))?;
    let mut stmt =
        c.prepare_cached(&format!("SELECT {VARIANT_COLUMNS} FROM variants WHERE bulletin_id = ?1 ORDER BY id"))?;
    b.variants = stmt.query_map([id], variant_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(b)
}

fn check_language(language: &str) -> Result<(), StoreError> {
    loa_protocol::Language::new(language.to_string())
        .map(|_| ())
        .map_err(|e| StoreError::invalid(format!("\"{language}\" is not a language code ({e})")))
}

/// The checks of [`Store::create_bulletin_as`] on its fields, alone: for refusing a bad request before slower
/// work (the API checks an upload's fields before decoding its audio).
pub fn check_new_bulletin(title: &str, category: &str, language: &str) -> Result<(), StoreError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(StoreError::invalid("the bulletin needs a title"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(StoreError::invalid(format!("the title is longer than {MAX_TITLE_CHARS} characters")));
    }
    if !CATEGORIES.contains(&category) {
        return Err(StoreError::invalid(format!(
            "\"{category}\" is not a category; use one of {}",
            CATEGORIES.join(", ")
        )));
    }
    check_language(language)
}

/// The check of [`Store::add_variant`] on its language, alone (see [`check_new_bulletin`]).
pub fn check_new_variant(language: &str) -> Result<(), StoreError> {
    check_language(language)
}

impl Store {
    /// Adds a bulletin with its first variant (`encoding`); returns (bulletin id, variant row id). The bulletin
    /// is owned by the whole tree and approved, as the admin's own uploads are: people's uploads go through
    /// [`Store::create_bulletin_as`].
    pub fn create_bulletin(
        &self,
        title: &str,
        category: &str,
        language: &str,
        now_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        self.create_bulletin_as(title, category, language, &BulletinOwner::admin(), now_ms)
    }

    /// Adds a bulletin with its first variant (`encoding`), owned by `owner.area_id`, made by
    /// `owner.created_by`, in approval state `owner.approval`; returns (bulletin id, variant row id).
    pub fn create_bulletin_as(
        &self,
        title: &str,
        category: &str,
        language: &str,
        owner: &BulletinOwner,
        now_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        check_new_bulletin(title, category, language)?;
        let title = title.trim();
        self.with_conn(|c| {
            let tx = c.transaction()?;
            if let Some(area) = owner.area_id {
                super::areas::get_area(&tx, area)?;
            }
            let id = loop {
                let id = random_id("b-", 6);
                let n = tx.execute(
                    "INSERT OR IGNORE INTO bulletins (id, title, category, created_at, status, area_id, created_by,
                     reviewed_by, reviewed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        title,
                        category,
                        now_ms,
                        owner.approval.as_str(),
                        owner.area_id,
                        owner.created_by,
                        owner.reviewed_by(),
                        (owner.approval == Approval::Approved).then_some(now_ms)
                    ],
                )?;
                if n == 1 {
                    break id;
                }
            };
            tx.execute(
                "INSERT INTO variants (bulletin_id, language, status, created_at) VALUES (?1, ?2, 'encoding', ?3)",
                params![id, language, now_ms],
            )?;
            let variant = tx.last_insert_rowid();
            tx.commit()?;
            Ok((id, variant))
        })
    }

    /// Adds a language variant (`encoding`) to a bulletin; returns its row id. A failed variant of the same
    /// language is replaced; an encoding or ready one is a conflict.
    pub fn add_variant(&self, bulletin_id: &str, language: &str, now_ms: i64) -> Result<i64, StoreError> {
        check_language(language)?;
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let b = get_bulletin(&tx, bulletin_id)?;
            if b.cancelled_at.is_some() {
                return Err(StoreError::Conflict(format!("bulletin {bulletin_id} is cancelled")));
            }
            let id = match b.variants.iter().find(|v| v.language == language) {
                Some(v) if v.status == VariantStatus::Failed => {
                    tx.execute(
                        "UPDATE variants SET status = 'encoding', error = NULL, sha256 = NULL, bytes = NULL,
                         duration_ms = NULL, created_at = ?2 WHERE id = ?1",
                        params![v.id, now_ms],
                    )?;
                    v.id
                }
                Some(_) => {
                    return Err(StoreError::Conflict(format!(
                        "bulletin {bulletin_id} already has a \"{language}\" recording"
                    )))
                }
                None => {
                    tx.execute(
                        "INSERT INTO variants (bulletin_id, language, status, created_at) VALUES (?1, ?2, 'encoding', ?3)",
                        params![bulletin_id, language, now_ms],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            tx.commit()?;
            Ok(id)
        })
    }

    /// One bulletin with its variants.
    pub fn bulletin(&self, id: &str) -> Result<Bulletin, StoreError> {
        self.with_conn(|c| get_bulletin(c, id))
    }

    /// All bulletins, newest first.
    pub fn list_bulletins(&self) -> Result<Vec<Bulletin>, StoreError> {
        self.with_conn(|c| {
            let ids = c
                .prepare("SELECT id FROM bulletins ORDER BY created_at DESC, id")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter().map(|id| get_bulletin(c, id)).collect()
        })
    }

    /// Puts a bulletin into (or takes it out of) the library of pre-recorded warnings.
    pub fn set_library(&self, id: &str, library: bool) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let n = c.execute("UPDATE bulletins SET library = ?2 WHERE id = ?1", rusqlite::params![id, library])?;
            if n == 0 {
                return Err(StoreError::not_found("bulletin", id));
            }
            Ok(())
        })
    }

    /// The library of pre-recorded warnings (not cancelled), newest first.
    pub fn library(&self) -> Result<Vec<Bulletin>, StoreError> {
        self.with_conn(|c| {
            let ids = c
                .prepare(
                    "SELECT id FROM bulletins WHERE library = 1 AND cancelled_at IS NULL ORDER BY created_at DESC",
                )?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter().map(|id| get_bulletin(c, id)).collect()
        })
    }

    /// One variant by row id.
    pub fn variant(&self, id: i64) -> Result<Variant, StoreError> {
        self.with_conn(|c| {
            c.query_row(&format!("SELECT {VARIANT_COLUMNS} FROM variants WHERE id = ?1"), [id], variant_row)
                .optional()?
                .ok_or_else(|| StoreError::not_found("variant", id))
        })
    }

    /// Variants still `encoding` (to resume after a restart).
    pub fn encoding_variants(&self) -> Result<Vec<Variant>, StoreError> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {VARIANT_COLUMNS} FROM variants WHERE status = 'encoding' ORDER BY id"))?;
            let list = stmt.query_map([], variant_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(list)
        })
    }

    /// Stores an encoded file under its SHA-256 (atomically); returns the hex digest.
    pub fn write_bulletin_file(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = super::sha256_hex(bytes);
        let path = self.bulletin_path(&sha);
        if !std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            write_atomic(&path, bytes)?;
        }
        Ok(sha)
    }

    /// Marks a variant ready.
    pub fn variant_ready(&self, id: i64, sha256: &str, bytes: i64, duration_ms: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE variants SET status = 'ready', error = NULL, sha256 = ?2, bytes = ?3, duration_ms = ?4
                 WHERE id = ?1",
                params![id, sha256, bytes, duration_ms],
            )?;
            if n == 0 {
                return Err(StoreError::not_found("variant", id));
            }
            Ok(())
        })
    }

    /// Marks a variant failed with a message an official can read.
    pub fn variant_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let n = c.execute("UPDATE variants SET status = 'failed', error = ?2 WHERE id = ?1", params![id, error])?;
            if n == 0 {
                return Err(StoreError::not_found("variant", id));
            }
            Ok(())
        })
    }

    /// Cancels a bulletin: marks it, cancels its schedules, and cancels its plays not yet started (planned at or
    /// after `now_ms`, or still waiting). Returns how many plays were cancelled. Cancelling twice is harmless.
    pub fn cancel_bulletin(&self, id: &str, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            get_bulletin(&tx, id)?;
            tx.execute(
                "UPDATE bulletins SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL",
                params![id, now_ms],
            )?;
            tx.execute(
                "UPDATE schedules SET cancelled_at = ?2 WHERE bulletin_id = ?1 AND cancelled_at IS NULL",
                params![id, now_ms],
            )?;
            let n = tx.execute(
                "UPDATE plays SET status = 'cancelled', reason = 'the bulletin was cancelled'
                 WHERE bulletin_id = ?1 AND status IN ('planned', 'downloading', 'ready')",
                params![id],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_move_from_encoding_to_ready_or_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, v) = store.create_bulletin("Giá lúa", "market", "vi", 1).unwrap();
        assert!(id.starts_with("b-") && id.len() == 14);
        assert_eq!(store.bulletin(&id).unwrap().status(), VariantStatus::Encoding);
        let sha = store.write_bulletin_file(b"OggS fake").unwrap();
        assert_eq!(std::fs::read(store.bulletin_path(&sha)).unwrap(), b"OggS fake");
        store.variant_ready(v, &sha, 9, 1500).unwrap();
        let hmn = store.add_variant(&id, "hmn", 2).unwrap();
        assert!(matches!(store.add_variant(&id, "hmn", 2), Err(StoreError::Conflict(_))));
        store.variant_failed(hmn, "the file is not audio we can read").unwrap();
        let b = store.bulletin(&id).unwrap();
        assert_eq!(b.status(), VariantStatus::Ready);
        assert_eq!(b.duration_ms(), Some(1500));
        assert_eq!(b.variants[0].protocol_id(), format!("{id}-vi"));
        assert_eq!(b.variants[1].error.as_deref(), Some("the file is not audio we can read"));
        // A failed language may be uploaded again.
        assert_eq!(store.add_variant(&id, "hmn", 3).unwrap(), hmn);
        assert_eq!(store.encoding_variants().unwrap().len(), 1);
        assert_eq!(store.list_bulletins().unwrap().len(), 1);
    }

    #[test]
    fn bad_bulletins_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.create_bulletin("", "market", "vi", 1), Err(StoreError::Invalid(_))));
        assert!(matches!(store.create_bulletin("x", "gossip", "vi", 1), Err(StoreError::Invalid(_))));
        assert!(matches!(store.create_bulletin("x", "market", "V I", 1), Err(StoreError::Invalid(_))));
        assert!(matches!(store.add_variant("b-000000000000", "vi", 1), Err(StoreError::NotFound { .. })));
        let (id, _) = store.create_bulletin("x", "other", "vi", 1).unwrap();
        store.cancel_bulletin(&id, 5).unwrap();
        assert_eq!(store.bulletin(&id).unwrap().cancelled_at, Some(5));
        assert!(matches!(store.add_variant(&id, "hmn", 1), Err(StoreError::Conflict(_))));
    }
}
