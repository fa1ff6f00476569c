//! The WAV sink: each play becomes `<play_id>.wav` (mono, 16-bit, at the sink's rate) in a folder. The file is
//! written under a temporary name (`.<play_id>.wav.tmp`) and renamed when the play ends, so a half-written play
//! is never mistaken for a finished one; a play cut short (stopped or preempted) is renamed too and holds what
//! went out before the cut. A later play with the same id replaces the file. By default it paces in real time,
//! as a sound card would, so that "playing" and preemption can be observed; [`WavSink::paced`] turns that off.
//! Characters of a play id other than letters, digits, `-`, `_` and `.` become `_` in the file name.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::pace::Pacer;
use super::{PlayInfo, Sink, SinkError};

/// Writes one WAV file per play. See the module documentation.
pub struct WavSink {
    dir: PathBuf,
    rate: u32,
    pacer: Option<Pacer>,
    current: Option<Current>,
}

struct Current {
    writer: hound::WavWriter<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("dir", &self.dir)
            .field("rate", &self.rate)
            .field("paced", &self.pacer.is_some())
            .field("open", &self.current.as_ref().map(|c| &c.target))
            .finish()
    }
}

fn io(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io { path: path.to_path_buf(), source }
}

fn wav_error(path: &Path, e: hound::Error) -> SinkError {
    match e {
        hound::Error::IoError(source) => io(path, source),
        other => io(path, std::io::Error::other(other.to_string())),
    }
}

/// A file name for `play_id`: safe characters only, never hidden.
fn file_stem(play_id: &str) -> String {
    let stem: String =
        play_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if stem.is_empty() || stem.starts_with('.') {
        format!("play{stem}")
    } else {
        stem
    }
}

impl WavSink {
    /// A real-time WAV sink writing into `dir` (created if missing) at `rate`.
    pub fn new(dir: impl Into<PathBuf>, rate: u32) -> Result<WavSink, SinkError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(WavSink { dir, rate, pacer: Some(Pacer::new(rate)), current: None })
    }

    /// Turns real-time pacing on or off.
    pub fn paced(mut self, paced: bool) -> Self {
        self.pacer = paced.then(|| Pacer::new(self.rate));
        self
    }

    /// Where the finished file of `play_id` goes.
    pub fn path_for(&self, play_id: &str) -> PathBuf {
        self.dir.join(format!("{}.wav", file_stem(play_id)))
    }

    /// Finalises the current file and gives it its real name.
    fn finish(&mut self) -> Result<(), SinkError> {
        let Some(current) = self.current.take() else {
            return Err(SinkError::NotOpen);
        };
        let Current { writer, tmp, target } = current;
        let result = (|| {
            writer.finalize().map_err(|e| wav_error(&tmp, e))?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
            fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(&self.dir, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl Sink for WavSink {
    fn open(&mut self, play: &PlayInfo) -> Result<(), SinkError> {
        if let Some(old) = self.current.take() {
            tracing::warn!(file = %old.tmp.display(), "WAV sink reopened without closing; dropping the old play");
            drop(old.writer);
            let _ = fs::remove_file(&old.tmp);
        }
        let stem = file_stem(&play.play_id);
        let target = self.dir.join(format!("{stem}.wav"));
        let tmp = self.dir.join(format!(".{stem}.wav.tmp"));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: self.rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&tmp, spec).map_err(|e| wav_error(&tmp, e))?;
        tracing::debug!(play_id = %play.play_id, file = %target.display(), "WAV sink opened");
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        self.current = Some(Current { writer, tmp, target });
        Ok(())
    }

    fn write(&mut self, pcm: &[i16]) -> Result<(), SinkError> {
        let Some(current) = self.current.as_mut() else {
            return Err(SinkError::NotOpen);
        };
        if let Some(p) = &mut self.pacer {
            p.accept(pcm.len());
        }
        let mut w = current.writer.get_i16_writer(pcm.len() as u32);
        for &s in pcm {
            w.write_sample(s);
        }
        w.flush().map_err(|e| wav_error(&current.tmp, e))
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if self.current.is_none() {
            return Err(SinkError::NotOpen);
        }
        if let Some(p) = &mut self.pacer {
            p.drain();
        }
        self.finish()
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        if self.current.is_none() {
            return Ok(());
        }
        self.finish()
    }

    fn rate(&self) -> u32 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> PlayInfo {
        PlayInfo { play_id: id.into(), title: "t".into() }
    }

    #[test]
    fn one_file_per_play_appearing_only_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = WavSink::new(dir.path(), 16_000).unwrap().paced(false);
        sink.open(&info("p-1")).unwrap();
        sink.write(&[1, 2, 3]).unwrap();
        sink.write(&[-4]).unwrap();
        let done = sink.path_for("p-1");
        assert!(!done.exists(), "no finished file while the play is going");
        assert!(dir.path().join(".p-1.wav.tmp").exists());
        sink.close().unwrap();
        let mut reader = hound::WavReader::open(&done).unwrap();
        assert_eq!(reader.spec().sample_rate, 16_000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples, vec![1, 2, 3, -4]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(sink.write(&[0]), Err(SinkError::NotOpen)));
    }

    #[test]
    fn aborted_plays_keep_what_was_played_and_names_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = WavSink::new(dir.path(), 16_000).unwrap().paced(false);
        sink.open(&info("../evil id")).unwrap();
        sink.write(&[7; 100]).unwrap();
        sink.abort().unwrap();
        let path = dir.path().join("play.._evil_id.wav");
        assert_eq!(sink.path_for("../evil id"), path);
        assert_eq!(hound::WavReader::open(&path).unwrap().len(), 100);
        assert_eq!(file_stem(".hidden"), "play.hidden");
        assert_eq!(file_stem(""), "play");
    }

    #[test]
    fn paced_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = WavSink::new(dir.path(), 1000).unwrap();
        let t0 = std::time::Instant::now();
        sink.open(&info("x")).unwrap();
        sink.write(&[0; 50]).unwrap();
        sink.write(&[0; 50]).unwrap();
        sink.close().unwrap();
        assert!(t0.elapsed() >= std::time::Duration::from_millis(100));
    }
}
