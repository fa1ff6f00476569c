//! `/schedules` (create, list, look at, cancel) and `/plays` (what was planned and what became of it).
//!
//! Editors and admins schedule approved bulletins ("this bulletin has not been approved yet" otherwise) to
//! targets inside their subtree; a schedule of tier `emergency` needs the emergency right instead and skips
//! approval. A schedule is visible when all its targets are inside the user's subtree; plays when their
//! receiver is.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::record;
use super::auth::{CurrentUser, Permission};
use super::{numeric_id, rfc3339, rfc3339_opt, ApiError, AppState, Body, Params};
use crate::schedule::{create_schedule, ScheduleRequest};
use crate::store::bulletins::Approval;
use crate::store::plays::{Play, PlayFilter, PlaySlot};
use crate::store::schedules::{ScheduleRow, TargetKind};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list).post(create))
        .route("/schedules/{id}", get(one).delete(cancel))
        .route("/plays", get(plays))
        .route("/plays/slots", get(slots))
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(req): Body<ScheduleRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let emergency = req.priority == Some(loa_protocol::Tier::Emergency);
    user.require(if emergency { Permission::Emergency } else { Permission::Schedule })?;
    let scope = user.scope(&state.store)?;
    let bulletin = scope.bulletin(&state.store, &req.bulletin_id)?;
    scope.check_targets(&state.store, &req.targets)?;
    if !emergency && bulletin.approval != Approval::Approved {
        return Err(ApiError::unprocessable(format!(
            "this bulletin has not been approved yet (it is {}); submit it and ask an approver",
            bulletin.approval.as_str()
        )));
    }
    let made = create_schedule(&state.store, &req, state.now(), state.settings.tz)?;
    state.replan.notify_one();
    let detail = json!({
        "bulletin_id": req.bulletin_id,
        "title": bulletin.title,
        "priority": req.priority,
        "plays": made.plays,
        "targets": {"areas": req.targets.areas, "groups": req.targets.groups, "receivers": req.targets.receivers},
    });
    record(&state, &user, "schedule_create", Some(("schedule", made.id.to_string())), scope.root, detail);
    Ok((StatusCode::CREATED, Json(json!({"id": made.id, "plays": made.plays}))))
}

pub(super) fn view(state: &AppState, s: &ScheduleRow) -> Result<Value, ApiError> {
    let rule: Value = serde_json::from_str(&s.spec.rule).unwrap_or(Value::Null);
    let (mut areas, mut groups, mut receivers) = (Vec::new(), Vec::new(), Vec::new());
    for (kind, target) in &s.spec.targets {
        match kind {
            TargetKind::Area => areas.push(json!(target.parse::<i64>().ok())),
            TargetKind::Group => groups.push(json!(target.parse::<i64>().ok())),
            TargetKind::Receiver => receivers.push(json!(target)),
        }
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in state.store.plays(&PlayFilter { schedule_id: Some(s.id), limit: Some(100_000), ..Default::default() })? {
        *counts.entry(p.status).or_default() += 1;
    }
    Ok(json!({
        "id": s.id,
        "bulletin_id": s.spec.bulletin_id,
        "rule": rule,
        "tz": s.spec.tz,
        "priority": s.spec.tier,
        "repeat": s.spec.repeat_count,
        "repeat_gap_s": s.spec.repeat_gap_s,
        "valid_from": rfc3339_opt(s.spec.valid_from),
        "valid_until": rfc3339_opt(s.spec.valid_until),
        "volume": s.spec.volume,
        "on_clash": s.spec.on_clash,
        "targets": {"areas": areas, "groups": groups, "receivers": receivers},
        "created_at": rfc3339(s.created_at),
        "cancelled_at": rfc3339_opt(s.cancelled_at),
        "planned_until": rfc3339_opt(s.expanded_until),
        "plays": counts,
    }))
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let scope = user.scope(&state.store)?;
    let mut out = Vec::new();
    for s in state.store.list_schedules()? {
        if scope.sees_schedule(&state.store, &s)? {
            out.push(view(&state, &s)?);
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("schedule", &id)?;
    let scope = user.scope(&state.store)?;
    Ok(Json(view(&state, &scope.schedule(&state.store, id)?)?))
}

async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("schedule", &id)?;
    let scope = user.scope(&state.store)?;
    let s = scope.schedule(&state.store, id)?;
    user.require(if s.spec.tier == "emergency" { Permission::Emergency } else { Permission::Schedule })?;
    let n = state.store.cancel_schedule(id, state.now_ms())?;
    state.replan.notify_one();
    let detail = json!({"bulletin_id": s.spec.bulletin_id, "cancelled_plays": n});
    record(&state, &user, "schedule_cancel", Some(("schedule", id.to_string())), scope.root, detail);
    Ok(Json(json!({"id": id, "status": "cancelled", "cancelled_plays": n})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaysQuery {
    schedule_id: Option<i64>,
    receiver_id: Option<String>,
    bulletin_id: Option<String>,
    /// Planned at or after this instant (RFC 3339).
    from: Option<String>,
    /// Planned before this instant (RFC 3339).
    until: Option<String>,
    /// `oldest` (default) or `newest` first.
    order: Option<String>,
    limit: Option<u32>,
}

/// An RFC 3339 instant from a query parameter, as UTC ms; a readable 400 otherwise.
fn instant(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v).map(|t| t.timestamp_millis()).map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be a date and time with its zone, like 2026-12-06T06:00:00+07:00 (got {v:?})"
                ))
            })
        })
        .transpose()
}

