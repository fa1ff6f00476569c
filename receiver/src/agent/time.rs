//! The controller's time as the agent knows it: the local [`crate::clock::Clock`] corrected by the
//! [`crate::clock::OffsetTracker`]. Every clock sample reads the local clock through [`Agent::local_now`], which
//! notices the clock being set and forgets the samples taken before; round trips (a report ack, the live plan
//! answering an `online`) are measured on the monotonic clock and entered by [`Agent::answered`].

use std::time::Instant;

use loa_protocol::Timestamp;

use super::Agent;

/// The local clock moving this much more or less than the monotonic clock between two readings was set (by
/// NTP, a person, or a boot without a clock battery).
const CLOCK_STEP_MS: i64 = 2_000;

/// Notices the local clock being set, by comparing how far it moved with the monotonic clock.
#[derive(Debug)]
pub(super) struct StepWatch {
    last: (Timestamp, Instant),
}

impl StepWatch {
    pub(super) fn new(local: Timestamp, mono: Instant) -> StepWatch {
        StepWatch { last: (local, mono) }
    }

    /// The step, ms, if the local clock moved more than [`CLOCK_STEP_MS`] more or less than the monotonic clock
    /// since the last reading.
    pub(super) fn check(&mut self, local: Timestamp, mono: Instant) -> Option<i64> {
        let (then, then_mono) = std::mem::replace(&mut self.last, (local, mono));
        let elapsed = i64::try_from(mono.saturating_duration_since(then_mono).as_millis()).unwrap_or(i64::MAX);
        let step = local.ms_since(then).saturating_sub(elapsed);
        (step.abs() > CLOCK_STEP_MS).then_some(step)
    }
}

impl Agent {
    /// The local clock for a clock sample. If it was set since the last reading (it moved more than
    /// [`CLOCK_STEP_MS`] away from the monotonic clock), the samples taken before are forgotten: they measured a
    /// clock that is no more.
    pub(super) fn local_now(&mut self) -> Timestamp {
        let local = self.rx.clock.now();
        if let Some(step_ms) = self.wall.check(local, Instant::now()) {
            tracing::warn!(step_ms, "the local clock was set; measuring its offset again");
            self.tracker.clear();
        }
        local
    }

    /// Records a round trip: the controller stamped `remote` on its answer to a message sent at monotonic
    /// `sent`; `local` is the local clock at the answer's arrival.
    pub(super) fn answered(&mut self, local: Timestamp, sent: Instant, remote: Timestamp) {
        // The send on the local clock as it reads now (the monotonic time since, so a clock set in between does
        // not count).
        let ago = i64::try_from(sent.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.tracker.answered(local.saturating_add_ms(-ago), remote);
        tracing::debug!(
            floor_ms = self.tracker.floor_ms(),
            correction_ms = self.tracker.correction_ms(),
            "clock measured by a round trip"
        );
    }

    /// The controller's time, as well as this receiver knows it.
    pub(super) fn now(&self) -> Timestamp {
        self.tracker.corrected(self.rx.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::testutil::ts;

    #[test]
    fn a_clock_set_forward_or_back_is_a_step_and_running_is_not() {
        let t0 = Instant::now();
        let mut w = StepWatch::new(ts(1_000_000), t0);
        // An hour of running, read with 1.5 s of skew between the two clocks: not a step.
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!(w.check(ts(1_000_000 + 3_600_000 + 1_500), t1), None);
        // NTP sets it 30 s forward, then a person 1 h back.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(w.check(ts(4_601_500 + 10_000 + 30_000), t2), Some(30_000));
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(w.check(ts(4_641_500 + 1_000 - 3_600_000), t3), Some(-3_600_000));
        // From the new reading on, it runs normally again.
        assert_eq!(w.check(ts(4_642_500 - 3_600_000 + 5_000), t3 + Duration::from_secs(5)), None);
    }
}
