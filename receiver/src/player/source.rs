//! Turns a play's parts into blocks of mono PCM at the sink's rate: the attention chime and test tones are
//! generated here; Ogg Opus files, complete or still growing, are read a few kilobytes at a time and decoded with
//! `OpusStreamDecoder`, so memory stays small and the first block is ready at once.

use std::collections::VecDeque;
use std::f32::consts::TAU;
use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use loa_audio::ogg::OpusStreamDecoder;

use super::{PlayRequest, Source};
use crate::cache::GrowingFile;

/// Bytes read from a file at a time.
const READ_BYTES: usize = 4096;
/// Peak level of generated tones (about -8 dBFS, under speech normalised to -16 LUFS with -1 dBTP peaks).
const TONE_LEVEL: f32 = 0.4 * i16::MAX as f32;
/// Fade at each end of a tone, so it doesn't click.
const FADE: Duration = Duration::from_millis(10);

/// How long the attention chime lasts, pause included.
pub(crate) const CHIME_MS: u64 = 1200;

/// The attention chime: two tones, then a pause before the bulletin.
const CHIME: [(f32, Duration); 3] =
    [(880.0, Duration::from_millis(350)), (659.25, Duration::from_millis(550)), (0.0, Duration::from_millis(300))];

/// Where a block of audio came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The attention chime.
    Chime,
    /// A generated tone or silence (test tones, gaps between repeats).
    Tone,
    /// Decoded Ogg Opus: the bulletin itself.
    Speech,
}

/// What [`Program::next_block`] gives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// Up to the asked number of samples, and where they came from.
    Pcm(Vec<i16>, Part),
    /// A growing file has no more bytes yet: try again.
    Underrun,
    /// All parts have played.
    End,
}

/// The audio of one play: its parts in order.
pub(crate) struct Program {
    rate: u32,
    parts: VecDeque<Source>,
    current: Option<Stream>,
}

enum Stream {
    Tone(Tone, Part),
    Opus(Box<OpusStream>),
}

impl Program {
    /// The parts of `request` (the chime first if asked) at `rate`.
    pub(crate) fn new(request: &PlayRequest, rate: u32) -> Program {
        let parts: VecDeque<Source> = request.items.iter().cloned().collect();
        let current = request.attention_tone.then(|| Stream::Tone(Tone::new(&CHIME, rate), Part::Chime));
        if current.is_none() && parts.is_empty() {
            tracing::warn!(play_id = %request.play_id, "play has nothing to play");
        }
        Program { rate, parts, current }
    }

    /// The next block of at most `samples` samples; waits at most `wait` for a growing file.
    pub(crate) fn next_block(&mut self, samples: usize, wait: Duration) -> Result<Block, String> {
        loop {
            let stream = match self.current.as_mut() {
                Some(stream) => stream,
                None => match self.parts.pop_front() {
                    None => return Ok(Block::End),
                    Some(source) => self.current.insert(Stream::open(source, self.rate)?),
                },
            };
            let block = match stream {
                Stream::Tone(tone, part) => tone.next(samples, *part),
                Stream::Opus(opus) => opus.next(samples, wait)?,
            };
            match block {
                Block::End => self.current = None,
                other => return Ok(other),
            }
        }
    }
}

impl Stream {
    fn open(source: Source, rate: u32) -> Result<Stream, String> {
        let input = match source {
            Source::Tone { hz, duration } => return Ok(Stream::Tone(Tone::new(&[(hz, duration)], rate), Part::Tone)),
            Source::File(path) => {
                Input::File(File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?)
            }
            Source::Growing(growing) => Input::Growing(growing, 0),
        };
        let decoder = OpusStreamDecoder::new(rate).map_err(|e| format!("cannot decode at {rate} Hz: {e}"))?;
        Ok(Stream::Opus(Box::new(OpusStream { input, decoder, pending: VecDeque::new(), input_done: false })))
    }
}

enum Input {
    File(File),
    /// The file and how many bytes of it were read.
    Growing(Arc<GrowingFile>, u64),
}

struct OpusStream {
    input: Input,
    decoder: OpusStreamDecoder,
    pending: VecDeque<i16>,
    input_done: bool,
}

