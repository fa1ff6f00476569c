//! One direction of an emulated link: bytes read from one socket are written to the other as if they crossed a
//! slow, lossy, distant link.
//!
//! The sender side reads at most one segment ([`SEGMENT_BYTES`]) at a time, and only when the emulated link is
//! free to serialise it, so a sender faster than the link meets TCP back-pressure (the relay's sockets have small
//! kernel buffers) instead of filling a hidden queue. Each segment then takes its serialisation time at the rate
//! (payload plus [`HEADER_BYTES`]), and with probability `loss` it is lost: the stream stalls for one
//! retransmission timeout and the segment is sent again; a resent segment can be lost too, and each further loss
//! doubles the timeout (capped at 60 s), as TCP backs off. The segment is delivered after the one-way delay plus
//! a random jitter, never before an earlier segment (TCP delivers in order). Between the two sides a short queue
//! holds only what is "in the air": about one bandwidth-delay product. During an outage nothing is read or
//! delivered.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::counters::{DirCounters, MqttMeter, HEADER_BYTES, SEGMENT_BYTES};
use super::relay::Shared;

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
    /// Retransmission timeout of a first loss.
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
        let mut next_free = Instant::now();
        let mut last_delivery = Instant::now();
        loop {
            shared.wait_outage().await;
            if next_free > Instant::now() + MIN_SLEEP {
                tokio::time::sleep_until(next_free).await;
                shared.wait_outage().await;
            }
            let n = from.read(&mut buf).await?;
            if n == 0 {
                let _ = tx.send(Piece::End).await;
                return Ok::<(), std::io::Error>(());
            }
            let serialise = params.serialisation(n);
            let mut done = next_free.max(Instant::now()) + serialise;
            let mut rto = params.rto;
            while params.loss > 0.0 && rng.random::<f64>() < params.loss {
                counters.lost_segments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counters.lost_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                counters.stalled_us.fetch_add(rto.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                done += rto + serialise;
                rto = (rto * 2).min(MAX_RTO);
            }
            next_free = done;
            let jitter = if params.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(rng.random_range(0..=params.jitter.as_micros() as u64))
            };
            let delivery = (done + params.delay + jitter).max(last_delivery);
            last_delivery = delivery;
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
