//! `POST /receivers/{id}/commands`: a remote action on one receiver — `set_volume`, `stop_now`, `test_tone`,
//! `resync`, `restart` — handed to dispatch, which signs it (with a rising sequence number, so a captured command
//! cannot be replayed) and publishes it on that receiver's command topic. Delivered while the receiver is
//! online (or its broker session keeps it); not stored across a controller restart. Operators and admins
//! only, on receivers inside their subtree.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use loa_protocol::{Action, ReceiverId};
use serde_json::{json, Value};

use super::audit::record;
use super::auth::{CurrentUser, Permission};
use super::{ApiError, AppState, Body};
use crate::store::StoreError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/receivers/{id}/commands", post(send))
}

async fn send(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Body(action): Body<Action>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Operate)?;
    let rx = state.store.receiver(&id)?;
    if !user.scope(&state.store)?.contains(rx.area_id) {
        return Err(StoreError::not_found("receiver", id).into());
    }
    let receiver = ReceiverId::new(id.clone()).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if let Action::SetVolume { volume } = action {
        if volume > 100 {
            return Err(ApiError::unprocessable("volume is a percentage: 0 to 100"));
        }
    }
    if let Action::TestTone { seconds } = action {
        if seconds == 0 || seconds > loa_protocol::command::MAX_TONE_S {
            return Err(ApiError::unprocessable(format!(
                "a test tone lasts 1 to {} seconds",
                loa_protocol::command::MAX_TONE_S
            )));
        }
    }
    let Some(commands) = &state.commands else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "commands need the MQTT link, which is not running",
        ));
    };
    commands
        .send((receiver, action))
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the MQTT link is shutting down; try again"))?;
    record(&state, &user, "command", Some(("receiver", id.clone())), Some(rx.area_id), json!(action));
    Ok((StatusCode::ACCEPTED, Json(json!({"receiver": id, "command": action, "status": "sent"}))))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::api::tests::harness;

    #[tokio::test]
    async fn commands_are_checked_before_they_are_sent() {
        let h = harness();
        let (_, _, rx) = h.small_tree().await;
        let path = format!("/api/v1/receivers/{rx}/commands");
        let (s, v) = h.post("/api/v1/receivers/rx-000000000000/commands", json!({"do": "stop_now"})).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = h.post(&path, json!({"do": "set_volume", "volume": 140})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (s, v) = h.post(&path, json!({"do": "launch_rockets"})).await;
        assert!(s.is_client_error(), "{s} {v}");
        // The API harness runs without an MQTT link: a valid command is refused with a clear message.
        let (s, v) = h.post(&path, json!({"do": "test_tone", "seconds": 3})).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(v["error"].as_str().unwrap().contains("MQTT"));
    }
}
