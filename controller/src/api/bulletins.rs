//! `/bulletins`: upload a recording (multipart; answered 202 while it encodes in the background), add another
//! language, look at the state of each variant, download the encoded Ogg Opus, cancel.
//!
//! The upload is streamed to `DATA/uploads/` (never held whole in memory) and counted against
//! `max_upload_bytes` (413 past it), then checked (`check_audio`: decoded in full, nothing stored yet): a
//! file that is not usable audio is deleted and refused with 422 and what to do. The encode job deletes the
//! upload when done.
//!
//! Approval before air: an editor's upload starts `draft`; `POST /bulletins/{id}/submit` (editors) makes it
//! `submitted` (or `approved` at once where the area, or an ancestor, has one-step approval);
//! `/approve` {comment?} and `/reject` {comment} (approvers; not of a bulletin they made themselves) decide.
//! Uploads through the admin token or by an admin are approved on upload. A bulletin belongs to an area (the
//! optional upload field `area_id`, by default the uploader's scope root) and is seen only inside it.

use std::path::PathBuf;

use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::audit::record;
use super::auth::{CurrentUser, Permission};
use super::{rfc3339, rfc3339_opt, ApiError, ApiSettings, AppState, OptionalBody, Params};
use crate::encode_job;
use crate::store::approval::Review;
use crate::store::bulletins::{
    check_new_bulletin, check_new_variant, Approval, Bulletin, BulletinOwner, VariantStatus,
};
use crate::store::random_id;
use crate::store::users::Role;

pub(super) fn routes(settings: &ApiSettings) -> Router<AppState> {
    // Leave room for the multipart framing and the text fields; the file itself is counted exactly.
    let limit = usize::try_from(settings.max_upload_bytes.saturating_add(1024 * 1024)).unwrap_or(usize::MAX);
    Router::new()
        .route("/bulletins", post(upload).get(list).layer(DefaultBodyLimit::max(limit)))
        .route("/bulletins/{id}", get(one).delete(cancel))
        .route("/bulletins/{id}/variants", post(add_variant).layer(DefaultBodyLimit::max(limit)))
        .route("/bulletins/{id}/audio", get(audio))
        .route("/bulletins/{id}/submit", post(submit))
        .route("/bulletins/{id}/approve", post(approve))
        .route("/bulletins/{id}/reject", post(reject))
}

/// A multipart upload saved to disk.
pub(super) struct Upload {
    pub(super) file: Option<PathBuf>,
    pub(super) file_bytes: u64,
    pub(super) title: Option<String>,
    pub(super) category: Option<String>,
    pub(super) language: Option<String>,
    pub(super) library: Option<String>,
    pub(super) targets: Option<String>,
    pub(super) times: Option<String>,
    pub(super) gap_s: Option<String>,
    pub(super) expires_in_s: Option<String>,
    pub(super) area_id: Option<String>,
}

