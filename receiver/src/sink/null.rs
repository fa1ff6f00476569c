//! The null sink: discards audio. Paced, it takes as long as a sound card would, so the player's timing,
//! "now playing" and preemption behave as on real hardware; unpaced, a play goes by as fast as it decodes.

use super::pace::Pacer;
use super::{PlayInfo, Sink, SinkError};

/// Discards audio, optionally in real time.
#[derive(Debug)]
pub struct NullSink {
    rate: u32,
    pacer: Option<Pacer>,
    open: bool,
    samples: u64,
}

impl NullSink {
    /// A null sink at `rate`, in real time if `paced`.
    pub fn new(rate: u32, paced: bool) -> Self {
        NullSink { rate, pacer: paced.then(|| Pacer::new(rate)), open: false, samples: 0 }
    }

    /// Samples written during the current or last play.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

impl Sink for NullSink {
    fn open(&mut self, play: &PlayInfo) -> Result<(), SinkError> {
        tracing::debug!(play_id = %play.play_id, "null sink opened");
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        self.open = true;
        self.samples = 0;
        Ok(())
    }

    fn write(&mut self, pcm: &[i16]) -> Result<(), SinkError> {
        if !self.open {
            return Err(SinkError::NotOpen);
        }
        if let Some(p) = &mut self.pacer {
            p.accept(pcm.len());
        }
        self.samples += pcm.len() as u64;
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if !self.open {
            return Err(SinkError::NotOpen);
        }
        if let Some(p) = &mut self.pacer {
            p.drain();
        }
        self.open = false;
        Ok(())
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        self.open = false;
        Ok(())
    }

    fn rate(&self) -> u32 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_refuses_writes_when_closed() {
        let mut sink = NullSink::new(16_000, false);
        assert!(matches!(sink.write(&[0; 10]), Err(SinkError::NotOpen)));
        sink.open(&PlayInfo { play_id: "p".into(), title: "t".into() }).unwrap();
        sink.write(&[0; 10]).unwrap();
        sink.write(&[0; 5]).unwrap();
        sink.close().unwrap();
        assert_eq!(sink.samples(), 15);
        assert_eq!(sink.rate(), 16_000);
    }
}
