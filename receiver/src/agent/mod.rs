//! The receiver agent: [`Receiver`] ties the MQTT [`link`], the [`store`]d plan and manifests, the chunk
//! [`downloader`], the play [`scheduler`], the reports [`outbox`] and the [`health`] heartbeat to the player.
//!
//! One task owns all the state and reacts to three things: a message or link change from the link task, a
//! tick every [`TICK_MS`] (scheduling, chunk requests, heartbeat, report resends, player events), and the
//! cancel token. Scheduling needs no broker: a receiver that boots without a link plays the plan it stored.
//! Everything received is verified first (signature, expiry, addressee, replay); a refused message is logged
//! and counted in the heartbeat's `rej`, never fatal. Time comes from the [`Clock`], corrected by the
//! controller offset the [`OffsetTracker`] measures (see [`crate::clock`]).
//!
//! Reports: player events become `started`, `finished`, `preempted` (`stop_now` too, without `by`), `missed`
//! (`sink_error` when the audio failed, `cancelled` when a newer plan dropped a play handed over but not yet
//! started). A preempted play is not resumed or replayed: a half-heard bulletin restarted later confuses more
//! than it helps, and the controller sees the `preempted` report and may plan it again.

mod downloader;
mod health;
mod link;
mod outbox;
mod scheduler;
mod store;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use loa_protocol::{
    Action, Command, Manifest, Message, MissReason, Plan, PlannedPlay, PlayEvent, PlayId, ProtocolError, Rejections,
    ReportAck, Signed, Tier, Timestamp, Topic, VerifyOptions,
};
use rumqttc::{AsyncClient, QoS};
use tokio_util::sync::CancellationToken;

use crate::amp::{Amplifier, SimulatedAmp};
use crate::cache::{Cache, CacheError};
use crate::clock::{Clock, OffsetTracker};
use crate::config::{Checked, ReceiverConfig};
use crate::error::ReceiverError;
use crate::player::{self, PlayRequest, Player, PlayerConfig, PlayerEvent, PlayerHandle, Source};
use crate::sink::{self, Sink};

use downloader::{Downloader, FrameError, FrameOutcome};
use link::{LinkConfig, LinkEvent};
use outbox::Outbox;
use scheduler::{Action as Due, Readiness};
use store::Store;

/// How often the agent looks at the schedule, the downloads and the timers.
pub const TICK_MS: u64 = 200;
/// Extra time, beyond the amplifier pre-roll, by which a play is handed to the player ahead of its start.
pub const HANDOVER_MS: u64 = 3000;
/// Until the controller's clock has been sampled, plays are not reported missed for this long after start: a
/// receiver whose clock is far off would otherwise report a whole plan missed before the first sample arrives.
pub const CLOCK_GRACE_MS: u64 = 60_000;
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
        let checked = cfg.validate()?;
        let dir = &cfg.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| ReceiverError::State { path: dir.clone(), source })?;
        let now = clock.now();
        let store = Store::open(dir, &checked.keys, &checked.id, now)?;
        let outbox = Outbox::open(&dir.join("outbox.json"), now)?;
        let cache = Cache::open(dir.join("cache"), cfg.cache_max_bytes)?;
        let (amp, amp_state) = health::TrackedAmp::new(amp);
        let player_cfg = PlayerConfig { preroll_ms: cfg.preroll_ms, hold_ms: cfg.hold_ms, ..PlayerConfig::default() };
        let player = Player::spawn(sink, Box::new(amp), player_cfg)?;
        player.set_volume(f32::from(cfg.volume_percent) / 100.0)?;
        let player_events = player.events();
        Ok(Receiver { cfg, checked, clock, player, player_events, amp_state, cache, store, outbox })
    }

    /// Like [`Receiver::new`], with the sink built from `cfg.sink` and a simulated amplifier (no relay).
    pub fn from_config(cfg: ReceiverConfig, clock: Arc<dyn Clock>) -> Result<Receiver, ReceiverError> {
        let sink = sink::from_spec(&cfg.sink)?;
        Receiver::new(cfg, sink, Box::new(SimulatedAmp::new()), clock)
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
        };
        let (client, mut link_rx, link_task) = link::spawn(link_cfg, Arc::clone(&self.clock), link_cancel.clone());
        let mut agent = Agent::new(self, client);
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

/// A scheduler decision, owned (so the store can be updated while acting on it).
enum Todo {
    Play(PlannedPlay, Vec<PathBuf>, u64),
    Miss(PlannedPlay, MissReason),
}

#[derive(Debug)]
struct Handed {
    play: PlayId,
    started: bool,
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
    started_at: Instant,
    next_health: Instant,
    next_resend: Instant,
    next_refresh: Instant,
}

