//! A fleet of real receivers in this process. Each member is the `loa-receiver` library's [`Receiver`] with
//! its own config (as the controller issued it), state directory and sink, run as a tokio task that can be
//! stopped (graceful), killed (a power cut: the task is aborted mid-whatever, the disk stays) and started again
//! with the same disk.
//!
//! A member spawned with a [`SimDevice`] may sit behind its own emulated link: the fleet starts a
//! [`Relay`] on a loopback port for it and points the member's `broker_url` there; the relay outlives kills and
//! restarts of the member, and [`Fleet::relay`] gives its counters and controls (outage, disconnect). The device
//! may also have a wrong clock ([`ClockFault`]) and random power cuts ([`PowerCuts`]). Every member has
//! [`DeviceFaults`] ([`Fleet::faults`]: disk full, speaker line open/short, amplifier fault, kept across restarts)
//! and its air events ([`Fleet::air_events`], or all members' at once with [`Fleet::all_air_events`]). A fleet
//! that [`Fleet::record_plays`] gives its members without a WAV folder a [`DigestSink`] that records a digest
//! of every play's sound.

mod device;
mod digest;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use loa_receiver::amp::SimulatedAmp;
use loa_receiver::clock::{Clock, SimClock, SystemClock};
use loa_receiver::config::ReceiverConfig;
use loa_receiver::{AirEvent, DeviceFaults, Receiver};
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use device::{broker_host_port, ClockFault, ClockFaultError, PowerCuts, SimDevice};
pub use digest::{DigestSink, PlayLog, PlayRecord};

use crate::link::{LinkProfile, LinkStats, Relay, RelayHandle};

/// What goes wrong starting a member.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The config file the controller issued does not parse.
    #[error("receiver config: {0}")]
    Config(#[from] toml::de::Error),
    /// The receiver refused to start (bad config, unusable state directory or sink).
    #[error("receiver: {0}")]
    Receiver(#[from] loa_receiver::error::ReceiverError),
    /// No member with this index.
    #[error("no receiver number {0} in the fleet")]
    NoSuchMember(usize),
    /// The member has no emulated link.
    #[error("receiver number {0} has no emulated link")]
    NoLink(usize),
    /// The config's `broker_url` is not `mqtt://host:port`, so no link can be put in front of it.
    #[error("broker_url {0:?} is not mqtt://host:port")]
    BrokerUrl(String),
    /// No loopback port for the member's link relay.
    #[error("cannot listen for the link relay: {0}")]
    Listen(std::io::Error),
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimReceiver {
    /// The receiver config TOML issued by `POST /api/v1/receivers`.
    pub config_toml: String,
    /// Its disk.
    pub state_dir: PathBuf,
    /// Play into WAV files here (one per play); `None` plays into the null sink.
    pub wav_dir: Option<PathBuf>,
    /// Heartbeat interval instead of the config's (tests use a short one).
    pub heartbeat_ms: Option<u64>,
}

type Running = Option<(CancellationToken, JoinHandle<()>)>;

/// What a member's start needs, shared with its power-cut task.
struct Core {
    spec: SimReceiver,
    id: String,
    clock: Arc<dyn Clock>,
    /// `mqtt://` address of the member's relay, if it has a link.
    broker_url: Option<String>,
    running: Mutex<Running>,
    faults: DeviceFaults,
    index: usize,
    air: broadcast::Sender<AirEvent>,
    fleet_air: broadcast::Sender<(usize, AirEvent)>,
    /// Where its [`DigestSink`] records plays, if the fleet records them.
    play_log: Option<PlayLog>,
}

/// Air events kept for a slow subscriber.
const AIR_EVENTS: usize = 256;

struct Member {
    core: Arc<Core>,
    sim_clock: Option<Arc<SimClock>>,
    profile: Option<LinkProfile>,
    relay: Option<RelayHandle>,
}

/// Receivers running in this process.
pub struct Fleet {
    members: Vec<Member>,
    /// Every member's air events, with its index.
    air: broadcast::Sender<(usize, AirEvent)>,
    /// Power-cut tasks.
    faults: CancellationToken,
    /// Link relays (cancelled after the members stop).
    links: CancellationToken,
    /// Set by [`Fleet::record_plays`].
    play_log: Option<PlayLog>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            members: Vec::new(),
            air: broadcast::channel(4 * AIR_EVENTS).0,
            faults: CancellationToken::new(),
            links: CancellationToken::new(),
            play_log: None,
        }
    }
}

