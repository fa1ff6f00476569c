//! Loudness and peak measurement per EBU R128 / ITU-R BS.1770, with the `ebur128` crate.
//!
//! Integrated loudness is in LUFS (gated, so pauses between sentences do not drag it down); true peak in dBTP
//! (4× oversampled, so peaks between samples count). Silence measures as `f64::NEG_INFINITY`.

use ebur128::{EbuR128, Mode};

use crate::AudioError;

/// What a loudness meter says about a mono signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loudness {
    /// Integrated loudness, LUFS (`-inf` for silence).
    pub integrated_lufs: f64,
    /// True peak, dBTP (`-inf` for silence).
    pub true_peak_dbtp: f64,
}

/// Integrated loudness only (the cheap measurement).
pub fn integrated(samples: &[f32], rate: u32) -> Result<f64, AudioError> {
    let meter = run(samples, rate, Mode::I)?;
    meter.loudness_global().map_err(meter_error)
}

/// True peak only, in dBTP.
pub fn true_peak(samples: &[f32], rate: u32) -> Result<f64, AudioError> {
    let meter = run(samples, rate, Mode::TRUE_PEAK)?;
    meter.true_peak(0).map(to_db).map_err(meter_error)
}

/// Integrated loudness and true peak together.
pub fn measure(samples: &[f32], rate: u32) -> Result<Loudness, AudioError> {
    let meter = run(samples, rate, Mode::I | Mode::TRUE_PEAK)?;
    Ok(Loudness {
        integrated_lufs: meter.loudness_global().map_err(meter_error)?,
        true_peak_dbtp: meter.true_peak(0).map(to_db).map_err(meter_error)?,
    })
}

/// An integrated-loudness meter fed piece by piece, for audio that is never held whole.
pub struct IntegratedMeter(EbuR128);

impl std::fmt::Debug for IntegratedMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegratedMeter").finish_non_exhaustive()
    }
}

impl IntegratedMeter {
    /// A meter for mono audio at `rate` Hz.
    pub fn new(rate: u32) -> Result<IntegratedMeter, AudioError> {
        EbuR128::new(1, rate, Mode::I).map(IntegratedMeter).map_err(meter_error)
    }

    /// Measures the next piece.
    pub fn add(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.0.add_frames_f32(samples).map_err(meter_error)
    }

    /// Integrated loudness of everything added, LUFS (`-inf` for silence).
    pub fn integrated(&self) -> Result<f64, AudioError> {
        self.0.loudness_global().map_err(meter_error)
    }
}

/// Linear amplitude to decibels.
pub fn to_db(linear: f64) -> f64 {
    if linear <= 0.0 {
        f64::NEG_INFINITY
    } else {
        20.0 * linear.log10()
    }
}

/// Decibels to linear amplitude.
pub fn from_db(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

fn run(samples: &[f32], rate: u32, mode: Mode) -> Result<EbuR128, AudioError> {
    let mut meter = EbuR128::new(1, rate, mode).map_err(meter_error)?;
    meter.add_frames_f32(samples).map_err(meter_error)?;
    Ok(meter)
}

fn meter_error(err: ebur128::Error) -> AudioError {
    AudioError::InvalidOption(format!("loudness meter: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_sine_is_about_minus_three_lufs() {
        // A 997 Hz sine at 0 dBFS reads -3.01 LUFS in mono per BS.1770.
        let rate = 48_000;
        let s: Vec<f32> =
            (0..rate * 3).map(|i| (2.0 * std::f32::consts::PI * 997.0 * i as f32 / rate as f32).sin()).collect();
        let m = measure(&s, rate).unwrap();
        assert!((m.integrated_lufs + 3.01).abs() < 0.1, "{m:?}");
        assert!(m.true_peak_dbtp.abs() < 0.2, "{m:?}");
    }

    #[test]
    fn meter_in_pieces_agrees_with_the_whole() {
        let rate = 16_000;
        let s: Vec<f32> =
            (0..rate * 4).map(|i| (i as f32 * 0.07).sin() * (0.1 + (i % 7_000) as f32 / 9_000.0)).collect();
        let mut meter = IntegratedMeter::new(rate).unwrap();
        for piece in s.chunks(1_234) {
            meter.add(piece).unwrap();
        }
        assert!((meter.integrated().unwrap() - integrated(&s, rate).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn silence_is_minus_infinity() {
        let m = measure(&vec![0.0; 16_000], 16_000).unwrap();
        assert_eq!(m.integrated_lufs, f64::NEG_INFINITY);
    }
}