fn play_view(p: &Play) -> Value {
    json!({
        "id": p.id,
        "receiver_id": p.receiver_id,
        "bulletin_id": p.bulletin_id,
        "schedule_id": p.schedule_id,
        "planned_at": rfc3339(p.planned_at),
        "tier": p.tier,
        "status": p.status,
        "progress": p.progress,
        "started_at": rfc3339_opt(p.started_at),
        "finished_at": rfc3339_opt(p.finished_at),
        "reason": p.reason,
    })
}

async fn plays(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(q): Params<PlaysQuery>,
) -> Result<Json<Value>, ApiError> {
    let newest_first = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => return Err(ApiError::bad_request(format!("order must be oldest or newest (got {other:?})"))),
    };
    let filter = PlayFilter {
        schedule_id: q.schedule_id,
        receiver_id: q.receiver_id,
        bulletin_id: q.bulletin_id,
        from: instant("from", q.from.as_deref())?,
        until: instant("until", q.until.as_deref())?,
        newest_first,
        limit: Some(q.limit.unwrap_or(1000).min(10_000)),
    };
    let list = match user.scope(&state.store)?.areas() {
        None => state.store.plays(&filter)?,
        Some(areas) => state.store.plays_in_areas(&filter, &areas)?,
    };
    Ok(Json(Value::Array(list.iter().map(play_view).collect())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsQuery {
    /// Planned at or after this instant (RFC 3339).
    from: Option<String>,
    /// Planned before this instant (RFC 3339).
    until: Option<String>,
}

/// The longest window `GET /plays/slots` counts over.
const MAX_SLOT_WINDOW_DAYS: i64 = 62;

/// `GET /plays/slots?from=&until=`: the plays in a window, not cancelled, counted per schedule and planned time.
async fn slots(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(q): Params<SlotsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (Some(from), Some(until)) = (instant("from", q.from.as_deref())?, instant("until", q.until.as_deref())?) else {
        return Err(ApiError::bad_request("from and until are both needed, like from=2026-12-07T00:00:00+07:00"));
    };
    if until <= from || until - from > MAX_SLOT_WINDOW_DAYS * 86_400_000 {
        return Err(ApiError::bad_request(format!(
            "until must come after from, at most {MAX_SLOT_WINDOW_DAYS} days later"
        )));
    }
    let areas = user.scope(&state.store)?.areas();
    let list = state.store.play_slots(from, until, areas.as_deref())?;
    let view = |p: &PlaySlot| {
        json!({
            "schedule_id": p.schedule_id,
            "bulletin_id": p.bulletin_id,
            "planned_at": rfc3339(p.planned_at),
            "tier": p.tier,
            "receivers": p.receivers,
        })
    };
    Ok(Json(Value::Array(list.iter().map(view).collect())))
}
