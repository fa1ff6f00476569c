//! The emergency benchmark: time to air of a warning over slow links while a long normal bulletin is downloading.
//!
//! Receivers behind one link profile (`3g`, `gprs`, …) start downloading a long normal bulletin scheduled for
//! later; once most of them are in the middle of it, one `POST /emergencies` sends a short pre-recorded warning
//! to all of them. Time to air is measured per receiver from the API call to the first non-tone sample handed to
//! its sink (the receiver's `SpeechStarted` air event, after the on-device chime), and summarised as p50, p95
//! and max. Goals: p95 ≤ 3 s on `3g`, ≤ 6 s on `gprs`, over 1,000 receivers. The receivers' disks are in
//! /dev/shm by default: on one shared disk a thousand receivers' fsyncs queue behind each other, which no real
//! receiver (one SD card each) sees.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use loa_receiver::AirEvent;
use serde_json::json;

use super::setup::{self, BenchController};
use crate::fleet::{Fleet, SimDevice, SimReceiver};
use crate::link::LinkProfile;

/// What to run.
#[derive(Debug, Clone)]
pub struct EmergencyOptions {
    /// Link profiles, one run each.
    pub profiles: Vec<LinkProfile>,
    /// Receivers per run.
    pub receivers: usize,
    /// Length of the normal bulletin downloading when the warning goes out, s.
    pub normal_seconds: u32,
    /// Length of the warning, s.
    pub warning_seconds: u32,
    /// Under which directory the receivers' disks and the controller's data go (`None`: the system's temporary
    /// directory).
    pub state_dir: Option<PathBuf>,
}

/// /dev/shm when this machine has one: the receivers' disks in memory, as if each had its own (see
/// `EmergencyOptions::state_dir`).
pub fn default_state_dir() -> Option<PathBuf> {
    let shm = PathBuf::from("/dev/shm");
    shm.is_dir().then_some(shm)
}