impl Upload {
    pub(super) fn discard(&mut self) {
        if let Some(path) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An upload not handed to an encode job (refused, or its request dropped half-way) leaves no file behind.
impl Drop for Upload {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Refuses a saved upload that is not usable audio, before anything is stored: the file is decoded in full on a
/// blocking thread ([`crate::encode_job::check_upload`], the encoder's own decoder and settings). On failure
/// the file is deleted and the answer is 422 with what is wrong and what to do (a fault of the controller
/// itself is a 500). At most [`AppState::audio_checks`] run at once, except for emergencies (`urgent`).
pub(super) async fn check_audio(state: &AppState, up: &mut Upload, urgent: bool) -> Result<(), ApiError> {
    let Some(path) = up.file.clone() else {
        return Err(ApiError::unprocessable("attach the recording as the multipart field \"file\""));
    };
    let outcome = {
        // An emergency does not queue behind ordinary uploads.
        let _one_of_few = if urgent { None } else { state.audio_checks.acquire().await.ok() };
        tokio::task::spawn_blocking(move || encode_job::check_upload(&path)).await
    };
    let refusal = match outcome {
        Ok(Ok(checked)) => {
            tracing::debug!(
                format = %checked.input.format,
                duration_ms = checked.duration().as_millis() as u64,
                peak_dbfs = checked.peak_dbfs,
                lufs = checked.loudness_lufs,
                "upload checked"
            );
            return Ok(());
        }
        Ok(Err(e)) if encode_job::is_bad_recording(&e) => {
            tracing::info!(error = %e, bytes = up.file_bytes, "upload refused: not usable audio");
            ApiError::unprocessable(encode_job::describe(&e))
        }
        Ok(Err(e)) => ApiError::internal(e),
        Err(e) => ApiError::internal(e),
    };
    up.discard();
    Err(refusal)
}

/// A multipart upload whose rejections (no or wrong content type) are [`ApiError`]s.
pub(super) struct Uploaded(pub Multipart);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Uploaded {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        Multipart::from_request(req, state).await.map(Uploaded).map_err(|r| {
            ApiError::new(
                r.status(),
                "send the recording as multipart/form-data (a form with a file field and the other fields)",
            )
        })
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "the upload is too big")
    } else {
        ApiError::new(status, format!("could not read the upload ({})", e.body_text()))
    }
}

pub(super) async fn read_upload(state: &AppState, mut mp: Multipart) -> Result<Upload, ApiError> {
    let mut up = Upload {
        file: None,
        file_bytes: 0,
        title: None,
        category: None,
        language: None,
        library: None,
        targets: None,
        times: None,
        gap_s: None,
        expires_in_s: None,
        area_id: None,
    };
    let result = read_fields(state, &mut mp, &mut up).await;
    if result.is_err() {
        up.discard();
    }
    result.map(|()| up)
}

async fn read_fields(state: &AppState, mp: &mut Multipart, up: &mut Upload) -> Result<(), ApiError> {
    let max = state.settings.max_upload_bytes;
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                if up.file.is_some() {
                    return Err(ApiError::unprocessable("send one file per request"));
                }
                let path = state.store.data_dir().join("uploads").join(format!("incoming-{}.part", random_id("", 8)));
                up.file = Some(path.clone());
                let mut out = tokio::fs::File::create(&path).await.map_err(ApiError::internal)?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    up.file_bytes += chunk.len() as u64;
                    if up.file_bytes > max {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("the file is bigger than the limit of {} MiB", max / (1024 * 1024)),
                        ));
                    }
                    out.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                out.sync_all().await.map_err(ApiError::internal)?;
            }
            "title" | "category" | "language" | "library" | "targets" | "times" | "gap_s" | "expires_in_s"
            | "area_id" => {
                let text = field.text().await.map_err(multipart_error)?;
                let text = Some(text.trim().to_string());
                match name.as_str() {
                    "title" => up.title = text,
                    "category" => up.category = text,
                    "library" => up.library = text,
                    "targets" => up.targets = text,
                    "times" => up.times = text,
                    "gap_s" => up.gap_s = text,
                    "expires_in_s" => up.expires_in_s = text,
                    "area_id" => up.area_id = text,
                    _ => up.language = text,
                }
            }
            other => {
                return Err(ApiError::unprocessable(format!(
                    "unknown field \"{other}\"; send file, title, category, language, library, area_id"
                )))
            }
        }
    }
    match &up.file {
        None => Err(ApiError::unprocessable("attach the recording as the multipart field \"file\"")),
        Some(_) if up.file_bytes == 0 => Err(ApiError::unprocessable("the file is empty")),
        Some(_) => Ok(()),
    }
}

