//! Router tests with `tower::ServiceExt::oneshot`: auth, areas, groups, receivers, schedules, plays, errors.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::clock::ManualClock;

pub(crate) struct Harness {
    pub _dir: tempfile::TempDir,
    pub state: AppState,
    pub token: String,
    pub clock: ManualClock,
}

/// Monday 2026-11-23 07:00 local.
pub(crate) fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").unwrap().with_timezone(&Utc)
}

pub(crate) fn harness_with(settings: ApiSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let token = ensure_admin_token(&store).unwrap().unwrap();
    assert!(ensure_admin_token(&store).unwrap().is_none());
    let clock = ManualClock::new(start());
    let state = AppState {
        store,
        clock: Arc::new(clock.clone()),
        replan: Arc::new(Notify::new()),
        urgent: Arc::default(),
        settings,
        commands: None,
        audio_checks: crate::api::audio_checks(),
    };
    Harness { _dir: dir, state, token, clock }
}

pub(crate) fn harness() -> Harness {
    harness_with(ApiSettings { trusted_keys: vec![("ctl-0011aabb".into(), "ab".repeat(32))], ..ApiSettings::default() })
}

impl Harness {
    pub async fn send(&self, req: Request<HttpBody>) -> (StatusCode, Value) {
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req =
            Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                HttpBody::from(v.to_string())
            }
            None => HttpBody::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    /// A commune with one village holding one receiver; returns (commune, village, receiver).
    pub async fn small_tree(&self) -> (i64, i64, String) {
        let (s, commune) = self.post("/api/v1/areas", json!({"name": "Bản Vược", "kind": "commune"})).await;
        assert_eq!(s, StatusCode::CREATED);
        let commune = commune["id"].as_i64().unwrap();
        let (_, village) =
            self.post("/api/v1/areas", json!({"name": "Thôn A", "kind": "village", "parent_id": commune})).await;
        let village = village["id"].as_i64().unwrap();
        let (s, rx) = self.post("/api/v1/receivers", json!({"name": "loa A", "area_id": village})).await;
        assert_eq!(s, StatusCode::CREATED);
        (commune, village, rx["id"].as_str().unwrap().to_string())
    }
}

