//! Our reader against other encoders: files made by opusenc and by ffmpeg decode to the right length and go
//! through the whole pipeline like any other upload.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test

mod common;

use std::process::Command;

use loa_audio::decode::{decode, DecodeOptions};
use loa_audio::ogg;
use loa_audio::pipeline::{encode, PipelineOptions};

fn check_foreign_file(name: &str, bytes: &[u8], source_s: f64) {
    let decoded = ogg::decode_ogg_opus(bytes, 48_000).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got_s = decoded.pcm.len() as f64 / f64::from(decoded.channels) / 48_000.0;
    // Within one 20 ms frame of the source.
    assert!((got_s - source_s).abs() <= 0.020, "{name}: {got_s:.3} s vs source {source_s:.3} s");
    let pcm = decode(bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(pcm.format, "ogg/opus");
    let encoded = encode(bytes, &PipelineOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!((encoded.output.integrated_lufs + 16.0).abs() <= 1.0);
}

#[test]
fn reads_opusenc_and_ffmpeg_files() {
    let Some(dir) = common::fixtures() else { return };
    let source = dir.join("bulletin-vi-22k-mono.wav");
    let source_s =
        decode(&std::fs::read(&source).unwrap(), &DecodeOptions::default()).unwrap().duration().as_secs_f64();
    let tmp = tempfile::tempdir().unwrap();

    if common::have("opusenc") {
        let out = tmp.path().join("opusenc.opus");
        common::run(Command::new("opusenc").args(["--quiet", "--bitrate", "16"]).arg(&source).arg(&out));
        check_foreign_file("opusenc", &std::fs::read(&out).unwrap(), source_s);
        // Stereo, 48 kHz input, 20 ms frames.
        let stereo = tmp.path().join("opusenc-stereo.opus");
        common::run(
            Command::new("opusenc").args(["--quiet", "--bitrate", "32"]).arg(dir.join("bulletin-vi.flac")).arg(&stereo),
        );
        check_foreign_file("opusenc-flac", &std::fs::read(&stereo).unwrap(), source_s);
    }
    if common::have("ffmpeg") {
        let out = tmp.path().join("ffmpeg.opus");
        common::run(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
                .arg(&source)
                .args(["-c:a", "libopus", "-b:a", "16k"])
                .arg(&out),
        );
        check_foreign_file("ffmpeg", &std::fs::read(&out).unwrap(), source_s);
    }
}