/// Moves the saved upload to the variant's place and starts its encode job.
pub(super) fn start_encode(state: &AppState, up: &mut Upload, variant_id: i64) -> Result<(), ApiError> {
    let Some(tmp) = up.file.take() else { return Err(ApiError::unprocessable("no file")) };
    if let Err(e) = std::fs::rename(&tmp, state.store.upload_path(variant_id)) {
        let _ = std::fs::remove_file(&tmp);
        let _ = state.store.variant_failed(variant_id, "the upload could not be kept; upload it again");
        return Err(ApiError::internal(e));
    }
    crate::encode_job::spawn_encode(state, variant_id);
    Ok(())
}

/// Reads a yes/no form field.
pub(super) fn flag(field: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(ApiError::unprocessable(format!("{field} must be true or false, not \"{other}\""))),
    }
}

/// The owner of a new bulletin uploaded by `user`: the `area_id` field (inside the user's subtree) or the
/// user's scope root; admins' uploads are approved on upload, everyone else's start as drafts.
pub(super) fn owner_for(
    state: &AppState,
    user: &CurrentUser,
    area_field: Option<&str>,
) -> Result<BulletinOwner, ApiError> {
    let area = match area_field.filter(|s| !s.is_empty()) {
        Some(text) => {
            let id =
                text.parse::<i64>().map_err(|_| ApiError::unprocessable("area_id must be an area id (a number)"))?;
            user.scope(&state.store)?.check_area(id)?;
            state.store.area(id)?;
            Some(id)
        }
        None => user.scope,
    };
    let approval = if user.role == Role::Admin { Approval::Approved } else { Approval::Draft };
    Ok(BulletinOwner { area_id: area, created_by: user.user_id(), approval })
}

async fn upload(
    State(state): State<AppState>,
    user: CurrentUser,
    Uploaded(mp): Uploaded,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::EditBulletins)?;
    let mut up = read_upload(&state, mp).await?;
    let extra =
        [("targets", &up.targets), ("times", &up.times), ("gap_s", &up.gap_s), ("expires_in_s", &up.expires_in_s)]
            .iter()
            .find(|(_, v)| v.is_some())
            .map(|(name, _)| *name);
    if let Some(name) = extra {
        up.discard();
        return Err(ApiError::unprocessable(format!(
            "\"{name}\" belongs to POST /emergencies; a bulletin upload takes file, title, category, language, library"
        )));
    }
    let checked = flag("library", up.library.as_deref())
        .and_then(|library| Ok((library, owner_for(&state, &user, up.area_id.as_deref())?)));
    let (library, owner) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            up.discard();
            return Err(e);
        }
    };
    let language = up.language.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| "vi".into());
    let (title, category) = (up.title.as_deref().unwrap_or_default(), up.category.as_deref().unwrap_or("other"));
    // The fields first (cheap), then the audio (decoded in full), then the store; a refusal drops the upload.
    check_new_bulletin(title, category, &language)?;
    check_audio(&state, &mut up, false).await?;
    let created = state.store.create_bulletin_as(
        up.title.as_deref().unwrap_or_default(),
        up.category.as_deref().unwrap_or("other"),
        &language,
        &owner,
        state.now_ms(),
    );
    let (id, variant) = match created {
        Ok(ok) => ok,
        Err(e) => {
            up.discard();
            return Err(e.into());
        }
    };
    start_encode(&state, &mut up, variant)?;
    if library {
        state.store.set_library(&id, true)?;
    }
    let approval = owner.approval.as_str();
    let detail = json!({
        "title": up.title,
        "language": language,
        "library": library,
        "approval": if owner.approval == Approval::Approved { "approved on upload (admin)" } else { approval },
    });
    record(&state, &user, "bulletin_upload", Some(("bulletin", id.clone())), owner.area_id, detail);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "encoding", "language": language, "library": library, "approval": approval})),
    ))
}

