//! Encoded bulletin files and their manifests, as dispatch serves them: read once from the data directory,
//! checked against their SHA-256, kept in memory (a minute of speech is ~90 KB) with the manifest built from
//! them.

use std::collections::HashMap;
use std::sync::Arc;

use loa_protocol::{BulletinId, BulletinInfo, Category, Codec, Language, Manifest, Sha256, Tier, Timestamp};

use crate::store::dispatch::VariantRow;
use crate::store::Store;

/// A manifest stays valid this long after it is made.
const MANIFEST_VALID_MS: i64 = 30 * 24 * 3600 * 1000;

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The encoded file is missing or unreadable: re-encode the bulletin.
    #[error("bulletin file {path}: {source}")]
    Read {
        /// Where it should be.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file on disk does not match its recorded SHA-256: re-encode the bulletin.
    #[error("bulletin file for {0} does not match its recorded SHA-256")]
    Corrupt(String),
    /// The variant's fields do not make a valid manifest.
    #[error("manifest for {0}: {1}")]
    Manifest(String, loa_protocol::ProtocolError),
}

/// One servable variant.
#[derive(Debug)]
pub struct ServedFile {
    /// Its manifest.
    pub manifest: Manifest,
    /// The Ogg Opus bytes.
    pub bytes: Vec<u8>,
}

/// The cache of servable files, by wire id.
#[derive(Debug, Default)]
pub struct Files {
    by_id: HashMap<String, Arc<ServedFile>>,
}

fn category(name: &str) -> Category {
    match name {
        "policy" => Category::Policy,
        "market" => Category::Market,
        "security" => Category::Security,
        "disaster" | "weather" => Category::Disaster,
        "health" => Category::Health,
        _ => Category::Other,
    }
}

/// Files up to this size (about 40 s of speech at 12 kbit/s: warnings, short notices) are cut into
/// [`SMALL_CHUNK_SIZE`] chunks.
pub const SMALL_FILE_BYTES: usize = 64 * 1024;
/// Chunk size of small files: on a 48 kbit/s GPRS link one chunk is 0.7 s of airtime, so progressive play of a
/// warning can start after fewer bytes. The cost, about 1 % more protocol overhead, falls on small files only.
pub const SMALL_CHUNK_SIZE: u32 = 4096;

/// The chunk size for a file of `len` bytes.
pub fn chunk_size(len: usize) -> u32 {
    if len <= SMALL_FILE_BYTES {
        SMALL_CHUNK_SIZE
    } else {
        loa_protocol::DEFAULT_CHUNK_SIZE
    }
}

impl Files {
    /// The file and manifest of `variant`, loading it on first use (or when its manifest is about to expire).
    pub fn get(&mut self, store: &Store, variant: &VariantRow, now: Timestamp) -> Result<Arc<ServedFile>, FileError> {
        let id = variant.protocol_id();
        if let Some(file) = self.by_id.get(&id) {
            if file.manifest.sha256.to_hex() == variant.sha256
                && file.manifest.expires_at.ms_since(now) > MANIFEST_VALID_MS / 2
            {
                return Ok(file.clone());
            }
        }
        let path = store.bulletin_path(&variant.sha256);
        let bytes =
            std::fs::read(&path).map_err(|source| FileError::Read { path: path.display().to_string(), source })?;
        if Sha256::of(&bytes).to_hex() != variant.sha256.to_ascii_lowercase() {
            return Err(FileError::Corrupt(id));
        }
        let bad = |e| FileError::Manifest(id.clone(), e);
        let info = BulletinInfo {
            bulletin: BulletinId::new(id.clone()).map_err(bad)?,
            title: variant.title.chars().take(loa_protocol::manifest::MAX_TITLE_CHARS).collect(),
            category: category(&variant.category),
            tier: Tier::Normal,
            lang: Language::new(variant.language.clone()).map_err(bad)?,
            issued_at: now,
            expires_at: now.saturating_add_ms(MANIFEST_VALID_MS),
            duration_ms: u32::try_from(variant.duration_ms.max(1)).unwrap_or(u32::MAX),
            codec: Codec::speech(),
        };
        let manifest = Manifest::for_file(info, &bytes, chunk_size(bytes.len())).map_err(bad)?;
        let file = Arc::new(ServedFile { manifest, bytes });
        self.by_id.insert(id, file.clone());
        Ok(file)
    }
}
