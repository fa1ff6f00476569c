//! Decoding: any input a commune office has, into mono float PCM at the input's own rate.
//!
//! Ogg Opus goes through libopus (see [`crate::ogg`]); everything else (WAV in any PCM flavour, mu-law, A-law,
//! MP3, AAC in MP4/M4A, FLAC, Ogg Vorbis) through symphonia. The length cap is checked from the headers before
//! decoding where the format states its length, and again while decoding where it does not. A file whose header
//! promises more audio than it holds is reported as cut short (an uncompressed one before its length is held
//! against the cap). Channels are averaged to mono packet by packet, so a long stereo recording never sits in
//! memory twice; [`decode_each`] hands each piece to the caller instead of keeping it (for [`crate::check()`]).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use symphonia::core::codecs::audio::well_known::{CODEC_ID_PCM_MULAW, CODEC_ID_PCM_S32LE};
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use crate::ogg::{is_ogg_opus, OpusStreamDecoder};
use crate::process::downmix_into;
use crate::AudioError;

/// Limits applied while decoding.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Longest recording accepted (default 60 min).
    pub max_duration: Duration,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_duration: Duration::from_secs(60 * 60) }
    }
}

/// Decoded audio: mono samples in [-1, 1] at the input's sample rate, plus what the input was.
#[derive(Debug, Clone)]
pub struct Pcm {
    /// Container/codec name, e.g. "wav/pcm_s16le", "mp3", "ogg/opus".
    pub format: String,
    /// Channels in the input (the samples are already averaged to mono).
    pub input_channels: u16,
    /// Sample rate of `samples`, in Hz.
    pub rate: u32,
    /// Mono samples.
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Length of the audio.
    pub fn duration(&self) -> Duration {
        duration_of(self.samples.len() as u64, self.rate)
    }
}

/// Duration of `frames` frames at `rate` Hz (zero for a zero rate).
pub fn duration_of(frames: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(frames as f64 / f64::from(rate))
}

/// What a decode found, besides the samples: the input's format and shape, and how many mono frames it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Container/codec name, e.g. "wav/pcm_s16le", "mp3", "ogg/opus".
    pub format: String,
    /// Channels in the input.
    pub input_channels: u16,
    /// Sample rate of the samples, in Hz.
    pub rate: u32,
    /// Mono frames decoded.
    pub frames: u64,
}

impl Decoded {
    /// Length of the audio.
    pub fn duration(&self) -> Duration {
        duration_of(self.frames, self.rate)
    }
}

/// Where [`decode_each`] hands the decoded audio: `(rate, mono samples)`, piece by piece in order, the rate the
/// same on every call. An error stops the decode and is returned as is.
pub type Sink<'a> = dyn FnMut(u32, &[f32]) -> Result<(), AudioError> + 'a;

/// Decodes a whole file held in memory. Never panics: a panic inside a third-party decoder is turned into
/// [`AudioError::Corrupt`].
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Pcm, AudioError> {
    let mut samples = Vec::new();
    let decoded = decode_each(bytes, opts, &mut |_, piece| {
        samples.extend_from_slice(piece);
        Ok(())
    })?;
    Ok(Pcm { format: decoded.format, input_channels: decoded.input_channels, rate: decoded.rate, samples })
}

/// [`decode`] without keeping the audio: each decoded piece (mono, at the input's rate) goes to `sink` as soon as
/// it is decoded, so a check of a long recording needs little memory. Same checks, same errors, never panics.
pub fn decode_each(bytes: &[u8], opts: &DecodeOptions, sink: &mut Sink<'_>) -> Result<Decoded, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let decoded = match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, opts, sink))) {
        Ok(result) => result?,
        Err(_) => return Err(AudioError::corrupt(0, "the decoder could not make sense of this file")),
    };
    if decoded.frames == 0 {
        return Err(AudioError::Empty);
    }
    Ok(decoded)
}

fn decode_inner(bytes: &[u8], opts: &DecodeOptions, sink: &mut Sink<'_>) -> Result<Decoded, AudioError> {
    if is_ogg_opus(bytes) {
        decode_ogg_opus(bytes, opts, sink)
    } else {
        decode_symphonia(bytes, opts, sink)
    }
}

/// Downmixes one decoded piece (`interleaved`, `channels` channels) and hands it on, counting frames against the
/// cap first.
struct Out<'s, 'a> {
    sink: &'s mut Sink<'a>,
    rate: u32,
    frames: u64,
    mono: Vec<f32>,
}

impl Out<'_, '_> {
    fn push(&mut self, interleaved: &[f32], channels: usize, opts: &DecodeOptions) -> Result<(), AudioError> {
        let piece = if channels <= 1 {
            interleaved
        } else {
            self.mono.clear();
            downmix_into(interleaved, channels, &mut self.mono);
            &self.mono
        };
        if piece.is_empty() {
            return Ok(());
        }
        self.frames += piece.len() as u64;
        check_cap(self.frames, self.rate, opts)?;
        (self.sink)(self.rate, piece)
    }
}

