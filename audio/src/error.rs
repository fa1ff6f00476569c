//! The one error type of the audio crate. Each variant tells the caller what to do: ask for another file
//! (`Unsupported`, `Corrupt`, `Empty`, `Silent`), shorten the recording (`TooLong`), fix the request
//! (`InvalidOption`), or look at the disk (`Io`).

use std::time::Duration;

/// What went wrong while reading, processing or writing audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not a format Loa reads (or a codec inside a known container that it cannot decode).
    #[error("unsupported audio format: {0}")]
    Unsupported(String),

    /// The file is in a known format but its data is damaged or cut short.
    #[error("corrupt audio data at byte {position}: {detail}")]
    Corrupt {
        /// Byte offset in the input where the damage was found (best effort; 0 when unknown).
        position: u64,
        /// What was wrong, in words.
        detail: String,
    },

    /// The recording is longer than the configured cap (found from the headers where possible).
    #[error("recording is too long: {found:?} (the limit is {limit:?})")]
    TooLong {
        /// How long the input is (or claims to be).
        found: Duration,
        /// The configured cap.
        limit: Duration,
    },

    /// The input holds no audio at all.
    #[error("the file holds no audio")]
    Empty,

    /// The input holds audio, but it is silent (nothing to normalise or broadcast).
    #[error("the recording is silent")]
    Silent,

    /// An option given by the caller is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// Reading or writing a file failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl AudioError {
    /// Shorthand for a [`AudioError::Corrupt`] error.
    pub fn corrupt(position: u64, detail: impl Into<String>) -> Self {
        AudioError::Corrupt { position, detail: detail.into() }
    }
}