impl Default for EmergencyOptions {
    fn default() -> Self {
        let p = |n: &str| LinkProfile::named(n).unwrap_or_default();
        EmergencyOptions {
            profiles: vec![p("3g"), p("gprs")],
            receivers: 1000,
            normal_seconds: 600,
            warning_seconds: 20,
            state_dir: default_state_dir(),
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmergencyFigures {
    /// Link profile.
    pub profile: String,
    /// Receivers targeted.
    pub receivers: usize,
    /// Receivers that put the warning's speech on air.
    pub played: usize,
    /// Of those, how many were still downloading the normal bulletin when the speech started.
    pub while_downloading: usize,
    /// Median time to air, ms.
    pub p50_ms: u64,
    /// 95th percentile, ms.
    pub p95_ms: u64,
    /// Slowest, ms.
    pub max_ms: u64,
    /// Median time from the API call to the first block of the attention chime, ms (speech follows the chime).
    pub chime_p50_ms: u64,
    /// 95th percentile of the same, ms.
    pub chime_p95_ms: u64,
    /// The goal for this profile's p95, ms, if the issue sets one.
    pub goal_p95_ms: Option<u64>,
}

/// Runs one pass per profile; prints a table (and one JSON line per pass with `json`); returns the figures.
pub async fn run(options: EmergencyOptions, json: bool) -> anyhow::Result<Vec<EmergencyFigures>> {
    // Each receiver holds a broker connection and its relay two more: far past the default 1,024 descriptors.
    let fds = crate::procs::raise_fd_limit();
    tracing::info!(fds, "file descriptor limit");
    let mut all = Vec::new();
    for profile in &options.profiles {
        let figures = run_one(profile, &options).await?;
        print_row(&figures);
        if json {
            println!("{}", serde_json::to_string(&figures)?);
        }
        all.push(figures);
    }
    Ok(all)
}

fn print_row(f: &EmergencyFigures) {
    println!("emergency: time from the API call to the first speech sample at each receiver's sink");
    println!(
        "{:<8} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>6} {:>11}",
        "profile", "receivers", "played", "mid-dl", "p50 ms", "p95 ms", "max ms", "goal p95", "met", "chime p50"
    );
    let goal = f.goal_p95_ms.map_or("-".to_string(), |g| g.to_string());
    let met = f.goal_p95_ms.map_or("-", |g| if f.p95_ms <= g && f.played == f.receivers { "yes" } else { "NO" });
    println!(
        "{:<8} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>6} {:>11}",
        f.profile, f.receivers, f.played, f.while_downloading, f.p50_ms, f.p95_ms, f.max_ms, goal, met, f.chime_p50_ms
    );
}

fn goal_for(profile: &str) -> Option<u64> {
    match profile {
        "3g" => Some(3000),
        "gprs" => Some(6000),
        _ => None,
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_one(profile: &LinkProfile, options: &EmergencyOptions) -> anyhow::Result<EmergencyFigures> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("loa-emergency-");
    let dir = match &options.state_dir {
        Some(base) => builder.tempdir_in(base).with_context(|| format!("a directory under {}", base.display()))?,
        None => builder.tempdir()?,
    };
    tracing::info!(dir = %dir.path().display(), "receivers' disks");
    let controller = BenchController::start(&dir.path().join("controller")).await?;
    let api = controller.api.clone();
    let area = setup::village(&api, "Thôn Cảnh Báo").await?;
    let normal = setup::bulletin(&api, dir.path(), options.normal_seconds).await?;
    let warning = setup::bulletin(&api, dir.path(), options.warning_seconds).await?;

    let mut fleet = Fleet::new();
    let mut events = fleet.all_air_events();
    let mut state_dirs = Vec::new();
    for n in 0..options.receivers {
        let (id, config) = api.register_receiver(&format!("loa {} {n}", profile.name), area).await?;
        let state_dir = dir.path().join("rx").join(&id);
        let spec = SimReceiver { config_toml: config, state_dir: state_dir.clone(), wav_dir: None, heartbeat_ms: None };
        fleet.spawn_device(spec, SimDevice::behind(profile.clone()))?;
        state_dirs.push(state_dir);
    }
    wait_online(&api, options.receivers).await?;

    // The long normal bulletin, due in half an hour: every receiver starts pulling it now.
    setup::schedule(&api, &normal.id, area, Duration::from_secs(1800)).await?;
    let partial = |d: &std::path::Path| d.join("cache").join("partial").join(format!("{}.have", normal.sha256));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let started = state_dirs.iter().filter(|d| partial(d).is_file()).count();
        if started * 10 >= options.receivers * 9 {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "only {started} receivers started the normal download");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more seconds so the downloads are in full flow (windows open, links busy).
    tokio::time::sleep(Duration::from_secs(5)).await;
    while events.try_recv().is_ok() {}

    let sent_ms = unix_ms(SystemTime::now());
    let sent = api.post("/emergencies", &json!({"bulletin_id": warning.id, "targets": {"areas": [area]}})).await?;
    ensure!(sent["receivers"].as_u64() == Some(options.receivers as u64), "emergency reached {sent}");

    let mut first: HashMap<usize, u64> = HashMap::new();
    let mut chime: HashMap<usize, u64> = HashMap::new();
    let mut mid_download = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while first.len() < options.receivers {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Err(_) => break,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(missed = n, "air events lagged; some receivers may be counted late");
            }
            Ok(Err(_)) => break,
            Ok(Ok((i, AirEvent::SpeechStarted { at, .. }))) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = first.entry(i) {
                    slot.insert(u64::try_from(unix_ms(at) - sent_ms).unwrap_or(0));
                    if state_dirs.get(i).is_some_and(|d| partial(d).is_file()) {
                        mid_download += 1;
                    }
                }
            }
            Ok(Ok((i, AirEvent::ToneStarted { at, .. }))) => {
                chime.entry(i).or_insert_with(|| u64::try_from(unix_ms(at) - sent_ms).unwrap_or(0));
            }
            Ok(Ok(_)) => {}
        }
    }
    fleet.shutdown().await;
    controller.stop().await.context("stopping the controller")?;

    let mut times: Vec<u64> = first.values().copied().collect();
    times.sort_unstable();
    let mut chimes: Vec<u64> = chime.values().copied().collect();
    chimes.sort_unstable();
    Ok(EmergencyFigures {
        profile: profile.name.clone(),
        receivers: options.receivers,
        played: times.len(),
        while_downloading: mid_download,
        p50_ms: quantile(&times, 0.50),
        p95_ms: quantile(&times, 0.95),
        max_ms: times.last().copied().unwrap_or(0),
        chime_p50_ms: quantile(&chimes, 0.50),
        chime_p95_ms: quantile(&chimes, 0.95),
        goal_p95_ms: goal_for(&profile.name),
    })
}

/// Waits until the controller lists `n` receivers online.
async fn wait_online(api: &crate::api::ApiClient, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let list = api.get("/receivers").await?;
        let online = list.as_array().map_or(0, |a| a.iter().filter(|r| r["online"] == json!(true)).count());
        if online >= n {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "only {online} of {n} receivers came online");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.95), 95);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.95), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