/// Member's power, from [`Fleet::power_switch`].
#[derive(Clone)]
pub struct PowerSwitch {
    core: Arc<Core>,
    token: CancellationToken,
}

impl PowerSwitch {
    /// Cuts the power now (the task is aborted mid-whatever, the disk stays) and gives it back `off` later in
    /// the background.
    pub async fn cut(&self, off: Duration) {
        tracing::info!(receiver = %self.core.id, off_ms = off.as_millis() as u64, "simulated power cut");
        kill(&self.core).await;
        let (core, token) = (self.core.clone(), self.token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(off) => {
                    if let Err(e) = start(&core) {
                        tracing::warn!(receiver = %core.id, error = %e, "simulated receiver did not come back after a power cut");
                    }
                }
            }
        });
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Fleet::default()
    }

    /// Members added from now on that play into the null sink play into a [`DigestSink`] recording into the
    /// returned log instead (same pacing; one record per play).
    pub fn record_plays(&mut self) -> PlayLog {
        self.play_log.get_or_insert_with(PlayLog::new).clone()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s receiver id.
    pub fn id(&self, i: usize) -> Option<&str> {
        self.members.get(i).map(|m| m.core.id.as_str())
    }

    /// Adds and starts a member with the system clock; returns its index.
    pub fn spawn(&mut self, spec: SimReceiver) -> Result<usize, FleetError> {
        self.spawn_with_clock(spec, Arc::new(SystemClock))
    }

    /// Adds and starts a member whose clock is `clock` (e.g. one that is an hour off).
    pub fn spawn_with_clock(&mut self, spec: SimReceiver, clock: Arc<dyn Clock>) -> Result<usize, FleetError> {
        self.add(spec, clock, None, None, None, None)
    }

    /// Adds and starts a member with a device description: its link (a relay is started in front of the broker
    /// named in the config), clock and power cuts. Needs a tokio runtime.
    pub fn spawn_device(&mut self, spec: SimReceiver, device: SimDevice) -> Result<usize, FleetError> {
        let sim_clock = device.clock.clock();
        let (relay, broker_url) = match &device.link {
            Some(profile) => {
                let cfg: ReceiverConfig = toml::from_str(&spec.config_toml)?;
                let upstream =
                    broker_host_port(&cfg.broker_url).ok_or_else(|| FleetError::BrokerUrl(cfg.broker_url.clone()))?;
                let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(FleetError::Listen)?;
                std_listener.set_nonblocking(true).map_err(FleetError::Listen)?;
                let listener = tokio::net::TcpListener::from_std(std_listener).map_err(FleetError::Listen)?;
                let relay = Relay::new(listener, upstream, profile.clone());
                let handle = relay.handle();
                let addr = handle
                    .addr()
                    .ok_or_else(|| FleetError::Listen(std::io::Error::other("relay listener has no address")))?;
                let token = self.links.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay.run(token).await {
                        tracing::warn!(error = %e, "link relay stopped");
                    }
                });
                (Some(handle), Some(format!("mqtt://{addr}")))
            }
            None => (None, None),
        };
        let clock: Arc<dyn Clock> = sim_clock.clone();
        let i = self.add(spec, clock, Some(sim_clock), device.link.clone(), relay, broker_url)?;
        if let Some(cuts) = device.power_cuts {
            let core = self.members[i].core.clone();
            let token = self.faults.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = power_cuts(core, cuts) => {}
                }
            });
        }
        Ok(i)
    }

    fn add(
        &mut self,
        spec: SimReceiver,
        clock: Arc<dyn Clock>,
        sim_clock: Option<Arc<SimClock>>,
        profile: Option<LinkProfile>,
        relay: Option<RelayHandle>,
        broker_url: Option<String>,
    ) -> Result<usize, FleetError> {
        let cfg: ReceiverConfig = toml::from_str(&spec.config_toml)?;
        let core = Arc::new(Core {
            spec,
            id: cfg.id.clone(),
            clock,
            broker_url,
            running: Mutex::new(None),
            faults: DeviceFaults::new(),
            index: self.members.len(),
            air: broadcast::channel(AIR_EVENTS).0,
            fleet_air: self.air.clone(),
            play_log: self.play_log.clone(),
        });
        let started = start(&core);
        if let Err(e) = started {
            if let Some(r) = &relay {
                r.disconnect();
            }
            return Err(e);
        }
        self.members.push(Member { core, sim_clock, profile, relay });
        Ok(self.members.len() - 1)
    }

    fn member(&self, i: usize) -> Result<&Member, FleetError> {
        self.members.get(i).ok_or(FleetError::NoSuchMember(i))
    }

    /// Stops member `i` gracefully (it says goodbye to the broker and flushes its state).
    pub async fn stop(&mut self, i: usize) -> Result<(), FleetError> {
        let running = take(&self.member(i)?.core);
        if let Some((cancel, task)) = running {
            cancel.cancel();
            let _ = task.await;
        }
        Ok(())
    }

    /// Cuts member `i`'s power: its task is aborted wherever it is; its disk stays as it was.
    pub async fn kill(&mut self, i: usize) -> Result<(), FleetError> {
        kill(&self.member(i)?.core).await;
        Ok(())
    }

    /// Starts member `i` again with the same disk (after [`Fleet::stop`] or [`Fleet::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), FleetError> {
        start(&self.member(i)?.core)
    }

    /// Cuts member `i`'s power now and gives it back after `off` (in the background; the fleet must live on).
    pub async fn power_cut(&self, i: usize, off: Duration) -> Result<(), FleetError> {
        self.power_switch(i)?.cut(off).await;
        Ok(())
    }

    /// A handle that cuts member `i`'s power from a task of the caller's (say, when its download is seen on
    /// disk); the power comes back on its own, unless the fleet has shut down.
    pub fn power_switch(&self, i: usize) -> Result<PowerSwitch, FleetError> {
        Ok(PowerSwitch { core: self.member(i)?.core.clone(), token: self.faults.clone() })
    }

    /// Whether member `i` is running (not stopped, killed, or without power).
    pub fn is_running(&self, i: usize) -> bool {
        self.members.get(i).is_some_and(|m| {
            m.core
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|(_, t)| !t.is_finished())
        })
    }

    /// Member `i`'s emulated link: counters, outage, disconnect.
    pub fn relay(&self, i: usize) -> Option<&RelayHandle> {
        self.members.get(i).and_then(|m| m.relay.as_ref())
    }

    /// Member `i`'s link profile.
    pub fn profile(&self, i: usize) -> Option<&LinkProfile> {
        self.members.get(i).and_then(|m| m.profile.as_ref())
    }

    /// Member `i`'s link counters.
    pub fn link_stats(&self, i: usize) -> Option<LinkStats> {
        self.relay(i).map(RelayHandle::stats)
    }

    /// Black-holes member `i`'s link for `duration`.
    pub fn outage(&self, i: usize, duration: Duration) -> Result<(), FleetError> {
        self.member(i)?.relay.as_ref().ok_or(FleetError::NoLink(i))?.outage(duration);
        Ok(())
    }

    /// Closes member `i`'s live connections at once.
    pub fn disconnect(&self, i: usize) -> Result<(), FleetError> {
        self.member(i)?.relay.as_ref().ok_or(FleetError::NoLink(i))?.disconnect();
        Ok(())
    }

    /// Member `i`'s clock, when spawned with [`Fleet::spawn_device`] (move it with `set_offset_ms`).
    pub fn sim_clock(&self, i: usize) -> Option<Arc<SimClock>> {
        self.members.get(i).and_then(|m| m.sim_clock.clone())
    }

    /// Member `i`'s device faults: `set_disk_full`, `set_speaker`, `set_amp_fault` (they stay across restarts).
    pub fn faults(&self, i: usize) -> Option<&DeviceFaults> {
        self.members.get(i).map(|m| &m.core.faults)
    }

    /// Member `i`'s air events (chime, first speech, underruns, end of each play), across restarts.
    pub fn air_events(&self, i: usize) -> Option<broadcast::Receiver<AirEvent>> {
        self.members.get(i).map(|m| m.core.air.subscribe())
    }

    /// Every member's air events with the member's index.
    pub fn all_air_events(&self) -> broadcast::Receiver<(usize, AirEvent)> {
        self.air.subscribe()
    }

    /// Member `i`'s state directory.
    pub fn state_dir(&self, i: usize) -> Option<&std::path::Path> {
        self.members.get(i).map(|m| m.core.spec.state_dir.as_path())
    }

    /// Stops every member, then their links.
    pub async fn shutdown(&mut self) {
        self.faults.cancel();
        for i in 0..self.members.len() {
            let _ = self.stop(i).await;
        }
        self.links.cancel();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.faults.cancel();
        for m in &self.members {
            if let Some((cancel, task)) = take(&m.core) {
                cancel.cancel();
                task.abort();
            }
        }
        self.links.cancel();
    }
}

