//! Encoding: 16 kHz mono speech into an RFC 7845 Ogg Opus file with libopus.
//!
//! VBR at a target bitrate (6–64 kbit/s, default 12), application VOIP for speech (AUDIO with `music`), frames
//! of 20, 40 or 60 ms. The encoder's look-ahead becomes the OpusHead pre-skip and the input length becomes the
//! end trim, so a decoder gives back exactly as many samples as went in. Pages close at least every second of
//! audio so a receiver can start playing a file that is still arriving. Output is deterministic: the same
//! input and options give the same bytes (the stream serial is derived from the content). Audio of 10 s or more
//! is encoded as two halves on two threads ([`encode_stream`]); [`OpusStream`] holds the packets before they
//! are wrapped in Ogg pages, so the pipeline can still set the output gain.

use opus::{Application, Bitrate, Channels, Encoder, Signal};

use crate::ogg::{OggOpusWriter, OpusHead, OpusTags};
use crate::{AudioError, SPEECH_RATE};

/// Encoder settings.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Target bitrate, kbit/s (6–64; default 12).
    pub bitrate_kbps: u32,
    /// Frame duration, ms (20, 40 or 60; default 60: fewest bytes at equal quality, see docs/benchmarks.md).
    pub frame_ms: u32,
    /// libopus complexity 0–10 (default 10).
    pub complexity: u8,
    /// Tune for music (Opus AUDIO) rather than speech (VOIP).
    pub music: bool,
    /// Longest span of audio on one Ogg page, ms (default 1000).
    pub max_page_ms: u32,
    /// Tags written into OpusTags (e.g. TITLE, CATEGORY, LANGUAGE).
    pub tags: Vec<(String, String)>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            bitrate_kbps: 12,
            frame_ms: 60,
            complexity: 10,
            music: false,
            max_page_ms: 1000,
            tags: Vec::new(),
        }
    }
}

impl EncodeOptions {
    /// Rejects settings outside what Loa supports.
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(6..=64).contains(&self.bitrate_kbps) {
            return Err(AudioError::InvalidOption(format!("bitrate {} kbit/s is outside 6..64", self.bitrate_kbps)));
        }
        if ![20, 40, 60].contains(&self.frame_ms) {
            return Err(AudioError::InvalidOption(format!("frame size {} ms is not 20, 40 or 60", self.frame_ms)));
        }
        if self.complexity > 10 {
            return Err(AudioError::InvalidOption(format!("complexity {} is outside 0..10", self.complexity)));
        }
        if !(self.frame_ms..=1000).contains(&self.max_page_ms) {
            return Err(AudioError::InvalidOption(format!(
                "page length {} ms must be between one frame and 1000 ms",
                self.max_page_ms
            )));
        }
        Ok(())
    }
}

/// The version string written as the OpusTags vendor and ENCODER tag.
pub fn encoder_name() -> String {
    format!("loa-audio {} ({})", env!("CARGO_PKG_VERSION"), opus::version())
}

fn codec_error(err: opus::Error) -> AudioError {
    AudioError::InvalidOption(format!("opus encoder: {err}"))
}

/// Audio at least this long (16 kHz samples: 10 s) is encoded as two halves on two threads.
const SPLIT_MIN_SAMPLES: usize = 10 * SPEECH_RATE as usize;

/// How much audio the second half's encoder hears before its half begins (discarded), so that its state
/// matches the first encoder's where the halves meet.
const WARM_UP_MS: u32 = 1000;

/// The Opus packets of one mono 16 kHz stream and the headers that describe it: the encoder's output before it
/// is wrapped in Ogg pages, so that the pipeline can still set the output gain.
#[derive(Debug, Clone)]
pub struct OpusStream {
    /// The identification header (pre-skip = the encoder's look-ahead).
    pub head: OpusHead,
    /// The comment header.
    pub tags: OpusTags,
    /// One packet per frame, in order.
    pub packets: Vec<Vec<u8>>,
    /// Samples (16 kHz) in each packet.
    pub frame_samples: usize,
    /// Length of the input, 16 kHz samples (what a decoder gives back after end trimming).
    pub input_samples: usize,
    /// Longest span of audio on one Ogg page, 48 kHz samples.
    max_page_48k: u64,
    serial: u32,
}

