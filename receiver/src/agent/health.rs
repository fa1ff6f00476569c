//! The heartbeat: what [`loa_protocol::Health`] reports, gathered from the system (free disk, CPU temperature),
//! the cache, the amplifier, the injected [`DeviceFaults`] and the agent's counters. [`TrackedAmp`] wraps the
//! amplifier given to the player so the heartbeat knows whether it is on, off or failing (and fails it while
//! an amplifier fault is injected). The heartbeat stays within 300 bytes: this receiver never sends `dbm`, so
//! even a speaker fault fits (296 bytes at worst); should it not, `temp_c` is left out.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use loa_protocol::{AmpState, Health, LinkKind, Message, PlayId, ProtocolError, Rejections, SpeakerState};
use rumqttc::QoS;

use super::{scheduler, Agent};
use crate::amp::{AmpError, Amplifier};
use crate::faults::DeviceFaults;

/// Where the faults a [`TrackedAmp`] obeys are swapped in by [`crate::Receiver::with_faults`].
pub(crate) type FaultSlot = Arc<Mutex<DeviceFaults>>;

const OFF: u8 = 0;
const ON: u8 = 1;
const FAULT: u8 = 2;

/// An amplifier that records its last state (or fault) where the heartbeat can read it.
pub(crate) struct TrackedAmp {
    inner: Box<dyn Amplifier>,
    state: Arc<AtomicU8>,
    faults: FaultSlot,
}

impl TrackedAmp {
    pub(crate) fn new(inner: Box<dyn Amplifier>, faults: FaultSlot) -> (TrackedAmp, Arc<AtomicU8>) {
        let state = Arc::new(AtomicU8::new(if inner.is_on() { ON } else { OFF }));
        (TrackedAmp { inner, state: Arc::clone(&state), faults }, state)
    }
}

impl Amplifier for TrackedAmp {
    fn set_on(&mut self, on: bool) -> Result<(), AmpError> {
        if self.faults.lock().unwrap_or_else(PoisonError::into_inner).amp_fault() {
            // The heartbeat reads an injected fault from the faults themselves, so it clears with them.
            return Err(AmpError::Fault { on, detail: "amplifier fault (injected)".into() });
        }
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
    pub disk_full: bool,
    pub spk: Option<SpeakerState>,
}

/// The heartbeat's JSON (at most 300 bytes), or `None` if it cannot be encoded (logged).
pub(crate) fn encode(s: Snapshot, state_dir: &Path) -> Option<Vec<u8>> {
    let mut health = Health {
        up_s: s.up_s,
        ver: env!("CARGO_PKG_VERSION").chars().take(loa_protocol::health::MAX_VERSION_LEN).collect(),
        disk_mb: if s.disk_full { 0 } else { disk_free_mb(state_dir) },
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
        spk: s.spk,
    };
    let mut encoded = health.to_json();
    if matches!(encoded, Err(ProtocolError::TooLarge { .. })) {
        health.temp_c = None;
        encoded = health.to_json();
    }
    match encoded {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the heartbeat");
            None
        }
    }
}

impl Agent {
    pub(super) fn send_health(&mut self) {
        let plan = self.rx.store.plan();
        let now = self.now();
        let (store, cache, dl) = (&self.rx.store, &self.rx.cache, &self.downloader);
        let ready =
            plan.map_or(0, |p| scheduler::ready_count(p, now, |b, at| Self::readiness(store, cache, dl, b, at)));
        let link = self.downloader.link();
        tracing::debug!(rate = ?link.rate(), min_rtt = ?link.min_rtt(), srtt = ?link.srtt(), "link measured");
        let faults = &self.rx.faults;
        let snapshot = Snapshot {
            up_s: u32::try_from(self.started_at.elapsed().as_secs()).unwrap_or(u32::MAX),
            cache_bytes: self.rx.cache.usage().map(|u| u.used_bytes).unwrap_or(0),
            clock_ms: self.tracker.health_ms(),
            amp: if faults.amp_fault() { AmpState::Fault } else { amp_state(&self.rx.amp_state) },
            playing: self.rx.player.now_playing(),
            ready,
            plan: self.rx.store.plan_seq(),
            rej: self.rej,
            disk_full: faults.disk_full(),
            spk: faults.speaker().health(),
        };
        if let Some(bytes) = encode(snapshot, &self.rx.cfg.state_dir) {
            self.publish(self.rx.checked.topics.health(&self.rx.checked.id), QoS::AtMostOnce, bytes);
        }
        self.next_health = Instant::now() + std::time::Duration::from_millis(self.rx.cfg.heartbeat_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amp::SimulatedAmp;

    #[test]
    fn heartbeat_fits_and_tracks_the_amp() {
        let sim = SimulatedAmp::new();
        let faults = DeviceFaults::new();
        let (mut amp, state) = TrackedAmp::new(Box::new(sim.clone()), Arc::new(Mutex::new(faults.clone())));
        assert_eq!(amp_state(&state), AmpState::Off);
        amp.set_on(true).unwrap();
        assert_eq!(amp_state(&state), AmpState::On);
        sim.set_failing(true);
        assert!(amp.set_on(false).is_err());
        assert_eq!(amp_state(&state), AmpState::Fault);
        sim.set_failing(false);
        faults.set_amp_fault(true);
        assert!(amp.set_on(true).is_err(), "an injected fault fails the relay");
        faults.set_amp_fault(false);
        amp.set_on(true).unwrap();
        assert_eq!(amp_state(&state), AmpState::On);
        amp.set_on(false).unwrap();
        sim.set_failing(true);
        assert!(amp.set_on(false).is_err());
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
            disk_full: true,
            spk: Some(SpeakerState::Short),
        };
        let bytes = encode(snap, dir.path()).unwrap();
        assert!(bytes.len() <= 300, "{}", bytes.len());
        let health = Health::from_json(&bytes).unwrap();
        assert_eq!((health.disk_mb, health.spk), (0, Some(SpeakerState::Short)));
        assert!(disk_free_mb(dir.path()) > 0);
    }
}
