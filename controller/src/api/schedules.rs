//! `/schedules` (create, list, look at, cancel) and `/plays` (what was planned and what became of it).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{numeric_id, rfc3339, rfc3339_opt, ApiError, AppState, Body, Params};
use crate::schedule::{create_schedule, ScheduleRequest};
use crate::store::plays::{Play, PlayFilter};
use crate::store::schedules::{ScheduleRow, TargetKind};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list).post(create))
        .route("/schedules/{id}", get(one).delete(cancel))
        .route("/plays", get(plays))
}

async fn create(
    State(state): State<AppState>,
    Body(req): Body<ScheduleRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let made = create_schedule(&state.store, &req, state.now(), state.settings.tz)?;
    state.replan.notify_one();
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

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.store.list_schedules()?;
    Ok(Json(Value::Array(rows.iter().map(|s| view(&state, s)).collect::<Result<Vec<_>, _>>()?)))
}

async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("schedule", &id)?;
    Ok(Json(view(&state, &state.store.schedule(id)?)?))
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("schedule", &id)?;
    let n = state.store.cancel_schedule(id, state.now_ms())?;
    state.replan.notify_one();
    Ok(Json(json!({"id": id, "status": "cancelled", "cancelled_plays": n})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaysQuery {
    schedule_id: Option<i64>,
    receiver_id: Option<String>,
    bulletin_id: Option<String>,
    limit: Option<u32>,
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

async fn plays(State(state): State<AppState>, Params(q): Params<PlaysQuery>) -> Result<Json<Value>, ApiError> {
    let filter = PlayFilter {
        schedule_id: q.schedule_id,
        receiver_id: q.receiver_id,
        bulletin_id: q.bulletin_id,
        limit: Some(q.limit.unwrap_or(1000).min(10_000)),
    };
    Ok(Json(Value::Array(state.store.plays(&filter)?.iter().map(play_view).collect())))
}
