//! Real-time pacing for sinks without a clock of their own (null, WAV): a write returns when the audio written
//! before it would have played out, as on a sound card with one block of buffer, and draining waits for the
//! rest. After a gap (the player waited for a download), the clock starts again from now rather than letting
//! the next writes rush through to catch up.

use std::time::{Duration, Instant};

/// Longest lateness that is caught up on; beyond it the clock restarts.
const RESYNC_AFTER: Duration = Duration::from_millis(100);

/// Tracks how much audio has been accepted since a start instant.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate: u32,
    start: Option<Instant>,
    samples: u64,
}

impl Pacer {
    pub(crate) fn new(rate: u32) -> Self {
        Pacer { rate: rate.max(1), start: None, samples: 0 }
    }

    /// Forgets the current play.
    pub(crate) fn reset(&mut self) {
        self.start = None;
        self.samples = 0;
    }

    fn due(&self, start: Instant) -> Instant {
        start + Duration::from_secs_f64(self.samples as f64 / f64::from(self.rate))
    }

    /// Waits until the audio accepted so far has played, then accepts `n` more samples.
    pub(crate) fn accept(&mut self, n: usize) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let due = self.due(start);
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > RESYNC_AFTER {
            self.start = Some(now);
            self.samples = 0;
        }
        self.samples += n as u64;
    }

    /// Waits until everything accepted has played.
    pub(crate) fn drain(&mut self) {
        if let Some(start) = self.start {
            let due = self.due(start);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_in_real_time() {
        let mut pacer = Pacer::new(1000);
        let t0 = Instant::now();
        for _ in 0..5 {
            pacer.accept(20); // 20 ms blocks
        }
        let accepted = t0.elapsed();
        assert!(accepted >= Duration::from_millis(80), "{accepted:?}");
        pacer.drain();
        let drained = t0.elapsed();
        assert!(drained >= Duration::from_millis(100), "{drained:?}");
        assert!(drained < Duration::from_millis(1000), "{drained:?}");
    }
}
