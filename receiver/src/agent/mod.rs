//! The receiver agent: [`Receiver`] ties the MQTT [`link`], the [`store`]d plan and manifests, the chunk
//! [`downloader`] (sized by the link [`estimator`]), the play [`scheduler`], the reports [`outbox`] and the
//! [`health`] heartbeat to the player.
//!
//! One task owns all the state and reacts to three things: a message or link change from the link task, a
//! tick every [`TICK_MS`] (scheduling, chunk requests, heartbeat, report resends, player events), and the
//! cancel token. Scheduling needs no broker: a receiver that boots without a link plays the plan it stored.
//! Everything received is verified first (signature, expiry, addressee, replay); a refused message is logged
//! and counted in the heartbeat's `rej`, never fatal. Time comes from the [`Clock`], corrected by the
//! controller offset the [`OffsetTracker`] measures ([`time`]; see [`crate::clock`]).
//!
//! Chunk requests go out on the tick and also at once when they can: after a plan or manifest changes what is
//! wanted, and after every frame (so the window refills as it drains). An emergency ([`emergency`]) jumps the
//! download queue, starts downloading as soon as its manifest arrives (a fresh emergency manifest is fetched
//! even before the plan naming it), keeps the amplifier warm, and goes on air from the partial file as soon as
//! what is held can play through at the measured rate ([`plays`]).
//!
//! Reports ([`reports`]): player events become `started`, `finished`, `preempted` (`stop_now` too, without
//! `by`), `missed` (`sink_error` when the audio failed, `verify_failed` when a streamed download failed its
//! hash, `cancelled` when a newer plan dropped a play handed over but not yet started; a play dropped while on
//! air is stopped and reported `preempted`). A preempted play is not resumed or replayed: a half-heard bulletin
//! restarted later confuses more than it helps, and the controller sees the `preempted` report and may plan it
//! again. Commands and report acks are in [`commands`]; device faults are described in [`crate::faults`].

mod commands;
mod downloader;
mod emergency;
mod estimator;
mod health;
mod keyring;
mod link;
mod outbox;
mod plays;
mod reports;
mod scheduler;
mod store;
#[cfg(test)]
pub(crate) mod testutil;
mod time;

use std::collections::HashMap;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use loa_protocol::{
    BulletinId, Manifest, Message, Plan, ProtocolError, Rejections, Signed, Tier, Timestamp, Topic, VerifyOptions,
};
use rumqttc::{AsyncClient, QoS};
use tokio_util::sync::CancellationToken;

use crate::amp::{Amplifier, SimulatedAmp};
use crate::cache::{Cache, CacheError};
use crate::clock::{Clock, OffsetTracker};
use crate::config::{Checked, ReceiverConfig};
use crate::error::ReceiverError;
use crate::faults::DeviceFaults;
use crate::player::{AirEvent, Player, PlayerConfig, PlayerEvent, PlayerHandle};
use crate::sink::{self, Sink};

use downloader::{Downloader, FrameError, FrameOutcome, Wanted};
use health::FaultSlot;
use link::{LinkConfig, LinkEvent};
use outbox::Outbox;
use reports::Handed;
use store::Store;

/// How often the agent looks at the schedule, the downloads and the timers.
pub const TICK_MS: u64 = 200;
/// Extra time, beyond the amplifier pre-roll, by which a play is handed to the player ahead of its start.
pub const HANDOVER_MS: u64 = 3000;
/// Until the controller's clock has been sampled, plays are not reported missed for this long after start: a
/// receiver whose clock is far off would otherwise report a whole plan missed before the first sample arrives.
pub const CLOCK_GRACE_MS: u64 = 60_000;
/// An emergency manifest signed this recently (and after the plan held) is downloaded before a plan names it.
pub const FRESH_EMERGENCY_MS: i64 = 120_000;
/// How often the download order is recomputed even without news.
const REFRESH_DOWNLOADS: Duration = Duration::from_secs(5);