/// Ogg Opus through libopus, fed in slices so that the cap stops a long file early.
fn decode_ogg_opus(bytes: &[u8], opts: &DecodeOptions, sink: &mut Sink<'_>) -> Result<Decoded, AudioError> {
    const RATE: u32 = 48_000;
    let mut decoder = OpusStreamDecoder::new(RATE)?;
    let mut out = Out { sink, rate: RATE, frames: 0, mono: Vec::new() };
    let mut channels = 1u16;
    let mut as_float: Vec<f32> = Vec::new();
    for piece in bytes.chunks(64 * 1024) {
        let pcm = decoder.push_bytes(piece)?;
        channels = decoder.channels().map(u16::from).unwrap_or(1).max(1);
        as_float.clear();
        as_float.extend(pcm.iter().map(|&s| f32::from(s) / 32768.0));
        out.push(&as_float, usize::from(channels), opts)?;
    }
    if !decoder.is_finished() {
        return Err(AudioError::corrupt(
            bytes.len() as u64,
            "the Ogg Opus stream ends early (no end-of-stream page): the file is cut short",
        ));
    }
    Ok(Decoded { format: "ogg/opus".into(), input_channels: channels, rate: RATE, frames: out.frames })
}

fn check_cap(frames: u64, rate: u32, opts: &DecodeOptions) -> Result<(), AudioError> {
    let found = duration_of(frames, rate);
    if found > opts.max_duration {
        return Err(AudioError::TooLong { found, limit: opts.max_duration });
    }
    Ok(())
}

fn map_symphonia(err: SymError, position: u64) -> AudioError {
    match err {
        SymError::Unsupported(what) => AudioError::Unsupported(what.to_string()),
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::corrupt(position, "the file ends in the middle of its data: it is cut short")
        }
        SymError::IoError(e) => AudioError::corrupt(position, e.to_string()),
        SymError::DecodeError(what) => AudioError::corrupt(position, what),
        SymError::LimitError(what) => AudioError::corrupt(position, format!("limit reached: {what}")),
        other => AudioError::corrupt(position, other.to_string()),
    }
}

/// How many frames `len` bytes can hold at most, for uncompressed PCM (whose size follows from its length);
/// `None` for other codecs.
fn pcm_frames_in(params: &AudioCodecParameters, len: usize) -> Option<u64> {
    if !(CODEC_ID_PCM_S32LE..=CODEC_ID_PCM_MULAW).contains(&params.codec) {
        return None;
    }
    let bits = params.bits_per_coded_sample.or(params.bits_per_sample)?;
    let channels = params.channels.as_ref()?.count() as u64;
    let frame_bytes = (u64::from(bits) * channels).div_ceil(8);
    (frame_bytes > 0).then(|| len as u64 / frame_bytes)
}

