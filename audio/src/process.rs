//! Processing for speech on horn loudspeakers: downmix, resample, high-pass, loudness normalisation.
//!
//! Order matters and [`prepare_speech`] keeps it: mono → 16 kHz (rubato's FFT resampler, band-limited) → a
//! second-order Butterworth high-pass (horns cannot reproduce rumble, and it wastes bits and amplifier power) →
//! gain to the loudness target with a look-ahead peak limiter underneath, so that full-scale inputs reach
//! −16 LUFS without clipping. The limiter works on sample peaks with a margin below the true-peak ceiling; a
//! final static trim guarantees the ceiling on the true peak as measured by [`crate::loudness`].

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::loudness::{self, from_db};
use crate::AudioError;

/// Settings for [`prepare_speech`].
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Integrated loudness target, LUFS (default −16).
    pub target_lufs: f64,
    /// True-peak ceiling, dBTP (default −1).
    pub ceiling_dbtp: f64,
    /// High-pass corner frequency, Hz (default 90).
    pub highpass_hz: f64,
    /// How far under the ceiling the limiter holds sample peaks, dB (default 2): room for peaks between
    /// samples and for the codec's overshoot.
    pub headroom_db: f64,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions { target_lufs: -16.0, ceiling_dbtp: -1.0, highpass_hz: 90.0, headroom_db: 2.0 }
    }
}

impl ProcessOptions {
    /// Rejects settings that make no sense for broadcast speech.
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(-40.0..=-5.0).contains(&self.target_lufs) {
            return Err(AudioError::InvalidOption(format!(
                "loudness target {} LUFS is outside -40..-5",
                self.target_lufs
            )));
        }
        if !(-12.0..=0.0).contains(&self.ceiling_dbtp) {
            return Err(AudioError::InvalidOption(format!(
                "true-peak ceiling {} dBTP is outside -12..0",
                self.ceiling_dbtp
            )));
        }
        if !(20.0..=300.0).contains(&self.highpass_hz) {
            return Err(AudioError::InvalidOption(format!("high-pass {} Hz is outside 20..300", self.highpass_hz)));
        }
        if !(0.0..=12.0).contains(&self.headroom_db) {
            return Err(AudioError::InvalidOption(format!("headroom {} dB is outside 0..12", self.headroom_db)));
        }
        Ok(())
    }
}

/// Appends the mono average of `interleaved` (with `channels` channels) to `out`.
pub fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels <= 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
}

/// Resamples mono audio from `from` Hz to `to` Hz with rubato's band-limited FFT resampler. The output holds
/// `round(len × to / from)` samples (within one), aligned with the input (the resampler's delay is removed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == 0 || to == 0 {
        return Err(AudioError::InvalidOption(format!("cannot resample {from} Hz to {to} Hz")));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| AudioError::InvalidOption(format!("resampler: {e}")))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| AudioError::InvalidOption(format!("resampler input: {e}")))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| AudioError::InvalidOption(format!("resampler: {e}")))?;
    Ok(output.take_data())
}

/// A second-order Butterworth high-pass (RBJ cookbook biquad), applied in place.
pub fn highpass(samples: &mut [f32], rate: u32, corner_hz: f64) {
    Highpass::new(rate, corner_hz).process(samples);
}

/// The filter of [`highpass`] with its state kept between calls, for audio that arrives piece by piece.
#[derive(Debug, Clone)]
pub struct Highpass {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Highpass {
    /// A high-pass at `corner_hz` for audio at `rate` Hz.
    pub fn new(rate: u32, corner_hz: f64) -> Highpass {
        let w0 = 2.0 * std::f64::consts::PI * corner_hz / f64::from(rate);
        let (sin, cos) = w0.sin_cos();
        let q = std::f64::consts::FRAC_1_SQRT_2; // Butterworth
        let alpha = sin / (2.0 * q);
        let a0 = 1.0 + alpha;
        let b0 = (1.0 + cos) / 2.0 / a0;
        let b1 = -(1.0 + cos) / a0;
        let a1 = -2.0 * cos / a0;
        let a2 = (1.0 - alpha) / a0;
        Highpass { b: [b0, b1, b0], a: [a1, a2], x: [0.0; 2], y: [0.0; 2] }
    }

    /// Filters the next piece of audio in place.
    pub fn process(&mut self, samples: &mut [f32]) {
        let ([b0, b1, b2], [a1, a2]) = (self.b, self.a);
        let ([mut x1, mut x2], [mut y1, mut y2]) = (self.x, self.y);
        for s in samples.iter_mut() {
            let x0 = f64::from(*s);
            let y0 = b0 * x0 + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2;
            (x2, x1, y2, y1) = (x1, x0, y1, y0);
            *s = y0 as f32;
        }
        (self.x, self.y) = ([x1, x2], [y1, y2]);
    }
}

/// Below this integrated loudness (LUFS, or not finite: nothing passed the gate) a recording is silent: there is
/// nothing to normalise or broadcast.
pub const SILENT_BELOW_LUFS: f64 = -70.0;

/// Whether a measured integrated loudness means silence (see [`SILENT_BELOW_LUFS`]).
pub fn is_silent(integrated_lufs: f64) -> bool {
    !integrated_lufs.is_finite() || integrated_lufs < SILENT_BELOW_LUFS
}

/// What normalisation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormReport {
    /// Loudness before, LUFS.
    pub input_lufs: f64,
    /// Loudness after, LUFS.
    pub output_lufs: f64,
    /// True peak after, dBTP.
    pub output_true_peak_dbtp: f64,
}

