//! `/emergencies`: the fast path for warnings (flash flood, landslide, storm).
//!
//! `POST /emergencies` sends a warning to its targets now: either a bulletin already encoded (JSON body with
//! `bulletin_id`, typically one from the library of pre-recorded warnings, `GET /emergencies/library`), or a new
//! recording (multipart: `file`, `title`, `language`, `targets` as JSON, optional `times`, `gap_s`,
//! `expires_in_s`), which is encoded first. It becomes a schedule of tier `emergency` at the current instant:
//! no approval, no quiet hours, preempting whatever plays, each play sounding the warning `times` times (default
//! 3) `gap_s` apart (default 10 s) at emergency volume (default full), and valid for `expires_in_s` (default one
//! hour): a receiver that was offline plays it when it comes back only within that time. Dispatch is told to
//! publish the targeted receivers' plans before anything else ([`crate::dispatch::Urgent`]).
//! The upload limit applies to multipart bodies only; a JSON body over [`MAX_JSON_BYTES`] is a 413.
//! `DELETE /emergencies/{id}` cancels it everywhere: receivers stop it, on air or not, as soon as their new plan
//! arrives. Both need the emergency right (admins and the admin token have it) and targets inside the user's
//! subtree; library warnings made at or above the user's area may be sent.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::SecondsFormat;
use loa_protocol::Tier;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::record;
use super::auth::{CurrentUser, Permission};
use super::bulletins::{check_audio, read_upload, start_encode};
use super::{numeric_id, ApiError, ApiSettings, AppState, Body};
use crate::schedule::{create_schedule, OnClash, ScheduleRequest, Targets};
use crate::store::bulletins::{check_new_bulletin, VariantStatus};
use crate::store::plays::PlayFilter;

/// Times a warning sounds within one play, by default.
pub const DEFAULT_TIMES: u32 = 3;
/// Silence between those times, by default, seconds.
pub const DEFAULT_GAP_S: u32 = 10;
/// How long a warning stays valid, by default, seconds.
pub const DEFAULT_EXPIRES_IN_S: u32 = 3600;
/// Longest validity, seconds (a day: older news is not an emergency).
pub const MAX_EXPIRES_IN_S: u32 = 86_400;
/// How long an uploaded warning may take to encode before it is sent anyway when ready.
const ENCODE_WAIT: Duration = Duration::from_secs(600);
/// Largest JSON body (a library warning is a few hundred bytes); only multipart uploads get the upload limit.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

pub(super) fn routes(settings: &ApiSettings) -> Router<AppState> {
    let limit = usize::try_from(settings.max_upload_bytes.saturating_add(1024 * 1024)).unwrap_or(usize::MAX);
    Router::new()
        .route("/emergencies", post(send).get(list).layer(DefaultBodyLimit::max(limit)))
        .route("/emergencies/library", get(library))
        .route("/emergencies/{id}", delete(cancel))
}

/// The JSON body of `POST /emergencies`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRequest {
    /// An encoded bulletin (e.g. from the library).
    pub bulletin_id: String,
    /// Who hears it.
    pub targets: Targets,
    /// Times it sounds per play (1 to 5, default 3).
    #[serde(default)]
    pub times: Option<u32>,
    /// Silence between those times, seconds (default 10).
    #[serde(default)]
    pub gap_s: Option<u32>,
    /// Valid for this long, seconds (default 3600, at most 86400).
    #[serde(default)]
    pub expires_in_s: Option<u32>,
    /// 0..1 (default 1: emergency volume).
    #[serde(default)]
    pub volume: Option<f64>,
}

async fn send(
    State(state): State<AppState>,
    user: CurrentUser,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Emergency)?;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::bad_request(format!("could not read the upload: {}", e.body_text())))?;
        return send_upload(state, user, mp).await;
    }
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, MAX_JSON_BYTES)));
    let Body(body) = Body::<EmergencyRequest>::from_request(req, &state).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                e.status,
                "the request is bigger than 64 KiB; send a library warning as a short JSON body, or a recording as \
                 multipart/form-data",
            )
        } else {
            e
        }
    })?;
    let scope = user.scope(&state.store)?;
    let ready = scope.bulletin(&state.store, &body.bulletin_id)?;
    scope.check_targets(&state.store, &body.targets)?;
    if ready.status() != VariantStatus::Ready {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("bulletin {} has no encoded audio yet; wait until it is ready or send a recording", ready.id),
        ));
    }
    let made = create(&state, &body)?;
    state.urgent.push(made.receivers.iter().cloned());
    audit_send(&state, &user, &made, &body, &ready.title);
    Ok((StatusCode::CREATED, Json(made.view)))
}

