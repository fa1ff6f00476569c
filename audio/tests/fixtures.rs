//! Every shared fixture decodes and encodes; what comes out is the right length, loud enough, never clipping,
//! and readable by Debian's opusinfo and opusdec.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test

mod common;

use std::process::Command;

use loa_audio::decode::{decode, DecodeOptions};
use loa_audio::pipeline::{encode, PipelineOptions};
use loa_audio::{check, ogg, SPEECH_RATE};

#[test]
fn every_fixture_encodes_to_a_standard_loud_enough_file() {
    let files = common::fixture_files();
    if files.is_empty() {
        return;
    }
    let tools = common::have("opusinfo") && common::have("opusdec");
    let dir = tempfile::tempdir().unwrap();
    let opts = PipelineOptions::default();
    let frame_s = f64::from(opts.encode.frame_ms) / 1000.0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let input = decode(&bytes, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let encoded = encode(&bytes, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));

        let (in_s, out_s) = (input.duration().as_secs_f64(), encoded.duration.as_secs_f64());
        assert!((in_s - out_s).abs() <= frame_s, "{name}: {in_s:.3} s in, {out_s:.3} s out");
        assert!(
            (encoded.output.integrated_lufs + 16.0).abs() <= 1.0,
            "{name}: {:.2} LUFS",
            encoded.output.integrated_lufs
        );
        assert!(encoded.output.true_peak_dbtp <= -1.0, "{name}: {:.2} dBTP", encoded.output.true_peak_dbtp);

        // Our own reader gives back exactly the encoded length.
        let back = ogg::decode_ogg_opus(&encoded.ogg, SPEECH_RATE).unwrap();
        assert_eq!(back.channels, 1);
        assert_eq!(back.head.input_sample_rate, SPEECH_RATE);

        if tools {
            let opus = dir.path().join(format!("{name}.opus"));
            let wav = dir.path().join(format!("{name}.wav"));
            std::fs::write(&opus, &encoded.ogg).unwrap();
            let info = common::run(Command::new("opusinfo").arg(&opus));
            let text = String::from_utf8_lossy(&info.stdout).to_string() + &String::from_utf8_lossy(&info.stderr);
            assert!(!text.to_lowercase().contains("warning"), "{name}: opusinfo warns:\n{text}");
            assert!(!text.to_lowercase().contains("error"), "{name}: opusinfo errors:\n{text}");
            common::run(Command::new("opusdec").args(["--quiet", "--rate", "16000"]).arg(&opus).arg(&wav));
            let (spec, pcm) = common::read_wav(&wav);
            assert_eq!(spec.sample_rate, 16_000);
            let dec_s = pcm.len() as f64 / f64::from(spec.channels) / 16_000.0;
            assert!((dec_s - out_s).abs() <= 0.001, "{name}: opusdec gives {dec_s:.3} s, we give {out_s:.3} s");
        }
    }
}

#[test]
fn fixtures_decode_with_the_expected_shape() {
    let Some(dir) = common::fixtures() else { return };
    // (file, channels, rate); every fixture is the same 29.94 s announcement except the human voice.
    let expected = [
        ("bulletin-vi-22k-mono.wav", 1, 22_050),
        ("bulletin-vi-44k-stereo.mp3", 2, 44_100),
        ("bulletin-vi-48k-stereo.m4a", 2, 48_000),
        ("bulletin-vi-8k-mulaw.wav", 1, 8_000),
    ];
    for (file, channels, rate) in expected {
        let pcm = decode(&std::fs::read(dir.join(file)).unwrap(), &DecodeOptions::default()).unwrap();
        assert_eq!((pcm.input_channels, pcm.rate), (channels, rate), "{file}");
        assert!((pcm.duration().as_secs_f64() - 29.94).abs() < 0.06, "{file}: {:?}", pcm.duration());
    }
}

#[test]
fn every_fixture_passes_the_check_which_costs_a_fraction_of_the_encode() {
    let mut files = common::fixture_files();
    if files.is_empty() {
        return;
    }
    let opts = PipelineOptions::default();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let started = std::time::Instant::now();
        let checked = check(&bytes, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{}: checked in {:?}", path.file_name().unwrap().to_string_lossy(), started.elapsed());
        let pcm = decode(&bytes, &DecodeOptions::default()).unwrap();
        assert_eq!((checked.input.rate, checked.input.channels), (pcm.rate, pcm.input_channels));
        assert_eq!(checked.duration(), pcm.duration());
        // Lossy formats may overshoot full scale a little.
        assert!(checked.peak_dbfs <= 2.0 && checked.loudness_lufs > -40.0, "{}: {checked:?}", path.display());
    }
    // The biggest fixture, timed both ways (printed; `--nocapture` shows it).
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let biggest = files.last().unwrap();
    let bytes = std::fs::read(biggest).unwrap();
    let started = std::time::Instant::now();
    let checked = check(&bytes, &opts).unwrap();
    let check_time = started.elapsed();
    let started = std::time::Instant::now();
    encode(&bytes, &opts).unwrap();
    let encode_time = started.elapsed();
    eprintln!(
        "{} ({} bytes, {:.1} s of audio): check {check_time:?}, encode {encode_time:?}",
        biggest.file_name().unwrap().to_string_lossy(),
        bytes.len(),
        checked.duration().as_secs_f64()
    );
}
