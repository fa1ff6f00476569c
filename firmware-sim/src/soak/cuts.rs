//! The soak's power cuts. Each round, `power_cut_percent` of the receivers lose power, the slowest links first
//! (their downloads last long enough to be cut). A cut watches the receiver's disk: once the round's file is
//! downloading (its partial file exists and the file is not yet in the cache) it waits a random part of the
//! file's time on that link and cuts; a download not seen within a fifth of the lead is cut anyway (a cut of
//! an idle receiver). Only cuts that found the download still going count as mid-download.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use super::{Disturbances, Round, SoakOptions};
use crate::bench::setup;
use crate::fleet::Fleet;

/// How often a cut looks at the receiver's disk.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// Links at most this fast are cut first.
const SLOW_KBPS: u32 = 200;

/// Starts this round's cuts in the background; `since` is the start of the rounds (for the cut times kept).
pub(super) fn cut_power(fleet: &Fleet, o: &SoakOptions, round: &Round, dist: &Disturbances, since: Instant) {
    let count = ((fleet.len() as f64 * o.power_cut_percent / 100.0).round() as usize).min(fleet.len());
    let mut rng = rand::rng();
    let slow = |i: &usize| fleet.profile(*i).is_some_and(|p| p.rate_down_kbps <= SLOW_KBPS);
    let (mut first, mut rest): (Vec<usize>, Vec<usize>) = (0..fleet.len()).partition(slow);
    first.shuffle(&mut rng);
    rest.shuffle(&mut rng);
    first.extend(rest);
    let lead_ms = o.lead.as_millis() as u64;
    for &i in first.iter().take(count) {
        let (Ok(switch), Some(state_dir)) = (fleet.power_switch(i), fleet.state_dir(i).map(|d| d.to_path_buf())) else {
            continue;
        };
        let rate_kbps = fleet.profile(i).map_or(100_000, |p| u64::from(p.rate_down_kbps.max(1)));
        let transfer_ms = round.bytes * 8 / rate_kbps + fleet.profile(i).map_or(0, |p| p.rtt_ms());
        let into_download = Duration::from_millis(rng.random_range(0..=transfer_ms / 2));
        let watch = Duration::from_millis(lead_ms / 5);
        let off = Duration::from_millis(rng.random_range(lead_ms / 20..=(lead_ms * 3 / 10).max(lead_ms / 20 + 1)));
        let sha256 = round.sha256.clone();
        let (cuts, power_cuts, mid) = (dist.cuts.clone(), dist.power_cuts.clone(), dist.mid_download.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut seen: Option<Instant> = None;
            while start.elapsed() < watch {
                if seen.is_none() && setup::downloading(&state_dir, &sha256) {
                    seen = Some(Instant::now());
                }
                if seen.is_some_and(|t| t.elapsed() >= into_download) || setup::cached(&state_dir, &sha256) {
                    break;
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
            if setup::downloading(&state_dir, &sha256) {
                mid.fetch_add(1, Ordering::Relaxed);
            }
            power_cuts.fetch_add(1, Ordering::Relaxed);
            let when = since.elapsed().as_secs_f64();
            cuts.lock().unwrap_or_else(PoisonError::into_inner).push((i, when, off.as_secs_f64()));
            switch.cut(off).await;
        });
    }
}
