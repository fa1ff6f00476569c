//! Tests of schedule creation and extension against a real store in a temp dir.

use super::*;
use crate::store::areas::{AreaKind, NewArea};
use crate::store::plays::PlayFilter;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    commune: i64,
    village_a: i64,
    rx_a: String,
    rx_b: String,
    bulletin: String,
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Monday 2026-11-23 07:00 local.
fn now() -> DateTime<Utc> {
    utc("2026-11-23T00:00:00Z")
}

fn area(store: &Store, name: &str, kind: AreaKind, parent: Option<i64>) -> i64 {
    let new =
        NewArea { name: name.into(), kind, parent_id: parent, languages: None, quiet_start: None, quiet_end: None };
    store.create_area(&new, 0).unwrap()
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let commune = area(&store, "Bản Vược", AreaKind::Commune, None);
    let village_a = area(&store, "Thôn A", AreaKind::Village, Some(commune));
    let village_b = area(&store, "Thôn B", AreaKind::Village, Some(commune));
    let rx_a = store.register_receiver("loa A", village_a, 0).unwrap().id;
    let rx_b = store.register_receiver("loa B", village_b, 0).unwrap().id;
    let (bulletin, v) = store.create_bulletin("Giá lúa", "market", "vi", 0).unwrap();
    store.variant_ready(v, "00", 100, 120_000).unwrap(); // 2 minutes
    World { _dir: dir, store, commune, village_a, rx_a, rx_b, bulletin }
}

fn request(json: serde_json::Value) -> ScheduleRequest {
    serde_json::from_value(json).unwrap()
}

fn plays(store: &Store, schedule: i64) -> Vec<crate::store::plays::Play> {
    store.plays(&PlayFilter { schedule_id: Some(schedule), ..Default::default() }).unwrap()
}

#[test]
fn daily_schedule_on_a_commune_reaches_every_village() {
    let w = world();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"areas": [w.commune]}, "daily": ["06:00", "17:00"]
    }));
    let made = create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap();
    // Mon 17:00, Tue/Wed 06:00 + 17:00, Thu 06:00 → 6 occurrences × 2 receivers.
    assert_eq!(made.plays, 12);
    let list = plays(&w.store, made.id);
    assert_eq!(list.len(), 12);
    assert!(list.iter().all(|p| p.status == "planned" && p.tier == "normal"));
    assert_eq!(list[0].planned_at, utc("2026-11-23T10:00:00Z").timestamp_millis());
    let row = w.store.schedule(made.id).unwrap();
    assert_eq!(row.spec.tz, "Asia/Ho_Chi_Minh");
    assert_eq!(row.spec.slot_ms, 120_000);

    // Extending at the same instant adds nothing; a day later adds one day's plays.
    assert_eq!(extend_plays(&w.store, Timestamp::from_datetime(now()).unwrap()).unwrap(), 0);
    let later = Timestamp::from_datetime(now() + Duration::hours(24)).unwrap();
    assert_eq!(extend_plays(&w.store, later).unwrap(), 4);
    assert_eq!(extend_plays(&w.store, later).unwrap(), 0);
    assert_eq!(plays(&w.store, made.id).len(), 16);
}

#[test]
fn quiet_hours_refuse_a_normal_bulletin_but_not_an_emergency() {
    let w = world();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"areas": [w.village_a]}, "at": "2026-11-23T22:15"
    }));
    let err = create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap_err().to_string();
    assert!(err.contains("22:15") && err.contains("Thôn A") && err.contains("quiet hours"), "{err}");
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"areas": [w.village_a]}, "at": "2026-11-23T22:15",
        "priority": "emergency"
    }));
    assert_eq!(create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap().plays, 1);
}

#[test]
fn clashes_are_refused_queued_or_preempted() {
    let w = world();
    let first = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "at": "2026-11-23T08:00"
    }));
    create_schedule(&w.store, &first, now(), DEFAULT_TZ).unwrap();

    let clash = serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a, w.rx_b]}, "at": "2026-11-23T08:01"
    });
    let err = create_schedule(&w.store, &request(clash.clone()), now(), DEFAULT_TZ).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains(&w.rx_a) && m.contains("Giá lúa")), "{err}");
    // Nothing of the refused schedule was stored.
    assert_eq!(w.store.list_schedules().unwrap().len(), 1);

    let mut queued = clash.clone();
    queued["on_clash"] = "queue".into();
    let made = create_schedule(&w.store, &request(queued), now(), DEFAULT_TZ).unwrap();
    let list = plays(&w.store, made.id);
    let on_a = list.iter().find(|p| p.receiver_id == w.rx_a).unwrap();
    let on_b = list.iter().find(|p| p.receiver_id == w.rx_b).unwrap();
    assert_eq!(on_a.planned_at, utc("2026-11-23T01:02:00Z").timestamp_millis()); // after 08:00 + 2 min
    assert_eq!(on_b.planned_at, utc("2026-11-23T01:01:00Z").timestamp_millis());

    let mut urgent = clash;
    urgent["priority"] = "priority".into();
    let made = create_schedule(&w.store, &request(urgent), now(), DEFAULT_TZ).unwrap();
    assert_eq!(made.plays, 2);
}

