//! The console's pages (GET): each asks the API for what it shows, as the person at the browser, and renders
//! one template. Buttons a role may not use are hidden here for convenience only; the API refuses them anyway.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Duration as Days};
use minijinja::context;
use serde_json::{json, Value};

use super::call::{Caller, Me};
use super::i18n::{word, Lang};
use super::templates::{Frame, CSS, JS};
use super::Console;

/// Query parameters of any page: flash messages and the page's own filters.
pub type Q = Query<HashMap<String, String>>;

/// Bulletin categories offered in forms.
pub const CATEGORIES: &[&str] = &["policy", "market", "security", "disaster", "health", "other"];
/// Bulletin languages offered in forms.
pub const LANGUAGES: &[&str] = &["vi", "tay", "nut", "hmn", "dao"];

/// Whether the person's role is one of `roles`.
pub fn role_in(me: &Value, roles: &[&str]) -> bool {
    me["role"].as_str().is_some_and(|r| roles.contains(&r))
}

/// A time as an API query value (RFC 3339, `+` escaped).
fn time_param<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    urlencoding::encode(&t.to_rfc3339()).into_owned()
}

/// The frame of a page: title, person, path, flash messages from the query.
pub fn frame(lang: Lang, title_key: &str, me: Value, uri: &Uri, q: &HashMap<String, String>) -> Frame {
    Frame {
        title: word(lang, title_key).to_string(),
        me,
        path: uri.path().to_string(),
        ok: q.get("ok").cloned(),
        err: q.get("err").cloned(),
        refresh: None,
    }
}

/// One area of the tree, flattened for a `<select>` (`Tỉnh › Xã › Thôn`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AreaRow {
    /// Area id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// province, commune, village...
    pub kind: String,
    /// Its parent.
    pub parent_id: Option<i64>,
    /// The path from the root.
    pub label: String,
    /// Whether a submit there approves at once.
    pub one_step: bool,
}

