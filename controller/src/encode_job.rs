//! Background encoding of uploads: each variant's upload (`DATA/uploads/variant-<id>.upload`) goes through
//! `loa_audio::pipeline::encode` on a blocking thread, one encode at a time (they are CPU-heavy and the
//! controller shares a small machine). The result is stored under its SHA-256 and the variant marked `ready`,
//! or `failed` with a message an official can read; then the upload is deleted and dispatch is woken.
//! [`resume_pending`] restarts the variants a crash left `encoding` (their uploads are kept until done), after
//! [`clean_leftovers`] has removed what a crash left half-written (uploads still arriving, files being stored).
//! Before any of that, the API refuses unusable recordings at upload time with [`check_upload`] (the same decoder
//! and the same messages, [`describe`]); the encode can still fail later for other reasons, and says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use loa_audio::pipeline::{self, PipelineOptions};
use loa_audio::AudioError;
use tokio::sync::Notify;

use crate::api::AppState;
use crate::store::bulletins::{Variant, VariantStatus};
use crate::store::{Store, StoreError};

/// One encode at a time.
static ENCODE_LOCK: Mutex<()> = Mutex::new(());

/// Why an encode did not produce a file.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The upload is not usable audio: the message is for the official (stored as the variant's error).
    #[error("{0}")]
    Audio(String),
    /// The upload file is gone (e.g. lost in a crash before it was kept): upload again.
    #[error("the uploaded file was lost; upload the recording again")]
    UploadMissing,
    /// The store failed: a server fault.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A message an official can act on for an audio error: what is wrong with the recording and what to do, with no
/// internal detail (the error itself goes to the log).
pub fn describe(e: &AudioError) -> String {
    match e {
        AudioError::Unsupported(_) => {
            "the file is not audio Loa can read (MP3, WAV, M4A, FLAC, Ogg); export it again as MP3".into()
        }
        AudioError::Corrupt { .. } => {
            "the file is damaged or cut short; copy it from the recorder again, or export it again as MP3".into()
        }
        AudioError::Empty => "the file holds no sound; check that you chose the right file".into(),
        AudioError::Silent => "the recording is silent; check the microphone and record again".into(),
        AudioError::TooLong { found, limit } => format!(
            "the recording is {} long; the limit is {}; split it into shorter bulletins",
            length(*found),
            length(*limit)
        ),
        AudioError::InvalidOption(_) | AudioError::Io(_) => {
            "the controller could not encode this recording; try again, and tell the administrator if it fails again"
                .into()
        }
    }
}

