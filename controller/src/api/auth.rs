//! Who is asking, and what they may see and do.
//!
//! [`authenticate`] (a route layer over every route but `/health` and `/login`) resolves a [`CurrentUser`]
//! from `Authorization: Bearer <token>` — the admin token (a built-in admin over the whole tree, with the
//! emergency right) or a user's API token — or from the console's session cookie `loa_session`; cookie requests
//! that change state must carry `X-CSRF-Token` equal to the session's CSRF token. Handlers take the
//! [`CurrentUser`] as an extractor, check the role with [`CurrentUser::require`] (403 with a readable message)
//! and the scope with [`Scope`] (from [`CurrentUser::scope`]): anything outside the user's subtree of the admin
//! tree is answered 404, as if it did not exist. [`subtree`] is the same rule for other modules.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{rfc3339, rfc3339_opt, ApiError, AppState, ADMIN_TOKEN_KEY};
use crate::schedule::Targets;
use crate::store::bulletins::Bulletin;
use crate::store::schedules::{ScheduleRow, TargetKind};
use crate::store::users::{Role, User};
use crate::store::{sha256_hex, Store, StoreError};

/// Name of the console's session cookie.
pub const SESSION_COOKIE: &str = "loa_session";
/// Header carrying the CSRF token on cookie-authenticated requests that change state.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// [`CurrentUser::id`] of the built-in admin behind the admin token.
pub const ADMIN_TOKEN_USER_ID: i64 = 0;

/// How the request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// The admin token (`Authorization: Bearer`).
    AdminToken,
    /// A user's API token (`Authorization: Bearer`).
    ApiToken,
    /// The console's session cookie.
    Session,
}

/// The person (or script) making the request: resolved once per request by [`authenticate`] and taken by
/// handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// User id; [`ADMIN_TOKEN_USER_ID`] (0) for the admin token.
    pub id: i64,
    /// Login name (`admin-token` for the admin token).
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Root of the subtree this user sees and targets; `None` = the whole tree.
    pub scope: Option<i64>,
    /// May send and cancel emergencies (always true for admins).
    pub emergency: bool,
    /// How they proved it.
    pub via: AuthVia,
    /// Client address (from the connection; never from X-Forwarded-For), or "unknown".
    pub ip: String,
    /// The session's CSRF token (console sessions only): forms send it back as `X-CSRF-Token`.
    pub csrf: Option<String>,
}

/// Something a role may or may not do (always within the user's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Look at anything in scope (every role).
    Read,
    /// Upload bulletins, add languages, submit, cancel (editor, admin).
    EditBulletins,
    /// Approve or reject submitted bulletins (approver, admin).
    Approve,
    /// Create and cancel schedules of approved bulletins (editor, admin).
    Schedule,
    /// Register receivers, send them commands (operator, admin).
    Operate,
    /// Users, areas, groups, the audit log (admin).
    Administer,
    /// Send and cancel emergencies (the emergency right; admins have it).
    Emergency,
}

impl CurrentUser {
    /// The built-in admin of the admin token.
    pub fn admin_token(ip: String) -> Self {
        CurrentUser {
            id: ADMIN_TOKEN_USER_ID,
            username: "admin-token".into(),
            display_name: "Admin token".into(),
            role: Role::Admin,
            scope: None,
            emergency: true,
            via: AuthVia::AdminToken,
            ip,
            csrf: None,
        }
    }

    /// A stored user.
    pub fn from_user(u: &User, via: AuthVia, ip: String) -> Self {
        CurrentUser {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            scope: u.area_id,
            emergency: u.emergency || u.role == Role::Admin,
            via,
            ip,
            csrf: None,
        }
    }

    /// The user id to store as creator / reviewer (`None` for the admin token).
    pub fn user_id(&self) -> Option<i64> {
        (self.via != AuthVia::AdminToken).then_some(self.id)
    }

    /// Whether the role (and right) allows `p`.
    pub fn may(&self, p: Permission) -> bool {
        let r = self.role;
        match p {
            Permission::Read => true,
            Permission::EditBulletins | Permission::Schedule => matches!(r, Role::Admin | Role::Editor),
            Permission::Approve => matches!(r, Role::Admin | Role::Approver),
            Permission::Operate => matches!(r, Role::Admin | Role::Operator),
            Permission::Administer => r == Role::Admin,
            Permission::Emergency => self.emergency,
        }
    }

