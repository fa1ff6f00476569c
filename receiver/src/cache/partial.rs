//! Downloads that survive power cuts. A file arrives in numbered chunks, each already checked by the caller
//! against the signed manifest. Chunk `i` is written at `i * chunk_size` into `partial/<sha>.part` (created at
//! its full size), then the data is fsynced, and only then is `partial/<sha>.have` — the bitmap of chunks held —
//! replaced atomically (temporary file, fsync, rename, fsync the folder). So after a crash at any point, every
//! chunk the bitmap marks as held really is on disk; at worst a written chunk is fetched again.
//!
//! The bitmap file is `LOAHAVE1`, the size, chunk size and chunk count (little-endian u64, u32, u32), one bit per
//! chunk, and the first 16 hex digits of the SHA-256 of all that. One of the wrong length, with a bad check, or for a
//! different layout is treated as empty: everything is fetched again, but bad data is never trusted. When the
//! last chunk is in, [`PartialDownload::finish`] hashes the whole file and moves it into `objects/`.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fsutil::{io_error, sha256_file, sha256_hex, sync_dir, write_atomic};
use super::{CacheError, GrowingFile, Inner};

const MAGIC: &[u8; 8] = b"LOAHAVE1";
/// Most chunks one download may have (a bigger bitmap means a broken manifest).
const MAX_CHUNKS: u32 = 1 << 20;

/// A download in progress. See the module documentation. Dropping it without [`PartialDownload::finish`] keeps
/// what arrived for the next [`super::Cache::partial`] of the same file.
#[derive(Debug)]
pub struct PartialDownload {
    cache: Arc<Inner>,
    sha: String,
    data_path: PathBuf,
    have_path: PathBuf,
    file: File,
    total_size: u64,
    chunk_size: u32,
    have: Vec<bool>,
    growing: Option<Arc<GrowingFile>>,
    finished: bool,
}