fn tier(t: Tier) -> player::Tier {
    match t {
        Tier::Normal => player::Tier::Normal,
        Tier::Priority => player::Tier::Priority,
        Tier::Emergency => player::Tier::Emergency,
    }
}

impl Agent {
    fn new(rx: Receiver, client: AsyncClient) -> Agent {
        let downloader =
            Downloader::new(rx.cache.clone(), rx.cfg.window_chunks, Duration::from_millis(rx.cfg.chunk_timeout_ms));
        let now = Instant::now();
        Agent {
            rx,
            client,
            connected: false,
            tracker: OffsetTracker::new(),
            rej: Rejections::default(),
            downloader,
            handed: HashMap::new(),
            started_at: now,
            next_health: now,
            next_resend: now,
            next_refresh: now + REFRESH_DOWNLOADS,
        }
    }

    /// The controller's time, as well as this receiver knows it.
    fn now(&self) -> Timestamp {
        self.tracker.corrected(self.rx.clock.now())
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
            LinkEvent::Connected => {
                self.connected = true;
                self.downloader.clear_in_flight();
                self.send_reports();
                self.next_health = Instant::now();
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
        match parsed {
            Topic::Plan(_) => self.on_plan(payload, retain),
            Topic::Manifest(_, bulletin) => self.on_manifest(&bulletin, payload),
            Topic::Chunks(_) => {
                self.on_frame(payload);
                Ok(())
            }
            Topic::Command(_) => self.on_command(payload),
            Topic::ReportAck(_) => self.on_ack(payload),
            _ => Ok(()),
        }
    }

    fn on_plan(&mut self, payload: &[u8], retain: bool) -> Result<(), ReceiverError> {
        if payload.is_empty() {
            tracing::info!("retained plan cleared; keeping the plan held");
            return Ok(());
        }
        let local = self.rx.clock.now();
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
        }
        for (id, handed) in &self.handed {
            if !handed.started && plan.play(&handed.play).is_none() {
                tracing::info!(play = %id, "play no longer planned; cancelling it");
                let _ = self.rx.player.cancel(id);
            }
        }
        tracing::info!(seq = plan.seq, plays = plan.plays.len(), "new plan");
        self.rx.store.accept_plan(payload, plan)?;
        self.refresh_downloads();
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
        let manifest = match Signed::<Manifest>::open(payload, &self.rx.checked.keys, &opts) {
            Ok(m) if m.bulletin == *bulletin => m,
            Ok(m) => {
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
        Ok(())
    }

    fn on_frame(&mut self, payload: &[u8]) {
        match self.downloader.on_frame(payload) {
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
            Err(FrameError::Cache(e)) => tracing::error!(error = %e, "cannot store a chunk"),
        }
    }

    fn on_command(&mut self, payload: &[u8]) -> Result<(), ReceiverError> {
        let local = self.rx.clock.now();
        let opts = VerifyOptions {
            now: self.now(),
            receiver: Some(&self.rx.checked.id),
            held_seq: self.rx.store.command_seq(),
        };
        let opened =
            Signed::<Command>::from_json(payload).and_then(|env| Ok((env.verify(&self.rx.checked.keys, &opts)?, env)));
        let (command, envelope) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                self.reject("command", &e);
                return Ok(());
            }
        };
        self.tracker.sample(local, envelope.issued_at);
        self.rx.store.accept_command_seq(command.seq)?;
        tracing::info!(seq = command.seq, action = ?command.action, "command");
        match command.action {
            Action::SetVolume { volume } => self.rx.player.set_volume(f32::from(volume) / 100.0)?,
            Action::StopNow => self.rx.player.stop()?,
            Action::TestTone { seconds } => {
                self.rx.player.test_tone(Duration::from_secs(u64::from(seconds)))?;
            }
            Action::Resync => self.resync(),
            Action::Restart => return Err(ReceiverError::RestartRequested),
        }
        Ok(())
    }

    /// Re-checks the cache, forgets the clock samples and requests in flight, and subscribes again so the
    /// broker re-sends the retained plan and manifests; then reports and the heartbeat go out at once.
    fn resync(&mut self) {
        for m in self.rx.store.manifests() {
            if let Err(e) = self.rx.cache.verify(&m.sha256.to_hex()) {
                tracing::error!(bulletin = %m.bulletin, error = %e, "cannot check a cached file");
            }
        }
        self.tracker.clear();
        self.downloader.clear_in_flight();
        self.refresh_downloads();
        let subscription = self.rx.checked.topics.receiver_subscription(&self.rx.checked.id);
        if let Err(e) = self.client.try_subscribe(subscription, QoS::AtLeastOnce) {
            tracing::warn!(error = %e, "cannot queue the subscription");
        }
        self.send_reports();
        self.next_health = Instant::now();
    }

