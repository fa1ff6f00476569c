//! Where decoded audio goes. A [`Sink`] takes mono 16-bit PCM at its own [`Sink::rate`], one play at a time:
//! [`Sink::open`] when a play begins, [`Sink::write`] for each block (blocking, as a sound card does when its
//! buffer is full), [`Sink::close`] when it ends normally (waits until the audio has played out) or
//! [`Sink::abort`] when it is cut short. One backend per file, as in librespot: [`null`] discards (optionally in
//! real time), [`wav`] writes one WAV file per play (for tests and for checking a receiver without speakers),
//! and `alsa` (feature `alsa`) plays on a sound card. [`from_spec`] builds one from a configuration string.

mod pace;

pub mod null;
pub mod wav;

#[cfg(feature = "alsa")]
pub mod alsa;

use std::path::PathBuf;

pub use null::NullSink;
pub use wav::WavSink;

#[cfg(feature = "alsa")]
pub use self::alsa::AlsaSink;

/// Sample rate of the null and WAV sinks built by [`from_spec`]: Loa's speech rate.
pub const SPEECH_RATE: u32 = loa_audio::SPEECH_RATE;
/// Sample rate of ALSA sinks built by [`from_spec`]: what sound cards take most widely.
pub const CARD_RATE: u32 = 48_000;

/// What a sink is told about the play it is opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayInfo {
    /// The play's id (unique per planned play).
    pub play_id: String,
    /// Human-readable title, for logs.
    pub title: String,
}

/// What went wrong in a sink; each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink specification is not one Loa knows: use `null`, `wav:DIR`, `alsa` or `alsa:DEVICE`.
    #[error("unknown sink {0:?}: use null, wav:DIR, alsa or alsa:DEVICE")]
    UnknownSpec(String),

    /// The sink needs a feature this build lacks: rebuild with it (e.g. `cargo build --features alsa`).
    #[error("sink {spec:?} needs the `{feature}` feature: rebuild loa-receiver with --features {feature}")]
    NotBuilt {
        /// The specification asked for.
        spec: String,
        /// The missing cargo feature.
        feature: &'static str,
    },

    /// `write` or `close` without a successful `open`: a bug in the caller.
    #[error("the sink is not open")]
    NotOpen,

    /// The sound device failed or refused the format: check the device name, that it exists and is free.
    #[error("sound device {device:?}: {detail}: check the device name and the sound card")]
    Device {
        /// The device name.
        device: String,
        /// What the driver said.
        detail: String,
    },

    /// Writing a file failed: check the output folder and the disk.
    #[error("i/o error on {}: {source}: check the output folder and the disk", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An audio output. See the module documentation.
pub trait Sink: Send {
    /// Gets ready for a play.
    fn open(&mut self, play: &PlayInfo) -> Result<(), SinkError>;
    /// Plays mono samples at [`Sink::rate`]; blocks while the output is full.
    fn write(&mut self, pcm: &[i16]) -> Result<(), SinkError>;
    /// Ends the play normally: returns once everything written has played out.
    fn close(&mut self) -> Result<(), SinkError>;
    /// Ends the play early (stopped or preempted): drops what has not played yet. By default, [`Sink::close`].
    fn abort(&mut self) -> Result<(), SinkError> {
        self.close()
    }
    /// Sample rate of the PCM this sink takes.
    fn rate(&self) -> u32;
}

/// Builds a sink from a specification: `null` (discards in real time), `wav:DIR` (a WAV file per play in `DIR`,
/// in real time), `alsa` (the default sound device) or `alsa:DEVICE` (e.g. `alsa:plughw:1,0`).
pub fn from_spec(spec: &str) -> Result<Box<dyn Sink>, SinkError> {
    let (kind, arg) = match spec.split_once(':') {
        Some((kind, arg)) => (kind, Some(arg)),
        None => (spec, None),
    };
    match (kind, arg) {
        ("null", None) => Ok(Box::new(NullSink::new(SPEECH_RATE, true))),
        ("wav", Some(dir)) if !dir.is_empty() => Ok(Box::new(WavSink::new(dir, SPEECH_RATE)?)),
        ("alsa", device) if device != Some("") => alsa_sink(spec, device.unwrap_or("default")),
        _ => Err(SinkError::UnknownSpec(spec.to_string())),
    }
}

#[cfg(feature = "alsa")]
fn alsa_sink(_spec: &str, device: &str) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(AlsaSink::new(device, CARD_RATE)))
}

#[cfg(not(feature = "alsa"))]
fn alsa_sink(spec: &str, _device: &str) -> Result<Box<dyn Sink>, SinkError> {
    Err(SinkError::NotBuilt { spec: spec.to_string(), feature: "alsa" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(from_spec("null").unwrap().rate(), SPEECH_RATE);
        let wav = format!("wav:{}", dir.path().join("out").display());
        assert_eq!(from_spec(&wav).unwrap().rate(), SPEECH_RATE);
        assert!(dir.path().join("out").is_dir());
        for bad in ["", "nul", "null:x", "wav", "wav:", "pulse", "alsa:"] {
            assert!(matches!(from_spec(bad), Err(SinkError::UnknownSpec(_))), "{bad}");
        }
        #[cfg(not(feature = "alsa"))]
        for spec in ["alsa", "alsa:plughw:1,0"] {
            let err = from_spec(spec).err().unwrap();
            assert!(matches!(err, SinkError::NotBuilt { feature: "alsa", .. }), "{err}");
            assert!(err.to_string().contains("--features alsa"));
        }
    }
}
