//! [`GrowingFile`]: a read handle over a file that is still arriving, shared between the download (which
//! announces how many bytes from the start are on disk and when the file is complete) and the player (which
//! reads that prefix and waits when it catches up). The handle keeps its own open file, so it keeps reading the
//! same bytes when the finished download is renamed into `objects/`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How far a growing file has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes from the start that are on disk and may be read.
    pub available: u64,
    /// Size of the whole file.
    pub total: u64,
    /// The whole file arrived and its SHA-256 matched.
    pub complete: bool,
    /// The download ended without completing (it was dropped, or the whole-file hash did not match): no more
    /// bytes will come through this handle and what is there should not be played on.
    pub abandoned: bool,
}

/// Shared read handle over a file whose readable prefix grows. See the module documentation.
#[derive(Debug)]
pub struct GrowingFile {
    file: File,
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl GrowingFile {
    /// Opens `path` for reading, of which `available` bytes (of `total`) are readable now.
    pub fn open(path: &Path, total: u64, available: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        let progress = Progress { available: available.min(total), total, complete: false, abandoned: false };
        Ok(GrowingFile { file, progress: Mutex::new(progress), changed: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        *self.lock()
    }

    /// Announces that `available` bytes from the start are on disk (never moves backwards).
    pub fn set_available(&self, available: u64) {
        let mut p = self.lock();
        p.available = p.available.max(available.min(p.total));
        self.changed.notify_all();
    }

    /// Announces that the whole file arrived and was verified.
    pub fn mark_complete(&self) {
        let mut p = self.lock();
        p.available = p.total;
        p.complete = true;
        self.changed.notify_all();
    }

    /// Announces that no more bytes will come (the download was given up or failed verification).
    pub fn abandon(&self) {
        let mut p = self.lock();
        if !p.complete {
            p.abandoned = true;
        }
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for more than `offset` bytes to be available, or for the file to be complete or
    /// abandoned; returns the progress then.
    pub fn wait_beyond(&self, offset: u64, timeout: Duration) -> Progress {
        let deadline = Instant::now() + timeout;
        let mut p = self.lock();
        while p.available <= offset && !p.complete && !p.abandoned {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self.changed.wait_timeout(p, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *p
    }

    /// Reads into `buf` from `offset`, never past the available prefix; returns the number of bytes read
    /// (0 when nothing beyond `offset` is available yet).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.lock().available;
        let room = usize::try_from(available.saturating_sub(offset)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        let mut done = 0;
        while done < want {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            let n = self.file.read_at(rest, offset + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "growing file is shorter than announced"));
            }
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reads_only_the_available_prefix_and_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let g = Arc::new(GrowingFile::open(&path, 11, 5).unwrap());
        let mut buf = [0u8; 16];
        assert_eq!(g.read_at(0, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(g.read_at(5, &mut buf).unwrap(), 0);

        let writer = Arc::clone(&g);
        let t = std::thread::spawn(move || writer.set_available(11));
        let p = g.wait_beyond(5, Duration::from_secs(10));
        t.join().unwrap();
        assert_eq!(p.available, 11);
        assert_eq!(g.read_at(5, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b" world");

        g.set_available(3); // never backwards
        assert_eq!(g.progress().available, 11);
        g.mark_complete();
        g.abandon(); // too late: it is complete
        let p = g.wait_beyond(11, Duration::from_secs(10));
        assert!(p.complete && !p.abandoned);
    }

    #[test]
    fn wait_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let g = GrowingFile::open(&path, 3, 0).unwrap();
        let p = g.wait_beyond(0, Duration::from_millis(10));
        assert_eq!(p.available, 0);
        assert!(!p.complete && !p.abandoned);
    }
}
