//! Router tests of `/bulletins`: multipart upload, background encode, variants, audio, cancel, limits.

use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::tests::{harness, harness_with, Harness};
use super::ApiSettings;

const FIXTURE: &str = "/work/shared/fixtures/audio/bulletin-vi-8k-mulaw.wav";
const BOUNDARY: &str = "loa-test-boundary";

fn multipart(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if *name == "file" {
            body.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"rec.wav\"\r\nContent-Type: audio/wav\r\n\r\n",
            );
        } else {
            body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(h: &Harness, uri: &str, fields: &[(&str, &[u8])]) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(HttpBody::from(multipart(fields)))
        .unwrap();
    h.send(req).await
}

async fn wait_settled(h: &Harness, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (s, b) = h.get(&format!("/api/v1/bulletins/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        if b["status"] != "encoding" {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "encode did not finish: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn upload_encodes_in_the_background_and_serves_the_audio() {
    let h = harness();
    let wav = std::fs::read(FIXTURE).unwrap();
    let (s, v) = upload(
        &h,
        "/api/v1/bulletins",
        &[("title", "Tin thời tiết".as_bytes()), ("category", b"disaster"), ("file", &wav)],
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "encoding");
    let id = v["id"].as_str().unwrap().to_string();

    // A second language, and a broken third one, refused at once with what to do.
    let (s, v) = upload(&h, &format!("/api/v1/bulletins/{id}/variants"), &[("language", b"hmn"), ("file", &wav)]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) =
        upload(&h, &format!("/api/v1/bulletins/{id}/variants"), &[("language", b"tay"), ("file", b"not audio")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not audio Loa can read"), "{v}");

    let b = wait_settled(&h, &id).await;
    assert_eq!(b["status"], "ready", "{b}");
    assert_eq!(b["title"], "Tin thời tiết");
    let variants = b["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "the refused recording left no variant");
    assert_eq!(variants[0]["language"], "vi");
    assert_eq!(variants[0]["id"], format!("{id}-vi"));
    assert_eq!(variants[0]["status"], "ready");
    assert!(variants[0]["duration_ms"].as_i64().unwrap() > 1000);
    // Uploads are gone once encoded.
    assert_eq!(std::fs::read_dir(h.state.store.data_dir().join("uploads")).unwrap().count(), 0);

    let resp = tower::ServiceExt::oneshot(
        super::app(h.state.clone()),
        Request::get(format!("/api/v1/bulletins/{id}/audio?language=hmn"))
            .header("authorization", format!("Bearer {}", h.token))
            .body(HttpBody::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "audio/ogg");
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(&bytes[..4], b"OggS");
    assert_eq!(variants[1]["bytes"].as_i64().unwrap(), bytes.len() as i64);
    assert_eq!(h.get(&format!("/api/v1/bulletins/{id}/audio?language=tay")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get(&format!("/api/v1/bulletins/{id}/audio?language=fr")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/api/v1/bulletins").await.1.as_array().unwrap().len(), 1);

    // Cancel: status and future plays.
    let (commune, _, _) = h.small_tree().await;
    let (s, made) = h
        .post("/api/v1/schedules", json!({"bulletin_id": id, "targets": {"areas": [commune]}, "daily": ["06:00"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (s, v) = h.call(Method::DELETE, &format!("/api/v1/bulletins/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["cancelled_plays"], 3);
    assert_eq!(h.get(&format!("/api/v1/bulletins/{id}")).await.1["status"], "cancelled");
    let (s, v) = h
        .post("/api/v1/schedules", json!({"bulletin_id": id, "targets": {"areas": [commune]}, "daily": ["07:00"]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn bad_uploads_are_refused() {
    let h = harness_with(ApiSettings { max_upload_bytes: 1000, ..ApiSettings::default() });
    let (s, v) =
        upload(&h, "/api/v1/bulletins", &[("title", b"x"), ("category", b"market"), ("file", &[7u8; 5000])]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].is_string());
    let (s, v) = upload(&h, "/api/v1/bulletins", &[("title", b"x"), ("category", b"market")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("file"));
    let (s, _) = upload(&h, "/api/v1/bulletins", &[("title", b"x"), ("category", b"gossip"), ("file", b"abc")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = upload(&h, "/api/v1/bulletins", &[("category", b"market"), ("file", b"abc")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = upload(&h, "/api/v1/bulletins", &[("title", b"x"), ("file", b"")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) =
        upload(&h, "/api/v1/bulletins/b-000000000000/variants", &[("language", b"hmn"), ("file", b"abc")]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = upload(&h, "/api/v1/bulletins", &[("title", b"x"), ("colour", b"red"), ("file", b"abc")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // JSON instead of multipart.
    let (s, v) = h.post("/api/v1/bulletins", json!({"title": "x"})).await;
    assert!(s.is_client_error(), "{s} {v}");
    assert_eq!(h.get("/api/v1/bulletins/b-000000000000").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.call(Method::DELETE, "/api/v1/bulletins/b-000000000000", None).await.0, StatusCode::NOT_FOUND);
    // Nothing was left behind in uploads.
    assert_eq!(std::fs::read_dir(h.state.store.data_dir().join("uploads")).unwrap().count(), 0);
}
