//! What the downloader knows about its link, measured from the chunk frames themselves: the delivery rate and
//! the round-trip time. It sizes the download window so that the pipe holds about `rate × (min RTT + 0.5 s)`
//! bytes: enough to keep the link busy, little enough that an emergency's first chunk does not queue behind
//! seconds of a normal download (on GPRS, 16 chunks of 8 KiB in flight are 20 s of queue).
//!
//! - Rate: bytes of frames received while requests are outstanding, over intervals of at least
//!   [`RATE_INTERVAL`], smoothed (EWMA, weight [`RATE_WEIGHT`]). An interval starts at the first frame after the
//!   link was idle (that frame's bytes are not counted: they were sent before the clock started) and is dropped
//!   when the link goes idle, so idle time never lowers the rate.
//! - RTT: request → frame, for chunks asked once (a chunk asked again may answer either request: Karn's rule);
//!   a smoothed RTT is kept. For the path without its queue, each sample less the time the bytes in flight
//!   ahead of the chunk took at the measured rate; the minimum of those over the last 10 to 20 s (two epochs of
//!   [`MIN_RTT_EPOCH`]). Without that correction the queue the window itself builds would read as path delay
//!   and the window would grow without end.
//! - Window: `rate × (min RTT + QUEUE_ALLOWANCE)` bytes, at least 2 chunks and at most the configured chunk
//!   count; [`INITIAL_CHUNKS`] chunks until the first rate sample. A window-limited link measures a rate of
//!   about window / RTT, so while the path is not full the window grows by `1 + 0.5 s / min RTT` per round; once
//!   it is full the queue stays near half a second.
//! - Timeout of a request: twice the time its chunk should take (min RTT plus the bytes in flight ahead of it
//!   at the measured rate, or the smoothed RTT if that is longer) plus a second, clamped to `chunk_timeout_ms / 4 ..= chunk_timeout_ms × 6`; the
//!   configured `chunk_timeout_ms` until the link is measured.

use std::time::{Duration, Instant};

/// Shortest interval a rate sample is taken over.
pub(crate) const RATE_INTERVAL: Duration = Duration::from_millis(500);
/// Weight of a new rate sample.
pub(crate) const RATE_WEIGHT: f64 = 0.3;
/// The minimum RTT is the least of this epoch's and the last one's samples.
pub(crate) const MIN_RTT_EPOCH: Duration = Duration::from_secs(10);
/// Queue allowed in the pipe on top of the bandwidth-delay product.
pub(crate) const QUEUE_ALLOWANCE: Duration = Duration::from_millis(500);
/// Window until the link has been measured, chunks.
pub(crate) const INITIAL_CHUNKS: u64 = 4;
/// Fewest chunks in flight once measured (one arriving while the next is on its way).
pub(crate) const MIN_CHUNKS: u64 = 2;

#[derive(Debug, Clone, Copy)]
struct Meter {
    start: Instant,
    bytes: u64,
}

/// Link measurements. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Estimator {
    rate: Option<f64>,
    srtt: Option<Duration>,
    min_now: Option<Duration>,
    min_before: Option<Duration>,
    epoch: Option<Instant>,
    meter: Option<Meter>,
}

impl Estimator {
    pub(crate) fn new() -> Estimator {
        Estimator::default()
    }

