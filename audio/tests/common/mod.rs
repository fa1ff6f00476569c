//! Helpers shared by the audio integration tests: where the shared fixtures are, and whether a real tool is here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `../shared/fixtures/audio/` beside the project root, if present.
pub fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/audio");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: ../shared/fixtures/audio is absent");
        None
    }
}

/// Every audio fixture (not the text), sorted.
pub fn fixture_files() -> Vec<PathBuf> {
    let Some(dir) = fixtures() else { return Vec::new() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e != "txt"))
        .collect();
    files.sort();
    files
}

/// True when `program` runs. When it is missing: skip (return false) on a developer machine, but fail when
/// `LOA_REQUIRE_TOOLS` is set (scripts/test sets it), so CI never passes by skipping.
pub fn have(program: &str) -> bool {
    let ok = Command::new(program).arg("--help").output().is_ok();
    if !ok {
        assert!(std::env::var_os("LOA_REQUIRE_TOOLS").is_none(), "{program} is required (LOA_REQUIRE_TOOLS is set)");
        eprintln!("skipping: {program} is not installed");
    }
    ok
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads a 16-bit WAV into samples (interleaved) and its spec.
pub fn read_wav(path: &std::path::Path) -> (hound::WavSpec, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("open wav");
    let spec = reader.spec();
    let samples = reader.samples::<i16>().map(|s| s.expect("sample")).collect();
    (spec, samples)
}