    /// `Ok` if the role allows `p`, else 403 saying what is missing.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.may(p) {
            return Ok(());
        }
        let what = match p {
            Permission::Read => "read",
            Permission::EditBulletins => "write bulletins (editors do)",
            Permission::Approve => "approve or reject bulletins (approvers do)",
            Permission::Schedule => "schedule bulletins (editors do)",
            Permission::Operate => "register or control receivers (operators do)",
            Permission::Administer => "manage users, areas and the audit log (admins do)",
            Permission::Emergency => "send or cancel emergencies (this needs the emergency right)",
        };
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("your role ({}) may not {what}; ask an admin", self.role.as_str()),
        ))
    }

    /// What this user may see: their subtree of the admin tree.
    pub fn scope(&self, store: &Store) -> Result<Scope, ApiError> {
        Scope::of(store, self.scope)
    }

    /// Whether area `area_id` is inside this user's subtree.
    pub fn area_visible(&self, store: &Store, area_id: i64) -> Result<bool, ApiError> {
        Ok(self.scope(store)?.contains(area_id))
    }
}

/// The area ids in the subtree rooted at `root` (the root first); `None` (the whole tree) gives `None`,
/// meaning "everything". A root that no longer exists gives an empty subtree. Other modules (alerts, reports,
/// metrics) filter by this.
pub fn subtree(store: &Store, root: Option<i64>) -> Result<Option<Vec<i64>>, StoreError> {
    match root {
        None => Ok(None),
        Some(r) => match store.area_subtree(r) {
            Ok(ids) => Ok(Some(ids)),
            Err(StoreError::NotFound { .. }) => Ok(Some(Vec::new())),
            Err(e) => Err(e),
        },
    }
}

/// A user's subtree, resolved once per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The root (`None` = the whole tree).
    pub root: Option<i64>,
    /// The areas inside (`None` = all).
    areas: Option<BTreeSet<i64>>,
    /// The root's ancestors (library warnings made above the root are usable inside it).
    above: Vec<i64>,
}

impl Scope {
    /// The subtree under `root`.
    pub fn of(store: &Store, root: Option<i64>) -> Result<Scope, ApiError> {
        let areas = subtree(store, root)?.map(|v| v.into_iter().collect::<BTreeSet<_>>());
        let above = match root {
            Some(r) => store.area_ancestors(r).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Scope { root, areas, above })
    }

    /// Everything.
    pub fn all() -> Scope {
        Scope::default()
    }

    /// Whether this is the whole tree.
    pub fn is_all(&self) -> bool {
        self.areas.is_none()
    }

    /// The area ids inside (`None` = all).
    pub fn areas(&self) -> Option<Vec<i64>> {
        self.areas.as_ref().map(|a| a.iter().copied().collect())
    }

    /// Whether an area is inside.
    pub fn contains(&self, area: i64) -> bool {
        self.areas.as_ref().is_none_or(|a| a.contains(&area))
    }

    /// Whether something owned by `area` (`None` = the whole tree) is inside: whole-tree things only for a
    /// whole-tree scope.
    pub fn owns(&self, area: Option<i64>) -> bool {
        match area {
            Some(a) => self.contains(a),
            None => self.is_all(),
        }
    }

    /// 404 for an area outside (or missing).
    pub fn check_area(&self, area: i64) -> Result<(), ApiError> {
        if self.contains(area) {
            Ok(())
        } else {
            Err(StoreError::not_found("area", area).into())
        }
    }

    /// Whether a bulletin can be seen: owned inside, or a library warning made at or above the scope's root.
    pub fn sees_bulletin(&self, b: &Bulletin) -> bool {
        self.owns(b.area_id) || (b.library && b.area_id.is_none_or(|a| self.above.contains(&a)))
    }

    /// The bulletin if it can be seen, else 404.
    pub fn bulletin(&self, store: &Store, id: &str) -> Result<Bulletin, ApiError> {
        let b = store.bulletin(id)?;
        if self.sees_bulletin(&b) {
            Ok(b)
        } else {
            Err(StoreError::not_found("bulletin", id).into())
        }
    }

    /// Whether a receiver (by its area) is inside.
    pub fn receiver_area_ok(&self, area: i64) -> bool {
        self.contains(area)
    }

