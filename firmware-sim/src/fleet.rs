//! A fleet of real receivers in this process. Each member is the `loa-receiver` library's [`Receiver`] with
//! its own config (as the controller issued it), state directory and sink, run as a tokio task that can be
//! stopped (graceful), killed (a power cut: the task is aborted mid-whatever, the disk stays) and started again
//! with the same disk.

use std::path::PathBuf;
use std::sync::Arc;

use loa_receiver::clock::{Clock, SystemClock};
use loa_receiver::config::ReceiverConfig;
use loa_receiver::Receiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

struct Member {
    spec: SimReceiver,
    id: String,
    clock: Arc<dyn Clock>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

/// Receivers running in this process.
#[derive(Default)]
pub struct Fleet {
    members: Vec<Member>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Fleet::default()
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
        self.members.get(i).map(|m| m.id.as_str())
    }

    /// Adds and starts a member with the system clock; returns its index.
    pub fn spawn(&mut self, spec: SimReceiver) -> Result<usize, FleetError> {
        self.spawn_with_clock(spec, Arc::new(SystemClock))
    }

    /// Adds and starts a member whose clock is `clock` (e.g. one that is an hour off).
    pub fn spawn_with_clock(&mut self, spec: SimReceiver, clock: Arc<dyn Clock>) -> Result<usize, FleetError> {
        let cfg: ReceiverConfig = toml::from_str(&spec.config_toml)?;
        let mut member = Member { spec, id: cfg.id.clone(), clock, running: None };
        start(&mut member)?;
        self.members.push(member);
        Ok(self.members.len() - 1)
    }

    /// Stops member `i` gracefully (it says goodbye to the broker and flushes its state).
    pub async fn stop(&mut self, i: usize) -> Result<(), FleetError> {
        let member = self.members.get_mut(i).ok_or(FleetError::NoSuchMember(i))?;
        if let Some((cancel, task)) = member.running.take() {
            cancel.cancel();
            let _ = task.await;
        }
        Ok(())
    }

    /// Cuts member `i`'s power: its task is aborted wherever it is; its disk stays as it was.
    pub async fn kill(&mut self, i: usize) -> Result<(), FleetError> {
        let member = self.members.get_mut(i).ok_or(FleetError::NoSuchMember(i))?;
        if let Some((_, task)) = member.running.take() {
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }

    /// Starts member `i` again with the same disk (after [`Fleet::stop`] or [`Fleet::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), FleetError> {
        let member = self.members.get_mut(i).ok_or(FleetError::NoSuchMember(i))?;
        if member.running.is_none() {
            start(member)?;
        }
        Ok(())
    }

    /// Stops every member.
    pub async fn shutdown(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.stop(i).await;
        }
    }
}

fn start(member: &mut Member) -> Result<(), FleetError> {
    let mut cfg: ReceiverConfig = toml::from_str(&member.spec.config_toml)?;
    cfg.state_dir = member.spec.state_dir.clone();
    cfg.sink = match &member.spec.wav_dir {
        Some(dir) => format!("wav:{}", dir.display()),
        None => "null".to_string(),
    };
    if let Some(ms) = member.spec.heartbeat_ms {
        cfg.heartbeat_ms = ms;
    }
    let receiver = Receiver::from_config(cfg, member.clock.clone())?;
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let id = member.id.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = receiver.run(token).await {
            tracing::warn!(receiver = %id, error = %e, "simulated receiver stopped");
        }
    });
    member.running = Some((cancel, task));
    Ok(())
}
