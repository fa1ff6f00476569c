//! When an emergency that is still downloading may go on air: as soon as the bytes held let it play to the
//! end without running dry at the measured download rate.
//!
//! Playback starts with the attention chime (generated on the device), then plays the variants in order,
//! while the download goes on in the same order. Both advance about linearly, so there is no underrun if, at
//! the end of each variant, everything up to it has arrived:
//!
//! ```text
//! Σ_{j ≤ i} (total_j − held_j)  ≤  MARGIN × rate × (chime + Σ_{j ≤ i} duration_j)     for every variant i
//! ```
//!
//! (for one variant, `held ≥ total − 0.8 × rate × (chime + duration)`), and the first variant's head — its Ogg
//! headers and half a second of audio ([`HEAD_BYTES`] + half a second at the file's mean bitrate) — is held, or
//! will be by the end of the chime: what is missing of it arrives, at the rate counted on, within the chime less
//! one round trip. The chime lives on the device, so it may sound while the first audio is still on its way;
//! that takes the chime's 1.2 s off the time to air on slow links. The [`MARGIN`] of 0.8 covers variable
//! bitrate and rate jitter; an underrun anyway just pauses the audio until the download catches up. Until the
//! rate is measured, the whole file is needed.

use loa_protocol::{BulletinId, PlannedPlay};

use super::downloader::Downloader;
use super::store::Store;
use crate::cache::Cache;

/// Share of the measured rate counted on.
pub(crate) const MARGIN: f64 = 0.8;
/// Room for the Ogg Opus headers (identification and comment pages) before the first audio page.
pub(crate) const HEAD_BYTES: u64 = 1024;

/// One variant of a play, as far as it has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// Bytes held from the start without a gap.
    pub held: u64,
    /// The file's size.
    pub total: u64,
    /// Its playing time, ms.
    pub duration_ms: u64,
}

/// Whether variants that arrive as `arrivals` (in play order) can be played through, at `rate` bytes/s with
/// round trips of `rtt_ms`, after a chime of `chime_ms`. See the module documentation.
pub(crate) fn can_play_through(arrivals: &[Arrival], rate: Option<f64>, rtt_ms: u64, chime_ms: u64) -> bool {
    let Some(first) = arrivals.first() else { return false };
    let half_second = first.total.saturating_mul(500) / first.duration_ms.max(1);
    let rate = rate.unwrap_or(0.0).max(0.0) * MARGIN;
    let head_missing = (HEAD_BYTES + half_second).min(first.total).saturating_sub(first.held);
    let during_chime = rate * chime_ms.saturating_sub(rtt_ms) as f64 / 1000.0;
    if head_missing as f64 > during_chime {
        return false;
    }
    let mut missing = 0u64;
    let mut elapsed_ms = chime_ms;
    arrivals.iter().all(|a| {
        missing += a.total.saturating_sub(a.held);
        elapsed_ms += a.duration_ms;
        missing as f64 <= rate * elapsed_ms as f64 / 1000.0
    })
}

/// Whether `play` (an emergency, due, with every variant cached or downloading) can start now.
pub(crate) fn streamable(
    play: &PlannedPlay,
    store: &Store,
    cache: &Cache,
    downloader: &Downloader,
    chime_ms: u64,
) -> bool {
    let arrival = |b: &BulletinId| {
        let m = store.manifest(b)?;
        let held = if cache.contains(&m.sha256.to_hex()) { m.size } else { downloader.held(b)?.prefix };
        Some(Arrival { held, total: m.size, duration_ms: u64::from(m.duration_ms) })
    };
    let arrivals: Option<Vec<Arrival>> = play.bulletins.iter().map(arrival).collect();
    let link = downloader.link();
    let rtt_ms = link.min_rtt().map_or(u64::MAX, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    arrivals.is_some_and(|a| can_play_through(&a, link.rate(), rtt_ms, chime_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(held: u64, total: u64, duration_ms: u64) -> Arrival {
        Arrival { held, total, duration_ms }
    }

    #[test]
    fn starts_once_the_rest_arrives_before_it_is_needed() {
        // 60 s at 12 kbit/s: 90 kB. At 6 kB/s × 0.8 × 61.2 s ≈ 294 kB: the head is enough.
        let head = HEAD_BYTES + 750;
        assert!(!can_play_through(&[a(0, 90_000, 60_000)], Some(6000.0), u64::MAX, 1200));
        assert!(!can_play_through(&[a(head - 1, 90_000, 60_000)], Some(6000.0), 1200, 1200));
        assert!(can_play_through(&[a(head, 90_000, 60_000)], Some(6000.0), 1200, 1200));
        // The chime may sound while the head is on its way: 0.8 × 6 kB/s × (1.2 − 0.6) s ≈ 2.9 kB arrive meanwhile.
        assert!(can_play_through(&[a(0, 90_000, 60_000)], Some(6000.0), 600, 1200));
        assert!(!can_play_through(&[a(0, 90_000, 60_000)], Some(2000.0), 600, 1200));
        // Unmeasured link: the whole file.
        assert!(!can_play_through(&[a(89_999, 90_000, 60_000)], None, 0, 1200));
        assert!(can_play_through(&[a(90_000, 90_000, 60_000)], None, 0, 1200));
        // A link slower than the audio: 1 kB/s × 0.8 × 61.2 s ≈ 49 kB may still come, so 41 kB are needed.
        assert!(!can_play_through(&[a(40_000, 90_000, 60_000)], Some(1000.0), 1200, 1200));
        assert!(can_play_through(&[a(41_100, 90_000, 60_000)], Some(1000.0), 1200, 1200));
        // A tiny file needs all of itself as its head.
        assert!(can_play_through(&[a(500, 500, 1000)], Some(1.0), 0, 0));
        assert!(!can_play_through(&[], Some(1e9), 0, 0));
    }

    #[test]
    fn later_variants_must_arrive_in_time_too() {
        // First variant complete; the second (30 kB, 10 s) is missing at 1 kB/s: 0.8 × (1.2 + 20 + 10) s ≈ 25 kB.
        let first = a(30_000, 30_000, 20_000);
        assert!(!can_play_through(&[first, a(0, 30_000, 10_000)], Some(1000.0), 1200, 1200));
        assert!(can_play_through(&[first, a(6_000, 30_000, 10_000)], Some(1000.0), 1200, 1200));
        // The first's own shortfall counts against the second's deadline as well.
        let short = a(14_000, 30_000, 20_000);
        assert!(can_play_through(&[short], Some(1000.0), 1200, 1200));
        assert!(!can_play_through(&[short, a(6_000, 30_000, 10_000)], Some(1000.0), 1200, 1200));
    }
}