    fn on_ack(&mut self, payload: &[u8]) -> Result<(), ReceiverError> {
        let local = self.rx.clock.now();
        let ack = match ReportAck::from_json(payload) {
            Ok(ack) => ack,
            Err(e) => {
                self.reject("report ack", &e);
                return Ok(());
            }
        };
        if let Some(now) = ack.now {
            self.tracker.sample(local, now);
        }
        let removed = self.rx.outbox.ack(&ack.ids)?;
        tracing::debug!(removed, left = self.rx.outbox.len(), "reports acknowledged");
        Ok(())
    }

    fn send_reports(&mut self) {
        if !self.connected {
            return;
        }
        let topic = self.rx.checked.topics.reports(&self.rx.checked.id);
        for batch in self.rx.outbox.batches() {
            match batch.to_json() {
                Ok(bytes) => self.publish(topic.clone(), QoS::AtLeastOnce, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a report batch"),
            }
        }
        self.next_resend = Instant::now() + Duration::from_millis(self.rx.cfg.report_resend_ms);
    }

    fn report(&mut self, play: PlayId, at: Timestamp, event: PlayEvent) -> Result<(), ReceiverError> {
        tracing::info!(%play, %at, ?event, "play report");
        self.rx.outbox.push(play, at, event)?;
        self.send_reports();
        Ok(())
    }

    /// The receiver-clock time of a player event stamped on the system clock.
    fn event_time(&self, at: SystemTime) -> Timestamp {
        let ago = SystemTime::now().duration_since(at).unwrap_or_default();
        self.rx.clock.now().saturating_add_ms(-i64::try_from(ago.as_millis()).unwrap_or(0))
    }

    fn on_player_event(&mut self, event: PlayerEvent) -> Result<(), ReceiverError> {
        match event {
            PlayerEvent::Started { play_id, at } => {
                let at = self.event_time(at);
                if let Some(h) = self.handed.get_mut(&play_id) {
                    h.started = true;
                    let play = h.play.clone();
                    self.report(play, at, PlayEvent::Started)?;
                }
            }
            PlayerEvent::Finished { play_id, at } => {
                let at = self.event_time(at);
                if let Some(h) = self.handed.remove(&play_id) {
                    self.report(h.play, at, PlayEvent::Finished)?;
                }
            }
            PlayerEvent::Preempted { play_id, by, at } => {
                let at = self.event_time(at);
                if let Some(h) = self.handed.remove(&play_id) {
                    self.report(h.play, at, PlayEvent::Preempted { by: PlayId::new(by).ok() })?;
                }
            }
            PlayerEvent::Stopped { play_id, at } => {
                let at = self.event_time(at);
                if let Some(h) = self.handed.remove(&play_id) {
                    let event = if h.started {
                        PlayEvent::Preempted { by: None }
                    } else {
                        PlayEvent::Missed { reason: MissReason::Cancelled }
                    };
                    self.report(h.play, at, event)?;
                }
            }
            PlayerEvent::Failed { play_id, reason } => {
                tracing::error!(play = %play_id, reason, "play failed");
                if let Some(h) = self.handed.remove(&play_id) {
                    let at = self.rx.clock.now();
                    self.report(h.play, at, PlayEvent::Missed { reason: MissReason::SinkError })?;
                }
            }
            PlayerEvent::AmpFault { play_id, on, reason } => {
                tracing::error!(play = ?play_id, on, reason, "amplifier fault");
            }
        }
        Ok(())
    }

    fn readiness(store: &Store, cache: &Cache, bulletin: &loa_protocol::BulletinId, at: Timestamp) -> Readiness {
        match store.manifest(bulletin) {
            None => Readiness::Missing,
            Some(m) if m.expires_at <= at => Readiness::Expired,
            Some(m) => cache.path(&m.sha256.to_hex()).map_or(Readiness::Missing, Readiness::Ready),
        }
    }

    fn refresh_downloads(&mut self) {
        self.next_refresh = Instant::now() + REFRESH_DOWNLOADS;
        let Some(plan) = self.rx.store.plan() else { return };
        let now = self.now();
        let wanted = scheduler::download_order(plan, now)
            .iter()
            .filter_map(|b| self.rx.store.manifest(b))
            .filter(|m| m.expires_at > now)
            .cloned()
            .collect();
        self.downloader.set_wanted(wanted);
    }

    fn on_tick(&mut self) -> Result<(), ReceiverError> {
        while let Ok(event) = self.rx.player_events.try_recv() {
            self.on_player_event(event)?;
        }
        self.schedule()?;
        let now = Instant::now();
        if now >= self.next_refresh {
            self.refresh_downloads();
        }
        if self.connected {
            let topic = self.rx.checked.topics.chunk_request(&self.rx.checked.id);
            for request in self.downloader.requests(now) {
                match request.to_json() {
                    Ok(bytes) => self.publish(topic.clone(), QoS::AtMostOnce, bytes),
                    Err(e) => tracing::error!(error = %e, "cannot encode a chunk request"),
                }
            }
            if now >= self.next_resend && self.rx.outbox.len() > 0 {
                self.send_reports();
            }
            if now >= self.next_health {
                self.next_health = now + Duration::from_millis(self.rx.cfg.heartbeat_ms);
                self.send_health();
            }
        }
        Ok(())
    }

    fn schedule(&mut self) -> Result<(), ReceiverError> {
        let Some(plan) = self.rx.store.plan() else { return Ok(()) };
        let now = self.now();
        let lead_ms = self.rx.cfg.preroll_ms + HANDOVER_MS;
        let (store, cache) = (&self.rx.store, &self.rx.cache);
        let due: Vec<Todo> =
            scheduler::decide(plan, now, lead_ms, |id| store.is_done(id), |b, at| Self::readiness(store, cache, b, at))
                .into_iter()
                .map(|a| match a {
                    Due::Play { play, items, start_in_ms } => Todo::Play(play.clone(), items, start_in_ms),
                    Due::Missed { play, reason } => Todo::Miss(play.clone(), reason),
                })
                .collect();
        for todo in due {
            match todo {
                Todo::Play(play, items, start_in_ms) => self.hand_over(play, items, start_in_ms)?,
                Todo::Miss(play, _) if !self.clock_settled() => {
                    tracing::debug!(play = %play.id, "not reporting a miss until the clock is checked");
                }
                Todo::Miss(play, reason) => {
                    tracing::warn!(play = %play.id, ?reason, "play missed");
                    self.rx.store.mark_done(play.id.clone())?;
                    let at = self.rx.clock.now();
                    self.report(play.id, at, PlayEvent::Missed { reason })?;
                }
            }
        }
        Ok(())
    }

    /// Whether the controller's time is known (or the grace period after start is over).
    fn clock_settled(&self) -> bool {
        self.tracker.offset_ms().is_some() || self.started_at.elapsed() >= Duration::from_millis(CLOCK_GRACE_MS)
    }

    fn hand_over(&mut self, play: PlannedPlay, items: Vec<PathBuf>, start_in_ms: u64) -> Result<(), ReceiverError> {
        // Hash the files once more: a file the SD card damaged is deleted and fetched again instead.
        for path in &items {
            let sha = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if self.rx.cache.verify(&sha)?.is_none() {
                tracing::warn!(play = %play.id, sha, "cached file failed its check; fetching it again");
                self.refresh_downloads();
                return Ok(());
            }
        }
        let title = play.bulletins.first().and_then(|b| self.rx.store.manifest(b)).map(|m| m.title.clone());
        let once: Vec<Source> = items.into_iter().map(Source::File).collect();
        let request = PlayRequest {
            play_id: play.id.to_string(),
            title: title.unwrap_or_else(|| play.id.to_string()),
            tier: tier(play.tier),
            start_at: Instant::now() + Duration::from_millis(start_in_ms),
            volume: f32::from(play.volume) / 100.0,
            items: (0..play.times).flat_map(|_| once.iter().cloned()).collect(),
            attention_tone: play.tier == Tier::Emergency,
        };
        tracing::info!(play = %play.id, at = %play.at, start_in_ms, "handing play to the player");
        self.rx.store.mark_done(play.id.clone())?;
        self.handed.insert(play.id.to_string(), Handed { play: play.id, started: false });
        self.rx.player.play(request)?;
        Ok(())
    }

    fn send_health(&mut self) {
        let plan = self.rx.store.plan();
        let now = self.now();
        let (store, cache) = (&self.rx.store, &self.rx.cache);
        let ready = plan.map_or(0, |p| scheduler::ready_count(p, now, |b, at| Self::readiness(store, cache, b, at)));
        let snapshot = health::Snapshot {
            up_s: u32::try_from(self.started_at.elapsed().as_secs()).unwrap_or(u32::MAX),
            cache_bytes: self.rx.cache.usage().map(|u| u.used_bytes).unwrap_or(0),
            clock_ms: self.tracker.health_ms(),
            amp: health::amp_state(&self.rx.amp_state),
            playing: self.rx.player.now_playing(),
            ready,
            plan: self.rx.store.plan_seq(),
            rej: self.rej,
        };
        if let Some(bytes) = health::encode(snapshot, &self.rx.cfg.state_dir) {
            self.publish(self.rx.checked.topics.health(&self.rx.checked.id), QoS::AtMostOnce, bytes);
        }
    }
}