impl OpusStream {
    /// Sets the gain every decoder applies (OpusHead output gain, RFC 7845 §5.1), rounded down to 1/256 dB.
    pub fn set_output_gain_db(&mut self, gain_db: f64) {
        let q8 = (gain_db * 256.0).floor().clamp(f64::from(i16::MIN), f64::from(i16::MAX));
        self.head.output_gain_q8 = q8 as i16;
    }

    /// The output gain in dB, as decoders apply it.
    pub fn output_gain_db(&self) -> f64 {
        f64::from(self.head.output_gain_q8) / 256.0
    }

    /// The stream as an Ogg Opus file.
    pub fn to_ogg(&self) -> Vec<u8> {
        let rate_factor = u64::from(48_000 / SPEECH_RATE); // Ogg Opus counts in 48 kHz samples
        let mut writer = OggOpusWriter::new(self.serial, &self.head, &self.tags, self.max_page_48k);
        for packet in &self.packets {
            writer.push_packet(packet, self.frame_samples as u64 * rate_factor);
        }
        writer.finish(self.input_samples as u64 * rate_factor)
    }
}

/// Encodes mono samples at 16 kHz (values in [-1, 1]) to Ogg Opus bytes.
pub fn encode_ogg_opus(samples: &[f32], opts: &EncodeOptions) -> Result<Vec<u8>, AudioError> {
    Ok(encode_stream(samples, opts)?.to_ogg())
}

/// Encodes mono samples at 16 kHz (values in [-1, 1]) to Opus packets. Audio of 10 s or more is encoded as two
/// halves on two threads, cut at the quietest frame boundary of the middle third; the second encoder first
/// hears the second before its half (its packets are dropped), so the stream decodes as one (see the seam
/// test below). The cut depends only on the input: the same input still gives the same bytes.
pub fn encode_stream(samples: &[f32], opts: &EncodeOptions) -> Result<OpusStream, AudioError> {
    encode_stream_split(samples, opts, true)
}

fn encode_stream_split(samples: &[f32], opts: &EncodeOptions, split: bool) -> Result<OpusStream, AudioError> {
    opts.validate()?;
    if samples.is_empty() {
        return Err(AudioError::Empty);
    }
    let mut first_encoder = new_encoder(opts)?;
    let lookahead = usize::try_from(first_encoder.get_lookahead().map_err(codec_error)?).unwrap_or(0);
    let rate_factor = 48_000 / SPEECH_RATE as u64;
    let head = OpusHead {
        channels: 1,
        pre_skip: u16::try_from(lookahead as u64 * rate_factor).unwrap_or(u16::MAX),
        input_sample_rate: SPEECH_RATE,
        output_gain_q8: 0,
        mapping_family: 0,
    };
    let mut comments = vec![("ENCODER".to_string(), encoder_name())];
    comments.extend(opts.tags.iter().cloned());
    let tags = OpusTags { vendor: encoder_name(), comments };

    // The input, then enough silence to push the look-ahead out, in whole frames; frame i encodes
    // samples[i * frame ..][.. frame] (zero-padded), whichever encoder does it.
    let frame = (SPEECH_RATE * opts.frame_ms / 1000) as usize;
    let frames = (samples.len() + lookahead).div_ceil(frame);
    let cut = if split { split_frame(samples, frame) } else { None };
    let packets = match cut {
        None => encode_frames(first_encoder, samples, frame, 0, 0..frames)?,
        Some(cut) => {
            let warm_up = ((SPEECH_RATE * WARM_UP_MS / 1000) as usize / frame).min(cut);
            let (first, second) = std::thread::scope(|scope| {
                let second = scope.spawn(|| encode_frames(new_encoder(opts)?, samples, frame, warm_up, cut..frames));
                let first = encode_frames(first_encoder, samples, frame, 0, 0..cut);
                (first, second.join())
            });
            // A panic in the second thread is a bug, not bad input: pass it on.
            let second = second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let mut packets = first?;
            packets.extend(second?);
            packets
        }
    };
    Ok(OpusStream {
        head,
        tags,
        packets,
        frame_samples: frame,
        input_samples: samples.len(),
        max_page_48k: u64::from(opts.max_page_ms) * 48,
        serial: serial_for(samples),
    })
}

