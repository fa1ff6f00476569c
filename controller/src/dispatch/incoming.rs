//! Messages from receivers: status (online/offline), health, chunk requests and play reports. Anything
//! malformed, unknown or not allowed is logged with the receiver and topic and counted in [`super::Stats`],
//! never an error: one bad device must not stop dispatch for the others.

use loa_protocol::{
    ChunkRequest, Health, Message, PlayEvent, ReceiverId, ReportBatch, Status, StatusState, Timestamp, Topic,
};

use super::files::ServedFile;
use super::{DispatchError, Dispatcher, PUSHED_HEAD_GRACE};
use crate::store::dispatch::{self as q, PlayUpdate};
use crate::store::StoreError;

impl Dispatcher {
    /// Handles one message from the broker.
    pub(super) async fn handle(&mut self, topic: &str, payload: &[u8]) -> Result<(), DispatchError> {
        let parsed = match self.topics.parse(topic) {
            Ok(t) => t,
            Err(e) => return self.drop_message(topic, &e.to_string()),
        };
        let now = self.now();
        let outcome = match parsed {
            Topic::Status(rx) => {
                let came_online = self.on_status(&rx, payload, now);
                if let Ok(Some(session)) = came_online {
                    // A live (not retained) plan tells a receiver that just booted the controller's time; it
                    // names the status it answers, so the receiver can measure the round trip.
                    return self.republish_for(&rx, now, session).await;
                }
                came_online.map(|_| ())
            }
            Topic::Health(rx) => self.on_health(&rx, payload, now),
            Topic::ChunkRequest(rx) => return self.on_chunk_request(&rx, payload, now).await,
            Topic::Reports(rx) => return self.on_reports(&rx, payload, now).await,
            // Our own downlink messages come back only if someone subscribes us to them; ignore.
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(why) => self.drop_message(topic, &why),
        }
    }

    fn drop_message(&self, topic: &str, why: &str) -> Result<(), DispatchError> {
        tracing::warn!(topic, why, "message from a receiver dropped");
        self.count(|s| s.dropped += 1);
        Ok(())
    }

    /// Returns the session of the receiver if it came online.
    fn on_status(&mut self, rx: &ReceiverId, payload: &[u8], now: Timestamp) -> Result<Option<u64>, String> {
        if payload.is_empty() {
            return Ok(None); // a cleared retained status
        }
        let status = Status::from_json(payload).map_err(|e| e.to_string())?;
        let latest = self.sessions.get(rx.as_str()).copied();
        match status.state {
            StatusState::Online => {
                self.sessions.insert(rx.to_string(), status.session.max(latest.unwrap_or(0)));
                q::set_online(&self.store, rx.as_str(), true, now.unix_ms()).map_err(|e| e.to_string())?;
            }
            StatusState::Offline => {
                if latest.is_none_or(|s| status.session >= s) {
                    q::set_online(&self.store, rx.as_str(), false, now.unix_ms()).map_err(|e| e.to_string())?;
                }
            }
        }
        tracing::info!(receiver = %rx, state = ?status.state, session = status.session, "receiver status");
        Ok((status.state == StatusState::Online).then_some(status.session))
    }

