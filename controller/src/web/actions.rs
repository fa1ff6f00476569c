//! The console's form posts. Each turns the form into one API call (with the form's CSRF token) and answers
//! with a redirect carrying a flash message (Post/Redirect/Get), or, for the schedule form, the form again with
//! the warnings to confirm before anything is saved: a night-time play ("this time is 03:15 — are you sure?"),
//! and the API's own refusals (quiet hours, clashes) in the person's words.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde_json::{json, Value};

use super::call::{Caller, Me, Reply};
use super::i18n::word;
use super::pages::schedule_form;
use super::Console;

type Fields = Form<HashMap<String, String>>;

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(|s| s.trim()).unwrap_or_default()
}

fn csrf(f: &HashMap<String, String>) -> &str {
    field(f, "csrf")
}

/// A redirect to `to` with `?ok=` or `?err=` (the API's message).
fn back(to: &str, reply: &Reply, ok: &str) -> Response {
    let (k, msg) = if reply.ok() { ("ok", ok.to_string()) } else { ("err", reply.error()) };
    Redirect::to(&format!("{to}?{k}={}", urlencoding::encode(&msg))).into_response()
}

/// A redirect that also passes on the cookies the API set.
fn redirect_with_cookies(to: &str, cookies: &[HeaderValue]) -> Response {
    let mut r = Redirect::to(to).into_response();
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r
}

/// `POST /login`.
pub async fn login(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    let body = json!({"username": field(&f, "username"), "password": f.get("password").cloned().unwrap_or_default()});
    let reply = c.send(&who, Method::POST, "/api/v1/login", &body, "").await;
    if reply.ok() {
        redirect_with_cookies("/", &reply.set_cookie)
    } else {
        back("/login", &reply, "")
    }
}

/// `POST /logout`.
pub async fn logout(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    let reply = c.send(&who, Method::POST, "/api/v1/logout", &json!({}), csrf(&f)).await;
    redirect_with_cookies("/login", &reply.set_cookie)
}

/// `GET /lang/{code}?back=/path`: remembers the language in a cookie and goes back.
pub async fn language(Path(code): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = super::i18n::Lang::from_code(&code);
    let to = q.get("back").map(String::as_str).filter(|b| b.starts_with('/') && !b.starts_with("//")).unwrap_or("/");
    let cookie = format!("loa_lang={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
    match HeaderValue::from_str(&cookie) {
        Ok(v) => redirect_with_cookies(to, &[v]),
        Err(_) => Redirect::to(to).into_response(),
    }
}

/// `POST /bulletins/speak`: typed text → speech (espeak-ng) → the normal upload, as a WAV.
pub async fn speak(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    let (title, category, text) =
        (field(&f, "title").to_string(), field(&f, "category"), field(&f, "text").to_string());
    let language = "vi";
    let speech = c.speech.clone();
    let wav = match tokio::task::spawn_blocking(move || speech.speak(&text, language)).await {
        Ok(Ok(wav)) => wav,
        Ok(Err(e)) => return flash("/bulletins", "err", &e.to_string()),
        Err(e) => return flash("/bulletins", "err", &format!("text-to-speech failed: {e}")),
    };
    let boundary = format!("loa-{:016x}", rand::random::<u64>());
    let mut body = Vec::with_capacity(wav.len() + 1024);
    for (name, value) in [("title", title.as_str()), ("category", category), ("language", language)] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n\
             Content-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&wav);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let reply = c.send_raw(&who, "/api/v1/bulletins", &content_type, Bytes::from(body), csrf(&f)).await;
    match reply.body["id"].as_str() {
        Some(id) if reply.ok() => flash(&format!("/bulletins/{id}"), "ok", word(who.lang, "msg_saved")),
        _ => back("/bulletins", &reply, ""),
    }
}

fn flash(to: &str, kind: &str, msg: &str) -> Response {
    Redirect::to(&format!("{to}?{kind}={}", urlencoding::encode(msg))).into_response()
}

/// `POST /bulletins/{id}/{submit|approve|reject}`.
pub async fn review(
    State(c): State<Console>,
    who: Caller,
    Path((id, step)): Path<(String, String)>,
    Form(f): Fields,
) -> Response {
    let page = format!("/bulletins/{}", urlencoding::encode(&id));
    if !["submit", "approve", "reject"].contains(&step.as_str()) {
        return flash(&page, "err", word(who.lang, "msg_not_found"));
    }
    let body = json!({"comment": Some(field(&f, "comment")).filter(|c| !c.is_empty())});
    let reply = c.send(&who, Method::POST, &format!("/api/v1{page}/{step}"), &body, csrf(&f)).await;
    back(&page, &reply, word(who.lang, "msg_saved"))
}

/// The night-time warning: plays between 22:00 and 05:00 local time.
fn night_times(times: &[String]) -> Vec<String> {
    times
        .iter()
        .filter(|t| {
            let hour =
                t.split(['T', ' ']).next_back().and_then(|hm| hm.split(':').next()).and_then(|h| h.parse::<u32>().ok());
            hour.is_some_and(|h| !(5..22).contains(&h))
        })
        .cloned()
        .collect()
}

