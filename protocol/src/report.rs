//! Play reports, sent by a receiver on `{prefix}/up/{receiver}/report` in batches, and their acknowledgement,
//! sent by the controller on `{prefix}/rx/{receiver}/ack`.
//!
//! A receiver keeps every report on disk until an ack lists its id, and sends the unacked ones again after a
//! reconnect; the controller stores each `(receiver, id)` once and acks what it stored, so duplicates are
//! harmless. Report ids are a per-device counter that never goes back (persisted across restarts).

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::PlayId;
use crate::time::Timestamp;
use crate::Message;

/// Most reports in one batch.
pub const MAX_BATCH: usize = 64;
/// Most ids in one ack.
pub const MAX_ACK: usize = 256;

/// Why a play did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// A bulletin was not (completely) downloaded in time.
    NotDownloaded,
    /// A bulletin had expired by the time the play was due.
    Expired,
    /// The receiver's clock is not synchronised, so it did not trust the time.
    ClockUnsynced,
    /// The audio output failed.
    SinkError,
    /// The amplifier reported a fault.
    AmpFault,
    /// It fell in the village's quiet hours.
    QuietHours,
    /// A newer plan or a command removed it.
    Cancelled,
    /// The receiver was off or restarting at the time.
    PoweredOff,
    /// A bulletin failed its hash check and could not be fetched again in time.
    VerifyFailed,
    /// The loudspeaker line was open or shorted (see the heartbeat's `spk`), so it was not played.
    SpeakerFault,
    /// Anything else (also what unknown reasons from a newer receiver parse as).
    #[serde(other)]
    Other,
}

/// What happened to a play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PlayEvent {
    /// It started.
    Started,
    /// It played to the end.
    Finished,
    /// It was cut off by a higher-tier play or a stop command.
    Preempted {
        /// The play that took over, if it was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<PlayId>,
    },
    /// It did not play.
    Missed {
        /// Why.
        reason: MissReason,
    },
}

/// One event of one play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayReport {
    /// Unique per device, rising: the controller deduplicates on it.
    pub id: u64,
    /// The plan's play.
    pub play: PlayId,
    /// When it happened (receiver clock, UTC, ms).
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub event: PlayEvent,
}

/// Reports sent together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// 1 to [`MAX_BATCH`] reports.
    pub reports: Vec<PlayReport>,
}

impl Message for ReportBatch {
    const KIND: &'static str = "report batch";
    const MAX_BYTES: usize = 16 * 1024;

    fn validate(&self) -> Result<(), ProtocolError> {
        if self.reports.is_empty() || self.reports.len() > MAX_BATCH {
            return Err(ProtocolError::invalid(
                Self::KIND,
                format!("{} reports (1 to {MAX_BATCH})", self.reports.len()),
            ));
        }
        self.reports.iter().try_for_each(|r| crate::check_seq(Self::KIND, "id", r.id))
    }
}

impl ReportBatch {
    /// The ack the controller sends once it has stored this batch.
    pub fn ack(&self) -> ReportAck {
        ReportAck { ids: self.reports.iter().map(|r| r.id).collect(), now: None }
    }
}

/// The controller's acknowledgement: these report ids are stored and may be deleted by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// 1 to [`MAX_ACK`] report ids.
    pub ids: Vec<u64>,
    /// The controller's clock when it sent the ack (optional, added in v1): receivers estimate their clock
    /// offset from it. Left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<Timestamp>,
}

impl Message for ReportAck {
    const KIND: &'static str = "report ack";
    const MAX_BYTES: usize = 8 * 1024;

