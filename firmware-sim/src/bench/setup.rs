//! What both benchmarks need: a controller in this process (embedded broker, data in a temporary directory),
//! an area without quiet hours, receivers behind emulated links, a generated speech-like bulletin of any length,
//! a schedule, and waiting until a receiver's cache holds the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use loa_controller::clock::SystemClock;
use loa_controller::config::ControllerConfig;
use loa_controller::server::{Controller, ServerError};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::fleet::{Fleet, SimDevice, SimReceiver};
use crate::link::LinkProfile;

/// Receiver settings a benchmark may override (`None`: the receiver's defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiverTuning {
    /// `window_chunks`.
    pub window_chunks: Option<u32>,
    /// `chunk_timeout_ms`.
    pub chunk_timeout_ms: Option<u64>,
}

/// A controller running in this process for a benchmark.
pub struct BenchController {
    /// Its API.
    pub api: ApiClient,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl BenchController {
    /// Starts one with its data in `dir`, on loopback ports chosen by the system.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_broker_on(dir, IpAddr::from([127, 0, 0, 1])).await
    }

    /// Starts one whose embedded broker listens on `broker_ip` (a port chosen by the system); the receiver
    /// configs it issues point there.
    pub async fn start_with_broker_on(dir: &Path, broker_ip: IpAddr) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let http = tokio::net::TcpListener::bind(any).await?;
        let mqtt = tokio::net::TcpListener::bind(SocketAddr::new(broker_ip, 0)).await?;
        let config = ControllerConfig {
            data_dir: dir.to_path_buf(),
            http_listen: http.local_addr()?,
            mqtt_listen: mqtt.local_addr()?,
            ..ControllerConfig::default()
        };
        let opened = Controller::open(config, Arc::new(SystemClock), http, Some(mqtt)).await?;
        let token = opened.new_admin_token.context("a fresh data directory has an admin token")?;
        let base = format!("http://{}", opened.controller.http_addr().context("HTTP address")?);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(opened.controller.run(cancel.clone()));
        let api = ApiClient::new(&base, &token);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while api.get("/areas").await.is_err() {
            ensure!(tokio::time::Instant::now() < deadline, "the controller's API did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(BenchController { api, cancel, task })
    }

    /// Stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.context("controller did not stop")???;
        Ok(())
    }
}

/// A province without quiet hours (benchmarks run at any hour) with one village; returns the village id.
pub async fn village(api: &ApiClient, name: &str) -> anyhow::Result<i64> {
    let province = api
        .post("/areas", &json!({"name": format!("{name} (tỉnh)"), "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"}))
        .await?["id"]
        .as_i64()
        .context("province id")?;
    Ok(api.create_area(name, "village", Some(province), Some("vi")).await?)
}