/// A length as an official says it: "45 s", "12 min", "60 min", "90 min", then "3 h", "2 h 30 min" from two hours
/// (whole minutes rounded up).
fn length(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        return format!("{} s", secs.max(1));
    }
    let minutes = secs.div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0 | 1, _) => format!("{minutes} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// Whether the recording is at fault (the official can fix it by sending another), not the controller.
pub fn is_bad_recording(e: &AudioError) -> bool {
    !matches!(e, AudioError::InvalidOption(_) | AudioError::Io(_))
}

/// The pipeline settings of every encode (the tags are added per variant).
pub fn pipeline_options() -> PipelineOptions {
    PipelineOptions::default()
}

/// Checks a saved upload before anything is stored: decodes it all and measures it ([`loa_audio::check()`]) with the
/// encode's own settings, so what passes here encodes (short of a fault of the controller). Blocking: CPU for
/// a few percent of the encode's time (run it on a blocking thread).
pub fn check_upload(path: &std::path::Path) -> Result<loa_audio::Checked, AudioError> {
    let bytes = std::fs::read(path)?;
    loa_audio::check(&bytes, &pipeline_options())
}

/// Encodes variant `variant_id` now, on this thread: marks it ready or failed and deletes the upload.
/// Returns the variant as stored afterwards (`Err` only for store faults, leaving it `encoding`).
pub fn encode_variant(store: &Store, variant_id: i64) -> Result<Variant, StoreError> {
    let variant = store.variant(variant_id)?;
    if variant.status != VariantStatus::Encoding {
        return Ok(variant);
    }
    let bulletin = store.bulletin(&variant.bulletin_id)?;
    let upload = store.upload_path(variant_id);
    let outcome = (|| -> Result<(String, i64, i64), EncodeError> {
        let bytes = match std::fs::read(&upload) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EncodeError::UploadMissing),
            Err(e) => return Err(EncodeError::Store(StoreError::Io(e))),
        };
        let mut opts = pipeline_options();
        opts.encode.tags = vec![
            ("TITLE".into(), bulletin.title.clone()),
            ("CATEGORY".into(), bulletin.category.clone()),
            ("LANGUAGE".into(), variant.language.clone()),
            ("BULLETIN".into(), variant.protocol_id()),
        ];
        let encoded = {
            let _one_at_a_time = ENCODE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            pipeline::encode(&bytes, &opts).map_err(|e| EncodeError::Audio(describe(&e)))?
        };
        let sha = store.write_bulletin_file(&encoded.ogg)?;
        let duration_ms = i64::try_from(encoded.duration.as_millis()).unwrap_or(i64::MAX);
        Ok((sha, encoded.ogg.len() as i64, duration_ms))
    })();
    match outcome {
        Ok((sha, bytes, duration_ms)) => {
            store.variant_ready(variant_id, &sha, bytes, duration_ms)?;
            tracing::info!(variant = %variant.protocol_id(), bytes, duration_ms, "bulletin encoded");
        }
        Err(EncodeError::Store(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(variant = %variant.protocol_id(), error = %e, "bulletin could not be encoded");
            store.variant_failed(variant_id, &e.to_string())?;
        }
    }
    if let Err(e) = std::fs::remove_file(&upload) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %upload.display(), error = %e, "could not delete an upload");
        }
    }
    store.variant(variant_id)
}

/// Runs [`encode_variant`] on a blocking thread, then wakes dispatch. Store faults are retried a few times.
pub fn spawn_encode(state: &AppState, variant_id: i64) -> tokio::task::JoinHandle<()> {
    spawn_encode_with(state.store.clone(), state.replan.clone(), variant_id)
}

/// [`spawn_encode`] without an [`AppState`].
pub fn spawn_encode_with(store: Store, replan: Arc<Notify>, variant_id: i64) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        for attempt in 1..=3u32 {
            match encode_variant(&store, variant_id) {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(variant_id, attempt, error = %e, "encode job failed");
                    std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                }
            }
        }
        replan.notify_one();
    })
}

/// Removes what a crash (`kill -9`, power cut) left behind; call it at start, before HTTP is served. That is:
/// uploads that were still arriving (`uploads/incoming-*.part`), uploads whose variant is no longer `encoding`
/// or no longer exists (the crash came between storing the result and deleting the upload), and temporary
/// files of interrupted atomic writes in `bulletins/` (`.*.tmp`). Returns how many files it removed; what it
/// cannot list or delete is logged and left.
pub fn clean_leftovers(store: &Store) -> usize {
    let encoding: std::collections::HashSet<i64> = match store.encoding_variants() {
        Ok(list) => list.iter().map(|v| v.id).collect(),
        Err(e) => {
            tracing::error!(error = %e, "could not list interrupted encodes; leftover uploads are kept");
            return 0;
        }
    };
    let is_leftover_upload = |name: &str| {
        if name.starts_with("incoming-") && name.ends_with(".part") {
            return true;
        }
        match name.strip_prefix("variant-").and_then(|n| n.strip_suffix(".upload")).map(str::parse::<i64>) {
            Some(Ok(id)) => !encoding.contains(&id),
            _ => false,
        }
    };
    let is_leftover_temp = |name: &str| name.starts_with('.') && name.ends_with(".tmp");
    remove_files(&store.data_dir().join("uploads"), &is_leftover_upload)
        + remove_files(&store.data_dir().join("bulletins"), &is_leftover_temp)
}

