//! Reconnect delays: capped exponential backoff with jitter, the one every Loa part uses to retry a link (a
//! receiver's MQTT connection, the controller's own client). Pure: the caller passes the random number in, so
//! tests pin it, and sleeps itself.
//!
//! Attempt `n` (0-based) has a ceiling of `min(max_ms, base_ms * 2^n)`. With [`Jitter::Equal`] (the default)
//! the delay is drawn from `[ceiling / 2, ceiling]`, so a flapping link never retries in a tight loop; with
//! [`Jitter::Full`] from `[0, ceiling]`, which spreads a village's receivers reconnecting after a broker restart
//! the most. [`Backoff::reset`] after a connection that worked.

/// Default first ceiling: half a second.
pub const DEFAULT_BASE_MS: u64 = 500;
/// Default largest delay: a minute.
pub const DEFAULT_MAX_MS: u64 = 60_000;

/// How the random part of a delay is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    #[default]
    Equal,
}

/// Capped exponential backoff. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling, ms (at least 1 is used).
    pub base_ms: u64,
    /// The largest ceiling, ms.
    pub max_ms: u64,
    /// Failed attempts since the last [`Backoff::reset`].
    pub attempt: u32,
    /// How the delay is drawn under the ceiling.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE_MS, DEFAULT_MAX_MS)
    }
}

impl Backoff {
    /// A backoff from `base_ms` up to `max_ms`, with equal jitter.
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Backoff { base_ms, max_ms, attempt: 0, jitter: Jitter::Equal }
    }

    /// The same with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The ceiling of the current attempt: `min(max_ms, base_ms * 2^attempt)`, never 0.
    pub fn ceiling_ms(&self) -> u64 {
        let base = self.base_ms.max(1);
        let max = self.max_ms.max(base);
        let factor = 1u64.checked_shl(self.attempt.min(63)).unwrap_or(u64::MAX);
        base.saturating_mul(factor).min(max)
    }

    /// The delay before the next attempt, given a uniform random number in `[0, 1)` (values outside are
    /// clamped; NaN counts as 0), and counts the attempt.
    pub fn next_delay_ms(&mut self, rand01: f64) -> u64 {
        let ceiling = self.ceiling_ms();
        let r = if rand01.is_nan() { 0.0 } else { rand01.clamp(0.0, 1.0) };
        let floor = match self.jitter {
            Jitter::Full => 0,
            Jitter::Equal => ceiling / 2,
        };
        let span = ceiling - floor;
        // `as` saturates; the product is at most `span`.
        let delay = floor + ((span as f64) * r) as u64;
        self.attempt = self.attempt.saturating_add(1);
        delay.min(ceiling)
    }

    /// Starts again from `base_ms` (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling_ms();
                b.next_delay_ms(1.0);
                c
            })
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        b.reset();
        assert_eq!(b.ceiling_ms(), 500);
        assert_eq!(b.attempt, 0);
    }

    #[test]
    fn jitter_ranges() {
        let mut equal = Backoff::new(1000, 10_000);
        assert_eq!(equal.next_delay_ms(0.0), 500);
        assert_eq!(equal.next_delay_ms(0.999_999_9), 1999);
        let mut full = Backoff::new(1000, 10_000).with_jitter(Jitter::Full);
        assert_eq!(full.next_delay_ms(0.0), 0);
        assert_eq!(full.next_delay_ms(0.5), 1000);
        assert_eq!(Backoff::new(0, 0).next_delay_ms(f64::NAN), 0);
        assert_eq!(Backoff::new(0, 0).ceiling_ms(), 1);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff { base_ms: u64::MAX, max_ms: u64::MAX, attempt: u32::MAX, jitter: Jitter::Equal };
        assert_eq!(b.ceiling_ms(), u64::MAX);
        assert!(b.next_delay_ms(0.5) >= u64::MAX / 2 - 1);
        assert_eq!(b.attempt, u32::MAX);
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            base in 0u64..100_000,
            max in 0u64..10_000_000,
            attempts in 0usize..80,
            full in any::<bool>(),
            r in proptest::num::f64::ANY,
        ) {
            let jitter = if full { Jitter::Full } else { Jitter::Equal };
            let mut b = Backoff::new(base, max).with_jitter(jitter);
            let cap = max.max(base.max(1));
            let mut last_ceiling = 0;
            for _ in 0..attempts {
                let ceiling = b.ceiling_ms();
                prop_assert!(ceiling >= last_ceiling && ceiling <= cap && ceiling >= 1);
                let d = b.next_delay_ms(r);
                prop_assert!(d <= ceiling);
                if jitter == Jitter::Equal {
                    prop_assert!(d >= ceiling / 2);
                }
                last_ceiling = ceiling;
            }
        }
    }
}
