//! The whole pipeline, for callers: bytes of any input → a broadcast-ready Ogg Opus file, with figures.
//!
//! [`encode`] decodes, prepares speech, encodes, then decodes its own output once to check its loudness and that
//! the codec did not push the true peak over the ceiling (at low bitrates Opus can overshoot by a decibel or so).
//! A loudness miss is corrected with the OpusHead output gain where the ceiling allows it; otherwise, and on an
//! overshoot, it lowers or raises the level and encodes again. [`inspect`] is what `loa-audio info` prints.

use std::time::Duration;

use crate::decode::{self, duration_of, DecodeOptions};
use crate::encode::{encode_stream, EncodeOptions, OpusStream};
use crate::loudness::{self, Loudness};
use crate::process::{normalize, prepare_speech, NormReport, ProcessOptions};
use crate::{ogg, AudioError, SPEECH_RATE};

/// All settings of the pipeline.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Decoding limits.
    pub decode: DecodeOptions,
    /// Processing targets.
    pub process: ProcessOptions,
    /// Encoder settings.
    pub encode: EncodeOptions,
}

/// What the input was.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    /// Container/codec, e.g. "wav/pcm_s16le".
    pub format: String,
    /// Channel count of the input.
    pub channels: u16,
    /// Sample rate of the input, Hz.
    pub rate: u32,
    /// Length of the input.
    pub duration: Duration,
}

/// The input after decoding and speech processing: 16 kHz mono, normalised.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the input was.
    pub input: InputInfo,
    /// 16 kHz mono samples, ready for the encoder.
    pub speech: Vec<f32>,
    /// What normalisation did.
    pub norm: NormReport,
}

/// A finished bulletin file and its figures.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The Ogg Opus file.
    pub ogg: Vec<u8>,
    /// What the input was.
    pub input: InputInfo,
    /// Length of the encoded audio.
    pub duration: Duration,
    /// Loudness and true peak of the encoded file as a receiver will decode it.
    pub output: Loudness,
}

/// Decodes and prepares `bytes` (the stage before the encoder; the benchmark scores quality against this).
pub fn prepare(bytes: &[u8], opts: &PipelineOptions) -> Result<Prepared, AudioError> {
    let pcm = decode::decode(bytes, &opts.decode)?;
    let input = InputInfo {
        format: pcm.format.clone(),
        channels: pcm.input_channels,
        rate: pcm.rate,
        duration: pcm.duration(),
    };
    let (speech, norm) = prepare_speech(&pcm.samples, pcm.rate, &opts.process)?;
    Ok(Prepared { input, speech, norm })
}

/// Encodes already prepared speech, then checks the file as a receiver will decode it. Lossy coding shifts both
/// the loudness (less treble at low bitrates) and the true peak (overshoot). When the result misses the target by
/// more than 0.5 LU or crosses the ceiling, the OpusHead output gain (which every decoder applies) corrects it
/// as far as the ceiling allows; only when that is not enough is the speech normalised again with the measured
/// shift compensated (and more limiter headroom after an overshoot) and encoded again, at most three more times.
/// Every candidate respects the ceiling; the one closest to the target wins.
pub fn encode_prepared(prepared: &Prepared, opts: &PipelineOptions) -> Result<Encoded, AudioError> {
    let (target, ceiling) = (opts.process.target_lufs, opts.process.ceiling_dbtp);
    let mut aim = target;
    let mut headroom = opts.process.headroom_db;
    let (mut best, mut level, mut peak) = fitted(&prepared.speech, opts)?;
    for _ in 1..4 {
        if best.miss(target) <= 0.5 {
            break;
        }
        if peak > ceiling {
            headroom += peak - ceiling + 0.3;
        }
        aim += target - level;
        let mut again = prepared.speech.clone();
        normalize(&mut again, SPEECH_RATE, aim, ceiling, headroom)?;
        let candidate;
        (candidate, level, peak) = fitted(&again, opts)?;
        if candidate.miss(target) < best.miss(target) {
            best = candidate;
        }
    }
    Ok(best.finish(prepared))
}

