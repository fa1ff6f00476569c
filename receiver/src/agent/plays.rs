//! Turning the plan into plays: every tick (and at once when a plan, manifest or emergency chunk arrives) the
//! [`scheduler`] says what is due; plays are handed to the player ahead of time, misses are reported.
//!
//! A play hands over its cached files, hashed once more first, or, for an emergency still downloading, the
//! download's growing file (see `emergency`). It is played `times` times with `gap_s` of silence between, after
//! the attention chime for emergencies. While an emergency is due or its manifest has just arrived, the
//! amplifier is kept warm so that its pre-roll is over by the time enough has arrived. A play due while the
//! loudspeaker line is broken is not handed over but reported missed `speaker_fault`.

use std::time::Duration;

use loa_protocol::{BulletinId, MissReason, PlannedPlay, PlayEvent, Tier, Timestamp};

use super::downloader::Downloader;
use super::emergency;
use super::reports::Handed;
use super::scheduler::{self, Action as Due, Item, Readiness};
use super::store::Store;
use super::{Agent, CLOCK_GRACE_MS, HANDOVER_MS, TICK_MS};
use crate::cache::Cache;
use crate::error::ReceiverError;
use crate::player::{self, PlayRequest, Source, CHIME_MS};

/// A scheduler decision, owned (so the store can be updated while acting on it).
enum Todo {
    Play(PlannedPlay, Vec<Item>, u64),
    Miss(PlannedPlay, MissReason),
}

/// How long one warm-up request keeps the amplifier on (renewed every tick while needed).
const WARM_MS: u64 = 5 * TICK_MS + 1000;

fn tier(t: Tier) -> player::Tier {
    match t {
        Tier::Normal => player::Tier::Normal,
        Tier::Priority => player::Tier::Priority,
        Tier::Emergency => player::Tier::Emergency,
    }
}

impl Agent {
    pub(super) fn readiness(
        store: &Store,
        cache: &Cache,
        downloader: &Downloader,
        bulletin: &BulletinId,
        at: Timestamp,
    ) -> Readiness {
        match store.manifest(bulletin) {
            None => Readiness::Missing,
            Some(m) if m.expires_at <= at => Readiness::Expired,
            Some(m) => match cache.path(&m.sha256.to_hex()) {
                Some(path) => Readiness::Ready(path),
                None if downloader.held(bulletin).is_some() => Readiness::Partial,
                None => Readiness::Missing,
            },
        }
    }

    pub(super) fn schedule(&mut self) -> Result<(), ReceiverError> {
        let Some(plan) = self.rx.store.plan() else { return Ok(()) };
        let now = self.now();
        let lead_ms = self.rx.cfg.preroll_ms + HANDOVER_MS;
        let (store, cache, dl) = (&self.rx.store, &self.rx.cache, &self.downloader);
        let due: Vec<Todo> = scheduler::decide(
            plan,
            now,
            lead_ms,
            |id| store.is_done(id),
            |b, at| Self::readiness(store, cache, dl, b, at),
            |p| emergency::streamable(p, store, cache, dl, CHIME_MS),
        )
        .into_iter()
        .map(|a| match a {
            Due::Play { play, items, start_in_ms } => Todo::Play(play.clone(), items, start_in_ms),
            Due::Missed { play, reason } => Todo::Miss(play.clone(), reason),
        })
        .collect();
        let emergency_waits = plan.plays.iter().any(|p| {
            p.tier == Tier::Emergency
                && !store.is_done(&p.id)
                && p.at.ms_since(now) <= i64::try_from(lead_ms).unwrap_or(i64::MAX)
                && now <= p.latest_start()
        });
        let speaker_fault = self.rx.faults.speaker().health().is_some();
        if (emergency_waits || !self.speculative.is_empty()) && !speaker_fault {
            self.rx.player.warm_up(Duration::from_millis(WARM_MS))?;
        }
        for todo in due {
            match todo {
                Todo::Play(play, _, start_in_ms) if speaker_fault => {
                    if start_in_ms == 0 && self.clock_settled() {
                        tracing::warn!(play = %play.id, "loudspeaker line fault; play missed");
                        self.rx.store.mark_done(play.id.clone())?;
                        let at = self.now();
                        self.report(play.id, at, PlayEvent::Missed { reason: MissReason::SpeakerFault })?;
                    }
                }
                Todo::Play(play, items, start_in_ms) => self.hand_over(play, items, start_in_ms)?,
                Todo::Miss(play, _) if !self.clock_settled() => {
                    tracing::debug!(play = %play.id, "not reporting a miss until the clock is checked");
                }
                Todo::Miss(play, reason) => {
                    tracing::warn!(play = %play.id, ?reason, "play missed");
                    self.rx.store.mark_done(play.id.clone())?;
                    let at = self.now();
                    self.report(play.id, at, PlayEvent::Missed { reason })?;
                }
            }
        }
        Ok(())
    }

