//! The fleet benchmark: many receivers (10,000 by default) on direct loopback connections with 60 s heartbeats,
//! then one 60 s bulletin scheduled for all of them. The controller runs as a child process (`loa-controller`
//! from the same target directory) with its embedded broker or against a Mosquitto this benchmark starts, so
//! its CPU seconds (utime + stime of `/proc/PID/stat`) and peak RSS (`VmHWM` of `/proc/PID/status`) are its own.
//! The receivers are real `loa-receiver`s in this process ([`Fleet`]), registered through the API in villages
//! of one province (100 per village), started with their connects spread over 30 s. Measured: time until the
//! controller lists them all online and the peak connect rate seen (polling `GET /receivers` every 2 s); then
//! seconds from the schedule until every receiver's cache holds the verified file (`ready_seconds`), the
//! controller's CPU in that phase and in total, its peak RSS (goal ≤ 300 MB), Mosquitto's peak RSS and CPU, and
//! this process's RSS ÷ receivers ("receiver memory"). Last, unless switched off, the reconnect storm
//! ([`super::storm`]): the broker restarts under the whole fleet.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::setup;
use crate::api::ApiClient;
use crate::fleet::{Fleet, SimReceiver};
use crate::procs::{self, raise_fd_limit, read_u64, tail, ControllerProcess, MosquittoProcess, Proc};

/// Which broker the controller uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The controller's embedded broker.
    Embedded,
    /// A Mosquitto started by the benchmark (`--broker mqtt://127.0.0.1:PORT`).
    Mosquitto,
}

impl BrokerKind {
    /// `embedded`, `mosquitto` or `both`.
    pub fn parse_choice(s: &str) -> anyhow::Result<Vec<BrokerKind>> {
        match s.trim() {
            "embedded" => Ok(vec![BrokerKind::Embedded]),
            "mosquitto" => Ok(vec![BrokerKind::Mosquitto]),
            "both" => Ok(vec![BrokerKind::Embedded, BrokerKind::Mosquitto]),
            other => bail!("unknown broker {other:?}: use embedded, mosquitto or both"),
        }
    }

    /// `embedded` or `mosquitto`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Receivers.
    pub receivers: usize,
    /// Brokers, one run each.
    pub brokers: Vec<BrokerKind>,
    /// Receivers per village.
    pub per_village: usize,
    /// Connects are spread uniformly over this.
    pub connect_spread: Duration,
    /// Bulletin length, s.
    pub bulletin_seconds: u32,
    /// Registrations in flight.
    pub in_flight: usize,
    /// End with the reconnect storm ([`super::storm`]).
    pub storm: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            receivers: 10_000,
            brokers: vec![BrokerKind::Embedded, BrokerKind::Mosquitto],
            per_village: 100,
            connect_spread: Duration::from_secs(30),
            bulletin_seconds: 60,
            in_flight: 32,
            storm: true,
        }
    }
}

