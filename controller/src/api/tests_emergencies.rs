//! Router tests of `/emergencies`: send from the library at once (even in quiet hours), plays and plans that
//! sound the warning three times until it expires, urgent replan, cancel, bad requests; and a receiver
//! registered later joins the schedules (and running emergencies) of its area.

use axum::http::{Method, StatusCode};
use loa_protocol::{ReceiverId, Tier, Timestamp};
use serde_json::json;

use super::tests::{harness, Harness};
use crate::dispatch::plan::compose;

/// A bulletin marked ready without encoding anything (dispatch is not running in these tests).
fn ready_bulletin(h: &Harness, library: bool) -> String {
    let (id, variant) = h.state.store.create_bulletin("Lũ quét", "disaster", "vi", h.state.now_ms()).unwrap();
    h.state.store.variant_ready(variant, &"ab".repeat(32), 45_000, 30_000).unwrap();
    if library {
        h.state.store.set_library(&id, true).unwrap();
    }
    id
}

#[tokio::test]
async fn an_emergency_goes_out_at_once_three_times_and_can_be_cancelled() {
    let h = harness();
    // 2026-11-23 22:30 local: quiet hours, which an emergency overrides.
    h.clock.advance(chrono::Duration::hours(15) + chrono::Duration::minutes(30));
    let (_, village, rx) = h.small_tree().await;
    let warning = ready_bulletin(&h, true);

    let (s, lib) = h.get("/api/v1/emergencies/library").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(lib[0]["id"], warning.as_str());
    assert_eq!(lib[0]["library"], true);

    let (s, sent) =
        h.post("/api/v1/emergencies", json!({"bulletin_id": warning, "targets": {"areas": [village]}})).await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["plays"], 1);
    assert_eq!(sent["receivers"], 1);
    assert_eq!(sent["times"], 3);
    assert_eq!(h.state.urgent.take(), vec![rx.clone()], "dispatch is asked to publish this receiver's plan first");

    let now = Timestamp::from_unix_ms(h.state.now_ms()).unwrap();
    let id = ReceiverId::new(rx.clone()).unwrap();
    let plan =
        compose(&h.state.store, &id, village, now, now.saturating_add_ms(-3_600_000), now.saturating_add_ms(3_600_000))
            .unwrap();
    assert_eq!(plan.plays.len(), 1);
    let play = &plan.plays[0];
    assert_eq!(play.tier, Tier::Emergency);
    assert_eq!(play.at, now);
    assert_eq!((play.times, play.gap_s, play.volume), (3, 10, 100));
    assert_eq!(play.late_s, 3600, "an offline receiver may still sound it until it expires");

    let (s, list) = h.get("/api/v1/emergencies").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list[0]["active"], true);

    let eid = sent["id"].as_i64().unwrap();
    let (s, c) = h.call(Method::DELETE, &format!("/api/v1/emergencies/{eid}"), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(h.state.urgent.take(), vec![rx.clone()]);
    let plan =
        compose(&h.state.store, &id, village, now, now.saturating_add_ms(-3_600_000), now.saturating_add_ms(3_600_000))
            .unwrap();
    assert!(plan.plays.is_empty(), "a cancelled emergency leaves every plan");
    let (_, list) = h.get("/api/v1/emergencies").await;
    assert_eq!(list[0]["active"], false);
}