/// A libopus encoder with the options' settings.
fn new_encoder(opts: &EncodeOptions) -> Result<Encoder, AudioError> {
    let app = if opts.music { Application::Audio } else { Application::Voip };
    let mut encoder = Encoder::new(SPEECH_RATE, Channels::Mono, app).map_err(codec_error)?;
    let bits = i32::try_from(opts.bitrate_kbps * 1000).map_err(|_| AudioError::InvalidOption("bitrate".into()))?;
    encoder.set_bitrate(Bitrate::Bits(bits)).map_err(codec_error)?;
    encoder.set_vbr(true).map_err(codec_error)?;
    encoder.set_complexity(i32::from(opts.complexity)).map_err(codec_error)?;
    encoder.set_signal(if opts.music { Signal::Music } else { Signal::Voice }).map_err(codec_error)?;
    Ok(encoder)
}

/// Packets for `frames` from a fresh `encoder` that first encodes the `warm_up` frames before them (dropped).
fn encode_frames(
    mut encoder: Encoder,
    samples: &[f32],
    frame: usize,
    warm_up: usize,
    frames: std::ops::Range<usize>,
) -> Result<Vec<Vec<u8>>, AudioError> {
    let mut out = Vec::with_capacity(frames.len());
    let mut buf = vec![0.0f32; frame];
    let mut packet = vec![0u8; 4000];
    for i in frames.start - warm_up..frames.end {
        let start = (i * frame).min(samples.len());
        let end = (start + frame).min(samples.len());
        buf.iter_mut().for_each(|s| *s = 0.0);
        buf[..end - start].copy_from_slice(&samples[start..end]);
        let len = encoder.encode_float(&buf, &mut packet).map_err(codec_error)?;
        if i >= frames.start {
            out.push(packet[..len].to_vec());
        }
    }
    Ok(out)
}

/// Where to cut long audio in two: the frame boundary in the middle third with the least energy in the two
/// frames on either side (a pause between sentences, where any difference between the encoders is inaudible).
fn split_frame(samples: &[f32], frame: usize) -> Option<usize> {
    if samples.len() < SPLIT_MIN_SAMPLES {
        return None;
    }
    let energy: Vec<f64> =
        samples.chunks(frame).map(|c| c.iter().map(|&s| f64::from(s) * f64::from(s)).sum()).collect();
    let n = energy.len();
    (n / 3..=2 * n / 3)
        .filter(|&i| i >= 2 && i + 2 <= n)
        .min_by(|&a, &b| energy[a - 2..a + 2].iter().sum::<f64>().total_cmp(&energy[b - 2..b + 2].iter().sum()))
}

