//! A small fleet behind emulated `gprs` links against a real controller in this process: two receivers get a
//! short bulletin over 48 kbit/s, 600 ms, 3 % loss links and play it on time into WAV files; their air events
//! reach the fleet, and injected device faults (speaker short, amplifier fault) show in their heartbeats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use loa_firmware_sim::bench::setup::{self, BenchController};
use loa_firmware_sim::fleet::{Fleet, SimDevice, SimReceiver};
use loa_firmware_sim::link::LinkProfile;
use serde_json::{json, Value};

fn wavs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "wav")).collect()
        })
        .unwrap_or_default()
}

fn rfc3339_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.timestamp_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gprs_receivers_play_a_short_bulletin_on_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = BenchController::start(&dir.path().join("controller")).await?;
    let api = controller.api.clone();
    let area = setup::village(&api, "Thôn GPRS").await?;
    let bulletin = setup::bulletin(&api, dir.path(), 15).await?;
    let gprs = LinkProfile::named("gprs")?;
    let mut fleet = Fleet::new();
    let mut wav_dirs = Vec::new();
    for n in 0..2 {
        let (id, config) = api.register_receiver(&format!("gprs {n}"), area).await?;
        let wav = dir.path().join("wav").join(&id);
        fleet.spawn_device(
            SimReceiver {
                config_toml: config,
                state_dir: dir.path().join("state").join(&id),
                wav_dir: Some(wav.clone()),
                heartbeat_ms: Some(2000),
            },
            SimDevice::behind(gprs.clone()),
        )?;
        wav_dirs.push(wav);
    }
    let mut air = fleet.all_air_events();
    let schedule = setup::schedule(&api, &bulletin.id, area, Duration::from_secs(25)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(55);
    let played = loop {
        let plays = api.get(&format!("/plays?schedule_id={schedule}")).await?;
        let plays = plays.as_array().cloned().unwrap_or_default();
        if plays.len() == 2 && plays.iter().all(|p| p["status"] == json!("played")) {
            break plays;
        }
        ensure!(tokio::time::Instant::now() < deadline, "plays not played in time: {plays:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for p in &played {
        let started = rfc3339_ms(&p["started_at"]).context("started_at")?;
        let planned = rfc3339_ms(&p["planned_at"]).context("planned_at")?;
        ensure!((started - planned).abs() <= 1000, "play {p} started {} ms off plan", started - planned);
    }
    for d in &wav_dirs {
        ensure!(wavs(d).len() == 1, "{} holds {:?}", d.display(), wavs(d));
    }
    let mut speech = [false; 2];
    while let Ok((i, event)) = air.try_recv() {
        if matches!(event, loa_receiver::AirEvent::SpeechStarted { .. }) {
            speech[i] = true;
        }
    }
    ensure!(speech == [true, true], "SpeechStarted seen from {speech:?}");
    // Device faults show in the heartbeat.
    fleet.faults(0).context("faults")?.set_speaker(loa_receiver::SpeakerLine::Short);
    fleet.faults(1).context("faults")?.set_amp_fault(true);
    let ids: Vec<String> = (0..2).map(|i| fleet.id(i).unwrap().to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = api.get(&format!("/receivers/{}", ids[0])).await?;
        let b = api.get(&format!("/receivers/{}", ids[1])).await?;
        if a["health"]["spk"] == json!("short") && b["health"]["amp"] == json!("fault") {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "faults not in health: {} / {}", a["health"], b["health"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..2 {
        let s = fleet.link_stats(i).context("link")?;
        ensure!(s.down.bytes >= bulletin.bytes, "only {} bytes crossed link {i}", s.down.bytes);
        ensure!(s.down.mqtt_bytes <= s.down.bytes && s.down.mqtt_bytes + 600_000 > s.down.bytes);
    }
    fleet.shutdown().await;
    controller.stop().await?;
    Ok(())
}
