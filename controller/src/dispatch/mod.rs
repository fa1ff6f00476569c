//! Dispatch: the controller's side of the MQTT conversation with receivers.
//!
//! [`Dispatcher::run`] waits on three things: the link's events (a (re)connection, or a message from a receiver),
//! the `replan` notification that the API and the encode job raise whenever plays or audio change, and a
//! periodic tick. For each receiver it composes the plan ([`plan`]), and when the plays changed (or the signed
//! plan is getting old) it publishes, retained, the signed manifests of the files the plan needs and then the
//! signed plan with the next sequence number. Receivers then ask for chunks, which [`incoming`] answers from the
//! files of [`files`]; it also stores status, health and play reports (deduplicated, acknowledged).

mod files;
mod incoming;
pub mod plan;
mod urgent;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loa_protocol::{Action, Command, Plan, ReceiverId, Signer, Timestamp, Topics};
use rumqttc::AsyncClient;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::mqtt::LinkEvent;
use crate::store::dispatch as q;
use crate::store::{Store, StoreError};

pub use files::{chunk_size, FileError, Files};
pub use urgent::Urgent;

/// A play nobody reported on is marked missed (`no_report`) this long after it could have ended.
pub const NO_REPORT_GRACE_MS: i64 = 10 * 60 * 1000;
/// How far back plays are read when composing a plan: an emergency may start up to a day late.
const LOOKBACK_MS: i64 = 25 * 3600 * 1000;
/// After an emergency is sent, how long a receiver's chunk requests for other files are held back at most.
const HOLD_OTHER_DOWNLOADS: Duration = Duration::from_secs(20);
/// How long after an emergency's first chunk was pushed a request for it is taken as the one that crossed it on
/// the way (and not answered again): the receiver asks once the manifest is in, which on GPRS may be seconds
/// after the push when a normal download's chunks were queued ahead.
pub(crate) const PUSHED_HEAD_GRACE: Duration = Duration::from_secs(15);
/// Most queued messages taken in one go, so chunk requests for emergencies can be served first.
const BATCH: usize = 256;

/// What stops dispatch from doing its job (messages that are merely bad are logged and counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A message could not be built (a bug, or data in the store breaking a protocol rule).
    #[error("building a message: {0}")]
    Protocol(#[from] loa_protocol::ProtocolError),
    /// The MQTT client's queue is closed (the link task ended).
    #[error("MQTT client: {0}")]
    Mqtt(#[from] rumqttc::ClientError),
}

/// Timing of dispatch.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// How far ahead plans reach (at least 48 h; default 72 h).
    pub horizon_ms: i64,
    /// How often plans are recomposed without being asked (default 60 s).
    pub tick_ms: u64,
    /// A plan older than this is re-signed and republished even if unchanged (default 6 h).
    pub refresh_ms: i64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings { horizon_ms: 72 * 3600 * 1000, tick_ms: 60_000, refresh_ms: 6 * 3600 * 1000 }
    }
}

/// Counters of what dispatch did and dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Plans published.
    pub plans: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Chunk bytes sent (payload).
    pub chunk_bytes: u64,
    /// Reports stored (not counting resends).
    pub reports: u64,
    /// Messages dropped as malformed, unknown or not allowed.
    pub dropped: u64,
    /// Messages from the broker handled (whatever came of them).
    pub handled: u64,
    /// Chunks sent, per receiver.
    pub chunks_to: HashMap<String, u64>,
    /// Emergency first chunks sent unasked, right behind the urgent plan.
    pub heads_pushed: u64,
    /// Requests for such a chunk that crossed it on the way and were not answered again.
    pub heads_not_resent: u64,
}

/// The dispatcher. See the module doc.
pub struct Dispatcher {
    store: Store,
    signer: Arc<Signer>,
    topics: Topics,
    clock: Arc<dyn Clock>,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    replan: Arc<Notify>,
    settings: DispatchSettings,
    files: Files,
    /// Chunks sent per (receiver, wire bulletin id), for download progress.
    sent: HashMap<(String, String), Vec<bool>>,
    /// Latest online session per receiver, so that an old session's last will does not mark a new one offline.
    sessions: HashMap<String, u64>,
    stats: Arc<std::sync::Mutex<Stats>>,
    commands: Option<mpsc::UnboundedReceiver<(ReceiverId, Action)>>,
    /// Last command sequence number per receiver.
    command_seq: HashMap<String, u64>,
    /// Receivers whose plans must go out before anything else.
    urgent: Arc<Urgent>,
    /// The manifest last published per (receiver, variant wire id): (file SHA-256, tier, expiry). Forgotten when
    /// the broker connection is made again, so everything is published once more then.
    manifests_sent: HashMap<(String, String), (String, loa_protocol::Tier, Timestamp)>,
    /// Receivers whose requests for non-emergency files wait, until this instant (see [`Dispatcher::holding`]).
    holds: HashMap<String, (tokio::time::Instant, Vec<String>)>,
    /// Wire ids of the emergency variants in each receiver's latest plan: their chunk requests are served first.
    plan_emergencies: HashMap<String, Vec<String>>,
    /// When an emergency file's first chunk was pushed to a receiver, per (receiver, variant wire id).
    pushed_heads: HashMap<(String, String), tokio::time::Instant>,
}

