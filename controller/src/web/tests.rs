//! Console tests with `oneshot` against the real API and store: a small "browser" keeps cookies, reads the CSRF
//! token from each page and posts forms. Login, language, scope (staff of commune A never see commune B), the
//! approval buttons, the night-time warning before saving, typed text through a fake speech engine, an unusable
//! recording refused with its reason on the page, and every page rendering for an admin.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use super::{routes, Speech, SpeechError};
use crate::api::tests::{harness, Harness};
use crate::store::users::{hash_password, NewUser, Role};

/// Speaks any text as one second of a 440 Hz tone (WAV), so the test does not need espeak-ng.
struct Quiet;

impl Speech for Quiet {
    fn speak(&self, text: &str, _: &str) -> Result<Vec<u8>, SpeechError> {
        super::speech::check_text(text)?;
        Ok(tone_wav(8000.0))
    }
}

/// Speaks any text as one second of silence: a recording the upload check refuses.
struct Mute;

impl Speech for Mute {
    fn speak(&self, text: &str, _: &str) -> Result<Vec<u8>, SpeechError> {
        super::speech::check_text(text)?;
        Ok(tone_wav(0.0))
    }
}

/// One second of a 440 Hz tone at `amplitude` (of 32767), a 16 kHz 16-bit WAV.
fn tone_wav(amplitude: f32) -> Vec<u8> {
    let n: u32 = 16000;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + n * 2).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for v in [16u32.to_le_bytes().to_vec(), vec![1, 0, 1, 0], 16000u32.to_le_bytes().to_vec()] {
        w.extend_from_slice(&v);
    }
    w.extend_from_slice(&32000u32.to_le_bytes());
    w.extend_from_slice(&[2, 0, 16, 0]);
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(n * 2).to_le_bytes());
    for i in 0..n {
        let v = ((i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin() * amplitude) as i16;
        w.extend_from_slice(&v.to_le_bytes());
    }
    w
}

struct Browser {
    app: Router,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    html: String,
    location: Option<String>,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self.html.find("name=\"csrf\" content=\"").map(|i| i + 21).unwrap_or(0);
        self.html[at..].split('"').next().unwrap_or_default().to_string()
    }
}

impl Browser {
    fn new(h: &Harness) -> Browser {
        Browser::speaking(h, Arc::new(Quiet))
    }

    fn speaking(h: &Harness, speech: Arc<dyn Speech>) -> Browser {
        let app = routes(crate::api::app(h.state.clone()), speech, h.state.clock.clone(), crate::schedule::DEFAULT_TZ);
        Browser { app, cookies: BTreeMap::new() }
    }

    async fn send(&mut self, req: axum::http::request::Builder, body: Body) -> Page {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let req = req.header(header::COOKIE, cookie).body(body).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        for c in resp.headers().get_all(header::SET_COOKIE) {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_string(), v.to_string());
        }
        let status = resp.status();
        let location = resp.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_string());
        let html = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Page { status, html, location }
    }

    async fn get(&mut self, uri: &str) -> Page {
        self.send(Request::get(uri), Body::empty()).await
    }

    async fn form(&mut self, uri: &str, fields: &[(&str, &str)]) -> Page {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencoding::encode(k), urlencoding::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(req, Body::from(body)).await
    }

    async fn login(&mut self, name: &str) -> Page {
        let p = self.form("/login", &[("username", name), ("password", "a long enough password")]).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/")), "{}", p.html);
        self.get("/").await
    }
}

fn user(h: &Harness, name: &str, role: Role, area: Option<i64>) {
    let new = NewUser {
        username: name.into(),
        display_name: None,
        password_hash: hash_password("a long enough password").unwrap(),
        role,
        area_id: area,
        emergency: false,
    };
    h.state.store.create_user(&new, 0).unwrap();
}

/// Two communes, a village and a receiver in each.
async fn two_communes(h: &Harness) -> (i64, i64) {
    let mut ids = Vec::new();
    for (commune, village, rx) in [("Xã A", "Thôn A1", "loa-a"), ("Xã B", "Thôn B1", "loa-b")] {
        let (_, c) = h.post("/api/v1/areas", json!({"name": commune, "kind": "commune"})).await;
        let c = c["id"].as_i64().unwrap();
        let (_, v) = h.post("/api/v1/areas", json!({"name": village, "kind": "village", "parent_id": c})).await;
        let v = v["id"].as_i64().unwrap();
        let (s, _) = h.post("/api/v1/receivers", json!({"name": rx, "area_id": v})).await;
        assert_eq!(s, StatusCode::CREATED);
        ids.push(c);
    }
    (ids[0], ids[1])
}

