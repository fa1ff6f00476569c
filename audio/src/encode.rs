//! Encoding: 16 kHz mono speech into an RFC 7845 Ogg Opus file with libopus.
//!
//! VBR at a target bitrate (6–64 kbit/s, default 12), application VOIP for speech (AUDIO with `music`), frames
//! of 20, 40 or 60 ms. The encoder's look-ahead becomes the OpusHead pre-skip and the input length becomes the
//! end trim, so a decoder gives back exactly as many samples as went in. Pages close at least every second of
//! audio so a receiver can start playing a file that is still arriving. Output is deterministic: the same
//! input and options give the same bytes (the stream serial is derived from the content).

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

/// Encodes mono samples at 16 kHz (values in [-1, 1]) to Ogg Opus bytes.
pub fn encode_ogg_opus(samples: &[f32], opts: &EncodeOptions) -> Result<Vec<u8>, AudioError> {
    opts.validate()?;
    if samples.is_empty() {
        return Err(AudioError::Empty);
    }
    let app = if opts.music { Application::Audio } else { Application::Voip };
    let mut encoder = Encoder::new(SPEECH_RATE, Channels::Mono, app).map_err(codec_error)?;
    let bits = i32::try_from(opts.bitrate_kbps * 1000).map_err(|_| AudioError::InvalidOption("bitrate".into()))?;
    encoder.set_bitrate(Bitrate::Bits(bits)).map_err(codec_error)?;
    encoder.set_vbr(true).map_err(codec_error)?;
    encoder.set_complexity(i32::from(opts.complexity)).map_err(codec_error)?;
    encoder.set_signal(if opts.music { Signal::Music } else { Signal::Voice }).map_err(codec_error)?;
    let lookahead = usize::try_from(encoder.get_lookahead().map_err(codec_error)?).unwrap_or(0);

    let rate_factor = 48_000 / SPEECH_RATE as u64; // Ogg Opus counts in 48 kHz samples
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

    let frame = (SPEECH_RATE * opts.frame_ms / 1000) as usize;
    let mut writer = OggOpusWriter::new(serial_for(samples), &head, &tags, u64::from(opts.max_page_ms) * 48);

    // Feed the input, then enough silence to push the look-ahead out, in whole frames.
    let total = samples.len() + lookahead;
    let frames = total.div_ceil(frame);
    let mut buf = vec![0.0f32; frame];
    let mut packet = vec![0u8; 4000];
    for i in 0..frames {
        let start = i * frame;
        buf.iter_mut().for_each(|s| *s = 0.0);
        if start < samples.len() {
            let end = (start + frame).min(samples.len());
            buf[..end - start].copy_from_slice(&samples[start..end]);
        }
        let len = encoder.encode_float(&buf, &mut packet).map_err(codec_error)?;
        writer.push_packet(&packet[..len], frame as u64 * rate_factor);
    }
    Ok(writer.finish(samples.len() as u64 * rate_factor))
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
        let input: Vec<f32> = (0..8_000).map(|i| (i as f32 * 0.03).sin() * 0.3).collect();
        let a = encode_ogg_opus(&input, &EncodeOptions::default()).unwrap();
        let b = encode_ogg_opus(&input, &EncodeOptions::default()).unwrap();
        assert_eq!(a, b);
    }
}
