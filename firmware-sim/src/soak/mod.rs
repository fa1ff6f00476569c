//! `loa-sim soak`: a long run of a whole system under faults, judged for lost, late, duplicated and corrupt
//! plays. The real `loa-controller` binary runs as a child process (so it can be killed with SIGKILL), with
//! its embedded broker or a Mosquitto child; real receivers run in this process ([`Fleet`]) behind emulated
//! links of a profile mix, each link with extra loss and random outages and hard disconnects.
//!
//! Every `round_every` a new bulletin (its own voice, so its own file) is uploaded and scheduled once for the
//! whole province `lead` ahead; shortly after each schedule a share of the receivers lose power for a while
//! (mostly while the file is downloading, see `cuts`). A third of the way in the broker restarts (Mosquitto: SIGTERM and
//! start; embedded: the controller stops cleanly and starts, the broker with it); two thirds of the way in the
//! controller is killed with SIGKILL and started again. After the last play a settling time lets reports arrive,
//! then [`check::judge`] compares the controller's plays, the players' air events and the sinks' digests.

pub mod check;
mod cuts;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use loa_receiver::AirEvent;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::api::ApiClient;
use crate::bench::fleet::BrokerKind;
use crate::bench::setup;
use crate::fleet::{Fleet, SimDevice, SimReceiver};
use crate::link::{self, OutageSchedule};
use crate::procs::{self, ControllerProcess, MosquittoProcess, Proc};
use check::{Aired, Planned, Verdict};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Receivers.
    pub receivers: usize,
    /// How long bulletins keep being scheduled (the run takes this plus the last play and the settling time).
    pub duration: Duration,
    /// The broker.
    pub broker: BrokerKind,
    /// Link profile mix, e.g. `ethernet:10,4g:30,3g:30,edge:20,gprs:10`.
    pub profile: String,
    /// Segment loss on every link, percent (replaces the profiles' own).
    pub loss_percent: f64,
    /// Mean time between random outages or hard disconnects on each link.
    pub link_failure_every: Duration,
    /// Share of receivers that lose power after each schedule, percent.
    pub power_cut_percent: f64,
    /// A new bulletin this often.
    pub round_every: Duration,
    /// How far ahead each bulletin is scheduled.
    pub lead: Duration,
    /// Length of each bulletin, s.
    pub bulletin_seconds: u32,
    /// Receivers per village.
    pub per_village: usize,
    /// After the last play, how long reports may take to arrive.
    pub settle: Duration,
    /// The `loa-controller` binary (default: beside this program).
    pub controller_exe: Option<PathBuf>,
    /// Keep the controller's data, logs and receiver disks here (default: a temporary folder, removed).
    pub work_dir: Option<PathBuf>,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            receivers: 1000,
            duration: Duration::from_secs(1800),
            broker: BrokerKind::Mosquitto,
            profile: "ethernet:10,4g:30,3g:30,edge:20,gprs:10".into(),
            loss_percent: 5.0,
            link_failure_every: Duration::from_secs(600),
            power_cut_percent: 5.0,
            round_every: Duration::from_secs(120),
            lead: Duration::from_secs(90),
            bulletin_seconds: 20,
            per_village: 50,
            settle: Duration::from_secs(180),
            controller_exe: None,
            work_dir: None,
        }
    }
}

impl SoakOptions {
    /// The suite's version: 100 receivers for 2 minutes.
    pub fn short() -> SoakOptions {
        SoakOptions {
            receivers: 100,
            duration: Duration::from_secs(120),
            round_every: Duration::from_secs(45),
            lead: Duration::from_secs(30),
            bulletin_seconds: 8,
            link_failure_every: Duration::from_secs(120),
            per_village: 25,
            settle: Duration::from_secs(90),
            ..SoakOptions::default()
        }
    }
}

/// One scheduled round.
struct Round {
    schedule_id: i64,
    at_ms: i64,
    sha256: String,
    bytes: u64,
}

/// What the run did to the system, for the figures.
#[derive(Default)]
struct Disturbances {
    /// Watching the reconnects after the broker restart.
    reconnects: Option<tokio::task::JoinHandle<(Option<f64>, f64)>>,
    /// (member, seconds since the start of the rounds when the power goes, seconds off).
    cuts: Arc<Mutex<Vec<(usize, f64, f64)>>>,
    power_cuts: Arc<AtomicUsize>,
    mid_download: Arc<AtomicUsize>,
    broker_restart_s: Option<f64>,
    controller_kill_s: Option<f64>,
    controller_down_ms: Vec<u64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

type AirLog = Arc<Mutex<HashMap<(String, String), Aired>>>;

/// Records every member's air events by (receiver id, play id).
fn collect_air(fleet: &Fleet, log: &AirLog) {
    for i in 0..fleet.len() {
        let (Some(mut events), Some(id)) = (fleet.air_events(i), fleet.id(i).map(str::to_string)) else { continue };
        let log = log.clone();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(receiver = %id, lost = n, "soak: air events lost");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    AirEvent::SpeechStarted { play_id, at } => {
                        log.entry((id.clone(), play_id)).or_default().starts_ms.push(unix_ms(at))
                    }
                    AirEvent::Finished { play_id, .. } => log.entry((id.clone(), play_id)).or_default().finished += 1,
                    AirEvent::Underrun { play_id, .. } => log.entry((id.clone(), play_id)).or_default().underruns += 1,
                    _ => {}
                }
            }
        });
    }
}

