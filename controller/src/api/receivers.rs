//! `/receivers`: registration (returns the secret once, inside a ready-to-copy receiver config file), listing,
//! and one receiver's state with its last health report. Operators (and admins) register receivers inside
//! their subtree; everyone sees the receivers inside theirs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::record;
use super::auth::{CurrentUser, Permission};
use super::{rfc3339, rfc3339_opt, ApiError, ApiSettings, AppState, Body};
use crate::store::receivers::Receiver;
use crate::store::StoreError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/receivers", get(list).post(register)).route("/receivers/{id}", get(one))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReceiver {
    name: String,
    area_id: i64,
}

/// The receiver's config file, as `loa-receiver` reads it.
#[derive(Debug, Serialize)]
struct ReceiverConfig<'a> {
    id: &'a str,
    password: &'a str,
    broker_url: &'a str,
    topic_root: &'a str,
    trusted_keys: Vec<TrustedKey<'a>>,
}

#[derive(Debug, Serialize)]
struct TrustedKey<'a> {
    kid: &'a str,
    public_key: &'a str,
}

/// The TOML config file for a receiver.
pub fn receiver_config(settings: &ApiSettings, id: &str, password: &str) -> Result<String, ApiError> {
    let config = ReceiverConfig {
        id,
        password,
        broker_url: &settings.broker_url_for_receivers,
        topic_root: &settings.topic_root,
        trusted_keys: settings.trusted_keys.iter().map(|(kid, public_key)| TrustedKey { kid, public_key }).collect(),
    };
    toml::to_string(&config).map_err(ApiError::internal)
}

async fn register(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(new): Body<NewReceiver>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Operate)?;
    user.scope(&state.store)?.check_area(new.area_id)?;
    let reg = state.store.register_receiver(&new.name, new.area_id, state.now_ms())?;
    let config = receiver_config(&state.settings, &reg.id, &reg.secret)?;
    let now = loa_protocol::Timestamp::from_unix_ms(state.now_ms()).unwrap_or(loa_protocol::Timestamp::EPOCH);
    match crate::schedule::expand_for_receiver(&state.store, &reg.id, now) {
        Ok(n) => tracing::info!(receiver = %reg.id, plays = n, "new receiver joined the schedules of its area"),
        Err(e) => {
            tracing::warn!(receiver = %reg.id, error = %e, "new receiver not yet planned; the next extension will")
        }
    }
    state.replan.notify_one();
    let detail = json!({"name": new.name, "area_id": new.area_id});
    record(&state, &user, "receiver_register", Some(("receiver", reg.id.clone())), Some(new.area_id), detail);
    Ok((StatusCode::CREATED, Json(json!({"id": reg.id, "secret": reg.secret, "config": config}))))
}

fn view(r: &Receiver) -> Value {
    let health = r.health.as_deref().map(|h| serde_json::from_str::<Value>(h).unwrap_or(Value::String(h.into())));
    json!({
        "id": r.id,
        "name": r.name,
        "area_id": r.area_id,
        "online": r.online,
        "last_seen": rfc3339_opt(r.last_seen),
        "health": health,
        "health_at": rfc3339_opt(r.health_at),
        "created_at": rfc3339(r.created_at),
    })
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let scope = user.scope(&state.store)?;
    let list = state.store.list_receivers()?;
    Ok(Json(Value::Array(list.iter().filter(|r| scope.contains(r.area_id)).map(view).collect())))
}

async fn one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = state.store.receiver(&id)?;
    if !user.scope(&state.store)?.contains(r.area_id) {
        return Err(StoreError::not_found("receiver", id).into());
    }
    Ok(Json(view(&r)))
}
