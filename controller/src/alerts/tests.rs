//! The evaluator against a real store and a manual clock: alerts open, stay open (once), and resolve by themselves.

use chrono::Duration;
use loa_protocol::{AmpState, LinkKind, Rejections, SpeakerState};

use super::*;
use crate::clock::ManualClock;
use crate::store::areas::{AreaKind, NewArea};
use crate::store::dispatch as q;
use crate::store::reports::testing::{add_bulletin, add_play, set_status};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    alerts: Alerts,
    village_a: i64,
    village_b: i64,
    rx_a: String,
    rx_b: String,
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn area(store: &Store, name: &str, kind: AreaKind, parent: Option<i64>) -> i64 {
    let new =
        NewArea { name: name.into(), kind, parent_id: parent, languages: None, quiet_start: None, quiet_end: None };
    store.create_area(&new, 0).unwrap()
}

/// Monday 2026-11-23 07:00 local; two villages of one commune with a receiver each, both online.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let commune = area(&store, "Bản Vược", AreaKind::Commune, None);
    let village_a = area(&store, "Thôn A", AreaKind::Village, Some(commune));
    let village_b = area(&store, "Thôn B", AreaKind::Village, Some(commune));
    let rx_a = store.register_receiver("loa A", village_a, 0).unwrap().id;
    let rx_b = store.register_receiver("loa B", village_b, 0).unwrap().id;
    let clock = ManualClock::new(utc("2026-11-23T00:00:00Z"));
    let alerts = Alerts {
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        settings: AlertSettings::default(),
        tz: crate::schedule::DEFAULT_TZ,
    };
    let w = World { _dir: dir, store, clock, alerts, village_a, village_b, rx_a, rx_b };
    w.heartbeat(&w.rx_a.clone(), healthy());
    w.heartbeat(&w.rx_b.clone(), healthy());
    w
}

fn healthy() -> Health {
    Health {
        up_s: 600,
        ver: "0.1.0".into(),
        disk_mb: 4000,
        cache_mb: 10,
        temp_c: Some(50),
        link: LinkKind::G2,
        dbm: None,
        clock_ms: Some(30),
        amp: AmpState::Off,
        playing: None,
        ready: 1,
        plan: Some(3),
        rej: Rejections::default(),
        spk: None,
    }
}

impl World {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn heartbeat(&self, rx: &str, h: Health) {
        let json = String::from_utf8(h.to_json().unwrap()).unwrap();
        q::set_health(&self.store, rx, &json, self.now_ms()).unwrap();
    }

    fn minutes(&self, m: i64) {
        self.clock.advance(Duration::minutes(m));
    }

    fn evaluate(&self) -> Evaluated {
        self.alerts.evaluate(self.clock.now()).unwrap()
    }

    fn open(&self) -> Vec<(AlertKind, Option<String>)> {
        let mut v: Vec<_> =
            self.store.alerts(true, 100, None).unwrap().into_iter().map(|a| (a.kind, a.receiver_id)).collect();
        v.sort();
        v
    }
}

#[test]
fn offline_opens_after_ten_minutes_once_and_resolves_when_back() {
    let w = world();
    assert_eq!(w.evaluate(), Evaluated::default());
    w.minutes(1);
    q::set_online(&w.store, &w.rx_a, false, w.now_ms()).unwrap();
    w.minutes(9);
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate(), Evaluated::default(), "9 minutes offline is not yet an alert");
    w.minutes(2);
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate(), Evaluated { opened: 1, resolved: 0 });
    assert_eq!(w.open(), [(AlertKind::Offline, Some(w.rx_a.clone()))]);
    let alert = &w.store.alerts(true, 10, None).unwrap()[0];
    assert!(alert.detail.starts_with("loa A: offline for 11 min"), "{}", alert.detail);
    assert_eq!((alert.area_id, alert.area_name.as_deref()), (Some(w.village_a), Some("Thôn A")));
    // Stays open, not opened twice.
    w.minutes(5);
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate(), Evaluated::default());
    assert_eq!(w.open().len(), 1);
    // Back online: resolved by itself; the history keeps it.
    q::set_online(&w.store, &w.rx_a, true, w.now_ms()).unwrap();
    assert_eq!(w.evaluate(), Evaluated { opened: 0, resolved: 1 });
    assert!(w.open().is_empty());
    assert_eq!(w.store.alerts(false, 10, None).unwrap().len(), 1);
}