/// Runs the soak; prints progress and a table; returns the figures (with the verdict). Fails if the verdict
/// does not pass.
pub async fn run(o: SoakOptions) -> anyhow::Result<Value> {
    ensure!(o.receivers > 0 && o.per_village > 0, "receivers and per_village must be at least 1");
    ensure!(o.lead > Duration::from_secs(10), "lead must be more than 10 s");
    // Power cuts are for downloads: a round's cuts must be over before its air time, and its plays over before
    // the next round's cuts.
    ensure!(
        o.round_every >= o.lead + Duration::from_secs(u64::from(o.bulletin_seconds) + 5),
        "round_every must leave room for the lead, the bulletin and 5 s"
    );
    let fds = procs::raise_fd_limit();
    let temp = tempfile::tempdir()?;
    let dir = o.work_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let exe = match &o.controller_exe {
        Some(p) => p.clone(),
        None => ControllerProcess::exe_beside_me()?,
    };
    let n = o.receivers;
    println!(
        "soak: {n} receivers ({}, +{} % loss, a link failure every ~{} s each), {} broker, a {} s bulletin every {} s \
         for {} s, {} % power cuts per round; files in {} (open-file limit {fds})",
        o.profile,
        o.loss_percent,
        o.link_failure_every.as_secs(),
        o.broker.name(),
        o.bulletin_seconds,
        o.round_every.as_secs(),
        o.duration.as_secs(),
        o.power_cut_percent,
        dir.display()
    );
    let mut mosquitto = match o.broker {
        BrokerKind::Mosquitto => {
            let mdir = dir.join("mosquitto");
            std::fs::create_dir_all(&mdir)?;
            Some(MosquittoProcess::start(&mdir, &exe, &dir.join("data")).await?)
        }
        BrokerKind::Embedded => None,
    };
    let mut ctl = ControllerProcess::start(&exe, &dir, mosquitto.as_ref()).await?;
    let api = ctl.api.clone();

    // The province (no quiet hours: the soak runs at any hour) and its villages.
    let body = json!({"name": "Tỉnh Thử Bền", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"});
    let province = api.post("/areas", &body).await?["id"].as_i64().context("province id")?;
    let mut villages = Vec::new();
    for v in 0..n.div_ceil(o.per_village) {
        villages.push(api.create_area(&format!("Thôn {v}"), "village", Some(province), Some("vi")).await?);
    }

    // The fleet: each receiver behind its own link with loss and random failures.
    let outages = OutageSchedule {
        mean_interval_ms: o.link_failure_every.as_millis() as u64,
        min_duration_ms: 3_000,
        max_duration_ms: 20_000,
        disconnect_percent: 50.0,
    };
    let profiles = link::parse(&o.profile)?.assign(n);
    let mut fleet = Fleet::new();
    let plays = fleet.record_plays();
    let rx_dir = dir.join("rx");
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        regs.push(api.register_receiver(&format!("soak {i}"), villages[i / o.per_village]).await?);
    }
    if let Some(m) = &mosquitto {
        m.allow_registered()?;
    }
    for ((id, config), profile) in regs.into_iter().zip(profiles) {
        let mut profile = profile.with_outages(outages.clone());
        profile.loss_percent = o.loss_percent;
        let spec = SimReceiver { config_toml: config, state_dir: rx_dir.join(&id), wav_dir: None, heartbeat_ms: None };
        fleet.spawn_device(spec, SimDevice::behind(profile))?;
    }
    let air: AirLog = Arc::default();
    collect_air(&fleet, &air);
    let online_s = wait_online(&api, n, Duration::from_secs(120)).await?;
    println!("  {n} receivers registered and online after {online_s:.1} s");

    let start = Instant::now();
    let mut rounds: Vec<Round> = Vec::new();
    let mut dist = Disturbances::default();
    let (broker_at, kill_at) = (o.duration / 3, o.duration * 2 / 3);
    let mut next_round = Duration::ZERO;
    let mut last_status = Instant::now();
    while start.elapsed() < o.duration {
        let t = start.elapsed();
        if dist.broker_restart_s.is_none() && t >= broker_at {
            dist.broker_restart_s = Some(t.as_secs_f64());
            restart_broker(&mut mosquitto, &mut ctl, &mut dist, n).await?;
        }
        if dist.controller_kill_s.is_none() && t >= kill_at {
            dist.controller_kill_s = Some(t.as_secs_f64());
            let down = Instant::now();
            ctl.kill9()?;
            println!("  {:>5.0} s: controller killed (SIGKILL)", t.as_secs_f64());
            ctl.restart().await.context("the controller did not come back after SIGKILL")?;
            dist.controller_down_ms.push(down.elapsed().as_millis() as u64);
            println!(
                "  {:>5.0} s: controller back after {} ms",
                start.elapsed().as_secs_f64(),
                down.elapsed().as_millis()
            );
        }
        if t >= next_round {
            next_round += o.round_every;
            let round = schedule_round(&api, &dir, &o, rounds.len(), province).await?;
            cuts::cut_power(&fleet, &o, &round, &dist, start);
            rounds.push(round);
        }
        if last_status.elapsed() >= Duration::from_secs(60) {
            last_status = Instant::now();
            status_line(&api, &fleet, start, rounds.len()).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Let the last plays end and their reports arrive: until every play is final, or the settling time.
    let last_play_ms = rounds.last().map(|r| r.at_ms).unwrap_or(0) + i64::from(o.bulletin_seconds) * 1000 + 5_000;
    while now_ms() < last_play_ms {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_start = Instant::now();
    let planned = loop {
        let planned = fetch_planned(&api, &rounds).await?;
        let open = planned.iter().filter(|p| !matches!(p.status.as_str(), "played" | "missed")).count();
        if open == 0 || settle_start.elapsed() > o.settle {
            println!("  settled after {:.0} s ({open} plays not final)", settle_start.elapsed().as_secs_f64());
            break planned;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let aired = air.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let records = plays.records();
    let ids: Vec<String> = (0..fleet.len()).map(|i| fleet.id(i).unwrap_or_default().to_string()).collect();
    let mut verdict = check::judge(&planned, &aired, &records, &|m| ids.get(m).cloned());
    explain(&mut verdict, &fleet, &ids, &dist, &rounds, start);
    let links = (0..fleet.len())
        .filter_map(|i| fleet.link_stats(i))
        .fold((0, 0), |(o, c), s| (o + s.outages, c + s.forced_closes));
    let ctl_proc = Proc::of(ctl.pid());
    let (all_back_s, peak_reconnects) = match dist.reconnects.take() {
        Some(watch) => watch.await.unwrap_or((None, 0.0)),
        None => (None, 0.0),
    };
    let figures = json!({
        "receivers": n,
        "broker": o.broker.name(),
        "profile": o.profile,
        "loss_percent": o.loss_percent,
        "duration_seconds": o.duration.as_secs(),
        "rounds": rounds.len(),
        "bulletin_seconds": o.bulletin_seconds,
        "power_cuts": dist.power_cuts.load(Ordering::Relaxed),
        "power_cuts_mid_download": dist.mid_download.load(Ordering::Relaxed),
        "link_outages": links.0,
        "link_disconnects": links.1,
        "broker_restart_at_seconds": dist.broker_restart_s.map(|s| s.round()),
        "controller_kill_at_seconds": dist.controller_kill_s.map(|s| s.round()),
        "controller_down_ms": dist.controller_down_ms,
        "broker_restart_all_back_seconds": all_back_s.map(|s| (s * 10.0).round() / 10.0),
        "broker_restart_peak_reconnects_per_second": peak_reconnects.round(),
        "controller_rss_mb_since_restart": (ctl_proc.mb("VmHWM") * 10.0).round() / 10.0,
        "verdict": verdict,
        "passed": verdict.passed(),
    });
    print_verdict(&verdict);
    fleet.shutdown().await;
    drop(ctl);
    drop(mosquitto);
    if !verdict.passed() {
        bail!("the soak failed: {}", verdict.problems.join("; "));
    }
    Ok(figures)
}

/// Adds to each problem what the receiver went through: its link, its power cuts, the round times.
fn explain(v: &mut Verdict, fleet: &Fleet, ids: &[String], dist: &Disturbances, rounds: &[Round], start: Instant) {
    let cuts = dist.cuts.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let started_ms = now_ms() - start.elapsed().as_millis() as i64;
    let airs: Vec<String> = rounds.iter().map(|r| format!("{:.0}", (r.at_ms - started_ms) as f64 / 1000.0)).collect();
    for p in &mut v.problems {
        let Some(i) = ids.iter().position(|id| p.contains(id.as_str())) else { continue };
        let link = fleet.profile(i).map(|l| l.name.clone()).unwrap_or_default();
        let mine: Vec<String> =
            cuts.iter().filter(|c| c.0 == i).map(|c| format!("{:.0} s for {:.0} s", c.1, c.2)).collect();
        p.push_str(&format!(" [{link}; power cuts at {mine:?}; air times {} s]", airs.join(", ")));
    }
}

async fn restart_broker(
    mosquitto: &mut Option<MosquittoProcess>,
    ctl: &mut ControllerProcess,
    dist: &mut Disturbances,
    receivers: usize,
) -> anyhow::Result<()> {
    let port = mosquitto.as_ref().map(MosquittoProcess::port).or(ctl.mqtt_port);
    // The receivers and the controller's own client.
    let watch = port.map(|p| tokio::spawn(procs::watch_reconnects(p, receivers + 1, Duration::from_secs(180))));
    let down = procs::restart_broker(mosquitto.as_mut(), ctl).await?;
    if mosquitto.is_none() {
        dist.controller_down_ms.push(down.as_millis() as u64);
    }
    dist.reconnects = watch;
    Ok(())
}

/// Uploads round `k`'s bulletin and schedules it for the whole province `lead` ahead.
async fn schedule_round(
    api: &ApiClient,
    dir: &std::path::Path,
    o: &SoakOptions,
    k: usize,
    province: i64,
) -> anyhow::Result<Round> {
    let b = setup::bulletin_voice(api, dir, o.bulletin_seconds, k as u32 + 1).await?;
    let at_ms = (now_ms() + o.lead.as_millis() as i64) / 1000 * 1000;
    let schedule_id = setup::schedule_at(api, &b.id, province, at_ms).await?;
    println!("  round {}: {} ({} bytes) scheduled for {} s ahead", k + 1, b.id, b.bytes, o.lead.as_secs());
    Ok(Round { schedule_id, at_ms, sha256: b.sha256, bytes: b.bytes })
}

async fn wait_online(api: &ApiClient, n: usize, timeout: Duration) -> anyhow::Result<f64> {
    let since = Instant::now();
    loop {
        let online = api
            .get("/receivers")
            .await
            .ok()
            .and_then(|v| v.as_array().map(|l| l.iter().filter(|r| r["online"] == json!(true)).count()))
            .unwrap_or(0);
        if online >= n {
            return Ok(since.elapsed().as_secs_f64());
        }
        if since.elapsed() > timeout {
            bail!("only {online} of {n} receivers came online within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn status_line(api: &ApiClient, fleet: &Fleet, start: Instant, rounds: usize) {
    let online = api
        .get("/receivers")
        .await
        .ok()
        .and_then(|v| v.as_array().map(|l| l.iter().filter(|r| r["online"] == json!(true)).count()))
        .unwrap_or(0);
    let running = (0..fleet.len()).filter(|&i| fleet.is_running(i)).count();
    println!(
        "  {:>5.0} s: {rounds} rounds, {running}/{} powered, {online} online at the controller",
        start.elapsed().as_secs_f64(),
        fleet.len()
    );
}

/// Every play of the soak's schedules as the controller holds it.
async fn fetch_planned(api: &ApiClient, rounds: &[Round]) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    for r in rounds {
        let list = api.get(&format!("/plays?schedule_id={}&limit=10000", r.schedule_id)).await?;
        for p in list.as_array().context("plays list")? {
            out.push(Planned {
                play_id: p["id"].as_str().unwrap_or_default().to_string(),
                receiver_id: p["receiver_id"].as_str().unwrap_or_default().to_string(),
                bulletin_id: p["bulletin_id"].as_str().unwrap_or_default().to_string(),
                at_ms: r.at_ms,
                status: p["status"].as_str().unwrap_or_default().to_string(),
                reason: p["reason"].as_str().map(str::to_string),
                started: !p["started_at"].is_null(),
                started_at_ms: p["started_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis()),
                finished: !p["finished_at"].is_null(),
            });
        }
    }
    Ok(out)
}

fn print_verdict(v: &Verdict) {
    println!("\n  plays planned              {:>8}", v.plays_planned);
    println!("  played on time (±2 s)      {:>8}", v.played_on_time);
    println!("  reported missed            {:>8}  {:?}", v.reported_missed, v.missed_reasons);
    println!("  started late, reported     {:>8}  (the file arrived after its time)", v.started_late_reported);
    println!("  played late, not reported  {:>8}", v.played_late);
    println!("  neither played nor missed  {:>8}", v.unaccounted);
    println!("  duplicate plays            {:>8}", v.duplicate_plays);
    println!("  corrupt plays              {:>8}  (of {} complete plays compared)", v.corrupt_plays, v.plays_checked);
    println!("  reports lost               {:>8}", v.reports_lost);
    println!("  underruns                  {:>8}", v.underruns);
    println!("  start offset max / p99     {:>5} / {} ms", v.max_offset_ms, v.p99_offset_ms);
    for p in &v.problems {
        println!("  PROBLEM: {p}");
    }
}
