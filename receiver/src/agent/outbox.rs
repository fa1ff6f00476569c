//! The reports outbox: every play report is written to `<state_dir>/outbox.json` before it is sent, and stays
//! there until a report ack lists its id, so reports survive a lost link and a reboot (at-least-once; the
//! controller deduplicates on `(receiver, id)`). Ids rise for ever: the next id is stored with the reports, and
//! if the file is unreadable the counter restarts at the current time in ms, which is above any id a receiver
//! could have used before (one per play event).
//!
//! The outbox also remembers when (on the monotonic clock) each report was first sent in this run, so that an
//! ack's stamp measures the receiver's clock ([`crate::clock::OffsetTracker::answered`]); a monotonic instant is
//! immune to the wall clock being set in between.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use loa_protocol::report::MAX_BATCH;
use loa_protocol::{PlayEvent, PlayId, PlayReport, ReportBatch, Timestamp, MAX_SEQ};
use serde::{Deserialize, Serialize};

use crate::cache::fsutil::write_atomic;
use crate::error::ReceiverError;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    next_id: u64,
    reports: Vec<PlayReport>,
}

/// Reports not yet acknowledged. See the module documentation.
#[derive(Debug)]
pub(crate) struct Outbox {
    path: PathBuf,
    saved: Saved,
    /// When each report was first sent in this run, by id.
    first_sent: HashMap<u64, Instant>,
}

impl Outbox {
    /// Loads `path` (or starts empty); `now` seeds the id counter if the file is damaged.
    pub(crate) fn open(path: &Path, now: Timestamp) -> Result<Outbox, ReceiverError> {
        let saved = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => saved,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "reports outbox unreadable; unsent reports are lost");
                    Saved { next_id: now.unix_ms().max(1) as u64, reports: Vec::new() }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved { next_id: 1, reports: Vec::new() },
            Err(source) => return Err(ReceiverError::State { path: path.to_path_buf(), source }),
        };
        Ok(Outbox { path: path.to_path_buf(), saved, first_sent: HashMap::new() })
    }

    fn save(&self) -> Result<(), ReceiverError> {
        let bytes = serde_json::to_vec(&self.saved)
            .map_err(|e| ReceiverError::State { path: self.path.clone(), source: std::io::Error::other(e) })?;
        write_atomic(&self.path, &bytes).map_err(ReceiverError::from)
    }

    /// Adds a report and saves it; returns it (for sending at once).
    pub(crate) fn push(&mut self, play: PlayId, at: Timestamp, event: PlayEvent) -> Result<PlayReport, ReceiverError> {
        let id = self.saved.next_id.clamp(1, MAX_SEQ);
        self.saved.next_id = id.saturating_add(1).min(MAX_SEQ);
        let report = PlayReport { id, play, at, event };
        self.saved.reports.push(report.clone());
        self.save()?;
        Ok(report)
    }

    /// Notes that every report held is being sent at `now` (the first send of each counts).
    pub(crate) fn mark_sent(&mut self, now: Instant) {
        for r in &self.saved.reports {
            self.first_sent.entry(r.id).or_insert(now);
        }
    }

    /// The latest first send among `ids` (reports sent in this run), if any: an ack listing them was stamped
    /// after it.
    pub(crate) fn latest_first_send(&self, ids: &[u64]) -> Option<Instant> {
        ids.iter().filter_map(|id| self.first_sent.get(id)).max().copied()
    }

    /// Deletes the acknowledged reports; returns how many were removed.
    pub(crate) fn ack(&mut self, ids: &[u64]) -> Result<usize, ReceiverError> {
        let before = self.saved.reports.len();
        self.saved.reports.retain(|r| !ids.contains(&r.id));
        for id in ids {
            self.first_sent.remove(id);
        }
        let removed = before - self.saved.reports.len();
        if removed > 0 {
            self.save()?;
        }
        Ok(removed)
    }

    /// The unacknowledged reports, oldest first, in batches the protocol accepts.
    pub(crate) fn batches(&self) -> Vec<ReportBatch> {
        self.saved.reports.chunks(MAX_BATCH).map(|c| ReportBatch { reports: c.to_vec() }).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.saved.reports.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loa_protocol::{Message, MissReason};

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms).unwrap()
    }

    #[test]
    fn reports_stay_until_acked_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        let p = PlayId::new("p1").unwrap();
        {
            let mut o = Outbox::open(&path, ts(5)).unwrap();
            assert_eq!(o.push(p.clone(), ts(10), PlayEvent::Started).unwrap().id, 1);
            assert_eq!(o.push(p.clone(), ts(20), PlayEvent::Finished).unwrap().id, 2);
        }
        let mut o = Outbox::open(&path, ts(5)).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o.ack(&[1, 99]).unwrap(), 1);
        let r = o.push(p.clone(), ts(30), PlayEvent::Missed { reason: MissReason::NotDownloaded }).unwrap();
        assert_eq!(r.id, 3);
        let batches = o.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].reports.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3]);
        batches[0].to_json().unwrap();
        for i in 0..100 {
            o.push(p.clone(), ts(40 + i), PlayEvent::Started).unwrap();
        }
        let batches = o.batches();
        assert_eq!(batches.len(), 2);
        for b in batches {
            b.to_json().unwrap();
        }
    }

    #[test]
    fn the_first_send_of_acked_reports_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("outbox.json"), ts(5)).unwrap();
        let p = PlayId::new("p1").unwrap();
        let t0 = Instant::now();
        o.push(p.clone(), ts(10), PlayEvent::Started).unwrap();
        o.mark_sent(t0);
        o.push(p.clone(), ts(20), PlayEvent::Finished).unwrap();
        let t1 = t0 + std::time::Duration::from_secs(3);
        o.mark_sent(t1);
        o.mark_sent(t1 + std::time::Duration::from_secs(30)); // a resend does not move the first send
        assert_eq!(o.latest_first_send(&[1]), Some(t0));
        assert_eq!(o.latest_first_send(&[1, 2]), Some(t1));
        assert_eq!(o.latest_first_send(&[7]), None, "not sent in this run");
        o.ack(&[1, 2]).unwrap();
        assert_eq!(o.latest_first_send(&[1, 2]), None);
    }

    #[test]
    fn a_damaged_outbox_restarts_ids_above_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        std::fs::write(&path, b"{not json").unwrap();
        let mut o = Outbox::open(&path, ts(1_800_000_000_000)).unwrap();
        assert_eq!(o.push(PlayId::new("p").unwrap(), ts(1), PlayEvent::Started).unwrap().id, 1_800_000_000_000);
    }
}
