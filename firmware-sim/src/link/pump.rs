//! One direction of an emulated link: bytes read from one socket are written to the other as if they crossed a
//! slow, lossy, distant link.
//!
//! The sender side reads at most one segment ([`SEGMENT_BYTES`]) at a time, and only when the emulated link is
//! free to serialise it, so a sender faster than the link meets TCP back-pressure (the relay's sockets have small
//! kernel buffers) instead of filling a hidden queue. Each segment then takes its serialisation time at the rate
//! (payload plus [`HEADER_BYTES`]), and with probability `loss` it is lost ([`Timeline`]): as in kernel TCP
//! (fast retransmit on the later segments' acknowledgements, SACK/RACK), the loss is noticed about one round
//! trip after the segment was sent and the segment is sent again, taking the link for one more segment time;
//! the segments behind it keep crossing meanwhile but are delivered only after it (TCP delivers in order). A
//! resend that is lost too waits for the retransmission timeout, doubling with each further loss (capped at
//! 60 s). The segment is delivered after the one-way delay plus a random jitter, never before an earlier one.
//! Between the two sides a short queue holds only what is "in the air": about one bandwidth-delay product.
//! During an outage nothing is read or delivered.
//!
//! The model was checked against kernel TCP over the same profile (`loa-sim bench bulk --link both`: the
//! [`super::KernelLink`] carries IP packets between network namespaces); docs/benchmarks.md has the figures.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::counters::{DirCounters, MqttMeter, HEADER_BYTES, SEGMENT_BYTES};
use super::relay::Shared;

/// Resends of one segment that can be lost (Linux's `tcp_retries2`); the next one gets through, so that a
/// profile with 100 % loss stalls a stream for minutes instead of looping for ever.
const MAX_RESENDS: u32 = 15;
/// The longest a back-off can stall a stream.
const MAX_RTO: Duration = Duration::from_secs(60);
/// Below this, serialisation debt is carried instead of sleeping (the timer's granularity).
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// How one direction behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirParams {
    /// Rate, kbit/s (0: unlimited).
    pub rate_kbps: u32,
    /// One-way delay.
    pub delay: Duration,
    /// Jitter, uniform in 0..=jitter.
    pub jitter: Duration,
    /// Loss probability per segment, 0..1.
    pub loss: f64,
    /// Round-trip time: how long after a segment was sent its loss is noticed and it is sent again.
    pub rtt: Duration,
    /// Retransmission timeout of a lost resend.
    pub rto: Duration,
}

impl DirParams {
    /// Time to put `bytes` of payload (plus headers) on the link.
    fn serialisation(&self, bytes: usize) -> Duration {
        if self.rate_kbps == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((bytes as u64 + HEADER_BYTES) as f64 * 8.0 / (f64::from(self.rate_kbps) * 1000.0))
    }

    /// Segments in the air at once (about twice the bandwidth-delay product, at least 4).
    fn queue_len(&self) -> usize {
        let bytes_per_s = f64::from(self.rate_kbps.max(1)) * 125.0;
        let in_air = bytes_per_s * (self.delay + self.jitter).as_secs_f64();
        ((2.0 * in_air / SEGMENT_BYTES as f64).ceil() as usize).clamp(4, 4096)
    }
}

enum Piece {
    Data(Instant, Vec<u8>),
    End,
}

/// When segments cross one direction of the link: the link's next free moment and the last delivery.
#[derive(Debug)]
pub(crate) struct Timeline {
    next_free: Instant,
    last_delivery: Instant,
}

/// What became of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crossing {
    /// When it is delivered.
    pub at: Instant,
    /// How many times it was lost before it got through.
    pub losses: u32,
    /// How much later it is delivered than without its losses.
    pub held: Duration,
}

impl Timeline {
    pub(crate) fn new(now: Instant) -> Self {
        Timeline { next_free: now, last_delivery: now }
    }

    /// The link's next free moment (the sender waits for it before reading the next segment).
    pub(crate) fn next_free(&self) -> Instant {
        self.next_free
    }

    /// Sends a segment of `bytes` payload at `now`; `lost()` says whether each transmission is lost.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        bytes: usize,
        params: &DirParams,
        jitter: Duration,
        mut lost: impl FnMut() -> bool,
    ) -> Crossing {
        let serialise = params.serialisation(bytes);
        let sent = self.next_free.max(now) + serialise;
        self.next_free = sent;
        let mut through = sent;
        let mut losses = 0;
        if lost() {
            // Noticed a round trip later; the resend takes one more segment time on the link.
            losses += 1;
            self.next_free += serialise;
            through = (sent + params.rtt + serialise).max(self.next_free);
            let mut rto = params.rto;
            while losses <= MAX_RESENDS && lost() {
                losses += 1;
                self.next_free += serialise;
                through += rto + serialise;
                rto = (rto * 2).min(MAX_RTO);
            }
        }
        let at = (through + params.delay + jitter).max(self.last_delivery);
        self.last_delivery = at;
        Crossing { at, losses, held: through - sent }
    }
}

