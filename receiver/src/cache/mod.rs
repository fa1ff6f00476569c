//! The receiver's content-addressed audio cache, in its state folder:
//!
//! ```text
//! <dir>/objects/<sha256>.opus   complete, verified files (written atomically)
//! <dir>/partial/<sha256>.part   a download in progress, at its full size, chunks written in place
//! <dir>/partial/<sha256>.have   which chunks of the .part are on disk (see `partial`)
//! <dir>/lru                     last-use order for eviction (see `index`)
//! ```
//!
//! Files are named by the SHA-256 of their content, so a name is its own checksum: [`Cache::read`] and
//! [`Cache::verify`] hash the file again and delete one that no longer matches (a failing SD card), reporting it
//! as missing so it is fetched again rather than played. [`Cache::evict`] deletes least-recently-used files until
//! the cache fits its cap, never one that is still planned (the caller passes those as pinned). Downloads go
//! through [`PartialDownload`], which survives power cuts; [`GrowingFile`] lets the player read a download that
//! is still arriving. A [`Cache`] is cheap to clone and may be used from several threads.

pub(crate) mod fsutil;
mod growing;
mod index;
mod partial;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use growing::{GrowingFile, Progress};
pub use partial::PartialDownload;

use crate::faults::DeviceFaults;
use fsutil::{io_error, is_sha256_hex, remove_debris, sha256_file, sha256_hex, sync_dir, write_atomic};
use index::LruIndex;

/// What went wrong in the cache; each variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A name that is not a SHA-256 in lowercase hex: reject the manifest or request that carried it.
    #[error("{0:?} is not a SHA-256 (64 lowercase hex digits): reject what named it")]
    InvalidSha(String),

    /// The download's size, chunk size and chunk count do not agree: reject the manifest.
    #[error("inconsistent download layout for {sha}: {detail}: reject the manifest")]
    InvalidLayout {
        /// The file being downloaded.
        sha: String,
        /// What does not agree.
        detail: String,
    },

    /// A chunk has an index or length that does not fit the download: drop it and fetch that chunk again.
    #[error("chunk {index} of {sha} rejected: {detail}: fetch that chunk again")]
    BadChunk {
        /// The file being downloaded.
        sha: String,
        /// The chunk's index.
        index: u32,
        /// What was wrong.
        detail: String,
    },

    /// `finish` was called before every chunk arrived: fetch the missing chunks first.
    #[error("{sha} is incomplete ({missing} chunks missing): fetch them before finishing")]
    Incomplete {
        /// The file being downloaded.
        sha: String,
        /// How many chunks are still missing.
        missing: usize,
    },

    /// The content does not hash to its name. A download in this state has been deleted: fetch it again
    /// from the start.
    #[error("content named {sha} hashes to {actual}; it was discarded: fetch it again from the start")]
    HashMismatch {
        /// The expected SHA-256.
        sha: String,
        /// What the content hashed to.
        actual: String,
    },

    /// Another [`PartialDownload`] of the same file is open: keep using that one.
    #[error("{sha} is already being downloaded: use the download in progress")]
    Busy {
        /// The file being downloaded.
        sha: String,
    },

    /// The disk is full: evict files that are no longer planned, lower the cache cap, or free space.
    #[error("disk full while writing {}: evict unplanned files or free space", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },

    /// Any other file-system error: check the storage (permissions, a failing SD card).
    #[error("i/o error on {}: {source}: check the storage", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// How full the cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of complete files plus downloads in progress.
    pub used_bytes: u64,
    /// The cap that [`Cache::evict`] keeps `used_bytes` under (when the pinned files allow).
    pub cap_bytes: u64,
    /// Bytes of complete files.
    pub object_bytes: u64,
    /// Bytes reserved by downloads in progress (their full size).
    pub partial_bytes: u64,
    /// Number of complete files.
    pub objects: usize,
    /// Number of downloads in progress.
    pub partials: usize,
}