/// Encodes and measures `speech`, then moves the level to the target with the output gain as far as the ceiling
/// allows (never above it: a negative gain also takes an overshoot back under it). Returns the candidate and the
/// loudness and true peak the encoder gave before the gain.
fn fitted(speech: &[f32], opts: &PipelineOptions) -> Result<(Candidate, f64, f64), AudioError> {
    let (target, ceiling) = (opts.process.target_lufs, opts.process.ceiling_dbtp);
    let mut candidate = encode_and_measure(speech, opts)?;
    let (level, peak) = (candidate.output.integrated_lufs, candidate.output.true_peak_dbtp);
    candidate.set_gain((target - level).min(ceiling - peak));
    Ok((candidate, level, peak))
}

/// An encoded stream and how it measures when decoded.
struct Candidate {
    stream: OpusStream,
    output: Loudness,
    /// Samples a decoder gives back (16 kHz).
    decoded_samples: u64,
}

impl Candidate {
    /// Applies `gain_db` through the OpusHead output gain; the decoder scales every sample by it, so the loudness
    /// and true peak move by exactly the gain (rounded down to 1/256 dB).
    fn set_gain(&mut self, gain_db: f64) {
        let before = self.stream.output_gain_db();
        self.stream.set_output_gain_db(before + gain_db);
        let moved = self.stream.output_gain_db() - before;
        self.output.integrated_lufs += moved;
        self.output.true_peak_dbtp += moved;
    }

    /// How far the decoded loudness is from `target`, LU.
    fn miss(&self, target: f64) -> f64 {
        (self.output.integrated_lufs - target).abs()
    }

    fn finish(self, prepared: &Prepared) -> Encoded {
        Encoded {
            ogg: self.stream.to_ogg(),
            input: prepared.input.clone(),
            duration: duration_of(self.decoded_samples, SPEECH_RATE),
            output: self.output,
        }
    }
}

fn encode_and_measure(speech: &[f32], opts: &PipelineOptions) -> Result<Candidate, AudioError> {
    let stream = encode_stream(speech, &opts.encode)?;
    let decoded = ogg::decode_ogg_opus(&stream.to_ogg(), SPEECH_RATE)?;
    let pcm: Vec<f32> = decoded.pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let output = loudness::measure(&pcm, SPEECH_RATE)?;
    Ok(Candidate { stream, output, decoded_samples: pcm.len() as u64 })
}

/// The whole pipeline: any input bytes → Ogg Opus.
pub fn encode(bytes: &[u8], opts: &PipelineOptions) -> Result<Encoded, AudioError> {
    opts.process.validate()?;
    opts.encode.validate()?;
    let prepared = prepare(bytes, opts)?;
    encode_prepared(&prepared, opts)
}

/// What `loa-audio info` reports about a file.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// What the input is.
    pub input: InputInfo,
    /// Loudness and true peak of the mono downmix at the input rate.
    pub loudness: Loudness,
    /// OpusTags comments, when the file is Ogg Opus.
    pub tags: Vec<(String, String)>,
}

/// Decodes `bytes` and measures it.
pub fn inspect(bytes: &[u8], opts: &DecodeOptions) -> Result<Inspection, AudioError> {
    let pcm = decode::decode(bytes, opts)?;
    let loudness = loudness::measure(&pcm.samples, pcm.rate)?;
    let tags = if ogg::is_ogg_opus(bytes) {
        ogg::decode_ogg_opus(bytes, 48_000).map(|d| d.tags.comments).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Inspection {
        input: InputInfo {
            format: pcm.format.clone(),
            channels: pcm.input_channels,
            rate: pcm.rate,
            duration: pcm.duration(),
        },
        loudness,
        tags,
    })
}
