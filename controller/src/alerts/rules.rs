//! The alert rules as pure functions of one receiver's state, the time and the settings, so each can be tested
//! with a fake clock. A rule returns a [`Condition`] while its cause lasts; `opens` says whether the cause is bad
//! enough to open a new alert now (an open alert stays open while the condition holds at all, which gives
//! hysteresis where it matters, e.g. temperature, and keeps an offline alert open through the quiet hours).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use loa_protocol::{AmpState, Health, SpeakerState};

use super::AlertSettings;
use crate::store::alerts::AlertKind;
use crate::store::areas::AreaSettings;

/// A cause for an alert, holding now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Which rule.
    pub kind: AlertKind,
    /// What is wrong, for people.
    pub detail: String,
    /// Bad enough to open an alert now (else it only keeps an open one open).
    pub opens: bool,
}

/// What the rules know about one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// Connected, as far as the controller knows.
    pub online: bool,
    /// Last heard from, UTC ms.
    pub last_seen: Option<i64>,
    /// Registered, UTC ms (stands in for `last_seen` of a receiver never heard from).
    pub created_at: i64,
    /// Last heartbeat, if any could be read.
    pub health: Option<&'a Health>,
}

/// Whether `now` falls in the area's broadcast hours (outside its quiet hours), in time zone `tz`.
pub fn broadcast_hours(now: DateTime<Utc>, tz: Tz, area: &AreaSettings) -> bool {
    !area.is_quiet(now.with_timezone(&tz).time())
}

fn minutes(ms: i64) -> i64 {
    ms / 60_000
}

/// Offline (or silent: connected but heard from not for `silent_after_ms`) for more than `offline_after_ms`;
/// opens only in broadcast hours.
pub fn offline(facts: &Facts<'_>, now_ms: i64, in_broadcast_hours: bool, s: &AlertSettings) -> Option<Condition> {
    let since = facts.last_seen.unwrap_or(facts.created_at);
    let silent = now_ms - since;
    let down = !facts.online || silent > s.silent_after_ms;
    if !down || silent <= s.offline_after_ms {
        return None;
    }
    let detail = match (facts.last_seen, facts.online) {
        (None, _) => format!("never connected since it was registered {} min ago", minutes(silent)),
        (Some(_), false) => format!("offline for {} min", minutes(silent)),
        (Some(_), true) => format!("connected but silent for {} min (no heartbeat)", minutes(silent)),
    };
    Some(Condition { kind: AlertKind::Offline, detail, opens: in_broadcast_hours })
}

/// The loudspeaker line is open (cut cable, blown horn) or shorted.
pub fn speaker(health: &Health) -> Option<Condition> {
    let what = match health.spk? {
        SpeakerState::Open => "the loudspeaker line is open (cut cable or blown horn)",
        SpeakerState::Short => "the loudspeaker line is shorted",
        SpeakerState::Ok | SpeakerState::Unknown => return None,
    };
    Some(Condition { kind: AlertKind::SpeakerFault, detail: what.into(), opens: true })
}

/// The amplifier reports a fault.
pub fn amplifier(health: &Health) -> Option<Condition> {
    (health.amp == AmpState::Fault).then(|| Condition {
        kind: AlertKind::AmpFault,
        detail: "the amplifier reports a fault (overheat, short or no load)".into(),
        opens: true,
    })
}

/// Free disk below `disk_free_min_mb`.
pub fn disk(health: &Health, s: &AlertSettings) -> Option<Condition> {
    (u64::from(health.disk_mb) < s.disk_free_min_mb).then(|| Condition {
        kind: AlertKind::DiskFull,
        detail: format!("only {} MiB of disk free (alert below {} MiB)", health.disk_mb, s.disk_free_min_mb),
        opens: true,
    })
}

/// Clock more than `clock_offset_max_ms` off the controller's.
pub fn clock(health: &Health, s: &AlertSettings) -> Option<Condition> {
    let off = i64::from(health.clock_ms?);
    (off.abs() > s.clock_offset_max_ms).then(|| Condition {
        kind: AlertKind::ClockOffset,
        detail: format!(
            "its clock is {:.1} s {} the controller's (alert above {:.1} s)",
            off.abs() as f64 / 1000.0,
            if off > 0 { "ahead of" } else { "behind" },
            s.clock_offset_max_ms as f64 / 1000.0
        ),
        opens: true,
    })
}

/// Hotter than `temperature_max_c`; stays until `temperature_hysteresis_c` below it.
pub fn temperature(health: &Health, s: &AlertSettings) -> Option<Condition> {
    let t = i64::from(health.temp_c?);
    (t > s.temperature_max_c - s.temperature_hysteresis_c).then(|| Condition {
        kind: AlertKind::Temperature,
        detail: format!("it runs at {t} °C (alert above {} °C)", s.temperature_max_c),
        opens: t > s.temperature_max_c,
    })
}

