//! Device faults that the firmware simulator (and tests) inject into a receiver: a full disk, a broken
//! loudspeaker line, a failing amplifier. [`DeviceFaults`] is a cheap clone over shared flags: give one clone to
//! [`crate::Receiver::with_faults`] and keep the other to set and clear faults while it runs. A fault clears
//! when it is set back.
//!
//! Effects (the receiver reads the flags; nothing else changes):
//! - disk full: every cache write fails with [`crate::cache::CacheError::DiskFull`], as `ENOSPC` would; the
//!   downloader pauses and retries a few seconds later, and the heartbeat's `disk_mb` reads 0;
//! - amplifier fault: the relay refuses to switch and the heartbeat's `amp` reads `fault`; plays still go to
//!   the sound output (a relay may be stuck on, or wired around) and are reported `started`, but a play that
//!   had the fault while on air ends as missed `amp_fault` instead of `finished`;
//! - speaker line open or short: the heartbeat's `spk` reads `open`/`short`; a play due during the fault is not
//!   played (driving a shorted line harms the amplifier) and is reported missed `speaker_fault`; one on air
//!   when the fault appears is stopped and reported the same way.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// The loudspeaker line as a line monitor sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SpeakerLine {
    /// Load within range.
    #[default]
    Ok,
    /// No load (cut cable, blown horn).
    Open,
    /// Shorted cable.
    Short,
}

impl SpeakerLine {
    fn to_u8(self) -> u8 {
        match self {
            SpeakerLine::Ok => 0,
            SpeakerLine::Open => 1,
            SpeakerLine::Short => 2,
        }
    }

    fn from_u8(v: u8) -> SpeakerLine {
        match v {
            1 => SpeakerLine::Open,
            2 => SpeakerLine::Short,
            _ => SpeakerLine::Ok,
        }
    }

    /// What the heartbeat's `spk` says: nothing while the line is fine.
    pub(crate) fn health(self) -> Option<loa_protocol::SpeakerState> {
        match self {
            SpeakerLine::Ok => None,
            SpeakerLine::Open => Some(loa_protocol::SpeakerState::Open),
            SpeakerLine::Short => Some(loa_protocol::SpeakerState::Short),
        }
    }
}

#[derive(Debug, Default)]
struct Flags {
    disk_full: AtomicBool,
    speaker: AtomicU8,
    amp_fault: AtomicBool,
}

/// Injected device faults, shared between clones. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct DeviceFaults {
    flags: Arc<Flags>,
}

impl DeviceFaults {
    /// No faults.
    pub fn new() -> Self {
        DeviceFaults::default()
    }

    /// Makes the disk full (`true`) or gives the space back (`false`).
    pub fn set_disk_full(&self, full: bool) {
        self.flags.disk_full.store(full, Ordering::Relaxed);
    }

    /// Whether the disk is full.
    pub fn disk_full(&self) -> bool {
        self.flags.disk_full.load(Ordering::Relaxed)
    }

    /// Sets the state of the loudspeaker line.
    pub fn set_speaker(&self, line: SpeakerLine) {
        self.flags.speaker.store(line.to_u8(), Ordering::Relaxed);
    }

    /// The state of the loudspeaker line.
    pub fn speaker(&self) -> SpeakerLine {
        SpeakerLine::from_u8(self.flags.speaker.load(Ordering::Relaxed))
    }

    /// Makes the amplifier fail (`true`) or work again (`false`).
    pub fn set_amp_fault(&self, fault: bool) {
        self.flags.amp_fault.store(fault, Ordering::Relaxed);
    }

    /// Whether the amplifier is failing.
    pub fn amp_fault(&self) -> bool {
        self.flags.amp_fault.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_and_faults_clear() {
        let faults = DeviceFaults::new();
        let sim = faults.clone();
        assert!(!faults.disk_full() && !faults.amp_fault());
        assert_eq!(faults.speaker(), SpeakerLine::Ok);
        sim.set_disk_full(true);
        sim.set_amp_fault(true);
        sim.set_speaker(SpeakerLine::Short);
        assert!(faults.disk_full() && faults.amp_fault());
        assert_eq!(faults.speaker(), SpeakerLine::Short);
        assert_eq!(faults.speaker().health(), Some(loa_protocol::SpeakerState::Short));
        sim.set_speaker(SpeakerLine::Open);
        assert_eq!(faults.speaker(), SpeakerLine::Open);
        sim.set_disk_full(false);
        sim.set_amp_fault(false);
        sim.set_speaker(SpeakerLine::Ok);
        assert!(!faults.disk_full() && !faults.amp_fault());
        assert_eq!(faults.speaker().health(), None);
    }
}