    /// After a power cut: a play that was handed to the player but had not gone on air is handed again if still
    /// in time (the scheduler decides; past its latest start it is missed `powered_off`); one cut off on air is
    /// reported missed `powered_off` (the controller keeps its start).
    pub(super) fn recover_interrupted(&mut self) -> Result<(), ReceiverError> {
        for (play, started) in self.rx.store.take_interrupted()? {
            if started {
                tracing::warn!(%play, "the power failed while this play was on air");
                let at = self.now();
                self.report(play, at, PlayEvent::Missed { reason: MissReason::PoweredOff })?;
            } else {
                tracing::info!(%play, "the power failed before this play went on air; it may still play");
            }
        }
        Ok(())
    }

    /// Whether the controller's time is known (or the grace period after start is over).
    fn clock_settled(&self) -> bool {
        self.tracker.offset_ms().is_some() || self.started_at.elapsed() >= Duration::from_millis(CLOCK_GRACE_MS)
    }

    fn hand_over(&mut self, play: PlannedPlay, items: Vec<Item>, start_in_ms: u64) -> Result<(), ReceiverError> {
        let mut once = Vec::with_capacity(items.len());
        let mut growing = Vec::new();
        for item in items {
            match item {
                Item::File(path) => {
                    // Hash the file once more: a file the SD card damaged is deleted and fetched again instead.
                    let sha = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    if self.rx.cache.verify(&sha)?.is_none() {
                        tracing::warn!(play = %play.id, sha, "cached file failed its check; fetching it again");
                        self.refresh_downloads();
                        return Ok(());
                    }
                    once.push(Source::File(path));
                }
                Item::Stream(bulletin) => match self.downloader.growing(&bulletin) {
                    Some(Ok(g)) => {
                        growing.push(g.clone());
                        once.push(Source::Growing(g));
                    }
                    Some(Err(e)) => {
                        tracing::error!(play = %play.id, %bulletin, error = %e, "cannot read the download; waiting");
                        return Ok(());
                    }
                    None => return Ok(()),
                },
            }
        }
        let title = play.bulletins.first().and_then(|b| self.rx.store.manifest(b)).map(|m| m.title.clone());
        let gap = Duration::from_secs(u64::from(play.gap_s));
        let mut sources = Vec::with_capacity(once.len() * usize::from(play.times) + usize::from(play.times));
        for round in 0..play.times {
            if round > 0 && !gap.is_zero() {
                sources.push(Source::silence(gap));
            }
            sources.extend(once.iter().cloned());
        }
        let request = PlayRequest {
            play_id: play.id.to_string(),
            title: title.unwrap_or_else(|| play.id.to_string()),
            tier: tier(play.tier),
            start_at: std::time::Instant::now() + Duration::from_millis(start_in_ms),
            volume: f32::from(play.volume) / 100.0,
            items: sources,
            attention_tone: play.tier == Tier::Emergency,
        };
        let streaming = !growing.is_empty();
        tracing::info!(play = %play.id, at = %play.at, start_in_ms, streaming, "handing play to the player");
        self.rx.store.mark_handed(play.id.clone())?;
        self.handed.insert(play.id.to_string(), Handed::new(play.id, growing));
        self.rx.player.play(request)?;
        Ok(())
    }
}
