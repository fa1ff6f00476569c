//! The HTTP API (axum), everything under `/api/v1`, JSON in and out, documented with curl in `docs/api.md`.
//!
//! [`app`] builds the router from an [`AppState`]. Every route but `GET /api/v1/health` and `POST /api/v1/login`
//! wants a [`auth::CurrentUser`]: the admin token (made by [`ensure_admin_token`] on first start, stored
//! hashed; a built-in admin over the whole tree), a user's API token, or the console's session cookie (see
//! [`auth`]). Each user sees and targets only their subtree of the admin tree (404 outside it) and does only
//! what their role allows (403). Errors are `{"error": "<message an official can read>"}` with a 4xx status:
//! 400 malformed request, 401 not logged in, 403 not allowed, 404 unknown id (or outside the user's subtree),
//! 409 clash with what is stored, 413 upload too big, 422 request breaks a rule, 429 too many failed logins;
//! 500 only for server faults (logged, with a generic message). Route handlers live in [`areas`],
//! [`receivers`], [`bulletins`], [`schedules`], [`emergencies`], [`commands`], [`users`] and [`audit`].

pub mod alerts;
pub mod areas;
pub mod audit;
pub mod auth;
pub mod bulletins;
pub mod commands;
pub mod emergencies;
pub mod headers;
pub mod metrics;
pub mod receivers;
pub mod reports;
pub mod schedules;
pub mod users;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::store::{sha256_hex, Store, StoreError};

/// Settings key of the admin token's hash.
pub const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

/// Settings of the API that come from the controller's config.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// The broker URL written into receiver config files.
    pub broker_url_for_receivers: String,
    /// MQTT topic root written into receiver config files.
    pub topic_root: String,
    /// (key id, public key hex) written into receiver config files.
    pub trusted_keys: Vec<(String, String)>,
    /// Time zone of wall times in requests.
    pub tz: chrono_tz::Tz,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_upload_bytes: 100 * 1024 * 1024,
            broker_url_for_receivers: "mqtt://127.0.0.1:1883".into(),
            topic_root: "loa".into(),
            trusted_keys: Vec::new(),
            tz: crate::schedule::DEFAULT_TZ,
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Woken (`notify_one`) whenever plays may have changed, so dispatch recomposes plans.
    pub replan: Arc<Notify>,
    /// Receivers whose plans dispatch must publish before anything else (emergencies).
    pub urgent: Arc<crate::dispatch::Urgent>,
    /// Settings.
    pub settings: ApiSettings,
    /// Remote commands for dispatch to sign and publish; `None` when no MQTT link runs (tests of the API alone).
    pub commands: Option<CommandSender>,
    /// Uploads checked at once ([`audio_checks`]): each decodes a whole recording, and the machine is small.
    pub audio_checks: Arc<tokio::sync::Semaphore>,
}

/// The limit of [`AppState::audio_checks`]: two uploads decoded at once.
pub fn audio_checks() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(2))
}

/// Where the API hands remote commands to dispatch.
pub type CommandSender = tokio::sync::mpsc::UnboundedSender<(loa_protocol::ReceiverId, loa_protocol::Action)>;

impl AppState {
    /// Now, UTC.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Now, UTC ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
}

/// Creates the admin token on first run: returns it (to print once) or `None` if one exists.
pub fn ensure_admin_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.setting(ADMIN_TOKEN_KEY)?.is_some() {
        return Ok(None);
    }
    let token = format!("loa-{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    store.set_setting(ADMIN_TOKEN_KEY, &sha256_hex(token.as_bytes()))?;
    Ok(Some(token))
}

/// Replaces the admin token (e.g. after it leaked); returns the new one.
pub fn rotate_admin_token(store: &Store) -> Result<String, StoreError> {
    let token = format!("loa-{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    store.set_setting(ADMIN_TOKEN_KEY, &sha256_hex(token.as_bytes()))?;
    Ok(token)
}

/// The router.
pub fn app(state: AppState) -> Router {
    // Every route merged here sits behind authentication; handlers take an `auth::CurrentUser` and filter by
    // its scope.
    let protected = Router::new()
        .merge(areas::routes())
        .merge(receivers::routes())
        .merge(commands::routes())
        .merge(bulletins::routes(&state.settings))
        .merge(schedules::routes())
        .merge(emergencies::routes(&state.settings))
        .merge(users::routes())
        .merge(audit::routes())
        .merge(alerts::routes())
        .merge(reports::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let api = Router::new().route("/health", get(health)).merge(users::public_routes()).merge(protected);
    let scraped =
        metrics::routes().route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new().nest("/api/v1", api).merge(scraped).fallback(not_found).with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    axum::Json(json!({"ok": true, "time": rfc3339(state.now_ms())})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API route; see docs/api.md")
}

/// An API error: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 500 with a generic message; the detail goes to the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "the controller hit an internal error; see its log")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Invalid(m) => ApiError::unprocessable(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

/// A JSON body whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let text = r.body_text();
    let message = match r {
        JsonRejection::MissingJsonContentType(_) => "send JSON with Content-Type: application/json".to_string(),
        JsonRejection::JsonSyntaxError(_) => format!("the body is not valid JSON ({text})"),
        JsonRejection::JsonDataError(_) => format!("the JSON does not fit this request ({text})"),
        _ => text,
    };
    ApiError::new(status, message)
}

/// An optional JSON body: an empty body is `None`; anything else must be JSON of `T`.
#[derive(Debug, Clone)]
pub struct OptionalBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("could not read the body ({})", e.body_text())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalBody(Some(v)))
            .map_err(|e| ApiError::unprocessable(format!("the JSON does not fit this request ({e})")))
    }
}

/// Query parameters whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::bad_request(format!("bad query parameters ({})", r.body_text())))
            }
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// Parses a numeric id from a path; anything else is "not found".
pub fn numeric_id(what: &'static str, s: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| StoreError::not_found(what, s).into())
}

/// UTC ms as RFC 3339 (`2026-11-23T23:00:00Z`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Optional UTC ms as RFC 3339.
pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_bad_input;
#[cfg(test)]
mod tests_bulletins;
#[cfg(test)]
mod tests_emergencies;
#[cfg(test)]
mod tests_health;
#[cfg(test)]
mod tests_people;