/// Builds the API's schedule request from the form, or says what is missing.
fn schedule_request(f: &HashMap<String, String>) -> Result<(Value, Vec<String>), &'static str> {
    let area: i64 = field(f, "area").parse().map_err(|_| "msg_bad_number")?;
    let repeat: u32 = match field(f, "repeat") {
        "" => 1,
        r => r.parse().map_err(|_| "msg_bad_number")?,
    };
    let mut body = json!({
        "bulletin_id": field(f, "bulletin_id"),
        "targets": {"areas": [area]},
        "priority": if field(f, "priority") == "priority" { "priority" } else { "normal" },
        "repeat": repeat,
    });
    let times: Vec<String> =
        field(f, "times").split([',', ' ', ';']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
    let shown = match field(f, "kind") {
        "daily" => {
            if times.is_empty() {
                return Err("msg_no_time");
            }
            body["daily"] = json!(times);
            times
        }
        "weekly" => {
            let days: Vec<&str> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .into_iter()
                .filter(|d| f.contains_key(&format!("day_{d}")))
                .collect();
            if days.is_empty() {
                return Err("msg_no_days");
            }
            if times.is_empty() {
                return Err("msg_no_time");
            }
            body["weekly"] = json!({"days": days, "times": times});
            times
        }
        _ => {
            let at = field(f, "at");
            if at.is_empty() {
                return Err("msg_no_time");
            }
            body["at"] = json!(at);
            vec![at.to_string()]
        }
    };
    Ok((body, shown))
}

/// `POST /schedules`: warns about night-time plays before saving, then creates the schedule.
pub async fn schedule(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Form(f): Fields) -> Response {
    let form = json!(f);
    let none = HashMap::new();
    let (body, times) = match schedule_request(&f) {
        Ok(v) => v,
        Err(key) => return schedule_form(&c, &who, me, &uri, &none, form, vec![word(who.lang, key).into()]).await,
    };
    if field(&f, "confirmed") != "1" {
        let warnings: Vec<String> = night_times(&times)
            .iter()
            .map(|t| word(who.lang, "msg_late_hour").replace("{time}", t.rsplit(['T', ' ']).next().unwrap_or(t)))
            .collect();
        if !warnings.is_empty() {
            return schedule_form(&c, &who, me, &uri, &none, form, warnings).await;
        }
    }
    let reply = c.send(&who, Method::POST, "/api/v1/schedules", &body, csrf(&f)).await;
    match reply.body["id"].as_i64() {
        Some(id) if reply.ok() => flash(&format!("/schedules/{id}"), "ok", word(who.lang, "msg_saved")),
        _ => schedule_form(&c, &who, me, &uri, &none, form, vec![reply.error()]).await,
    }
}

/// `POST /schedules/{id}/cancel` (an emergency when the form says so).
pub async fn cancel_schedule(State(c): State<Console>, who: Caller, Path(id): Path<i64>, Form(f): Fields) -> Response {
    let path = if field(&f, "emergency") == "1" {
        format!("/api/v1/emergencies/{id}")
    } else {
        format!("/api/v1/schedules/{id}")
    };
    let reply = c.send(&who, Method::DELETE, &path, &json!({}), csrf(&f)).await;
    back(&format!("/schedules/{id}"), &reply, word(who.lang, "msg_saved"))
}

/// `POST /emergency`: a warning from the library to an area, now.
pub async fn emergency(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    if field(&f, "confirmed") != "1" {
        return flash("/emergency", "err", word(who.lang, "msg_confirm_emergency"));
    }
    let (Ok(area), Ok(times)) = (field(&f, "area").parse::<i64>(), field(&f, "times").parse::<u8>()) else {
        return flash("/emergency", "err", word(who.lang, "msg_bad_number"));
    };
    let body = json!({"bulletin_id": field(&f, "bulletin_id"), "targets": {"areas": [area]}, "times": times});
    let reply = c.send(&who, Method::POST, "/api/v1/emergencies", &body, csrf(&f)).await;
    match reply.body["id"].as_i64() {
        Some(id) if reply.ok() => flash(&format!("/schedules/{id}"), "ok", word(who.lang, "msg_sent")),
        _ => back("/emergency", &reply, ""),
    }
}

/// `POST /receivers/{id}/command`.
pub async fn command(State(c): State<Console>, who: Caller, Path(id): Path<String>, Form(f): Fields) -> Response {
    let action = match field(&f, "action") {
        "volume" => match field(&f, "volume").parse::<u8>() {
            Ok(v) => json!({"do": "set_volume", "volume": v}),
            Err(_) => return flash(&format!("/receivers/{id}"), "err", word(who.lang, "msg_bad_number")),
        },
        "stop" => json!({"do": "stop_now"}),
        "test_tone" => json!({"do": "test_tone", "seconds": 5}),
        "resync" => json!({"do": "resync"}),
        _ => json!({"do": "restart"}),
    };
    let rid = urlencoding::encode(&id).into_owned();
    let reply = c.send(&who, Method::POST, &format!("/api/v1/receivers/{rid}/commands"), &action, csrf(&f)).await;
    back(&format!("/receivers/{rid}"), &reply, word(who.lang, "msg_sent"))
}

