//! Play reports: the player's events become `started`, `finished`, `preempted` and `missed` reports in the
//! outbox, which sends them until the controller acknowledges them.
//!
//! A stopped play is `preempted` (without `by`) if it had started, else missed `cancelled`. A failed play is
//! missed `verify_failed` when a download it was streaming was abandoned (the file failed its hash), else
//! `sink_error`. A device fault recorded on a play while it was handed over overrides how it ended: missed
//! `speaker_fault` or `amp_fault` (see [`crate::faults`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use loa_protocol::{Message, MissReason, PlayEvent, PlayId, Timestamp};
use rumqttc::QoS;

use super::Agent;
use crate::cache::GrowingFile;
use crate::error::ReceiverError;
use crate::player::PlayerEvent;

/// A play handed to the player, until it ends.
#[derive(Debug)]
pub(super) struct Handed {
    pub play: PlayId,
    pub started: bool,
    /// A fault that makes the play count as missed, whatever the player says.
    pub fault: Option<MissReason>,
    /// Downloads it streams from.
    pub growing: Vec<Arc<GrowingFile>>,
}

impl Handed {
    pub(super) fn new(play: PlayId, growing: Vec<Arc<GrowingFile>>) -> Handed {
        Handed { play, started: false, fault: None, growing }
    }

    /// The report for how the play ended, `ended` being what the player says.
    fn outcome(&self, ended: PlayEvent) -> PlayEvent {
        match (self.fault, ended) {
            (Some(reason), _) => PlayEvent::Missed { reason },
            (None, event) => event,
        }
    }
}

impl Agent {
    pub(super) fn send_reports(&mut self) {
        if !self.connected {
            return;
        }
        let topic = self.rx.checked.topics.reports(&self.rx.checked.id);
        self.rx.outbox.mark_sent(Instant::now());
        for batch in self.rx.outbox.batches() {
            match batch.to_json() {
                Ok(bytes) => self.publish(topic.clone(), QoS::AtLeastOnce, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a report batch"),
            }
        }
        self.next_resend = Instant::now() + Duration::from_millis(self.rx.cfg.report_resend_ms);
    }

    pub(super) fn report(&mut self, play: PlayId, at: Timestamp, event: PlayEvent) -> Result<(), ReceiverError> {
        tracing::info!(%play, %at, ?event, "play report");
        self.rx.outbox.push(play, at, event)?;
        self.send_reports();
        Ok(())
    }

    /// The time of a player event stamped on the system clock, on the controller's clock as far as this receiver
    /// knows it (reports carry controller time, so a receiver whose clock is off still reports true times).
    fn event_time(&self, at: SystemTime) -> Timestamp {
        let ago = SystemTime::now().duration_since(at).unwrap_or_default();
        self.now().saturating_add_ms(-i64::try_from(ago.as_millis()).unwrap_or(0))
    }

    /// Reports how a handed-over play ended and forgets it.
    fn ended(&mut self, play_id: &str, at: Timestamp, event: PlayEvent) -> Result<(), ReceiverError> {
        if let Some(h) = self.handed.remove(play_id) {
            let event = h.outcome(event);
            self.rx.store.end_handed(&h.play)?;
            self.report(h.play, at, event)?;
        }
        Ok(())
    }

    pub(super) fn on_player_event(&mut self, event: PlayerEvent) -> Result<(), ReceiverError> {
        match event {
            PlayerEvent::Started { play_id, at } => {
                let at = self.event_time(at);
                let faults = self.rx.faults.clone();
                if let Some(h) = self.handed.get_mut(&play_id) {
                    h.started = true;
                    if faults.speaker().health().is_some() {
                        // Not on a broken line: stop it at once (the report says why).
                        h.fault = Some(MissReason::SpeakerFault);
                        let _ = self.rx.player.cancel(&play_id);
                    } else if faults.amp_fault() {
                        h.fault = Some(MissReason::AmpFault);
                    }
                    let play = h.play.clone();
                    self.rx.store.mark_started(&play)?;
                    self.report(play, at, PlayEvent::Started)?;
                }
            }
            PlayerEvent::Finished { play_id, at } => {
                let at = self.event_time(at);
                self.ended(&play_id, at, PlayEvent::Finished)?;
            }
            PlayerEvent::Preempted { play_id, by, at } => {
                let at = self.event_time(at);
                self.ended(&play_id, at, PlayEvent::Preempted { by: PlayId::new(by).ok() })?;
            }
            PlayerEvent::Stopped { play_id, at } => {
                let at = self.event_time(at);
                let started = self.handed.get(&play_id).is_some_and(|h| h.started);
                let event = if started {
                    PlayEvent::Preempted { by: None }
                } else {
                    PlayEvent::Missed { reason: MissReason::Cancelled }
                };
                self.ended(&play_id, at, event)?;
            }
            PlayerEvent::Failed { play_id, reason } => {
                tracing::error!(play = %play_id, reason, "play failed");
                let abandoned =
                    self.handed.get(&play_id).is_some_and(|h| h.growing.iter().any(|g| g.progress().abandoned));
                let reason = if abandoned { MissReason::VerifyFailed } else { MissReason::SinkError };
                let at = self.now();
                self.ended(&play_id, at, PlayEvent::Missed { reason })?;
            }
            PlayerEvent::AmpFault { play_id, on, reason } => {
                tracing::error!(play = ?play_id, on, reason, "amplifier fault");
                if let Some(h) = play_id.and_then(|id| self.handed.get_mut(&id)) {
                    h.fault.get_or_insert(MissReason::AmpFault);
                }
            }
        }
        Ok(())
    }

    /// Applies device faults to the plays on air: a broken speaker line stops them, a failing amplifier marks
    /// them (see [`crate::faults`]).
    pub(super) fn check_faults(&mut self) {
        let speaker = self.rx.faults.speaker().health().is_some();
        let amp = self.rx.faults.amp_fault();
        if !speaker && !amp {
            return;
        }
        for (id, h) in self.handed.iter_mut().filter(|(_, h)| h.started) {
            if speaker && h.fault != Some(MissReason::SpeakerFault) {
                tracing::warn!(play = %id, "loudspeaker line fault; stopping the play");
                h.fault = Some(MissReason::SpeakerFault);
                let _ = self.rx.player.cancel(id);
            } else if amp {
                h.fault.get_or_insert(MissReason::AmpFault);
            }
        }
    }
}