#[tokio::test]
async fn bad_emergencies_are_refused_with_a_reason() {
    let h = harness();
    let (_, village, _) = h.small_tree().await;
    let warning = ready_bulletin(&h, false);
    let (encoding, _) = h.state.store.create_bulletin("Bão", "disaster", "vi", h.state.now_ms()).unwrap();
    for (body, status, words) in [
        (
            json!({"bulletin_id": "b-000000000000", "targets": {"areas": [village]}}),
            StatusCode::NOT_FOUND,
            "b-000000000000",
        ),
        (json!({"bulletin_id": encoding, "targets": {"areas": [village]}}), StatusCode::CONFLICT, "no encoded audio"),
        (json!({"bulletin_id": warning, "targets": {}}), StatusCode::UNPROCESSABLE_ENTITY, "who hears it"),
        (
            json!({"bulletin_id": warning, "targets": {"areas": [village]}, "times": 9}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "times",
        ),
        (
            json!({"bulletin_id": warning, "targets": {"areas": [village]}, "expires_in_s": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_in_s",
        ),
        (
            json!({"bulletin_id": warning, "targets": {"areas": [village]}, "loud": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "loud",
        ),
    ] {
        let (s, v) = h.post("/api/v1/emergencies", body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{body} → {v}");
    }
    let (s, _) = h.call(Method::DELETE, "/api/v1/emergencies/99", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, normal) = h
        .post("/api/v1/schedules", json!({"bulletin_id": warning, "targets": {"areas": [village]}, "daily": ["17:00"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{normal}");
    let (s, v) = h.call(Method::DELETE, &format!("/api/v1/emergencies/{}", normal["id"]), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn a_receiver_registered_later_joins_its_areas_schedules() {
    let h = harness();
    let (_, village, _) = h.small_tree().await;
    let b = ready_bulletin(&h, false);
    let (s, made) = h
        .post("/api/v1/schedules", json!({"bulletin_id": b, "targets": {"areas": [village]}, "daily": ["17:00"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (s, _) = h.post("/api/v1/emergencies", json!({"bulletin_id": b, "targets": {"areas": [village]}})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, late) = h.post("/api/v1/receivers", json!({"name": "loa B", "area_id": village})).await;
    assert_eq!(s, StatusCode::CREATED);
    let late = late["id"].as_str().unwrap();
    let (_, plays) = h.get(&format!("/api/v1/plays?receiver_id={late}")).await;
    let tiers: Vec<&str> = plays.as_array().unwrap().iter().map(|p| p["tier"].as_str().unwrap()).collect();
    assert!(tiers.contains(&"emergency"), "the running emergency reaches the new receiver: {plays}");
    assert_eq!(tiers.iter().filter(|t| **t == "normal").count(), 3, "daily 17:00 over the 72 h horizon: {plays}");
}

#[tokio::test]
async fn plays_nobody_reported_on_become_missed_and_a_late_report_still_counts() {
    let h = harness();
    let (_, village, rx) = h.small_tree().await;
    let b = ready_bulletin(&h, false);
    let (s, made) = h
        .post("/api/v1/schedules", json!({"bulletin_id": b, "targets": {"areas": [village]}, "at": "2026-11-23T17:00"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let q = crate::store::dispatch::mark_unreported;
    let at_17 = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().timestamp_millis();
    // 17:00 local + 5 min late allowance + 30 s audio + 10 min grace.
    let limit = at_17 + 300_000 + 30_000 + 600_000;
    assert_eq!(q(&h.state.store, limit - 1_000, 300_000, 1_800_000, 600_000).unwrap(), 0);
    assert_eq!(q(&h.state.store, limit + 1_000, 300_000, 1_800_000, 600_000).unwrap(), 1);
    let (_, plays) = h.get(&format!("/api/v1/plays?schedule_id={}", made["id"])).await;
    assert_eq!(plays[0]["status"], "missed");
    assert!(plays[0]["reason"].as_str().unwrap().starts_with("no_report"));
    let play = plays[0]["id"].as_str().unwrap();
    let finished = crate::store::dispatch::PlayUpdate::Finished(at_17 + 30_000);
    let stored = crate::store::dispatch::store_report(&h.state.store, &rx, 1, "{}", limit + 5_000, play, &finished);
    assert_eq!(stored.unwrap(), Some(true));
    let (_, plays) = h.get(&format!("/api/v1/plays?schedule_id={}", made["id"])).await;
    assert_eq!(plays[0]["status"], "played", "the receiver played it offline and said so later");
}