    async fn republish_for(&mut self, rx: &ReceiverId, now: Timestamp, session: u64) -> Result<(), DispatchError> {
        let area = match self.store.receiver(rx.as_str()) {
            Ok(r) => r.area_id,
            Err(StoreError::NotFound { .. }) => {
                return self.drop_message(&self.topics.status(rx), "status of an unregistered receiver")
            }
            Err(e) => return Err(e.into()),
        };
        match self.publish_plan(rx, area, now, true, Some(session)).await {
            Err(DispatchError::Mqtt(e)) => Err(DispatchError::Mqtt(e)),
            Err(e) => {
                tracing::error!(receiver = %rx, error = %e, "plan not published");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn on_health(&mut self, rx: &ReceiverId, payload: &[u8], now: Timestamp) -> Result<(), String> {
        Health::from_json(payload).map_err(|e| e.to_string())?;
        let json = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        q::set_health(&self.store, rx.as_str(), json, now.unix_ms()).map_err(|e| e.to_string())?;
        self.store.record_health_sample(rx.as_str(), json, now.unix_ms()).map(|_| ()).map_err(|e| e.to_string())
    }

    async fn on_chunk_request(&mut self, rx: &ReceiverId, payload: &[u8], now: Timestamp) -> Result<(), DispatchError> {
        let topic = self.topics.chunk_request(rx);
        let request = match ChunkRequest::from_json(payload) {
            Ok(r) => r,
            Err(e) => return self.drop_message(&topic, &e.to_string()),
        };
        if !self.is_emergency(rx.as_str(), request.bulletin.as_str()) && self.holding(rx.as_str()) {
            tracing::debug!(receiver = %rx, bulletin = %request.bulletin, "request held back: an emergency goes first");
            return Ok(()); // the receiver asks again after its timeout
        }
        let Some(variant) = q::variant_by_protocol_id(&self.store, request.bulletin.as_str())? else {
            return self.drop_message(&topic, &format!("unknown bulletin {}", request.bulletin));
        };
        if !q::may_fetch(&self.store, rx.as_str(), &variant.bulletin_id, now.unix_ms())? {
            return self.drop_message(&topic, &format!("bulletin {} is not planned for it", request.bulletin));
        }
        let file = match self.files.get(&self.store, &variant, now) {
            Ok(f) => f,
            Err(e) => return self.drop_message(&topic, &e.to_string()),
        };
        if let Err(e) = request.check_against(&file.manifest) {
            return self.drop_message(&topic, &e.to_string());
        }
        let total = file.manifest.chunk_count() as usize;
        let key = (rx.to_string(), request.bulletin.to_string());
        let before = self.sent.get(&key).map_or(0, |s| s.iter().filter(|b| **b).count());
        // The request that crossed a pushed head on its way (see `push_head`) does not get it twice.
        let pushed = self.pushed_heads.remove(&key).is_some_and(|at| at.elapsed() < PUSHED_HEAD_GRACE);
        let indices: Vec<u32> = request.indices().filter(|i| !(pushed && *i == 0)).collect();
        if pushed && indices.len() < request.indices().count() {
            tracing::debug!(receiver = %rx, bulletin = %request.bulletin, "the pushed first chunk is not sent again");
            self.count(|s| s.heads_not_resent += 1);
        }
        self.send_chunks(rx, request.bulletin.as_str(), &file, &indices).await?;
        let after = self.sent.get(&key).map_or(0, |s| s.iter().filter(|b| **b).count());
        let percent = |n: usize| (n * 100 / total.max(1)) as u8;
        if percent(after) / 10 != percent(before) / 10 || after == total {
            q::set_progress(&self.store, rx.as_str(), &variant.bulletin_id, percent(after), now.unix_ms())?;
        }
        Ok(())
    }

    /// Publishes chunks `indices` of `file` (wire id `bulletin`) to `rx`, counting them and marking them sent.
    async fn send_chunks(
        &mut self,
        rx: &ReceiverId,
        bulletin: &str,
        file: &ServedFile,
        indices: &[u32],
    ) -> Result<(), DispatchError> {
        let out = self.topics.chunks(rx);
        let total = file.manifest.chunk_count() as usize;
        let key = (rx.to_string(), bulletin.to_string());
        for &index in indices {
            let frame = file.manifest.frame(&file.bytes, index)?;
            let len = frame.data.len() as u64;
            self.client.publish(out.clone(), rumqttc::QoS::AtMostOnce, false, frame.encode()?).await?;
            self.count(|s| {
                s.chunks += 1;
                s.chunk_bytes += len;
                match s.chunks_to.get_mut(rx.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        s.chunks_to.insert(rx.to_string(), 1);
                    }
                }
            });
            let sent = self.sent.entry(key.clone()).or_insert_with(|| vec![false; total]);
            if let Some(slot) = sent.get_mut(index as usize) {
                *slot = true;
            }
        }
        Ok(())
    }

    /// Sends the first chunk of emergency file `bulletin` to `rx` unasked, right behind its urgent plan: the
    /// receiver's request would cost a round trip (0.6 s on GPRS) before the warning's first bytes set off. The
    /// receiver asks for it anyway (it cannot know); that one request does not get it again (`on_chunk_request`).
    pub(super) async fn push_head(
        &mut self,
        rx: &ReceiverId,
        bulletin: &str,
        now: Timestamp,
    ) -> Result<(), DispatchError> {
        if self.sent_whole(rx.as_str(), bulletin) {
            return Ok(()); // it was sent whole before: the receiver holds it or asks for what it lacks
        }
        let Some(variant) = q::variant_by_protocol_id(&self.store, bulletin)? else { return Ok(()) };
        let file = match self.files.get(&self.store, &variant, now) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(receiver = %rx, bulletin, error = %e, "emergency head not pushed");
                return Ok(());
            }
        };
        self.send_chunks(rx, bulletin, &file, &[0]).await?;
        self.pushed_heads.insert((rx.to_string(), bulletin.to_string()), tokio::time::Instant::now());
        self.count(|s| s.heads_pushed += 1);
        Ok(())
    }

    async fn on_reports(&mut self, rx: &ReceiverId, payload: &[u8], now: Timestamp) -> Result<(), DispatchError> {
        let topic = self.topics.reports(rx);
        let batch = match ReportBatch::from_json(payload) {
            Ok(b) => b,
            Err(e) => return self.drop_message(&topic, &e.to_string()),
        };
        for report in &batch.reports {
            let body = serde_json::to_string(report).unwrap_or_default();
            let at = report.at.unix_ms();
            let update = match &report.event {
                PlayEvent::Started => PlayUpdate::Started(at),
                PlayEvent::Finished => PlayUpdate::Finished(at),
                PlayEvent::Preempted { by } => PlayUpdate::Preempted(
                    at,
                    by.as_ref().map_or_else(|| "stopped".to_string(), |b| format!("preempted by {b}")),
                ),
                PlayEvent::Missed { reason } => PlayUpdate::Missed(
                    serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_else(|| format!("{reason:?}")),
                ),
            };
            let stored = q::store_report(
                &self.store,
                rx.as_str(),
                report.id,
                &body,
                now.unix_ms(),
                report.play.as_str(),
                &update,
            )?;
            match stored {
                None => continue, // a resend: stored before, just acknowledge again
                Some(false) => {
                    tracing::warn!(receiver = %rx, play = %report.play, "report about an unknown or finished play")
                }
                Some(true) => {}
            }
            self.count(|s| s.reports += 1);
            tracing::info!(receiver = %rx, play = %report.play, event = ?report.event, "play report");
        }
        let mut ack = batch.ack();
        ack.now = Some(now); // the receiver measures its clock offset from this
        let ack = ack.to_json()?;
        self.client.publish(self.topics.report_ack(rx), rumqttc::QoS::AtLeastOnce, false, ack).await?;
        Ok(())
    }
}
