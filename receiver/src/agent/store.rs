//! What the receiver keeps on disk besides audio, so that a reboot without a link still plays the plan:
//!
//! ```text
//! <state_dir>/plan.json                  the signed plan envelope, exactly as received
//! <state_dir>/manifests/<bulletin>.json  each signed manifest, exactly as received
//! <state_dir>/state.json                 highest plan and command `seq` accepted, plays already handled
//! ```
//!
//! Every file is replaced atomically. Envelopes are verified again when loaded (a file damaged on the SD card,
//! or signed by a key no longer trusted, is dropped with a warning). The held `seq`s survive restarts so that
//! an old plan or command captured on the wire cannot be replayed to a receiver that rebooted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use loa_protocol::{BulletinId, Manifest, Plan, PlayId, ReceiverId, Signed, Timestamp, TrustedKeys, VerifyOptions};
use serde::{Deserialize, Serialize};

use crate::cache::fsutil::write_atomic;
use crate::error::ReceiverError;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    #[serde(default)]
    plan_seq: Option<u64>,
    #[serde(default)]
    command_seq: Option<u64>,
    /// Plays of the current plan already handed to the player or reported missed.
    #[serde(default)]
    done: BTreeSet<PlayId>,
    /// Plays handed to the player whose end is not reported yet, and whether each went on air. Left here by a
    /// power cut: at the next start each is handed again (not started, still in time) or reported.
    #[serde(default)]
    handed: BTreeMap<PlayId, bool>,
}

/// The plan, manifests and sequence numbers held. See the module documentation.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    plan: Option<Plan>,
    manifests: BTreeMap<BulletinId, Manifest>,
    state: Persisted,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiverError + '_ {
    move |source| ReceiverError::State { path: path.to_path_buf(), source }
}

fn save(path: &Path, bytes: &[u8]) -> Result<(), ReceiverError> {
    write_atomic(path, bytes).map_err(ReceiverError::from)
}