/// A receiver, ready to run. See the crate and module documentation.
pub struct Receiver {
    cfg: ReceiverConfig,
    checked: Checked,
    clock: Arc<dyn Clock>,
    player: PlayerHandle,
    player_events: crossbeam_channel::Receiver<PlayerEvent>,
    amp_state: Arc<AtomicU8>,
    cache: Cache,
    store: Store,
    outbox: Outbox,
    faults: DeviceFaults,
    fault_slot: FaultSlot,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("id", &self.checked.id).field("state_dir", &self.cfg.state_dir).finish()
    }
}

impl Receiver {
    /// Validates `cfg`, opens the state folder (plan, manifests, outbox, cache) and starts the player on `sink`
    /// and `amp`. Nothing touches the network until [`Receiver::run`].
    pub fn new(
        cfg: ReceiverConfig,
        sink: Box<dyn Sink>,
        amp: Box<dyn Amplifier>,
        clock: Arc<dyn Clock>,
    ) -> Result<Receiver, ReceiverError> {
        let mut checked = cfg.validate()?;
        let dir = &cfg.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| ReceiverError::State { path: dir.clone(), source })?;
        keyring::load(dir, &mut checked.keys)?;
        let now = clock.now();
        let store = Store::open(dir, &checked.keys, &checked.id, now)?;
        let outbox = Outbox::open(&dir.join("outbox.json"), now)?;
        let cache = Cache::open(dir.join("cache"), cfg.cache_max_bytes)?;
        let faults = DeviceFaults::new();
        let fault_slot: FaultSlot = Arc::new(Mutex::new(faults.clone()));
        let (amp, amp_state) = health::TrackedAmp::new(amp, Arc::clone(&fault_slot));
        let player_cfg = PlayerConfig {
            preroll_ms: cfg.preroll_ms,
            emergency_preroll_ms: cfg.emergency_preroll_ms,
            hold_ms: cfg.hold_ms,
            ..PlayerConfig::default()
        };
        let player = Player::spawn(sink, Box::new(amp), player_cfg)?;
        player.set_volume(f32::from(cfg.volume_percent) / 100.0)?;
        let player_events = player.events();
        Ok(Receiver { cfg, checked, clock, player, player_events, amp_state, cache, store, outbox, faults, fault_slot })
    }

    /// Like [`Receiver::new`], with the sink built from `cfg.sink` and a simulated amplifier (no relay).
    pub fn from_config(cfg: ReceiverConfig, clock: Arc<dyn Clock>) -> Result<Receiver, ReceiverError> {
        let sink = sink::from_spec(&cfg.sink)?;
        Receiver::new(cfg, sink, Box::new(SimulatedAmp::new()), clock)
    }

    /// Makes this receiver obey `faults` (keep a clone to set and clear them while it runs; see
    /// [`crate::faults`]). Call before [`Receiver::run`].
    pub fn with_faults(mut self, faults: DeviceFaults) -> Self {
        self.cache.set_faults(faults.clone());
        *self.fault_slot.lock().unwrap_or_else(PoisonError::into_inner) = faults.clone();
        self.faults = faults;
        self
    }

    /// What goes on air, as it goes (chime, first speech, end of each play); see [`AirEvent`]. Subscribe
    /// before [`Receiver::run`] to see every event.
    pub fn air_events(&self) -> tokio::sync::broadcast::Receiver<AirEvent> {
        self.player.air_events()
    }

    /// Runs until `cancel` (returns `Ok`), or until the controller asks for a restart
    /// ([`ReceiverError::RestartRequested`]). Link failures are retried for ever; they are not errors.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ReceiverError> {
        let link_cancel = cancel.child_token();
        let link_cfg = LinkConfig {
            id: self.checked.id.to_string(),
            password: self.cfg.password.clone(),
            host: self.checked.host.clone(),
            port: self.checked.port,
            keepalive: Duration::from_secs(self.cfg.keepalive_s),
            status_topic: self.checked.topics.status(&self.checked.id),
            subscription: self.checked.topics.receiver_subscription(&self.checked.id),
            tls: self.checked.tls.clone(),
        };
        let (client, mut link_rx, link_task) = link::spawn(link_cfg, Arc::clone(&self.clock), link_cancel.clone());
        let mut agent = Agent::new(self, client);
        if let Err(e) = agent.recover_interrupted() {
            tracing::error!(error = %e, "cannot recover the plays a power cut interrupted");
        }
        agent.refresh_downloads();
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let step = tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                event = link_rx.recv() => match event {
                    Some(event) => agent.on_link(event),
                    None => break Ok(()),
                },
                _ = tick.tick() => agent.on_tick(),
            };
            match step {
                Ok(()) => {}
                Err(ReceiverError::RestartRequested) => break Err(ReceiverError::RestartRequested),
                Err(e) => tracing::error!(error = %e, "receiver step failed; carrying on"),
            }
        };
        link_cancel.cancel();
        if let Err(e) = link_task.await {
            tracing::error!(error = %e, "the link task failed");
        }
        tracing::info!(result = ?result.as_ref().err().map(|e| e.to_string()), "receiver stopped");
        result
    }
}