fn audit_send(state: &AppState, user: &CurrentUser, made: &Made, body: &EmergencyRequest, title: &str) {
    let t = &body.targets;
    let detail = json!({
        "bulletin_id": body.bulletin_id,
        "title": title,
        "receivers": made.receivers.len(),
        "targets": {"areas": t.areas, "groups": t.groups, "receivers": t.receivers},
    });
    let scope = user.scope;
    record(state, user, "emergency_send", Some(("schedule", made.schedule_id.to_string())), scope, detail);
}

/// A new recording sent as an emergency: stored, encoded, then sent the moment it is ready.
async fn send_upload(state: AppState, user: CurrentUser, mp: Multipart) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut up = read_upload(&state, mp).await?;
    let parsed = (|| {
        let num = |name: &str, v: &Option<String>| -> Result<Option<u32>, ApiError> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().map_err(|_| ApiError::unprocessable(format!("{name} must be a number"))))
                .transpose()
        };
        let targets: Targets = match up.targets.as_deref() {
            Some(t) => serde_json::from_str(t)
                .map_err(|e| ApiError::unprocessable(format!("targets must be JSON like {{\"areas\": [3]}}: {e}")))?,
            None => {
                return Err(ApiError::unprocessable("say who hears it: the field \"targets\", e.g. {\"areas\": [3]}"))
            }
        };
        user.scope(&state.store)?.check_targets(&state.store, &targets)?;
        let owner = super::bulletins::owner_for(&state, &user, up.area_id.as_deref())?;
        Ok((targets, num("times", &up.times)?, num("gap_s", &up.gap_s)?, num("expires_in_s", &up.expires_in_s)?, owner))
    })();
    let (targets, times, gap_s, expires_in_s, owner) = match parsed {
        Ok(p) => p,
        Err(e) => {
            up.discard();
            return Err(e);
        }
    };
    let language = up.language.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| "vi".into());
    let title = up.title.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "Cảnh báo khẩn cấp".into());
    let category = up.category.clone().unwrap_or_else(|| "disaster".into());
    // A recording that cannot be played is refused now, while the official is still there to send another
    // (after the cheap checks of the fields, before anything is stored).
    check_new_bulletin(&title, &category, &language)?;
    check_audio(&state, &mut up, true).await?;
    let (id, variant) = match state.store.create_bulletin_as(&title, &category, &language, &owner, state.now_ms()) {
        Ok(ok) => ok,
        Err(e) => {
            up.discard();
            return Err(e.into());
        }
    };
    let body = EmergencyRequest { bulletin_id: id.clone(), targets, times, gap_s, expires_in_s, volume: None };
    // Schedule first (so a bad target is refused before anything is encoded), then encode.
    let made = match create(&state, &body) {
        Ok(m) => m,
        Err(e) => {
            up.discard();
            let _ = state.store.cancel_bulletin(&id, state.now_ms());
            return Err(e);
        }
    };
    if let Err(e) = start_encode(&state, &mut up, variant) {
        // Nothing half-made stays behind: no emergency waits for audio that will never come.
        let _ = state.store.cancel_schedule(made.schedule_id, state.now_ms());
        let _ = state.store.cancel_bulletin(&id, state.now_ms());
        return Err(e);
    }
    audit_send(&state, &user, &made, &body, &title);
    let (store, urgent, receivers) = (state.store.clone(), state.urgent.clone(), made.receivers.clone());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + ENCODE_WAIT;
        while tokio::time::Instant::now() < deadline {
            match store.bulletin(&id).map(|b| b.status()) {
                Ok(VariantStatus::Ready) => {
                    urgent.push(receivers);
                    return;
                }
                Ok(VariantStatus::Failed) | Err(_) => {
                    tracing::error!(bulletin = %id, "emergency recording could not be encoded; nothing was sent");
                    return;
                }
                Ok(VariantStatus::Encoding) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(made.view)))
}

struct Made {
    schedule_id: i64,
    view: Value,
    receivers: BTreeSet<String>,
}

