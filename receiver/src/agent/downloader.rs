//! The chunk downloader: pulls the bulletins the plan needs, most urgent first, over the request/frame loop.
//!
//! [`Downloader::set_wanted`] takes the bulletins to fetch in priority order with their manifests, and opens a
//! [`PartialDownload`] in the cache for each (resuming what an earlier run stored: verified chunks are never
//! fetched again). [`Downloader::requests`] keeps a window of chunk bytes in flight across all downloads, in
//! that order and each file from its start (so a file can be played while it arrives), sized by the link
//! [`Estimator`] (about rate × (min RTT + 0.5 s), 2 to `window_chunks` chunks), and asks again for chunks not
//! received within a timeout relative to the measured RTT and the queue ahead of them (frames travel at QoS 0:
//! the pull loop is the retry). [`Downloader::on_frame`] finds the download by the frame's tag, checks the data
//! against the manifest's chunk hash before writing it, and moves a complete file into the cache after checking
//! its SHA-256. A bad frame or file is an error for the caller to count; its chunks are simply asked for again.
//!
//! A chunk overdue by half a round trip (likely held behind a lost TCP segment being repaired: its bytes will
//! arrive all at once with those behind it) stops holding the window, up to one window of such chunks, so the
//! sender is asked for more and the link does not stand idle through the repair.
//!
//! Urgent downloads (emergencies) get the whole window: when one appears, the requests in flight for the
//! others are forgotten (no longer counted against the window, so the urgent chunks are asked for at once; if
//! their frames still arrive they are stored, not wasted), and the others get no new requests until the urgent
//! ones are complete. A download that is still arriving can be played through [`Downloader::growing`]; the
//! cache's [`PartialDownload`] moves its readable prefix on as chunks arrive, and marks it complete (or
//! abandoned, if the file fails its hash or the download is dropped).
//!
//! A full disk pauses every download for [`DISK_FULL_RETRY`]: frames arriving meanwhile are dropped, and the
//! chunks are asked for again afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loa_protocol::request::{self, MAX_RANGES};
use loa_protocol::{BulletinId, BulletinTag, ChunkFrame, ChunkRequest, Manifest, ProtocolError};

use super::estimator::Estimator;
use crate::cache::{Cache, CacheError, GrowingFile, PartialDownload};

/// How long downloads pause after the disk was found full.
pub(crate) const DISK_FULL_RETRY: Duration = Duration::from_secs(5);

/// What a frame did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameOutcome {
    /// Stored; the download goes on.
    Stored,
    /// A chunk already held, or a frame for no download in progress (late or duplicate), or downloads are
    /// paused: ignored.
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
    /// The cache refused it (the chunk or whole file is asked for again; a full disk pauses downloads).
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A bulletin to fetch.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    /// Its manifest.
    pub manifest: Manifest,
    /// An emergency: it gets the whole window.
    pub urgent: bool,
}

/// How much of a download is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Bytes from the start without a gap.
    pub prefix: u64,
    /// The file's size.
    pub total: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    due: Instant,
    /// Bytes in flight ahead of it when it was asked for.
    ahead: u64,
    /// Counted against the window (false once forgotten for an urgent download, or relieved when overdue).
    counted: bool,
    len: u64,
    /// When it is overdue: likely held behind a lost segment that TCP is repairing (None: link not measured).
    overdue_at: Option<Instant>,
    /// No longer counted because it was overdue.
    relieved: bool,
}

#[derive(Debug)]
struct Active {
    bulletin: BulletinId,
    manifest: Manifest,
    tag: BulletinTag,
    partial: PartialDownload,
    in_flight: HashMap<u32, Sent>,
    /// Chunks asked for more than once (their frames give no RTT sample).
    asked_again: HashSet<u32>,
    urgent: bool,
}