/// The running state. See the module documentation.
struct Agent {
    rx: Receiver,
    client: AsyncClient,
    connected: bool,
    tracker: OffsetTracker,
    rej: Rejections,
    downloader: Downloader,
    handed: HashMap<String, Handed>,
    /// When the plan held was signed (this run).
    plan_issued: Option<Timestamp>,
    /// Emergency manifests received live, with when they were signed.
    speculative: HashMap<BulletinId, Timestamp>,
    /// Messages refused for an unknown key (topic, payload, retain), retried after a key announcement.
    parked: Vec<(String, Vec<u8>, bool)>,
    started_at: Instant,
    /// The session of the last `online` status sent, and when it was sent.
    online: Option<(u64, Instant)>,
    /// The local clock and the monotonic clock at the last reading, to see the local clock being set.
    wall: time::StepWatch,
    next_health: Instant,
    next_resend: Instant,
    next_refresh: Instant,
}

impl Agent {
    fn new(rx: Receiver, client: AsyncClient) -> Agent {
        let downloader =
            Downloader::new(rx.cache.clone(), rx.cfg.window_chunks, Duration::from_millis(rx.cfg.chunk_timeout_ms));
        let now = Instant::now();
        let tracker = OffsetTracker::for_keepalive(Duration::from_secs(rx.cfg.keepalive_s));
        let wall = time::StepWatch::new(rx.clock.now(), now);
        Agent {
            rx,
            client,
            connected: false,
            tracker,
            rej: Rejections::default(),
            downloader,
            handed: HashMap::new(),
            plan_issued: None,
            speculative: HashMap::new(),
            parked: Vec::new(),
            started_at: now,
            online: None,
            wall,
            next_health: now,
            next_resend: now,
            next_refresh: now + REFRESH_DOWNLOADS,
        }
    }

    fn reject(&mut self, what: &'static str, error: &ProtocolError) {
        self.rej.record(error);
        match error {
            ProtocolError::Replay { held, got } if held == got => tracing::debug!(what, seq = got, "already held"),
            _ => tracing::warn!(what, error = %error, "message refused"),
        }
    }

    fn publish(&self, topic: String, qos: QoS, payload: Vec<u8>) {
        if let Err(e) = self.client.try_publish(topic.as_str(), qos, false, payload) {
            tracing::warn!(topic, error = %e, "cannot queue a message; it will be sent again later");
        }
    }