/// A stream serial number derived from the content (FNV-1a over the sample bits), so output is reproducible.
fn serial_for(samples: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for s in samples.iter().step_by(97) {
        for b in s.to_bits().to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h ^ samples.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let bad = [
            EncodeOptions { bitrate_kbps: 5, ..Default::default() },
            EncodeOptions { bitrate_kbps: 65, ..Default::default() },
            EncodeOptions { frame_ms: 30, ..Default::default() },
            EncodeOptions { complexity: 11, ..Default::default() },
        ];
        for opts in bad {
            assert!(matches!(encode_ogg_opus(&[0.1; 1600], &opts), Err(AudioError::InvalidOption(_))));
        }
    }

    #[test]
    fn length_is_preserved_exactly() {
        let input: Vec<f32> = (0..16_123).map(|i| (i as f32 * 0.07).sin() * 0.3).collect();
        for frame_ms in [20, 40, 60] {
            let bytes = encode_ogg_opus(&input, &EncodeOptions { frame_ms, ..Default::default() }).unwrap();
            let decoded = crate::ogg::decode_ogg_opus(&bytes, SPEECH_RATE).unwrap();
            assert_eq!(decoded.pcm.len(), input.len(), "frame {frame_ms} ms");
            assert_eq!(decoded.head.input_sample_rate, SPEECH_RATE);
        }
    }

    #[test]
    fn same_input_same_bytes() {
        for input in [(0..8_000).map(|i| (i as f32 * 0.03).sin() * 0.3).collect(), busy_voice(11)] {
            let a = encode_ogg_opus(&input, &EncodeOptions::default()).unwrap();
            let b = encode_ogg_opus(&input, &EncodeOptions::default()).unwrap();
            assert_eq!(a, b);
        }
    }

    /// A voice-like signal with no pause anywhere: harmonics of a pitch that keeps gliding, at a level that
    /// keeps moving (the hardest place to cut a stream).
    fn busy_voice(seconds: usize) -> Vec<f32> {
        let mut phase = 0.0f32;
        (0..seconds * 16_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                phase += std::f32::consts::TAU * (140.0 + 40.0 * (t * 1.3).sin()) / 16_000.0;
                let level = 0.15 + 0.1 * (t * 3.1).sin();
                level * (1..=12).map(|h| (phase * h as f32).sin() / h as f32).sum::<f32>()
            })
            .collect()
    }

    /// Signal-to-noise ratio of `decoded` against `input` over `range`, dB.
    fn snr_db(input: &[f32], decoded: &[i16], range: std::ops::Range<usize>) -> f64 {
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for i in range {
            let (x, y) = (f64::from(input[i]), f64::from(decoded[i]) / 32768.0);
            signal += x * x;
            noise += (x - y) * (x - y);
        }
        10.0 * (signal / noise).log10()
    }

    #[test]
    fn the_two_halves_decode_as_one_stream_without_a_seam() {
        let input = busy_voice(12);
        for frame_ms in [20, 60] {
            let opts = EncodeOptions { frame_ms, ..Default::default() };
            let frame = (16 * frame_ms) as usize;
            let cut = split_frame(&input, frame).expect("12 s is cut in two") * frame;
            assert!((4 * 16_000..8 * 16_000).contains(&cut), "cut at {cut}");
            let decode = |split| {
                let stream = encode_stream_split(&input, &opts, split).unwrap();
                crate::ogg::decode_ogg_opus(&stream.to_ogg(), SPEECH_RATE).unwrap().pcm
            };
            let (whole, halves) = (decode(false), decode(true));
            assert_eq!(halves.len(), input.len());
            // Around the cut (±100 ms) the two-encoder stream is as close to the input as the one-encoder stream.
            let around = cut - 1600..cut + 1600;
            let (w, h) = (snr_db(&input, &whole, around.clone()), snr_db(&input, &halves, around));
            eprintln!("{frame_ms} ms: SNR around the cut: one encoder {w:.2} dB, two {h:.2} dB");
            assert!(h > w - 2.0, "{frame_ms} ms: one encoder {w:.2} dB, two {h:.2} dB");
            // No click: the largest error near the cut stays within 1.5 × the one-encoder stream's there.
            let max_err = |d: &[i16]| {
                (cut - 1600..cut + 1600).map(|i| (input[i] - f32::from(d[i]) / 32768.0).abs()).fold(0.0f32, f32::max)
            };
            let (w, h) = (max_err(&whole), max_err(&halves));
            eprintln!("{frame_ms} ms: largest error near the cut: one encoder {w:.4}, two {h:.4}");
            assert!(h <= 1.5 * w, "{frame_ms} ms: largest error near the cut: one encoder {w}, two {h}");
        }
    }
}