/// The audio cache. See the module documentation.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    objects: PathBuf,
    partial: PathBuf,
    cap_bytes: u64,
    state: Mutex<State>,
    faults: Mutex<DeviceFaults>,
}

#[derive(Debug)]
pub(crate) struct State {
    lru: LruIndex,
    /// Files with an open [`PartialDownload`].
    open: HashSet<String>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails like a full disk would while the injected disk-full fault is set.
    pub(crate) fn check_space(&self, path: &Path) -> Result<(), CacheError> {
        let full = self.faults.lock().unwrap_or_else(PoisonError::into_inner).disk_full();
        if full {
            return Err(CacheError::DiskFull { path: path.to_path_buf() });
        }
        Ok(())
    }

    pub(crate) fn object_path(&self, sha: &str) -> PathBuf {
        self.objects.join(format!("{sha}.opus"))
    }

    /// Records a use of `sha`; a failure to save is logged, not returned (it only affects eviction order).
    pub(crate) fn touch(&self, state: &mut State, sha: &str) {
        state.lru.touch(sha);
        if let Err(e) = state.lru.save() {
            tracing::warn!(sha, error = %e, "cannot save the cache's use index");
        }
    }
}

fn check_sha(sha: &str) -> Result<(), CacheError> {
    if is_sha256_hex(sha) {
        Ok(())
    } else {
        Err(CacheError::InvalidSha(sha.to_string()))
    }
}