/// Brings `samples` to `target_lufs` with no true peak above `ceiling_dbtp`; the limiter holds sample peaks
/// `headroom_db` under the ceiling. Silence is an error: there is nothing to broadcast.
///
/// The limiter takes some loudness away, the more the louder it is driven, so the gain is searched: loudness
/// after gain and limiter rises with the gain, and a secant step on the original samples lands within 0.05 LU
/// in two or three tries.
pub fn normalize(
    samples: &mut [f32],
    rate: u32,
    target_lufs: f64,
    ceiling_dbtp: f64,
    headroom_db: f64,
) -> Result<NormReport, AudioError> {
    let input_lufs = loudness::integrated(samples, rate)?;
    if is_silent(input_lufs) {
        return Err(AudioError::Silent);
    }
    let original = samples.to_vec();
    let sample_ceiling = from_db(ceiling_dbtp - headroom_db) as f32;
    let try_gain = |gain_db: f64, out: &mut [f32]| -> Result<f64, AudioError> {
        let gain = from_db(gain_db) as f32;
        out.iter_mut().zip(&original).for_each(|(o, &s)| *o = s * gain);
        limit(out, rate, sample_ceiling);
        loudness::integrated(out, rate)
    };
    // Without the limiter the gain would be exactly this; with it, at least this.
    let mut gain = target_lufs - input_lufs;
    let mut level = try_gain(gain, samples)?;
    let mut previous: Option<(f64, f64)> = None;
    for _ in 0..5 {
        if (level - target_lufs).abs() < 0.05 {
            break;
        }
        // LU gained per dB of gain; 1 until two points are known, never so flat that one step overshoots wildly.
        let slope = match previous {
            Some((g, l)) if g != gain => ((level - l) / (gain - g)).clamp(0.2, 1.0),
            _ => 1.0,
        };
        previous = Some((gain, level));
        gain += (target_lufs - level) / slope;
        level = try_gain(gain, samples)?;
    }
    let mut peak = loudness::true_peak(samples, rate)?;
    if peak > ceiling_dbtp - 0.3 {
        let trim = from_db(ceiling_dbtp - 0.3 - peak) as f32;
        samples.iter_mut().for_each(|s| *s *= trim);
        level = loudness::integrated(samples, rate)?;
        peak = loudness::true_peak(samples, rate)?;
    }
    Ok(NormReport { input_lufs, output_lufs: level, output_true_peak_dbtp: peak })
}

/// Look-ahead peak limiter: no sample leaves above `ceiling` (linear). Gain falls smoothly ahead of a peak
/// (5 ms) and recovers over about 80 ms, which keeps speech natural.
pub fn limit(samples: &mut [f32], rate: u32, ceiling: f32) {
    let n = samples.len();
    if n == 0 || ceiling <= 0.0 {
        return;
    }
    let look = ((rate as usize) / 200).max(1); // 5 ms
                                               // Gain each sample needs on its own.
    let need: Vec<f32> = samples.iter().map(|s| if s.abs() > ceiling { ceiling / s.abs() } else { 1.0 }).collect();
    if need.iter().all(|&g| g >= 1.0) {
        return;
    }
    // Minimum over ±look, then a moving average over `look`: every sample of the average window covers the
    // sample itself, so the smoothed gain never exceeds what the sample needs.
    let held = sliding_min(&need, look);
    let half = look / 2;
    let mut prefix = vec![0.0f64; n + 1];
    for (i, &g) in held.iter().enumerate() {
        prefix[i + 1] = prefix[i] + f64::from(g);
    }
    let release = 1.0 / (0.08 * rate as f32);
    let mut gain = 1.0f32;
    for (i, s) in samples.iter_mut().enumerate() {
        let lo = i.saturating_sub(half);
        let hi = (i + half + 1).min(n);
        let avg = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
        gain = avg.min(gain + release).min(need[i]);
        *s *= gain;
    }
}

/// Minimum of `v` over the window [i − radius, i + radius], in O(n) with a monotonic deque.
fn sliding_min(v: &[f32], radius: usize) -> Vec<f32> {
    let n = v.len();
    let mut out = vec![1.0f32; n];
    let mut deque: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut next = 0usize;
    for (i, slot) in out.iter_mut().enumerate() {
        let hi = (i + radius).min(n - 1);
        while next <= hi {
            while deque.back().is_some_and(|&b| v[b] >= v[next]) {
                deque.pop_back();
            }
            deque.push_back(next);
            next += 1;
        }
        while deque.front().is_some_and(|&f| f + radius < i) {
            deque.pop_front();
        }
        if let Some(&f) = deque.front() {
            *slot = v[f];
        }
    }
    out
}