impl OpusStream {
    fn next(&mut self, samples: usize, wait: Duration) -> Result<Block, String> {
        let mut buf = vec![0u8; READ_BYTES];
        let mut waited = false;
        while self.pending.len() < samples.max(1) && !self.input_done {
            let n = match &mut self.input {
                Input::File(file) => file.read(&mut buf).map_err(|e| format!("cannot read the audio file: {e}"))?,
                Input::Growing(growing, offset) => {
                    let n = growing.read_at(*offset, &mut buf).map_err(|e| format!("cannot read the download: {e}"))?;
                    *offset += n as u64;
                    if n == 0 {
                        let progress = growing.progress();
                        if progress.abandoned {
                            return Err("the download was abandoned or failed verification".into());
                        }
                        if !(progress.complete && *offset >= progress.total) {
                            if !self.pending.is_empty() || waited {
                                break;
                            }
                            growing.wait_beyond(*offset, wait);
                            waited = true;
                            continue;
                        }
                    }
                    n
                }
            };
            let pcm = self.decoder.push_bytes(buf.get(..n).unwrap_or_default()).map_err(|e| e.to_string())?;
            self.push_mono(&pcm);
            if n == 0 {
                self.input_done = true;
                if !self.decoder.is_finished() {
                    tracing::warn!("Ogg Opus file ends without its end-of-stream page");
                }
            }
        }
        if self.pending.is_empty() {
            return Ok(if self.input_done { Block::End } else { Block::Underrun });
        }
        let take = samples.min(self.pending.len());
        Ok(Block::Pcm(self.pending.drain(..take).collect(), Part::Speech))
    }

    /// Appends interleaved PCM, averaged down to mono.
    fn push_mono(&mut self, pcm: &[i16]) {
        let channels = usize::from(self.decoder.channels().unwrap_or(1).max(1));
        if channels == 1 {
            self.pending.extend(pcm);
            return;
        }
        for frame in pcm.chunks(channels) {
            let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
            self.pending.push_back((sum / channels as i32) as i16);
        }
    }
}

/// Sine tones with short fades, one after another; a frequency of 0 is silence.
struct Tone {
    segments: Vec<(f32, usize)>,
    segment: usize,
    pos: usize,
    rate: u32,
}

impl Tone {
    fn new(segments: &[(f32, Duration)], rate: u32) -> Tone {
        let segments = segments.iter().map(|(hz, d)| (*hz, (d.as_secs_f64() * f64::from(rate)) as usize)).collect();
        Tone { segments, segment: 0, pos: 0, rate }
    }

    fn next(&mut self, samples: usize, part: Part) -> Block {
        let fade = (FADE.as_secs_f32() * self.rate as f32).max(1.0);
        let mut out = Vec::with_capacity(samples);
        while out.len() < samples {
            let Some(&(hz, len)) = self.segments.get(self.segment) else {
                break;
            };
            if self.pos >= len {
                self.segment += 1;
                self.pos = 0;
                continue;
            }
            let edge = self.pos.min(len - 1 - self.pos) as f32;
            let envelope = (edge / fade).min(1.0);
            let t = self.pos as f32 / self.rate as f32;
            let value = if hz > 0.0 { TONE_LEVEL * envelope * (TAU * hz * t).sin() } else { 0.0 };
            out.push(value.round() as i16);
            self.pos += 1;
        }
        if out.is_empty() {
            Block::End
        } else {
            Block::Pcm(out, part)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_have_the_right_length_and_level() {
        let mut tone = Tone::new(&CHIME, 16_000);
        let mut total = Vec::new();
        while let Block::Pcm(pcm, Part::Chime) = tone.next(320, Part::Chime) {
            assert!(pcm.len() <= 320);
            total.extend(pcm);
        }
        assert_eq!(total.len(), 16_000 * 1200 / 1000);
        let peak = total.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 12_000 && peak <= TONE_LEVEL as u16 + 1, "{peak}");
        assert_eq!(total[0], 0, "fades in");
        assert!(total[16_000 * 900 / 1000..].iter().all(|&s| s == 0), "ends in silence");
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let request = PlayRequest {
            play_id: "p".into(),
            title: "t".into(),
            tier: super::super::Tier::Normal,
            start_at: std::time::Instant::now(),
            volume: 1.0,
            items: vec![Source::File("/nonexistent/x.opus".into())],
            attention_tone: false,
        };
        let mut program = Program::new(&request, 16_000);
        assert!(program.next_block(320, Duration::ZERO).unwrap_err().contains("cannot open"));
    }
}
