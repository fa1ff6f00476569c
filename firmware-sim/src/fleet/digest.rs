//! A sink that remembers what went on air: for each play, the SHA-256 of its PCM, how many samples, and whether
//! it played to its end, so that a soak can show that every play of a bulletin put the same sound on air (nothing
//! corrupt) and that no play went out twice. It paces in real time as a sound card would ([`NullSink`]
//! underneath). A play cut by a power cut leaves no record: its sink never hears the end.

use std::sync::{Arc, Mutex, PoisonError};

use loa_receiver::sink::{NullSink, PlayInfo, Sink, SinkError, SPEECH_RATE};
use sha2::{Digest, Sha256};

/// One play as the sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRecord {
    /// The fleet member that played it.
    pub member: usize,
    /// The play id of the receiver's plan.
    pub play_id: String,
    /// SHA-256 of the samples written (16-bit little-endian), hex.
    pub sha256: String,
    /// Samples written.
    pub samples: u64,
    /// Played to its end (not stopped or preempted).
    pub complete: bool,
}

/// Every member's play records, shared (see [`crate::fleet::Fleet::record_plays`]).
#[derive(Debug, Clone, Default)]
pub struct PlayLog(Arc<Mutex<Vec<PlayRecord>>>);

impl PlayLog {
    /// An empty log.
    pub fn new() -> Self {
        PlayLog::default()
    }

    /// What was recorded so far.
    pub fn records(&self) -> Vec<PlayRecord> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn push(&self, record: PlayRecord) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(record);
    }
}

/// A real-time null sink that hashes each play. See the module documentation.
pub struct DigestSink {
    inner: NullSink,
    member: usize,
    log: PlayLog,
    current: Option<(String, Sha256, u64)>,
}

impl DigestSink {
    /// A sink for fleet member `member` recording into `log`.
    pub fn new(member: usize, log: PlayLog) -> Self {
        DigestSink { inner: NullSink::new(SPEECH_RATE, true), member, log, current: None }
    }

    fn end(&mut self, complete: bool) {
        if let Some((play_id, hash, samples)) = self.current.take() {
            let sha256 = hex::encode(hash.finalize());
            self.log.push(PlayRecord { member: self.member, play_id, sha256, samples, complete });
        }
    }
}

impl Sink for DigestSink {
    fn open(&mut self, play: &PlayInfo) -> Result<(), SinkError> {
        self.end(false);
        self.current = Some((play.play_id.clone(), Sha256::new(), 0));
        self.inner.open(play)
    }

    fn write(&mut self, pcm: &[i16]) -> Result<(), SinkError> {
        if let Some((_, hash, samples)) = &mut self.current {
            for s in pcm {
                hash.update(s.to_le_bytes());
            }
            *samples += pcm.len() as u64;
        }
        self.inner.write(pcm)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let result = self.inner.close();
        self.end(true);
        result
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        let result = self.inner.abort();
        self.end(false);
        result
    }

    fn rate(&self) -> u32 {
        self.inner.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(sink: &mut DigestSink, id: &str, pcm: &[i16], complete: bool) {
        sink.open(&PlayInfo { play_id: id.into(), title: "t".into() }).unwrap();
        sink.write(pcm).unwrap();
        if complete {
            sink.close().unwrap();
        } else {
            sink.abort().unwrap();
        }
    }

    #[test]
    fn same_sound_same_digest_and_cut_plays_are_marked() {
        let log = PlayLog::new();
        let mut a = DigestSink::new(0, log.clone());
        let mut b = DigestSink::new(1, log.clone());
        play(&mut a, "p-1", &[1, 2, 3], true);
        play(&mut b, "p-1", &[1, 2, 3], true);
        play(&mut b, "p-2", &[1, 2, 4], false);
        let r = log.records();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].sha256, r[1].sha256);
        assert_ne!(r[0].sha256, r[2].sha256);
        assert_eq!((r[1].member, r[1].samples, r[1].complete), (1, 3, true));
        assert!(!r[2].complete);
    }
}