    fn on_link(&mut self, event: LinkEvent) -> Result<(), ReceiverError> {
        match event {
            LinkEvent::Connected { session, online_sent } => {
                self.connected = true;
                self.online = Some((session, online_sent));
                self.downloader.clear_in_flight();
                self.send_reports();
                self.next_health = Instant::now();
                self.pump();
                Ok(())
            }
            LinkEvent::Disconnected => {
                self.connected = false;
                self.downloader.clear_in_flight();
                Ok(())
            }
            LinkEvent::Message { topic, payload, retain } => self.on_message(&topic, &payload, retain),
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) -> Result<(), ReceiverError> {
        let parsed = match self.rx.checked.topics.parse(topic) {
            Ok(t) if *t.receiver() == self.rx.checked.id => t,
            Ok(_) | Err(_) => {
                tracing::debug!(topic, "message on a topic not for this receiver; ignored");
                return Ok(());
            }
        };
        let unknown_keys = self.rej.unknown_key;
        let result = match parsed {
            Topic::Plan(_) => self.on_plan(payload, retain),
            Topic::Manifest(_, bulletin) => self.on_manifest(&bulletin, payload),
            Topic::Chunks(_) => self.on_frame(payload),
            Topic::Command(_) => self.on_command(payload),
            Topic::ReportAck(_) => self.on_ack(payload),
            Topic::Key(_, kid) => self.on_key(&kid, payload),
            _ => Ok(()),
        };
        if self.rej.unknown_key != unknown_keys {
            self.park(topic, payload, retain);
        }
        result
    }

    fn on_plan(&mut self, payload: &[u8], retain: bool) -> Result<(), ReceiverError> {
        if payload.is_empty() {
            tracing::info!("retained plan cleared; keeping the plan held");
            return Ok(());
        }
        let local = self.local_now();
        let opts =
            VerifyOptions { now: self.now(), receiver: Some(&self.rx.checked.id), held_seq: self.rx.store.plan_seq() };
        let opened =
            Signed::<Plan>::from_json(payload).and_then(|env| Ok((env.verify(&self.rx.checked.keys, &opts)?, env)));
        let (plan, envelope) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                self.reject("plan", &e);
                return Ok(());
            }
        };
        if !retain {
            self.tracker.sample(local, envelope.issued_at);
            if let Some((_, sent)) = self.online.filter(|(s, _)| plan.answers_session == Some(*s)) {
                // The controller signed this plan after our `online` arrived: a round trip.
                self.answered(local, sent, envelope.issued_at);
            }
        }
        // A play handed over but no longer planned is stopped, even on air (that is how an emergency is
        // cancelled): the player reports it stopped, which becomes `preempted` or missed `cancelled`.
        for (id, handed) in &self.handed {
            if plan.play(&handed.play).is_none() {
                tracing::info!(play = %id, on_air = handed.started, "play no longer planned; stopping it");
                let _ = self.rx.player.cancel(id);
            }
        }
        tracing::info!(seq = plan.seq, plays = plan.plays.len(), "new plan");
        self.plan_issued = Some(envelope.issued_at);
        self.rx.store.accept_plan(payload, plan)?;
        self.refresh_downloads();
        self.pump();
        self.schedule()?;
        self.evict();
        Ok(())
    }

    /// Frees cache space, keeping every file the plan still needs.
    fn evict(&self) {
        let Some(plan) = self.rx.store.plan() else { return };
        let pinned =
            plan.bulletins().into_iter().filter_map(|b| self.rx.store.manifest(b)).map(|m| m.sha256.to_hex()).collect();
        if let Err(e) = self.rx.cache.evict(&pinned) {
            tracing::error!(error = %e, "cannot evict from the cache");
        }
    }

    fn on_manifest(&mut self, bulletin: &loa_protocol::BulletinId, payload: &[u8]) -> Result<(), ReceiverError> {
        if payload.is_empty() {
            tracing::info!(%bulletin, "manifest withdrawn");
            self.rx.store.remove_manifest(bulletin)?;
            self.refresh_downloads();
            return Ok(());
        }
        let opts = VerifyOptions { now: self.now(), receiver: None, held_seq: None };
        let opened =
            Signed::<Manifest>::from_json(payload).and_then(|env| Ok((env.verify(&self.rx.checked.keys, &opts)?, env)));
        let manifest = match opened {
            Ok((m, env)) if m.bulletin == *bulletin => {
                if m.tier == Tier::Emergency {
                    self.speculative.insert(m.bulletin.clone(), env.issued_at);
                }
                m
            }
            Ok((m, _)) => {
                let why = format!("manifest of {} on the topic of {bulletin}", m.bulletin);
                self.reject("manifest", &ProtocolError::Invalid { what: "manifest", why });
                return Ok(());
            }
            Err(e) => {
                self.reject("manifest", &e);
                return Ok(());
            }
        };
        if self.rx.store.manifest(bulletin) == Some(&manifest) {
            return Ok(());
        }
        tracing::info!(%bulletin, size = manifest.size, chunks = manifest.chunk_count(), "new manifest");
        self.rx.store.accept_manifest(payload, manifest)?;
        self.refresh_downloads();
        self.pump();
        self.schedule()
    }

    fn on_frame(&mut self, payload: &[u8]) -> Result<(), ReceiverError> {
        let urgent = self.downloader.urgent();
        match self.downloader.on_frame(payload, Instant::now()) {
            Ok(FrameOutcome::Completed(bulletin)) => {
                tracing::info!(%bulletin, "bulletin ready");
                self.refresh_downloads();
            }
            Ok(FrameOutcome::Stored | FrameOutcome::Ignored) => {}
            Err(FrameError::Protocol(e)) => self.reject("chunk", &e),
            Err(FrameError::Cache(CacheError::HashMismatch { sha, actual })) => {
                self.rej.hash_mismatch = self.rej.hash_mismatch.saturating_add(1);
                tracing::warn!(sha, actual, "downloaded file does not match its manifest; fetching it again");
            }
            Err(FrameError::Cache(e @ CacheError::DiskFull { .. })) => {
                tracing::error!(error = %e, "disk full: downloads paused; freeing space");
                self.evict();
            }
            Err(FrameError::Cache(e)) => tracing::error!(error = %e, "cannot store a chunk"),
        }
        self.pump();
        if urgent {
            // An emergency may now hold enough to go on air.
            self.schedule()?;
        }
        Ok(())
    }

    /// Sends the chunk requests due now (if connected).
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        let topic = self.rx.checked.topics.chunk_request(&self.rx.checked.id);
        for request in self.downloader.requests(Instant::now()) {
            match request.to_json() {
                Ok(bytes) => self.publish(topic.clone(), QoS::AtMostOnce, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a chunk request"),
            }
        }
    }

    /// Recomputes what to download: the plan's bulletins in order, emergencies first and urgent, and before
    /// them any fresh emergency manifest that no plan names yet.
    fn refresh_downloads(&mut self) {
        self.next_refresh = Instant::now() + REFRESH_DOWNLOADS;
        let now = self.now();
        let store = &self.rx.store;
        let order = store.plan().map(|plan| scheduler::download_order(plan, now)).unwrap_or_default();
        let after = self.plan_issued.unwrap_or(Timestamp::EPOCH);
        self.speculative.retain(|b, signed| {
            *signed > after && now.ms_since(*signed) <= FRESH_EMERGENCY_MS && store.manifest(b).is_some()
        });
        let fresh = self.speculative.keys().filter(|b| !order.iter().any(|(o, _)| o == *b)).map(|b| (b, true));
        let wanted = fresh
            .chain(order.iter().map(|(b, urgent)| (b, *urgent)))
            .filter_map(|(b, urgent)| Some((store.manifest(b)?, urgent)))
            .filter(|(m, _)| m.expires_at > now)
            .map(|(m, urgent)| Wanted { manifest: m.clone(), urgent })
            .collect();
        self.downloader.set_wanted(wanted);
        // Chunks that arrived before the manifest that starts their download.
        for frame in self.downloader.take_early(Instant::now()) {
            if let Err(e) = self.on_frame(&frame) {
                tracing::warn!(error = %e, "a chunk that came before its manifest");
            }
        }
    }

    fn on_tick(&mut self) -> Result<(), ReceiverError> {
        while let Ok(event) = self.rx.player_events.try_recv() {
            self.on_player_event(event)?;
        }
        self.check_faults();
        self.schedule()?;
        let now = Instant::now();
        if now >= self.next_refresh {
            self.refresh_downloads();
        }
        if self.connected {
            self.pump();
            if now >= self.next_resend && self.rx.outbox.len() > 0 {
                self.send_reports();
            }
            if now >= self.next_health {
                self.send_health();
            }
        }
        Ok(())
    }
}