fn decode_symphonia(bytes: &[u8], opts: &DecodeOptions, sink: &mut Sink<'_>) -> Result<Decoded, AudioError> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), MediaSourceStreamOptions::default());
    let mut format = symphonia::default::get_probe()
        .probe(&Hint::new(), mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) | SymError::IoError(_) => {
                AudioError::Unsupported("not a recognised audio file (WAV, MP3, M4A/AAC, FLAC, Ogg)".into())
            }
            other => map_symphonia(other, 0),
        })?;

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Unsupported("the file has no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::Unsupported("the audio track has no codec Loa knows".into()))?
        .clone();
    let header_frames = track.num_frames;
    let rate = params.sample_rate.filter(|&r| r > 0).ok_or_else(|| AudioError::corrupt(0, "no sample rate"))?;
    if let Some(frames) = header_frames {
        // An uncompressed file too small for the length its header states has a wrong header (damaged, or cut
        // short): that is reported as such after decoding what is there, not as a recording that is too long.
        if pcm_frames_in(&params, bytes.len()).is_none_or(|holds| holds >= frames) {
            check_cap(frames, rate, opts)?;
        }
    }
    let codecs = symphonia::default::get_codecs();
    let codec_name = codecs.get_audio_decoder(params.codec).map_or("unknown", |d| d.codec.info.short_name);
    let name = format!("{}/{}", format.format_info().short_name, codec_name);

    let mut decoder =
        codecs.make_audio_decoder(&params, &AudioDecoderOptions::default()).map_err(|e| map_symphonia(e, 0))?;

    let mut out = Out { sink, rate, frames: 0, mono: Vec::new() };
    let mut interleaved: Vec<f32> = Vec::new();
    let mut channels = 1u16;
    let (mut packets, mut bad_packets) = (0u64, 0u64);
    let mut position = 0u64;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A cut-off file shows up as an unexpected end; what was decoded so far is judged below.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(map_symphonia(e, position)),
        };
        if packet.track_id != track_id {
            continue;
        }
        position = position.saturating_add(packet.data.len() as u64);
        packets += 1;
        match decoder.decode(&packet) {
            Ok(buf) => {
                channels = u16::try_from(buf.spec().channels().count()).unwrap_or(1).max(1);
                buf.copy_to_vec_interleaved(&mut interleaved);
                out.push(&interleaved, usize::from(channels), opts)?;
            }
            // A damaged packet is skipped, as every player does; too many of them and the file is corrupt.
            Err(SymError::DecodeError(_)) => bad_packets += 1,
            Err(e) => return Err(map_symphonia(e, position)),
        }
    }

    let got = out.frames;
    if packets == 0 || got == 0 {
        return Err(if packets == 0 {
            AudioError::Empty
        } else {
            AudioError::corrupt(position, "no packet of the file could be decoded")
        });
    }
    if bad_packets > 10 && bad_packets * 20 > packets {
        return Err(AudioError::corrupt(position, format!("{bad_packets} of {packets} audio packets are damaged")));
    }
    if let Some(expected) = header_frames {
        // Allow a little slack for codec delay and padding (0.1 s or 1 %).
        let slack = (u64::from(rate) / 10).max(expected / 100);
        if got.saturating_add(slack) < expected {
            return Err(AudioError::corrupt(
                bytes.len() as u64,
                format!(
                    "the file says it holds {:.1} s of audio but only {:.1} s is there: it is cut short",
                    duration_of(expected, rate).as_secs_f64(),
                    duration_of(got, rate).as_secs_f64()
                ),
            ));
        }
    }
    Ok(Decoded { format: name, input_channels: channels, rate, frames: got })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_bytes(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for i in 0..frames {
            let v = ((i as f32 * 0.05).sin() * 10_000.0) as i16;
            for _ in 0..channels {
                writer.write_sample(v).unwrap();
            }
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    #[test]
    fn decodes_stereo_wav_to_mono() {
        let pcm = decode(&wav_bytes(44_100, 2, 44_100), &DecodeOptions::default()).unwrap();
        assert_eq!(pcm.rate, 44_100);
        assert_eq!(pcm.input_channels, 2);
        assert_eq!(pcm.samples.len(), 44_100);
        assert!(pcm.format.starts_with("wav"), "{}", pcm.format);
    }

    #[test]
    fn empty_and_garbage_are_typed() {
        assert!(matches!(decode(&[], &DecodeOptions::default()), Err(AudioError::Empty)));
        let text = b"this is a text file that someone renamed to bulletin.mp3\n".repeat(20);
        assert!(matches!(decode(&text, &DecodeOptions::default()), Err(AudioError::Unsupported(_))));
    }

    #[test]
    fn cap_is_checked_from_the_header() {
        let opts = DecodeOptions { max_duration: Duration::from_millis(500) };
        let err = decode(&wav_bytes(8_000, 1, 8_000), &opts).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err}");
    }

    #[test]
    fn a_header_claiming_more_than_the_file_holds_is_corrupt_not_too_long() {
        let mut bytes = wav_bytes(8_000, 1, 8_000);
        let data = bytes.windows(4).position(|w| w == b"data").unwrap();
        // 3 h of 16-bit 8 kHz claimed, 1 s there.
        bytes[data + 4..data + 8].copy_from_slice(&(3 * 3600 * 16_000u32).to_le_bytes());
        let err = decode(&bytes, &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, AudioError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn pieces_add_up_to_the_whole() {
        let bytes = wav_bytes(22_050, 2, 30_000);
        let whole = decode(&bytes, &DecodeOptions::default()).unwrap();
        let mut joined = Vec::new();
        let mut calls = 0;
        let decoded = decode_each(&bytes, &DecodeOptions::default(), &mut |rate, piece| {
            assert_eq!(rate, 22_050);
            calls += 1;
            joined.extend_from_slice(piece);
            Ok(())
        })
        .unwrap();
        assert_eq!(joined, whole.samples);
        assert_eq!(decoded.frames, 30_000);
        assert_eq!((decoded.rate, decoded.input_channels), (22_050, 2));
        assert!(calls > 1, "{calls}");
        // A sink's error stops the decode.
        let err = decode_each(&bytes, &DecodeOptions::default(), &mut |_, _| Err(AudioError::Silent)).unwrap_err();
        assert!(matches!(err, AudioError::Silent), "{err}");
    }

    #[test]
    fn cut_wav_is_reported_cut() {
        let bytes = wav_bytes(16_000, 1, 16_000);
        let err = decode(&bytes[..bytes.len() / 2], &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, AudioError::Corrupt { .. }), "{err}");
    }
}
