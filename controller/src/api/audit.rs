//! The audit log: [`record`] writes who did what (called by every handler that changes state, after the change
//! succeeded; a failure to write it is logged, never turned into a failed request, since the change is
//! already made), and `GET /audit` (admins) reads it, newest first, filtered to the admin's subtree.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CurrentUser, Permission};
use super::{rfc3339, ApiError, AppState, Params};
use crate::store::audit::NewAudit;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

/// Records an action by `user` on `object` (kind, id), which belongs to `area` (`None` = the whole tree).
pub fn record(
    state: &AppState,
    user: &CurrentUser,
    action: &str,
    object: Option<(&str, String)>,
    area: Option<i64>,
    detail: Value,
) {
    let (kind, id) = object.map_or((None, None), |(k, i)| (Some(k), Some(i)));
    let entry = NewAudit {
        user_id: user.user_id(),
        username: &user.username,
        action,
        object_kind: kind,
        object_id: id,
        area_id: area,
        detail,
        ip: &user.ip,
    };
    write(state, &entry);
}

/// Writes an entry (for events without a logged-in user, such as a failed login).
pub fn write(state: &AppState, entry: &NewAudit<'_>) {
    if let Err(e) = state.store.audit(entry, state.now_ms()) {
        tracing::error!(error = %e, action = entry.action, user = entry.username, "audit entry not written");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(q): Params<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let areas = scope.areas();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state.store.audit_entries(areas.as_deref(), q.before, limit)?;
    let next = (entries.len() == limit as usize).then(|| entries.last().map(|e| e.id)).flatten();
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": rfc3339(e.at),
                "user_id": e.user_id,
                "username": e.username,
                "action": e.action,
                "object": e.object_kind.as_ref().map(|k| json!({"kind": k, "id": e.object_id})),
                "area_id": e.area_id,
                "detail": e.detail,
                "ip": e.ip,
            })
        })
        .collect();
    Ok(Json(json!({"entries": list, "next_before": next})))
}