#[test]
fn repeats_follow_each_other_with_the_gap() {
    let w = world();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "at": "2026-11-23T08:00",
        "repeat": 3, "repeat_gap_s": 30
    }));
    let made = create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap();
    let times: Vec<i64> = plays(&w.store, made.id).iter().map(|p| p.planned_at).collect();
    let start = utc("2026-11-23T01:00:00Z").timestamp_millis();
    assert_eq!(times, vec![start, start + 150_000, start + 300_000]);
}

#[test]
fn validity_bounds_the_plays() {
    let w = world();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "daily": ["06:00"],
        "valid_from": "2026-11-24", "valid_until": "2026-11-24"
    }));
    let made = create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap();
    let list = plays(&w.store, made.id);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].planned_at, utc("2026-11-23T23:00:00Z").timestamp_millis());
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let w = world();
    let base = serde_json::json!({"bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}});
    let cases = [
        (serde_json::json!({}), "give one of at"),
        (serde_json::json!({"at": "2026-11-23T08:00", "daily": ["06:00"]}), "only one"),
        (serde_json::json!({"at": "2026-11-22T08:00"}), "in the past"),
        (serde_json::json!({"daily": ["06:00"], "tz": "Mars/Olympus"}), "time zone"),
        (serde_json::json!({"daily": ["06:00"], "repeat": 0}), "repeat"),
        (serde_json::json!({"daily": ["06:00"], "volume": 1.5}), "volume"),
        (
            serde_json::json!({"daily": ["06:00"], "valid_from": "2026-12-01", "valid_until": "2026-11-30T00:00"}),
            "before",
        ),
    ];
    for (extra, needle) in cases {
        let mut json = base.clone();
        json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let err = create_schedule(&w.store, &request(json.clone()), now(), DEFAULT_TZ).unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
    let missing = request(
        serde_json::json!({"bulletin_id": "b-000000000000", "targets": {"areas": [w.commune]}, "daily": ["06:00"]}),
    );
    assert!(matches!(create_schedule(&w.store, &missing, now(), DEFAULT_TZ), Err(StoreError::NotFound { .. })));
    let nobody =
        request(serde_json::json!({"bulletin_id": w.bulletin, "targets": {"groups": [77]}, "daily": ["06:00"]}));
    assert!(matches!(create_schedule(&w.store, &nobody, now(), DEFAULT_TZ), Err(StoreError::NotFound { .. })));

    let (failed, v) = w.store.create_bulletin("hỏng", "other", "vi", 0).unwrap();
    w.store.variant_failed(v, "the file is not audio we can read").unwrap();
    let req =
        request(serde_json::json!({"bulletin_id": failed, "targets": {"areas": [w.commune]}, "daily": ["06:00"]}));
    assert!(create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap_err().to_string().contains("no usable audio"));
}

#[test]
fn groups_reach_their_areas_and_receivers_once() {
    let w = world();
    let g = w.store.create_group("riverside", &[w.village_a], &[w.rx_a.clone(), w.rx_b.clone()], 0).unwrap();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"groups": [g], "receivers": [w.rx_a]}, "at": "2026-11-23T09:00"
    }));
    assert_eq!(create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap().plays, 2);
}

#[test]
fn later_clashes_are_recorded_as_cancelled_plays() {
    let w = world();
    let daily = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "daily": ["06:00"]
    }));
    let made = create_schedule(&w.store, &daily, now(), DEFAULT_TZ).unwrap();
    // A one-off for Friday 06:00, beyond the first horizon, planned first.
    let once = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "at": "2026-11-27T06:00"
    }));
    let blocker = create_schedule(&w.store, &once, now(), DEFAULT_TZ).unwrap();
    assert_eq!(blocker.plays, 0);
    let later = Timestamp::from_datetime(now() + Duration::hours(48)).unwrap();
    extend_plays(&w.store, later).unwrap();
    // Schedules extend in id order: the daily one takes Friday 06:00, the one-off is recorded as cancelled.
    let all: Vec<_> = plays(&w.store, made.id).into_iter().chain(plays(&w.store, blocker.id)).collect();
    let friday = utc("2026-11-26T23:00:00Z").timestamp_millis();
    let at_friday: Vec<_> = all.iter().filter(|p| p.planned_at == friday).collect();
    assert_eq!(at_friday.len(), 2);
    assert_eq!(at_friday.iter().filter(|p| p.status == "planned").count(), 1);
    let cancelled = at_friday.iter().find(|p| p.status == "cancelled").unwrap();
    assert!(cancelled.reason.as_deref().unwrap().contains("overlap"));
}

#[test]
fn cancelling_a_schedule_cancels_its_plays_and_stops_extension() {
    let w = world();
    let req = request(serde_json::json!({
        "bulletin_id": w.bulletin, "targets": {"receivers": [w.rx_a]}, "daily": ["06:00"]
    }));
    let made = create_schedule(&w.store, &req, now(), DEFAULT_TZ).unwrap();
    assert_eq!(w.store.cancel_schedule(made.id, 1).unwrap(), 3);
    assert!(plays(&w.store, made.id).iter().all(|p| p.status == "cancelled"));
    let later = Timestamp::from_datetime(now() + Duration::hours(48)).unwrap();
    assert_eq!(extend_plays(&w.store, later).unwrap(), 0);
}
