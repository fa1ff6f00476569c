//! Bad inputs, each with its typed error, none with a panic: the list from the foundation issue. Each case also
//! goes through `loa_audio::check`, which must give the same error as the encoder (upload time refusals).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use loa_audio::decode::{decode, DecodeOptions};
use loa_audio::pipeline::{encode, PipelineOptions};
use loa_audio::{check, AudioError};
use proptest::prelude::*;

fn wav(rate: u32, bits: u16, frames: u64, value: impl Fn(u64) -> i32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..frames {
        writer.write_sample(value(i)).unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

fn tone(i: u64) -> i32 {
    ((i as f32 * 0.09).sin() * 12_000.0) as i32
}

/// The encoder's error for `bytes`, after checking that `check` gives the same kind of error.
fn refused(bytes: &[u8]) -> AudioError {
    let opts = PipelineOptions::default();
    let by_encoder = encode(bytes, &opts).unwrap_err();
    let by_check = check(bytes, &opts).unwrap_err();
    assert_eq!(
        std::mem::discriminant(&by_check),
        std::mem::discriminant(&by_encoder),
        "check says {by_check}, the encoder {by_encoder}"
    );
    by_encoder
}

fn our_opus() -> Vec<u8> {
    let bytes = wav(16_000, 16, 48_000, tone);
    encode(&bytes, &PipelineOptions::default()).unwrap().ogg
}

#[test]
fn empty_file() {
    assert!(matches!(refused(&[]), AudioError::Empty));
}

#[test]
fn text_file_named_mp3() {
    let text = "Thông báo: tiêm phòng cho gia súc vào sáng thứ Hai.\n".repeat(40);
    let err = refused(text.as_bytes());
    assert!(matches!(err, AudioError::Unsupported(_)), "{err}");
}

#[test]
fn wav_header_claiming_4_gb() {
    let mut bytes = wav(44_100, 16, 4_410, tone);
    // RIFF size and data size set to ~4 GB; the file holds 8 KB.
    bytes[4..8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let data = bytes.windows(4).position(|w| w == b"data").unwrap();
    bytes[data + 4..data + 8].copy_from_slice(&0xFFFF_FFC0u32.to_le_bytes());
    // The file cannot hold what its header claims: damaged, not too long.
    let err = refused(&bytes);
    assert!(matches!(err, AudioError::Corrupt { .. }), "{err}");
}

#[test]
fn three_hours_of_silence_is_refused_by_the_cap_from_the_header() {
    // 3 h of 8 kHz 8-bit silence: 86 MB, refused before decoding.
    let bytes = wav(8_000, 8, 3 * 3600 * 8_000, |_| 0);
    let started = Instant::now();
    let err = encode(&bytes, &PipelineOptions::default()).unwrap_err();
    let by_encoder = started.elapsed();
    let started = Instant::now();
    let by_check = check(&bytes, &PipelineOptions::default()).unwrap_err();
    let checked_in = started.elapsed();
    for err in [err, by_check] {
        match err {
            AudioError::TooLong { found, limit } => {
                assert!(found >= Duration::from_secs(3 * 3600 - 1), "{found:?}");
                assert_eq!(limit, Duration::from_secs(3600));
            }
            other => panic!("expected TooLong, got {other}"),
        }
    }
    eprintln!("3 h of silence refused in {by_encoder:?} (encode), {checked_in:?} (check)");
}

#[test]
fn silent_recording() {
    let bytes = wav(16_000, 16, 32_000, |_| 0);
    assert!(matches!(refused(&bytes), AudioError::Silent));
}

#[test]
fn fixtures_cut_at_many_offsets_give_typed_errors() {
    let mut inputs =
        vec![("our.opus".to_string(), our_opus()), ("tone.wav".to_string(), wav(16_000, 16, 16_000, tone))];
    for path in common::fixture_files() {
        inputs.push((path.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&path).unwrap()));
    }
    for (name, bytes) in inputs {
        // Offsets spread over the whole file, and some inside the headers.
        let mut offsets: Vec<usize> = (1..12).map(|k| bytes.len() * k / 13).collect();
        offsets.extend([1, 4, 12, 44, 100, 600]);
        for cut in offsets.into_iter().filter(|&c| c < bytes.len()) {
            let decoded = decode(&bytes[..cut], &DecodeOptions::default());
            // The check decodes the same way: the same error, or (what decodes) at most a silent piece.
            match (&decoded, check(&bytes[..cut], &PipelineOptions::default())) {
                (Err(d), Err(c)) => assert_eq!(
                    std::mem::discriminant(d),
                    std::mem::discriminant(&c),
                    "{name} cut at {cut}: decode says {d}, check {c}"
                ),
                (Ok(_), Ok(_) | Err(AudioError::Silent)) => {}
                (d, c) => panic!("{name} cut at {cut}: decode gives {:?}, check {c:?}", d.as_ref().map(|_| ())),
            }
            match decoded {
                Err(AudioError::Corrupt { .. } | AudioError::Unsupported(_) | AudioError::Empty) => {}
                // Formats that do not state their length (MP3 without a frame count, Ogg Vorbis) cannot know they
                // were cut: they decode the part that is there.
                Ok(pcm) if !name.ends_with(".wav") && !name.ends_with(".flac") && !name.ends_with(".opus") => {
                    assert!(!pcm.samples.is_empty());
                }
                other => panic!("{name} cut at {cut}/{}: {other:?}", bytes.len()),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        match decode(&bytes, &DecodeOptions::default()) {
            Err(AudioError::Unsupported(_) | AudioError::Corrupt { .. } | AudioError::Empty) => {}
            other => prop_assert!(false, "random bytes gave {:?}", other.map(|p| p.samples.len())),
        }
        match check(&bytes, &PipelineOptions::default()) {
            Err(AudioError::Unsupported(_) | AudioError::Corrupt { .. } | AudioError::Empty) => {}
            other => prop_assert!(false, "check of random bytes gave {:?}", other),
        }
    }

    #[test]
    fn damaged_headers_never_panic(flip in 0usize..200, value in any::<u8>()) {
        let mut bytes = wav(16_000, 16, 1_600, tone);
        let i = flip % bytes.len();
        bytes[i] = value;
        let _ = decode(&bytes, &DecodeOptions::default());
        let _ = check(&bytes, &PipelineOptions::default());
    }
}