#[tokio::test]
async fn pages_want_a_login_and_speak_vietnamese_unless_asked() {
    let h = harness();
    let mut b = Browser::new(&h);
    let p = b.get("/").await;
    assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/login")));
    let p = b.get("/login").await;
    assert!(p.html.contains("Tên đăng nhập") && p.html.contains("lang=\"vi\""), "{}", p.html);
    let p = b.get("/lang/en?back=/login").await;
    assert_eq!(p.location.as_deref(), Some("/login"));
    assert!(b.get("/login").await.html.contains("Username"));
    // No open redirect through the language switch.
    assert_eq!(b.get("/lang/vi?back=//evil.example").await.location.as_deref(), Some("/"));

    user(&h, "lan", Role::Viewer, None);
    let p = b.form("/login", &[("username", "lan"), ("password", "wrong")]).await;
    assert!(p.location.as_deref().unwrap().starts_with("/login?err="), "{:?}", p.location);
    assert!(!b.cookies.contains_key("loa_session"));
    let home = b.login("lan").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.html.contains("lan") && home.html.contains("Tổng quan"), "{}", home.html);
    assert!(!home.csrf().is_empty());
    // The API's own paths pass through; unknown pages are a readable 404.
    assert_eq!(b.get("/api/v1/health").await.status, StatusCode::OK);
    let p = b.get("/no-such-page").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.html.contains("Không tìm thấy trang này"), "{}", p.html);
}

#[tokio::test]
async fn staff_of_commune_a_never_see_commune_b() {
    let h = harness();
    let (a, _) = two_communes(&h).await;
    user(&h, "staff-a", Role::Editor, Some(a));
    let mut b = Browser::new(&h);
    let home = b.login("staff-a").await;
    assert!(home.html.contains("Xã A") && !home.html.contains("Xã B"), "{}", home.html);
    let list = b.get("/receivers").await;
    assert!(list.html.contains("loa-a") && !list.html.contains("loa-b"), "{}", list.html);
    let form = b.get("/schedules/new").await;
    assert!(form.html.contains("Thôn A1") && !form.html.contains("Thôn B1"));
    // An editor has no users page: the API says so, the console shows it.
    assert_eq!(b.get("/users").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn typed_text_is_spoken_submitted_approved_and_scheduled_with_a_night_warning() {
    let h = harness();
    let (a, _) = two_communes(&h).await;
    user(&h, "editor-a", Role::Editor, Some(a));
    user(&h, "approver-a", Role::Approver, Some(a));
    let mut ed = Browser::new(&h);
    let page = ed.login("editor-a").await;
    let csrf = page.csrf();
    let p = ed
        .form(
            "/bulletins/speak",
            &[("csrf", &csrf), ("title", "Tiêm phòng"), ("category", "health"), ("text", "Xin chào bà con.")],
        )
        .await;
    let at = p.location.clone().unwrap();
    assert!(at.starts_with("/bulletins/b-"), "{at}");
    let id = at.trim_start_matches("/bulletins/").split('?').next().unwrap().to_string();
    let page = ed.get(&format!("/bulletins/{id}")).await;
    assert!(page.html.contains("id=\"submit\""), "{}", page.html);
    // A form without the CSRF token is refused by the API and nothing changes.
    let p = ed.form(&format!("/bulletins/{id}/submit"), &[]).await;
    assert!(p.location.unwrap().contains("err="));
    let p = ed.form(&format!("/bulletins/{id}/submit"), &[("csrf", &csrf)]).await;
    assert!(p.location.unwrap().contains("ok="));

    let mut ap = Browser::new(&h);
    let csrf_ap = ap.login("approver-a").await.csrf();
    assert!(ap.get(&format!("/bulletins/{id}")).await.html.contains("id=\"approve\""));
    let p = ap.form(&format!("/bulletins/{id}/approve"), &[("csrf", &csrf_ap)]).await;
    assert!(p.location.unwrap().contains("ok="));

    let village = h.state.store.areas().unwrap().into_iter().find(|x| x.name == "Thôn A1").unwrap().id.to_string();
    let night = [
        ("csrf", csrf.as_str()),
        ("bulletin_id", id.as_str()),
        ("area", village.as_str()),
        ("kind", "once"),
        ("at", "2026-11-25T03:15"),
    ];
    let p = ed.form("/schedules", &night).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.html.contains("id=\"warnings\"") && p.html.contains("03:15"), "{}", p.html);
    assert_eq!(h.get("/api/v1/schedules").await.1.as_array().unwrap().len(), 0, "nothing saved before confirming");
    // Confirmed, the API still refuses a normal bulletin in quiet hours, in words the official can read.
    let mut confirmed = night.to_vec();
    confirmed.push(("confirmed", "1"));
    let p = ed.form("/schedules", &confirmed).await;
    assert!(p.html.contains("id=\"warnings\""), "{}", p.html);
    assert_eq!(h.get("/api/v1/schedules").await.1.as_array().unwrap().len(), 0);
    let day = [
        ("csrf", csrf.as_str()),
        ("bulletin_id", id.as_str()),
        ("area", village.as_str()),
        ("kind", "daily"),
        ("times", "06:00, 17:00"),
    ];
    let p = ed.form("/schedules", &day).await;
    let at = p.location.unwrap_or_else(|| panic!("{}", p.html));
    assert!(at.starts_with("/schedules/"), "{at}");
    let live = ed.get(at.split('?').next().unwrap()).await;
    assert!(live.html.contains("loa-a") && live.html.contains("http-equiv=\"refresh\""), "{}", live.html);
    let schedules = ed.get("/schedules").await.html;
    assert!(schedules.contains("Tiêm phòng"), "{schedules}");
    // The week view starts on the controller clock's today (23/11) and shows the new plays.
    assert!(schedules.contains("<h3>Thứ 2 23&#x2f;11</h3>") && schedules.contains("<b>17:00</b>"), "{schedules}");
}

#[tokio::test]
async fn an_unusable_recording_is_refused_on_the_page_with_the_reason() {
    let h = harness();
    let (a, _) = two_communes(&h).await;
    user(&h, "editor-a", Role::Editor, Some(a));
    let mut ed = Browser::speaking(&h, Arc::new(Mute));
    let csrf = ed.login("editor-a").await.csrf();
    // Typed text whose speech is silent: back on the bulletins page with the API's reason.
    let fields = [("csrf", csrf.as_str()), ("title", "Im lặng"), ("category", "health"), ("text", "Xin chào bà con.")];
    let p = ed.form("/bulletins/speak", &fields).await;
    let at = p.location.unwrap();
    assert!(at.starts_with("/bulletins?err="), "{at}");
    let page = ed.get(&at).await;
    assert!(
        page.html.contains("class=\"flash err\"") && page.html.contains("the recording is silent"),
        "{}",
        page.html
    );
    // The upload form: console.js posts it to the API with the page's CSRF token and shows the answer's `error`
    // in the form's result line.
    assert!(page.html.contains("id=\"upload\"") && page.html.contains("class=\"result\""), "{}", page.html);
    let boundary = "loa-console-test";
    let mut body = Vec::new();
    for (name, value) in [("title", "Tệp hỏng"), ("category", "health"), ("language", "vi")] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ban-tin.mp3\"\r\n\
             Content-Type: audio/mpeg\r\n\r\nnot a recording at all\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    let req = Request::post("/api/v1/bulletins")
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"));
    let p = ed.send(req, Body::from(body)).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.html);
    let answer: serde_json::Value = serde_json::from_str(&p.html).unwrap();
    assert!(answer["error"].as_str().unwrap().contains("not audio Loa can read"), "{answer}");
    assert_eq!(h.get("/api/v1/bulletins").await.1, json!([]), "nothing was stored");
}