/// `POST /alerts/{id}/ack`.
pub async fn ack_alert(State(c): State<Console>, who: Caller, Path(id): Path<i64>, Form(f): Fields) -> Response {
    let reply = c.send(&who, Method::POST, &format!("/api/v1/alerts/{id}/ack"), &json!({}), csrf(&f)).await;
    back("/alerts", &reply, word(who.lang, "msg_saved"))
}

/// `POST /users`.
pub async fn create_user(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    let body = json!({
        "username": field(&f, "username"),
        "password": f.get("password").cloned().unwrap_or_default(),
        "role": field(&f, "role"),
        "area_id": field(&f, "area").parse::<i64>().ok(),
        "emergency": field(&f, "emergency") == "1",
    });
    let reply = c.send(&who, Method::POST, "/api/v1/users", &body, csrf(&f)).await;
    back("/users", &reply, word(who.lang, "msg_saved"))
}

/// `POST /receivers`: registers a receiver and shows its config file once (it holds the receiver's password).
pub async fn register(State(c): State<Console>, who: Caller, Me(me): Me, uri: Uri, Form(f): Fields) -> Response {
    let Ok(area) = field(&f, "area").parse::<i64>() else {
        return flash("/receivers", "err", word(who.lang, "msg_bad_number"));
    };
    let body = json!({"name": field(&f, "name"), "area_id": area});
    let reply = c.send(&who, Method::POST, "/api/v1/receivers", &body, csrf(&f)).await;
    if !reply.ok() {
        return back("/receivers", &reply, "");
    }
    let mut frame = super::pages::frame(who.lang, "receivers", me, &uri, &HashMap::new());
    frame.ok = Some(word(who.lang, "msg_saved").to_string());
    let page = minijinja::context! { id => reply.body["id"].clone(), config => reply.body["config"].clone() };
    c.templates.render("receiver_new.html", who.lang, &frame, page)
}

/// `POST /areas`: a new area under one the person may manage.
pub async fn create_area(State(c): State<Console>, who: Caller, Form(f): Fields) -> Response {
    let body = json!({
        "name": field(&f, "name"),
        "kind": field(&f, "kind"),
        "parent_id": field(&f, "parent").parse::<i64>().ok(),
    });
    let reply = c.send(&who, Method::POST, "/api/v1/areas", &body, csrf(&f)).await;
    back("/users", &reply, word(who.lang, "msg_saved"))
}

/// `POST /areas/{id}/one-step`: turns one-step approval on or off for an area (and what is below it).
pub async fn one_step(State(c): State<Console>, who: Caller, Path(id): Path<i64>, Form(f): Fields) -> Response {
    let body = json!({"one_step_approval": field(&f, "on") == "1"});
    let reply = c.send(&who, Method::PATCH, &format!("/api/v1/areas/{id}"), &body, csrf(&f)).await;
    back("/users", &reply, word(who.lang, "msg_saved"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn night_times_are_flagged() {
        let t = |v: &[&str]| night_times(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["2026-11-24T03:15"]), ["2026-11-24T03:15"]);
        assert_eq!(t(&["06:00", "17:00", "21:59"]), Vec::<String>::new());
        assert_eq!(t(&["22:00", "04:59", "05:00"]), ["22:00", "04:59"]);
    }

    #[test]
    fn the_form_becomes_an_api_request() {
        let (body, times) = schedule_request(&form(&[
            ("area", "3"),
            ("kind", "daily"),
            ("times", "06:00, 17:00"),
            ("bulletin_id", "b-1"),
        ]))
        .unwrap();
        assert_eq!(body["daily"], json!(["06:00", "17:00"]));
        assert_eq!(body["targets"], json!({"areas": [3]}));
        assert_eq!(times.len(), 2);
        let (body, _) = schedule_request(&form(&[
            ("area", "3"),
            ("kind", "weekly"),
            ("times", "06:00"),
            ("day_mon", "on"),
            ("day_thu", "on"),
        ]))
        .unwrap();
        assert_eq!(body["weekly"], json!({"days": ["mon", "thu"], "times": ["06:00"]}));
        assert_eq!(schedule_request(&form(&[("area", "x")])).unwrap_err(), "msg_bad_number");
        assert_eq!(schedule_request(&form(&[("area", "1"), ("kind", "once")])).unwrap_err(), "msg_no_time");
        assert_eq!(
            schedule_request(&form(&[("area", "1"), ("kind", "weekly"), ("times", "06:00")])).unwrap_err(),
            "msg_no_days"
        );
    }
}
