//! A cheap full check of an input: will [`crate::pipeline::encode`] accept it? For refusing unusable audio at
//! upload time, before anything is stored, instead of failing later in the background.
//!
//! [`check`] decodes the whole stream with the encoder's own decoder ([`crate::decode::decode_each`]) under the
//! same length cap, but keeps nothing: each decoded piece is only measured (sample peak, then the encoder's
//! high-pass and an integrated-loudness meter at the input's own rate). No resampling, no normalisation, no
//! encoding, and memory stays small however long the recording. It gives the encoder's typed errors for the
//! same inputs: `Unsupported`, `Corrupt` (with the position), `TooLong` (from the headers before decoding where
//! the format states its length), `Empty`, `Silent`, and `InvalidOption` for bad options. One difference is
//! possible in principle: the encoder measures silence after resampling to 16 kHz, so a recording whose only
//! sound lies above 8 kHz passes the check and still fails to encode (as silent).

use std::time::Duration;

use crate::decode::decode_each;
use crate::loudness::{to_db, IntegratedMeter};
use crate::pipeline::{InputInfo, PipelineOptions};
use crate::process::{is_silent, Highpass};
use crate::AudioError;

/// What a successful check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// What the input is: format, channels, rate, duration.
    pub input: InputInfo,
    /// Sample peak of the mono downmix, dBFS (at most 0 for integer formats).
    pub peak_dbfs: f64,
    /// Integrated loudness of the high-passed mono downmix at the input's rate, LUFS.
    pub loudness_lufs: f64,
}

impl Checked {
    /// Length of the input.
    pub fn duration(&self) -> Duration {
        self.input.duration
    }
}

/// Decodes all of `bytes` and says whether the pipeline can encode it with `opts` (see the module doc).
pub fn check(bytes: &[u8], opts: &PipelineOptions) -> Result<Checked, AudioError> {
    opts.process.validate()?;
    opts.encode.validate()?;
    let mut peak = 0.0f32;
    let mut measure: Option<(Highpass, IntegratedMeter)> = None;
    let mut filtered: Vec<f32> = Vec::new();
    let decoded = decode_each(bytes, &opts.decode, &mut |rate, piece| {
        peak = piece.iter().fold(peak, |m, s| m.max(s.abs()));
        if measure.is_none() {
            measure = Some((Highpass::new(rate, opts.process.highpass_hz), IntegratedMeter::new(rate)?));
        }
        let Some((highpass, meter)) = measure.as_mut() else { return Ok(()) };
        filtered.clear();
        filtered.extend_from_slice(piece);
        highpass.process(&mut filtered);
        meter.add(&filtered)
    })?;
    let loudness_lufs = match &measure {
        Some((_, meter)) => meter.integrated()?,
        None => f64::NEG_INFINITY,
    };
    if is_silent(loudness_lufs) {
        return Err(AudioError::Silent);
    }
    let input = InputInfo {
        duration: decoded.duration(),
        format: decoded.format,
        channels: decoded.input_channels,
        rate: decoded.rate,
    };
    Ok(Checked { input, peak_dbfs: to_db(f64::from(peak)), loudness_lufs })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::decode::DecodeOptions;
    use crate::process::ProcessOptions;

    fn wav(rate: u32, channels: u16, frames: u32, value: impl Fn(u32) -> i16) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for i in 0..frames {
            for _ in 0..channels {
                writer.write_sample(value(i)).unwrap();
            }
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    fn tone(i: u32) -> i16 {
        ((i as f32 * 0.09).sin() * 16_384.0) as i16
    }

    #[test]
    fn a_good_recording_passes_with_its_figures() {
        let checked = check(&wav(44_100, 2, 88_200, tone), &PipelineOptions::default()).unwrap();
        assert_eq!((checked.input.rate, checked.input.channels), (44_100, 2));
        assert!(checked.input.format.starts_with("wav"), "{}", checked.input.format);
        assert_eq!(checked.duration(), Duration::from_secs(2));
        assert!((checked.peak_dbfs + 6.02).abs() < 0.1, "{checked:?}");
        assert!(checked.loudness_lufs > -20.0 && checked.loudness_lufs < 0.0, "{checked:?}");
    }

    #[test]
    fn bad_inputs_get_the_encoders_errors() {
        let opts = PipelineOptions::default();
        assert!(matches!(check(&[], &opts), Err(AudioError::Empty)));
        let text = "Thông báo: tiêm phòng cho gia súc vào sáng thứ Hai.\n".repeat(40);
        assert!(matches!(check(text.as_bytes(), &opts), Err(AudioError::Unsupported(_))));
        assert!(matches!(check(&wav(16_000, 1, 32_000, |_| 0), &opts), Err(AudioError::Silent)));
        // Only rumble under the encoder's high-pass: silent for the horns, as the encoder finds.
        let rumble = |i: u32| ((i as f32 * 2.0 * std::f32::consts::PI * 20.0 / 16_000.0).sin() * 300.0) as i16;
        let bytes = wav(16_000, 1, 48_000, rumble);
        assert!(matches!(crate::pipeline::encode(&bytes, &opts), Err(AudioError::Silent)));
        assert!(matches!(check(&bytes, &opts), Err(AudioError::Silent)));
        let cut = wav(16_000, 1, 16_000, tone);
        match check(&cut[..cut.len() / 2], &opts) {
            Err(AudioError::Corrupt { position, .. }) => assert!(position > 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_long_is_refused_from_the_header_at_once() {
        let opts =
            PipelineOptions { decode: DecodeOptions { max_duration: Duration::from_secs(1) }, ..Default::default() };
        let mut calls = 0;
        let bytes = wav(8_000, 1, 16_000, tone);
        // The header states 2 s: refused before a single sample is decoded.
        let refused = decode_each(&bytes, &opts.decode, &mut |_, _| {
            calls += 1;
            Ok(())
        });
        assert!(matches!(refused, Err(AudioError::TooLong { .. })));
        assert_eq!(calls, 0);
        match check(&bytes, &opts) {
            Err(AudioError::TooLong { found, limit }) => {
                assert_eq!((found, limit), (Duration::from_secs(2), Duration::from_secs(1)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_options_are_refused_like_the_encoder_does() {
        let opts = PipelineOptions {
            process: ProcessOptions { target_lufs: 3.0, ..Default::default() },
            ..Default::default()
        };
        assert!(matches!(check(&wav(16_000, 1, 16_000, tone), &opts), Err(AudioError::InvalidOption(_))));
    }
}