/// Every condition holding for one receiver now.
pub fn conditions(facts: &Facts<'_>, now_ms: i64, in_broadcast_hours: bool, s: &AlertSettings) -> Vec<Condition> {
    let mut out: Vec<Condition> = offline(facts, now_ms, in_broadcast_hours, s).into_iter().collect();
    if let Some(h) = facts.health {
        out.extend([speaker(h), amplifier(h), disk(h, s), clock(h, s), temperature(h, s)].into_iter().flatten());
    }
    out
}

#[cfg(test)]
mod tests {
    use loa_protocol::{LinkKind, Rejections};

    use super::*;

    const MIN: i64 = 60_000;

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

    fn facts(online: bool, last_seen: Option<i64>, health: Option<&Health>) -> Facts<'_> {
        Facts { online, last_seen, created_at: 0, health }
    }

    fn kinds(c: &[Condition]) -> Vec<AlertKind> {
        c.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn offline_after_ten_minutes_opens_only_in_broadcast_hours() {
        let s = AlertSettings::default();
        let now = 100 * MIN;
        // Connected and heard from recently: nothing.
        assert!(offline(&facts(true, Some(now - MIN), None), now, true, &s).is_none());
        // Offline for 9 minutes: not yet.
        assert!(offline(&facts(false, Some(now - 9 * MIN), None), now, true, &s).is_none());
        // 11 minutes: opens in broadcast hours, holds (without opening) in quiet hours.
        let c = offline(&facts(false, Some(now - 11 * MIN), None), now, true, &s).unwrap();
        assert!(c.opens && c.detail.contains("11 min"), "{c:?}");
        let c = offline(&facts(false, Some(now - 11 * MIN), None), now, false, &s).unwrap();
        assert!(!c.opens);
        // Connected but silent past silent_after_ms: down all the same.
        let c = offline(&facts(true, Some(now - 20 * MIN), None), now, true, &s).unwrap();
        assert!(c.opens && c.detail.contains("silent"));
        // Never connected: counted from registration.
        let c = offline(&facts(false, None, None), now, true, &s).unwrap();
        assert!(c.detail.contains("never connected"));
    }

    #[test]
    fn faults_disk_clock_and_temperature() {
        let s = AlertSettings::default();
        let ok = healthy();
        assert!(conditions(&facts(true, Some(0), Some(&ok)), MIN, true, &s).is_empty());
        let bad = Health {
            spk: Some(SpeakerState::Open),
            amp: AmpState::Fault,
            disk_mb: 100,
            clock_ms: Some(-7_200),
            temp_c: Some(80),
            ..ok.clone()
        };
        let c = conditions(&facts(true, Some(0), Some(&bad)), MIN, true, &s);
        assert_eq!(
            kinds(&c),
            [
                AlertKind::SpeakerFault,
                AlertKind::AmpFault,
                AlertKind::DiskFull,
                AlertKind::ClockOffset,
                AlertKind::Temperature
            ]
        );
        assert!(c.iter().all(|c| c.opens));
        assert!(c[3].detail.contains("7.2 s behind"), "{}", c[3].detail);
        assert!(speaker(&Health { spk: Some(SpeakerState::Short), ..ok.clone() }).unwrap().detail.contains("shorted"));
        assert!(speaker(&Health { spk: Some(SpeakerState::Unknown), ..ok.clone() }).is_none());
        // Exactly at the thresholds: no alert (the rules say "more than").
        let edge = Health { clock_ms: Some(5_000), temp_c: Some(75), disk_mb: 512, ..ok.clone() };
        assert!(conditions(&facts(true, Some(0), Some(&edge)), MIN, true, &s).iter().all(|c| !c.opens));
        // Unknown values (no sensor) never alert.
        let blind = Health { clock_ms: None, temp_c: None, ..ok };
        assert!(conditions(&facts(true, Some(0), Some(&blind)), MIN, true, &s).is_empty());
    }

    #[test]
    fn temperature_has_hysteresis() {
        let s = AlertSettings::default();
        let at = |t: i8| temperature(&Health { temp_c: Some(t), ..healthy() }, &s);
        assert!(at(76).unwrap().opens);
        assert!(!at(75).unwrap().opens); // keeps an open alert open...
        assert!(!at(73).unwrap().opens);
        assert!(at(72).is_none()); // ...until 3 °C below the threshold
    }

    #[test]
    fn broadcast_hours_follow_the_quiet_hours_in_local_time() {
        let area = AreaSettings {
            id: 1,
            name: "Thôn 1".into(),
            languages: vec!["vi".into()],
            quiet_start: chrono::NaiveTime::from_hms_opt(21, 30, 0).unwrap(),
            quiet_end: chrono::NaiveTime::from_hms_opt(5, 30, 0).unwrap(),
        };
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(broadcast_hours(utc("2026-11-23T00:00:00Z"), tz, &area)); // 07:00 local
        assert!(!broadcast_hours(utc("2026-11-23T15:00:00Z"), tz, &area)); // 22:00 local
        assert!(!broadcast_hours(utc("2026-11-22T22:29:00Z"), tz, &area)); // 05:29 local
        assert!(broadcast_hours(utc("2026-11-22T22:30:00Z"), tz, &area)); // 05:30 local
    }
}
