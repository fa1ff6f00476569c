//! End-to-end over bad links: a real controller (embedded broker) and real receivers, each behind an emulated
//! `gprs` link (48 kbit/s, 600 ms RTT, 3 % loss) from firmware-sim. A bulletin arrives and plays on time; an
//! emergency sent during a long normal download plays first; a power cut mid-download resumes without fetching
//! verified chunks again; a receiver offline for an emergency's whole validity never plays it late; a receiver
//! whose clock is an hour off plays on time; a cancel reaches every online receiver within 5 s.
//!
//! Times are measured on the receivers' air events (the instant audio reaches the sink). Where the issue sets a
//! latency goal (emergency on `gprs`: 6 s at p95) the test checks the order (the warning airs while the long
//! download is unfinished) and only a loose bound (5 × the goal: a full test run puts six GPRS scenarios and the
//! other suites on two cores; 13 s was seen there); `loa-sim bench emergency` measures the real figure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use loa_firmware_sim::api::ApiClient;
use loa_firmware_sim::bench::setup::speech_wav;
use loa_firmware_sim::fleet::{ClockFault, Fleet, SimDevice, SimReceiver};
use loa_firmware_sim::link::LinkProfile;
use loa_receiver::AirEvent;
use loa_tests::{bulletin_audio, now_ms, wait_for, wait_online, BrokerKind, TestController};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The scenarios run one at a time: each is a controller and GPRS links timed to the second, and six of them at
/// once on a 2-core CI machine turn CPU contention into missed deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The emergency goal on `gprs` (p95), ms; the test allows five times this (see the module documentation).
const GPRS_EMERGENCY_GOAL_MS: i64 = 6_000;

/// How far from the plan a receiver whose clock is off may start over GPRS (see the test).
const CLOCK_FIXED_TOLERANCE_MS: i64 = 1_500;