async fn add_variant(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Uploaded(mp): Uploaded,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::EditBulletins)?;
    let scope = user.scope(&state.store)?;
    let b = scope.bulletin(&state.store, &id)?;
    if !scope.owns(b.area_id) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this bulletin belongs to an area above yours"));
    }
    // What an approver approved stays what goes on air: only drafts (or rejected ones) change, except by admins.
    if user.role != Role::Admin && matches!(b.approval, Approval::Submitted | Approval::Approved) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "bulletin {id} is {}; its recordings can no longer change (make a new bulletin)",
                b.approval.as_str()
            ),
        ));
    }
    let mut up = read_upload(&state, mp).await?;
    if up.title.is_some()
        || up.category.is_some()
        || up.library.is_some()
        || up.targets.is_some()
        || up.area_id.is_some()
    {
        up.discard();
        return Err(ApiError::unprocessable("a variant takes only file and language"));
    }
    let Some(language) = up.language.clone().filter(|l| !l.is_empty()) else {
        up.discard();
        return Err(ApiError::unprocessable("say which language this recording is in (field \"language\")"));
    };
    check_new_variant(&language)?;
    check_audio(&state, &mut up, false).await?;
    let variant = match state.store.add_variant(&id, &language, state.now_ms()) {
        Ok(v) => v,
        Err(e) => {
            up.discard();
            return Err(e.into());
        }
    };
    start_encode(&state, &mut up, variant)?;
    record(&state, &user, "bulletin_variant", Some(("bulletin", id.clone())), b.area_id, json!({"language": language}));
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "language": language, "status": "encoding"}))))
}

/// The API view of a bulletin.
pub fn view(b: &Bulletin) -> Value {
    let status = if b.cancelled_at.is_some() { "cancelled" } else { status_name(b.status()) };
    json!({
        "id": b.id,
        "title": b.title,
        "category": b.category,
        "status": status,
        "duration_ms": b.duration_ms(),
        "bytes": b.bytes(),
        "created_at": rfc3339(b.created_at),
        "cancelled_at": rfc3339_opt(b.cancelled_at),
        "library": b.library,
        "approval": b.approval,
        "area_id": b.area_id,
        "created_by": b.created_by,
        "reviewed_by": b.reviewed_by,
        "review_comment": b.review_comment,
        "reviewed_at": rfc3339_opt(b.reviewed_at),
        "variants": b.variants.iter().map(|v| json!({
            "id": v.protocol_id(),
            "language": v.language,
            "status": status_name(v.status),
            "error": v.error,
            "duration_ms": v.duration_ms,
            "bytes": v.bytes,
            "sha256": v.sha256,
        })).collect::<Vec<_>>(),
    })
}

fn status_name(s: VariantStatus) -> &'static str {
    match s {
        VariantStatus::Encoding => "encoding",
        VariantStatus::Ready => "ready",
        VariantStatus::Failed => "failed",
    }
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let scope = user.scope(&state.store)?;
    let list = state.store.list_bulletins()?;
    Ok(Json(Value::Array(list.iter().filter(|b| scope.sees_bulletin(b)).map(view).collect())))
}

async fn one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&user.scope(&state.store)?.bulletin(&state.store, &id)?)))
}

async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::EditBulletins)?;
    let scope = user.scope(&state.store)?;
    let b = scope.bulletin(&state.store, &id)?;
    if !scope.owns(b.area_id) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this bulletin belongs to an area above yours"));
    }
    let n = state.store.cancel_bulletin(&id, state.now_ms())?;
    state.replan.notify_one();
    record(&state, &user, "bulletin_cancel", Some(("bulletin", id.clone())), b.area_id, json!({"cancelled_plays": n}));
    Ok(Json(json!({"id": id, "status": "cancelled", "cancelled_plays": n})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    comment: Option<String>,
}

/// The bulletin if the user may review or submit it: visible and owned inside the user's subtree.
fn owned_bulletin(state: &AppState, user: &CurrentUser, id: &str) -> Result<Bulletin, ApiError> {
    let scope = user.scope(&state.store)?;
    let b = scope.bulletin(&state.store, id)?;
    if !scope.owns(b.area_id) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this bulletin belongs to an area above yours"));
    }
    Ok(b)
}

