//! Loa's audio pipeline: turns whatever a commune office has into a small, loud-enough, clean Ogg Opus file.
//!
//! A bulletin flows through the modules in this order: [`decode`] reads any input (WAV, MP3, AAC/M4A, FLAC, Ogg
//! Vorbis with symphonia; Ogg Opus with libopus) into float PCM under a length cap; [`process`] downmixes to mono,
//! resamples to 16 kHz (rubato), high-passes and normalises loudness under a true-peak ceiling, measuring with
//! [`loudness`] (EBU R128); [`encode`] feeds libopus and [`ogg`] frames the packets as RFC 7845 Ogg Opus. The
//! same [`ogg`] module reads Ogg Opus back, also from a buffer that is still growing, for progressive playback.
//! [`pipeline`] joins the steps for callers (the CLI, the controller); [`check()`] decodes and measures an input
//! without encoding it, to refuse unusable audio at once with the encoder's own errors. Everything here is pure:
//! no async, no global state; the only threads are the two halves of a long recording encoded side by side
//! inside [`encode::encode_stream`]. Errors are one enum, [`AudioError`].

pub mod check;
pub mod decode;
pub mod encode;
mod error;
pub mod loudness;
pub mod ogg;
pub mod pipeline;
pub mod process;

pub use check::{check, Checked};
pub use error::AudioError;

/// Sample rate of everything Loa encodes: wideband speech.
pub const SPEECH_RATE: u32 = 16_000;
