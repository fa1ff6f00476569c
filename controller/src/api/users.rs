//! People: `POST /login` (sets the session cookie, answers the user and the CSRF token; throttled per username
//! and per client address), `POST /logout`, `GET /me`, `POST /me/password`, and for admins `GET/POST /users`,
//! `PATCH /users/{id}` (role, scope, emergency right, disable, password) and the user's API tokens
//! (`POST/GET /users/{id}/tokens`, `DELETE /users/{id}/tokens/{token_id}`). An admin sees and manages only the
//! users scoped inside its own subtree, and can give only scopes inside it.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::audit::{record, write};
use super::auth::{client_ip, cookie, me_view, user_view, CurrentUser, Permission, Scope, SESSION_COOKIE};
use super::{numeric_id, rfc3339, rfc3339_opt, ApiError, AppState, Body};
use crate::store::audit::NewAudit;
use crate::store::users::{
    generate_password, hash_password, verify_password, NewUser, Role, User, UserPatch, SESSION_MS,
};
use crate::store::StoreError;

/// Routes open to anyone (login).
pub(super) fn public_routes() -> Router<AppState> {
    Router::new().route("/login", post(login))
}

/// Routes behind authentication.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/me/password", post(my_password))
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(one).patch(update))
        .route("/users/{id}/tokens", get(tokens).post(new_token))
        .route("/users/{id}/tokens/{token}", delete(revoke_token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

/// Hashes a password off the async runtime (argon2 is slow on purpose).
async fn hash_blocking(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(ApiError::internal)?.map_err(Into::into)
}

/// A hash to verify against when the username is unknown, so that a miss takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password-0000").unwrap_or_default())
}

async fn login(State(state): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    let ip = client_ip(req.extensions());
    let Body(body) = <Body<Login> as axum::extract::FromRequest<AppState>>::from_request(req, &state).await?;
    let username = body.username.trim().to_ascii_lowercase();
    let mut keys = vec![format!("user:{username}")];
    if ip != "unknown" {
        keys.push(format!("ip:{ip}"));
    }
    let throttle = state.store.login_throttle();
    let wait_ms = throttle.wait_ms(&keys, state.now_ms());
    if wait_ms > 0 {
        let secs = (wait_ms + 999) / 1000;
        let mut resp =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("too many failed logins; try again in {secs} s"))
                .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let found = state.store.user_by_name(&username)?;
    let phc = found.as_ref().map(|(_, h)| h.clone());
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || match &phc {
        Some(h) => verify_password(h, &password),
        None => verify_password(dummy_hash(), &password),
    })
    .await
    .map_err(ApiError::internal)?;
    let user = match found {
        Some((u, _)) if ok => u,
        other => {
            throttle.failed(&keys, state.now_ms());
            let typed: String = username.chars().take(64).collect();
            let entry = NewAudit {
                user_id: other.as_ref().map(|(u, _)| u.id),
                username: &typed,
                action: "login_failed",
                area_id: other.as_ref().and_then(|(u, _)| u.area_id),
                detail: json!({"reason": if other.is_some() { "wrong password" } else { "unknown user" }}),
                ip: &ip,
                ..NewAudit::default()
            };
            write(&state, &entry);
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong username or password"));
        }
    };
    if user.disabled_at.is_some() {
        let entry = NewAudit {
            user_id: Some(user.id),
            username: &user.username,
            action: "login_failed",
            area_id: user.area_id,
            detail: json!({"reason": "account disabled"}),
            ip: &ip,
            ..NewAudit::default()
        };
        write(&state, &entry);
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this account is disabled; ask an admin"));
    }
    throttle.succeeded(&keys[..1]);
    let (token, csrf) = state.store.create_session(user.id, &ip, state.now_ms())?;
    let me = CurrentUser::from_user(&user, super::auth::AuthVia::Session, ip);
    record(&state, &me, "login", Some(("user", user.id.to_string())), user.area_id, Value::Null);
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_MS / 1000);
    let mut resp = Json(json!({"user": me_view(&me), "csrf_token": csrf})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn logout(State(state): State<AppState>, user: CurrentUser, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&token)?;
        record(&state, &user, "logout", Some(("user", user.id.to_string())), user.scope, Value::Null);
    }
    let mut resp = Json(json!({"ok": true})).into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn me(user: CurrentUser) -> Json<Value> {
    Json(me_view(&user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn my_password(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<PasswordChange>,
) -> Result<Json<Value>, ApiError> {
    let Some(id) = user.user_id() else {
        return Err(ApiError::unprocessable("the admin token has no password; rotate it instead"));
    };
    let (_, phc) = state.store.user_by_name(&user.username)?.ok_or_else(|| StoreError::not_found("user", id))?;
    let old = body.old_password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &old)).await.map_err(ApiError::internal)?;
    if !ok {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "the old password is wrong"));
    }
    let hash = hash_blocking(body.new_password).await?;
    state.store.update_user(id, &UserPatch { password_hash: Some(hash), ..UserPatch::default() }, state.now_ms())?;
    record(&state, &user, "password_change", Some(("user", id.to_string())), user.scope, Value::Null);
    Ok(Json(json!({"ok": true, "note": "all your sessions have ended; log in again"})))
}

