//! The chunk downloader: pulls the bulletins the plan needs, most urgent first, over the request/frame loop.
//!
//! [`Downloader::set_wanted`] takes the bulletins to fetch in priority order with their manifests, and opens a
//! [`PartialDownload`] in the cache for each (resuming what an earlier run stored: verified chunks are never
//! fetched again). [`Downloader::requests`] keeps at most `window` chunks in flight across all downloads, in
//! that order, and asks again for chunks not received within the timeout (frames travel at QoS 0: the pull loop
//! is the retry). [`Downloader::on_frame`] finds the download by the frame's tag, checks the data against the
//! manifest's chunk hash before writing it, and moves a complete file into the cache after checking its
//! SHA-256. A bad frame or file is an error for the caller to count; its chunks are simply asked for again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use loa_protocol::request::{self, MAX_RANGES};
use loa_protocol::{BulletinId, BulletinTag, ChunkFrame, ChunkRequest, Manifest, ProtocolError};

use crate::cache::{Cache, CacheError, PartialDownload};

/// What a frame did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameOutcome {
    /// Stored; the download goes on.
    Stored,
    /// A chunk already held, or a frame for no download in progress (late or duplicate): ignored.
    Ignored,
    /// The last chunk: the bulletin is now in the cache.
    Completed(BulletinId),
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Not a frame, or it does not match the manifest (count it; the chunk is asked for again).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The cache refused it (the chunk or whole file is asked for again).
    #[error(transparent)]
    Cache(#[from] CacheError),
}

#[derive(Debug)]
struct Active {
    bulletin: BulletinId,
    manifest: Manifest,
    tag: BulletinTag,
    partial: PartialDownload,
    in_flight: HashMap<u32, Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Downloader {
    cache: Cache,
    window: usize,
    timeout: Duration,
    /// In priority order.
    active: Vec<Active>,
    next_req: u32,
}

impl Downloader {
    pub(crate) fn new(cache: Cache, window: u32, timeout: Duration) -> Self {
        Downloader { cache, window: window.max(1) as usize, timeout, active: Vec::new(), next_req: 0 }
    }

    /// Sets what to fetch, most urgent first. Downloads no longer wanted are closed (their chunks stay on disk
    /// until the cache evicts them). Files already cached are skipped. Errors opening one download are logged
    /// and that bulletin is skipped.
    pub(crate) fn set_wanted(&mut self, wanted: Vec<Manifest>) {
        let mut old: Vec<Active> = std::mem::take(&mut self.active);
        for manifest in wanted {
            let sha = manifest.sha256.to_hex();
            if self.cache.contains(&sha) {
                continue;
            }
            if let Some(pos) = old.iter().position(|a| a.manifest.sha256 == manifest.sha256) {
                self.active.push(old.swap_remove(pos));
                continue;
            }
            match self.cache.partial(&sha, manifest.size, manifest.chunk_size, manifest.chunk_count()) {
                Ok(partial) => {
                    tracing::info!(bulletin = %manifest.bulletin, have = manifest.chunk_count() as usize - partial.missing().len(), chunks = manifest.chunk_count(), "download started");
                    self.active.push(Active {
                        bulletin: manifest.bulletin.clone(),
                        tag: manifest.tag(),
                        manifest,
                        partial,
                        in_flight: HashMap::new(),
                    });
                }
                Err(e) => tracing::error!(bulletin = %manifest.bulletin, error = %e, "cannot start download"),
            }
        }
    }

    /// Forgets every request in flight (after the link dropped, or a resync), so all are asked again.
    pub(crate) fn clear_in_flight(&mut self) {
        for a in &mut self.active {
            a.in_flight.clear();
        }
    }

    /// Downloads in progress.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.len()
    }

    /// The requests to send now: timed-out chunks again, then new ones up to the window.
    pub(crate) fn requests(&mut self, now: Instant) -> Vec<ChunkRequest> {
        let timeout = self.timeout;
        for a in &mut self.active {
            a.in_flight.retain(|_, sent| now.duration_since(*sent) < timeout);
        }
        let mut budget = self.window.saturating_sub(self.active.iter().map(|a| a.in_flight.len()).sum());
        let mut out = Vec::new();
        for a in &mut self.active {
            if budget == 0 {
                break;
            }
            let pick: Vec<u32> = (0..a.manifest.chunk_count())
                .filter(|i| !a.partial.have(*i) && !a.in_flight.contains_key(i))
                .take(budget)
                .collect();
            if pick.is_empty() {
                continue;
            }
            // Keep each request within the protocol's range limit.
            for group in request::ranges(pick.iter().copied()).chunks(MAX_RANGES) {
                self.next_req = self.next_req.wrapping_add(1);
                out.push(ChunkRequest { req: self.next_req, bulletin: a.bulletin.clone(), chunks: group.to_vec() });
            }
            for i in &pick {
                a.in_flight.insert(*i, now);
            }
            budget -= pick.len();
        }
        out
    }

