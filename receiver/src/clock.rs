//! Time. Every schedule decision reads a [`Clock`], so tests and the firmware simulator control it:
//! [`SystemClock`] is the real one, [`SimClock`] the system clock shifted by a settable offset (a Pi without a
//! battery-backed clock that "boots an hour off").
//!
//! A receiver cannot trust its own clock, so [`OffsetTracker`] estimates how far it is from the controller's:
//! each fresh message signed or sent by the controller (a live plan or command's envelope `issued_at`, a
//! report ack's `now`) gives a sample `local receipt time − controller send time`, which is the true offset plus
//! the transit delay (never negative). The estimate is the smallest of the last [`SAMPLES`] samples, the one with
//! the least delay. A sample is only an upper bound of the offset (a late message looks like a clock ahead), so
//! the two directions are judged differently. Behind: an estimate below −[`CORRECT_ABOVE_MS`] proves it (delay
//! only ever raises a sample), and [`OffsetTracker::corrected`] then schedules by the controller's time. Ahead:
//! only an estimate too large to be transit proves it — above [`OffsetTracker::ahead_proof_ms`], twice the MQTT
//! keep-alive and at least [`LATE_MESSAGE_MS`], since a connection whose messages stall longer is cut by the
//! keep-alive and nothing is queued for it. Anything else trusts the local clock (NTP does better): on a 2G link
//! after a power cut, live messages seconds late made a correct clock look 3 s ahead, and plays went out 3 s late
//! (found by `loa-sim soak`). A round trip proves it too: the controller stamps each report ack on receipt, so
//! `first send of the report − ack stamp` is a lower bound of the offset ([`OffsetTracker::answered`]), which no
//! delay can raise. Above [`CORRECT_ABOVE_MS`] it proves the clock ahead, and the correction is the middle of
//! that floor and the estimate (off by at most half the round trip), so a clock 2 s to 2 min ahead is corrected
//! from the first acknowledged report on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use loa_protocol::Timestamp;

/// Samples kept by the [`OffsetTracker`].
pub const SAMPLES: usize = 8;
/// Offsets up to this size are left to NTP.
pub const CORRECT_ABOVE_MS: i64 = 2000;
/// No live message is later than this (with the default keep-alive of 60 s): a larger positive sample is the
/// clock, not the link.
pub const LATE_MESSAGE_MS: i64 = 120_000;

/// The current time, UTC.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, as UTC milliseconds.
    fn now(&self) -> Timestamp;
}

fn system_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn clamp_ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms.clamp(0, Timestamp::MAX.unix_ms())).unwrap_or(Timestamp::EPOCH)
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        clamp_ts(system_ms())
    }
}

/// The system clock plus an offset that tests may change at any time.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    /// A clock `offset_ms` ahead of the system clock (negative: behind).
    pub fn with_offset_ms(offset_ms: i64) -> Self {
        SimClock { offset_ms: AtomicI64::new(offset_ms) }
    }

    /// Changes the offset (a clock jump).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// The current offset.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        clamp_ts(system_ms().saturating_add(self.offset_ms()))
    }
}

/// Estimates `local clock − controller clock`. See the module documentation.
#[derive(Debug, Clone)]
pub struct OffsetTracker {
    /// Upper bounds of the offset: `receipt − controller stamp` of one-way messages.
    samples: VecDeque<i64>,
    /// Lower bounds of the offset: `first send − controller stamp` of answered reports.
    floors: VecDeque<i64>,
    ahead_proof_ms: i64,
}

impl Default for OffsetTracker {
    fn default() -> Self {
        OffsetTracker { samples: VecDeque::new(), floors: VecDeque::new(), ahead_proof_ms: LATE_MESSAGE_MS }
    }
}

impl OffsetTracker {
    /// No samples yet; the default keep-alive.
    pub fn new() -> Self {
        Self::default()
    }

    /// No samples yet, for a connection with this MQTT keep-alive.
    pub fn for_keepalive(keepalive: std::time::Duration) -> Self {
        let twice = i64::try_from(keepalive.as_millis().saturating_mul(2)).unwrap_or(i64::MAX);
        OffsetTracker { samples: VecDeque::new(), floors: VecDeque::new(), ahead_proof_ms: twice.max(LATE_MESSAGE_MS) }
    }

    /// How far ahead the estimate must be before the local clock is taken to be ahead, ms.
    pub fn ahead_proof_ms(&self) -> i64 {
        self.ahead_proof_ms
    }

