//! Crash safety of the real `loa-controller` binary: it is killed with SIGKILL (no clean shutdown) during an
//! upload, during an encode and while receivers download a scheduled bulletin, then started again on the same
//! data directory and ports. After each restart no half-stored bulletin is visible, interrupted encodes resume,
//! and simulated receivers (in this process) reconnect by themselves and report each play exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use loa_firmware_sim::api::ApiClient;
use loa_firmware_sim::fleet::{Fleet, SimReceiver};
use serde_json::{json, Value};
use sha2::Digest;

/// One test at a time: they are CPU-heavy (encodes) and the dispatch test is timing-sensitive.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 50 ms until it yields `Some`, or fails after `timeout` naming `what`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller binary running as a child process (killed on drop).
struct Ctl {
    child: Child,
    data: PathBuf,
    http_port: u16,
    mqtt_port: u16,
    token: String,
}

impl Ctl {
    /// Starts it on fresh ports with its data in `dir/data`.
    async fn start(dir: &Path) -> anyhow::Result<Ctl> {
        Self::start_on(&dir.join("data"), free_port(), free_port(), None).await
    }

    async fn start_on(data: &Path, http_port: u16, mqtt_port: u16, token: Option<String>) -> anyhow::Result<Ctl> {
        let log = data.with_extension("log");
        std::fs::create_dir_all(data)?;
        // The ports of a killed run can take a moment to be free again: retry the start.
        let mut tries = 0;
        let (child, token) = loop {
            tries += 1;
            let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            let started_at = out.metadata()?.len();
            writeln!(out, "---- start {tries}")?;
            let mut child = Command::new(env!("CARGO_BIN_EXE_loa-controller"))
                .arg("--data-dir")
                .arg(data)
                .arg("--http-listen")
                .arg(format!("127.0.0.1:{http_port}"))
                .arg("--mqtt-listen")
                .arg(format!("127.0.0.1:{mqtt_port}"))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let outcome = loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let text = text.get(started_at as usize..).unwrap_or_default();
                let printed = text
                    .lines()
                    .find_map(|l| l.split("admin token: ").nth(1)?.split_whitespace().next())
                    .map(String::from);
                if let Some(t) = printed.or(token.clone()) {
                    if text.contains("web: http://") {
                        break Ok(t);
                    }
                }
                if let Some(status) = child.try_wait()? {
                    break Err(format!("exited ({status})"));
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("loa-controller did not start within 60 s; log:\n{}", tail(&log));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            match outcome {
                Ok(t) => break (child, t),
                Err(why) if tries < 20 => {
                    eprintln!("loa-controller {why}; starting it again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(why) => bail!("loa-controller {why}; log:\n{}", tail(&log)),
            }
        };
        let ctl = Ctl { child, data: data.to_path_buf(), http_port, mqtt_port, token };
        let api = ctl.api();
        wait_for("the controller's API", Duration::from_secs(30), || {
            let api = api.clone();
            async move { api.get("/areas").await.ok() }
        })
        .await?;
        Ok(ctl)
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(&format!("http://127.0.0.1:{}", self.http_port), &self.token)
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) -> Stopped {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        Stopped {
            data: self.data.clone(),
            http_port: self.http_port,
            mqtt_port: self.mqtt_port,
            token: self.token.clone(),
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A killed controller's data and ports.
struct Stopped {
    data: PathBuf,
    http_port: u16,
    mqtt_port: u16,
    token: String,
}

impl Stopped {
    async fn restart(self) -> anyhow::Result<Ctl> {
        Ctl::start_on(&self.data, self.http_port, self.mqtt_port, Some(self.token)).await
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `seconds` of a speech-like signal (syllable-rate modulated harmonics), 16-bit mono WAV.
fn speech_wav(path: &Path, seconds: u32, rate: u32) -> PathBuf {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..rate * seconds {
        let t = n as f32 / rate as f32;
        let pitch = 140.0 + 30.0 * (t * 0.7).sin();
        let envelope = (0.5 + 0.5 * (t * 2.0 * std::f32::consts::PI * 4.0).sin()).powi(2);
        let voice: f32 = (1..6).map(|k| (2.0 * std::f32::consts::PI * pitch * k as f32 * t).sin() / k as f32).sum();
        w.write_sample((voice * envelope * 6000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    path.to_path_buf()
}

/// The names of the files in `dir`.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every variant the API says is `ready` has its file, whose SHA-256 is the one listed.
async fn no_half_stored(ctl: &Ctl) -> anyhow::Result<()> {
    for b in ctl.api().get("/bulletins").await?.as_array().context("bulletin list")? {
        for v in b["variants"].as_array().context("variants")? {
            if v["status"] != "ready" {
                continue;
            }
            let sha = v["sha256"].as_str().with_context(|| format!("ready variant without sha256: {v}"))?;
            let path = ctl.data.join("bulletins").join(format!("{sha}.opus"));
            let bytes = std::fs::read(&path).with_context(|| format!("ready variant {v} without its file"))?;
            ensure!(sha256_hex(&bytes) == sha, "the file of {v} does not match its SHA-256");
            ensure!(v["bytes"].as_u64() == Some(bytes.len() as u64), "size of {v}");
        }
    }
    Ok(())
}

fn multipart_body(boundary: &str, wav: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [("title", "Bản tin bị cắt"), ("category", "health"), ("language", "vi")] {
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").unwrap();
    }
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(wav);
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_upload_leaves_nothing_and_the_api_works_after_restart() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let ctl = Ctl::start(dir.path()).await?;
    let wav = std::fs::read(speech_wav(&dir.path().join("long.wav"), 120, 16_000))?;
    let boundary = "loa-crash-test-boundary";
    let body = multipart_body(boundary, &wav);

    // Send the headers and half of the body, then stop writing (the connection stays open).
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", ctl.http_port)).await?;
    let head = format!(
        "POST /api/v1/bulletins HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        ctl.token,
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes()).await?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &body[..body.len() / 2]).await?;
    let uploads = ctl.data.join("uploads");
    let quarter = wav.len() as u64 / 4;
    wait_for("the half upload on disk", Duration::from_secs(20), || {
        let uploads = uploads.clone();
        async move {
            let part = files(&uploads).into_iter().find(|n| n.ends_with(".part"))?;
            (std::fs::metadata(uploads.join(part)).ok()?.len() > quarter).then_some(())
        }
    })
    .await?;
    let stopped = ctl.kill9();
    drop(tcp);
    ensure!(!files(&uploads).is_empty(), "the killed upload left no file to clean (test is not testing anything)");

    let ctl = stopped.restart().await?;
    let api = ctl.api();
    ensure!(api.get("/bulletins").await? == json!([]), "a bulletin is listed after a killed upload");
    ensure!(files(&uploads).is_empty(), "leftovers in uploads/: {:?}", files(&uploads));
    ensure!(files(&ctl.data.join("bulletins")).is_empty(), "files in bulletins/");

    // The API works: a whole upload is accepted and encoded.
    let short = speech_wav(&dir.path().join("short.wav"), 5, 16_000);
    let id = api.upload(&short, "Bản tin sau khởi động lại", "health", "vi").await?;
    let b = api.wait_encoded(&id, Duration::from_secs(120)).await?;
    ensure!(b["status"] == "ready", "not ready: {b}");
    no_half_stored(&ctl).await?;
    ensure!(files(&uploads).is_empty(), "leftovers in uploads/: {:?}", files(&uploads));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_encode_resumes_it_after_restart() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let ctl = Ctl::start(dir.path()).await?;
    let api = ctl.api();
    // Ten minutes of speech.
    let long = speech_wav(&dir.path().join("ten-minutes.wav"), 600, 8_000);
    let id = api.upload(&long, "Bản tin mười phút", "health", "vi").await?;
    let b = api.get(&format!("/bulletins/{id}")).await?;
    ensure!(b["status"] == "encoding", "the encode finished before the kill: {b}");
    let stopped = ctl.kill9();

    let ctl = stopped.restart().await?;
    let api = ctl.api();
    let started = std::time::Instant::now();
    // While it encodes again, nothing is half-visible.
    let done = wait_for("the resumed encode", Duration::from_secs(900), || {
        let (api, id, ctl) = (api.clone(), id.clone(), &ctl);
        async move {
            no_half_stored(ctl).await.unwrap();
            let b = api.get(&format!("/bulletins/{id}")).await.ok()?;
            (b["status"] != "encoding").then_some(b)
        }
    })
    .await?;
    eprintln!("resumed encode finished in {:?}", started.elapsed());
    ensure!(done["status"] == "ready", "not ready after the restart: {done}");
    let variant = &done["variants"][0];
    ensure!(variant["duration_ms"].as_i64().unwrap_or(0) > 590_000, "duration {variant}");
    no_half_stored(&ctl).await?;
    // The audio served is the stored file.
    let audio = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/bulletins/{id}/audio", ctl.http_port))
        .bearer_auth(&ctl.token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(Some(sha256_hex(&audio).as_str()) == variant["sha256"].as_str(), "served audio differs from its SHA-256");
    let uploads = ctl.data.join("uploads");
    ensure!(files(&uploads).is_empty(), "leftovers in uploads/: {:?}", files(&uploads));
    Ok(())
}

/// A province without quiet hours (so that the test runs at any hour), three villages, one receiver each.
async fn villages(
    api: &ApiClient,
    dir: &Path,
    fleet: &mut Fleet,
) -> anyhow::Result<(Vec<i64>, Vec<String>, Vec<PathBuf>)> {
    let body = json!({"name": "Tỉnh Thử", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"});
    let province = api.post("/areas", &body).await?["id"].as_i64().context("province id")?;
    let (mut areas, mut receivers, mut wav_dirs) = (vec![], vec![], vec![]);
    for name in ["Thôn Một", "Thôn Hai", "Thôn Ba"] {
        let area = api.create_area(name, "village", Some(province), Some("vi")).await?;
        let (id, config) = api.register_receiver(&format!("Loa {name}"), area).await?;
        let wav_dir = dir.join("wav").join(&id);
        fleet.spawn(SimReceiver {
            config_toml: config,
            state_dir: dir.join("state").join(&id),
            wav_dir: Some(wav_dir.clone()),
            heartbeat_ms: Some(1000),
        })?;
        areas.push(area);
        receivers.push(id);
        wav_dirs.push(wav_dir);
    }
    Ok((areas, receivers, wav_dirs))
}

async fn wait_online(api: &ApiClient, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    wait_for("every receiver online", timeout, || async {
        for id in ids {
            if api.get(&format!("/receivers/{id}")).await.ok()?["online"] != json!(true) {
                return None;
            }
        }
        Some(())
    })
    .await
}

async fn plays(api: &ApiClient, schedule: i64) -> Vec<Value> {
    let v = api.get(&format!("/plays?schedule_id={schedule}")).await.unwrap_or(Value::Null);
    v.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_dispatch_does_not_disturb_receivers() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let ctl = Ctl::start(dir.path()).await?;
    let api = ctl.api();
    let mut fleet = Fleet::new();
    let (areas, receivers, wav_dirs) = villages(&api, dir.path(), &mut fleet).await?;
    wait_online(&api, &receivers, Duration::from_secs(30)).await?;
    let audio = speech_wav(&dir.path().join("bulletin.wav"), 20, 16_000);
    let bulletin = api.upload(&audio, "Tiêm phòng gia súc", "health", "vi").await?;
    let b = api.wait_encoded(&bulletin, Duration::from_secs(120)).await?;
    ensure!(b["status"] == "ready", "not ready: {b}");

    let at_ms = (chrono::Utc::now().timestamp_millis() + 60_000) / 1000 * 1000;
    let at = chrono::DateTime::from_timestamp_millis(at_ms).context("at")?.to_rfc3339();
    let s = api
        .post(
            "/schedules",
            &json!({"bulletin_id": bulletin, "targets": {"areas": areas}, "at": at, "priority": "normal"}),
        )
        .await?;
    let schedule = s["id"].as_i64().context("schedule id")?;
    // Kill as soon as the plays are planned and sent: the receivers are then fetching manifests and chunks.
    wait_for("three planned plays", Duration::from_secs(20), || async {
        (plays(&api, schedule).await.len() == 3).then_some(())
    })
    .await?;
    let stopped = ctl.kill9();

    let ctl = stopped.restart().await?;
    let api = ctl.api();
    wait_online(&api, &receivers, Duration::from_secs(60)).await?;
    let played = wait_for("three played plays", Duration::from_secs(150), || async {
        let p = plays(&api, schedule).await;
        (p.len() == 3 && p.iter().all(|p| p["status"] == "played")).then_some(p)
    })
    .await?;
    for p in &played {
        let started = chrono::DateTime::parse_from_rfc3339(p["started_at"].as_str().context("started_at")?)?;
        let off = started.timestamp_millis() - at_ms;
        ensure!(off.abs() <= 2000, "play {p} started {off} ms off plan");
    }
    let mut ids: Vec<&str> = played.iter().filter_map(|p| p["receiver_id"].as_str()).collect();
    ids.sort();
    let mut expected: Vec<&str> = receivers.iter().map(String::as_str).collect();
    expected.sort();
    ensure!(ids == expected, "plays {ids:?} for receivers {expected:?}");
    // Each loudspeaker played it exactly once.
    for wav_dir in &wav_dirs {
        let wavs: Vec<String> = files(wav_dir).into_iter().filter(|n| n.ends_with(".wav")).collect();
        ensure!(wavs.len() == 1, "{} played {wavs:?}", wav_dir.display());
    }
    fleet.shutdown().await;
    drop(ctl);
    Ok(())
}