/// Deletes the `.part` and `.have` files of `sha` in `dir`.
pub(crate) fn remove_files(dir: &Path, sha: &str) -> Result<(), CacheError> {
    for ext in ["have", "part"] {
        let path = dir.join(format!("{sha}.{ext}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    sync_dir(dir).map_err(|e| io_error(dir, e))
}

fn layout_error(sha: &str, detail: String) -> CacheError {
    CacheError::InvalidLayout { sha: sha.to_string(), detail }
}

impl PartialDownload {
    pub(crate) fn open(
        cache: Arc<Inner>,
        sha: &str,
        total_size: u64,
        chunk_size: u32,
        chunk_count: u32,
    ) -> Result<PartialDownload, CacheError> {
        if total_size == 0 || chunk_size == 0 {
            return Err(layout_error(sha, format!("size {total_size} and chunk size {chunk_size} must be positive")));
        }
        let expected = total_size.div_ceil(u64::from(chunk_size));
        if u64::from(chunk_count) != expected || chunk_count > MAX_CHUNKS {
            let detail =
                format!("{total_size} bytes in chunks of {chunk_size} is {expected} chunks, not {chunk_count}");
            return Err(layout_error(sha, detail));
        }
        let dir = cache.partial.clone();
        let data_path = dir.join(format!("{sha}.part"));
        let have_path = dir.join(format!("{sha}.have"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| io_error(&data_path, e))?;
        let len = file.metadata().map_err(|e| io_error(&data_path, e))?.len();
        let mut have =
            if len == total_size { read_bitmap(&have_path, total_size, chunk_size, chunk_count) } else { None }
                .unwrap_or_else(|| vec![false; chunk_count as usize]);
        if len != total_size {
            // A new download, or a data file that does not match any bitmap: start from nothing, and make sure
            // no old bitmap survives to vouch for chunks of it.
            have.fill(false);
            match fs::remove_file(&have_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&have_path, e)),
            }
            file.set_len(total_size).map_err(|e| io_error(&data_path, e))?;
            file.sync_all().map_err(|e| io_error(&data_path, e))?;
            sync_dir(&dir).map_err(|e| io_error(&dir, e))?;
        }
        let held = have.iter().filter(|h| **h).count();
        tracing::debug!(sha, total_size, chunk_size, chunk_count, held, "download opened");
        Ok(PartialDownload {
            cache,
            sha: sha.to_string(),
            data_path,
            have_path,
            file,
            total_size,
            chunk_size,
            have,
            growing: None,
            finished: false,
        })
    }

    /// The file's SHA-256.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The file's full size in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Bytes per chunk (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.have.len() as u32
    }

    /// True when chunk `index` is on disk.
    pub fn have(&self, index: u32) -> bool {
        self.have.get(index as usize).copied().unwrap_or(false)
    }

    /// Indices of the chunks still to fetch, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.chunk_count()).filter(|i| !self.have(*i)).collect()
    }

    /// True when every chunk is on disk (then call [`PartialDownload::finish`]).
    pub fn is_complete(&self) -> bool {
        self.have.iter().all(|h| *h)
    }

    /// How many bytes from the start of the file are on disk without a gap: what a player may read already.
    pub fn bytes_contiguous_prefix(&self) -> u64 {
        let chunks = self.have.iter().take_while(|h| **h).count() as u64;
        (chunks * u64::from(self.chunk_size)).min(self.total_size)
    }

    /// The length chunk `index` must have.
    fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        u64::from(self.chunk_size).min(self.total_size.saturating_sub(start))
    }

    /// Writes chunk `index` (already verified by the caller) and records it as held. Writing a chunk that is
    /// already held does nothing.
    pub fn write_chunk(&mut self, index: u32, bytes: &[u8]) -> Result<(), CacheError> {
        let bad = |detail: String| CacheError::BadChunk { sha: self.sha.clone(), index, detail };
        if index >= self.chunk_count() {
            return Err(bad(format!("index out of range (the file has {} chunks)", self.chunk_count())));
        }
        if bytes.len() as u64 != self.chunk_len(index) {
            return Err(bad(format!("{} bytes where {} were expected", bytes.len(), self.chunk_len(index))));
        }
        if self.have(index) {
            return Ok(());
        }
        let offset = u64::from(index) * u64::from(self.chunk_size);
        let path = &self.data_path;
        self.cache.check_space(path)?;
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| io_error(path, e))?;
        self.file.write_all(bytes).map_err(|e| io_error(path, e))?;
        self.file.sync_data().map_err(|e| io_error(path, e))?;
        if let Some(slot) = self.have.get_mut(index as usize) {
            *slot = true;
        }
        let bitmap = encode_bitmap(self.total_size, self.chunk_size, &self.have);
        if let Err(e) = write_atomic(&self.have_path, &bitmap) {
            // The bitmap on disk still says "not held", so memory must say so too.
            if let Some(slot) = self.have.get_mut(index as usize) {
                *slot = false;
            }
            return Err(e);
        }
        if let Some(growing) = &self.growing {
            growing.set_available(self.bytes_contiguous_prefix());
        }
        Ok(())
    }

    /// A shared read handle over this download for the player; its readable prefix grows as chunks arrive and
    /// it is marked complete by [`PartialDownload::finish`] (or abandoned if this download is dropped or fails).
    pub fn growing(&mut self) -> Result<Arc<GrowingFile>, CacheError> {
        if let Some(growing) = &self.growing {
            return Ok(Arc::clone(growing));
        }
        let growing = GrowingFile::open(&self.data_path, self.total_size, self.bytes_contiguous_prefix())
            .map_err(|e| io_error(&self.data_path, e))?;
        let growing = Arc::new(growing);
        self.growing = Some(Arc::clone(&growing));
        Ok(growing)
    }

    /// Checks the whole file against its SHA-256 and moves it into the cache, returning its path. On a mismatch
    /// the download is deleted and [`CacheError::HashMismatch`] tells the caller to fetch it again from scratch.
    pub fn finish(mut self) -> Result<PathBuf, CacheError> {
        let missing = self.have.iter().filter(|h| !**h).count();
        if missing > 0 {
            return Err(CacheError::Incomplete { sha: self.sha.clone(), missing });
        }
        let actual = sha256_file(&self.data_path).map_err(|e| io_error(&self.data_path, e))?;
        if actual != self.sha {
            tracing::error!(sha = %self.sha, actual, "downloaded file does not match its hash; discarding it");
            remove_files(&self.cache.partial, &self.sha)?;
            return Err(CacheError::HashMismatch { sha: self.sha.clone(), actual });
        }
        let target = self.cache.object_path(&self.sha);
        fs::rename(&self.data_path, &target).map_err(|e| io_error(&target, e))?;
        self.finished = true;
        if let Some(growing) = &self.growing {
            growing.mark_complete();
        }
        sync_dir(&self.cache.objects).map_err(|e| io_error(&self.cache.objects, e))?;
        remove_files(&self.cache.partial, &self.sha)?;
        let mut state = self.cache.lock();
        self.cache.touch(&mut state, &self.sha);
        tracing::info!(sha = %self.sha, bytes = self.total_size, "download complete");
        Ok(target)
    }
}

impl Drop for PartialDownload {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(growing) = &self.growing {
                growing.abandon();
            }
        }
        self.cache.lock().open.remove(&self.sha);
    }
}

fn encode_bitmap(total_size: u64, chunk_size: u32, have: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + have.len() / 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&total_size.to_le_bytes());
    out.extend_from_slice(&chunk_size.to_le_bytes());
    out.extend_from_slice(&(have.len() as u32).to_le_bytes());
    let mut bits = vec![0u8; have.len().div_ceil(8)];
    for (i, held) in have.iter().enumerate() {
        if let (true, Some(byte)) = (*held, bits.get_mut(i / 8)) {
            *byte |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bits);
    let check = sha256_hex(&out);
    out.extend_from_slice(check.get(..16).unwrap_or_default().as_bytes());
    out
}

/// The held chunks recorded in `path`, or `None` when the file is missing, torn or for another layout.
fn read_bitmap(path: &Path, total_size: u64, chunk_size: u32, chunk_count: u32) -> Option<Vec<bool>> {
    let bytes = fs::read(path).ok()?;
    let expected_len = encode_bitmap(total_size, chunk_size, &vec![false; chunk_count as usize]).len();
    if bytes.len() != expected_len {
        tracing::warn!(file = %path.display(), len = bytes.len(), expected_len, "torn chunk bitmap; fetching again");
        return None;
    }
    let bits = bytes.get(24..expected_len - 16)?;
    let have: Vec<bool> =
        (0..chunk_count as usize).map(|i| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)).collect();
    if encode_bitmap(total_size, chunk_size, &have) != bytes {
        tracing::warn!(file = %path.display(), "chunk bitmap fails its check or is for another layout; fetching again");
        return None;
    }
    Some(have)
}
