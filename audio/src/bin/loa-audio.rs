//! `loa-audio`: encode any recording to broadcast-ready Ogg Opus, decode it back, or inspect a file.
//!
//! Errors print one line a person can act on and exit with status 1 (2 for wrong usage, from clap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loa_audio::decode::DecodeOptions;
use loa_audio::encode::EncodeOptions;
use loa_audio::pipeline::{self, PipelineOptions};
use loa_audio::process::ProcessOptions;
use loa_audio::{ogg, SPEECH_RATE};

#[derive(Parser)]
#[command(name = "loa-audio", version, about = "Loa's audio pipeline: any recording → loudness-normalised Ogg Opus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode any audio file (WAV, MP3, M4A/AAC, FLAC, Ogg Vorbis/Opus) to 16 kHz mono Ogg Opus.
    Encode {
        /// Input file.
        input: PathBuf,
        /// Output Ogg Opus file.
        output: PathBuf,
        /// Target bitrate, kbit/s (6–64).
        #[arg(long, default_value_t = 12)]
        kbps: u32,
        /// Frame duration, ms (20, 40 or 60).
        #[arg(long, default_value_t = 60)]
        frame_ms: u32,
        /// Integrated loudness target, LUFS.
        #[arg(long, default_value_t = -16.0, allow_hyphen_values = true)]
        lufs: f64,
        /// True-peak ceiling, dBTP.
        #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
        ceiling: f64,
        /// Tune the codec for music instead of speech.
        #[arg(long)]
        music: bool,
        /// libopus complexity, 0–10.
        #[arg(long, default_value_t = 10)]
        complexity: u8,
        /// Longest recording accepted, minutes.
        #[arg(long, default_value_t = 60)]
        max_minutes: u64,
        /// TITLE tag.
        #[arg(long)]
        title: Option<String>,
        /// CATEGORY tag (policy, market, security, disaster, health, other).
        #[arg(long)]
        category: Option<String>,
        /// LANGUAGE tag (e.g. vi, hmn, tay).
        #[arg(long)]
        language: Option<String>,
        /// Also write the processed 16 kHz mono signal fed to the encoder, as a 16-bit WAV.
        #[arg(long)]
        emit_preprocessed: Option<PathBuf>,
    },
    /// Decode an Ogg Opus file to a 16-bit PCM WAV.
    Decode {
        /// Input Ogg Opus file.
        input: PathBuf,
        /// Output WAV file.
        output: PathBuf,
        /// Output rate (8000, 12000, 16000, 24000 or 48000); default: the rate the file was made from, if one of
        /// those, else 48000.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Print format, channels, rate, duration, integrated loudness and true peak of any audio file.
    Info {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loa-audio: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Encode {
            input,
            output,
            kbps,
            frame_ms,
            lufs,
            ceiling,
            music,
            complexity,
            max_minutes,
            title,
            category,
            language,
            emit_preprocessed,
        } => {
            let mut tags = Vec::new();
            for (key, value) in [("TITLE", title), ("CATEGORY", category), ("LANGUAGE", language)] {
                if let Some(value) = value {
                    tags.push((key.to_string(), value));
                }
            }
            let opts = PipelineOptions {
                decode: DecodeOptions { max_duration: Duration::from_secs(max_minutes.saturating_mul(60)) },
                process: ProcessOptions { target_lufs: lufs, ceiling_dbtp: ceiling, ..Default::default() },
                encode: EncodeOptions { bitrate_kbps: kbps, frame_ms, complexity, music, tags, ..Default::default() },
            };
            opts.process.validate()?;
            opts.encode.validate()?;
            let bytes = read(&input)?;
            let prepared = pipeline::prepare(&bytes, &opts).with_context(|| format!("{}", input.display()))?;
            if let Some(path) = emit_preprocessed {
                let pcm: Vec<i16> = prepared.speech.iter().map(|&s| to_i16(s)).collect();
                write_wav(&path, SPEECH_RATE, 1, &pcm)?;
            }
            let encoded = pipeline::encode_prepared(&prepared, &opts)?;
            std::fs::write(&output, &encoded.ogg).with_context(|| format!("cannot write {}", output.display()))?;
            println!(
                "{}: {} {} ch {} Hz {:.2} s → {}: {} bytes, {:.2} s, {:.1} LUFS, {:.1} dBTP ({:.1} kbit/s)",
                input.display(),
                encoded.input.format,
                encoded.input.channels,
                encoded.input.rate,
                encoded.input.duration.as_secs_f64(),
                output.display(),
                encoded.ogg.len(),
                encoded.duration.as_secs_f64(),
                encoded.output.integrated_lufs,
                encoded.output.true_peak_dbtp,
                encoded.ogg.len() as f64 * 8.0 / 1000.0 / encoded.duration.as_secs_f64().max(1e-3),
            );
        }
        Command::Decode { input, output, rate } => {
            let bytes = read(&input)?;
            if !ogg::is_ogg_opus(&bytes) {
                anyhow::bail!("{} is not an Ogg Opus file", input.display());
            }
            let rate = match rate {
                Some(rate) => rate,
                None => natural_rate(&bytes),
            };
            let decoded = ogg::decode_ogg_opus(&bytes, rate).with_context(|| format!("{}", input.display()))?;
            write_wav(&output, decoded.rate, u16::from(decoded.channels), &decoded.pcm)?;
            println!(
                "{} → {}: {} ch {} Hz {:.2} s",
                input.display(),
                output.display(),
                decoded.channels,
                decoded.rate,
                decoded.pcm.len() as f64 / f64::from(decoded.channels.max(1)) / f64::from(decoded.rate)
            );
        }
        Command::Info { file } => {
            let bytes = read(&file)?;
            let info = pipeline::inspect(&bytes, &DecodeOptions { max_duration: Duration::from_secs(24 * 3600) })
                .with_context(|| format!("{}", file.display()))?;
            println!("file:        {}", file.display());
            println!("format:      {}", info.input.format);
            println!("channels:    {}", info.input.channels);
            println!("rate:        {} Hz", info.input.rate);
            println!("duration:    {:.3} s", info.input.duration.as_secs_f64());
            println!("loudness:    {:.1} LUFS integrated (mono downmix)", info.loudness.integrated_lufs);
            println!("true peak:   {:.1} dBTP", info.loudness.true_peak_dbtp);
            println!("size:        {} bytes", bytes.len());
            for (key, value) in info.tags {
                println!("tag:         {key}={value}");
            }
        }
    }
    Ok(())
}

/// The rate the file was made from, when libopus can decode to it directly; else 48 kHz.
fn natural_rate(bytes: &[u8]) -> u32 {
    let mut demuxer = ogg::OggOpusDemuxer::new();
    demuxer.push_bytes(&bytes[..bytes.len().min(64 * 1024)]);
    let _ = demuxer.next_packet();
    demuxer
        .head()
        .map(|h| h.input_sample_rate)
        .filter(|rate| [8_000, 12_000, 16_000, 24_000, 48_000].contains(rate))
        .unwrap_or(48_000)
}

fn to_i16(s: f32) -> i16 {
    (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

fn write_wav(path: &Path, rate: u32, channels: u16, pcm: &[i16]) -> anyhow::Result<()> {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer =
        hound::WavWriter::create(path, spec).with_context(|| format!("cannot write {}", path.display()))?;
    for &s in pcm {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(())
}
