//! Router tests of people: login (cookie, CSRF, throttling), users and tokens, scope (staff of commune A can
//! neither see nor target commune B), roles, approval before air (draft → submit → approve → schedule, reject
//! with a comment, no self-approval, one-step areas), the emergency right, and the audit log.

use axum::body::Body as HttpBody;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use super::tests::{harness, Harness};
use crate::store::bulletins::{Approval, BulletinOwner};
use crate::store::users::{hash_password, NewUser, Role};

const BOUNDARY: &str = "loa-people-boundary";

/// How a request proves who it is.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Cookie { session: String, csrf: Option<String> },
}

async fn send(h: &Harness, auth: &Auth, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    match auth {
        Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
        Auth::Cookie { session, csrf } => {
            req = req.header("cookie", format!("theme=dark; loa_session={session}"));
            if let Some(c) = csrf {
                req = req.header("x-csrf-token", c);
            }
        }
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            HttpBody::from(v.to_string())
        }
        None => HttpBody::empty(),
    };
    h.send(req.body(body).unwrap()).await
}

async fn get(h: &Harness, auth: &Auth, uri: &str) -> (StatusCode, Value) {
    send(h, auth, Method::GET, uri, None).await
}

async fn post(h: &Harness, auth: &Auth, uri: &str, body: Value) -> (StatusCode, Value) {
    send(h, auth, Method::POST, uri, Some(body)).await
}

fn admin(h: &Harness) -> Auth {
    Auth::Bearer(h.token.clone())
}

/// A user made straight in the store, with an API token.
fn user(h: &Harness, name: &str, role: Role, area: Option<i64>, emergency: bool) -> (i64, Auth) {
    let new = NewUser {
        username: name.into(),
        display_name: None,
        password_hash: hash_password("a long enough password").unwrap(),
        role,
        area_id: area,
        emergency,
    };
    let id = h.state.store.create_user(&new, 0).unwrap();
    let token = h.state.store.create_api_token(id, "tests", 0).unwrap();
    (id, Auth::Bearer(token))
}

/// Half a second of a 440 Hz tone, 8 kHz 16-bit mono WAV.
fn tiny_wav() -> Vec<u8> {
    let samples: Vec<i16> =
        (0..4000).map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 8000.0).sin() * 8000.0) as i16).collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

async fn upload(h: &Harness, auth: &Auth, title: &str) -> (StatusCode, Value) {
    let mut body = Vec::new();
    for (name, value) in [("title", title.as_bytes()), ("category", b"policy".as_slice())] {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&tiny_wav());
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let Auth::Bearer(token) = auth else { panic!("uploads in these tests use tokens") };
    let req = Request::post("/api/v1/bulletins")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(HttpBody::from(body))
        .unwrap();
    h.send(req).await
}

/// Province P with communes A and B, each with a village holding one receiver.
struct Tree {
    province: i64,
    a: i64,
    village_a: i64,
    rx_a: String,
    b: i64,
    village_b: i64,
    rx_b: String,
}

async fn tree(h: &Harness) -> Tree {
    let adm = admin(h);
    let area = |body: Value| {
        let adm = adm.clone();
        async move {
            let (s, v) = post(h, &adm, "/api/v1/areas", body).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["id"].as_i64().unwrap()
        }
    };
    let province = area(json!({"name": "Lào Cai", "kind": "province"})).await;
    let a = area(json!({"name": "Xã A", "kind": "commune", "parent_id": province})).await;
    let b = area(json!({"name": "Xã B", "kind": "commune", "parent_id": province})).await;
    let village_a = area(json!({"name": "Thôn A1", "kind": "village", "parent_id": a})).await;
    let village_b = area(json!({"name": "Thôn B1", "kind": "village", "parent_id": b})).await;
    let rx = |village: i64| {
        let adm = adm.clone();
        async move {
            let (s, v) = post(h, &adm, "/api/v1/receivers", json!({"name": "loa", "area_id": village})).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    let rx_a = rx(village_a).await;
    let rx_b = rx(village_b).await;
    Tree { province, a, village_a, rx_a, b, village_b, rx_b }
}

/// A bulletin owned by `area`, already encoded, in state `approval`.
fn ready_bulletin(h: &Harness, area: Option<i64>, approval: Approval, library: bool) -> String {
    let owner = BulletinOwner { area_id: area, created_by: None, approval };
    let (id, v) = h.state.store.create_bulletin_as("Tin", "policy", "vi", &owner, 0).unwrap();
    h.state.store.variant_ready(v, &"ab".repeat(32), 10, 30_000).unwrap();
    if library {
        h.state.store.set_library(&id, true).unwrap();
    }
    id
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v["id"].to_string().trim_matches('"').to_string()).collect()
}

async fn login(h: &Harness, username: &str, password: &str) -> (StatusCode, Value, Option<String>) {
    let req = Request::post("/api/v1/login")
        .header("content-type", "application/json")
        .body(HttpBody::from(json!({"username": username, "password": password}).to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(super::app(h.state.clone()), req).await.unwrap();
    let status = resp.status();
    let cookie = resp.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_string());
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), cookie)
}

