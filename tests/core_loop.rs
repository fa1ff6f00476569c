//! End-to-end: a real controller (its embedded broker, or Mosquitto), three real receivers with WAV sinks, a shared
//! fixture uploaded and scheduled 10 s ahead for two of the three villages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use loa_firmware_sim::api::ApiClient;
use loa_firmware_sim::fleet::{Fleet, SimReceiver};
use loa_tests::{bulletin_audio, now_ms, wait_for, wait_online, BrokerKind, Mosquitto, TestController};
use serde_json::{json, Value};

/// A province without quiet hours (so that the test runs at any hour), one commune, three villages, one
/// receiver each, running in `fleet`.
struct Villages {
    areas: Vec<i64>,
    receivers: Vec<String>,
    wav_dirs: Vec<PathBuf>,
    fleet: Fleet,
}

async fn villages(api: &ApiClient, dir: &Path) -> anyhow::Result<Villages> {
    let province = api
        .post("/areas", &json!({"name": "Tỉnh Thử", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"}))
        .await?["id"]
        .as_i64()
        .context("province id")?;
    let commune = api.create_area("Xã Thử", "commune", Some(province), None).await?;
    let mut v = Villages { areas: vec![], receivers: vec![], wav_dirs: vec![], fleet: Fleet::new() };
    for name in ["Thôn Một", "Thôn Hai", "Thôn Ba"] {
        let area = api.create_area(name, "village", Some(commune), Some("vi")).await?;
        let (id, config) = api.register_receiver(&format!("Loa {name}"), area).await?;
        let wav_dir = dir.join("wav").join(&id);
        v.fleet.spawn(SimReceiver {
            config_toml: config,
            state_dir: dir.join("state").join(&id),
            wav_dir: Some(wav_dir.clone()),
            heartbeat_ms: Some(1000),
        })?;
        v.areas.push(area);
        v.receivers.push(id);
        v.wav_dirs.push(wav_dir);
    }
    wait_online(api, &v.receivers, Duration::from_secs(20)).await?;
    Ok(v)
}

async fn upload_ready(api: &ApiClient, dir: &Path) -> anyhow::Result<(String, Value)> {
    let id = api.upload(&bulletin_audio(dir), "Tiêm phòng gia súc", "health", "vi").await?;
    let b = api.wait_encoded(&id, Duration::from_secs(60)).await?;
    ensure!(b["status"] == "ready", "bulletin not ready: {b}");
    Ok((id, b))
}

/// Schedules `bulletin` `ahead` from now for `areas`; returns (schedule id, planned UTC ms).
async fn schedule_at(api: &ApiClient, bulletin: &str, areas: &[i64], ahead: Duration) -> anyhow::Result<(i64, i64)> {
    let now_ms = now_ms();
    let at_ms = (now_ms + ahead.as_millis() as i64) / 1000 * 1000;
    let at = loa_protocol::Timestamp::from_unix_ms(at_ms)?.to_datetime().to_rfc3339();
    let s = api
        .post(
            "/schedules",
            &json!({"bulletin_id": bulletin, "targets": {"areas": areas}, "at": at, "priority": "normal"}),
        )
        .await?;
    Ok((s["id"].as_i64().context("schedule id")?, at_ms))
}

async fn plays(api: &ApiClient, schedule: i64) -> anyhow::Result<Vec<Value>> {
    let v = api.get(&format!("/plays?schedule_id={schedule}")).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

async fn wait_plays(
    api: &ApiClient,
    schedule: i64,
    status: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let what = format!("{n} plays of schedule {schedule} to be {status}");
    wait_for(&what, timeout, || async {
        let p = plays(api, schedule).await.ok()?;
        (p.len() == n && p.iter().all(|p| p["status"] == status)).then_some(p)
    })
    .await
}

fn rfc3339_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.timestamp_millis())
}

/// The WAV files a receiver wrote.
fn wavs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "wav")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    let samples = r.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect();
    (rate, samples)
}