impl Dispatcher {
    /// A dispatcher publishing with `client` and reading `events` (from [`crate::mqtt::MqttLink`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        signer: Arc<Signer>,
        topics: Topics,
        clock: Arc<dyn Clock>,
        client: AsyncClient,
        events: mpsc::UnboundedReceiver<LinkEvent>,
        replan: Arc<Notify>,
        settings: DispatchSettings,
    ) -> Self {
        Dispatcher {
            store,
            signer,
            topics,
            clock,
            client,
            events,
            replan,
            settings,
            files: Files::default(),
            sent: HashMap::new(),
            sessions: HashMap::new(),
            stats: Arc::default(),
            commands: None,
            command_seq: HashMap::new(),
            urgent: Arc::default(),
            manifests_sent: HashMap::new(),
            holds: HashMap::new(),
            plan_emergencies: HashMap::new(),
            pushed_heads: HashMap::new(),
        }
    }

    /// Counts into `stats` (shared with whoever started it) instead of its own counters.
    pub fn with_stats(mut self, stats: Arc<std::sync::Mutex<Stats>>) -> Self {
        self.stats = stats;
        self
    }

    /// Takes urgent plan requests (emergencies) from the API.
    pub fn with_urgent(mut self, urgent: Arc<Urgent>) -> Self {
        self.urgent = urgent;
        self
    }

    /// Takes remote commands from the API (see [`crate::api::commands`]).
    pub fn with_commands(mut self, commands: mpsc::UnboundedReceiver<(ReceiverId, Action)>) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Signs and publishes one command. Its sequence is `max(last + 1, now in ms)`, so it rises even across a
    /// controller reinstall.
    async fn send_command(&mut self, rx: ReceiverId, action: Action) -> Result<(), DispatchError> {
        let now = self.now();
        let last = self.command_seq.get(rx.as_str()).copied().unwrap_or(0);
        let seq = (last + 1).max(u64::try_from(now.unix_ms()).unwrap_or(0));
        self.command_seq.insert(rx.to_string(), seq);
        let command = Command { receiver: rx.clone(), seq, action };
        let signed = self.signer.sign(&command, now, now.saturating_add_ms(10 * 60 * 1000))?;
        self.client.publish(self.topics.command(&rx), rumqttc::QoS::AtLeastOnce, false, signed.to_json()?).await?;
        tracing::info!(receiver = %rx, ?action, seq, "command sent");
        Ok(())
    }

    /// Shared counters, readable while it runs.
    pub fn stats(&self) -> Arc<std::sync::Mutex<Stats>> {
        self.stats.clone()
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(self.clock.now()).unwrap_or(Timestamp::EPOCH)
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut stats) = self.stats.lock() {
            f(&mut stats);
        }
    }

    /// Runs until `cancel`. Errors only when the MQTT client or the database is gone for good.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), DispatchError> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.tick_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let replan = self.replan.clone();
        let urgent = self.urgent.clone();
        let mut commands = self.commands.take();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                _ = urgent.notified() => keep_going(self.publish_urgent().await)?,
                Some((rx, action)) = async { match commands.as_mut() { Some(c) => c.recv().await, None => None } } => {
                    keep_going(self.send_command(rx, action).await)?;
                }
                event = self.events.recv() => match event {
                    None => return Ok(()),
                    Some(LinkEvent::Connected) => self.on_connected().await?,
                    Some(LinkEvent::Message { topic, payload }) => self.handle_batch(topic, payload).await?,
                },
                _ = replan.notified() => keep_going(self.publish_plans(false).await)?,
                _ = tick.tick() => {
                    keep_going(self.mark_unreported())?;
                    keep_going(self.publish_plans(false).await)?;
                }
            }
        }
    }

    /// Handles `first` and the messages already queued behind it (up to [`BATCH`]): chunk requests for
    /// emergencies first, then the rest in arrival order.
    async fn handle_batch(&mut self, topic: String, payload: bytes::Bytes) -> Result<(), DispatchError> {
        let mut batch = vec![(topic, payload)];
        let mut connected = false;
        while batch.len() < BATCH {
            match self.events.try_recv() {
                Ok(LinkEvent::Message { topic, payload }) => batch.push((topic, payload)),
                Ok(LinkEvent::Connected) => {
                    connected = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // Emergencies' chunk requests go first; everything else keeps its order.
        let (first, rest): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|(topic, payload)| self.is_emergency_request(topic, payload));
        let handled = (first.len() + rest.len()) as u64;
        for (topic, payload) in first.into_iter().chain(rest) {
            keep_going(self.handle(&topic, &payload).await)?;
        }
        self.count(|s| s.handled += handled);
        if connected {
            self.on_connected().await?;
        }
        Ok(())
    }

    /// The broker connection is (again) up: subscribe, and publish every plan and manifest once more.
    async fn on_connected(&mut self) -> Result<(), DispatchError> {
        self.manifests_sent.clear();
        self.client.subscribe(self.topics.controller_subscription(), rumqttc::QoS::AtLeastOnce).await?;
        keep_going(self.publish_plans(true).await)
    }

    /// Whether `bulletin` (a wire id) is an emergency in `rx`'s latest plan.
    pub(super) fn is_emergency(&self, rx: &str, bulletin: &str) -> bool {
        self.plan_emergencies.get(rx).is_some_and(|v| v.iter().any(|b| b == bulletin))
    }

    fn is_emergency_request(&self, topic: &str, payload: &[u8]) -> bool {
        let Ok(loa_protocol::Topic::ChunkRequest(rx)) = self.topics.parse(topic) else { return false };
        // Only receivers with an emergency in their plan pay for parsing the request twice.
        self.plan_emergencies.get(rx.as_str()).is_some_and(|v| !v.is_empty())
            && <loa_protocol::ChunkRequest as loa_protocol::Message>::from_json(payload)
                .is_ok_and(|r| self.is_emergency(rx.as_str(), r.bulletin.as_str()))
    }

    /// Publishes the plans of the receivers the API named as urgent.
    async fn publish_urgent(&mut self) -> Result<(), DispatchError> {
        let now = self.now();
        let started = std::time::Instant::now();
        let ids = self.urgent.take();
        let count = ids.len();
        self.pushed_heads.retain(|_, at| at.elapsed() < PUSHED_HEAD_GRACE);
        for id in ids {
            let Ok(rx) = ReceiverId::new(id.clone()) else { continue };
            let area = match self.store.receiver(&id) {
                Ok(r) => r.area_id,
                Err(e) => {
                    tracing::warn!(receiver = %id, error = %e, "urgent plan for an unknown receiver");
                    continue;
                }
            };
            if let Err(e) = self.publish_plan(&rx, area, now, false, None).await {
                match e {
                    DispatchError::Mqtt(_) => return Err(e),
                    other => tracing::error!(receiver = %id, error = %other, "urgent plan not published"),
                }
            }
            // Until the warning's chunks have gone out, this receiver's requests for other files wait: every
            // chunk of those already on its slow link is airtime the warning cannot use.
            let wanted = self.plan_emergencies.get(&id).cloned().unwrap_or_default();
            for bulletin in &wanted {
                if let Err(e) = self.push_head(&rx, bulletin, now).await {
                    match e {
                        DispatchError::Mqtt(_) => return Err(e),
                        other => tracing::warn!(receiver = %id, error = %other, "emergency head not pushed"),
                    }
                }
            }
            if !wanted.is_empty() {
                self.holds.insert(id, (tokio::time::Instant::now() + HOLD_OTHER_DOWNLOADS, wanted));
            }
        }
        tracing::info!(receivers = count, ms = started.elapsed().as_millis() as u64, "urgent plans published");
        Ok(())
    }

    /// Whether every chunk of `bulletin` (wire id) has been sent to `rx`.
    pub(super) fn sent_whole(&self, rx: &str, bulletin: &str) -> bool {
        self.sent.get(&(rx.to_string(), bulletin.to_string())).is_some_and(|chunks| chunks.iter().all(|sent| *sent))
    }

    /// Whether chunk requests of `rx` for files other than emergencies are held back now (see
    /// [`HOLD_OTHER_DOWNLOADS`]). The hold ends early once every emergency file it is fetching was sent whole.
    pub(super) fn holding(&mut self, rx: &str) -> bool {
        let Some((until, wanted)) = self.holds.get(rx) else { return false };
        let all_sent = wanted.iter().all(|v| self.sent_whole(rx, v));
        if tokio::time::Instant::now() >= *until || all_sent {
            self.holds.remove(rx);
            return false;
        }
        true
    }

    /// Marks missed the plays no receiver reported on in time (see [`q::mark_unreported`]).
    fn mark_unreported(&self) -> Result<(), DispatchError> {
        let late_normal = i64::from(plan::LATE_NORMAL_S) * 1000;
        let late_emergency = i64::from(plan::LATE_EMERGENCY_S) * 1000;
        let n = q::mark_unreported(&self.store, self.now().unix_ms(), late_normal, late_emergency, NO_REPORT_GRACE_MS)?;
        if n > 0 {
            tracing::warn!(plays = n, "plays marked missed: no report from their receivers");
        }
        Ok(())
    }
}

/// Only a closed MQTT client stops dispatch; a database or message-building error is logged and the next event
/// (or tick) tries again, so one bad row or a busy disk does not take the controller down.
fn keep_going(result: Result<(), DispatchError>) -> Result<(), DispatchError> {
    match result {
        Err(DispatchError::Mqtt(e)) => Err(DispatchError::Mqtt(e)),
        Err(e) => {
            tracing::error!(error = %e, "dispatch step failed; will retry");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

impl Dispatcher {
    /// Recomposes every receiver's plan and publishes those that changed (all of them if `force`).
    pub async fn publish_plans(&mut self, force: bool) -> Result<(), DispatchError> {
        let now = self.now();
        for rx in q::receivers(&self.store)? {
            let Ok(id) = ReceiverId::new(rx.id.clone()) else {
                tracing::warn!(receiver = %rx.id, "receiver id is not valid on the wire; skipped");
                continue;
            };
            if let Err(e) = self.publish_plan(&id, rx.area_id, now, force, None).await {
                match e {
                    DispatchError::Mqtt(_) => return Err(e),
                    other => tracing::error!(receiver = %rx.id, error = %other, "plan not published"),
                }
            }
        }
        Ok(())
    }

    pub(super) async fn publish_plan(
        &mut self,
        rx: &ReceiverId,
        area_id: i64,
        now: Timestamp,
        force: bool,
        answers_session: Option<u64>,
    ) -> Result<(), DispatchError> {
        let from = now.saturating_add_ms(-LOOKBACK_MS);
        let until = now.saturating_add_ms(self.settings.horizon_ms.max(loa_protocol::plan::MIN_HORIZON_MS + 3_600_000));
        let composed = plan::compose(&self.store, rx, area_id, now, from, until)?;
        let emergencies: Vec<String> = composed
            .plays
            .iter()
            .filter(|p| p.tier == loa_protocol::Tier::Emergency)
            .flat_map(|p| p.bulletins.iter().map(|b| b.to_string()))
            .collect();
        self.plan_emergencies.insert(rx.to_string(), emergencies);
        let held = q::plan_version(&self.store, rx.as_str())?;
        let fresh = held
            .as_ref()
            .is_some_and(|(_, digest, at)| *digest == composed.digest && now.unix_ms() - at < self.settings.refresh_ms);
        if fresh && !force {
            return Ok(());
        }
        for variant in &composed.variants {
            let file = match self.files.get(&self.store, variant, now) {
                Ok(file) => file,
                Err(e) => {
                    tracing::error!(variant = %variant.protocol_id(), error = %e, "bulletin file cannot be served");
                    continue;
                }
            };
            // The manifest carries the highest tier of the plays that use it: a receiver starts fetching an
            // emergency's file the moment its manifest arrives, before the plan that names it.
            let wire_id = variant.protocol_id();
            let tier = composed
                .plays
                .iter()
                .filter(|p| p.bulletins.iter().any(|b| b.as_str() == wire_id))
                .map(|p| p.tier)
                .max()
                .unwrap_or(loa_protocol::Tier::Normal);
            // A manifest already published (retained) to this receiver is not sent again: the receiver holds it,
            // or gets the retained copy when it subscribes. That spares a 2G link a kilobyte or two per replan.
            let memo = (file.manifest.sha256.to_hex(), tier, file.manifest.expires_at);
            let key = (rx.to_string(), wire_id);
            if self.manifests_sent.get(&key) == Some(&memo) {
                continue;
            }
            let signed = if tier == file.manifest.tier {
                self.signer.sign(&file.manifest, now, file.manifest.expires_at)?
            } else {
                let mut manifest = file.manifest.clone();
                manifest.tier = tier;
                self.signer.sign(&manifest, now, manifest.expires_at)?
            };
            let topic = self.topics.manifest(rx, &file.manifest.bulletin);
            self.client.publish(topic, rumqttc::QoS::AtLeastOnce, true, signed.to_json()?).await?;
            self.manifests_sent.insert(key, memo);
        }
        // Always a new sequence: a receiver refuses a plan whose seq it already holds.
        let seq = held.as_ref().map_or(1, |(seq, _, _)| seq + 1);
        let plan = Plan { receiver: rx.clone(), seq, from, until, plays: composed.plays, answers_session };
        let signed = self.signer.sign(&plan, now, until)?;
        self.client.publish(self.topics.plan(rx), rumqttc::QoS::AtLeastOnce, true, signed.to_json()?).await?;
        q::set_plan_version(&self.store, rx.as_str(), seq, &composed.digest, now.unix_ms())?;
        self.count(|s| s.plans += 1);
        tracing::debug!(receiver = %rx, seq, plays = plan.plays.len(), "plan published");
        Ok(())
    }
}