    /// 404 unless every target (area, every member of a group, receiver) is inside.
    pub fn check_targets(&self, store: &Store, t: &Targets) -> Result<(), ApiError> {
        if self.is_all() {
            return Ok(());
        }
        for &a in &t.areas {
            self.check_area(a)?;
        }
        for &g in &t.groups {
            if !self.group_inside(store, g)? {
                return Err(StoreError::not_found("group", g).into());
            }
        }
        for r in &t.receivers {
            let rx = store.receiver(r)?;
            if !self.contains(rx.area_id) {
                return Err(StoreError::not_found("receiver", r).into());
            }
        }
        Ok(())
    }

    /// Whether every member of a group is inside (404 if the group does not exist).
    pub fn group_inside(&self, store: &Store, group: i64) -> Result<bool, ApiError> {
        let g = store.group(group)?;
        if self.is_all() {
            return Ok(true);
        }
        if !g.areas.iter().all(|&a| self.contains(a)) {
            return Ok(false);
        }
        for r in &g.receivers {
            if !self.contains(store.receiver(r)?.area_id) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether every target of a schedule is inside.
    pub fn sees_schedule(&self, store: &Store, s: &ScheduleRow) -> Result<bool, ApiError> {
        if self.is_all() {
            return Ok(true);
        }
        for (kind, target) in &s.spec.targets {
            let inside = match kind {
                TargetKind::Area => target.parse::<i64>().is_ok_and(|a| self.contains(a)),
                TargetKind::Group => match target.parse::<i64>() {
                    Ok(g) => match self.group_inside(store, g) {
                        Ok(inside) => inside,
                        Err(e) if e.status == StatusCode::NOT_FOUND => false,
                        Err(e) => return Err(e),
                    },
                    Err(_) => false,
                },
                TargetKind::Receiver => match store.receiver(target) {
                    Ok(r) => self.contains(r.area_id),
                    Err(StoreError::NotFound { .. }) => false,
                    Err(e) => return Err(e.into()),
                },
            };
            if !inside {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The schedule if it can be seen, else 404.
    pub fn schedule(&self, store: &Store, id: i64) -> Result<ScheduleRow, ApiError> {
        let s = store.schedule(id)?;
        if self.sees_schedule(store, &s)? {
            Ok(s)
        } else {
            Err(StoreError::not_found("schedule", id).into())
        }
    }
}

/// The client address from the connection (`ConnectInfo`), or "unknown". X-Forwarded-For is not trusted.
pub fn client_ip(extensions: &axum::http::Extensions) -> String {
    extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Resolves who is asking (see the module doc); 401 if nobody, 403 for a cookie request without its CSRF token.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match resolve(&state, &req) {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn resolve(state: &AppState, req: &Request) -> Result<CurrentUser, ApiError> {
    let ip = client_ip(req.extensions());
    let headers = req.headers();
    if let Some(token) = bearer(headers) {
        if state.store.setting(ADMIN_TOKEN_KEY)?.is_some_and(|h| h == sha256_hex(token.as_bytes())) {
            return Ok(CurrentUser::admin_token(ip));
        }
        return match state.store.api_token_user(token)? {
            Some(u) => Ok(CurrentUser::from_user(&u, AuthVia::ApiToken, ip)),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "this token is not valid (or was revoked)")),
        };
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let Some(session) = state.store.session(&token, state.now_ms())? else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "your session has ended; log in again"));
        };
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if sent.is_empty() || sent != session.csrf {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this request needs the X-CSRF-Token header the login answered with (scripts: use an API token)",
                ));
            }
        }
        let mut user = CurrentUser::from_user(&session.user, AuthVia::Session, ip);
        user.csrf = Some(session.csrf);
        return Ok(user);
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "log in (POST /api/v1/login) or send a token: Authorization: Bearer <token>",
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<CurrentUser>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "log in (POST /api/v1/login) or send a token: Authorization: Bearer <token>",
            )
        })
    }
}

/// The API view of a user.
pub fn user_view(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role,
        "area_id": u.area_id,
        "emergency": u.emergency || u.role == Role::Admin,
        "disabled": u.disabled_at.is_some(),
        "disabled_at": rfc3339_opt(u.disabled_at),
        "created_at": rfc3339(u.created_at),
    })
}

/// The API view of the current user.
pub fn me_view(u: &CurrentUser) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role,
        "area_id": u.scope,
        "emergency": u.emergency,
        "via": match u.via { AuthVia::AdminToken => "admin_token", AuthVia::ApiToken => "api_token", AuthVia::Session => "session" },
        "csrf": u.csrf,
    })
}