/// `(sha, bytes)` of the files in `dir` named `<sha>.<ext>`.
fn list_files(dir: &Path, ext: &str) -> Result<Vec<(String, u64)>, CacheError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(ext).and_then(|s| s.strip_suffix('.')) else {
            continue;
        };
        if is_sha256_hex(sha) {
            let len = entry.metadata().map_err(|e| io_error(&entry.path(), e))?.len();
            out.push((sha.to_string(), len));
        }
    }
    out.sort();
    Ok(out)
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir`, to be kept under `cap_bytes` by [`Cache::evict`].
    /// Removes debris of writes that a crash interrupted.
    pub fn open(dir: impl AsRef<Path>, cap_bytes: u64) -> Result<Cache, CacheError> {
        let dir = dir.as_ref();
        let objects = dir.join("objects");
        let partial = dir.join("partial");
        for d in [dir, &objects, &partial] {
            fs::create_dir_all(d).map_err(|e| io_error(d, e))?;
        }
        remove_debris(dir)?;
        remove_debris(&objects)?;
        remove_debris(&partial)?;
        // A bitmap without its data file is what a crash between finishing and cleaning up leaves.
        let parts: HashSet<String> = list_files(&partial, "part")?.into_iter().map(|(sha, _)| sha).collect();
        for (sha, _) in list_files(&partial, "have")? {
            if !parts.contains(&sha) {
                let _ = fs::remove_file(partial.join(format!("{sha}.have")));
            }
        }
        let mut lru = LruIndex::load(&dir.join("lru"));
        let present: HashSet<String> = list_files(&objects, "opus")?.into_iter().map(|(sha, _)| sha).collect();
        lru.retain(|sha| present.contains(sha));
        let state = Mutex::new(State { lru, open: HashSet::new() });
        tracing::info!(dir = %dir.display(), cap_bytes, objects = present.len(), "cache opened");
        let faults = Mutex::new(DeviceFaults::default());
        Ok(Cache { inner: Arc::new(Inner { objects, partial, cap_bytes, state, faults }) })
    }

    /// Makes writes fail with [`CacheError::DiskFull`] while `faults` says the disk is full (for the firmware
    /// simulator and tests; see [`crate::faults`]).
    pub fn set_faults(&self, faults: DeviceFaults) {
        *self.inner.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// True when a complete file named `sha` is in the cache (not re-verified; see [`Cache::verify`]).
    pub fn contains(&self, sha: &str) -> bool {
        is_sha256_hex(sha) && self.inner.object_path(sha).is_file()
    }

    /// Where the complete file named `sha` is, if it is cached (not re-verified; see [`Cache::verify`]).
    pub fn path(&self, sha: &str) -> Option<PathBuf> {
        self.contains(sha).then(|| self.inner.object_path(sha))
    }

    /// The content of `sha`, hashed again first. `Ok(None)` when it is not cached, or when the file on disk no
    /// longer matches its name: it is then deleted, and must be fetched again. Counts as a use.
    pub fn read(&self, sha: &str) -> Result<Option<Vec<u8>>, CacheError> {
        check_sha(sha)?;
        let path = self.inner.object_path(sha);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let actual = sha256_hex(&bytes);
        Ok(self.accept_or_delete(sha, &actual)?.then_some(bytes))
    }

    /// Like [`Cache::read`], but returns the verified file's path instead of its content (for the player).
    pub fn verify(&self, sha: &str) -> Result<Option<PathBuf>, CacheError> {
        check_sha(sha)?;
        let path = self.inner.object_path(sha);
        let actual = match sha256_file(&path) {
            Ok(actual) => actual,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok(self.accept_or_delete(sha, &actual)?.then_some(path))
    }

    /// Records a use when `actual` matches `sha`; otherwise deletes the damaged file and returns false.
    fn accept_or_delete(&self, sha: &str, actual: &str) -> Result<bool, CacheError> {
        let mut state = self.inner.lock();
        if actual == sha {
            self.inner.touch(&mut state, sha);
            return Ok(true);
        }
        let path = self.inner.object_path(sha);
        tracing::error!(sha, actual, file = %path.display(), "cached file is corrupt; deleting it so it is fetched again");
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        state.lru.forget(sha);
        if let Err(e) = state.lru.save() {
            tracing::warn!(sha, error = %e, "cannot save the cache's use index");
        }
        Ok(false)
    }

    /// Stores a whole file that arrived in one piece, after checking it hashes to `sha`. Counts as a use.
    pub fn insert(&self, sha: &str, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        check_sha(sha)?;
        let actual = sha256_hex(bytes);
        if actual != sha {
            return Err(CacheError::HashMismatch { sha: sha.to_string(), actual });
        }
        let path = self.inner.object_path(sha);
        self.inner.check_space(&path)?;
        write_atomic(&path, bytes)?;
        let mut state = self.inner.lock();
        self.inner.touch(&mut state, sha);
        Ok(path)
    }

    /// Records a use of `sha` now (for eviction order), e.g. when it is played from a path.
    pub fn touch(&self, sha: &str) -> Result<(), CacheError> {
        check_sha(sha)?;
        let mut state = self.inner.lock();
        state.lru.touch(sha);
        state.lru.save()
    }

    /// Deletes the complete file `sha`; returns whether it was there.
    pub fn remove(&self, sha: &str) -> Result<bool, CacheError> {
        check_sha(sha)?;
        let path = self.inner.object_path(sha);
        let mut state = self.inner.lock();
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(&path, e)),
        };
        state.lru.forget(sha);
        state.lru.save()?;
        Ok(existed)
    }

    /// Names of the complete files in the cache, sorted.
    pub fn list(&self) -> Result<Vec<String>, CacheError> {
        Ok(list_files(&self.inner.objects, "opus")?.into_iter().map(|(sha, _)| sha).collect())
    }

    /// How full the cache is.
    pub fn usage(&self) -> Result<Usage, CacheError> {
        let objects = list_files(&self.inner.objects, "opus")?;
        let partials = list_files(&self.inner.partial, "part")?;
        let object_bytes = objects.iter().map(|(_, n)| n).sum::<u64>();
        let partial_bytes = partials.iter().map(|(_, n)| n).sum::<u64>();
        Ok(Usage {
            used_bytes: object_bytes + partial_bytes,
            cap_bytes: self.inner.cap_bytes,
            object_bytes,
            partial_bytes,
            objects: objects.len(),
            partials: partials.len(),
        })
    }

    /// Frees space: first deletes downloads in progress whose file is not pinned (no longer planned) and not
    /// open, then deletes complete files that are not pinned, least recently used first, until the cache fits
    /// its cap. Pinned files are never deleted, even if that leaves the cache over its cap (see
    /// [`Cache::usage`]). Returns the names of the complete files deleted.
    pub fn evict(&self, pinned: &HashSet<String>) -> Result<Vec<String>, CacheError> {
        let mut state = self.inner.lock();
        let mut partial_bytes = 0;
        for (sha, len) in list_files(&self.inner.partial, "part")? {
            if pinned.contains(&sha) || state.open.contains(&sha) {
                partial_bytes += len;
                continue;
            }
            tracing::info!(sha, bytes = len, "deleting a download that is no longer planned");
            partial::remove_files(&self.inner.partial, &sha)?;
        }
        let objects = list_files(&self.inner.objects, "opus")?;
        let sizes: HashMap<&str, u64> = objects.iter().map(|(sha, n)| (sha.as_str(), *n)).collect();
        let mut used = partial_bytes + sizes.values().sum::<u64>();
        let mut candidates: Vec<&str> = sizes.keys().copied().filter(|sha| !pinned.contains(*sha)).collect();
        candidates.sort_by_key(|sha| (state.lru.last_use(sha), *sha));
        let mut evicted = Vec::new();
        for sha in candidates {
            if used <= self.inner.cap_bytes {
                break;
            }
            let path = self.inner.object_path(sha);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
            let bytes = sizes.get(sha).copied().unwrap_or(0);
            tracing::info!(sha, bytes, "evicted least recently used file");
            used = used.saturating_sub(bytes);
            state.lru.forget(sha);
            evicted.push(sha.to_string());
        }
        if !evicted.is_empty() {
            sync_dir(&self.inner.objects).map_err(|e| io_error(&self.inner.objects, e))?;
            state.lru.save()?;
        }
        if used > self.inner.cap_bytes {
            tracing::warn!(used, cap = self.inner.cap_bytes, "cache stays over its cap: the rest is planned");
        }
        Ok(evicted)
    }

    /// Starts or resumes the download of `sha`: `total_size` bytes in `chunk_count` chunks of `chunk_size`
    /// (the last one shorter). Chunks already on disk from an earlier run are kept. Only one download of a
    /// file may be open at a time.
    pub fn partial(
        &self,
        sha: &str,
        total_size: u64,
        chunk_size: u32,
        chunk_count: u32,
    ) -> Result<PartialDownload, CacheError> {
        check_sha(sha)?;
        if total_size > self.inner.cap_bytes {
            let detail = format!("{total_size} bytes is more than the whole cache ({})", self.inner.cap_bytes);
            return Err(CacheError::InvalidLayout { sha: sha.to_string(), detail });
        }
        {
            let mut state = self.inner.lock();
            if !state.open.insert(sha.to_string()) {
                return Err(CacheError::Busy { sha: sha.to_string() });
            }
        }
        let result = PartialDownload::open(Arc::clone(&self.inner), sha, total_size, chunk_size, chunk_count);
        if result.is_err() {
            self.inner.lock().open.remove(sha);
        }
        result
    }

    /// Deletes the download in progress of `sha` (unless it is open), e.g. when it is no longer planned.
    pub fn remove_partial(&self, sha: &str) -> Result<(), CacheError> {
        check_sha(sha)?;
        let state = self.inner.lock();
        if state.open.contains(sha) {
            return Err(CacheError::Busy { sha: sha.to_string() });
        }
        partial::remove_files(&self.inner.partial, sha)
    }
}

#[cfg(test)]
mod tests;