    /// A frame of `bytes` arrived at `now`. `busy_before`: requests were outstanding just before it;
    /// `busy_after`: some still are. `rtt`: the time since its chunk was asked for, if asked only once, and the
    /// bytes that were in flight ahead of it then.
    pub(crate) fn on_frame(
        &mut self,
        now: Instant,
        bytes: usize,
        busy_before: bool,
        busy_after: bool,
        rtt: Option<(Duration, u64)>,
    ) {
        // An answer cannot come back in less than the path's round trip: a frame that does was on its way before
        // it was asked for (an emergency's first chunk is pushed unasked), and says nothing about the path.
        let plausible = |(rtt, _): &(Duration, u64)| self.min_rtt().is_none_or(|m| *rtt >= m / 2);
        if let Some((rtt, ahead)) = rtt.filter(plausible) {
            let queued = self.rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(ahead as f64 / r.max(1.0)));
            let path = rtt.saturating_sub(queued).max(rtt / 10);
            self.rtt_sample(now, rtt, path);
        }
        match self.meter.as_mut() {
            Some(m) if busy_before => {
                m.bytes += bytes as u64;
                let elapsed = now.saturating_duration_since(m.start);
                if elapsed >= RATE_INTERVAL {
                    let sample = m.bytes as f64 / elapsed.as_secs_f64();
                    self.rate = Some(self.rate.map_or(sample, |r| r + RATE_WEIGHT * (sample - r)));
                    *m = Meter { start: now, bytes: 0 };
                }
            }
            _ => self.meter = Some(Meter { start: now, bytes: 0 }),
        }
        if !busy_after {
            self.meter = None;
        }
    }

    /// Nothing is outstanding any more (requests forgotten after a link change).
    pub(crate) fn idle(&mut self) {
        self.meter = None;
    }

    fn rtt_sample(&mut self, now: Instant, rtt: Duration, path: Duration) {
        match self.epoch {
            Some(start) if now.saturating_duration_since(start) < MIN_RTT_EPOCH => {}
            Some(start) if now.saturating_duration_since(start) < MIN_RTT_EPOCH * 2 => {
                self.epoch = Some(now);
                self.min_before = self.min_now.take();
            }
            _ => {
                // The last epoch is long over: forget it too.
                self.epoch = Some(now);
                self.min_before = None;
                self.min_now = None;
            }
        }
        self.min_now = Some(self.min_now.map_or(path, |m| m.min(path)));
        self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
    }

    /// Delivery rate, bytes per second, once measured.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The least recent RTT (the path without its queue), once measured.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        match (self.min_now, self.min_before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Smoothed RTT, once measured.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Bytes to keep in flight for downloads in chunks of `chunk_size`, at most `max_chunks` of them.
    pub(crate) fn window_bytes(&self, chunk_size: u32, max_chunks: u32) -> u64 {
        let chunk = u64::from(chunk_size.max(1));
        let max = chunk * u64::from(max_chunks.max(1));
        let target = match (self.rate, self.min_rtt()) {
            (Some(rate), rtt) => {
                let horizon = rtt.unwrap_or_default() + QUEUE_ALLOWANCE;
                ((rate * horizon.as_secs_f64()) as u64).max(MIN_CHUNKS * chunk)
            }
            (None, _) => INITIAL_CHUNKS * chunk,
        };
        target.min(max)
    }

    /// How long after it is asked for a chunk with `ahead` bytes in flight before it is overdue: its expected
    /// arrival (min RTT plus the queue ahead at the measured rate) plus half a min RTT. `None` until measured.
    pub(crate) fn overdue_after(&self, ahead: u64) -> Option<Duration> {
        let (rate, rtt) = (self.rate?, self.min_rtt()?);
        let queue = Duration::from_secs_f64((ahead as f64 / rate.max(1.0)).min(3600.0));
        Some(rtt + queue + rtt / 2)
    }

    /// How long to wait for a chunk asked for now with `ahead` bytes in flight before it (its own included),
    /// given the configured `chunk_timeout`.
    pub(crate) fn timeout(&self, ahead: u64, chunk_timeout: Duration) -> Duration {
        let (Some(rate), Some(rtt)) = (self.rate, self.min_rtt()) else {
            return chunk_timeout;
        };
        let queue = Duration::from_secs_f64((ahead as f64 / rate.max(1.0)).min(3600.0));
        let expected = (rtt + queue).max(self.srtt.unwrap_or_default()) * 2 + Duration::from_secs(1);
        expected.clamp(chunk_timeout / 4, chunk_timeout * 6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds frames of `size` bytes that a link of `rate` bytes/s delivers back to back, starting at `t`,
    /// each answered `rtt` after it was asked; returns the time after the last.
    fn feed(e: &mut Estimator, t: Instant, frames: u32, size: usize, rate: f64, rtt: Duration) -> Instant {
        let gap = Duration::from_secs_f64(size as f64 / rate);
        let mut now = t;
        for _ in 0..frames {
            now += gap;
            e.on_frame(now, size, true, true, Some((rtt, 0)));
        }
        now
    }

    #[test]
    fn an_answer_faster_than_the_path_is_no_rtt_sample() {
        let mut e = Estimator::new();
        let t = feed(&mut e, Instant::now(), 20, 1000, 6000.0, 600 * MS);
        assert_eq!(e.min_rtt(), Some(600 * MS));
        // A pushed chunk arrives 20 ms after the receiver asked for it: not a measure of the path.
        e.on_frame(t + 100 * MS, 1000, true, true, Some((20 * MS, 0)));
        assert_eq!(e.min_rtt(), Some(600 * MS));
        // A real improvement (the path got shorter) still counts.
        e.on_frame(t + 200 * MS, 1000, true, true, Some((400 * MS, 0)));
        assert_eq!(e.min_rtt(), Some(400 * MS));
    }

    #[test]
    fn starts_conservative_then_sizes_the_pipe() {
        let mut e = Estimator::new();
        assert_eq!(e.window_bytes(8192, 16), 4 * 8192);
        assert_eq!(e.timeout(100_000, Duration::from_secs(10)), Duration::from_secs(10));
        // GPRS: 6 kB/s, 600 ms RTT (plus transmission).
        let t0 = Instant::now();
        feed(&mut e, t0, 20, 8192, 6000.0, 1965 * MS);
        let rate = e.rate().unwrap();
        assert!((5500.0..6500.0).contains(&rate), "{rate}");
        assert_eq!(e.min_rtt(), Some(1965 * MS));
        // 6 kB/s × 2.5 s = 15 kB: two chunks of 8 KiB, the least allowed; four of 4 KiB.
        assert_eq!(e.window_bytes(8192, 16), 2 * 8192);
        let w = e.window_bytes(4096, 16);
        assert!((3 * 4096..=4 * 4096).contains(&w), "{w}");
        // 2 × (1.965 s + 16 kB / 6 kB/s) + 1 s ≈ 10.3 s
        let timeout = e.timeout(16_384, Duration::from_secs(10));
        assert!((10_000 * MS..10_600 * MS).contains(&timeout), "{timeout:?}");
        assert_eq!(e.timeout(10_000_000, Duration::from_secs(10)), Duration::from_secs(60), "capped");
    }

    #[test]
    fn a_fast_link_grows_to_the_configured_cap() {
        let mut e = Estimator::new();
        let t0 = Instant::now();
        // 3G: 48 kB/s, 150 ms.
        feed(&mut e, t0, 40, 8192, 48_000.0, 320 * MS);
        let w = e.window_bytes(8192, 16);
        // 48 kB/s × 0.82 s ≈ 39 kB ≈ 4.8 chunks.
        assert!((4 * 8192..6 * 8192).contains(&w), "{w}");
        assert_eq!(e.window_bytes(8192, 3), 3 * 8192, "never above the configured window");
        // LAN: 10 MB/s, after a pause.
        e.idle();
        feed(&mut e, t0 + Duration::from_secs(60), 4000, 8192, 10_000_000.0, 2 * MS);
        assert_eq!(e.window_bytes(8192, 16), 16 * 8192);
        assert_eq!(e.timeout(8192, Duration::from_secs(10)), Duration::from_millis(2500), "floor");
    }

    #[test]
    fn idle_time_does_not_lower_the_rate_and_min_rtt_expires() {
        let mut e = Estimator::new();
        let t0 = Instant::now();
        let t1 = feed(&mut e, t0, 10, 8192, 48_000.0, 200 * MS);
        e.on_frame(t1 + 10 * MS, 8192, true, false, Some((200 * MS, 0)));
        let before = e.rate().unwrap();
        // A minute idle, then a burst: the first frame only restarts the clock.
        let t2 = t1 + Duration::from_secs(60);
        e.on_frame(t2, 8192, false, true, None);
        assert_eq!(e.rate().unwrap(), before);
        feed(&mut e, t2, 10, 8192, 48_000.0, 900 * MS);
        let after = e.rate().unwrap();
        assert!((after - 48_000.0).abs() < 5000.0, "{before} then {after}");
        // The old 200 ms minimum is forgotten after two epochs.
        assert_eq!(e.min_rtt(), Some(900 * MS));
        assert!(e.srtt().unwrap() > 200 * MS);
    }

    #[test]
    fn queueing_ahead_is_not_taken_for_path_delay() {
        let mut e = Estimator::new();
        let t0 = Instant::now();
        let t1 = feed(&mut e, t0, 20, 1000, 2000.0, 800 * MS);
        assert_eq!(e.min_rtt(), Some(800 * MS));
        // Later samples each waited behind 2 kB (1 s at 2 kB/s): the path is still about 800 ms.
        let mut now = t1;
        for _ in 0..60 {
            now += 500 * MS;
            e.on_frame(now, 1000, true, true, Some((1800 * MS, 2000)));
        }
        let rtt = e.min_rtt().unwrap();
        assert!((700 * MS..900 * MS).contains(&rtt), "{rtt:?}");
        assert!(e.srtt().unwrap() > 1700 * MS);
    }

    #[test]
    fn a_slower_link_shrinks_the_window() {
        let mut e = Estimator::new();
        let t0 = Instant::now();
        let t1 = feed(&mut e, t0, 40, 8192, 48_000.0, 320 * MS);
        let fast = e.window_bytes(4096, 64);
        feed(&mut e, t1, 30, 4096, 6_000.0, 320 * MS);
        let slow = e.window_bytes(4096, 64);
        assert!(slow < fast / 4, "{fast} then {slow}");
    }
}
