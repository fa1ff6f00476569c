//! Background encoding of uploads: each variant's upload (`DATA/uploads/variant-<id>.upload`) goes through
//! `loa_audio::pipeline::encode` on a blocking thread, one encode at a time (they are CPU-heavy and the
//! controller shares a small machine). The result is stored under its SHA-256 and the variant marked `ready`,
//! or `failed` with a message an official can read; then the upload is deleted and dispatch is woken.
//! [`resume_pending`] restarts the variants a crash left `encoding` (their uploads are kept until done).

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

/// A message an official can act on for an audio error.
pub fn describe(e: &AudioError) -> String {
    match e {
        AudioError::Unsupported(_) | AudioError::Corrupt { .. } => {
            format!("the file is not audio we can read ({e}); send a WAV, MP3, M4A, FLAC or Ogg recording")
        }
        AudioError::Empty => "the file holds no audio".into(),
        AudioError::Silent => "the recording is silent; check the microphone and record again".into(),
        AudioError::TooLong { found, limit } => format!(
            "the recording is too long ({} min; the limit is {} min); split it into shorter bulletins",
            found.as_secs().div_ceil(60),
            limit.as_secs() / 60
        ),
        AudioError::InvalidOption(_) | AudioError::Io(_) => format!("encoding failed ({e})"),
    }
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
        let mut opts = PipelineOptions::default();
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

/// Restarts the encode of every variant still `encoding` (after a crash or restart); returns how many.
pub fn resume_pending(state: &AppState) -> usize {
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
        assert!(done.error.unwrap().contains("not audio we can read"));
        assert!(!store.upload_path(v).exists());

        let (_, lost) = store.create_bulletin("y", "other", "vi", 0).unwrap();
        let done = encode_variant(&store, lost).unwrap();
        assert_eq!(done.status, VariantStatus::Failed);
        assert!(done.error.unwrap().contains("upload the recording again"));
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
        };
        let woken = state.replan.clone();
        assert_eq!(resume_pending(&state), 1);
        tokio::time::timeout(Duration::from_secs(120), woken.notified()).await.unwrap();
        assert_eq!(store.bulletin(&id).unwrap().status(), VariantStatus::Ready);
    }
}