    /// Records that a message the controller stamped `remote` arrived at local time `local`.
    pub fn sample(&mut self, local: Timestamp, remote: Timestamp) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(local.ms_since(remote));
    }

    /// Records that the controller stamped `remote` on its answer to a message first sent at local time
    /// `first_sent` (a report ack: the controller stamps it on receipt of the report, so after that send).
    pub fn answered(&mut self, first_sent: Timestamp, remote: Timestamp) {
        if self.floors.len() == SAMPLES {
            self.floors.pop_front();
        }
        self.floors.push_back(first_sent.ms_since(remote));
    }

    /// Forgets every sample (after `resync`, or a local clock jump).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.floors.clear();
    }

    /// The smallest offset the answered messages prove, ms, if any.
    pub fn floor_ms(&self) -> Option<i64> {
        self.floors.iter().copied().max()
    }

    /// The estimated offset, ms (positive: the local clock is ahead), if measured.
    pub fn offset_ms(&self) -> Option<i64> {
        self.samples.iter().copied().min()
    }

    /// The offset applied to schedules, else 0: when answered reports prove the clock ahead by more than
    /// [`CORRECT_ABOVE_MS`], the middle of what the bounds allow (the floor, and the estimate above it);
    /// otherwise the estimate if it proves the clock behind by more than [`CORRECT_ABOVE_MS`] or ahead by more
    /// than [`Self::ahead_proof_ms`].
    pub fn correction_ms(&self) -> i64 {
        if let Some(floor) = self.floor_ms().filter(|f| *f > CORRECT_ABOVE_MS) {
            return match self.offset_ms() {
                Some(upper) if upper >= floor => floor + (upper - floor) / 2,
                _ => floor,
            };
        }
        match self.offset_ms() {
            Some(o) if o < -CORRECT_ABOVE_MS || o > self.ahead_proof_ms => o,
            _ => 0,
        }
    }

    /// The controller's time for local time `local`.
    pub fn corrected(&self, local: Timestamp) -> Timestamp {
        clamp_ts(local.unix_ms().saturating_sub(self.correction_ms()))
    }

    /// The offset for the heartbeat's `clock_ms`, clamped to `i32`.
    pub fn health_ms(&self) -> Option<i32> {
        self.offset_ms().map(|o| o.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms).unwrap()
    }

    #[test]
    fn sim_clock_is_offset() {
        let sys = SystemClock.now().unix_ms();
        let sim = SimClock::with_offset_ms(3_600_000);
        let d = sim.now().unix_ms() - sys;
        assert!((3_600_000..3_605_000).contains(&d), "{d}");
        sim.set_offset_ms(-1000);
        assert!(sim.now().unix_ms() < SystemClock.now().unix_ms());
    }

    #[test]
    fn small_offsets_are_left_alone() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.offset_ms(), None);
        assert_eq!(t.corrected(ts(10_000)), ts(10_000));
        t.sample(ts(10_500), ts(10_000));
        assert_eq!(t.offset_ms(), Some(500));
        assert_eq!(t.corrected(ts(20_000)), ts(20_000));
        assert_eq!(t.health_ms(), Some(500));
    }

    #[test]
    fn an_hour_off_is_corrected_using_the_least_delayed_sample() {
        let mut t = OffsetTracker::new();
        let hour = 3_600_000;
        // Receiver an hour ahead; transit delays 900, 40, 300 ms.
        for (remote, delay) in [(1_000_000, 900), (2_000_000, 40), (3_000_000, 300)] {
            t.sample(ts(remote + hour + delay), ts(remote));
        }
        assert_eq!(t.offset_ms(), Some(hour + 40));
        assert_eq!(t.corrected(ts(5_000_000 + hour)), ts(5_000_000 - 40));
        // Old samples age out.
        for i in 0..SAMPLES as i64 {
            t.sample(ts(10_000_000 + i), ts(10_000_000 + i + 5000));
        }
        assert_eq!(t.offset_ms(), Some(-5000));
        t.clear();
        assert_eq!(t.correction_ms(), 0);
    }

    #[test]
    fn late_messages_do_not_make_a_correct_clock_look_ahead() {
        // A correct clock; every message since boot arrived 3 s late (a 2G link stalling after a power cut).
        let mut t = OffsetTracker::new();
        for remote in [1_000_000, 1_010_000, 1_020_000] {
            t.sample(ts(remote + 3_000), ts(remote));
        }
        assert_eq!(t.offset_ms(), Some(3_000), "the estimate is still reported");
        assert_eq!(t.correction_ms(), 0, "but a late link is not a clock ahead");
        assert_eq!(t.corrected(ts(2_000_000)), ts(2_000_000));
        // Behind by 3 s: no delay can make a sample smaller, so this is the clock.
        let mut t = OffsetTracker::new();
        t.sample(ts(1_000_000 - 3_000 + 200), ts(1_000_000));
        assert_eq!(t.correction_ms(), -2_800);
        // A longer keep-alive needs a larger proof.
        let t = OffsetTracker::for_keepalive(std::time::Duration::from_secs(300));
        assert_eq!(t.ahead_proof_ms(), 600_000);
        assert_eq!(OffsetTracker::for_keepalive(std::time::Duration::from_secs(5)).ahead_proof_ms(), LATE_MESSAGE_MS);
    }

    #[test]
    fn an_answered_report_proves_a_clock_ahead() {
        // 30 s ahead; the report went out at true 1_000_000, the ack was stamped 400 ms later, arrived 300 ms
        // after that.
        let ahead = 30_000;
        let mut t = OffsetTracker::new();
        t.sample(ts(1_000_700 + ahead), ts(1_000_400));
        assert_eq!(t.correction_ms(), 0, "one-way alone cannot tell a clock 30 s ahead from a late link");
        t.answered(ts(1_000_000 + ahead), ts(1_000_400));
        assert_eq!(t.floor_ms(), Some(ahead - 400));
        // Between the floor (29.6 s) and the estimate (30.3 s): off by at most half the round trip.
        assert_eq!(t.correction_ms(), ahead - 50);
        assert_eq!(t.corrected(ts(2_000_000 + ahead)), ts(2_000_050));
        t.clear();
        assert_eq!((t.floor_ms(), t.correction_ms()), (None, 0));
    }

    #[test]
    fn answered_reports_never_move_a_correct_clock() {
        // A correct clock on a 2G link: reports answered 5 s later, one-way messages 3 s late.
        let mut t = OffsetTracker::new();
        for sent in [1_000_000, 1_100_000, 1_200_000] {
            t.answered(ts(sent), ts(sent + 5_000));
            t.sample(ts(sent + 3_000), ts(sent));
        }
        assert_eq!(t.floor_ms(), Some(-5_000));
        assert_eq!(t.correction_ms(), 0);
        // A floor just under the threshold (a clock 1.9 s ahead) is left to NTP.
        let mut t = OffsetTracker::new();
        t.answered(ts(1_001_900), ts(1_000_000));
        assert_eq!(t.correction_ms(), 0);
    }

    proptest! {
        /// The correction always lies between what the bounds allow, whatever the (consistent) delays: the true
        /// offset is at least every floor and at most every one-way sample.
        #[test]
        fn a_proven_correction_stays_within_the_bounds(
            offset in -3_600_000i64..3_600_000,
            trips in proptest::collection::vec((0i64..10_000, 0i64..10_000), 1..12),
        ) {
            let mut t = OffsetTracker::new();
            let mut remote = 1_700_000_000_000i64;
            for (out, back) in trips {
                // The report leaves at true `remote`, the ack is stamped `out` later and arrives `back` after.
                t.answered(ts(remote + offset), ts(remote + out));
                t.sample(ts(remote + out + back + offset), ts(remote + out));
                remote += 60_000;
            }
            let floor = t.floor_ms().unwrap();
            let upper = t.offset_ms().unwrap();
            prop_assert!(floor <= offset && offset <= upper);
            let c = t.correction_ms();
            if floor > CORRECT_ABOVE_MS {
                prop_assert!(floor <= c && c <= upper);
                prop_assert!((c - offset).abs() <= (upper - floor) / 2 + 1);
            }
        }
    }

    proptest! {
        #[test]
        fn corrected_never_panics(samples in proptest::collection::vec((0i64..253_402_300_799_999, 0i64..253_402_300_799_999), 0..20), local in 0i64..253_402_300_799_999) {
            let mut t = OffsetTracker::new();
            for (a, b) in samples {
                t.sample(ts(a), ts(b));
            }
            let _ = t.corrected(ts(local));
            let _ = t.health_ms();
        }
    }
}
