//! Interoperability tests with the reference tools: files written here must pass `opusinfo` and `opusdec`
//! (opus-tools), and files made by `opusenc` and ffmpeg must decode here to the right length. Each test is
//! skipped, with a message, when its program is not installed.

use std::path::Path;
use std::process::{Command, Output};

use super::tests::{chirp, encode};
use super::*;

/// Run a program; `None` (after saying so) when it is not installed, unless `LOA_REQUIRE_TOOLS` is set
/// (as scripts/test does), which makes a missing program a failure.
fn run(program: &str, args: &[&Path]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let required = std::env::var("LOA_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{program} is not installed and LOA_REQUIRE_TOOLS is set");
            eprintln!("skipping: {program} is not installed");
            None
        }
        Err(e) => panic!("could not run {program}: {e}"),
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&channels.to_le_bytes());
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    bytes.extend_from_slice(&(channels * 2).to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Size in bytes of the "data" chunk of a WAV file.
fn wav_data_len(bytes: &[u8]) -> usize {
    let at = bytes.windows(4).position(|w| w == b"data").expect("no data chunk");
    u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize
}

#[test]
fn our_files_pass_opusinfo_and_opusdec() {
    let dir = tempfile::tempdir().unwrap();
    let n = 16_000 * 2 + 77;
    let head = OpusHead { channels: 1, pre_skip: 312, input_sample_rate: 16_000, output_gain_q8: 0, mapping_family: 0 };
    let files = [
        ("chirp", encode(n, 48_000).bytes, Some(n * 3)),
        ("small_pages", encode(n, 960).bytes, Some(n * 3)),
        ("empty", OggOpusWriter::new(5, &head, &OpusTags::default(), 48_000).finish(0), None),
    ];
    for (name, bytes, expected_48k) in files {
        let input = dir.path().join(format!("{name}.opus"));
        let output = dir.path().join(format!("{name}.wav"));
        std::fs::write(&input, &bytes).unwrap();
        let Some(info) = run("opusinfo", &[&input]) else {
            return;
        };
        let report = text(&info);
        assert!(info.status.success(), "opusinfo failed on {name}: {report}");
        assert!(!report.contains("WARNING") && !report.contains("ERROR"), "opusinfo on {name}: {report}");
        let Some(dec) =
            run("opusdec", &[Path::new("--quiet"), Path::new("--rate"), Path::new("48000"), &input, &output])
        else {
            return;
        };
        assert!(dec.status.success(), "opusdec failed on {name}: {}", text(&dec));
        if let Some(samples) = expected_48k {
            assert_eq!(wav_data_len(&std::fs::read(&output).unwrap()), samples * 2, "opusdec length of {name}");
        }
    }
}

/// Make a WAV of `seconds` at `rate` with `channels`, convert it with `convert(wav, opus)`, decode the result
/// at 48 kHz and check channels and length (within one 20 ms frame), and that streaming gives the same PCM.
fn check_foreign(convert: impl Fn(&Path, &Path) -> Option<Output>) {
    let dir = tempfile::tempdir().unwrap();
    for (rate, channels, seconds) in [(16_000u32, 1u16, 1.234f64), (44_100, 2, 2.5)] {
        let frames = (f64::from(rate) * seconds) as usize;
        let mono = chirp(frames, rate);
        let samples: Vec<i16> = mono.iter().flat_map(|&s| std::iter::repeat_n(s, usize::from(channels))).collect();
        let wav = dir.path().join("in.wav");
        let opus = dir.path().join("out.opus");
        write_wav(&wav, rate, channels, &samples);
        let Some(out) = convert(&wav, &opus) else {
            return;
        };
        assert!(out.status.success(), "conversion failed: {}", text(&out));
        let bytes = std::fs::read(&opus).unwrap();
        assert!(is_ogg_opus(&bytes));
        let decoded = decode_ogg_opus(&bytes, 48_000).unwrap();
        assert_eq!(decoded.channels as u16, channels);
        let got = decoded.pcm.len() / usize::from(channels);
        let want = (seconds * 48_000.0) as usize;
        assert!(got.abs_diff(want) <= 960, "decoded {got} frames, source has {want}");
        let mut stream = OpusStreamDecoder::new(48_000).unwrap();
        let mut pcm = Vec::new();
        for piece in bytes.chunks(333) {
            pcm.extend(stream.push_bytes(piece).unwrap());
        }
        assert!(stream.is_finished() && pcm == decoded.pcm);
    }
}

#[test]
fn opusenc_files_decode() {
    check_foreign(|wav, opus| run("opusenc", &[Path::new("--quiet"), wav, opus]));
}

#[test]
fn ffmpeg_files_decode() {
    check_foreign(|wav, opus| {
        let args = ["-loglevel", "error", "-y", "-i"].map(Path::new);
        let codec = ["-c:a", "libopus"].map(Path::new);
        let all: Vec<&Path> = args.iter().copied().chain([wav]).chain(codec).chain([opus]).collect();
        run("ffmpeg", &all)
    });
}