#[test]
fn a_silent_receiver_counts_as_offline() {
    let w = world();
    w.minutes(16);
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate().opened, 1);
    let alert = &w.store.alerts(true, 10, None).unwrap()[0];
    assert_eq!(alert.receiver_id.as_deref(), Some(w.rx_a.as_str()));
    assert!(alert.detail.contains("silent for 16 min"), "{}", alert.detail);
    w.heartbeat(&w.rx_a, healthy());
    assert_eq!(w.evaluate().resolved, 1);
}

#[test]
fn offline_in_quiet_hours_waits_for_broadcast_hours_then_stays() {
    let w = world();
    // 21:00 local, rx_a goes offline; 22:00 local is in the default quiet hours (21:30–05:30).
    w.clock.set(utc("2026-11-23T14:00:00Z"));
    w.heartbeat(&w.rx_b, healthy());
    q::set_online(&w.store, &w.rx_a, false, w.now_ms()).unwrap();
    w.clock.set(utc("2026-11-23T15:00:00Z"));
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate(), Evaluated::default());
    // 05:35 local: broadcast hours, down 8.5 h: opens.
    w.clock.set(utc("2026-11-23T22:35:00Z"));
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate().opened, 1);
    // Into the next quiet hours it stays open (the cause has not gone away).
    w.clock.set(utc("2026-11-24T15:00:00Z"));
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate(), Evaluated::default());
    assert_eq!(w.open(), [(AlertKind::Offline, Some(w.rx_a.clone()))]);
}

#[test]
fn health_faults_open_and_resolve_when_the_heartbeat_is_good_again() {
    let w = world();
    let bad = Health {
        spk: Some(SpeakerState::Short),
        amp: AmpState::Fault,
        disk_mb: 100,
        clock_ms: Some(9_000),
        temp_c: Some(80),
        ..healthy()
    };
    w.heartbeat(&w.rx_b, bad.clone());
    assert_eq!(w.evaluate().opened, 5);
    let rx_b = Some(w.rx_b.clone());
    assert_eq!(
        w.open(),
        [
            (AlertKind::SpeakerFault, rx_b.clone()),
            (AlertKind::AmpFault, rx_b.clone()),
            (AlertKind::DiskFull, rx_b.clone()),
            (AlertKind::ClockOffset, rx_b.clone()),
            (AlertKind::Temperature, rx_b.clone()),
        ]
    );
    w.heartbeat(&w.rx_b, bad);
    assert_eq!(w.evaluate(), Evaluated::default());
    // Cooler but within the hysteresis: the temperature alert stays; the rest are fixed.
    w.heartbeat(&w.rx_b, Health { temp_c: Some(74), ..healthy() });
    assert_eq!(w.evaluate(), Evaluated { opened: 0, resolved: 4 });
    assert_eq!(w.open(), [(AlertKind::Temperature, rx_b)]);
    w.heartbeat(&w.rx_b, healthy());
    assert_eq!(w.evaluate().resolved, 1);
    assert!(w.open().is_empty());
    // A new fault opens a new alert.
    w.heartbeat(&w.rx_b, Health { amp: AmpState::Fault, ..healthy() });
    assert_eq!(w.evaluate().opened, 1);
    assert_eq!(w.store.alerts(false, 100, None).unwrap().len(), 6);
}

