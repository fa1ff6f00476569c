//! Small file-system helpers for the cache: SHA-256 of bytes and files, atomic writes (temporary file in the
//! same folder, fsync, rename, fsync the folder) and the mapping of `std::io` errors to [`CacheError`], which
//! singles out a full disk.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::CacheError;

/// Suffix of temporary files; anything ending in it is debris from an interrupted write.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of a file's content, read in pieces.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// True for a SHA-256 written as 64 lowercase hex digits (the only names the cache accepts, so a name can never
/// point outside the cache folder).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Flushes a folder's entries (new names, renames, removals) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary name next to `target`, unique within this process.
pub(crate) fn tmp_path(target: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{}-{n}{TMP_SUFFIX}", std::process::id()))
}

/// Replaces `target` with `bytes` so that after a crash at any point it holds either the old or the new content.
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = tmp_path(target);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
        file.sync_all().map_err(|e| io_error(&tmp, e))?;
        fs::rename(&tmp, target).map_err(|e| io_error(target, e))?;
        let dir = target.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| io_error(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files left in `dir` by writes that a crash interrupted.
pub(crate) fn remove_debris(dir: &Path) -> Result<(), CacheError> {
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(TMP_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "removing debris of an interrupted write");
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Maps an I/O error on `path` to a cache error, keeping "disk full" apart.
pub(crate) fn io_error(path: &Path, source: io::Error) -> CacheError {
    if source.kind() == io::ErrorKind::StorageFull || source.kind() == io::ErrorKind::QuotaExceeded {
        CacheError::DiskFull { path: path.to_path_buf() }
    } else {
        CacheError::Io { path: path.to_path_buf(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_names() {
        assert!(is_sha256_hex(&sha256_hex(b"abc")));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(!is_sha256_hex("../../etc/passwd"));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
    }

    #[test]
    fn full_disk_is_its_own_error() {
        let err = io_error(Path::new("x"), io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(err, CacheError::DiskFull { .. }));
        let err = io_error(Path::new("x"), io::Error::from_raw_os_error(28)); // ENOSPC on Linux
        assert!(matches!(err, CacheError::DiskFull { .. }), "{err:?}");
        let err = io_error(Path::new("x"), io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(err, CacheError::Io { .. }));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(sha256_file(&target).unwrap(), sha256_hex(b"two"));
    }
}
