//! `/areas` (the admin tree, listed as a nested tree with inherited settings resolved; `PATCH` sets one-step
//! approval) and `/groups`. Users see their own subtree only (its root is their tree's root); admins add areas
//! and groups inside it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::record;
use super::auth::{CurrentUser, Permission, Scope};
use super::{numeric_id, rfc3339, ApiError, AppState, Body};
use crate::store::areas::{Area, AreaKind, NewArea};
use crate::store::StoreError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/areas", get(list_areas).post(create_area))
        .route("/areas/{id}", get(get_area).patch(patch_area))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{id}", get(get_group))
}

/// One node of the tree as the API shows it.
#[derive(Debug, Serialize)]
struct AreaNode {
    id: i64,
    name: String,
    kind: AreaKind,
    parent_id: Option<i64>,
    /// After inheritance.
    languages: Vec<String>,
    quiet_start: String,
    quiet_end: String,
    /// Whether the languages / quiet hours are set here (false: inherited).
    own_languages: bool,
    own_quiet_hours: bool,
    /// Submitting a bulletin of this area approves it (set here; it also holds below).
    one_step_approval: bool,
    created_at: String,
    children: Vec<AreaNode>,
}

fn node(state: &AppState, area: &Area) -> Result<AreaNode, ApiError> {
    let s = state.store.area_settings(area.id)?;
    Ok(AreaNode {
        id: area.id,
        name: area.name.clone(),
        kind: area.kind,
        parent_id: area.parent_id,
        languages: s.languages,
        quiet_start: s.quiet_start.format("%H:%M").to_string(),
        quiet_end: s.quiet_end.format("%H:%M").to_string(),
        own_languages: area.languages.is_some(),
        own_quiet_hours: area.quiet_start.is_some(),
        one_step_approval: state.store.area_one_step_approval(area.id)?,
        created_at: rfc3339(area.created_at),
        children: Vec::new(),
    })
}

async fn create_area(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(mut body): Body<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Administer)?;
    let one_step = match body.as_object_mut().and_then(|o| o.remove("one_step_approval")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::unprocessable("one_step_approval must be true or false")),
    };
    let new: NewArea = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(format!("the JSON does not fit this request ({e})")))?;
    let scope = user.scope(&state.store)?;
    match new.parent_id {
        Some(p) => scope.check_area(p)?,
        None if scope.is_all() => {}
        None => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "you can only add areas inside your own area: give parent_id",
            ))
        }
    }
    let id = state.store.create_area(&new, state.now_ms())?;
    if one_step {
        state.store.set_one_step_approval(id, true)?;
    }
    let detail = json!({"name": new.name, "kind": new.kind, "parent_id": new.parent_id, "one_step_approval": one_step});
    record(&state, &user, "area_create", Some(("area", id.to_string())), Some(id), detail);
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaPatch {
    one_step_approval: bool,
}

async fn patch_area(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Body(patch): Body<AreaPatch>,
) -> Result<Json<AreaNode>, ApiError> {
    user.require(Permission::Administer)?;
    let id = numeric_id("area", &id)?;
    user.scope(&state.store)?.check_area(id)?;
    state.store.set_one_step_approval(id, patch.one_step_approval)?;
    let detail = json!({"one_step_approval": patch.one_step_approval});
    record(&state, &user, "area_update", Some(("area", id.to_string())), Some(id), detail);
    Ok(Json(node(&state, &state.store.area(id)?)?))
}

async fn list_areas(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Vec<AreaNode>>, ApiError> {
    let scope = user.scope(&state.store)?;
    let areas = state.store.areas()?;
    let mut children: BTreeMap<Option<i64>, Vec<&Area>> = BTreeMap::new();
    for a in &areas {
        children.entry(a.parent_id).or_default().push(a);
    }
    fn build(
        state: &AppState,
        area: &Area,
        children: &BTreeMap<Option<i64>, Vec<&Area>>,
        depth: usize,
    ) -> Result<AreaNode, ApiError> {
        let mut n = node(state, area)?;
        if depth < 64 {
            for child in children.get(&Some(area.id)).into_iter().flatten() {
                n.children.push(build(state, child, children, depth + 1)?);
            }
        }
        Ok(n)
    }
    // A scoped user's tree starts at its own root.
    let roots: Vec<&Area> = match scope.root {
        None => children.get(&None).into_iter().flatten().copied().collect(),
        Some(root) => areas.iter().filter(|a| a.id == root).collect(),
    };
    Ok(Json(roots.into_iter().map(|a| build(&state, a, &children, 0)).collect::<Result<Vec<_>, _>>()?))
}

async fn get_area(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<AreaNode>, ApiError> {
    let id = numeric_id("area", &id)?;
    user.scope(&state.store)?.check_area(id)?;
    let area = state.store.area(id)?;
    let mut n = node(&state, &area)?;
    for child in state.store.areas()?.iter().filter(|a| a.parent_id == Some(id)) {
        n.children.push(node(&state, child)?);
    }
    Ok(Json(n))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    #[serde(default)]
    areas: Vec<i64>,
    #[serde(default)]
    receivers: Vec<String>,
}

async fn create_group(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(g): Body<NewGroup>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Permission::Administer)?;
    let scope = user.scope(&state.store)?;
    let targets =
        crate::schedule::Targets { areas: g.areas.clone(), groups: Vec::new(), receivers: g.receivers.clone() };
    scope.check_targets(&state.store, &targets)?;
    let id = state.store.create_group(&g.name, &g.areas, &g.receivers, state.now_ms())?;
    let detail = json!({"name": g.name, "areas": g.areas, "receivers": g.receivers});
    record(&state, &user, "group_create", Some(("group", id.to_string())), scope.root, detail);
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

fn visible_group(state: &AppState, scope: &Scope, id: i64) -> Result<Value, ApiError> {
    if !scope.group_inside(&state.store, id)? {
        return Err(StoreError::not_found("group", id).into());
    }
    Ok(json!(state.store.group(id)?))
}

async fn list_groups(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let scope = user.scope(&state.store)?;
    let mut out = Vec::new();
    for g in state.store.groups()? {
        if scope.group_inside(&state.store, g.id)? {
            out.push(json!(g));
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn get_group(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("group", &id)?;
    let scope = user.scope(&state.store)?;
    Ok(Json(visible_group(&state, &scope, id)?))
}