fn review_view(b: &Bulletin) -> Value {
    json!({"id": b.id, "approval": b.approval, "review_comment": b.review_comment, "reviewed_by": b.reviewed_by})
}

async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::EditBulletins)?;
    let b = owned_bulletin(&state, &user, &id)?;
    let one_step = state.store.one_step_approval(b.area_id)?;
    let to = if one_step { Approval::Approved } else { Approval::Submitted };
    let review = Review { from: &[Approval::Draft, Approval::Rejected], to, by: user.user_id(), comment: None };
    let b = state.store.review_bulletin(&id, &review, state.now_ms())?;
    let detail = json!({"approval": b.approval, "one_step_approval": one_step});
    record(&state, &user, "bulletin_submit", Some(("bulletin", id.clone())), b.area_id, detail);
    Ok(Json(review_view(&b)))
}

async fn approve(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<ReviewBody>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Approve)?;
    let b = owned_bulletin(&state, &user, &id)?;
    if b.created_by.is_some() && b.created_by == user.user_id() && !state.store.one_step_approval(b.area_id)? {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "you made this bulletin, so someone else must approve it"));
    }
    let comment = body.unwrap_or_default().comment.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    let review = Review {
        from: &[Approval::Submitted],
        to: Approval::Approved,
        by: user.user_id(),
        comment: comment.as_deref(),
    };
    let b = state.store.review_bulletin(&id, &review, state.now_ms())?;
    record(&state, &user, "bulletin_approve", Some(("bulletin", id.clone())), b.area_id, json!({"comment": comment}));
    Ok(Json(review_view(&b)))
}

async fn reject(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<ReviewBody>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Approve)?;
    owned_bulletin(&state, &user, &id)?;
    let Some(comment) = body.unwrap_or_default().comment.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) else {
        return Err(ApiError::unprocessable("say why it is rejected: {\"comment\": \"...\"}"));
    };
    if comment.chars().count() > 2000 {
        return Err(ApiError::unprocessable("the comment is longer than 2000 characters"));
    }
    let review =
        Review { from: &[Approval::Submitted], to: Approval::Rejected, by: user.user_id(), comment: Some(&comment) };
    let b = state.store.review_bulletin(&id, &review, state.now_ms())?;
    record(&state, &user, "bulletin_reject", Some(("bulletin", id.clone())), b.area_id, json!({"comment": comment}));
    Ok(Json(review_view(&b)))
}

#[derive(Debug, Deserialize)]
struct AudioQuery {
    language: Option<String>,
}

async fn audio(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Params(q): Params<AudioQuery>,
) -> Result<Response, ApiError> {
    let b = user.scope(&state.store)?.bulletin(&state.store, &id)?;
    let variant =
        match &q.language {
            Some(lang) => {
                let v = b.variants.iter().find(|v| &v.language == lang).ok_or_else(|| {
                    ApiError::new(StatusCode::NOT_FOUND, format!("bulletin {id} has no \"{lang}\" recording"))
                })?;
                if v.status != VariantStatus::Ready {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("the \"{lang}\" recording is {}", status_name(v.status)),
                    ));
                }
                v
            }
            None => b.variants.iter().find(|v| v.status == VariantStatus::Ready).ok_or_else(|| {
                ApiError::new(StatusCode::CONFLICT, format!("bulletin {id} has no encoded audio yet"))
            })?,
        };
    let sha = variant.sha256.as_deref().unwrap_or_default();
    let bytes = tokio::fs::read(state.store.bulletin_path(sha)).await.map_err(ApiError::internal)?;
    let disposition = format!("inline; filename=\"{}.opus\"", variant.protocol_id());
    Ok(([(header::CONTENT_TYPE, "audio/ogg".to_string()), (header::CONTENT_DISPOSITION, disposition)], bytes)
        .into_response())
}
