//! `loa-sim run`: a standing fleet against a running controller. It registers receivers through the API (or
//! reuses the configs it saved in its data directory on an earlier run), runs each behind its own emulated link
//! (profiles from a mix such as `4g:50,3g:25,edge:25`), with optional clock faults, random outages and power
//! cuts, and prints a status line now and then until cancelled (Ctrl-C / SIGTERM in the binary).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::fleet::{ClockFault, Fleet, PowerCuts, SimDevice, SimReceiver};
use crate::link::{self, OutageSchedule};

/// What `loa-sim run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Controller base URL, e.g. `http://127.0.0.1:8080`.
    pub controller: String,
    /// Admin token.
    pub admin_token: String,
    /// How many receivers.
    pub receivers: usize,
    /// Link profile or mix (`3g`, `4g:50,3g:25,edge:25`).
    pub profile: String,
    /// Areas to register new receivers in (round robin); empty: a new area `loa-sim` is made.
    pub areas: Vec<i64>,
    /// Where the receiver configs and state directories live.
    pub data_dir: PathBuf,
    /// Plays go to WAV files under this directory (one folder per receiver); `None`: the null sink.
    pub wav_dir: Option<PathBuf>,
    /// Heartbeat interval override.
    pub heartbeat_ms: Option<u64>,
    /// Clock fault of every receiver.
    pub clock: ClockFault,
    /// Random outages and disconnects on every link.
    pub outages: Option<OutageSchedule>,
    /// Random power cuts on every receiver.
    pub power_cuts: Option<PowerCuts>,
    /// Interval between status lines.
    pub status_every: Duration,
}

/// Runs until `cancel`.
pub async fn run(options: RunOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let mix = link::parse(&options.profile)?;
    let api = ApiClient::new(&options.controller, &options.admin_token);
    let configs = configs(&api, &options).await?;
    let mut fleet = Fleet::new();
    for ((id, config), profile) in configs.iter().zip(mix.assign(options.receivers)) {
        let profile = match &options.outages {
            Some(o) => profile.with_outages(o.clone()),
            None => profile,
        };
        let spec = SimReceiver {
            config_toml: config.clone(),
            state_dir: options.data_dir.join("state").join(id),
            wav_dir: options.wav_dir.as_ref().map(|d| d.join(id)),
            heartbeat_ms: options.heartbeat_ms,
        };
        let device = SimDevice { link: Some(profile), clock: options.clock, power_cuts: options.power_cuts };
        fleet.spawn_device(spec, device).with_context(|| format!("starting receiver {id}"))?;
    }
    println!("loa-sim: {} receivers against {} ({})", fleet.len(), options.controller, options.profile);
    let mut tick = tokio::time::interval(options.status_every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => println!("{}", status(&fleet, &api).await),
        }
    }
    println!("loa-sim: stopping");
    fleet.shutdown().await;
    Ok(())
}

/// The configs of the first `n` receivers: those saved earlier, then new registrations.
async fn configs(api: &ApiClient, options: &RunOptions) -> anyhow::Result<Vec<(String, String)>> {
    let dir = options.data_dir.join("receivers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut saved: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    saved.sort();
    let mut out = Vec::new();
    for path in saved.iter().take(options.receivers) {
        let text = std::fs::read_to_string(path)?;
        let cfg: loa_receiver::ReceiverConfig =
            toml::from_str(&text).with_context(|| format!("{} is not a receiver config", path.display()))?;
        out.push((cfg.id, text));
    }
    let mut areas = options.areas.clone();
    if out.len() < options.receivers && areas.is_empty() {
        areas.push(api.create_area("loa-sim", "village", None, None).await.context("creating an area")?);
    }
    while out.len() < options.receivers {
        let n = out.len();
        let area = areas[n % areas.len()];
        let (id, config) = api.register_receiver(&format!("loa-sim {n}"), area).await?;
        let path = dir.join(format!("{n:05}-{id}.toml"));
        std::fs::write(&path, &config)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        out.push((id, config));
    }
    Ok(out)
}

/// One status line: running members, bytes over the links, online count at the controller.
async fn status(fleet: &Fleet, api: &ApiClient) -> String {
    let running = (0..fleet.len()).filter(|&i| fleet.is_running(i)).count();
    let (mut down, mut up, mut closes, mut outages) = (0, 0, 0, 0);
    for i in 0..fleet.len() {
        if let Some(s) = fleet.link_stats(i) {
            down += s.down.bytes;
            up += s.up.bytes;
            closes += s.forced_closes;
            outages += s.outages;
        }
    }
    let ids: Vec<&str> = (0..fleet.len()).filter_map(|i| fleet.id(i)).collect();
    let online = match api.get("/receivers").await {
        Ok(Value::Array(list)) => list
            .iter()
            .filter(|r| r["online"] == Value::Bool(true) && r["id"].as_str().is_some_and(|id| ids.contains(&id)))
            .count()
            .to_string(),
        _ => "?".into(),
    };
    format!(
        "running {running}/{}, online {online}, link down {} KiB up {} KiB, outages {outages}, forced closes {closes}",
        fleet.len(),
        down / 1024,
        up / 1024
    )
}
