//! The reconnect storm, the last phase of the fleet benchmark: with the whole fleet connected and idle, the
//! broker restarts (Mosquitto: SIGTERM and start again on the same port; embedded: the controller itself), so
//! every receiver loses its connection at the same moment and comes back by itself with its jittered backoff.
//! Measured from `/proc/net/tcp` every 250 ms: seconds until as many connections to the broker are established
//! as before the restart, and the peak reconnect rate. Then the controller's own view: seconds until
//! `GET /receivers` lists every receiver online again (a lost `online` status would leave one "offline" for good,
//! with an alert, while its connection is fine). Last, a short bulletin goes to everyone: seconds until every
//! cache holds it, proof that the broker and the controller came through the storm working, not only accepting
//! sockets.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::setup;
use crate::procs::{self, ControllerProcess, MosquittoProcess, Proc};

/// How long the receivers get to come back, and then to fetch the short bulletin.
const BACK_WINDOW: Duration = Duration::from_secs(300);
const READY_WINDOW: Duration = Duration::from_secs(900);
/// The short bulletin after the storm, s.
const AFTER_SECONDS: u32 = 10;

/// Runs the storm; returns its figures (`storm_*` keys) and prints them. A receiver that does not come back,
/// is not seen online by the controller or does not get the bulletin is a figure (`storm_all_back_seconds`,
/// `storm_online_seconds` or `storm_ready_seconds` null), not an error, so the rest of the run's figures are kept.
pub(super) async fn run(
    controller: &mut ControllerProcess,
    mosquitto: Option<&mut MosquittoProcess>,
    province: i64,
    dir: &std::path::Path,
    dirs: &[PathBuf],
    ticks: f64,
) -> anyhow::Result<Value> {
    let port = match (&mosquitto, controller.mqtt_port) {
        (Some(m), _) => m.port(),
        (None, Some(p)) => p,
        (None, None) => anyhow::bail!("no broker port to watch"),
    };
    let before = procs::established_to(port);
    println!("  storm: {before} connections to the broker; restarting it");
    let watch = tokio::spawn(procs::watch_reconnects(port, before, BACK_WINDOW));
    let restarted = Instant::now();
    let down = procs::restart_broker(mosquitto, controller).await?;
    let (back_s, peak) = watch.await?;
    match back_s {
        Some(s) => println!("  storm: all {before} connections back {s:.1} s after the restart (peak {peak:.0}/s)"),
        None => println!(
            "  storm: only {} of {before} connections back after {BACK_WINDOW:?} (peak {peak:.0}/s)",
            procs::established_to(port)
        ),
    }

    let api = controller.api.clone();
    let online_s = online_again(&api, dirs.len(), restarted, BACK_WINDOW).await;
    match online_s {
        Some(s) => {
            println!("  storm: the controller lists all {} receivers online {s:.1} s after the restart", dirs.len())
        }
        None => {
            println!("  storm: the controller does not list all {} receivers online after {BACK_WINDOW:?}", dirs.len())
        }
    }

    let ctl = Proc { pid: controller.pid(), ticks_per_s: ticks };
    let bulletin = setup::bulletin_voice(&api, dir, AFTER_SECONDS, 7).await?;
    let since = Instant::now();
    // 40 min ahead: clear of the fleet bulletin's air time (30 min ahead, 60 s long).
    setup::schedule(&api, &bulletin.id, province, Duration::from_secs(2400)).await?;
    let ready_s = match setup::wait_cached(dirs, &bulletin.sha256, since, READY_WINDOW).await {
        Ok(times) => {
            let s = times.iter().max().copied().unwrap_or_default().as_secs_f64();
            println!("  storm: a {AFTER_SECONDS} s bulletin then reached all {} caches in {s:.1} s", dirs.len());
            Some(s)
        }
        Err(e) => {
            println!("  storm: after the storm, {e}");
            None
        }
    };
    Ok(json!({
        "storm_connections": before,
        "storm_restart_ms": down.as_millis() as u64,
        "storm_all_back_seconds": back_s.map(round1),
        "storm_online_seconds": online_s.map(round1),
        "storm_peak_reconnects_per_second": peak.round(),
        "storm_ready_seconds": ready_s.map(round1),
        "storm_controller_rss_mb": round1(ctl.mb("VmHWM")),
    }))
}

/// Seconds from `since` until the controller lists `n` receivers online (polling every 2 s), or `None` after
/// `window`.
async fn online_again(api: &crate::api::ApiClient, n: usize, since: Instant, window: Duration) -> Option<f64> {
    while since.elapsed() < window {
        if let Ok(Value::Array(list)) = api.get("/receivers").await {
            if list.iter().filter(|r| r["online"] == json!(true)).count() >= n {
                return Some(since.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    None
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
