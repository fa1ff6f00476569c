//! The `loa-audio` binary as a person uses it: encode, info, decode, and one-line errors with a non-zero exit.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test

mod common;

use std::process::Command;

fn loa_audio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loa-audio"))
}

#[test]
fn encode_info_decode_round_trip() {
    let Some(dir) = common::fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let opus = tmp.path().join("bulletin.opus");
    let wav = tmp.path().join("back.wav");
    let out = common::run(loa_audio().arg("encode").arg(dir.join("bulletin-vi-48k-stereo.m4a")).arg(&opus).args([
        "--kbps",
        "12",
        "--title",
        "Tiêm phòng gia súc",
        "--category",
        "health",
        "--language",
        "vi",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("LUFS"));

    let info = common::run(loa_audio().arg("info").arg(&opus));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("format:      ogg/opus"), "{text}");
    assert!(text.contains("TITLE=Tiêm phòng gia súc"), "{text}");
    assert!(text.contains("LANGUAGE=vi"), "{text}");

    common::run(loa_audio().arg("decode").arg(&opus).arg(&wav));
    let (spec, samples) = common::read_wav(&wav);
    assert_eq!((spec.channels, spec.sample_rate), (1, 16_000));
    assert!((samples.len() as f64 / 16_000.0 - 29.94).abs() < 0.07);
}

#[test]
fn bad_input_gives_one_line_and_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("bulletin.mp3");
    std::fs::write(&fake, "not audio at all\n".repeat(50)).unwrap();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["encode".into(), fake.clone().into(), tmp.path().join("x.opus").into()],
        vec!["encode".into(), tmp.path().join("missing.wav").into(), tmp.path().join("x.opus").into()],
        vec!["info".into(), fake.clone().into()],
        vec!["decode".into(), fake.clone().into(), tmp.path().join("x.wav").into()],
    ];
    for args in cases {
        let out = loa_audio().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("loa-audio: "), "{err}");
    }
    let out = loa_audio().args(["encode", "a.wav", "b.opus", "--kbps", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6..64"));
}