/// The whole chain: mono `samples` at `rate` → 16 kHz, high-passed, normalised.
pub fn prepare_speech(samples: &[f32], rate: u32, opts: &ProcessOptions) -> Result<(Vec<f32>, NormReport), AudioError> {
    opts.validate()?;
    let mut speech = resample(samples, rate, crate::SPEECH_RATE)?;
    highpass(&mut speech, crate::SPEECH_RATE, opts.highpass_hz);
    let report = normalize(&mut speech, crate::SPEECH_RATE, opts.target_lufs, opts.ceiling_dbtp, opts.headroom_db)?;
    Ok((speech, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn speechlike(rate: u32, seconds: f32) -> Vec<f32> {
        // Bursts of a harmonic tone with pauses: a crest factor and gating behaviour like speech.
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let on = if (t * 3.0).fract() < 0.6 { 1.0 } else { 0.02 };
                let f = 180.0 + 40.0 * (t * 0.7).sin();
                on * (0.6 * (2.0 * std::f32::consts::PI * f * t).sin()
                    + 0.3 * (2.0 * std::f32::consts::PI * 3.0 * f * t).sin()
                    + 0.1 * (2.0 * std::f32::consts::PI * 7.0 * f * t).sin())
            })
            .collect()
    }

    #[test]
    fn downmix_averages() {
        let mut out = Vec::new();
        downmix_into(&[1.0, 0.0, 0.5, 0.5], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5]);
    }

    #[test]
    fn highpass_removes_rumble_keeps_voice() {
        let rate = 16_000;
        let tone = |f: f32| -> Vec<f32> {
            (0..rate).map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin()).collect()
        };
        let rms = |v: &[f32]| (v[4000..].iter().map(|x| x * x).sum::<f32>() / (v.len() - 4000) as f32).sqrt();
        let mut low = tone(30.0);
        let mut voice = tone(1000.0);
        highpass(&mut low, rate, 90.0);
        highpass(&mut voice, rate, 90.0);
        assert!(rms(&low) < 0.15, "30 Hz should be cut: {}", rms(&low));
        assert!(rms(&voice) > 0.69, "1 kHz should pass: {}", rms(&voice));
    }

    #[test]
    fn highpass_in_pieces_equals_highpass_at_once() {
        let whole: Vec<f32> = speechlike(16_000, 1.0);
        let mut at_once = whole.clone();
        highpass(&mut at_once, 16_000, 90.0);
        let mut filter = Highpass::new(16_000, 90.0);
        let mut pieces = whole.clone();
        for piece in pieces.chunks_mut(777) {
            filter.process(piece);
        }
        assert_eq!(pieces, at_once);
    }

    #[test]
    fn full_scale_input_reaches_target_under_ceiling() {
        let mut s = speechlike(16_000, 10.0);
        let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        s.iter_mut().for_each(|x| *x /= peak); // full scale
        let report = normalize(&mut s, 16_000, -16.0, -1.0, 2.0).unwrap();
        assert!((report.output_lufs + 16.0).abs() < 0.5, "{report:?}");
        assert!(report.output_true_peak_dbtp <= -1.0, "{report:?}");
    }

    #[test]
    fn silence_is_refused() {
        let mut s = vec![0.0f32; 32_000];
        assert!(matches!(normalize(&mut s, 16_000, -16.0, -1.0, 2.0), Err(AudioError::Silent)));
    }

    #[test]
    fn limiter_holds_the_ceiling() {
        let mut s = speechlike(16_000, 2.0);
        s.iter_mut().for_each(|x| *x *= 4.0);
        limit(&mut s, 16_000, 0.5);
        assert!(s.iter().all(|x| x.abs() <= 0.5 + 1e-6));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn resampled_length_matches_ratio(
            len in 1usize..40_000,
            from in prop::sample::select(vec![8_000u32, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000]),
        ) {
            let input: Vec<f32> = (0..len).map(|i| ((i % 100) as f32 / 100.0) - 0.5).collect();
            let out = resample(&input, from, 16_000).unwrap();
            let expected = len as f64 * 16_000.0 / f64::from(from);
            prop_assert!((out.len() as f64 - expected).abs() <= 1.0, "len {} from {} → {} (expected {})", len, from, out.len(), expected);
        }

        #[test]
        fn normalisation_is_idempotent(gain_db in -30.0f32..6.0, seconds in 3.0f32..8.0) {
            let mut s = speechlike(16_000, seconds);
            let g = 10f32.powf(gain_db / 20.0);
            s.iter_mut().for_each(|x| *x = (*x * g).clamp(-1.0, 1.0));
            let first = normalize(&mut s, 16_000, -16.0, -1.0, 2.0).unwrap();
            let second = normalize(&mut s, 16_000, -16.0, -1.0, 2.0).unwrap();
            prop_assert!((first.output_lufs - second.output_lufs).abs() < 0.5, "{:?} then {:?}", first, second);
            prop_assert!(second.output_true_peak_dbtp <= -1.0);
        }
    }
}