#[tokio::test]
async fn login_sets_a_cookie_and_wrong_passwords_are_throttled() {
    let h = harness();
    let (s, made) = post(&h, &admin(&h), "/api/v1/users", json!({"username": "lan", "role": "editor"})).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let password = made["password"].as_str().unwrap().to_string();

    let (s, v, cookie) = login(&h, "lan", &password).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookie = cookie.unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().trim_start_matches("loa_session=").to_string();
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    let me = Auth::Cookie { session: session.clone(), csrf: Some(csrf) };
    let (s, v) = get(&h, &me, "/api/v1/me").await;
    assert_eq!((s, v["username"].as_str(), v["role"].as_str()), (StatusCode::OK, Some("lan"), Some("editor")));

    let (s, v, _) = login(&h, "lan", "wrong password!").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(login(&h, "nobody", "wrong password!").await.0, StatusCode::UNAUTHORIZED);
    for _ in 0..4 {
        assert_eq!(login(&h, "lan", "wrong password!").await.0, StatusCode::UNAUTHORIZED);
    }
    // Five failures: locked, even with the right password.
    let (s, v, _) = login(&h, "lan", &password).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["error"].as_str().unwrap().contains("try again in 60 s"), "{v}");
    h.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(login(&h, "lan", &password).await.0, StatusCode::OK);

    // Logging out ends the session.
    let (s, _) = post(&h, &me, "/api/v1/logout", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get(&h, &me, "/api/v1/me").await.0, StatusCode::UNAUTHORIZED);

    // Disabled users cannot log in.
    let id = made["user"]["id"].as_i64().unwrap();
    let (s, v) =
        send(&h, &admin(&h), Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"disabled": true}))).await;
    assert_eq!((s, &v["user"]["disabled"]), (StatusCode::OK, &json!(true)), "{v}");
    assert_eq!(login(&h, "lan", &password).await.0, StatusCode::FORBIDDEN);

    let (_, audit) = get(&h, &admin(&h), "/api/v1/audit?limit=50").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"login") && actions.contains(&"login_failed") && actions.contains(&"user_create"));
    assert!(audit["entries"][0]["ip"].is_string());
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_csrf_header() {
    let h = harness();
    let (s, made) = post(
        &h,
        &admin(&h),
        "/api/v1/users",
        json!({"username": "root2", "role": "admin", "password": "0123456789ab"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (_, v, cookie) = login(&h, "root2", "0123456789ab").await;
    let session = cookie.unwrap().split(';').next().unwrap().trim_start_matches("loa_session=").to_string();
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    let bare = Auth::Cookie { session: session.clone(), csrf: None };
    let wrong = Auth::Cookie { session: session.clone(), csrf: Some("nope".into()) };
    let good = Auth::Cookie { session, csrf: Some(csrf) };
    let area = json!({"name": "Xã C", "kind": "commune"});
    let (s, v) = post(&h, &bare, "/api/v1/areas", area.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("X-CSRF-Token"));
    assert_eq!(post(&h, &wrong, "/api/v1/areas", area.clone()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&h, &bare, "/api/v1/areas").await.0, StatusCode::OK, "reading needs no CSRF header");
    assert_eq!(post(&h, &good, "/api/v1/areas", area).await.0, StatusCode::CREATED);
    let stale = Auth::Cookie { session: "0".repeat(64), csrf: None };
    assert_eq!(get(&h, &stale, "/api/v1/areas").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn staff_of_commune_a_can_neither_see_nor_target_commune_b() {
    let h = harness();
    let t = tree(&h).await;
    let (_, editor) = user(&h, "editor-a", Role::Editor, Some(t.a), false);
    let (_, operator) = user(&h, "operator-a", Role::Operator, Some(t.a), false);
    let mine = ready_bulletin(&h, Some(t.a), Approval::Approved, false);
    let theirs = ready_bulletin(&h, Some(t.b), Approval::Approved, false);
    // The admin schedules a province-wide broadcast: plays on both receivers.
    let (s, v) = post(
        &h,
        &admin(&h),
        "/api/v1/schedules",
        json!({"bulletin_id": mine, "targets": {"areas": [t.province]}, "daily": ["06:00"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (_, list) = get(&h, &editor, "/api/v1/receivers").await;
    assert_eq!(ids(&list), vec![t.rx_a.clone()]);
    assert_eq!(get(&h, &editor, &format!("/api/v1/receivers/{}", t.rx_b)).await.0, StatusCode::NOT_FOUND);
    let (_, areas) = get(&h, &editor, "/api/v1/areas").await;
    assert_eq!(areas.as_array().unwrap().len(), 1);
    assert_eq!(areas[0]["id"], t.a);
    assert_eq!(get(&h, &editor, &format!("/api/v1/areas/{}", t.b)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&h, &editor, &format!("/api/v1/areas/{}", t.province)).await.0, StatusCode::NOT_FOUND);
    let (_, list) = get(&h, &editor, "/api/v1/bulletins").await;
    assert_eq!(ids(&list), vec![mine.clone()]);
    assert_eq!(get(&h, &editor, &format!("/api/v1/bulletins/{theirs}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&h, &editor, &format!("/api/v1/bulletins/{theirs}/audio")).await.0, StatusCode::NOT_FOUND);
    let (_, plays) = get(&h, &editor, "/api/v1/plays").await;
    assert!(!plays.as_array().unwrap().is_empty());
    assert!(plays.as_array().unwrap().iter().all(|p| p["receiver_id"] == t.rx_a.as_str()), "{plays}");
    // The same scope with a window of time and the newest first.
    let (s, latest) =
        get(&h, &editor, "/api/v1/plays?from=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z&order=newest").await;
    assert_eq!(s, StatusCode::OK, "{latest}");
    let latest = latest.as_array().unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(
        (latest[0]["receiver_id"].as_str(), latest[0]["planned_at"].as_str()),
        (Some(t.rx_a.as_str()), Some("2026-11-24T23:00:00Z"))
    );
    let (_, all_plays) = get(&h, &admin(&h), "/api/v1/plays").await;
    assert!(all_plays.as_array().unwrap().iter().any(|p| p["receiver_id"] == t.rx_b.as_str()));
    // Counted per schedule and time (the console's week view): the admin's count holds both receivers, the
    // editor's only commune A's.
    let window = "/api/v1/plays/slots?from=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z";
    let (s, all) = get(&h, &admin(&h), window).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let slot = json!([{"schedule_id": v["id"], "bulletin_id": mine, "planned_at": "2026-11-24T23:00:00Z",
                       "tier": "normal", "receivers": 2}]);
    assert_eq!(all, slot);
    let (_, own) = get(&h, &editor, window).await;
    assert_eq!(own[0]["receivers"], 1, "{own}");
    // The province-wide schedule reaches outside commune A: not listed.
    assert!(get(&h, &editor, "/api/v1/schedules").await.1.as_array().unwrap().is_empty());

    // Targets outside: 404, as if they did not exist.
    for targets in [json!({"areas": [t.b]}), json!({"receivers": [t.rx_b]}), json!({"areas": [t.province]})] {
        let body = json!({"bulletin_id": mine, "targets": targets, "at": "2026-11-24T08:00"});
        let (s, v) = post(&h, &editor, "/api/v1/schedules", body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    }
    let body = json!({"bulletin_id": theirs, "targets": {"areas": [t.a]}, "at": "2026-11-24T08:00"});
    assert_eq!(post(&h, &editor, "/api/v1/schedules", body).await.0, StatusCode::NOT_FOUND);
    let body = json!({"bulletin_id": mine, "targets": {"areas": [t.village_a]}, "at": "2026-11-24T08:00"});
    let (s, v) = post(&h, &editor, "/api/v1/schedules", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(get(&h, &editor, "/api/v1/schedules").await.1.as_array().unwrap().len(), 1);

    // Roles: an editor sends no commands (403); an operator of A cannot reach B's receiver (404).
    let cmd = json!({"do": "stop_now"});
    assert_eq!(
        post(&h, &editor, &format!("/api/v1/receivers/{}/commands", t.rx_a), cmd.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = post(&h, &operator, &format!("/api/v1/receivers/{}/commands", t.rx_b), cmd).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let reg = json!({"name": "loa mới", "area_id": t.village_b});
    assert_eq!(post(&h, &operator, "/api/v1/receivers", reg).await.0, StatusCode::NOT_FOUND);
    let reg = json!({"name": "loa mới", "area_id": t.village_a});
    assert_eq!(post(&h, &operator, "/api/v1/receivers", reg).await.0, StatusCode::CREATED);
    assert_eq!(
        post(&h, &editor, "/api/v1/users", json!({"username": "x-y", "role": "viewer"})).await.0,
        StatusCode::FORBIDDEN
    );
    let _ = t.village_b;
}

#[tokio::test]
async fn draft_submit_approve_then_schedule() {
    let h = harness();
    let t = tree(&h).await;
    let (editor_id, editor) = user(&h, "editor-a", Role::Editor, Some(t.a), false);
    let (_, approver) = user(&h, "approver-a", Role::Approver, Some(t.a), false);
    let (_, approver_b) = user(&h, "approver-b", Role::Approver, Some(t.b), false);
    let (_, viewer) = user(&h, "viewer-a", Role::Viewer, Some(t.a), false);

    assert_eq!(upload(&h, &viewer, "x").await.0, StatusCode::FORBIDDEN);
    assert_eq!(upload(&h, &approver, "x").await.0, StatusCode::FORBIDDEN);
    let (s, v) = upload(&h, &editor, "Họp dân").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["approval"], "draft");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, b) = get(&h, &editor, &format!("/api/v1/bulletins/{id}")).await;
    assert_eq!(
        (b["approval"].as_str(), b["area_id"].as_i64(), b["created_by"].as_i64()),
        (Some("draft"), Some(t.a), Some(editor_id))
    );

    let sched = json!({"bulletin_id": id, "targets": {"areas": [t.a]}, "at": "2026-11-24T08:00"});
    let (s, v) = post(&h, &editor, "/api/v1/schedules", sched.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("has not been approved yet"));
    // Approving a draft is a conflict; an approver of B does not even see it.
    assert_eq!(
        post(&h, &approver, &format!("/api/v1/bulletins/{id}/approve"), json!({})).await.0,
        StatusCode::CONFLICT
    );
    let (s, v) = post(&h, &editor, &format!("/api/v1/bulletins/{id}/submit"), json!({})).await;
    assert_eq!((s, v["approval"].as_str()), (StatusCode::OK, Some("submitted")), "{v}");
    assert_eq!(post(&h, &editor, &format!("/api/v1/bulletins/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(post(&h, &viewer, &format!("/api/v1/bulletins/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        post(&h, &approver_b, &format!("/api/v1/bulletins/{id}/approve"), json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    // An editor cannot change what is waiting for approval.
    assert_eq!(post(&h, &editor, "/api/v1/schedules", sched.clone()).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let req = Request::post(format!("/api/v1/bulletins/{id}/approve"))
        .header(
            "authorization",
            match &approver {
                Auth::Bearer(t) => format!("Bearer {t}"),
                _ => unreachable!(),
            },
        )
        .body(HttpBody::empty())
        .unwrap();
    let (s, v) = h.send(req).await;
    assert_eq!((s, v["approval"].as_str()), (StatusCode::OK, Some("approved")), "an empty body is fine: {v}");
    let (s, v) = post(&h, &editor, "/api/v1/schedules", sched).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (_, audit) = get(&h, &admin(&h), "/api/v1/audit").await;
    let seen: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["username"].as_str().unwrap().to_string()))
        .collect();
    for (action, who) in [
        ("bulletin_upload", "editor-a"),
        ("bulletin_submit", "editor-a"),
        ("bulletin_approve", "approver-a"),
        ("schedule_create", "editor-a"),
    ] {
        assert!(seen.contains(&(action.to_string(), who.to_string())), "{action} by {who} in {seen:?}");
    }
    // Uploads through the admin token are approved on upload.
    let (s, v) = upload(&h, &admin(&h), "Thông báo").await;
    assert_eq!((s, v["approval"].as_str()), (StatusCode::ACCEPTED, Some("approved")), "{v}");
}

#[tokio::test]
async fn rejecting_needs_a_comment_and_nobody_approves_their_own_bulletin() {
    let h = harness();
    let t = tree(&h).await;
    let (editor_id, editor) = user(&h, "editor-a", Role::Editor, Some(t.a), false);
    let (_, approver) = user(&h, "approver-a", Role::Approver, Some(t.a), false);
    let owner = BulletinOwner { area_id: Some(t.a), created_by: Some(editor_id), approval: Approval::Draft };
    let (id, _) = h.state.store.create_bulletin_as("Tin", "policy", "vi", &owner, 0).unwrap();
    assert_eq!(post(&h, &editor, &format!("/api/v1/bulletins/{id}/submit"), json!({})).await.0, StatusCode::OK);

    let reject = format!("/api/v1/bulletins/{id}/reject");
    let (s, v) = post(&h, &approver, &reject, json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(post(&h, &approver, &reject, json!({"comment": "  "})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = post(&h, &approver, &reject, json!({"comment": "sai giờ họp"})).await;
    assert_eq!(
        (s, v["approval"].as_str(), v["review_comment"].as_str()),
        (StatusCode::OK, Some("rejected"), Some("sai giờ họp"))
    );
    // Back to the editor: resubmit.
    assert_eq!(post(&h, &editor, &format!("/api/v1/bulletins/{id}/submit"), json!({})).await.0, StatusCode::OK);

    // The editor becomes an approver: still may not approve what they made.
    let (s, _) =
        send(&h, &admin(&h), Method::PATCH, &format!("/api/v1/users/{editor_id}"), Some(json!({"role": "approver"})))
            .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = post(&h, &editor, &format!("/api/v1/bulletins/{id}/approve"), json!({"comment": "ok"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = post(&h, &approver, &format!("/api/v1/bulletins/{id}/approve"), json!({"comment": "ok"})).await;
    assert_eq!((s, v["approval"].as_str()), (StatusCode::OK, Some("approved")), "{v}");
}

#[tokio::test]
async fn a_one_step_area_approves_on_submit() {
    let h = harness();
    let t = tree(&h).await;
    let (_, editor) = user(&h, "editor-a", Role::Editor, Some(t.a), false);
    let (s, v) = send(
        &h,
        &admin(&h),
        Method::PATCH,
        &format!("/api/v1/areas/{}", t.a),
        Some(json!({"one_step_approval": true})),
    )
    .await;
    assert_eq!((s, &v["one_step_approval"]), (StatusCode::OK, &json!(true)), "{v}");
    assert_eq!(
        send(&h, &editor, Method::PATCH, &format!("/api/v1/areas/{}", t.a), Some(json!({"one_step_approval": false})))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // A village of A inherits it.
    let owner = BulletinOwner { area_id: Some(t.village_a), created_by: None, approval: Approval::Draft };
    let (id, _) = h.state.store.create_bulletin_as("Tin", "policy", "vi", &owner, 0).unwrap();
    let (s, v) = post(&h, &editor, &format!("/api/v1/bulletins/{id}/submit"), json!({})).await;
    assert_eq!((s, v["approval"].as_str()), (StatusCode::OK, Some("approved")), "{v}");
    // B did not choose it.
    let (_, editor_b) = user(&h, "editor-b", Role::Editor, Some(t.b), false);
    let owner = BulletinOwner { area_id: Some(t.b), created_by: None, approval: Approval::Draft };
    let (id, _) = h.state.store.create_bulletin_as("Tin", "policy", "vi", &owner, 0).unwrap();
    let (_, v) = post(&h, &editor_b, &format!("/api/v1/bulletins/{id}/submit"), json!({})).await;
    assert_eq!(v["approval"], "submitted");
}

#[tokio::test]
async fn emergencies_need_the_emergency_right_and_stay_in_scope() {
    let h = harness();
    let t = tree(&h).await;
    let (_, editor) = user(&h, "editor-a", Role::Editor, Some(t.a), false);
    let (_, chief) = user(&h, "chief-a", Role::Viewer, Some(t.a), true);
    // A province library warning, usable in every commune; not approved, as emergencies skip approval.
    let warning = ready_bulletin(&h, Some(t.province), Approval::Draft, true);
    let (_, lib) = get(&h, &chief, "/api/v1/emergencies/library").await;
    assert_eq!(ids(&lib), vec![warning.clone()]);

    let body = json!({"bulletin_id": warning, "targets": {"areas": [t.a]}});
    let (s, v) = post(&h, &editor, "/api/v1/emergencies", body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("emergency right"));
    let outside = json!({"bulletin_id": warning, "targets": {"areas": [t.b]}});
    assert_eq!(post(&h, &chief, "/api/v1/emergencies", outside).await.0, StatusCode::NOT_FOUND);
    let (s, v) = post(&h, &chief, "/api/v1/emergencies", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert_eq!(get(&h, &chief, "/api/v1/emergencies").await.1.as_array().unwrap().len(), 1);
    assert_eq!(
        send(&h, &editor, Method::DELETE, &format!("/api/v1/emergencies/{id}"), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(&h, &chief, Method::DELETE, &format!("/api/v1/emergencies/{id}"), None).await.0, StatusCode::OK);
    // Emergency-tier schedules need the right too.
    let sched =
        json!({"bulletin_id": warning, "targets": {"areas": [t.a]}, "at": "2026-11-24T08:00", "priority": "emergency"});
    assert_eq!(post(&h, &editor, "/api/v1/schedules", sched).await.0, StatusCode::FORBIDDEN);

    let (_, audit) = get(&h, &admin(&h), "/api/v1/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"emergency_send") && actions.contains(&"emergency_cancel"), "{actions:?}");
}

#[tokio::test]
async fn admins_manage_users_only_inside_their_scope() {
    let h = harness();
    let t = tree(&h).await;
    let (admin_a_id, admin_a) = user(&h, "admin-a", Role::Admin, Some(t.a), false);
    let (s, v) = post(&h, &admin_a, "/api/v1/users", json!({"username": "lan", "role": "editor"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["area_id"], t.a, "a scoped admin's users land in its area");
    let lan = v["user"]["id"].as_i64().unwrap();
    let outside = json!({"username": "minh", "role": "editor", "area_id": t.b});
    assert_eq!(post(&h, &admin_a, "/api/v1/users", outside).await.0, StatusCode::NOT_FOUND);
    let (s, _) =
        send(&h, &admin_a, Method::PATCH, &format!("/api/v1/users/{lan}"), Some(json!({"area_id": null}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no whole-tree scope from a commune admin");
    let (s, v) = send(
        &h,
        &admin_a,
        Method::PATCH,
        &format!("/api/v1/users/{lan}"),
        Some(json!({"area_id": t.village_a, "reset_password": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["password"].as_str().unwrap().len(), 20);
    let (_, b_user) = user(&h, "editor-b", Role::Editor, Some(t.b), false);
    let _ = b_user;
    let (_, list) = get(&h, &admin_a, "/api/v1/users").await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["admin-a", "lan"]);
    let (_, all) = get(&h, &admin(&h), "/api/v1/users").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let b_id = all.as_array().unwrap().iter().find(|u| u["username"] == "editor-b").unwrap()["id"].as_i64().unwrap();
    assert_eq!(get(&h, &admin_a, &format!("/api/v1/users/{b_id}")).await.0, StatusCode::NOT_FOUND);
    let (s, _) =
        send(&h, &admin_a, Method::PATCH, &format!("/api/v1/users/{admin_a_id}"), Some(json!({"disabled": true})))
            .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "no locking yourself out");

    // Tokens: made once, listed without the secret, revoked.
    let (s, tok) = post(&h, &admin_a, &format!("/api/v1/users/{lan}/tokens"), json!({"name": "scripts"})).await;
    assert_eq!(s, StatusCode::CREATED, "{tok}");
    let lan_auth = Auth::Bearer(tok["token"].as_str().unwrap().to_string());
    assert_eq!(get(&h, &lan_auth, "/api/v1/me").await.1["username"], "lan");
    let (_, listed) = get(&h, &admin_a, &format!("/api/v1/users/{lan}/tokens")).await;
    assert_eq!(listed[0]["id"], tok["id"]);
    assert!(listed[0].get("token").is_none());
    let (s, _) = send(
        &h,
        &admin_a,
        Method::DELETE,
        &format!("/api/v1/users/{lan}/tokens/{}", tok["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get(&h, &lan_auth, "/api/v1/me").await.0, StatusCode::UNAUTHORIZED);

    // The audit log of a commune admin holds its commune's entries only.
    let (s, audit) = get(&h, &admin_a, "/api/v1/audit").await;
    assert_eq!(s, StatusCode::OK);
    let entries = audit["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["area_id"] == t.a || e["area_id"] == t.village_a), "{audit}");
    assert_eq!(
        get(&h, &Auth::Bearer(tok["token"].as_str().unwrap().into()), "/api/v1/audit").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, viewer) = user(&h, "viewer-a", Role::Viewer, Some(t.a), false);
    assert_eq!(get(&h, &viewer, "/api/v1/audit").await.0, StatusCode::FORBIDDEN);
}