/// Deletes the plain files in `dir` whose name `leftover` picks; returns how many.
fn remove_files(dir: &std::path::Path, leftover: &dyn Fn(&str) -> bool) -> usize {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not look for leftovers");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !leftover(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(file = %entry.path().display(), "removed a file left by an interrupted run");
                removed += 1;
            }
            Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a leftover"),
        }
    }
    removed
}

/// Cleans what a crash left ([`clean_leftovers`]), then restarts the encode of every variant still `encoding`
/// (after a crash or restart); returns how many encodes it restarted.
pub fn resume_pending(state: &AppState) -> usize {
    clean_leftovers(&state.store);
    match state.store.encoding_variants() {
        Ok(list) => {
            for v in &list {
                tracing::info!(variant = %v.protocol_id(), "resuming an interrupted encode");
                spawn_encode(state, v.id);
            }
            list.len()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not list interrupted encodes");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "/work/shared/fixtures/audio/bulletin-vi-8k-mulaw.wav";

    #[test]
    fn encodes_a_fixture_and_deletes_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, v) = store.create_bulletin("Tin thời tiết", "disaster", "vi", 0).unwrap();
        std::fs::copy(FIXTURE, store.upload_path(v)).unwrap();
        let done = encode_variant(&store, v).unwrap();
        assert_eq!(done.status, VariantStatus::Ready, "{:?}", done.error);
        let sha = done.sha256.unwrap();
        let file = std::fs::read(store.bulletin_path(&sha)).unwrap();
        assert_eq!(crate::store::sha256_hex(&file), sha);
        assert_eq!(done.bytes, Some(file.len() as i64));
        assert!(done.duration_ms.unwrap() > 1000);
        assert!(!store.upload_path(v).exists());
        let tags = loa_audio::pipeline::inspect(&file, &Default::default()).unwrap().tags;
        assert!(tags.iter().any(|(k, v)| k == "TITLE" && v == "Tin thời tiết"), "{tags:?}");
        assert!(tags.iter().any(|(k, v)| k == "BULLETIN" && *v == format!("{id}-vi")));
    }

    #[test]
    fn garbage_and_lost_uploads_fail_with_readable_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, v) = store.create_bulletin("x", "other", "vi", 0).unwrap();
        std::fs::write(store.upload_path(v), b"this is a text file, not a recording").unwrap();
        let done = encode_variant(&store, v).unwrap();
        assert_eq!(done.status, VariantStatus::Failed);
        assert!(done.error.unwrap().contains("not audio Loa can read"));
        assert!(!store.upload_path(v).exists());

        let (_, lost) = store.create_bulletin("y", "other", "vi", 0).unwrap();
        let done = encode_variant(&store, lost).unwrap();
        assert_eq!(done.status, VariantStatus::Failed);
        assert!(done.error.unwrap().contains("upload the recording again"));
    }

    #[test]
    fn every_audio_error_has_a_message_an_official_can_act_on() {
        let cases = [
            (AudioError::Unsupported("symphonia: no reader for RIFF".into()), "not audio Loa can read"),
            (AudioError::corrupt(123_456, "mp3: invalid main_data_begin"), "damaged or cut short"),
            (AudioError::Empty, "holds no sound"),
            (AudioError::Silent, "the recording is silent"),
            (
                AudioError::TooLong { found: Duration::from_secs(3 * 3600), limit: Duration::from_secs(3600) },
                "the recording is 3 h long; the limit is 60 min",
            ),
            (
                AudioError::TooLong { found: Duration::from_secs(3600 + 1), limit: Duration::from_secs(3600) },
                "the recording is 61 min long; the limit is 60 min",
            ),
            (AudioError::InvalidOption("opus encoder: bad arg".into()), "could not encode this recording"),
            (AudioError::Io(std::io::Error::other("/data/uploads/x: os error 5")), "could not encode"),
        ];
        for (e, want) in &cases {
            let message = describe(e);
            assert!(message.contains(want), "{e}: {message}");
            // What to do, and nothing internal: no codec or crate names, byte offsets, paths or OS errors.
            assert!(message.contains(';'), "{message}");
            for leak in ["symphonia", "mp3:", "123456", "123 456", "opus encoder", "/data", "os error", "byte"] {
                assert!(!message.contains(leak), "{e}: {message} leaks {leak}");
            }
        }
        assert!(cases[..5].iter().all(|(e, _)| is_bad_recording(e)));
        assert!(cases[6..].iter().all(|(e, _)| !is_bad_recording(e)));
        assert_eq!(length(Duration::from_secs(45)), "45 s");
        assert_eq!(length(Duration::from_millis(200)), "1 s");
        assert_eq!(length(Duration::from_secs(12 * 60 - 5)), "12 min");
        assert_eq!(length(Duration::from_secs(80 * 60)), "80 min");
        assert_eq!(length(Duration::from_secs(150 * 60)), "2 h 30 min");
    }

    #[test]
    fn check_upload_refuses_what_the_encode_would_fail() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.upload");
        std::fs::copy(FIXTURE, &good).unwrap();
        assert!(check_upload(&good).unwrap().duration() > Duration::from_secs(20));
        let text = dir.path().join("text.upload");
        std::fs::write(&text, b"this is a text file, not a recording").unwrap();
        let e = check_upload(&text).unwrap_err();
        assert!(is_bad_recording(&e) && matches!(e, AudioError::Unsupported(_)), "{e}");
        let gone = check_upload(&dir.path().join("gone.upload")).unwrap_err();
        assert!(!is_bad_recording(&gone), "{gone}");
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_pending_uploads_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, pending) = store.create_bulletin("x", "other", "vi", 0).unwrap();
        let (_, done) = store.create_bulletin("y", "other", "vi", 0).unwrap();
        store.variant_failed(done, "test").unwrap();
        let uploads = dir.path().join("uploads");
        let bulletins = dir.path().join("bulletins");
        for name in ["incoming-0a1b2c3d.part", &format!("variant-{done}.upload"), "variant-999.upload"] {
            std::fs::write(uploads.join(name), b"half").unwrap();
        }
        std::fs::write(store.upload_path(pending), b"kept").unwrap();
        std::fs::write(uploads.join("notes.txt"), b"not ours").unwrap();
        std::fs::write(bulletins.join(".abc.opus.x1y2z3.tmp"), b"half").unwrap();
        std::fs::write(bulletins.join("abc.opus"), b"kept").unwrap();

        assert_eq!(clean_leftovers(&store), 4);
        let mut left: Vec<String> = std::fs::read_dir(&uploads)
            .unwrap()
            .chain(std::fs::read_dir(&bulletins).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["abc.opus".to_string(), "notes.txt".into(), format!("variant-{pending}.upload")]);
        assert_eq!(clean_leftovers(&store), 0);
    }

    #[tokio::test]
    async fn resume_pending_finishes_interrupted_encodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, v) = store.create_bulletin("x", "other", "vi", 0).unwrap();
        std::fs::copy(FIXTURE, store.upload_path(v)).unwrap();
        let state = AppState {
            store: store.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            replan: Arc::new(Notify::new()),
            urgent: Arc::default(),
            settings: Default::default(),
            commands: None,
            audio_checks: crate::api::audio_checks(),
        };
        let woken = state.replan.clone();
        assert_eq!(resume_pending(&state), 1);
        tokio::time::timeout(Duration::from_secs(120), woken.notified()).await.unwrap();
        assert_eq!(store.bulletin(&id).unwrap().status(), VariantStatus::Ready);
    }
}