struct Setup {
    ctl: TestController,
    api: ApiClient,
    fleet: Fleet,
    area: i64,
    ids: Vec<String>,
    events: broadcast::Receiver<(usize, AirEvent)>,
    _dir: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Setup {
    fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// A controller, one village without quiet hours, and `devices.len()` receivers behind their links, online.
async fn setup(devices: Vec<SimDevice>) -> anyhow::Result<Setup> {
    loa_tests::init_logs();
    let turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let ctl = TestController::start(&dir.path().join("controller"), BrokerKind::Embedded).await?;
    let api = ctl.api();
    let province = api
        .post("/areas", &json!({"name": "Lai Châu", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"}))
        .await?["id"]
        .as_i64()
        .context("province id")?;
    let area = api.create_area("Bản Lướt", "village", Some(province), Some("vi")).await?;
    let mut fleet = Fleet::new();
    let events = fleet.all_air_events();
    let mut ids = Vec::new();
    for (n, device) in devices.into_iter().enumerate() {
        let (id, config) = api.register_receiver(&format!("Loa {n}"), area).await?;
        let spec = SimReceiver {
            config_toml: config,
            state_dir: dir.path().join("state").join(&id),
            wav_dir: Some(dir.path().join("wav").join(&id)),
            heartbeat_ms: Some(1000),
        };
        fleet.spawn_device(spec, device)?;
        ids.push(id);
    }
    wait_online(&api, &ids, Duration::from_secs(60)).await?;
    Ok(Setup { ctl, api, fleet, area, ids, events, _dir: dir, _turn: turn })
}

fn gprs() -> SimDevice {
    SimDevice::behind(LinkProfile::named("gprs").unwrap())
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Uploads `wav` and waits until it is encoded; returns the bulletin id.
async fn encoded(api: &ApiClient, wav: &Path, title: &str) -> anyhow::Result<String> {
    let id = api.upload(wav, title, "other", "vi").await?;
    let b = api.wait_encoded(&id, Duration::from_secs(120)).await?;
    ensure!(b["status"] == "ready", "bulletin not ready: {b}");
    Ok(id)
}

/// A generated speech-like recording of `seconds`.
fn speech(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let path = dir.join(name);
    speech_wav(&path, seconds).unwrap();
    path
}

/// Schedules `bulletin` at `at_ms` (whole second) for the village; returns the schedule id.
async fn schedule(s: &Setup, bulletin: &str, at_ms: i64) -> anyhow::Result<i64> {
    let at = loa_protocol::Timestamp::from_unix_ms(at_ms)?.to_datetime().to_rfc3339();
    let made =
        s.api.post("/schedules", &json!({"bulletin_id": bulletin, "targets": {"areas": [s.area]}, "at": at})).await?;
    made["id"].as_i64().context("schedule id")
}

async fn plays(api: &ApiClient, schedule: i64) -> Vec<Value> {
    api.get(&format!("/plays?schedule_id={schedule}"))
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The next air event matching `pick` within `timeout`.
async fn next_event<T>(
    events: &mut broadcast::Receiver<(usize, AirEvent)>,
    timeout: Duration,
    mut pick: impl FnMut(usize, &AirEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Err(_) => anyhow::bail!("no such air event within {timeout:?}"),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => anyhow::bail!("air events closed: {e}"),
            Ok(Ok((i, e))) => {
                if let Some(v) = pick(i, &e) {
                    return Ok(v);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_gprs_a_bulletin_arrives_and_plays_on_time() -> anyhow::Result<()> {
    let mut s = setup(vec![gprs(), gprs()]).await?;
    let bulletin = encoded(&s.api, &bulletin_audio(s.dir()), "Họp thôn").await?;
    let at_ms = (now_ms() + 45_000) / 1000 * 1000;
    let sched = schedule(&s, &bulletin, at_ms).await?;
    let mut started = Vec::new();
    while started.len() < 2 {
        let (i, at) = next_event(&mut s.events, Duration::from_secs(90), |i, e| match e {
            AirEvent::SpeechStarted { at, .. } => Some((i, ms(*at))),
            _ => None,
        })
        .await?;
        started.push((i, at));
    }
    for (i, at) in &started {
        ensure!((at - at_ms).abs() <= 1000, "receiver {i} started {} ms off the plan", at - at_ms);
    }
    let api = s.api.clone();
    let done = wait_for("both plays reported played", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let p = plays(&api, sched).await;
            (p.len() == 2 && p.iter().all(|p| p["status"] == "played")).then_some(p)
        }
    })
    .await?;
    for p in &done {
        let started = chrono::DateTime::parse_from_rfc3339(p["started_at"].as_str().unwrap())?.timestamp_millis();
        ensure!((started - at_ms).abs() <= 1000, "reported start {started} vs plan {at_ms}: {p}");
    }
    s.fleet.shutdown().await;
    s.ctl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_gprs_an_emergency_plays_before_a_long_download_finishes() -> anyhow::Result<()> {
    let mut s = setup(vec![gprs()]).await?;
    let long = encoded(&s.api, &speech(s.dir(), "long.wav", 180), "Chợ phiên").await?;
    let warning = encoded(&s.api, &speech(s.dir(), "warning.wav", 20), "Lũ quét").await?;
    let normal = schedule(&s, &long, (now_ms() + 600_000) / 1000 * 1000).await?;
    let (ctl, rx) = (&s.ctl, s.ids[0].clone());
    wait_for("the long download to be under way", Duration::from_secs(60), || async {
        (ctl.chunks_sent_to(&rx) >= 4).then_some(())
    })
    .await?;
    let sent_ms = now_ms();
    let sent = s.api.post("/emergencies", &json!({"bulletin_id": warning, "targets": {"areas": [s.area]}})).await?;
    let emergency = sent["id"].as_i64().context("emergency id")?;
    let speech_ms = next_event(&mut s.events, Duration::from_secs(60), |_, e| match e {
        AirEvent::SpeechStarted { at, .. } => Some(ms(*at)),
        _ => None,
    })
    .await?;
    let normal_progress = plays(&s.api, normal).await[0]["progress"].as_i64().unwrap_or(0);
    let to_air = speech_ms - sent_ms;
    println!("emergency over gprs during a long download: first speech {to_air} ms after the API call");
    ensure!(normal_progress < 100, "the long download finished first ({normal_progress} %)");
    ensure!(to_air <= 5 * GPRS_EMERGENCY_GOAL_MS, "emergency took {to_air} ms to air");
    let p = plays(&s.api, emergency).await;
    ensure!(p.len() == 1 && p[0]["tier"] == "emergency", "{p:?}");
    // The warning's first chunk went out unasked behind its plan. The receiver's request for it, sent before it
    // arrived, did not get it a second time (no such request when the frame overtook the manifest on the broker:
    // the receiver kept it and did not ask).
    let stats = s.ctl.dispatch_stats();
    ensure!(stats.heads_pushed == 1 && stats.heads_not_resent <= 1, "{stats:?}");
    s.fleet.shutdown().await;
    s.ctl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_mid_download_does_not_fetch_verified_chunks_again() -> anyhow::Result<()> {
    let s = setup(vec![gprs()]).await?;
    let long = encoded(&s.api, &speech(s.dir(), "long.wav", 180), "Chính sách mới").await?;
    let b = s.api.get(&format!("/bulletins/{long}")).await?;
    let bytes = b["bytes"].as_u64().context("bytes")?;
    let chunks = bytes.div_ceil(u64::from(loa_controller::dispatch::chunk_size(usize::try_from(bytes)?)));
    let sched = schedule(&s, &long, (now_ms() + 900_000) / 1000 * 1000).await?;
    let (ctl, rx) = (&s.ctl, s.ids[0].clone());
    wait_for("half the file delivered", Duration::from_secs(120), || async {
        (ctl.chunks_sent_to(&rx) >= chunks / 2).then_some(())
    })
    .await?;
    s.fleet.power_cut(0, Duration::from_secs(2)).await?;
    let before = ctl.chunks_sent_to(&rx);
    let api = s.api.clone();
    let rx2 = rx.clone();
    wait_for("the receiver to hold the whole file again", Duration::from_secs(180), || {
        let (api, rx) = (api.clone(), rx2.clone());
        async move {
            let r = api.get(&format!("/receivers/{rx}")).await.ok()?;
            (r["health"]["ready"].as_u64()? >= 1).then_some(())
        }
    })
    .await?;
    let total = ctl.chunks_sent_to(&rx);
    println!("{chunks} chunks in the file; {before} sent before the cut; {total} in all");
    // What was verified before the cut is not asked for again: at most the few chunks in flight are repeated.
    ensure!(total <= chunks + 8, "{total} chunks sent for a {chunks}-chunk file: verified chunks were fetched again");
    let p = plays(&s.api, sched).await;
    ensure!(p[0]["status"] == "ready", "{p:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_offline_for_an_emergencys_whole_validity_never_plays_it() -> anyhow::Result<()> {
    let mut s = setup(vec![gprs()]).await?;
    let warning = encoded(&s.api, &speech(s.dir(), "warning.wav", 10), "Sạt lở").await?;
    s.fleet.stop(0).await?;
    let sent = s
        .api
        .post("/emergencies", &json!({"bulletin_id": warning, "targets": {"areas": [s.area]}, "expires_in_s": 60}))
        .await?;
    let emergency = sent["id"].as_i64().context("emergency id")?;
    tokio::time::sleep(Duration::from_secs(62)).await; // the whole validity passes while it is off
    s.fleet.restart(0)?;
    let api = s.api.clone();
    let p = wait_for("the emergency reported missed", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let p = plays(&api, emergency).await;
            (p.first()?["status"] == "missed").then_some(p)
        }
    })
    .await?;
    ensure!(p[0]["reason"] == "expired", "{p:?}");
    let heard = next_event(&mut s.events, Duration::from_secs(3), |_, e| match e {
        AirEvent::ToneStarted { .. } | AirEvent::SpeechStarted { .. } => Some(()),
        _ => None,
    })
    .await;
    ensure!(heard.is_err(), "an expired emergency went on air");
    s.fleet.shutdown().await;
    s.ctl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_clock_is_an_hour_off_plays_on_time() -> anyhow::Result<()> {
    plays_on_time_with_the_clock_off(3_600_000).await
}

/// Too little ahead to be told from a late link by one-way messages alone (under 2 min): the round trip of the
/// `online` status and the live plan that answers it proves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_clock_is_30_s_ahead_plays_on_time() -> anyhow::Result<()> {
    plays_on_time_with_the_clock_off(30_000).await
}

/// A GPRS receiver whose clock is `offset_ms` ahead plays a bulletin on time and reports true times.
async fn plays_on_time_with_the_clock_off(offset_ms: i64) -> anyhow::Result<()> {
    let device = SimDevice { clock: ClockFault::OffsetMs(offset_ms), ..gprs() };
    let mut s = setup(vec![device]).await?;
    let bulletin = encoded(&s.api, &speech(s.dir(), "notice.wav", 15), "Thông báo").await?;
    let at_ms = (now_ms() + 40_000) / 1000 * 1000;
    let sched = schedule(&s, &bulletin, at_ms).await?;
    let started = next_event(&mut s.events, Duration::from_secs(90), |_, e| match e {
        AirEvent::SpeechStarted { at, .. } => Some(ms(*at)),
        _ => None,
    })
    .await?;
    // The receiver's correction is the middle of a round trip's bounds, off by at most half the round trip of its
    // `online` and the answering plan (more when that plan queued behind manifests on GPRS). Hence 1.5 s here,
    // not the 1 s of a receiver whose clock is right; seen: 22 ms (30 s ahead) and 46 ms (an hour ahead).
    println!("clock {offset_ms} ms ahead: started {} ms off the plan", started - at_ms);
    ensure!((started - at_ms).abs() <= CLOCK_FIXED_TOLERANCE_MS, "started {} ms off the plan", started - at_ms);
    let api = s.api.clone();
    let p = wait_for("the play reported played", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let p = plays(&api, sched).await;
            (p.first()?["status"] == "played").then_some(p)
        }
    })
    .await?;
    let reported = chrono::DateTime::parse_from_rfc3339(p[0]["started_at"].as_str().unwrap())?.timestamp_millis();
    ensure!(
        (reported - at_ms).abs() <= CLOCK_FIXED_TOLERANCE_MS,
        "reported start is {} ms off: reports carry controller time",
        reported - at_ms
    );
    let r = s.api.get(&format!("/receivers/{}", s.ids[0])).await?;
    let offset = r["health"]["clock_ms"].as_i64().context("clock offset in health")?;
    ensure!((offset - offset_ms).abs() < 5_000, "health clock_ms {offset}");
    s.fleet.shutdown().await;
    s.ctl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_online_receiver_within_5_s() -> anyhow::Result<()> {
    let mut s = setup(vec![gprs(), gprs(), gprs()]).await?;
    let warning = encoded(&s.api, &speech(s.dir(), "warning.wav", 20), "Bão số 3").await?;
    let sent = s.api.post("/emergencies", &json!({"bulletin_id": warning, "targets": {"areas": [s.area]}})).await?;
    let emergency = sent["id"].as_i64().context("emergency id")?;
    let mut on_air = std::collections::BTreeSet::new();
    while on_air.len() < 3 {
        let i = next_event(&mut s.events, Duration::from_secs(60), |i, e| {
            matches!(e, AirEvent::SpeechStarted { .. }).then_some(i)
        })
        .await?;
        on_air.insert(i);
    }
    let cancelled_ms = now_ms();
    s.api.delete(&format!("/emergencies/{emergency}")).await?;
    let mut stopped = std::collections::BTreeMap::new();
    while stopped.len() < 3 {
        let (i, at) = next_event(&mut s.events, Duration::from_secs(10), |i, e| match e {
            AirEvent::Stopped { at, .. } | AirEvent::Preempted { at, .. } => Some((i, ms(*at))),
            _ => None,
        })
        .await?;
        stopped.insert(i, at - cancelled_ms);
    }
    println!("cancel to silence per receiver (ms): {stopped:?}");
    for (i, took) in &stopped {
        ensure!(*took <= 5_000, "receiver {i} stopped {took} ms after the cancel");
    }
    s.fleet.shutdown().await;
    s.ctl.stop().await?;
    Ok(())
}
