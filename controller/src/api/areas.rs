//! `/areas` (the admin tree, listed as a nested tree with inherited settings resolved) and `/groups`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{numeric_id, rfc3339, ApiError, AppState, Body};
use crate::store::areas::{Area, AreaKind, NewArea};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/areas", get(list_areas).post(create_area))
        .route("/areas/{id}", get(get_area))
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
        created_at: rfc3339(area.created_at),
        children: Vec::new(),
    })
}

async fn create_area(
    State(state): State<AppState>,
    Body(new): Body<NewArea>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = state.store.create_area(&new, state.now_ms())?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

async fn list_areas(State(state): State<AppState>) -> Result<Json<Vec<AreaNode>>, ApiError> {
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
    let roots = children.get(&None).into_iter().flatten();
    Ok(Json(roots.map(|a| build(&state, a, &children, 0)).collect::<Result<Vec<_>, _>>()?))
}

async fn get_area(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<AreaNode>, ApiError> {
    let id = numeric_id("area", &id)?;
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
    Body(g): Body<NewGroup>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = state.store.create_group(&g.name, &g.areas, &g.receivers, state.now_ms())?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

async fn list_groups(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.store.groups()?)))
}

async fn get_group(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = numeric_id("group", &id)?;
    Ok(Json(json!(state.store.group(id)?)))
}