/// Every area the person may see, depth first.
pub async fn areas(c: &Console, who: &Caller) -> Vec<AreaRow> {
    fn walk(nodes: &Value, prefix: &str, out: &mut Vec<AreaRow>) {
        for n in nodes.as_array().into_iter().flatten() {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            let label = if prefix.is_empty() { name.clone() } else { format!("{prefix} › {name}") };
            out.push(AreaRow {
                id: n["id"].as_i64().unwrap_or_default(),
                name,
                kind: n["kind"].as_str().unwrap_or_default().to_string(),
                parent_id: n["parent_id"].as_i64(),
                label: label.clone(),
                one_step: n["one_step_approval"].as_bool().unwrap_or(false),
            });
            walk(&n["children"], &label, out);
        }
    }
    let mut out = Vec::new();
    walk(&c.get(who, "/api/v1/areas").await.body, "", &mut out);
    out
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// `GET /`: receivers online and offline by commune, open alerts, what plays now, today's plays.
pub async fn dashboard(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let board = match c.get(&who, "/api/v1/dashboard").await.page_data() {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let page = context! {
        online => board["receivers"]["online"].as_i64().unwrap_or_default(),
        offline => board["receivers"]["offline"].as_i64().unwrap_or_default(),
        open_alerts => board["open_alerts"].as_i64().unwrap_or_default(),
        groups => board["communes"].clone(),
        playing => board["playing"].clone(),
        today => board["today"].clone(),
    };
    c.templates.render("dashboard.html", who.lang, &frame(who.lang, "dashboard", me, &uri, &q), page)
}

/// `GET /login`.
pub async fn login(State(c): State<Console>, who: Caller, uri: Uri, Query(q): Q) -> Response {
    c.templates.render("login.html", who.lang, &frame(who.lang, "login", Value::Null, &uri, &q), context! {})
}

/// `GET /bulletins`: the list, the upload form and the text-to-speech form.
pub async fn bulletins(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let bulletins = match c.get(&who, "/api/v1/bulletins").await.page_data() {
        Ok(v) => list(v),
        Err(r) => return r.into_response(),
    };
    let page = context! {
        bulletins => bulletins,
        can_write => role_in(&me, &["admin", "editor"]),
        categories => CATEGORIES,
        languages => LANGUAGES,
    };
    c.templates.render("bulletins.html", who.lang, &frame(who.lang, "bulletins", me, &uri, &q), page)
}

/// `GET /bulletins/{id}`: variants with players, approval buttons.
pub async fn bulletin(
    State(c): State<Console>,
    who: Caller,
    Me(me): Me,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let b = match c.get(&who, &format!("/api/v1/bulletins/{}", urlencoding::encode(&id))).await.page_data() {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let page = context! {
        b => b,
        can_write => role_in(&me, &["admin", "editor"]),
        can_approve => role_in(&me, &["admin", "approver"]),
        can_schedule => role_in(&me, &["admin", "editor"]),
        languages => LANGUAGES,
    };
    let mut f = frame(who.lang, "bulletin", me, &uri, &q);
    f.title = page.get_attr("b").and_then(|b| b.get_attr("title")).map(|t| t.to_string()).unwrap_or(f.title);
    c.templates.render("bulletin.html", who.lang, &f, page)
}

/// Bulletin titles by id.
async fn titles(c: &Console, who: &Caller) -> HashMap<String, String> {
    list(c.get(who, "/api/v1/bulletins").await.body)
        .iter()
        .map(|b| {
            (b["id"].as_str().unwrap_or_default().to_string(), b["title"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// A schedule's rule in words (`daily 06:00, 17:00`).
fn rule_text(rule: &Value) -> String {
    let join = |v: &Value| v.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ");
    if let Some(at) = rule["at"].as_str() {
        at.replace('T', " ")
    } else if rule["daily"].is_array() {
        format!("⟳ {}", join(&rule["daily"]))
    } else if rule["weekly"].is_object() {
        format!("⟳ {} {}", join(&rule["weekly"]["days"]), join(&rule["weekly"]["times"]))
    } else if let Some(cron) = rule["cron"].as_str() {
        format!("cron {cron}")
    } else {
        String::new()
    }
}

/// One line of the week view: (title, tier, receivers, where).
type Slot = (String, String, usize, String);
/// One day of the week view: its label and its lines by (time, schedule).
type Day = (String, BTreeMap<(String, i64), Slot>);

/// `GET /schedules`: the next 7 days per day, and every schedule.
pub async fn schedules(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let titles = titles(&c, &who).await;
    let schedules: Vec<Value> = list(c.get(&who, "/api/v1/schedules").await.body)
        .into_iter()
        .map(|mut s| {
            let title = titles.get(s["bulletin_id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
            s["title"] = json!(title);
            s["rule"] = json!(rule_text(&s["rule"]));
            s
        })
        .collect();
    let names: HashMap<i64, String> = areas(&c, &who).await.into_iter().map(|a| (a.id, a.name)).collect();
    let where_of: HashMap<i64, String> = schedules
        .iter()
        .map(|s| {
            let w = s["targets"]["areas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_i64().and_then(|a| names.get(&a).cloned()))
                .collect::<Vec<_>>()
                .join(", ");
            (s["id"].as_i64().unwrap_or_default(), w)
        })
        .collect();
    let tz = c.tz;
    let today = c.clock.now().with_timezone(&tz).date_naive();
    let mut week: Vec<Day> = (0..7)
        .map(|d| {
            let day = today + Days::days(d);
            let wd = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day.weekday().num_days_from_monday() as usize];
            (format!("{} {}", word(who.lang, &format!("day_{wd}")), day.format("%d/%m")), BTreeMap::new())
        })
        .collect();
    // The seven days shown, counted per schedule and time by the store (a province has 20,000 plays a day).
    let day_start = |d: i64| {
        let day = today + Days::days(d);
        day.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(tz).single())
            .map(|t| time_param(&t))
            .unwrap_or_default()
    };
    let week_slots = format!("/api/v1/plays/slots?from={}&until={}", day_start(0), day_start(7));
    for p in list(c.get(&who, &week_slots).await.body) {
        let Some(at) = p["planned_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
            continue;
        };
        let local = at.with_timezone(&tz);
        let Ok(d) = usize::try_from((local.date_naive() - today).num_days()) else { continue };
        if d >= 7 {
            continue;
        }
        let sid = p["schedule_id"].as_i64().unwrap_or_default();
        let title = titles.get(p["bulletin_id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
        let tier = p["tier"].as_str().unwrap_or("normal").to_string();
        let slot = week[d].1.entry((local.format("%H:%M").to_string(), sid)).or_insert((title, tier, 0, String::new()));
        slot.2 += p["receivers"].as_u64().unwrap_or_default() as usize;
        slot.3 = where_of.get(&sid).cloned().unwrap_or_default();
    }
    let week: Vec<Value> = week
        .into_iter()
        .map(|(label, slots)| {
            let plays: Vec<Value> = slots
                .into_iter()
                .map(|((time, sid), (title, tier, count, place))| {
                    json!({"time": time, "schedule_id": sid, "title": title, "tier": tier, "count": count, "where": place})
                })
                .collect();
            json!({"label": label, "plays": plays})
        })
        .collect();
    let page = context! { week => week, schedules => schedules };
    c.templates.render("schedules.html", who.lang, &frame(who.lang, "schedules", me, &uri, &q), page)
}

/// `GET /schedules/new?bulletin=ID`: the schedule form.
pub async fn new_schedule(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let form = json!({"bulletin_id": q.get("bulletin").cloned().unwrap_or_default()});
    schedule_form(&c, &who, me, &uri, &q, form, Vec::new()).await
}

/// Renders the schedule form with what was typed and the warnings to confirm.
pub async fn schedule_form(
    c: &Console,
    who: &Caller,
    me: Value,
    uri: &Uri,
    q: &HashMap<String, String>,
    form: Value,
    warnings: Vec<String>,
) -> Response {
    let approved: Vec<Value> = list(c.get(who, "/api/v1/bulletins").await.body)
        .into_iter()
        .filter(|b| b["approval"].as_str().is_none_or(|a| a == "approved") && b["status"] != "cancelled")
        .collect();
    let page = context! { bulletins => approved, areas => areas(c, who).await, form => form, warnings => warnings };
    c.templates.render("schedule_new.html", who.lang, &frame(who.lang, "new_schedule", me, uri, q), page)
}

/// `GET /schedules/{id}`: one broadcast, live: every receiver's download and play.
pub async fn broadcast(
    State(c): State<Console>,
    who: Caller,
    Me(me): Me,
    uri: Uri,
    Path(id): Path<i64>,
    Query(q): Q,
) -> Response {
    let mut s = match c.get(&who, &format!("/api/v1/schedules/{id}")).await.page_data() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    s["rule_text"] = json!(rule_text(&s["rule"]));
    let title = titles(&c, &who).await.get(s["bulletin_id"].as_str().unwrap_or_default()).cloned();
    let names: HashMap<String, String> = list(c.get(&who, "/api/v1/receivers").await.body)
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or_default().to_string(), r["name"].as_str().unwrap_or_default().to_string()))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // The occurrences from yesterday on (a daily schedule gathers thousands of past plays); for a broadcast that
    // is over, its last ones.
    let since = time_param(&(c.clock.now() - Days::days(1)));
    let mut plays = list(c.get(&who, &format!("/api/v1/plays?schedule_id={id}&from={since}&limit=5000")).await.body);
    if plays.is_empty() {
        plays = list(c.get(&who, &format!("/api/v1/plays?schedule_id={id}&order=newest&limit=5000")).await.body);
    }
    let plays: Vec<Value> = plays
        .into_iter()
        .map(|mut p| {
            *counts.entry(p["status"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            let rid = p["receiver_id"].as_str().unwrap_or_default().to_string();
            p["receiver_name"] = json!(names.get(&rid).cloned().unwrap_or(rid));
            p
        })
        .collect();
    let page = context! {
        s => s,
        bulletin_title => title,
        plays => plays,
        counts => counts,
        can_schedule => role_in(&me, &["admin", "editor"]),
    };
    let mut f = frame(who.lang, "broadcast", me, &uri, &q);
    f.refresh = Some(5);
    c.templates.render("broadcast.html", who.lang, &f, page)
}

/// `GET /emergency`: send a warning from the library; the emergencies sent.
pub async fn emergency(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let titles = titles(&c, &who).await;
    let emergencies: Vec<Value> = list(c.get(&who, "/api/v1/emergencies").await.body)
        .into_iter()
        .map(|mut e| {
            e["title"] = json!(titles.get(e["bulletin_id"].as_str().unwrap_or_default()));
            e
        })
        .collect();
    let page = context! {
        library => list(c.get(&who, "/api/v1/emergencies/library").await.body),
        emergencies => emergencies,
        areas => areas(&c, &who).await,
    };
    c.templates.render("emergency.html", who.lang, &frame(who.lang, "emergency", me, &uri, &q), page)
}

/// The name of a receiver's village.
fn villages(areas: &[AreaRow]) -> HashMap<i64, String> {
    areas.iter().map(|a| (a.id, a.name.clone())).collect()
}

/// `GET /receivers`.
pub async fn receivers(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let names = villages(&areas(&c, &who).await);
    let receivers: Vec<Value> = list(c.get(&who, "/api/v1/receivers").await.body)
        .into_iter()
        .map(|mut r| {
            r["village"] = json!(names.get(&r["area_id"].as_i64().unwrap_or_default()));
            r["speaker"] = r["health"]["spk"].clone();
            r
        })
        .collect();
    let page = context! {
        receivers => receivers,
        can_register => role_in(&me, &["admin", "operator"]),
        areas => areas(&c, &who).await,
    };
    c.templates.render("receivers.html", who.lang, &frame(who.lang, "receivers", me, &uri, &q), page)
}

/// `GET /receivers/{id}`: health, its history as a chart, remote control, recent plays.
pub async fn receiver(
    State(c): State<Console>,
    who: Caller,
    Me(me): Me,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let rid = urlencoding::encode(&id).into_owned();
    let r = match c.get(&who, &format!("/api/v1/receivers/{rid}")).await.page_data() {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let village = villages(&areas(&c, &who).await).get(&r["area_id"].as_i64().unwrap_or_default()).cloned();
    let history = c.get(&who, &format!("/api/v1/receivers/{rid}/history?days=3")).await.body;
    // The latest plays up to now, newest first (not the first ones this receiver ever had).
    let now = time_param(&c.clock.now());
    let samples = history["samples"].as_array().cloned().or_else(|| history.as_array().cloned()).unwrap_or_default();
    let page = context! {
        r => r,
        village => village,
        chart => super::chart::svg(&samples),
        plays => list(c.get(&who, &format!("/api/v1/plays?receiver_id={rid}&until={now}&order=newest&limit=20")).await.body),
        can_command => role_in(&me, &["admin", "operator"]),
    };
    c.templates.render("receiver.html", who.lang, &frame(who.lang, "receiver", me, &uri, &q), page)
}

/// `GET /alerts?state=open|all`.
pub async fn alerts(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let state = if q.get("state").map(String::as_str) == Some("all") { "all" } else { "open" };
    let alerts = match c.get(&who, &format!("/api/v1/alerts?state={state}")).await.page_data() {
        Ok(v) => list(v),
        Err(r) => return r.into_response(),
    };
    c.templates.render("alerts.html", who.lang, &frame(who.lang, "alerts", me, &uri, &q), context! { alerts => alerts })
}

/// `GET /reports?from=&to=&area=`: proof of play on screen, with CSV and XLSX downloads.
pub async fn reports(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let today = c.clock.now().with_timezone(&c.tz).date_naive();
    let from = q.get("from").cloned().unwrap_or_else(|| (today - Days::days(7)).to_string());
    let to = q.get("to").cloned().unwrap_or_else(|| today.to_string());
    let area = q.get("area").cloned().unwrap_or_default();
    let mut query = format!("from={}&to={}", urlencoding::encode(&from), urlencoding::encode(&to));
    if !area.is_empty() {
        query.push_str(&format!("&area={}", urlencoding::encode(&area)));
    }
    let mut f = frame(who.lang, "reports", me, &uri, &q);
    let report = if q.contains_key("from") {
        let reply = c.get(&who, &format!("/api/v1/reports/plays?{query}&format=json")).await;
        if !reply.ok() {
            f.err = Some(reply.error());
        }
        reply.ok().then_some(reply.body)
    } else {
        None
    };
    let page = context! {
        q => json!({"from": from, "to": to, "area": area}),
        areas => areas(&c, &who).await,
        report => report,
        query => query,
    };
    c.templates.render("reports.html", who.lang, &f, page)
}

/// `GET /users` (admins).
pub async fn users(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let users = match c.get(&who, "/api/v1/users").await.page_data() {
        Ok(v) => list(v),
        Err(r) => return r.into_response(),
    };
    let areas = areas(&c, &who).await;
    let names = villages(&areas);
    let users: Vec<Value> = users
        .into_iter()
        .map(|mut u| {
            u["area_name"] = json!(u["area_id"].as_i64().and_then(|a| names.get(&a)));
            u
        })
        .collect();
    let page = context! { users => users, areas => areas };
    c.templates.render("users.html", who.lang, &frame(who.lang, "users", me, &uri, &q), page)
}

/// `GET /audit` (admins).
pub async fn audit(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Query(q): Q) -> Response {
    let entries = match c.get(&who, "/api/v1/audit?limit=300").await.page_data() {
        Ok(v) => list(v["entries"].clone()),
        Err(r) => return r.into_response(),
    };
    c.templates.render("audit.html", who.lang, &frame(who.lang, "audit", me, &uri, &q), context! { entries => entries })
}

/// `GET /static/console.css`.
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS).into_response()
}

/// `GET /static/console.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], JS)
        .into_response()
}

/// Any other path: the API's own paths (`/api/...`, `/metrics`) go to the API unchanged; anything else is the
/// console's "no such page".
pub async fn fallback(State(c): State<Console>, req: axum::extract::Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") || path == "/api" || path == "/metrics" {
        return match tower::ServiceExt::oneshot(c.api.clone(), req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    let lang = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| super::call::cookie_value(v, "loa_lang"))
        .map(|code| Lang::from_code(&code))
        .unwrap_or_default();
    let f = Frame { title: word(lang, "msg_not_found").into(), path: path.into(), ..Frame::default() };
    let page = context! { heading => "404", message => word(lang, "msg_not_found") };
    let mut r = c.templates.render("error.html", lang, &f, page);
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
