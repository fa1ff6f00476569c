//! Fleet health for people: `/alerts` (list, acknowledge), `/dashboard` (receivers online / offline / last seen by
//! commune, what plays now, today's plays by status) and `/receivers/{id}/history` (heartbeats over the last
//! days, for the receiver page's chart, with that receiver's plays).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, NaiveTime};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CurrentUser, Permission};
use super::{numeric_id, rfc3339, rfc3339_opt, ApiError, AppState, Params};
use crate::store::alerts::Alert;

/// Most alerts one listing returns.
pub const MAX_ALERTS: u32 = 1000;
/// Longest health history asked for, days (samples are kept 14 days).
pub const MAX_HISTORY_DAYS: i64 = 14;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}/ack", post(ack))
        .route("/dashboard", get(dashboard))
        .route("/receivers/{id}/history", get(history))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// An alert as JSON (times RFC 3339).
pub fn alert_view(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "receiver_id": a.receiver_id,
        "receiver_name": a.receiver_name,
        "area_id": a.area_id,
        "area_name": a.area_name,
        "play_id": a.play_id,
        "detail": a.detail,
        "opened_at": rfc3339(a.opened_at),
        "acknowledged_at": rfc3339_opt(a.acknowledged_at),
        "acknowledged_by": a.acknowledged_by,
        "resolved_at": rfc3339_opt(a.resolved_at),
        "open": a.resolved_at.is_none(),
    })
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let open_only = match q.state.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => return Err(ApiError::bad_request(format!("state must be open or all, not \"{other}\""))),
    };
    let limit = q.limit.unwrap_or(500).clamp(1, MAX_ALERTS);
    let alerts = state.store.alerts(open_only, limit, user.scope)?;
    Ok(Json(Value::Array(alerts.iter().map(alert_view).collect())))
}

async fn ack(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Operate)?;
    let id = numeric_id("alert", &id)?;
    let alert = state.store.ack_alert(id, &user.username, state.now_ms(), user.scope)?;
    Ok(Json(alert_view(&alert)))
}

async fn dashboard(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let now = state.now();
    let tz = state.settings.tz;
    let day = now.with_timezone(&tz).date_naive();
    let start = |d: chrono::NaiveDate| {
        crate::schedule::rule::local_to_utc(d.and_time(NaiveTime::MIN), tz).map_or(0, |t| t.timestamp_millis())
    };
    let (from, until) = (start(day), start(day + Duration::days(1)));
    let d = state.store.dashboard(now.timestamp_millis(), from, until, user.scope)?;
    let communes: Vec<Value> = d
        .communes
        .iter()
        .map(|c| {
            json!({
                "area_id": c.area_id,
                "name": c.name,
                "online": c.online,
                "offline": c.offline,
                "last_seen": rfc3339_opt(c.receivers.iter().filter_map(|r| r.last_seen).max()),
                "receivers": c.receivers.iter().map(|r| json!({
                    "id": r.id,
                    "name": r.name,
                    "area_id": r.area_id,
                    "area_name": r.area_name,
                    "online": r.online,
                    "last_seen": rfc3339_opt(r.last_seen),
                    "open_alerts": r.open_alerts,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let playing: Vec<Value> = d
        .playing
        .iter()
        .map(|p| {
            json!({
                "play_id": p.play_id,
                "receiver_id": p.receiver_id,
                "receiver_name": p.receiver_name,
                "bulletin_id": p.bulletin_id,
                "title": p.title,
                "tier": p.tier,
                "planned_at": rfc3339(p.planned_at),
                "started_at": rfc3339_opt(p.started_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "time": rfc3339(now.timestamp_millis()),
        "date": day.to_string(),
        "receivers": {"online": d.online, "offline": d.offline},
        "open_alerts": d.open_alerts,
        "communes": communes,
        "playing": playing,
        "today": d.today,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    days: Option<i64>,
}

async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = q.days.unwrap_or(3);
    if !(1..=MAX_HISTORY_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!("days must be 1 to {MAX_HISTORY_DAYS}")));
    }
    let now = state.now_ms();
    let since = now - days * 24 * 3600 * 1000;
    let samples = state.store.health_history(&id, since, user.scope)?;
    let samples: Vec<Value> = samples
        .iter()
        .map(|s| {
            let health = serde_json::from_str::<Value>(&s.health).unwrap_or(Value::String(s.health.clone()));
            json!({"at": rfc3339(s.at), "health": health})
        })
        .collect();
    let plays = state.store.receiver_plays(&id, since, now, user.scope)?;
    let plays: Vec<Value> = plays
        .iter()
        .map(|p| {
            json!({
                "id": p.play_id,
                "bulletin_id": p.bulletin_id,
                "title": p.title,
                "planned_at": rfc3339(p.planned_at),
                "status": p.status,
                "started_at": rfc3339_opt(p.started_at),
                "finished_at": rfc3339_opt(p.finished_at),
                "reason": p.reason,
            })
        })
        .collect();
    Ok(Json(json!({
        "receiver_id": id,
        "since": rfc3339(since),
        "samples": samples,
        "plays": plays,
    })))
}