fn create(state: &AppState, body: &EmergencyRequest) -> Result<Made, ApiError> {
    let times = body.times.unwrap_or(DEFAULT_TIMES);
    let gap_s = body.gap_s.unwrap_or(DEFAULT_GAP_S);
    let expires_in_s = body.expires_in_s.unwrap_or(DEFAULT_EXPIRES_IN_S);
    if !(60..=MAX_EXPIRES_IN_S).contains(&expires_in_s) {
        return Err(ApiError::unprocessable(format!("expires_in_s must be between 60 and {MAX_EXPIRES_IN_S}")));
    }
    if gap_s > 600 {
        return Err(ApiError::unprocessable("gap_s must be at most 600 (ten minutes)"));
    }
    // Whole milliseconds: the instant is written into the schedule's rule at that precision.
    let now = state.now();
    let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let expires = now + chrono::Duration::seconds(i64::from(expires_in_s));
    let req = ScheduleRequest {
        bulletin_id: body.bulletin_id.clone(),
        targets: body.targets.clone(),
        at: Some(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        daily: None,
        weekly: None,
        cron: None,
        tz: None,
        priority: Some(Tier::Emergency),
        repeat: Some(1),
        repeat_gap_s: Some(gap_s),
        valid_from: None,
        valid_until: Some(expires.to_rfc3339_opts(SecondsFormat::Millis, true)),
        volume: Some(body.volume.unwrap_or(1.0)),
        on_clash: Some(OnClash::Queue),
        play_times: Some(times),
    };
    let made = create_schedule(&state.store, &req, now, state.settings.tz)?;
    let receivers = schedule_receivers(state, made.id)?;
    tracing::warn!(schedule = made.id, bulletin = %body.bulletin_id, receivers = receivers.len(), times, "EMERGENCY sent");
    let view = json!({
        "id": made.id,
        "bulletin_id": body.bulletin_id,
        "plays": made.plays,
        "receivers": receivers.len(),
        "times": times,
        "gap_s": gap_s,
        "sent_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "expires_at": expires.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    Ok(Made { schedule_id: made.id, view, receivers })
}

fn schedule_receivers(state: &AppState, schedule_id: i64) -> Result<BTreeSet<String>, ApiError> {
    let filter = PlayFilter { schedule_id: Some(schedule_id), limit: Some(1_000_000), ..Default::default() };
    Ok(state.store.plays(&filter)?.into_iter().map(|p| p.receiver_id).collect())
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let now = state.now_ms();
    let scope = user.scope(&state.store)?;
    let mut out = Vec::new();
    for s in state.store.list_schedules()?.iter().filter(|s| s.spec.tier == "emergency") {
        if !scope.sees_schedule(&state.store, s)? {
            continue;
        }
        let mut view = super::schedules::view(&state, s)?;
        let active = s.cancelled_at.is_none() && s.spec.valid_until.is_none_or(|u| u > now);
        if let Some(obj) = view.as_object_mut() {
            obj.insert("active".into(), json!(active));
            obj.insert("times".into(), json!(s.spec.play_times));
        }
        out.push(view);
    }
    Ok(Json(Value::Array(out)))
}

async fn library(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let scope = user.scope(&state.store)?;
    let list = state.store.library()?;
    Ok(Json(Value::Array(list.iter().filter(|b| scope.sees_bulletin(b)).map(super::bulletins::view).collect())))
}

async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Emergency)?;
    let id = numeric_id("emergency", &id)?;
    let schedule = user.scope(&state.store)?.schedule(&state.store, id)?;
    if schedule.spec.tier != "emergency" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{id} is not an emergency; cancel schedules with DELETE /schedules/{id}"),
        ));
    }
    let n = state.store.cancel_schedule(id, state.now_ms())?;
    let receivers = schedule_receivers(&state, id)?;
    tracing::warn!(schedule = id, receivers = receivers.len(), "EMERGENCY cancelled");
    let detail = json!({"bulletin_id": schedule.spec.bulletin_id, "cancelled_plays": n, "receivers": receivers.len()});
    record(&state, &user, "emergency_cancel", Some(("schedule", id.to_string())), user.scope, detail);
    state.urgent.push(receivers);
    Ok(Json(json!({"id": id, "status": "cancelled", "cancelled_plays": n})))
}
