//! Fuzzes the HTTP API's JSON bodies end to end: every POST/PATCH route that reads JSON gets the input as its
//! body (the first byte picks the route and whether a content type is sent), through the real router, auth
//! and SQLite store. Any body must get a 2xx or a 4xx with `{"error": ...}`: a 5xx, a panic or a non-JSON
//! error is a crash. State carries over between inputs (areas, users and groups pile up), like a long-lived
//! controller.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use loa_controller::api::{app, ensure_admin_token, ApiSettings, AppState};
use loa_controller::clock::ManualClock;
use loa_controller::store::Store;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    router: Router,
    token: String,
    routes: Vec<(Method, String)>,
    _dir: tempfile::TempDir,
    /// Where remote commands go (as to dispatch); kept open so sending never fails.
    _commands: tokio::sync::mpsc::UnboundedReceiver<(loa_protocol::ReceiverId, loa_protocol::Action)>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let token = ensure_admin_token(&store).expect("token").expect("a new token");
        let (commands_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        let start = chrono::DateTime::from_timestamp(1_795_392_000, 0).expect("constant time");
        let state = AppState {
            store,
            clock: Arc::new(ManualClock::new(start)),
            replan: Arc::default(),
            urgent: Arc::default(),
            settings: ApiSettings {
                trusted_keys: vec![("ctl-0011aabb".into(), "ab".repeat(32))],
                ..ApiSettings::default()
            },
            commands: Some(commands_tx),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let router = app(state);
        let mut w = World { rt, router, token, routes: Vec::new(), _dir: dir, _commands: commands };
        // A commune, a village, a receiver and a user for the routes that take an id.
        let commune = w.json(Method::POST, "/api/v1/areas", r#"{"name":"Bản Vược","kind":"commune"}"#);
        let commune = commune["id"].as_i64().expect("commune id");
        let village = format!(r#"{{"name":"Thôn A","kind":"village","parent_id":{commune}}}"#);
        let village = w.json(Method::POST, "/api/v1/areas", &village)["id"].as_i64().expect("village id");
        let rx = format!(r#"{{"name":"loa A","area_id":{village}}}"#);
        let rx = w.json(Method::POST, "/api/v1/receivers", &rx)["id"].as_str().expect("receiver id").to_string();
        let user = r#"{"username":"editor1","password":"a long enough password","role":"editor"}"#;
        let user = w.json(Method::POST, "/api/v1/users", user)["user"]["id"].as_i64().expect("user id");
        let p = Method::POST;
        w.routes = vec![
            (p.clone(), "/api/v1/areas".into()),
            (Method::PATCH, format!("/api/v1/areas/{commune}")),
            (Method::PATCH, "/api/v1/areas/999999".into()),
            (p.clone(), "/api/v1/groups".into()),
            (p.clone(), "/api/v1/receivers".into()),
            (p.clone(), format!("/api/v1/receivers/{rx}/commands")),
            (p.clone(), "/api/v1/receivers/rx-000000000000/commands".into()),
            (p.clone(), "/api/v1/schedules".into()),
            (p.clone(), "/api/v1/login".into()),
            (p.clone(), "/api/v1/me/password".into()),
            (p.clone(), "/api/v1/users".into()),
            (Method::PATCH, format!("/api/v1/users/{user}")),
            (p.clone(), format!("/api/v1/users/{user}/tokens")),
            (p.clone(), "/api/v1/bulletins/b-000000000000/approve".into()),
            (p.clone(), "/api/v1/bulletins/b-000000000000/reject".into()),
            (p.clone(), "/api/v1/bulletins/b-000000000000/submit".into()),
            (p.clone(), "/api/v1/alerts/1/ack".into()),
            (p, "/api/v1/logout".into()),
        ];
        w
    })
}

impl World {
    /// Sends a request; returns the status and the body as JSON (`Null` if it is not JSON).
    fn send(&self, method: Method, uri: &str, content_type: bool, body: Vec<u8>) -> (u16, serde_json::Value) {
        let mut req =
            Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", self.token));
        if content_type {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Body::from(body)).expect("request");
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
            (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
        })
    }

    fn json(&self, method: Method, uri: &str, body: &str) -> serde_json::Value {
        let (status, v) = self.send(method, uri, true, body.as_bytes().to_vec());
        assert!((200..300).contains(&status), "{uri}: {status} {v}");
        v
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, body)) = data.split_first() else { return };
    let w = world();
    let (method, uri) = &w.routes[usize::from(head & 0x7f) % w.routes.len()];
    let (status, v) = w.send(method.clone(), uri, head & 0x80 == 0, body.to_vec());
    assert!(status < 500, "{method} {uri}: {status} {v}");
    if status >= 400 {
        assert!(v["error"].is_string(), "{method} {uri}: {status} without an error message: {v}");
    }
});