#[test]
fn one_alert_per_missed_play_resolved_by_a_late_report_or_an_acknowledgement() {
    let w = world();
    let b = add_bulletin(&w.store, "Giá lúa");
    let now = w.now_ms();
    let p1 = add_play(&w.store, &w.rx_a, &b, now - 30 * 60_000, "missed", Some("no_report: offline?"));
    let p2 = add_play(&w.store, &w.rx_b, &b, now - 30 * 60_000, "missed", Some("not_downloaded"));
    add_play(&w.store, &w.rx_b, &b, now - 20 * 60_000, "played", None);
    add_play(&w.store, &w.rx_b, &b, now - 3 * 24 * 3_600_000, "missed", Some("old"));
    assert_eq!(w.evaluate().opened, 2, "one per recent missed play; the old one is history");
    assert_eq!(w.evaluate(), Evaluated::default());
    let alerts = w.store.alerts(true, 10, None).unwrap();
    let a1 = alerts.iter().find(|a| a.play_id.as_deref() == Some(&p1)).unwrap();
    assert!(a1.detail.contains("«Giá lúa»") && a1.detail.contains("no_report"), "{}", a1.detail);
    assert!(a1.detail.contains("06:30 on Mon 23 Nov 2026"), "{}", a1.detail);
    // The receiver reports later that it did play p1: resolved.
    set_status(&w.store, &p1, "played", None);
    assert_eq!(w.evaluate().resolved, 1);
    // p2 is acknowledged: resolved too, and never reopened.
    let a2 = w.store.alerts(true, 10, None).unwrap().into_iter().find(|a| a.play_id.as_deref() == Some(&p2)).unwrap();
    let acked = w.store.ack_alert(a2.id, "admin", w.now_ms(), None).unwrap();
    assert_eq!((acked.acknowledged_by.as_deref(), acked.resolved_at), (Some("admin"), Some(w.now_ms())));
    assert_eq!(w.evaluate(), Evaluated::default());
    assert!(w.open().is_empty());
}

#[test]
fn acknowledging_a_condition_keeps_it_open_and_scope_hides_other_areas() {
    let w = world();
    w.heartbeat(&w.rx_b, Health { amp: AmpState::Fault, ..healthy() });
    w.evaluate();
    let id = w.store.alerts(true, 10, None).unwrap()[0].id;
    w.minutes(1);
    let acked = w.store.ack_alert(id, "Nguyễn Văn A", w.now_ms(), None).unwrap();
    assert_eq!(acked.acknowledged_by.as_deref(), Some("Nguyễn Văn A"));
    assert_eq!(acked.resolved_at, None);
    w.minutes(1);
    let again = w.store.ack_alert(id, "someone else", w.now_ms(), None).unwrap();
    assert_eq!((again.acknowledged_by, again.acknowledged_at), (acked.acknowledged_by, acked.acknowledged_at));
    // Scoped to village A, village B's alert does not exist.
    assert!(w.store.alerts(false, 10, Some(w.village_a)).unwrap().is_empty());
    assert_eq!(w.store.alerts(false, 10, Some(w.village_b)).unwrap().len(), 1);
    assert!(matches!(w.store.ack_alert(id, "x", 0, Some(w.village_a)), Err(StoreError::NotFound { .. })));
    let counts = w.store.open_alert_counts(Some(w.village_b)).unwrap();
    assert_eq!(counts.iter().find(|(k, _)| *k == AlertKind::AmpFault).unwrap().1, 1);
    assert_eq!(counts.len(), AlertKind::ALL.len());
}

#[test]
fn thresholds_come_from_the_alerts_section_of_the_config() {
    use crate::config::ControllerConfig;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[alerts]\noffline_after_ms = 300000\ntemperature_max_c = 70\n").unwrap();
    let c = ControllerConfig::load(Some(&file), vec![], vec![]).unwrap();
    assert_eq!((c.alerts.offline_after_ms, c.alerts.temperature_max_c), (300_000, 70));
    assert_eq!(c.alerts.clock_offset_max_ms, AlertSettings::default().clock_offset_max_ms);
    assert_eq!(ControllerConfig::default().alerts, AlertSettings::default());
    std::fs::write(&file, "[alerts]\nevaluate_interval_ms = 5\n").unwrap();
    let e = ControllerConfig::load(Some(&file), vec![], vec![]).unwrap_err();
    assert!(e.to_string().contains("alerts.evaluate_interval_ms"), "{e}");
    std::fs::write(&file, "[alerts]\ndisk_percent = 90\n").unwrap();
    let e = ControllerConfig::load(Some(&file), vec![], vec![]).unwrap_err();
    assert!(e.to_string().contains("disk_percent"), "{e}");
}