/// Registers `profiles.len()` receivers in `area`, each behind its profile's link, and waits until the
/// controller sees them online.
pub async fn receivers(
    api: &ApiClient,
    fleet: &mut Fleet,
    dir: &Path,
    area: i64,
    profiles: &[LinkProfile],
    tuning: ReceiverTuning,
) -> anyhow::Result<Vec<usize>> {
    let mut members = Vec::new();
    for (n, profile) in profiles.iter().enumerate() {
        let (id, config) = api.register_receiver(&format!("bench {} {n}", profile.name), area).await?;
        let config = tune(&config, tuning)?;
        let i = fleet.spawn_device(
            SimReceiver { config_toml: config, state_dir: dir.join(&id), wav_dir: None, heartbeat_ms: None },
            SimDevice::behind(profile.clone()),
        )?;
        members.push(i);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for &i in &members {
        wait_online(api, fleet.id(i).unwrap_or_default(), deadline).await?;
    }
    Ok(members)
}

/// Waits until the controller lists receiver `id` online, at the latest until `deadline`.
pub async fn wait_online(api: &ApiClient, id: &str, deadline: tokio::time::Instant) -> anyhow::Result<()> {
    loop {
        let r = api.get(&format!("/receivers/{id}")).await?;
        if r["online"] == json!(true) {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "receiver {id} did not come online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn tune(config: &str, tuning: ReceiverTuning) -> anyhow::Result<String> {
    let mut table: toml::Table = toml::from_str(config)?;
    if let Some(w) = tuning.window_chunks {
        table.insert("window_chunks".into(), toml::Value::Integer(i64::from(w)));
    }
    if let Some(t) = tuning.chunk_timeout_ms {
        table.insert("chunk_timeout_ms".into(), toml::Value::Integer(i64::try_from(t)?));
    }
    Ok(toml::to_string(&table)?)
}

/// Writes `seconds` of a speech-like signal (a voice of drifting pitch with harmonics, syllable-rate envelope and
/// pauses between phrases), 16 kHz mono, to `path`.
pub fn speech_wav(path: &Path, seconds: u32) -> anyhow::Result<()> {
    speech_wav_voice(path, seconds, 0)
}

/// Like [`speech_wav`] in another voice: each `voice` number gives a different pitch and breath noise, so that
/// bulletins made from different voices are different files.
pub fn speech_wav_voice(path: &Path, seconds: u32, voice: u32) -> anyhow::Result<()> {
    let rate = 16_000u32;
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec)?;
    let mut phase = 0.0f64;
    let mut noise = 0x1234_5678u32 ^ voice.wrapping_mul(0x9E37_79B9);
    let base = 110.0 + f64::from(voice % 17) * 5.0;
    for n in 0..rate * seconds {
        let t = f64::from(n) / f64::from(rate);
        let pitch = base + 20.0 + 35.0 * (t * 0.9).sin() + 15.0 * (t * 3.1).sin();
        phase += 2.0 * std::f64::consts::PI * pitch / f64::from(rate);
        let syllable = (0.5 + 0.5 * (t * 2.0 * std::f64::consts::PI * 4.3).sin()).powi(2);
        let phrase = if (t % 7.0) > 6.2 { 0.05 } else { 1.0 };
        let vowel = 1.0 + 0.5 * (t * 1.7).sin();
        let voice: f64 = (1..12).map(|k| (phase * f64::from(k)).sin() / f64::from(k).powf(vowel)).sum();
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        let hiss = (f64::from(noise) / f64::from(u32::MAX) - 0.5) * 0.05;
        w.write_sample(((voice * syllable * phrase + hiss) * 7000.0) as i16)?;
    }
    w.finalize()?;
    Ok(())
}

/// The shared fixture beside the project (`../shared/fixtures/audio`), if present.
pub fn shared_fixture() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/audio/bulletin-vi-22k-mono.wav");
    p.is_file().then_some(p)
}

/// A ready bulletin: id, encoded bytes, duration (ms) and SHA-256 of its `vi` variant.
#[derive(Debug, Clone)]
pub struct Bulletin {
    /// Bulletin id.
    pub id: String,
    /// Bytes of the Ogg Opus file.
    pub bytes: u64,
    /// Duration, ms.
    pub duration_ms: u64,
    /// SHA-256 (the receiver's cache names the file after it).
    pub sha256: String,
}

/// Uploads a generated speech-like bulletin of `seconds` and waits until it is encoded.
pub async fn bulletin(api: &ApiClient, dir: &Path, seconds: u32) -> anyhow::Result<Bulletin> {
    bulletin_voice(api, dir, seconds, 0).await
}

/// Like [`bulletin`] in another voice ([`speech_wav_voice`]).
pub async fn bulletin_voice(api: &ApiClient, dir: &Path, seconds: u32, voice: u32) -> anyhow::Result<Bulletin> {
    let wav = dir.join(format!("speech-{seconds}s-{voice}.wav"));
    speech_wav_voice(&wav, seconds, voice)?;
    let id = api.upload(&wav, "Bản tin thử", "other", "vi").await?;
    let b = api.wait_encoded(&id, Duration::from_secs(300)).await?;
    ensure!(b["status"] == "ready", "bulletin not encoded: {b}");
    let v = &b["variants"][0];
    Ok(Bulletin {
        id,
        bytes: v["bytes"].as_u64().context("variant bytes")?,
        duration_ms: v["duration_ms"].as_u64().context("variant duration")?,
        sha256: v["sha256"].as_str().context("variant sha256")?.to_string(),
    })
}

/// Schedules `bulletin` for `area` `ahead` from now.
pub async fn schedule(api: &ApiClient, bulletin: &str, area: i64, ahead: Duration) -> anyhow::Result<i64> {
    schedule_at(api, bulletin, area, (now_ms() + ahead.as_millis() as i64) / 1000 * 1000).await
}

/// Schedules `bulletin` for `area` once at `at_ms` (UTC ms); returns the schedule id.
pub async fn schedule_at(api: &ApiClient, bulletin: &str, area: i64, at_ms: i64) -> anyhow::Result<i64> {
    let at = loa_protocol::Timestamp::from_unix_ms(at_ms)?.to_datetime().to_rfc3339();
    let s: Value = api
        .post(
            "/schedules",
            &json!({"bulletin_id": bulletin, "targets": {"areas": [area]}, "at": at, "priority": "normal"}),
        )
        .await?;
    s["id"].as_i64().context("schedule id")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether the receiver with this state directory holds the verified file.
pub fn cached(state_dir: &Path, sha256: &str) -> bool {
    state_dir.join("cache").join("objects").join(format!("{sha256}.opus")).is_file()
}

/// Whether the receiver with this state directory is downloading the file: its partial file is there and the
/// file is not yet in the cache.
pub fn downloading(state_dir: &Path, sha256: &str) -> bool {
    let cache = state_dir.join("cache");
    cache.join("partial").join(format!("{sha256}.part")).is_file()
        && !cache.join("objects").join(format!("{sha256}.opus")).is_file()
}

/// Waits until every listed state directory holds the file; returns when each got it, from `since`.
pub async fn wait_cached(
    dirs: &[PathBuf],
    sha256: &str,
    since: tokio::time::Instant,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; dirs.len()];
    loop {
        for (slot, dir) in done.iter_mut().zip(dirs) {
            if slot.is_none() && cached(dir, sha256) {
                *slot = Some(since.elapsed());
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(done.into_iter().flatten().collect());
        }
        if since.elapsed() > timeout {
            bail!("{} of {} receivers got the bulletin within {timeout:?}", done.iter().flatten().count(), dirs.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