/// Peak normalised cross-correlation of `a` and `b` within ±`max_lag` samples.
fn xcorr(a: &[f32], b: &[f32], max_lag: usize) -> f32 {
    let mut best = 0.0f32;
    for lag in 0..=2 * max_lag {
        let shift = lag as isize - max_lag as isize;
        let mut dot = 0.0f32;
        let (mut ea, mut eb) = (0.0f32, 0.0f32);
        for (i, &x) in a.iter().enumerate().step_by(4) {
            let j = i as isize + shift;
            if j < 0 || j as usize >= b.len() {
                continue;
            }
            let y = b[j as usize];
            dot += x * y;
            ea += x * x;
            eb += y * y;
        }
        if ea > 0.0 && eb > 0.0 {
            best = best.max(dot / (ea.sqrt() * eb.sqrt()));
        }
    }
    best
}

async fn scheduled_bulletin_plays_in_two_of_three_villages(broker: BrokerKind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = TestController::start(&dir.path().join("controller"), broker).await?;
    let api = controller.api();
    let mut v = villages(&api, dir.path()).await?;
    let (bulletin, info) = upload_ready(&api, dir.path()).await?;

    let (schedule, at_ms) = schedule_at(&api, &bulletin, &v.areas[..2], Duration::from_secs(10)).await?;
    let ready = wait_plays(&api, schedule, "ready", 2, Duration::from_secs(10)).await;
    ensure!(
        ready.is_ok() || plays(&api, schedule).await?.iter().all(|p| p["status"] != "planned"),
        "not downloaded before air time"
    );
    let played = wait_plays(&api, schedule, "played", 2, Duration::from_secs(60)).await?;

    for p in &played {
        let started = rfc3339_ms(&p["started_at"]).context("started_at")?;
        let planned = rfc3339_ms(&p["planned_at"]).context("planned_at")?;
        ensure!((started - planned).abs() <= 1000, "play {p} started {} ms off plan", started - planned);
        ensure!(p["finished_at"].is_string(), "no finished_at in {p}");
        ensure!(v.receivers[..2].contains(&p["receiver_id"].as_str().unwrap_or("").to_string()), "wrong receiver {p}");
        ensure!(planned == at_ms, "planned at {planned}, scheduled for {at_ms}");
    }

    // Audio: exactly one WAV per targeted village, none in the third, matching the bulletin.
    let encoded = reqwest::Client::new()
        .get(format!("{}/api/v1/bulletins/{bulletin}/audio", controller.base))
        .bearer_auth(&controller.token)
        .send()
        .await?
        .bytes()
        .await?;
    let original = loa_audio::ogg::decode_ogg_opus(&encoded, 16_000)?;
    let reference: Vec<f32> = original.pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
    for (i, wav_dir) in v.wav_dirs.iter().enumerate() {
        let files = wavs(wav_dir);
        if i == 2 {
            ensure!(files.is_empty(), "the untargeted village played {files:?}");
            continue;
        }
        ensure!(files.len() == 1, "village {i} wrote {files:?}");
        let (rate, got) = read_wav(&files[0]);
        ensure!(rate == 16_000, "sink rate {rate}");
        let frame = 16_000 * 60 / 1000;
        ensure!(
            got.len().abs_diff(reference.len()) <= frame,
            "duration {} samples vs {} (bulletin {} ms)",
            got.len(),
            reference.len(),
            info["duration_ms"]
        );
        let c = xcorr(&reference, &got, 1600);
        ensure!(c > 0.9, "cross-correlation {c:.3} with the bulletin");
    }
    v.fleet.shutdown().await;
    controller.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_bulletin_plays_on_time_embedded_broker() -> anyhow::Result<()> {
    scheduled_bulletin_plays_in_two_of_three_villages(BrokerKind::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_bulletin_plays_on_time_mosquitto() -> anyhow::Result<()> {
    let Some(mosquitto) = Mosquitto::start().await? else { return Ok(()) };
    scheduled_bulletin_plays_in_two_of_three_villages(BrokerKind::External(mosquitto.url.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_play_while_the_controller_is_down_and_report_after_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = TestController::start(&dir.path().join("controller"), BrokerKind::Embedded).await?;
    let api = controller.api();
    let mut v = villages(&api, dir.path()).await?;
    let (bulletin, _) = upload_ready(&api, dir.path()).await?;
    let (schedule, _) = schedule_at(&api, &bulletin, &v.areas, Duration::from_secs(12)).await?;
    wait_plays(&api, schedule, "ready", 3, Duration::from_secs(6)).await?;
    // "ready" at the controller means every chunk was sent; wait until each receiver's heartbeat says it holds
    // the verified file, then take the controller and its broker away.
    let (api2, ids) = (api.clone(), v.receivers.clone());
    wait_for("every receiver to report the play ready", Duration::from_secs(8), || {
        let (api, ids) = (api2.clone(), ids.clone());
        async move {
            for id in &ids {
                let r = api.get(&format!("/receivers/{id}")).await.ok()?;
                if r["health"]["ready"].as_i64()? < 1 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await?;

    let stopped = controller.stop().await?;
    // With the controller (and its embedded broker) gone, the receivers still play from their caches.
    wait_for("three WAV files while the controller is down", Duration::from_secs(60), || {
        let dirs = v.wav_dirs.clone();
        async move { dirs.iter().all(|d| wavs(d).len() == 1).then_some(()) }
    })
    .await?;
    let controller = stopped.restart().await?;
    let api = controller.api();
    let played = wait_plays(&api, schedule, "played", 3, Duration::from_secs(60)).await?;
    for p in &played {
        let started = rfc3339_ms(&p["started_at"]).context("started_at")?;
        let planned = rfc3339_ms(&p["planned_at"]).context("planned_at")?;
        ensure!((started - planned).abs() <= 1000, "play {p} started {} ms off plan", started - planned);
    }
    v.fleet.shutdown().await;
    controller.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_manifest_is_rejected_and_reported() -> anyhow::Result<()> {
    let Some(mosquitto) = Mosquitto::start().await? else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let controller =
        TestController::start(&dir.path().join("controller"), BrokerKind::External(mosquitto.url.clone())).await?;
    let api = controller.api();
    let mut v = villages(&api, dir.path()).await?;
    let (bulletin, _) = upload_ready(&api, dir.path()).await?;
    let (schedule, _) = schedule_at(&api, &bulletin, &v.areas[..1], Duration::from_secs(3600)).await?;
    wait_plays(&api, schedule, "ready", 1, Duration::from_secs(20)).await?;
    let rx = v.receivers[0].clone();

    // Take the genuine signed manifest from the broker, change the payload's title, and publish it back.
    let port: u16 = mosquitto.url.rsplit(':').next().unwrap().parse()?;
    let mut opts = rumqttc::MqttOptions::new("intruder", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    let variant = format!("{bulletin}-vi");
    let topic = format!("loa/v1/rx/{rx}/manifest/{variant}");
    client.subscribe(&topic, rumqttc::QoS::AtLeastOnce).await?;
    let genuine = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = events.poll().await {
                return p.payload.to_vec();
            }
        }
    })
    .await
    .context("no retained manifest")?;
    let genuine = String::from_utf8(genuine)?;
    let tampered = genuine.replacen("Tiêm phòng gia súc", "Tin giả mạo", 1);
    ensure!(tampered != genuine, "title not found in the manifest: {genuine}");
    client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, tampered.into_bytes()).await?;
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });

    let health = wait_for("the receiver to report a rejected manifest", Duration::from_secs(20), || {
        let (api, rx) = (api.clone(), rx.clone());
        async move {
            let r = api.get(&format!("/receivers/{rx}")).await.ok()?;
            // `rej` counts refusals in the order unsigned, bad_signature, unknown_key, expired, replay, ...
            let bad_signature = r["health"]["rej"][1].as_i64()?;
            (bad_signature > 0).then_some(r)
        }
    })
    .await?;
    eprintln!("health after tampering: {}", health["health"]);

    // A signed command from the controller still gets through: a test tone plays into the receiver's sink.
    let before = wavs(&v.wav_dirs[0]).len();
    let sent = api.post(&format!("/receivers/{rx}/commands"), &json!({"do": "test_tone", "seconds": 2})).await?;
    ensure!(sent["status"] == "sent", "{sent}");
    let wav_dir = v.wav_dirs[0].clone();
    wait_for("the test tone in the receiver's sink", Duration::from_secs(20), || {
        let dir = wav_dir.clone();
        async move { (wavs(&dir).len() > before).then_some(()) }
    })
    .await?;
    pump.abort();
    v.fleet.shutdown().await;
    controller.stop().await?;
    Ok(())
}
