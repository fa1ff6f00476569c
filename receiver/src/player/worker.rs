//! The player thread: a loop that sleeps on its command channel until the next thing to do (switch the
//! amplifier on a pre-roll ahead, begin a play, switch the amplifier off after the hold time), and, while a play
//! is on air, writes one block at a time and reads commands between blocks. The policies are described in the
//! parent module.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::source::{Block, Part, Program};
use super::{AirEvent, Command, PlayRequest, PlayerConfig, PlayerEvent, Tier};
use crate::amp::Amplifier;
use crate::sink::{PlayInfo, Sink};

/// How a play ended.
enum Outcome {
    Finished,
    Preempted(String),
    Stopped,
    Failed(String),
}

pub(crate) struct Worker {
    sink: Box<dyn Sink>,
    amp: Box<dyn Amplifier>,
    preroll: Duration,
    emergency_preroll: Duration,
    hold: Duration,
    block: Duration,
    commands: Receiver<Command>,
    events: Sender<PlayerEvent>,
    now_playing: Arc<Mutex<Option<String>>>,
    queue: Vec<PlayRequest>,
    master: f32,
    /// When the amplifier was (asked to be) switched on; `None` while off.
    amp_since: Option<Instant>,
    /// When the last play ended.
    last_audio: Instant,
    /// The amplifier is kept on until then (see [`super::PlayerHandle::warm_up`]).
    warm_until: Option<Instant>,
    shutting_down: bool,
    air: tokio::sync::broadcast::Sender<AirEvent>,
}

/// A volume made safe: NaN is silence, the rest is clamped to 0..=1.
fn clamp_volume(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0)
    }
}

impl Worker {
    pub(crate) fn new(
        sink: Box<dyn Sink>,
        amp: Box<dyn Amplifier>,
        cfg: PlayerConfig,
        commands: Receiver<Command>,
        events: Sender<PlayerEvent>,
        now_playing: Arc<Mutex<Option<String>>>,
        air: tokio::sync::broadcast::Sender<AirEvent>,
    ) -> Worker {
        Worker {
            sink,
            amp,
            preroll: Duration::from_millis(cfg.preroll_ms),
            emergency_preroll: Duration::from_millis(cfg.emergency_preroll_ms.min(cfg.preroll_ms)),
            hold: Duration::from_millis(cfg.hold_ms),
            block: Duration::from_millis(cfg.block_ms.max(1)),
            commands,
            events,
            now_playing,
            queue: Vec::new(),
            master: 1.0,
            amp_since: None,
            last_audio: Instant::now(),
            warm_until: None,
            shutting_down: false,
            air,
        }
    }

    fn air(&self, event: AirEvent) {
        // No subscriber is fine.
        let _ = self.air.send(event);
    }

    fn emit(&self, event: PlayerEvent) {
        // Nobody listening (the handle is being dropped) is fine.
        let _ = self.events.send(event);
    }

    /// The amplifier's pre-roll for `req`.
    fn preroll(&self, req: &PlayRequest) -> Duration {
        if req.tier == Tier::Emergency {
            self.emergency_preroll
        } else {
            self.preroll
        }
    }

    /// When the amplifier must go on for `req`.
    fn amp_due(&self, req: &PlayRequest) -> Instant {
        req.start_at.checked_sub(self.preroll(req)).unwrap_or(req.start_at)
    }

    /// When `req` may begin, given the amplifier went on at `since`: its start time, or a full pre-roll after
    /// the amplifier went on if that is later.
    fn begin(&self, req: &PlayRequest, since: Instant) -> Instant {
        req.start_at.max(since + self.preroll(req))
    }