/// Copies `from` to `to` through the emulated direction until `from` ends (then shuts `to` down) or an error.
pub(crate) async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    params: DirParams,
    counters: &DirCounters,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Piece>(params.queue_len());
    let outage = shared.clone();
    // Each half owns its end of the queue, so that when one fails the other sees the queue close.
    let sender = async move {
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let mut buf = vec![0u8; SEGMENT_BYTES];
        let mut timeline = Timeline::new(Instant::now());
        loop {
            shared.wait_outage().await;
            if timeline.next_free() > Instant::now() + MIN_SLEEP {
                tokio::time::sleep_until(timeline.next_free()).await;
                shared.wait_outage().await;
            }
            let n = from.read(&mut buf).await?;
            if n == 0 {
                let _ = tx.send(Piece::End).await;
                return Ok::<(), std::io::Error>(());
            }
            let jitter = if params.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(rng.random_range(0..=params.jitter.as_micros() as u64))
            };
            let crossing = timeline
                .send(Instant::now(), n, &params, jitter, || params.loss > 0.0 && rng.random::<f64>() < params.loss);
            if crossing.losses > 0 {
                counters.lost_segments.fetch_add(u64::from(crossing.losses), std::sync::atomic::Ordering::Relaxed);
                counters
                    .lost_bytes
                    .fetch_add(n as u64 * u64::from(crossing.losses), std::sync::atomic::Ordering::Relaxed);
                counters.held_us.fetch_add(crossing.held.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            let delivery = crossing.at;
            if tx.send(Piece::Data(delivery, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let deliverer = async move {
        let mut meter = MqttMeter::new();
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Data(at, bytes) => {
                    tokio::time::sleep_until(at).await;
                    outage.wait_outage().await;
                    to.write_all(&bytes).await?;
                    counters.bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    counters.segments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    MqttMeter::record(meter.feed(&bytes), counters);
                }
                Piece::End => break,
            }
        }
        let _ = to.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    let (sent, delivered) = tokio::join!(sender, deliverer);
    sent.and(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gprs() -> DirParams {
        DirParams {
            rate_kbps: 48,
            delay: Duration::from_millis(300),
            jitter: Duration::ZERO,
            loss: 0.03,
            rtt: Duration::from_millis(600),
            rto: Duration::from_millis(1200),
        }
    }

    #[test]
    fn a_loss_holds_delivery_a_round_trip_not_the_link() {
        let p = gprs();
        let t0 = Instant::now();
        let seg = p.serialisation(SEGMENT_BYTES);
        let mut t = Timeline::new(t0);
        let first = t.send(t0, SEGMENT_BYTES, &p, Duration::ZERO, || false);
        assert_eq!(first, Crossing { at: t0 + seg + p.delay, losses: 0, held: Duration::ZERO });
        // The second is lost once: resent a round trip later, one more segment time on the link.
        let mut fate = [true, false].into_iter();
        let second = t.send(t0, SEGMENT_BYTES, &p, Duration::ZERO, || fate.next().unwrap_or(false));
        assert_eq!(second.losses, 1);
        assert_eq!(second.at, t0 + seg * 2 + p.rtt + seg + p.delay);
        assert_eq!(t.next_free(), t0 + seg * 3);
        // The third crosses the link meanwhile but waits for the second: TCP delivers in order.
        let third = t.send(t0, SEGMENT_BYTES, &p, Duration::ZERO, || false);
        assert_eq!(third.at, second.at);
        assert_eq!(t.next_free(), t0 + seg * 4, "the link was not stalled");
    }

    #[test]
    fn a_lost_resend_waits_for_the_timeout_doubling() {
        let p = gprs();
        let t0 = Instant::now();
        let seg = p.serialisation(100);
        let mut t = Timeline::new(t0);
        let mut fate = [true, true, true, false].into_iter();
        let c = t.send(t0, 100, &p, Duration::ZERO, || fate.next().unwrap_or(false));
        assert_eq!(c.losses, 3);
        assert_eq!(c.held, p.rtt + seg + (p.rto + seg) + (p.rto * 2 + seg));
        assert_eq!(t.next_free(), t0 + seg * 4);
    }

    #[test]
    fn total_loss_ends_after_the_last_resend() {
        let p = DirParams { loss: 1.0, ..gprs() };
        let c = Timeline::new(Instant::now()).send(Instant::now(), 100, &p, Duration::ZERO, || true);
        assert_eq!(c.losses, MAX_RESENDS + 1);
    }

    #[test]
    fn jitter_never_reorders() {
        let p = gprs();
        let t0 = Instant::now();
        let mut t = Timeline::new(t0);
        let mut last = t0;
        for i in 0..200u64 {
            let jitter = Duration::from_millis((i * 37) % 61);
            let mut fate = [i % 17 == 0, false].into_iter();
            let c = t.send(t0, 500, &p, jitter, || fate.next().unwrap_or(false));
            assert!(c.at >= last);
            last = c.at;
        }
    }
}