#[tokio::test]
async fn health_is_open_and_everything_else_wants_the_token() {
    let h = harness();
    let (s, v) = h.send(Request::get("/api/v1/health").body(HttpBody::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true);
    let (s, v) = h.send(Request::get("/api/v1/areas").body(HttpBody::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("Bearer"));
    let wrong = Request::get("/api/v1/areas").header("authorization", "Bearer nope").body(HttpBody::empty()).unwrap();
    assert_eq!(h.send(wrong).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("/api/v1/areas").await.0, StatusCode::OK);
    let (s, v) = h.get("/api/v1/nothing-here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn areas_form_a_tree_with_inherited_settings() {
    let h = harness();
    let (_, p) = h
        .post("/api/v1/areas", json!({"name": "Lào Cai", "kind": "province", "languages": ["vi", "hmn"], "quiet_start": "22:00", "quiet_end": "05:00"}))
        .await;
    let p = p["id"].as_i64().unwrap();
    let (_, c) = h.post("/api/v1/areas", json!({"name": "Bản Vược", "kind": "commune", "parent_id": p})).await;
    let c = c["id"].as_i64().unwrap();
    let (s, _) = h
        .post("/api/v1/areas", json!({"name": "Thôn 1", "kind": "village", "parent_id": c, "languages": ["vi"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, tree) = h.get("/api/v1/areas").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tree.as_array().unwrap().len(), 1);
    let commune = &tree[0]["children"][0];
    assert_eq!(commune["languages"], json!(["vi", "hmn"]));
    assert_eq!(commune["quiet_start"], "22:00");
    assert_eq!(commune["own_languages"], false);
    assert_eq!(commune["children"][0]["languages"], json!(["vi"]));
    let (s, one) = h.get(&format!("/api/v1/areas/{c}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["children"].as_array().unwrap().len(), 1);

    for (body, status) in [
        (json!({"name": "x", "kind": "planet"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": 5, "kind": "village"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "kind": "village", "parent_id": 999}), StatusCode::NOT_FOUND),
        (
            json!({"name": "x", "kind": "village", "quiet_start": "9pm", "quiet_end": "05:00"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": "x", "kind": "village", "colour": "red"}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, v) = h.post("/api/v1/areas", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"].is_string(), "{body}: {v}");
    }
    let bad_json = Request::post("/api/v1/areas")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/json")
        .body(HttpBody::from("{\"name\": "))
        .unwrap();
    let (s, v) = h.send(bad_json).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(h.get("/api/v1/areas/999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/api/v1/areas/abc").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn receivers_register_with_a_config_file() {
    let h = harness();
    let (_, village, rx) = h.small_tree().await;
    let (s, list) = h.get("/api/v1/receivers").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list[0]["id"], rx.as_str());
    let (s, reg) = h.post("/api/v1/receivers", json!({"name": "loa B", "area_id": village})).await;
    assert_eq!(s, StatusCode::CREATED);
    let config: toml::Value = toml::from_str(reg["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["id"].as_str(), reg["id"].as_str());
    assert_eq!(config["password"].as_str(), reg["secret"].as_str());
    assert_eq!(config["broker_url"].as_str(), Some("mqtt://127.0.0.1:1883"));
    assert_eq!(config["topic_root"].as_str(), Some("loa"));
    assert_eq!(config["trusted_keys"][0]["kid"].as_str(), Some("ctl-0011aabb"));
    assert_eq!(config["trusted_keys"][0]["public_key"].as_str().unwrap().len(), 64);
    assert!(h.state.store.check_receiver_secret(&rx, "guess").is_ok_and(|ok| !ok));

    // Dispatch writes health; the API shows it parsed.
    h.state
        .store
        .with_conn(|c| {
            c.execute(
                "UPDATE receivers SET online = 1, last_seen = 1, health = '{\"temp_c\": 51}' WHERE id = ?1",
                [&rx],
            )?;
            Ok(())
        })
        .unwrap();
    let (s, one) = h.get(&format!("/api/v1/receivers/{rx}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["online"], true);
    assert_eq!(one["health"]["temp_c"], 51);
    assert_eq!(one["last_seen"], "1970-01-01T00:00:00Z");

    assert_eq!(h.get("/api/v1/receivers/rx-000000000000").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.post("/api/v1/receivers", json!({"name": "x", "area_id": 999})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.post("/api/v1/receivers", json!({"name": "x"})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        h.post("/api/v1/receivers", json!({"name": "", "area_id": village})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn groups_are_made_and_listed() {
    let h = harness();
    let (_, village, rx) = h.small_tree().await;
    let (s, g) = h.post("/api/v1/groups", json!({"name": "riverside", "areas": [village], "receivers": [rx]})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, one) = h.get(&format!("/api/v1/groups/{}", g["id"])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["receivers"], json!([rx]));
    assert_eq!(h.get("/api/v1/groups").await.1.as_array().unwrap().len(), 1);
    assert_eq!(h.post("/api/v1/groups", json!({"name": "riverside"})).await.0, StatusCode::CONFLICT);
    assert_eq!(h.post("/api/v1/groups", json!({"name": "x", "receivers": ["rx-nope"]})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/api/v1/groups/42").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schedules_make_plays_and_cancel_them() {
    let h = harness();
    let (commune, _, rx) = h.small_tree().await;
    let (bulletin, v) = h.state.store.create_bulletin("Giá lúa", "market", "vi", 0).unwrap();
    h.state.store.variant_ready(v, "00", 10, 60_000).unwrap();

    let (s, made) = h
        .post(
            "/api/v1/schedules",
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "daily": ["06:00"], "volume": 0.8}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(made["plays"], 3);
    let id = made["id"].as_i64().unwrap();

    let (s, sched) = h.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sched["rule"], json!({"daily": ["06:00"]}));
    assert_eq!(sched["priority"], "normal");
    assert_eq!(sched["plays"]["planned"], 3);
    assert_eq!(h.get("/api/v1/schedules").await.1.as_array().unwrap().len(), 1);

    let (s, plays) = h.get(&format!("/api/v1/plays?schedule_id={id}&receiver_id={rx}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(plays.as_array().unwrap().len(), 3);
    assert_eq!(plays[0]["planned_at"], "2026-11-23T23:00:00Z");
    assert_eq!(plays[0]["bulletin_id"], bulletin.as_str());
    assert_eq!(h.get(&format!("/api/v1/plays?bulletin_id={bulletin}")).await.1.as_array().unwrap().len(), 3);
    // A window of time (from inclusive, until exclusive, any zone) and the newest first: what the console's week
    // view and a receiver's "recent plays" ask for.
    let times = |v: &Value| {
        v.as_array().unwrap().iter().map(|p| p["planned_at"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let (s, window) = h.get("/api/v1/plays?from=2026-11-24T06:00:00%2B07:00&until=2026-11-25T06:00:00%2B07:00").await;
    assert_eq!(s, StatusCode::OK, "{window}");
    assert_eq!(times(&window), ["2026-11-23T23:00:00Z"]);
    let (_, newest) = h.get(&format!("/api/v1/plays?receiver_id={rx}&order=newest&limit=2")).await;
    assert_eq!(times(&newest), ["2026-11-25T23:00:00Z", "2026-11-24T23:00:00Z"]);
    let (_, before) = h.get("/api/v1/plays?until=2026-11-25T00:00:00Z&order=newest&limit=1").await;
    assert_eq!(times(&before), ["2026-11-24T23:00:00Z"]);

    // Clash → 409 naming the clash; quiet hours → 422 naming the time and the village.
    let (s, v) = h
        .post(
            "/api/v1/schedules",
            json!({"bulletin_id": bulletin, "targets": {"receivers": [rx]}, "at": "2026-11-24T06:00"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Giá lúa"));
    let (s, v) = h
        .post(
            "/api/v1/schedules",
            json!({"bulletin_id": bulletin, "targets": {"receivers": [rx]}, "at": "2026-11-24T23:00"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("23:00") && v["error"].as_str().unwrap().contains("Thôn A"));

    let (s, v) = h.call(Method::DELETE, &format!("/api/v1/schedules/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["cancelled_plays"], 3);
    let (_, plays) = h.get(&format!("/api/v1/plays?schedule_id={id}")).await;
    assert!(plays.as_array().unwrap().iter().all(|p| p["status"] == "cancelled"));
    // The notification is kept until dispatch waits for it.
    tokio::time::timeout(std::time::Duration::from_secs(1), h.state.replan.notified()).await.unwrap();
}

#[tokio::test]
async fn bad_schedule_requests_are_4xx() {
    let h = harness();
    let (commune, _, _) = h.small_tree().await;
    let (bulletin, _) = h.state.store.create_bulletin("x", "other", "vi", 0).unwrap();
    for (body, status) in [
        (json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "daily": "06:00"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "cron": "0 6 * *"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "daily": ["06:00"], "priority": "urgent"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "daily": ["06:00"], "on_clash": "shout"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"bulletin_id": bulletin, "targets": {"areas": [999]}, "daily": ["06:00"]}), StatusCode::NOT_FOUND),
        (
            json!({"bulletin_id": "b-000000000000", "targets": {"areas": [commune]}, "daily": ["06:00"]}),
            StatusCode::NOT_FOUND,
        ),
        (json!({"bulletin_id": bulletin, "targets": {}, "daily": ["06:00"]}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, v) = h.post("/api/v1/schedules", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"].is_string());
    }
    // Scheduling while encoding is allowed.
    let (s, _) = h
        .post(
            "/api/v1/schedules",
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "cron": "30 7 * * 1-5"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h.get("/api/v1/schedules/77").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.call(Method::DELETE, "/api/v1/schedules/77", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/api/v1/plays?schedule_id=abc").await.0, StatusCode::BAD_REQUEST);
    let (s, v) = h.get("/api/v1/plays?from=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("from must be a date and time"), "{v}");
    let (s, v) = h.get("/api/v1/plays?order=random").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("oldest or newest"), "{v}");
    for bad in [
        "/api/v1/plays/slots",
        "/api/v1/plays/slots?from=2026-11-24T00:00:00Z",
        "/api/v1/plays/slots?from=2026-11-24T00:00:00Z&until=2026-11-24T00:00:00Z",
        "/api/v1/plays/slots?from=2026-11-24T00:00:00Z&until=2027-11-24T00:00:00Z",
        "/api/v1/plays/slots?from=2026-11-24&until=2026-11-25",
        "/api/v1/plays/slots?from=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z&limit=3",
    ] {
        let (s, v) = h.get(bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(!v["error"].as_str().unwrap_or_default().is_empty(), "{bad}: {v}");
    }
    // The clock moves: a past "at" is refused.
    h.clock.advance(chrono::Duration::days(3));
    let (s, v) = h
        .post(
            "/api/v1/schedules",
            json!({"bulletin_id": bulletin, "targets": {"areas": [commune]}, "at": "2026-11-24T08:00"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("past"));
}
