//! Signed commands from the controller (volume, stop, test tone, resync, restart) and the acknowledgements of
//! play reports, which also carry the controller's time.

use std::time::{Duration, Instant};

use loa_protocol::{Action, Command, Message, ReportAck, Signed, VerifyOptions};
use rumqttc::QoS;

use super::Agent;
use crate::error::ReceiverError;

impl Agent {
    pub(super) fn on_command(&mut self, payload: &[u8]) -> Result<(), ReceiverError> {
        let local = self.local_now();
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
    pub(super) fn resync(&mut self) {
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

    pub(super) fn on_ack(&mut self, payload: &[u8]) -> Result<(), ReceiverError> {
        let local = self.local_now();
        let ack = match ReportAck::from_json(payload) {
            Ok(ack) => ack,
            Err(e) => {
                self.reject("report ack", &e);
                return Ok(());
            }
        };
        if let Some(now) = ack.now {
            self.tracker.sample(local, now);
            if let Some(sent) = self.rx.outbox.latest_first_send(&ack.ids) {
                self.answered(local, sent, now);
            }
        }
        let removed = self.rx.outbox.ack(&ack.ids)?;
        tracing::debug!(removed, left = self.rx.outbox.len(), "reports acknowledged");
        Ok(())
    }
}