    fn validate(&self) -> Result<(), ProtocolError> {
        if self.ids.is_empty() || self.ids.len() > MAX_ACK {
            return Err(ProtocolError::invalid(Self::KIND, format!("{} ids (1 to {MAX_ACK})", self.ids.len())));
        }
        self.ids.iter().try_for_each(|&id| crate::check_seq(Self::KIND, "id", id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u64, event: PlayEvent) -> PlayReport {
        PlayReport {
            id,
            play: PlayId::new("p1").unwrap(),
            at: Timestamp::from_unix_ms(1_748_737_800_123).unwrap(),
            event,
        }
    }

    #[test]
    fn exact_json_of_every_event() {
        let p2 = PlayId::new("p2").unwrap();
        let cases = [
            (PlayEvent::Started, r#"{"id":1,"play":"p1","at":1748737800123,"event":"started"}"#),
            (PlayEvent::Finished, r#"{"id":1,"play":"p1","at":1748737800123,"event":"finished"}"#),
            (PlayEvent::Preempted { by: None }, r#"{"id":1,"play":"p1","at":1748737800123,"event":"preempted"}"#),
            (
                PlayEvent::Preempted { by: Some(p2) },
                r#"{"id":1,"play":"p1","at":1748737800123,"event":"preempted","by":"p2"}"#,
            ),
            (
                PlayEvent::Missed { reason: MissReason::NotDownloaded },
                r#"{"id":1,"play":"p1","at":1748737800123,"event":"missed","reason":"not_downloaded"}"#,
            ),
        ];
        for (event, json) in cases {
            let r = report(1, event);
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
            assert_eq!(serde_json::from_str::<PlayReport>(json).unwrap(), r);
        }
    }

    #[test]
    fn batch_and_ack() {
        let batch = ReportBatch {
            reports: vec![
                report(7, PlayEvent::Started),
                report(8, PlayEvent::Missed { reason: MissReason::QuietHours }),
            ],
        };
        let json = batch.to_json().unwrap();
        assert_eq!(ReportBatch::from_json(&json).unwrap(), batch);
        let ack = batch.ack();
        assert_eq!(ack.to_json().unwrap(), br#"{"ids":[7,8]}"#);
        assert_eq!(ReportAck::from_json(br#"{"ids":[7,8]}"#).unwrap(), ack);
    }

    #[test]
    fn unknown_reasons_are_other_and_bad_input_is_refused() {
        let newer = r#"{"reports":[{"id":1,"play":"p1","at":1,"event":"missed","reason":"flood"}]}"#;
        let b = ReportBatch::from_json(newer.as_bytes()).unwrap();
        assert_eq!(b.reports[0].event, PlayEvent::Missed { reason: MissReason::Other });
        let spk = r#"{"reports":[{"id":1,"play":"p1","at":1,"event":"missed","reason":"speaker_fault"}]}"#;
        let b = ReportBatch::from_json(spk.as_bytes()).unwrap();
        assert_eq!(b.reports[0].event, PlayEvent::Missed { reason: MissReason::SpeakerFault });
        for json in [
            r#"{"reports":[]}"#,
            r#"{"reports":[{"id":1,"play":"p1","at":1,"event":"exploded"}]}"#,
            r#"{"reports":[{"id":1,"play":"p1","at":1,"event":"missed"}]}"#,
            r#"{"reports":[{"id":1,"play":"p1","at":1}]}"#,
            r#"{"reports":[{"id":-1,"play":"p1","at":1,"event":"started"}]}"#,
            r#"{"ids":[]}"#,
        ] {
            assert!(ReportBatch::from_json(json.as_bytes()).is_err(), "{json}");
        }
        assert!(ReportAck::from_json(br#"{"ids":[]}"#).is_err());
        let too_many = ReportAck { ids: (0..=MAX_ACK as u64).collect(), now: None };
        assert!(too_many.to_json().is_err());
    }

    #[test]
    fn ack_now_is_optional() {
        let ack = ReportAck::from_json(br#"{"ids":[1]}"#).unwrap();
        assert_eq!(ack.now, None);
        let with = ReportAck { ids: vec![1], now: Some(Timestamp::from_unix_ms(5).unwrap()) };
        assert_eq!(with.to_json().unwrap(), br#"{"ids":[1],"now":5}"#);
        assert_eq!(ReportAck::from_json(&with.to_json().unwrap()).unwrap(), with);
    }
}