impl Store {
    /// Opens the state folder (creating it) and loads what verifies at `now`.
    pub(crate) fn open(
        dir: &Path,
        keys: &TrustedKeys,
        me: &ReceiverId,
        now: Timestamp,
    ) -> Result<Store, ReceiverError> {
        let manifests_dir = dir.join("manifests");
        fs::create_dir_all(&manifests_dir).map_err(io(&manifests_dir))?;
        let state_path = dir.join("state.json");
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %state_path.display(), error = %e, "state file unreadable; starting afresh");
                Persisted::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(io(&state_path)(e)),
        };
        let opts = VerifyOptions { now, receiver: Some(me), held_seq: None };
        let plan_path = dir.join("plan.json");
        let plan = match fs::read(&plan_path) {
            Ok(bytes) => match Signed::<Plan>::open(&bytes, keys, &opts) {
                Ok(plan) => Some(plan),
                Err(e) => {
                    tracing::warn!(error = %e, "stored plan no longer verifies; waiting for a new one");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&plan_path)(e)),
        };
        let mut manifests = BTreeMap::new();
        for entry in fs::read_dir(&manifests_dir).map_err(io(&manifests_dir))? {
            let path = entry.map_err(io(&manifests_dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let opened = fs::read(&path).map_err(io(&path))?;
            match Signed::<Manifest>::open(&opened, keys, &opts) {
                Ok(m) => {
                    manifests.insert(m.bulletin.clone(), m);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "stored manifest dropped");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        tracing::info!(plan = ?plan.as_ref().map(|p| p.seq), manifests = manifests.len(), "state loaded");
        Ok(Store { dir: dir.to_path_buf(), plan, manifests, state })
    }

    fn save_state(&self) -> Result<(), ReceiverError> {
        let bytes = serde_json::to_vec(&self.state).map_err(|e| ReceiverError::State {
            path: self.dir.join("state.json"),
            source: std::io::Error::other(e),
        })?;
        save(&self.dir.join("state.json"), &bytes)
    }

    pub(crate) fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The `seq` of the newest plan accepted (also across restarts).
    pub(crate) fn plan_seq(&self) -> Option<u64> {
        self.state.plan_seq.max(self.plan.as_ref().map(|p| p.seq))
    }

    pub(crate) fn command_seq(&self) -> Option<u64> {
        self.state.command_seq
    }

    /// Keeps a verified plan (its envelope bytes `raw`) in place of the old one.
    pub(crate) fn accept_plan(&mut self, raw: &[u8], plan: Plan) -> Result<(), ReceiverError> {
        save(&self.dir.join("plan.json"), raw)?;
        self.state.plan_seq = Some(plan.seq);
        self.state.done.retain(|id| plan.play(id).is_some());
        self.plan = Some(plan);
        self.save_state()
    }

    pub(crate) fn accept_command_seq(&mut self, seq: u64) -> Result<(), ReceiverError> {
        self.state.command_seq = Some(seq);
        self.save_state()
    }

    pub(crate) fn manifest(&self, bulletin: &BulletinId) -> Option<&Manifest> {
        self.manifests.get(bulletin)
    }

    pub(crate) fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        self.manifests.values()
    }

    fn manifest_path(&self, bulletin: &BulletinId) -> PathBuf {
        self.dir.join("manifests").join(format!("{bulletin}.json"))
    }

    /// Keeps a verified manifest (its envelope bytes `raw`).
    pub(crate) fn accept_manifest(&mut self, raw: &[u8], manifest: Manifest) -> Result<(), ReceiverError> {
        save(&self.manifest_path(&manifest.bulletin), raw)?;
        self.manifests.insert(manifest.bulletin.clone(), manifest);
        Ok(())
    }

    /// Forgets a manifest (its retained message was cleared).
    pub(crate) fn remove_manifest(&mut self, bulletin: &BulletinId) -> Result<(), ReceiverError> {
        let path = self.manifest_path(bulletin);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.manifests.remove(bulletin);
        Ok(())
    }

    pub(crate) fn is_done(&self, play: &PlayId) -> bool {
        self.state.done.contains(play)
    }

    /// Records that a play was handed to the player (done, and open until [`Store::end_handed`]).
    pub(crate) fn mark_handed(&mut self, play: PlayId) -> Result<(), ReceiverError> {
        self.state.done.insert(play.clone());
        self.state.handed.insert(play, false);
        self.save_state()
    }

    /// Records that a handed play went on air.
    pub(crate) fn mark_started(&mut self, play: &PlayId) -> Result<(), ReceiverError> {
        match self.state.handed.get_mut(play) {
            Some(started) if !*started => {
                *started = true;
                self.save_state()
            }
            _ => Ok(()),
        }
    }

    /// Records that a handed play's end was reported.
    pub(crate) fn end_handed(&mut self, play: &PlayId) -> Result<(), ReceiverError> {
        if self.state.handed.remove(play).is_some() {
            self.save_state()?;
        }
        Ok(())
    }

    /// Takes the plays a power cut left handed but not ended, with whether each went on air; those that did
    /// not are no longer done (the scheduler may hand them again).
    pub(crate) fn take_interrupted(&mut self) -> Result<Vec<(PlayId, bool)>, ReceiverError> {
        if self.state.handed.is_empty() {
            return Ok(Vec::new());
        }
        let interrupted: Vec<(PlayId, bool)> = std::mem::take(&mut self.state.handed).into_iter().collect();
        for (play, started) in &interrupted {
            if !started {
                self.state.done.remove(play);
            }
        }
        self.save_state()?;
        Ok(interrupted)
    }

    /// Records that a play was handed to the player or reported missed, so a restart does not repeat it.
    pub(crate) fn mark_done(&mut self, play: PlayId) -> Result<(), ReceiverError> {
        if self.state.done.insert(play) {
            self.save_state()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::{manifest_for, plan_with, signer, ts};

    #[test]
    fn plays_a_power_cut_interrupted_are_handed_again_or_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer();
        let me = ReceiverId::new("rx-000000000001").unwrap();
        let now = ts(1_800_000_000_000);
        let keys = crate::agent::testutil::keys(&s);
        let (waiting, on_air, ended) =
            (PlayId::new("p1").unwrap(), PlayId::new("p2").unwrap(), PlayId::new("p3").unwrap());
        {
            let mut store = Store::open(dir.path(), &keys, &me, now).unwrap();
            for p in [&waiting, &on_air, &ended] {
                store.mark_handed(p.clone()).unwrap();
            }
            store.mark_started(&on_air).unwrap();
            store.mark_started(&ended).unwrap();
            store.end_handed(&ended).unwrap();
            assert!(store.is_done(&waiting) && store.is_done(&on_air) && store.is_done(&ended));
        } // the power fails
        let mut store = Store::open(dir.path(), &keys, &me, now).unwrap();
        let interrupted = store.take_interrupted().unwrap();
        assert_eq!(interrupted, vec![(waiting.clone(), false), (on_air.clone(), true)]);
        assert!(!store.is_done(&waiting), "not on air yet: the scheduler may hand it again");
        assert!(store.is_done(&on_air) && store.is_done(&ended), "no play goes on air twice");
        let mut store = Store::open(dir.path(), &keys, &me, now).unwrap();
        assert!(store.take_interrupted().unwrap().is_empty(), "reported once");
    }

    #[test]
    fn plan_manifests_and_seqs_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer();
        let me = ReceiverId::new("rx-000000000001").unwrap();
        let now = ts(1_800_000_000_000);
        let (manifest, _file) = manifest_for("b-000000000001-vi", now, 3000);
        let plan = plan_with(&me, 7, now, &[("p1", now.saturating_add_ms(60_000), "b-000000000001-vi")]);
        let signed_plan = s.sign(&plan, now, now.saturating_add_ms(86_400_000)).unwrap().to_json().unwrap();
        let signed_manifest = s.sign(&manifest, now, manifest.expires_at).unwrap().to_json().unwrap();
        {
            let mut store = Store::open(dir.path(), &crate::agent::testutil::keys(&s), &me, now).unwrap();
            assert!(store.plan().is_none());
            store.accept_plan(&signed_plan, plan.clone()).unwrap();
            store.accept_manifest(&signed_manifest, manifest.clone()).unwrap();
            store.accept_command_seq(42).unwrap();
            store.mark_done(PlayId::new("p1").unwrap()).unwrap();
        }
        let mut store = Store::open(dir.path(), &crate::agent::testutil::keys(&s), &me, now).unwrap();
        assert_eq!(store.plan(), Some(&plan));
        assert_eq!(store.plan_seq(), Some(7));
        assert_eq!(store.command_seq(), Some(42));
        assert!(store.is_done(&PlayId::new("p1").unwrap()));
        assert_eq!(store.manifest(&manifest.bulletin), Some(&manifest));
        store.remove_manifest(&manifest.bulletin).unwrap();
        // A tampered stored plan is dropped, but its seq is still held.
        let mut tampered = signed_plan.clone();
        let pos = tampered.windows(5).position(|w| w == b"\"p1\",").unwrap();
        tampered[pos + 2] = b'2';
        fs::write(dir.path().join("plan.json"), &tampered).unwrap();
        let store = Store::open(dir.path(), &crate::agent::testutil::keys(&s), &me, now).unwrap();
        assert!(store.plan().is_none());
        assert_eq!(store.plan_seq(), Some(7));
        assert!(store.manifest(&manifest.bulletin).is_none());
    }
}