/// The user if the admin's scope holds it (users of the whole tree only for whole-tree admins), else 404.
fn visible_user(state: &AppState, scope: &Scope, id: i64) -> Result<User, ApiError> {
    let u = state.store.user(id)?;
    if scope.owns(u.area_id) {
        Ok(u)
    } else {
        Err(StoreError::not_found("user", id).into())
    }
}

/// 404 unless the scope `area` (`None` = the whole tree) lies inside the admin's scope.
fn check_grantable(scope: &Scope, area: Option<i64>) -> Result<(), ApiError> {
    match area {
        Some(a) => scope.check_area(a),
        None if scope.is_all() => Ok(()),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "you can only give users a scope inside your own area (say area_id)",
        )),
    }
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let list = state.store.users()?.iter().filter(|u| scope.owns(u.area_id)).map(user_view).collect();
    Ok(Json(Value::Array(list)))
}

async fn one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    Ok(Json(user_view(&visible_user(&state, &scope, numeric_id("user", &id)?)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    role: Role,
    #[serde(default)]
    area_id: Option<i64>,
    #[serde(default)]
    emergency: bool,
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    // A scoped admin's users land in its own area unless it names one inside.
    let area = body.area_id.or(user.scope);
    check_grantable(&scope, area)?;
    crate::store::users::check_username(&body.username)?;
    let (password, generated) = match body.password {
        Some(p) => (p, false),
        None => (generate_password(), true),
    };
    let new = NewUser {
        username: body.username,
        display_name: body.display_name,
        password_hash: hash_blocking(password.clone()).await?,
        role: body.role,
        area_id: area,
        emergency: body.emergency,
    };
    let id = state.store.create_user(&new, state.now_ms())?;
    let made = state.store.user(id)?;
    let detail =
        json!({"username": made.username, "role": made.role, "area_id": made.area_id, "emergency": made.emergency});
    record(&state, &user, "user_create", Some(("user", id.to_string())), made.area_id, detail);
    let mut out = json!({"user": user_view(&made)});
    if generated {
        out["password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    /// `null` = the whole tree.
    #[serde(default, deserialize_with = "double_option")]
    area_id: Option<Option<i64>>,
    #[serde(default)]
    emergency: Option<bool>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    reset_password: bool,
}

async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Body(body): Body<UpdateUser>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let target = visible_user(&state, &scope, numeric_id("user", &id)?)?;
    if let Some(area) = body.area_id {
        check_grantable(&scope, area)?;
    }
    let myself = user.user_id() == Some(target.id);
    if myself && (body.disabled == Some(true) || body.role.is_some_and(|r| r != Role::Admin) || body.area_id.is_some())
    {
        return Err(ApiError::unprocessable(
            "you cannot disable yourself or change your own role or scope; ask another admin",
        ));
    }
    if body.password.is_some() && body.reset_password {
        return Err(ApiError::unprocessable("give either password or reset_password, not both"));
    }
    let new_password = match (&body.password, body.reset_password) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(generate_password()),
        (None, false) => None,
    };
    let password_hash = match &new_password {
        Some(p) => Some(hash_blocking(p.clone()).await?),
        None => None,
    };
    let patch = UserPatch {
        display_name: body.display_name.clone(),
        role: body.role,
        area_id: body.area_id,
        emergency: body.emergency,
        disabled: body.disabled,
        password_hash,
    };
    let updated = state.store.update_user(target.id, &patch, state.now_ms())?;
    let detail = json!({
        "role": body.role,
        "area_id": body.area_id,
        "emergency": body.emergency,
        "disabled": body.disabled,
        "display_name": body.display_name,
        "password_changed": new_password.is_some(),
    });
    record(&state, &user, "user_update", Some(("user", target.id.to_string())), updated.area_id, detail);
    let mut out = json!({"user": user_view(&updated)});
    if body.reset_password {
        out["password"] = json!(new_password);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

async fn new_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Body(body): Body<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let target = visible_user(&state, &scope, numeric_id("user", &id)?)?;
    let token = state.store.create_api_token(target.id, &body.name, state.now_ms())?;
    let listed = state.store.api_tokens(target.id)?;
    let token_id = crate::store::sha256_hex(token.as_bytes())[..12].to_string();
    let info = listed.iter().find(|t| t.id == token_id);
    record(
        &state,
        &user,
        "token_create",
        Some(("user", target.id.to_string())),
        target.area_id,
        json!({"token_id": token_id, "name": body.name}),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": token_id,
            "name": info.map(|t| t.name.clone()),
            "token": token,
            "note": "shown once; send it as Authorization: Bearer <token>",
        })),
    ))
}

async fn tokens(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let target = visible_user(&state, &scope, numeric_id("user", &id)?)?;
    let list = state
        .store
        .api_tokens(target.id)?
        .iter()
        .map(|t| {
            json!({"id": t.id, "name": t.name, "created_at": rfc3339(t.created_at), "revoked_at": rfc3339_opt(t.revoked_at)})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, token)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let target = visible_user(&state, &scope, numeric_id("user", &id)?)?;
    state.store.revoke_api_token(target.id, &token, state.now_ms())?;
    record(
        &state,
        &user,
        "token_revoke",
        Some(("user", target.id.to_string())),
        target.area_id,
        json!({"token_id": token}),
    );
    Ok(Json(json!({"id": token, "status": "revoked"})))
}