    pub(crate) fn run(mut self) {
        tracing::debug!("player thread running");
        loop {
            let now = Instant::now();
            self.manage_amp(now);
            if let Some(i) = self.next_due(now, |_| true) {
                let req = self.queue.remove(i);
                self.play(req);
                self.last_audio = Instant::now();
                if self.shutting_down {
                    break;
                }
                continue;
            }
            let wake = self.next_wake(now).max(now + Duration::from_millis(1));
            match self.commands.recv_deadline(wake) {
                Ok(command) => {
                    self.command(command, None);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for req in std::mem::take(&mut self.queue) {
            let at = SystemTime::now();
            self.air(AirEvent::Stopped { play_id: req.play_id.clone(), at });
            self.emit(PlayerEvent::Stopped { play_id: req.play_id, at });
        }
        if self.amp_since.is_some() {
            self.switch(false, None);
        }
        tracing::debug!("player thread stopped");
    }

    /// Switches the amplifier on when a queued play needs it, and off once the hold time has passed with
    /// nothing needing it within another hold time.
    fn manage_amp(&mut self, now: Instant) {
        let needed = self.queue.iter().find(|r| self.amp_due(r) <= now).map(|r| r.play_id.clone());
        let warm = self.warm_until.filter(|w| *w > now);
        match (self.amp_since, needed) {
            (None, Some(play_id)) => self.switch(true, Some(play_id)),
            (None, None) if warm.is_some() => self.switch(true, None),
            (Some(_), None) => {
                let soon = self.queue.iter().any(|r| self.amp_due(r) <= now + self.hold);
                let last = self.warm_until.map_or(self.last_audio, |w| w.max(self.last_audio));
                if now >= last + self.hold && !soon {
                    self.switch(false, None);
                }
            }
            _ => {}
        }
    }

    fn switch(&mut self, on: bool, play_id: Option<String>) {
        match self.amp.set_on(on) {
            Ok(()) => tracing::info!(on, play_id = play_id.as_deref().unwrap_or(""), "amplifier switched"),
            Err(e) => {
                tracing::error!(on, error = %e, "amplifier fault; playing anyway");
                self.emit(PlayerEvent::AmpFault { play_id, on, reason: e.to_string() });
            }
        }
        self.amp_since = on.then(Instant::now);
    }

    /// The queued play that should go on air now, among those accepted by `filter`: the highest tier, then
    /// the earliest start, then the first queued. None while the amplifier is off.
    fn next_due(&self, now: Instant, filter: impl Fn(&PlayRequest) -> bool) -> Option<usize> {
        let since = self.amp_since?;
        let mut best: Option<usize> = None;
        for (i, req) in self.queue.iter().enumerate() {
            if self.begin(req, since) > now || !filter(req) {
                continue;
            }
            let better = match best.and_then(|b| self.queue.get(b)) {
                None => true,
                Some(b) => req.tier > b.tier || (req.tier == b.tier && req.start_at < b.start_at),
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    /// When something next has to happen while idle.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(3600);
        for req in &self.queue {
            wake = wake.min(match self.amp_since {
                Some(since) => self.begin(req, since),
                None => self.amp_due(req),
            });
        }
        if self.amp_since.is_some() && self.last_audio + self.hold > now {
            wake = wake.min(self.last_audio + self.hold);
        }
        if let Some(warm) = self.warm_until {
            if self.amp_since.is_none() && warm > now {
                wake = now;
            } else if self.amp_since.is_some() && warm + self.hold > now {
                wake = wake.min(warm + self.hold);
            }
        }
        wake
    }

    /// Handles a command; returns how the play on air (`current`) ends, if the command ends it.
    fn command(&mut self, command: Command, current: Option<&PlayRequest>) -> Option<Outcome> {
        match command {
            Command::Play(req) => {
                let req = *req;
                self.queue.retain(|q| q.play_id != req.play_id);
                tracing::info!(play_id = %req.play_id, tier = ?req.tier, "play queued");
                self.queue.push(req);
            }
            Command::Stop => return current.map(|_| Outcome::Stopped),
            Command::Cancel(play_id) => {
                if current.is_some_and(|c| c.play_id == play_id) {
                    return Some(Outcome::Stopped);
                }
                if let Some(i) = self.queue.iter().position(|q| q.play_id == play_id) {
                    let req = self.queue.remove(i);
                    tracing::info!(play_id = %req.play_id, "queued play cancelled");
                    let at = SystemTime::now();
                    self.air(AirEvent::Stopped { play_id: req.play_id.clone(), at });
                    self.emit(PlayerEvent::Stopped { play_id: req.play_id, at });
                }
            }
            Command::SetVolume(v) => self.master = clamp_volume(v),
            Command::WarmUp(d) => {
                let until = Instant::now() + d;
                self.warm_until = Some(self.warm_until.map_or(until, |w| w.max(until)));
            }
        }
        None
    }

    fn set_now_playing(&self, play_id: Option<String>) {
        *self.now_playing.lock().unwrap_or_else(PoisonError::into_inner) = play_id;
    }

    /// Plays `req` until it ends, and reports how.
    fn play(&mut self, req: PlayRequest) {
        let late = Instant::now().saturating_duration_since(req.start_at);
        tracing::info!(play_id = %req.play_id, title = %req.title, tier = ?req.tier, late_ms = late.as_millis() as u64, "play begins");
        self.set_now_playing(Some(req.play_id.clone()));
        let outcome = self.run_play(&req);
        let (play_id, at) = (req.play_id, SystemTime::now());
        let id = play_id.clone();
        self.air(match &outcome {
            Outcome::Finished => AirEvent::Finished { play_id: id, at },
            Outcome::Preempted(by) => AirEvent::Preempted { play_id: id, by: by.clone(), at },
            Outcome::Stopped => AirEvent::Stopped { play_id: id, at },
            Outcome::Failed(_) => AirEvent::Failed { play_id: id, at },
        });
        let event = match outcome {
            Outcome::Finished => PlayerEvent::Finished { play_id, at },
            Outcome::Preempted(by) => PlayerEvent::Preempted { play_id, by, at },
            Outcome::Stopped => PlayerEvent::Stopped { play_id, at },
            Outcome::Failed(reason) => {
                tracing::error!(%play_id, %reason, "play failed");
                PlayerEvent::Failed { play_id, reason }
            }
        };
        tracing::info!(?event, "play ended");
        self.set_now_playing(None);
        self.emit(event);
    }

    fn run_play(&mut self, req: &PlayRequest) -> Outcome {
        let info = PlayInfo { play_id: req.play_id.clone(), title: req.title.clone() };
        if let Err(e) = self.sink.open(&info) {
            return Outcome::Failed(format!("sound output: {e}"));
        }
        let rate = self.sink.rate();
        let block_samples = ((u128::from(rate) * self.block.as_millis()) / 1000).max(1) as usize;
        let mut program = Program::new(req, rate);
        let mut started = false;
        let mut chimed = false;
        let mut spoke = false;
        let mut underrun = false;
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(command) => {
                        if let Some(outcome) = self.command(command, Some(req)) {
                            return self.end(outcome);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.shutting_down = true;
                        return self.end(Outcome::Stopped);
                    }
                }
            }
            let higher = self.next_due(Instant::now(), |q| q.tier > req.tier);
            if let Some(by) = higher.and_then(|i| self.queue.get(i)) {
                tracing::warn!(play_id = %req.play_id, by = %by.play_id, "preempted by a higher tier");
                let by = by.play_id.clone();
                return self.end(Outcome::Preempted(by));
            }
            match program.next_block(block_samples, self.block) {
                Ok(Block::Pcm(pcm, part)) => {
                    if !started {
                        started = true;
                        self.emit(PlayerEvent::Started { play_id: req.play_id.clone(), at: SystemTime::now() });
                    }
                    if underrun {
                        underrun = false;
                        tracing::info!(play_id = %req.play_id, "download caught up; playing on");
                    }
                    // Emergencies play at their own volume, whatever the master volume.
                    let master = if req.tier == Tier::Emergency { 1.0 } else { self.master };
                    let gain = clamp_volume(req.volume) * master;
                    let scaled: Vec<i16> = pcm.iter().map(|&s| (f32::from(s) * gain).round() as i16).collect();
                    // Stamped as the block is handed to the sink.
                    let at = SystemTime::now();
                    let play_id = || req.play_id.clone();
                    match part {
                        Part::Chime if !chimed => {
                            chimed = true;
                            self.air(AirEvent::ToneStarted { play_id: play_id(), at });
                        }
                        Part::Speech if !spoke => {
                            spoke = true;
                            self.air(AirEvent::SpeechStarted { play_id: play_id(), at });
                        }
                        _ => {}
                    }
                    if let Err(e) = self.sink.write(&scaled) {
                        return self.end(Outcome::Failed(format!("sound output: {e}")));
                    }
                }
                Ok(Block::Underrun) => {
                    if !underrun {
                        underrun = true;
                        tracing::warn!(play_id = %req.play_id, "playing faster than the download; waiting for it");
                        self.air(AirEvent::Underrun { play_id: req.play_id.clone(), at: SystemTime::now() });
                    }
                }
                Ok(Block::End) => return self.end(Outcome::Finished),
                Err(reason) => return self.end(Outcome::Failed(reason)),
            }
        }
    }

    /// Closes the sink the way `outcome` calls for; a failure to close fails a play that had finished.
    fn end(&mut self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Finished => match self.sink.close() {
                Ok(()) => Outcome::Finished,
                Err(e) => Outcome::Failed(format!("sound output: {e}")),
            },
            other => {
                if let Err(e) = self.sink.abort() {
                    tracing::warn!(error = %e, "sound output failed while cutting a play short");
                }
                other
            }
        }
    }
}