/// A province without quiet hours and `villages` villages in it.
async fn areas(api: &ApiClient, villages: usize) -> anyhow::Result<(i64, Vec<i64>)> {
    let body = json!({"name": "Tỉnh Đội Tàu", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"});
    let province = api.post("/areas", &body).await?["id"].as_i64().context("province id")?;
    let mut ids = Vec::with_capacity(villages);
    for v in 0..villages {
        ids.push(api.create_area(&format!("Thôn {v}"), "village", Some(province), Some("vi")).await?);
    }
    Ok((province, ids))
}

/// Registers `n` receivers, `in_flight` at a time, `per_village` in each village; returns `(id, config)`s.
async fn register(
    api: &ApiClient,
    villages: &[i64],
    n: usize,
    per_village: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(vec![None; n]));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (api, next, out, villages) = (api.clone(), next.clone(), out.clone(), villages.to_vec());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let village = villages[(i / per_village.max(1)).min(villages.len() - 1)];
                let reg = api.register_receiver(&format!("fleet {i}"), village).await?;
                out.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(reg);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let list = std::mem::take(&mut *out.lock().unwrap_or_else(PoisonError::into_inner));
    list.into_iter().collect::<Option<Vec<_>>>().context("a registration is missing")
}

/// What polling `GET /receivers` every 2 s saw from the start of the connects.
struct Online {
    /// Seconds since the start, receivers online.
    samples: Vec<(f64, usize)>,
    /// Most files the controller had open at once.
    peak_fds: usize,
}

/// Polls until all `n` are online, or `timeout`, or no new highest count for a minute after `spread`, or the
/// controller has been out of file descriptors for 30 s.
async fn poll_online(api: ApiClient, ctl: Proc, n: usize, since: Instant, spread: Duration) -> Online {
    let (mut samples, mut peak_fds, mut best, mut last_gain) = (Vec::new(), 0, 0, Instant::now());
    let timeout = spread + Duration::from_secs(600);
    let limit = ctl.fd_limit().unwrap_or(u64::MAX) as usize;
    let mut fds_full_since: Option<Instant> = None;
    loop {
        let fds = ctl.open_files();
        peak_fds = peak_fds.max(fds);
        if fds + 8 < limit {
            fds_full_since = None;
        } else if fds_full_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(30) {
            break;
        }
        if let Ok(Value::Array(list)) = api.get("/receivers").await {
            let online = list.iter().filter(|r| r["online"] == json!(true)).count();
            if online > best {
                (best, last_gain) = (online, Instant::now());
            }
            samples.push((since.elapsed().as_secs_f64(), online));
            if online >= n {
                break;
            }
        }
        let stalled = since.elapsed() > spread && last_gain.elapsed() > Duration::from_secs(60);
        if since.elapsed() > timeout || stalled {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Online { samples, peak_fds }
}

/// Percentile `p` (0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * p / 100.0).round() as usize).copied()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs the benchmark once per broker; prints a table and, with `json`, one JSON object per broker (one per
/// line, after the table); returns those objects.
pub async fn run(options: FleetOptions, json: bool) -> anyhow::Result<Vec<Value>> {
    let fds = raise_fd_limit();
    let ticks = procs::clock_ticks();
    let (_, nproc) = rlimit::getrlimit(rlimit::Resource::NPROC).unwrap_or((0, 0));
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(0);
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(0);
    println!(
        "fleet: {} receivers (direct TCP, 60 s heartbeats, null sink), {} per village, connects over {} s, one {} s \
         bulletin",
        options.receivers,
        options.per_village,
        options.connect_spread.as_secs(),
        options.bulletin_seconds
    );
    println!(
        "limits: open files {fds}; threads: RLIMIT_NPROC {nproc}, threads-max {threads_max}, pid_max {pid_max} \
         (one player thread per receiver); CLK_TCK {ticks}"
    );
    let mut results = Vec::new();
    for &kind in &options.brokers {
        println!("\n[{}] running…", kind.name());
        match one(kind, &options, ticks).await {
            Ok(figures) => results.push(figures),
            Err(e) => {
                println!("  FAILED: {e:#}");
                results.push(json!({"broker": kind.name(), "receivers": options.receivers, "error": format!("{e:#}")}));
            }
        }
    }
    println!();
    print_table(&results);
    if json {
        for r in &results {
            println!("{r}");
        }
    }
    if results.iter().any(|r| r.get("error").is_some()) {
        bail!("a fleet run failed (see above)");
    }
    let storm_failed = |r: &Value| {
        r.get("storm_connections").is_some()
            && ["storm_all_back_seconds", "storm_online_seconds", "storm_ready_seconds"].iter().any(|k| r[*k].is_null())
    };
    if results.iter().any(storm_failed) {
        bail!(
            "after the reconnect storm, receivers did not all come back, were not all online at the controller or did \
             not all get the bulletin (see above)"
        );
    }
    Ok(results)
}

async fn one(kind: BrokerKind, o: &FleetOptions, ticks: f64) -> anyhow::Result<Value> {
    let n = o.receivers.max(1);
    let dir = tempfile::tempdir()?;
    let exe = ControllerProcess::exe_beside_me()?;
    let mut mosquitto = match kind {
        BrokerKind::Mosquitto => Some(MosquittoProcess::start(dir.path(), &exe, &dir.path().join("data")).await?),
        BrokerKind::Embedded => None,
    };
    let broker_proc = mosquitto.as_ref().map(|m| Proc { pid: m.pid(), ticks_per_s: ticks });
    let mut controller = ControllerProcess::start(&exe, dir.path(), mosquitto.as_ref()).await?;
    let api = controller.api.clone();
    let ctl = Proc { pid: controller.pid(), ticks_per_s: ticks };
    let me = Proc { pid: std::process::id(), ticks_per_s: ticks };
    let threads_before = me.status("Threads");

    let villages = n.div_ceil(o.per_village.max(1));
    let (province, village_ids) = areas(&api, villages).await?;
    let t = Instant::now();
    let regs = register(&api, &village_ids, n, o.per_village, o.in_flight).await?;
    let register_s = t.elapsed().as_secs_f64();
    println!("  registered {n} receivers in {villages} villages in {register_s:.1} s");
    if let Some(m) = &mosquitto {
        m.allow_registered()?;
    }

    // Connects spread uniformly over the spread; the poller counts who the controller sees online.
    let mut offsets: Vec<Duration> = {
        let mut rng = rand::rng();
        (0..n).map(|_| o.connect_spread.mul_f64(rng.random_range(0.0..1.0))).collect()
    };
    offsets.sort();
    let rx_dir = dir.path().join("rx");
    let mut fleet = Fleet::new();
    let start = Instant::now();
    let poller = tokio::spawn(poll_online(api.clone(), ctl, n, start, o.connect_spread));
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(n);
    for (k, ((id, config), offset)) in regs.into_iter().zip(offsets).enumerate() {
        tokio::time::sleep_until(start + offset).await;
        let state_dir = rx_dir.join(&id);
        let spec = SimReceiver { config_toml: config, state_dir: state_dir.clone(), wav_dir: None, heartbeat_ms: None };
        if let Err(e) = fleet.spawn(spec) {
            bail!(
                "could not start receiver {} of {n}: {e} (this process has {} threads; each receiver's player runs \
                 on its own OS thread: check ulimit -u, /proc/sys/kernel/threads-max, pid_max and memory)",
                k + 1,
                me.status("Threads")
            );
        }
        dirs.push(state_dir);
    }
    let Online { samples, peak_fds } = poller.await?;
    let online = samples.last().map(|s| s.1).unwrap_or(0);
    if online < n {
        let broker_files = broker_proc
            .map(|p| format!(", Mosquitto {} (limit {})", p.open_files(), p.fd_limit().unwrap_or(0)))
            .unwrap_or_default();
        bail!(
            "only {online} of {n} receivers came online (no progress for 60 s, or out of files for 30 s); files \
             open: the controller up to {peak_fds} (limit {}){broker_files}, this process {} (limit {}); \
             controller's last lines:\n{}",
            ctl.fd_limit().unwrap_or(0),
            me.open_files(),
            me.fd_limit().unwrap_or(0),
            tail(&dir.path().join("controller.log"), 4)
        );
    }
    let online_s = samples.last().map(|s| s.0).unwrap_or(0.0);
    let peak_rate = samples
        .windows(2)
        .map(|w| (w[1].1.saturating_sub(w[0].1)) as f64 / (w[1].0 - w[0].0).max(0.001))
        .fold(samples.first().map(|s| s.1 as f64 / s.0.max(0.001)).unwrap_or(0.0), f64::max);
    let cpu_online = ctl.cpu_s();
    println!("  all {n} online after {online_s:.1} s (peak {peak_rate:.0} connects/s seen)");

    let bulletin = setup::bulletin(&api, dir.path(), o.bulletin_seconds).await?;
    let cpu_before = ctl.cpu_s();
    let broker_cpu_before = broker_proc.map(|p| p.cpu_s());
    let since = Instant::now();
    setup::schedule(&api, &bulletin.id, province, Duration::from_secs(1800)).await?;
    let mut ready: Vec<Option<f64>> = vec![None; n];
    let ready_timeout = Duration::from_secs(1500);
    loop {
        for (slot, d) in ready.iter_mut().zip(&dirs) {
            if slot.is_none() && setup::cached(d, &bulletin.sha256) {
                *slot = Some(since.elapsed().as_secs_f64());
            }
        }
        let count = ready.iter().flatten().count();
        if count == n || since.elapsed() > ready_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu_delivery = ctl.cpu_s() - cpu_before;
    let mut times: Vec<f64> = ready.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let ready_count = times.len();
    let ready_s = (ready_count == n).then(|| times.last().copied().unwrap_or(0.0));
    let rx_kb = me.status("VmRSS") as f64 / n as f64;
    let threads = me.status("Threads");
    let mut figures = json!({
        "broker": kind.name(),
        "receivers": n,
        "villages": villages,
        "register_seconds": round1(register_s),
        "online_seconds": round1(online_s),
        "peak_connects_per_second": peak_rate.round(),
        "ready_seconds": ready_s.map(round1),
        "ready_count": ready_count,
        "ready_p50_seconds": percentile(&times, 50.0).map(round1),
        "ready_p90_seconds": percentile(&times, 90.0).map(round1),
        "file_bytes": bulletin.bytes,
        "controller_cpu_online_seconds": round1(cpu_online),
        "controller_cpu_delivery_seconds": round1(cpu_delivery),
        "controller_cpu_seconds": round1(ctl.cpu_s()),
        "controller_rss_mb": round1(ctl.mb("VmHWM")),
        "broker_rss_mb": broker_proc.map(|p| round1(p.mb("VmHWM"))),
        "broker_cpu_delivery_seconds": broker_proc.zip(broker_cpu_before).map(|(p, b)| round1(p.cpu_s() - b)),
        "broker_cpu_seconds": broker_proc.map(|p| round1(p.cpu_s())),
        "receiver_memory_kb": rx_kb.round(),
        "sim_rss_mb": round1(me.mb("VmRSS")),
        "sim_threads": threads,
        "controller_open_files_peak": peak_fds,
    });
    println!(
        "  {ready_count} of {n} ready{}",
        ready_s.map(|s| format!(" after {s:.1} s")).unwrap_or_else(|| format!(" (timed out after {ready_timeout:?})"))
    );

    if o.storm && ready_count == n {
        let storm = super::storm::run(&mut controller, mosquitto.as_mut(), province, dir.path(), &dirs, ticks).await?;
        if let (Some(f), Value::Object(s)) = (figures.as_object_mut(), storm) {
            f.extend(s);
        }
    }

    // Power everything off at once (a graceful stop of each member would take minutes at this scale).
    // The receivers go first, so they do not log the broker's going away.
    drop(fleet);
    let deadline = Instant::now() + Duration::from_secs(60);
    while me.status("Threads") > threads_before + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(controller);
    drop(mosquitto);
    Ok(figures)
}

fn print_table(results: &[Value]) {
    let rows: [(&str, &str, &str); 22] = [
        ("receivers", "receivers", ""),
        ("registration (32 in flight)", "register_seconds", "s"),
        ("connects start → all online", "online_seconds", "s"),
        ("peak connect rate seen", "peak_connects_per_second", "/s"),
        ("schedule → all caches ready", "ready_seconds", "s"),
        ("  half ready", "ready_p50_seconds", "s"),
        ("  90 % ready", "ready_p90_seconds", "s"),
        ("bulletin file", "file_bytes", "B"),
        ("controller CPU until online", "controller_cpu_online_seconds", "s"),
        ("controller CPU, delivery", "controller_cpu_delivery_seconds", "s"),
        ("controller CPU, total", "controller_cpu_seconds", "s"),
        ("controller peak RSS (≤ 300)", "controller_rss_mb", "MB"),
        ("Mosquitto peak RSS", "broker_rss_mb", "MB"),
        ("Mosquitto CPU, delivery / total", "broker_cpu_seconds", "s"),
        ("receiver memory (sim RSS ÷ N)", "receiver_memory_kb", "kB"),
        ("controller open files, peak", "controller_open_files_peak", ""),
        ("storm: connections to the broker", "storm_connections", ""),
        ("storm: broker restart took", "storm_restart_ms", "ms"),
        ("storm: restart → all back", "storm_all_back_seconds", "s"),
        ("storm: restart → all online at controller", "storm_online_seconds", "s"),
        ("storm: peak reconnect rate", "storm_peak_reconnects_per_second", "/s"),
        ("storm: then 10 s bulletin to all", "storm_ready_seconds", "s"),
    ];
    print!("{:<34}", "");
    for r in results {
        print!(" {:>14}", r["broker"].as_str().unwrap_or("?"));
    }
    println!();
    println!("{}", "-".repeat(34 + 15 * results.len()));
    for (label, key, unit) in rows {
        print!("{label:<34}");
        for r in results {
            let v = match (key, &r[key]) {
                ("broker_cpu_seconds", Value::Number(total)) => {
                    format!("{} / {total}", r["broker_cpu_delivery_seconds"])
                }
                (_, Value::Null) => "—".to_string(),
                (_, v) => format!("{v} {unit}"),
            };
            print!(" {v:>14}");
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_choices_and_percentiles() {
        assert_eq!(BrokerKind::parse_choice("both").unwrap().len(), 2);
        assert_eq!(BrokerKind::parse_choice("mosquitto").unwrap(), vec![BrokerKind::Mosquitto]);
        assert!(BrokerKind::parse_choice("emqx").is_err());
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
