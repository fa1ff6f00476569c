//! The heartbeat: what [`loa_protocol::Health`] reports, gathered from the system (free disk, CPU temperature),
//! the cache, the amplifier and the agent's counters. [`TrackedAmp`] wraps the amplifier given to the player so
//! the heartbeat knows whether it is on, off or failing.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use loa_protocol::{AmpState, Health, LinkKind, Message, PlayId, Rejections};

use crate::amp::{AmpError, Amplifier};

const OFF: u8 = 0;
const ON: u8 = 1;
const FAULT: u8 = 2;

/// An amplifier that records its last state (or fault) where the heartbeat can read it.
pub(crate) struct TrackedAmp {
    inner: Box<dyn Amplifier>,
    state: Arc<AtomicU8>,
}

impl TrackedAmp {
    pub(crate) fn new(inner: Box<dyn Amplifier>) -> (TrackedAmp, Arc<AtomicU8>) {
        let state = Arc::new(AtomicU8::new(if inner.is_on() { ON } else { OFF }));
        (TrackedAmp { inner, state: Arc::clone(&state) }, state)
    }
}

impl Amplifier for TrackedAmp {
    fn set_on(&mut self, on: bool) -> Result<(), AmpError> {
        let result = self.inner.set_on(on);
        let state = match (&result, on) {
            (Err(_), _) => FAULT,
            (Ok(()), true) => ON,
            (Ok(()), false) => OFF,
        };
        self.state.store(state, Ordering::Relaxed);
        result
    }

    fn is_on(&self) -> bool {
        self.inner.is_on()
    }
}

pub(crate) fn amp_state(state: &AtomicU8) -> AmpState {
    match state.load(Ordering::Relaxed) {
        OFF => AmpState::Off,
        ON => AmpState::On,
        FAULT => AmpState::Fault,
        _ => AmpState::Unknown,
    }
}

/// Free space of the file system holding `dir`, MiB (0 if unknown).
pub(crate) fn disk_free_mb(dir: &Path) -> u32 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => u32::try_from(s.f_bavail.saturating_mul(s.f_frsize) >> 20).unwrap_or(u32::MAX),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot read free disk space");
            0
        }
    }
}

/// CPU temperature, °C, from the first thermal zone (a Raspberry Pi's SoC), if readable.
pub(crate) fn cpu_temp_c() -> Option<i8> {
    let text = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    let milli: i64 = text.trim().parse().ok()?;
    i8::try_from(milli / 1000).ok()
}

/// Everything the heartbeat reports besides what the system says.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub up_s: u32,
    pub cache_bytes: u64,
    pub clock_ms: Option<i32>,
    pub amp: AmpState,
    pub playing: Option<String>,
    pub ready: u16,
    pub plan: Option<u64>,
    pub rej: Rejections,
}

/// The heartbeat's JSON (at most 300 bytes), or `None` if it cannot be encoded (logged).
pub(crate) fn encode(s: Snapshot, state_dir: &Path) -> Option<Vec<u8>> {
    let health = Health {
        up_s: s.up_s,
        ver: env!("CARGO_PKG_VERSION").chars().take(loa_protocol::health::MAX_VERSION_LEN).collect(),
        disk_mb: disk_free_mb(state_dir),
        cache_mb: u32::try_from(s.cache_bytes >> 20).unwrap_or(u32::MAX),
        temp_c: cpu_temp_c(),
        link: LinkKind::Unknown,
        dbm: None,
        clock_ms: s.clock_ms,
        amp: s.amp,
        playing: s.playing.and_then(|p| PlayId::new(p).ok()),
        ready: s.ready,
        plan: s.plan,
        rej: s.rej,
    };
    match health.to_json() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the heartbeat");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amp::SimulatedAmp;

    #[test]
    fn heartbeat_fits_and_tracks_the_amp() {
        let sim = SimulatedAmp::new();
        let (mut amp, state) = TrackedAmp::new(Box::new(sim.clone()));
        assert_eq!(amp_state(&state), AmpState::Off);
        amp.set_on(true).unwrap();
        assert_eq!(amp_state(&state), AmpState::On);
        sim.set_failing(true);
        assert!(amp.set_on(false).is_err());
        assert_eq!(amp_state(&state), AmpState::Fault);
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot {
            up_s: u32::MAX,
            cache_bytes: u64::MAX,
            clock_ms: Some(i32::MIN),
            amp: amp_state(&state),
            playing: Some("p-0601-0730-xxxxxxxxxxx".into()),
            ready: u16::MAX,
            plan: Some(loa_protocol::MAX_SEQ),
            rej: Rejections::from([u16::MAX; 7]),
        };
        let bytes = encode(snap, dir.path()).unwrap();
        assert!(bytes.len() <= 300, "{}", bytes.len());
        assert!(disk_free_mb(dir.path()) > 0);
    }
}