fn take(core: &Core) -> Running {
    core.running.lock().unwrap_or_else(PoisonError::into_inner).take()
}

async fn kill(core: &Core) {
    if let Some((_, task)) = take(core) {
        task.abort();
        let _ = task.await;
    }
}

/// Starts the member's receiver unless it runs.
fn start(core: &Core) -> Result<(), FleetError> {
    let mut running = core.running.lock().unwrap_or_else(PoisonError::into_inner);
    if running.as_ref().is_some_and(|(_, t)| !t.is_finished()) {
        return Ok(());
    }
    let mut cfg: ReceiverConfig = toml::from_str(&core.spec.config_toml)?;
    cfg.state_dir = core.spec.state_dir.clone();
    cfg.sink = match &core.spec.wav_dir {
        Some(dir) => format!("wav:{}", dir.display()),
        None => "null".to_string(),
    };
    if let Some(ms) = core.spec.heartbeat_ms {
        cfg.heartbeat_ms = ms;
    }
    if let Some(url) = &core.broker_url {
        cfg.broker_url = url.clone();
    }
    let receiver = match &core.play_log {
        Some(log) if core.spec.wav_dir.is_none() => {
            let sink = Box::new(DigestSink::new(core.index, log.clone()));
            Receiver::new(cfg, sink, Box::new(SimulatedAmp::new()), core.clock.clone())?
        }
        _ => Receiver::from_config(cfg, core.clock.clone())?,
    };
    let receiver = receiver.with_faults(core.faults.clone());
    let mut air = receiver.air_events();
    let (to_member, to_fleet, index) = (core.air.clone(), core.fleet_air.clone(), core.index);
    tokio::spawn(async move {
        loop {
            match air.recv().await {
                Ok(event) => {
                    let _ = to_fleet.send((index, event.clone()));
                    let _ = to_member.send(event);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let id = core.id.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = receiver.run(token).await {
            tracing::warn!(receiver = %id, error = %e, "simulated receiver stopped");
        }
    });
    *running = Some((cancel, task));
    Ok(())
}

/// Cuts the power at random moments and gives it back after a random delay, for ever.
async fn power_cuts(core: Arc<Core>, cuts: PowerCuts) {
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mean = cuts.mean_interval_ms.max(1) as f64;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        tokio::time::sleep(Duration::from_millis((-u.ln() * mean).min(86_400_000.0) as u64)).await;
        let off = rng.random_range(cuts.min_off_ms..=cuts.max_off_ms.max(cuts.min_off_ms));
        tracing::info!(receiver = %core.id, off_ms = off, "simulated power cut");
        kill(&core).await;
        tokio::time::sleep(Duration::from_millis(off)).await;
        if let Err(e) = start(&core) {
            tracing::warn!(receiver = %core.id, error = %e, "simulated receiver did not come back after a power cut");
        }
    }
}
