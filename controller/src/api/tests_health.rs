//! Router tests of fleet health: alerts, dashboard, receiver history, proof-of-play reports (JSON, CSV, XLSX) and
//! `/metrics`.

use std::io::Read as _;

use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::Duration;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use super::tests::{harness, Harness};
use super::*;
use crate::alerts::{AlertSettings, Alerts};
use crate::store::dispatch as q;
use crate::store::reports::testing::{add_bulletin, add_play};

const MIN: i64 = 60_000;

impl Harness {
    async fn raw(&self, uri: &str, token: bool) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(uri);
        if token {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let resp = app(self.state.clone()).oneshot(req.body(HttpBody::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    fn alerts(&self) -> Alerts {
        Alerts {
            store: self.state.store.clone(),
            clock: self.state.clock.clone(),
            settings: AlertSettings::default(),
            tz: crate::schedule::DEFAULT_TZ,
        }
    }

    fn heartbeat(&self, rx: &str, json: &str) {
        q::set_health(&self.state.store, rx, json, self.state.now_ms()).unwrap();
    }
}

const GOOD: &str =
    r#"{"up_s":60,"ver":"0.1.0","disk_mb":900,"cache_mb":3,"link":"2g","amp":"off","ready":0,"rej":[0,0,0,0,0,0,0]}"#;
const SHORTED: &str = concat!(
    r#"{"up_s":60,"ver":"0.1.0","disk_mb":900,"cache_mb":3,"link":"2g","amp":"off","ready":0,"rej":[0,0,0,0,0,0,0],"#,
    r#""spk":"short"}"#
);

#[tokio::test]
async fn alerts_are_listed_acknowledged_and_resolve_by_themselves() {
    let h = harness();
    let (_, village, rx) = h.small_tree().await;
    h.heartbeat(&rx, SHORTED);
    h.alerts().evaluate(h.state.now()).unwrap();
    let (s, list) = h.get("/api/v1/alerts").await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let a = &list[0];
    assert_eq!((a["kind"].as_str(), a["receiver_id"].as_str()), (Some("speaker_fault"), Some(rx.as_str())));
    assert_eq!(
        (a["area_id"].as_i64(), a["area_name"].as_str(), a["open"].as_bool()),
        (Some(village), Some("Thôn A"), Some(true))
    );
    assert!(a["detail"].as_str().unwrap().contains("shorted"));
    let id = a["id"].as_i64().unwrap();

    h.clock.advance(Duration::minutes(1));
    let (s, acked) = h.post(&format!("/api/v1/alerts/{id}/ack"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{acked}");
    assert_eq!((acked["acknowledged_by"].as_str(), acked["open"].as_bool()), (Some("admin-token"), Some(true)));
    assert_eq!(acked["acknowledged_at"], "2026-11-23T00:01:00Z");
    assert_eq!(h.post("/api/v1/alerts/999/ack", json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.post("/api/v1/alerts/abc/ack", json!({})).await.0, StatusCode::NOT_FOUND);
    let (s, e) = h.get("/api/v1/alerts?state=closed").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("open or all"));

    h.heartbeat(&rx, GOOD);
    h.alerts().evaluate(h.state.now()).unwrap();
    assert_eq!(h.get("/api/v1/alerts?state=open").await.1, json!([]));
    let (_, all) = h.get("/api/v1/alerts?state=all").await;
    assert_eq!(all[0]["open"], false);
    assert_eq!(all[0]["resolved_at"], "2026-11-23T00:01:00Z");
}

#[tokio::test]
async fn dashboard_groups_receivers_by_commune_with_now_playing_and_today() {
    let h = harness();
    let (commune, village, rx_a) = h.small_tree().await;
    let (_, other) = h.post("/api/v1/areas", json!({"name": "Xã Khác", "kind": "commune"})).await;
    let other = other["id"].as_i64().unwrap();
    let (_, rx_c) = h.post("/api/v1/receivers", json!({"name": "loa C", "area_id": other})).await;
    let rx_c = rx_c["id"].as_str().unwrap().to_string();
    let (_, rx_b) = h.post("/api/v1/receivers", json!({"name": "loa B", "area_id": village})).await;
    let rx_b = rx_b["id"].as_str().unwrap().to_string();
    q::set_online(&h.state.store, &rx_a, true, h.state.now_ms()).unwrap();
    let store = &h.state.store;
    let b = add_bulletin(store, "Thông báo tiêm phòng");
    let now = h.state.now_ms(); // 07:00 local
    add_play(store, &rx_a, &b, now - MIN, "playing", None);
    add_play(store, &rx_b, &b, now - 60 * MIN, "played", None);
    add_play(store, &rx_b, &b, now - 8 * 60 * MIN, "missed", Some("no_report")); // 23:00 yesterday
    add_play(store, &rx_c, &b, now + 60 * MIN, "planned", None);

    let (s, d) = h.get("/api/v1/dashboard").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["date"], "2026-11-23");
    assert_eq!(d["receivers"], json!({"online": 1, "offline": 2}));
    let communes = d["communes"].as_array().unwrap();
    assert_eq!(communes.len(), 2);
    assert_eq!((communes[0]["area_id"].as_i64(), communes[0]["name"].as_str()), (Some(commune), Some("Bản Vược")));
    assert_eq!((communes[0]["online"].as_i64(), communes[0]["offline"].as_i64()), (Some(1), Some(1)));
    assert_eq!(communes[0]["receivers"][0]["name"], "loa A");
    assert_eq!(communes[0]["receivers"][0]["area_name"], "Thôn A");
    assert_eq!(communes[0]["last_seen"], "2026-11-23T00:00:00Z");
    assert_eq!(communes[1]["name"], "Xã Khác");
    let playing = d["playing"].as_array().unwrap();
    assert_eq!(playing.len(), 1);
    assert_eq!(
        (playing[0]["receiver_id"].as_str(), playing[0]["title"].as_str()),
        (Some(rx_a.as_str()), Some("Thông báo tiêm phòng"))
    );
    assert_eq!(d["today"]["played"], 1);
    assert_eq!(d["today"]["playing"], 1);
    assert_eq!(d["today"]["planned"], 1);
    assert_eq!(d["today"]["missed"], 0, "yesterday's miss is not today's");
}

#[tokio::test]
async fn history_keeps_a_sample_per_five_minutes_for_fourteen_days() {
    let h = harness();
    let (_, _, rx) = h.small_tree().await;
    let store = &h.state.store;
    let t0 = h.state.now_ms();
    // Heartbeats every minute for 20 minutes: kept at 0, 5, 10, 15 and 20.
    let kept = (0..=20).filter(|m| store.record_health_sample(&rx, GOOD, t0 + m * MIN).unwrap()).count();
    assert_eq!(kept, 5);
    h.clock.advance(Duration::minutes(20));
    let (s, v) = h.get(&format!("/api/v1/receivers/{rx}/history?days=1")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    assert_eq!(samples[1]["at"], "2026-11-23T00:05:00Z");
    assert_eq!(samples[0]["health"]["disk_mb"], 900);
    assert_eq!(v["plays"], json!([]));
    // Fifteen days on, a new heartbeat prunes the old ones.
    assert!(store.record_health_sample(&rx, GOOD, t0 + 15 * 24 * 60 * MIN).unwrap());
    h.clock.advance(Duration::days(15));
    let (_, v) = h.get(&format!("/api/v1/receivers/{rx}/history?days=14")).await;
    assert_eq!(v["samples"].as_array().unwrap().len(), 1);
    let n: i64 =
        store.with_conn(|c| Ok(c.query_row("SELECT COUNT(*) FROM health_samples", [], |r| r.get(0))?)).unwrap();
    assert_eq!(n, 1);

    for bad in ["days=0", "days=15", "days=x"] {
        let (s, e) = h.get(&format!("/api/v1/receivers/{rx}/history?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    assert_eq!(h.get("/api/v1/receivers/rx-000000000000/history").await.0, StatusCode::NOT_FOUND);
}

/// Two villages; in November a bulletin played / missed / cancelled / pending, plus one play in December.
async fn report_world(h: &Harness) -> (i64, i64, String) {
    let (commune, village_a, rx_a) = h.small_tree().await;
    let (_, village_b) =
        h.post("/api/v1/areas", json!({"name": "Thôn B", "kind": "village", "parent_id": commune})).await;
    let village_b = village_b["id"].as_i64().unwrap();
    let (_, rx_b) = h.post("/api/v1/receivers", json!({"name": "loa B, chợ", "area_id": village_b})).await;
    let rx_b = rx_b["id"].as_str().unwrap().to_string();
    let store = &h.state.store;
    let b = add_bulletin(store, "Giá lúa, \"ngô\" tuần này");
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
    add_play(store, &rx_a, &b, at("2026-11-20T23:00:00Z"), "played", None); // 06:00 local on the 21st
    add_play(store, &rx_a, &b, at("2026-11-21T23:00:00Z"), "missed", Some("no_report: offline?"));
    add_play(store, &rx_b, &b, at("2026-11-20T23:00:00Z"), "missed", Some("not_downloaded"));
    add_play(store, &rx_b, &b, at("2026-11-21T23:00:00Z"), "cancelled", Some("clash"));
    add_play(store, &rx_b, &b, at("2026-11-30T16:59:00Z"), "planned", None); // 23:59 local on the 30th
    add_play(store, &rx_b, &b, at("2026-11-30T17:00:00Z"), "planned", None); // 1 December local
    (village_a, village_b, b)
}

#[tokio::test]
async fn play_report_counts_planned_played_and_missed_with_reasons() {
    let h = harness();
    let (village_a, village_b, b) = report_world(&h).await;
    let (s, r) = h.get("/api/v1/reports/plays?from=2026-11-01&to=2026-11-30").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!((r["from"].as_str(), r["time_zone"].as_str()), (Some("2026-11-01"), Some("Asia/Ho_Chi_Minh")));
    let summary = r["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0]["area_id"], village_a);
    assert_eq!(
        (&summary[0]["planned"], &summary[0]["played"], &summary[0]["missed"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(summary[0]["missed_reasons"], json!([{"reason": "no_report: offline?", "count": 1}]));
    let sb = &summary[1];
    assert_eq!(sb["area_name"], "Thôn B");
    assert_eq!(
        (&sb["planned"], &sb["missed"], &sb["cancelled"], &sb["pending"]),
        (&json!(2), &json!(1), &json!(1), &json!(1))
    );
    let plays = r["plays"].as_array().unwrap();
    assert_eq!(plays.len(), 5, "the December play is outside the range");
    assert_eq!(plays[0]["planned_local"], "2026-11-21 06:00");
    assert_eq!(r["truncated"], false);

    // Filters: one area, one bulletin; the default range is today.
    let (_, r) =
        h.get(&format!("/api/v1/reports/plays?from=2026-11-01&to=2026-12-31&area={village_b}&bulletin={b}")).await;
    assert_eq!(r["plays"].as_array().unwrap().len(), 4);
    let (_, r) = h.get("/api/v1/reports/plays").await;
    assert_eq!((r["from"].as_str(), r["plays"].as_array().map(Vec::len)), (Some("2026-11-23"), Some(0)));

    for (bad, status, words) in [
        ("from=2026-13-01", StatusCode::BAD_REQUEST, "YYYY-MM-DD"),
        ("from=01/11/2026", StatusCode::BAD_REQUEST, "YYYY-MM-DD"),
        ("from=2026-11-30&to=2026-11-01", StatusCode::BAD_REQUEST, "before"),
        ("from=2025-01-01&to=2026-11-01", StatusCode::BAD_REQUEST, "at most 366"),
        ("format=pdf", StatusCode::BAD_REQUEST, "json, csv or xlsx"),
        ("table=everything&format=csv", StatusCode::BAD_REQUEST, "plays or summary"),
        ("area=999", StatusCode::NOT_FOUND, "area 999"),
        ("bulletin=b-000000000000", StatusCode::NOT_FOUND, "bulletin"),
        ("colour=red", StatusCode::BAD_REQUEST, "colour"),
    ] {
        let (s, e) = h.get(&format!("/api/v1/reports/plays?{bad}")).await;
        assert_eq!(s, status, "{bad}: {e}");
        assert!(e["error"].as_str().unwrap().contains(words), "{bad}: {e}");
    }
}

#[tokio::test]
async fn play_report_downloads_as_csv_and_xlsx() {
    let h = harness();
    let (village_a, _, _) = report_world(&h).await;
    let (s, headers, body) = h.raw("/api/v1/reports/plays?from=2026-11-01&to=2026-11-30&format=csv", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(headers["content-disposition"], "attachment; filename=\"loa-plays-2026-11-01-to-2026-11-30.csv\"");
    assert!(body.starts_with(&[0xEF, 0xBB, 0xBF]), "UTF-8 byte-order mark for Excel");
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
    assert_eq!(lines.len(), 7, "heading, five plays, and the empty rest after the last CRLF");
    assert!(lines[0].starts_with("Giờ dự kiến,Mã bản tin,Tiêu đề,Khu vực"), "{}", lines[0]);
    assert!(lines[1].starts_with("2026-11-21 06:00,b-"), "{}", lines[1]);
    assert!(lines[1].contains(",\"Giá lúa, \"\"ngô\"\" tuần này\",Thôn A,"), "{}", lines[1]);
    assert!(lines[1].contains(",thường,đã phát,2026-11-21 06:00,2026-11-21 06:01,,p-"), "{}", lines[1]);
    assert!(text.contains(",\"loa B, chợ\","), "commas in names are quoted");
    assert!(text.contains(",bỏ lỡ,,,not_downloaded,"));

    let (_, headers, body) =
        h.raw("/api/v1/reports/plays?from=2026-11-01&to=2026-11-30&format=csv&table=summary&lang=en", true).await;
    assert!(headers["content-disposition"].to_str().unwrap().contains("-summary.csv"));
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
    assert_eq!(
        lines[0],
        "Bulletin,Title,Area id,Area,Planned,Played,Missed,Preempted,Cancelled,Pending,Missed reasons"
    );
    let row = format!(",{village_a},Thôn A,2,1,1,0,0,0,no_report: offline? (1)");
    assert!(lines[1].ends_with(&row), "{}", lines[1]);

    let (s, headers, body) = h.raw("/api/v1/reports/plays?from=2026-11-01&to=2026-11-30&format=xlsx", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], reports::XLSX_TYPE);
    assert_eq!(headers["content-disposition"], "attachment; filename=\"loa-plays-2026-11-01-to-2026-11-30.xlsx\"");
    assert!(body.starts_with(b"PK\x03\x04") && body.len() > 2000, "{} bytes", body.len());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        zip.by_name(name).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let workbook = read("xl/workbook.xml");
    assert!(workbook.contains("Tổng hợp") && workbook.contains("Chi tiết"), "{workbook}");
    let sheet1 = read("xl/worksheets/sheet1.xml");
    assert_eq!(sheet1.matches("<row ").count(), 3, "heading and two summary rows");
    let sheet2 = read("xl/worksheets/sheet2.xml");
    assert_eq!(sheet2.matches("<row ").count(), 6, "heading and five plays");
    let strings = read("xl/sharedStrings.xml");
    let texts = ["Giá lúa, ", "tuần này", "bỏ lỡ", "Thôn A"];
    assert!(texts.iter().all(|t| strings.contains(t)), "{strings}");
}

#[tokio::test]
async fn metrics_speak_prometheus_behind_the_same_login() {
    let h = harness();
    let (_, _, rx) = h.small_tree().await;
    h.heartbeat(&rx, SHORTED);
    h.alerts().evaluate(h.state.now()).unwrap();
    let b = add_bulletin(&h.state.store, "x");
    add_play(&h.state.store, &rx, &b, 0, "played", None);

    let (s, _, _) = h.raw("/metrics", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, headers, body) = h.raw("/metrics", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], metrics::CONTENT_TYPE);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "# TYPE loa_receivers gauge",
        "loa_receivers{state=\"online\"} 1",
        "loa_receivers{state=\"never_seen\"} 0",
        "loa_plays{status=\"played\"} 1",
        "loa_plays{status=\"missed\"} 0",
        "loa_alerts_open{kind=\"speaker_fault\"} 1",
        "loa_alerts_open{kind=\"offline\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("loa_dispatch"), "no dispatch in a bare API");

    // With the running controller's counters as an extension (as server.rs adds them).
    let stats = std::sync::Arc::new(std::sync::Mutex::new(crate::dispatch::Stats {
        chunk_bytes: 1234,
        plans: 2,
        handled: 40,
        ..Default::default()
    }));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(47));
    let sources = metrics::MetricsSources {
        dispatch: Some(stats),
        wire: Some(Default::default()),
        mqtt_received: Some(received),
    };
    let req = Request::get("/metrics")
        .header("authorization", format!("Bearer {}", h.token))
        .body(HttpBody::empty())
        .unwrap();
    let resp = app(h.state.clone()).layer(axum::Extension(sources)).oneshot(req).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.lines().any(|l| l == "loa_dispatch_chunk_bytes_total 1234"), "{text}");
    assert!(text.lines().any(|l| l == "loa_dispatch_plans_total 2"), "{text}");
    assert!(text.lines().any(|l| l == "loa_dispatch_backlog 7"), "received 47, handled 40: {text}");
    assert!(text.lines().any(|l| l == "loa_broker_bytes_total{direction=\"down\"} 0"), "{text}");
}
