//! [`ReceiverError`]: why a receiver cannot start or had to stop, each variant saying what to do. Bad input
//! from the network never ends up here: it is logged and counted in the heartbeat instead.

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::config::ConfigError;
use crate::player::PlayerError;
use crate::sink::SinkError;

/// Why [`crate::Receiver`] could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The configuration is invalid: fix the named field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The audio output cannot be built: fix the `sink` setting or the sound device.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The audio cache cannot be opened or written: check the state folder's disk.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A state file cannot be written: check the state folder (permissions, full or failing disk).
    #[error("state file {}: {source}: check the state folder", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The player thread cannot start or died: restart the receiver.
    #[error(transparent)]
    Player(#[from] PlayerError),
    /// The controller sent a signed `restart` command: exit with a non-zero code so that the service manager
    /// starts the receiver again.
    #[error("restart requested by the controller: exit so the service manager restarts the receiver")]
    RestartRequested,
}

impl ReceiverError {
    /// The process exit code for this error: 75 (EX_TEMPFAIL) for a requested restart, 78 (EX_CONFIG) for
    /// configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReceiverError::RestartRequested => 75,
            ReceiverError::Config(_) | ReceiverError::Sink(_) => 78,
            _ => 1,
        }
    }
}