impl Active {
    fn chunk_len(&self, index: u32) -> u64 {
        let cs = u64::from(self.manifest.chunk_size);
        cs.min(self.manifest.size.saturating_sub(u64::from(index) * cs))
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Downloader {
    cache: Cache,
    max_chunks: u32,
    chunk_timeout: Duration,
    /// In priority order.
    active: Vec<Active>,
    next_req: u32,
    link: Estimator,
    paused_until: Option<Instant>,
    /// Frames for no download (yet), newest last: see [`Downloader::take_early`].
    early: VecDeque<(Instant, BulletinTag, Vec<u8>)>,
}

/// Frames kept for a download that has not started.
const EARLY_FRAMES: usize = 8;
/// How long such a frame is kept.
const EARLY_MAX_AGE: Duration = Duration::from_secs(30);

impl Downloader {
    pub(crate) fn new(cache: Cache, window_chunks: u32, chunk_timeout: Duration) -> Self {
        Downloader {
            cache,
            max_chunks: window_chunks.max(1),
            chunk_timeout,
            active: Vec::new(),
            next_req: 0,
            link: Estimator::new(),
            early: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Sets what to fetch, most urgent first. Downloads no longer wanted are closed (their chunks stay on disk
    /// until the cache evicts them). Files already cached are skipped. Errors opening one download are logged
    /// and that bulletin is skipped. A newly urgent download makes the others' requests in flight forgotten.
    pub(crate) fn set_wanted(&mut self, wanted: Vec<Wanted>) {
        let mut old: Vec<Active> = std::mem::take(&mut self.active);
        let mut newly_urgent = false;
        for Wanted { manifest, urgent } in wanted {
            let sha = manifest.sha256.to_hex();
            if self.cache.contains(&sha) || self.active.iter().any(|a| a.manifest.sha256 == manifest.sha256) {
                continue;
            }
            if let Some(pos) = old.iter().position(|a| a.manifest.sha256 == manifest.sha256) {
                let mut a = old.swap_remove(pos);
                newly_urgent |= urgent && !a.urgent;
                a.urgent = urgent;
                self.active.push(a);
                continue;
            }
            match self.cache.partial(&sha, manifest.size, manifest.chunk_size, manifest.chunk_count()) {
                Ok(partial) => {
                    let have = manifest.chunk_count() as usize - partial.missing().len();
                    tracing::info!(bulletin = %manifest.bulletin, have, chunks = manifest.chunk_count(), urgent, "download started");
                    newly_urgent |= urgent;
                    self.active.push(Active {
                        bulletin: manifest.bulletin.clone(),
                        tag: manifest.tag(),
                        manifest,
                        partial,
                        in_flight: HashMap::new(),
                        asked_again: HashSet::new(),
                        urgent,
                    });
                }
                Err(e) => tracing::error!(bulletin = %manifest.bulletin, error = %e, "cannot start download"),
            }
        }
        if newly_urgent {
            let mut forgotten = 0;
            for a in self.active.iter_mut().filter(|a| !a.urgent) {
                for sent in a.in_flight.values_mut().filter(|s| s.counted) {
                    sent.counted = false;
                    forgotten += 1;
                }
            }
            tracing::info!(forgotten, "urgent download: it gets the whole window");
        }
    }

    /// The kept frames that belong to a download now going on, for the caller to hand to
    /// [`Downloader::on_frame`] again. A chunk can arrive before the manifest that starts its download: an
    /// emergency's first chunk is pushed right behind its manifest, and a broker may deliver different topics out
    /// of order. Frames older than [`EARLY_MAX_AGE`] are dropped.
    pub(crate) fn take_early(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.early.retain(|(at, _, _)| now.saturating_duration_since(*at) < EARLY_MAX_AGE);
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.early)
            .into_iter()
            .partition(|(_, tag, _)| self.active.iter().any(|a| a.tag == *tag));
        self.early = rest;
        mine.into_iter().map(|(_, _, bytes)| bytes).collect()
    }

    /// Forgets every request in flight (after the link dropped, or a resync), so all are asked again.
    pub(crate) fn clear_in_flight(&mut self) {
        for a in &mut self.active {
            a.in_flight.clear();
        }
        self.link.idle();
    }

    /// Downloads in progress.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.len()
    }

    /// The link measurements.
    pub(crate) fn link(&self) -> &Estimator {
        &self.link
    }

    /// Whether an urgent download is in progress.
    pub(crate) fn urgent(&self) -> bool {
        self.active.iter().any(|a| a.urgent)
    }

    fn busy(&self) -> bool {
        self.active.iter().any(|a| !a.in_flight.is_empty())
    }

    /// How much of `bulletin` is on disk, while it downloads.
    pub(crate) fn held(&self, bulletin: &BulletinId) -> Option<Held> {
        let a = self.active.iter().find(|a| a.bulletin == *bulletin)?;
        Some(Held { prefix: a.partial.bytes_contiguous_prefix(), total: a.partial.total_size() })
    }

    /// A read handle on `bulletin` while it downloads, for the player.
    pub(crate) fn growing(&mut self, bulletin: &BulletinId) -> Option<Result<Arc<GrowingFile>, CacheError>> {
        let a = self.active.iter_mut().find(|a| a.bulletin == *bulletin)?;
        Some(a.partial.growing())
    }

    /// The requests to send now: timed-out chunks again, then new ones up to the window.
    pub(crate) fn requests(&mut self, now: Instant) -> Vec<ChunkRequest> {
        if self.paused_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        for a in &mut self.active {
            let late: Vec<u32> = a.in_flight.iter().filter(|(_, s)| s.due <= now).map(|(i, _)| *i).collect();
            for i in late {
                a.in_flight.remove(&i);
                a.asked_again.insert(i);
            }
        }
        for a in &mut self.active {
            let window = self.link.window_bytes(a.manifest.chunk_size, self.max_chunks);
            relieve_overdue(&mut a.in_flight, window, now);
        }
        let sent = || self.active.iter().flat_map(|a| a.in_flight.values());
        let mut counted: u64 = sent().filter(|s| s.counted).map(|s| s.len).sum();
        let mut ahead: u64 = sent().map(|s| s.len).sum();
        let urgent = self.urgent();
        let mut out = Vec::new();
        for a in &mut self.active {
            if urgent && !a.urgent {
                continue;
            }
            let window = self.link.window_bytes(a.manifest.chunk_size, self.max_chunks);
            let mut pick = Vec::new();
            for i in 0..a.manifest.chunk_count() {
                if a.partial.have(i) || a.in_flight.contains_key(&i) {
                    continue;
                }
                let len = a.chunk_len(i);
                if counted > 0 && counted + len > window {
                    break;
                }
                counted += len;
                let before = ahead;
                ahead += len;
                let due = now + self.link.timeout(ahead, self.chunk_timeout);
                let overdue_at = self.link.overdue_after(before).map(|d| now + d);
                a.in_flight
                    .insert(i, Sent { at: now, due, ahead: before, counted: true, len, overdue_at, relieved: false });
                pick.push(i);
            }
            // Keep each request within the protocol's range limit.
            for group in request::ranges(pick.iter().copied()).chunks(MAX_RANGES) {
                self.next_req = self.next_req.wrapping_add(1);
                out.push(ChunkRequest { req: self.next_req, bulletin: a.bulletin.clone(), chunks: group.to_vec() });
            }
            if counted >= window {
                break;
            }
        }
        out
    }

    /// Checks and stores one received frame. See the module documentation.
    pub(crate) fn on_frame(&mut self, bytes: &[u8], now: Instant) -> Result<FrameOutcome, FrameError> {
        let frame = ChunkFrame::decode(bytes)?;
        let busy_before = self.busy();
        let pos = self.active.iter().position(|a| a.tag == frame.tag);
        let rtt = pos.and_then(|pos| {
            let a = self.active.get_mut(pos)?;
            let sent = a.in_flight.remove(&frame.index)?;
            (!a.asked_again.contains(&frame.index)).then(|| (now.saturating_duration_since(sent.at), sent.ahead))
        });
        let busy_after = self.busy();
        self.link.on_frame(now, bytes.len(), busy_before, busy_after, rtt);
        let Some(pos) = pos else {
            self.early.push_back((now, frame.tag, bytes.to_vec()));
            if self.early.len() > EARLY_FRAMES {
                self.early.pop_front();
            }
            return Ok(FrameOutcome::Ignored);
        };
        if self.paused_until.is_some_and(|until| now < until) {
            return Ok(FrameOutcome::Ignored);
        }
        let Some(a) = self.active.get_mut(pos) else {
            return Ok(FrameOutcome::Ignored);
        };
        if a.partial.have(frame.index) {
            return Ok(FrameOutcome::Ignored);
        }
        a.manifest.verify_chunk(frame.index, &frame.data)?;
        if let Err(e) = a.partial.write_chunk(frame.index, &frame.data) {
            if matches!(e, CacheError::DiskFull { .. }) {
                self.paused_until = Some(now + DISK_FULL_RETRY);
            }
            return Err(e.into());
        }
        if !a.partial.is_complete() {
            return Ok(FrameOutcome::Stored);
        }
        let done = self.active.remove(pos);
        let bulletin = done.bulletin.clone();
        let urgent = done.urgent;
        match done.partial.finish() {
            Ok(path) => {
                tracing::info!(bulletin = %bulletin, file = %path.display(), "bulletin downloaded and verified");
                Ok(FrameOutcome::Completed(bulletin))
            }
            Err(e) => {
                // The download was deleted: reopen it so it starts again from scratch.
                let mut wanted: Vec<Wanted> =
                    self.active.iter().map(|a| Wanted { manifest: a.manifest.clone(), urgent: a.urgent }).collect();
                wanted.insert(if urgent { 0 } else { wanted.len() }, Wanted { manifest: done.manifest, urgent });
                self.set_wanted(wanted);
                Err(e.into())
            }
        }
    }
}

/// Chunks overdue (see [`Estimator::overdue_after`]) stop holding the window, up to one window of them.
///
/// On a lossy link a lost TCP segment holds back every byte behind it until its retransmission lands: the
/// frames of the chunks in flight then arrive all at once, about a round trip late, and with only the window's
/// chunks asked for the link would stand idle for the round trip it takes to ask for more. Asking for more
/// while they are overdue keeps the sender busy during the repair. They stay in flight (not asked again until
/// their timeout), and at most one window of them is relieved, so a link that is down does not pile up requests.
fn relieve_overdue(in_flight: &mut HashMap<u32, Sent>, window: u64, now: Instant) {
    let mut relieved: u64 = in_flight.values().filter(|s| s.relieved).map(|s| s.len).sum();
    let mut overdue: Vec<(&u32, &mut Sent)> =
        in_flight.iter_mut().filter(|(_, s)| s.counted && s.overdue_at.is_some_and(|t| t <= now)).collect();
    overdue.sort_by_key(|(i, _)| **i);
    for (_, s) in overdue {
        if relieved + s.len > window {
            break;
        }
        s.counted = false;
        s.relieved = true;
        relieved += s.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::{manifest_for, ts};
    use crate::faults::DeviceFaults;

    fn setup(size: u32) -> (tempfile::TempDir, Cache, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache"), 1 << 30).unwrap();
        let (manifest, file) = manifest_for("b-000000000001-vi", ts(1_800_000_000_000), size);
        (dir, cache, manifest, file)
    }

    fn normal(m: &Manifest) -> Wanted {
        Wanted { manifest: m.clone(), urgent: false }
    }

    fn asked(reqs: &[ChunkRequest]) -> Vec<u32> {
        reqs.iter().flat_map(|r| r.indices().collect::<Vec<_>>()).collect()
    }

    fn frame(m: &Manifest, file: &[u8], i: u32) -> Vec<u8> {
        m.frame(file, i).unwrap().encode().unwrap()
    }

    #[test]
    fn window_timeouts_verification_and_resume() {
        let (_dir, cache, manifest, file) = setup(40_000);
        let n = manifest.chunk_count();
        assert!(n > 6, "{n} chunks");
        let mut d = Downloader::new(cache.clone(), 4, Duration::from_secs(10));
        d.set_wanted(vec![normal(&manifest)]);
        let t0 = Instant::now();
        assert_eq!(asked(&d.requests(t0)), [0, 1, 2, 3]);
        assert!(d.requests(t0).is_empty(), "window full");
        // A tampered frame is refused and asked for again at once.
        let mut bad = manifest.frame(&file, 0).unwrap();
        bad.data[0] ^= 1;
        let err = d.on_frame(&bad.encode().unwrap(), t0).unwrap_err();
        assert!(matches!(err, FrameError::Protocol(ProtocolError::ChunkHashMismatch { .. })), "{err}");
        assert!(d.on_frame(b"garbage", t0).is_err());
        let good = frame(&manifest, &file, 1);
        assert_eq!(d.on_frame(&good, t0).unwrap(), FrameOutcome::Stored);
        assert_eq!(d.on_frame(&good, t0).unwrap(), FrameOutcome::Ignored);
        assert_eq!(asked(&d.requests(t0)), [0, 4]);
        // After the timeout (the configured one: the link is not measured yet), 2 and 3 are asked again too.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(asked(&d.requests(later)), [0, 2, 3, 4]);
        // Restart: chunk 1 is not fetched again.
        drop(d);
        let mut d = Downloader::new(cache.clone(), 1024, Duration::from_secs(10));
        d.set_wanted(vec![normal(&manifest)]);
        let mut last = FrameOutcome::Ignored;
        let mut got = Vec::new();
        while got.len() < n as usize - 1 {
            let reqs = d.requests(later);
            assert!(!reqs.is_empty());
            for i in asked(&reqs) {
                assert!(i != 1 && !got.contains(&i), "{i} asked again");
                got.push(i);
                last = d.on_frame(&frame(&manifest, &file, i), later).unwrap();
            }
        }
        assert_eq!(last, FrameOutcome::Completed(manifest.bulletin.clone()));
        assert!(cache.contains(&manifest.sha256.to_hex()));
        assert_eq!(d.active(), 0);
        d.set_wanted(vec![normal(&manifest)]);
        assert_eq!(d.active(), 0, "cached files are not downloaded again");
    }

    #[test]
    fn an_urgent_download_takes_the_window_and_late_frames_are_kept() {
        let (_dir, cache, long, long_file) = setup(60_000);
        let (alert, alert_file) = manifest_for("b-0000000000ee-vi", ts(1_800_000_000_000), 9_000);
        let mut d = Downloader::new(cache.clone(), 8, Duration::from_secs(10));
        d.set_wanted(vec![normal(&long)]);
        let t0 = Instant::now();
        assert_eq!(asked(&d.requests(t0)), [0, 1, 2, 3], "4 chunks before the link is measured");
        // The emergency arrives: it is asked for at once, with the whole window.
        d.set_wanted(vec![Wanted { manifest: alert.clone(), urgent: true }, normal(&long)]);
        assert!(d.urgent());
        let reqs = d.requests(t0);
        assert!(reqs.iter().all(|r| r.bulletin == alert.bulletin));
        assert_eq!(asked(&reqs), [0, 1, 2, 3]);
        // A late frame of the normal download is stored, not wasted.
        assert_eq!(d.on_frame(&frame(&long, &long_file, 2), t0).unwrap(), FrameOutcome::Stored);
        // While the emergency downloads, the normal one gets nothing, even with room in the window.
        let mut pending = asked(&reqs);
        let mut t = t0;
        let mut done = false;
        while !done {
            t += Duration::from_millis(100);
            for i in std::mem::take(&mut pending) {
                if let FrameOutcome::Completed(b) = d.on_frame(&frame(&alert, &alert_file, i), t).unwrap() {
                    assert_eq!(b, alert.bulletin);
                    done = true;
                }
            }
            if !done {
                let reqs = d.requests(t);
                assert!(reqs.iter().all(|r| r.bulletin == alert.bulletin), "{reqs:?}");
                pending = asked(&reqs);
            }
        }
        assert!(!d.urgent());
        // Then the normal download goes on without chunk 2.
        let reqs = d.requests(t);
        assert!(reqs.iter().all(|r| r.bulletin == long.bulletin));
        assert!(!asked(&reqs).contains(&2), "{:?}", asked(&reqs));
    }

    #[test]
    fn the_window_follows_the_measured_link() {
        // 100 chunks of 1 KiB; a link of 2 kB/s with 300 ms RTT: 2 kB/s × 0.8 s = 1.6 kB → the 2-chunk floor.
        let (_dir, cache, m, file) = setup(100 * 1024);
        let mut d = Downloader::new(cache, 16, Duration::from_secs(10));
        d.set_wanted(vec![normal(&m)]);
        let mut t = Instant::now();
        let mut queue: std::collections::VecDeque<(u32, Instant)> = Default::default();
        let mut max_in_flight = 0;
        let mut link_free = t;
        for _ in 0..400 {
            for i in asked(&d.requests(t)) {
                // Served in order: the link sends one chunk at a time, 512 ms each, after 300 ms.
                let start = link_free.max(t + Duration::from_millis(300));
                link_free = start + Duration::from_millis(512);
                queue.push_back((i, link_free));
            }
            max_in_flight = max_in_flight.max(queue.len());
            let Some((i, at)) = queue.pop_front() else { break };
            t = at;
            d.on_frame(&frame(&m, &file, i), t).unwrap();
            if t > Instant::now() + Duration::from_secs(20) {
                // After the start-up window, at most the 2-chunk floor (plus the one just answered).
                let (rate, rtt) = (d.link().rate(), d.link().min_rtt());
                assert!(queue.len() <= 2, "{} in flight: {rate:?} {rtt:?}", queue.len());
            }
        }
        let rate = d.link().rate().unwrap();
        assert!((1800.0..2200.0).contains(&rate), "{rate}");
        assert!(max_in_flight <= 4, "{max_in_flight}");
    }

    #[test]
    fn chunks_held_behind_a_repair_stop_holding_the_window() {
        // The link of the test above, measured first.
        let (_dir, cache, m, file) = setup(100 * 1024);
        let mut d = Downloader::new(cache, 16, Duration::from_secs(10));
        d.set_wanted(vec![normal(&m)]);
        let mut t = Instant::now();
        let mut queue: std::collections::VecDeque<(u32, Instant)> = Default::default();
        let mut link_free = t;
        let serve = |i: u32, t: Instant, link_free: &mut Instant, queue: &mut std::collections::VecDeque<_>| {
            let start = (*link_free).max(t + Duration::from_millis(300));
            *link_free = start + Duration::from_millis(512);
            queue.push_back((i, *link_free));
        };
        for _ in 0..60 {
            for i in asked(&d.requests(t)) {
                serve(i, t, &mut link_free, &mut queue);
            }
            let (i, at) = queue.pop_front().unwrap();
            t = at;
            d.on_frame(&frame(&m, &file, i), t).unwrap();
        }
        for i in asked(&d.requests(t)) {
            serve(i, t, &mut link_free, &mut queue);
        }
        // Now a lost segment holds everything back: nothing arrives while TCP repairs it.
        let held: Vec<(u32, Instant)> = queue.iter().copied().collect();
        let window = d.link().window_bytes(1024, 16);
        let rtt = d.link().min_rtt().unwrap();
        let first_due = held[0].1;
        let mut extra = Vec::new();
        let mut first_extra = None;
        let end = first_due + rtt * 3;
        while t < end {
            t += Duration::from_millis(20);
            let now_asked = asked(&d.requests(t));
            if !now_asked.is_empty() && first_extra.is_none() {
                first_extra = Some(t);
            }
            extra.extend(now_asked);
        }
        let first_extra = first_extra.expect("more chunks asked for while the window was held");
        assert!(first_extra >= first_due, "asked before the held chunk was due");
        assert!(first_extra <= first_due + rtt, "{:?} after it was due", first_extra - first_due);
        assert!(extra.iter().all(|i| held.iter().all(|(h, _)| h != i)), "held chunks asked again: {extra:?}");
        assert!(extra.len() as u64 * 1024 <= window, "{} chunks for a window of {window} B", extra.len());
        // The repair lands: the held chunks arrive all at once and are kept.
        for (i, _) in held {
            assert_eq!(d.on_frame(&frame(&m, &file, i), t).unwrap(), FrameOutcome::Stored);
        }
    }

    #[test]
    fn chunks_before_their_manifest_are_kept_for_a_while() {
        let (_dir, cache, m, file) = setup(10 * 1024);
        let mut d = Downloader::new(cache, 4, Duration::from_secs(10));
        let t0 = Instant::now();
        // Chunk 0 overtakes its manifest; so do frames of files this receiver will never fetch.
        assert_eq!(d.on_frame(&frame(&m, &file, 0), t0).unwrap(), FrameOutcome::Ignored);
        let (other, other_file) = manifest_for("b-0000000000ef-vi", ts(1_800_000_000_000), 9_000);
        for _ in 0..3 {
            d.on_frame(&frame(&other, &other_file, 0), t0).unwrap();
        }
        assert!(d.take_early(t0).is_empty(), "no download yet");
        d.set_wanted(vec![Wanted { manifest: m.clone(), urgent: true }]);
        let early = d.take_early(t0 + Duration::from_secs(1));
        assert_eq!(early.len(), 1);
        assert_eq!(d.on_frame(&early[0], t0).unwrap(), FrameOutcome::Stored);
        assert_eq!(asked(&d.requests(t0))[0], 1, "chunk 0 is not asked for");
        assert!(d.take_early(t0).is_empty(), "handed over once");
        // At most EARLY_FRAMES are kept, for EARLY_MAX_AGE.
        for i in 0..20 {
            d.on_frame(&frame(&other, &other_file, i % other.chunk_count()), t0).unwrap();
        }
        assert_eq!(d.early.len(), EARLY_FRAMES);
        d.set_wanted(vec![normal(&other)]);
        assert!(d.take_early(t0 + EARLY_MAX_AGE).is_empty(), "too old");
    }

    #[test]
    fn a_full_disk_pauses_downloads() {
        let (_dir, cache, m, file) = setup(10 * 1024);
        let faults = DeviceFaults::new();
        cache.set_faults(faults.clone());
        let mut d = Downloader::new(cache, 4, Duration::from_secs(10));
        d.set_wanted(vec![normal(&m)]);
        let t0 = Instant::now();
        assert_eq!(asked(&d.requests(t0)), [0, 1, 2, 3]);
        faults.set_disk_full(true);
        let err = d.on_frame(&frame(&m, &file, 0), t0).unwrap_err();
        assert!(matches!(err, FrameError::Cache(CacheError::DiskFull { .. })), "{err}");
        assert_eq!(d.on_frame(&frame(&m, &file, 1), t0).unwrap(), FrameOutcome::Ignored, "paused");
        assert!(d.requests(t0 + Duration::from_secs(1)).is_empty());
        faults.set_disk_full(false);
        let later = t0 + DISK_FULL_RETRY;
        let again = asked(&d.requests(later));
        assert!(again.contains(&0) && again.contains(&1), "{again:?}");
        assert_eq!(d.on_frame(&frame(&m, &file, 0), later).unwrap(), FrameOutcome::Stored);
    }

    #[test]
    fn a_growing_handle_follows_the_download() {
        let (_dir, cache, m, file) = setup(3 * 1024 + 10);
        let mut d = Downloader::new(cache, 4, Duration::from_secs(10));
        d.set_wanted(vec![Wanted { manifest: m.clone(), urgent: true }]);
        let g = d.growing(&m.bulletin).unwrap().unwrap();
        let t0 = Instant::now();
        d.requests(t0);
        d.on_frame(&frame(&m, &file, 1), t0).unwrap();
        assert_eq!(g.progress().available, 0, "not contiguous yet");
        d.on_frame(&frame(&m, &file, 0), t0).unwrap();
        assert_eq!(g.progress().available, 2048);
        assert_eq!(d.held(&m.bulletin), Some(Held { prefix: 2048, total: m.size }));
        d.on_frame(&frame(&m, &file, 2), t0).unwrap();
        let done = d.on_frame(&frame(&m, &file, 3), t0).unwrap();
        assert_eq!(done, FrameOutcome::Completed(m.bulletin.clone()));
        let p = g.progress();
        assert!(p.complete && !p.abandoned && p.available == m.size);
        let mut buf = vec![0; file.len() + 5];
        assert_eq!(g.read_at(0, &mut buf).unwrap(), file.len());
        assert_eq!(&buf[..file.len()], &file[..]);
        assert!(d.held(&m.bulletin).is_none());
    }
}