#[tokio::test]
async fn every_page_renders_for_an_admin() {
    let h = harness();
    two_communes(&h).await;
    user(&h, "root", Role::Admin, None);
    let mut b = Browser::new(&h);
    b.login("root").await;
    let rx = h.get("/api/v1/receivers").await.1[0]["id"].as_str().unwrap().to_string();
    for page in [
        "/",
        "/bulletins",
        "/schedules",
        "/schedules/new",
        "/emergency",
        "/receivers",
        &format!("/receivers/{rx}"),
        "/alerts",
        "/alerts?state=all",
        "/reports",
        "/reports?from=2026-11-01&to=2026-11-23",
        "/users",
        "/audit",
        "/static/console.css",
        "/static/console.js",
    ] {
        let p = b.get(page).await;
        assert_eq!(p.status, StatusCode::OK, "{page}: {}", p.html);
    }
    let audit = b.get("/audit").await;
    assert!(audit.html.contains("login"), "the login is in the audit log: {}", audit.html);
    let reports = b.get("/reports?from=2026-11-01&to=2026-11-23").await;
    assert!(reports.html.contains("format=csv"));
}

#[tokio::test]
async fn an_admin_registers_a_receiver_and_manages_areas() {
    let h = harness();
    let (a, _) = two_communes(&h).await;
    user(&h, "root", Role::Admin, None);
    let mut b = Browser::new(&h);
    let csrf = b.login("root").await.csrf();
    let p = b.form("/receivers", &[("csrf", &csrf), ("name", "Loa mới"), ("area", &a.to_string())]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    assert!(p.html.contains("id=\"config\"") && p.html.contains("password"), "{}", p.html);
    assert_eq!(h.get("/api/v1/receivers").await.1.as_array().unwrap().len(), 3);

    let p = b
        .form("/areas", &[("csrf", &csrf), ("name", "Thôn Mới"), ("kind", "village"), ("parent", &a.to_string())])
        .await;
    assert!(p.location.unwrap().contains("ok="));
    let p = b.form(&format!("/areas/{a}/one-step"), &[("csrf", &csrf), ("on", "1")]).await;
    assert!(p.location.unwrap().contains("ok="));
    let users = b.get("/users").await;
    assert!(users.html.contains("Thôn Mới") && users.html.contains("✓"), "{}", users.html);
    // A viewer may look but not register.
    user(&h, "xem", Role::Viewer, None);
    let mut v = Browser::new(&h);
    let csrf = v.login("xem").await.csrf();
    let p = v.form("/receivers", &[("csrf", &csrf), ("name", "x"), ("area", &a.to_string())]).await;
    assert!(p.location.unwrap().contains("err="));
    assert_eq!(h.get("/api/v1/receivers").await.1.as_array().unwrap().len(), 3);
}