    /// Checks and stores one received frame. See the module documentation.
    pub(crate) fn on_frame(&mut self, bytes: &[u8]) -> Result<FrameOutcome, FrameError> {
        let frame = ChunkFrame::decode(bytes)?;
        let Some(pos) = self.active.iter().position(|a| a.tag == frame.tag) else {
            return Ok(FrameOutcome::Ignored);
        };
        let a = &mut self.active[pos];
        a.in_flight.remove(&frame.index);
        if a.partial.have(frame.index) {
            return Ok(FrameOutcome::Ignored);
        }
        a.manifest.verify_chunk(frame.index, &frame.data)?;
        a.partial.write_chunk(frame.index, &frame.data)?;
        if !a.partial.is_complete() {
            return Ok(FrameOutcome::Stored);
        }
        let done = self.active.remove(pos);
        let bulletin = done.bulletin.clone();
        match done.partial.finish() {
            Ok(path) => {
                tracing::info!(bulletin = %bulletin, file = %path.display(), "bulletin downloaded and verified");
                Ok(FrameOutcome::Completed(bulletin))
            }
            Err(e) => {
                // The download was deleted: reopen it so it starts again from scratch.
                self.set_wanted_again(done.manifest);
                Err(e.into())
            }
        }
    }

    fn set_wanted_again(&mut self, manifest: Manifest) {
        let mut wanted: Vec<Manifest> = self.active.iter().map(|a| a.manifest.clone()).collect();
        wanted.push(manifest);
        self.set_wanted(wanted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::{manifest_for, ts};

    fn setup(size_ms: u32) -> (tempfile::TempDir, Cache, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache"), 1 << 30).unwrap();
        let (manifest, file) = manifest_for("b-000000000001-vi", ts(1_800_000_000_000), size_ms);
        (dir, cache, manifest, file)
    }

    #[test]
    fn window_timeouts_verification_and_resume() {
        let (_dir, cache, manifest, file) = setup(40_000);
        let n = manifest.chunk_count();
        assert!(n > 6, "{n} chunks");
        let mut d = Downloader::new(cache.clone(), 4, Duration::from_secs(10));
        d.set_wanted(vec![manifest.clone()]);
        let t0 = Instant::now();
        let reqs = d.requests(t0);
        let asked: Vec<u32> = reqs.iter().flat_map(|r| r.indices().collect::<Vec<_>>()).collect();
        assert_eq!(asked, [0, 1, 2, 3]);
        assert!(d.requests(t0).is_empty(), "window full");
        // A tampered frame is refused and asked for again at once.
        let mut bad = manifest.frame(&file, 0).unwrap();
        bad.data[0] ^= 1;
        let err = d.on_frame(&bad.encode().unwrap()).unwrap_err();
        assert!(matches!(err, FrameError::Protocol(ProtocolError::ChunkHashMismatch { .. })), "{err}");
        assert!(d.on_frame(b"garbage").is_err());
        let good = manifest.frame(&file, 1).unwrap().encode().unwrap();
        assert_eq!(d.on_frame(&good).unwrap(), FrameOutcome::Stored);
        assert_eq!(d.on_frame(&good).unwrap(), FrameOutcome::Ignored);
        let asked: Vec<u32> = d.requests(t0).iter().flat_map(|r| r.indices().collect::<Vec<_>>()).collect();
        assert_eq!(asked, [0, 4]);
        // After the timeout, 2 and 3 are asked again too.
        let later = t0 + Duration::from_secs(11);
        let asked: Vec<u32> = d.requests(later).iter().flat_map(|r| r.indices().collect::<Vec<_>>()).collect();
        assert_eq!(asked, [0, 2, 3, 4]);
        // Restart: chunk 1 is not fetched again.
        drop(d);
        let mut d = Downloader::new(cache.clone(), 64, Duration::from_secs(10));
        d.set_wanted(vec![manifest.clone()]);
        let asked: Vec<u32> = d.requests(later).iter().flat_map(|r| r.indices().collect::<Vec<_>>()).collect();
        assert!(!asked.contains(&1) && asked.len() as u32 == n - 1, "{asked:?}");
        let mut last = FrameOutcome::Ignored;
        for i in asked {
            last = d.on_frame(&manifest.frame(&file, i).unwrap().encode().unwrap()).unwrap();
        }
        assert_eq!(last, FrameOutcome::Completed(manifest.bulletin.clone()));
        assert!(cache.contains(&manifest.sha256.to_hex()));
        assert_eq!(d.active(), 0);
        d.set_wanted(vec![manifest]);
        assert_eq!(d.active(), 0, "cached files are not downloaded again");
    }
}
