//! Schedule rules and their expansion into instants. A rule is one of `{"at": "2026-11-24T06:00"}` (local wall
//! time in the schedule's zone, or RFC 3339 with an offset), `{"daily": ["06:00", "17:00"]}`,
//! `{"weekly": {"days": ["mon", "thu"], "times": ["06:00"]}}` or `{"cron": "0 6 * * 1-5"}` (standard five
//! fields, wall time). [`Compiled::occurrences`] lists the instants in a window `[from, until)`, sorted, unique.
//! Wall times that do not exist in the zone (a DST gap) are skipped; ambiguous ones take the earlier instant.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::store::areas::parse_hhmm;
use crate::store::StoreError;

/// Most instants one expansion returns.
pub const MAX_OCCURRENCES: usize = 5000;
/// Most times of day in a daily or weekly rule.
pub const MAX_TIMES: usize = 48;

/// A rule as written in a request and stored (JSON, externally tagged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Rule {
    /// Once.
    At(String),
    /// Every day at these local times.
    Daily(Vec<String>),
    /// On these weekdays at these local times.
    Weekly(Weekly),
    /// A standard five-field cron expression, local time.
    Cron(String),
}

/// The weekly rule's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    /// "mon".."sun".
    pub days: Vec<String>,
    /// "HH:MM" local.
    pub times: Vec<String>,
}

/// A rule checked and ready to expand.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// Once, at this instant.
    At(DateTime<Utc>),
    /// At `times` on `days` (every day when `None`).
    Times {
        /// Weekdays, or every day.
        days: Option<Vec<Weekday>>,
        /// Local times of day, sorted.
        times: Vec<NaiveTime>,
    },
    /// Cron.
    Cron(Box<croner::Cron>),
}

/// Parses an instant: RFC 3339 with an offset, or a local wall time `YYYY-MM-DDTHH:MM[:SS]` in `tz`.
pub fn parse_instant(s: &str, tz: Tz) -> Result<DateTime<Utc>, StoreError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return local_to_utc(naive, tz)
                .ok_or_else(|| StoreError::invalid(format!("{s} does not exist in the time zone {tz}")));
        }
    }
    Err(StoreError::invalid(format!(
        "\"{s}\" is not a date and time; write it like 2026-11-24T06:00 (local) or 2026-11-24T06:00:00+07:00"
    )))
}

/// Parses a validity bound: an instant as [`parse_instant`], or a date `YYYY-MM-DD` meaning the start of that
/// day (or, with `end_of_day`, the start of the next day).
pub fn parse_bound(s: &str, tz: Tz, end_of_day: bool) -> Result<DateTime<Utc>, StoreError> {
    if let Ok(date) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        let date = if end_of_day { date.checked_add_days(Days::new(1)).unwrap_or(date) } else { date };
        return local_to_utc(date.and_time(NaiveTime::MIN), tz)
            .ok_or_else(|| StoreError::invalid(format!("{s} does not exist in the time zone {tz}")));
    }
    parse_instant(s, tz)
}

/// The earlier instant of a local wall time, or `None` in a DST gap.
pub fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&naive).earliest().map(|t| t.with_timezone(&Utc))
}

fn parse_times(times: &[String]) -> Result<Vec<NaiveTime>, StoreError> {
    if times.is_empty() {
        return Err(StoreError::invalid("give at least one time of day, e.g. [\"06:00\"]"));
    }
    if times.len() > MAX_TIMES {
        return Err(StoreError::invalid(format!("at most {MAX_TIMES} times a day")));
    }
    let mut out = times.iter().map(|t| parse_hhmm(t)).collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

impl Rule {
    /// Checks the rule and prepares it for expansion in `tz`.
    pub fn compile(&self, tz: Tz) -> Result<Compiled, StoreError> {
        match self {
            Rule::At(s) => Ok(Compiled::At(parse_instant(s, tz)?)),
            Rule::Daily(times) => Ok(Compiled::Times { days: None, times: parse_times(times)? }),
            Rule::Weekly(w) => {
                if w.days.is_empty() {
                    return Err(StoreError::invalid("give at least one weekday, e.g. [\"mon\", \"thu\"]"));
                }
                let mut days = w
                    .days
                    .iter()
                    .map(|d| {
                        Weekday::from_str(d.trim()).map_err(|_| {
                            StoreError::invalid(format!(
                                "\"{d}\" is not a weekday; use mon, tue, wed, thu, fri, sat, sun"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                days.sort_by_key(|d| d.num_days_from_monday());
                days.dedup();
                Ok(Compiled::Times { days: Some(days), times: parse_times(&w.times)? })
            }
            Rule::Cron(expr) => {
                let fields = expr.split_whitespace().count();
                if fields != 5 {
                    return Err(StoreError::invalid(format!(
                        "the cron expression \"{expr}\" has {fields} fields; write the standard five: \
                         minute hour day-of-month month day-of-week, e.g. \"0 6 * * 1-5\""
                    )));
                }
                // An empty list item ("0 , * * *") parses as "never" and would be searched for every hour.
                if expr.split_whitespace().any(|f| f.split(',').any(str::is_empty)) {
                    return Err(StoreError::invalid(format!(
                        "the cron expression \"{expr}\" has an empty item in a list (two commas, or a comma at an end)"
                    )));
                }
                let cron = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Disallowed)
                    .build()
                    .parse(expr)
                    .map_err(|e| StoreError::invalid(format!("the cron expression \"{expr}\" is not valid ({e})")))?;
                // A date that never comes (31 February) is refused rather than searched for every hour.
                let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default().with_timezone(&tz);
                let first = cron.iter_from(start, croner::Direction::Forward).next();
                if first.is_none_or(|t| t > start + chrono::Duration::days(5 * 366)) {
                    return Err(StoreError::invalid(format!("the cron expression \"{expr}\" never happens")));
                }
                Ok(Compiled::Cron(Box::new(cron)))
            }
        }
    }
}

impl Compiled {
    /// The instants in `[from, until)`, sorted and unique (at most [`MAX_OCCURRENCES`]).
    pub fn occurrences(&self, tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if from >= until {
            return Vec::new();
        }
        let mut out = match self {
            Compiled::At(t) => vec![*t],
            Compiled::Times { days, times } => {
                let mut out = Vec::new();
                let first = from.with_timezone(&tz).date_naive().pred_opt().unwrap_or(NaiveDate::MIN);
                let last = until.with_timezone(&tz).date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
                let mut date = first;
                while date <= last && out.len() <= MAX_OCCURRENCES {
                    if days.as_ref().is_none_or(|d| d.contains(&date.weekday())) {
                        out.extend(times.iter().filter_map(|t| local_to_utc(date.and_time(*t), tz)));
                    }
                    match date.succ_opt() {
                        Some(next) => date = next,
                        None => break,
                    }
                }
                out
            }
            Compiled::Cron(cron) => cron
                .iter_from(from.with_timezone(&tz), croner::Direction::Forward)
                .map(|t| t.with_timezone(&Utc))
                .take_while(|t| *t < until)
                .take(MAX_OCCURRENCES)
                .collect(),
        };
        out.retain(|t| from <= *t && *t < until);
        out.sort();
        out.dedup();
        out.truncate(MAX_OCCURRENCES);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;
    use proptest::prelude::*;

    const HCM: Tz = chrono_tz::Asia::Ho_Chi_Minh;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn at_reads_local_and_offset_times() {
        let local = parse_instant("2026-11-24T06:00", HCM).unwrap();
        assert_eq!(local, utc("2026-11-23T23:00:00Z"));
        assert_eq!(parse_instant("2026-11-24T06:00:00+07:00", HCM).unwrap(), local);
        assert!(parse_instant("tomorrow", HCM).is_err());
        assert_eq!(parse_bound("2026-11-24", HCM, true).unwrap(), utc("2026-11-24T17:00:00Z"));
    }

    #[test]
    fn daily_weekly_and_cron_expand_in_local_time() {
        let from = utc("2026-11-23T00:00:00Z"); // Monday 07:00 local
        let until = from + chrono::Duration::hours(72);
        let daily = rule(r#"{"daily": ["17:00", "06:00"]}"#).compile(HCM).unwrap();
        let got = daily.occurrences(HCM, from, until);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], utc("2026-11-23T10:00:00Z")); // Mon 17:00 local
        let weekly = rule(r#"{"weekly": {"days": ["tue", "thu"], "times": ["06:00"]}}"#).compile(HCM).unwrap();
        assert_eq!(
            weekly.occurrences(HCM, from, until),
            vec![utc("2026-11-23T23:00:00Z"), utc("2026-11-25T23:00:00Z")]
        );
        let cron = rule(r#"{"cron": "0 6 * * 1-5"}"#).compile(HCM).unwrap();
        assert_eq!(
            cron.occurrences(HCM, from, until),
            vec![utc("2026-11-23T23:00:00Z"), utc("2026-11-24T23:00:00Z"), utc("2026-11-25T23:00:00Z")]
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (json, needle) in [
            (r#"{"daily": []}"#, "at least one time"),
            (r#"{"daily": ["6am"]}"#, "HH:MM"),
            (r#"{"weekly": {"days": ["someday"], "times": ["06:00"]}}"#, "not a weekday"),
            (r#"{"cron": "0 0 6 * * 1"}"#, "6 fields"),
            (r#"{"cron": "99 6 * * *"}"#, "not valid"),
            // Found by the schedule_rule fuzz target: each searched ~0.3 s for nothing, every hour.
            (r#"{"cron": "*/09 , * * *"}"#, "empty item"),
            (r#"{"cron": "0 , * * *"}"#, "empty item"),
            (r#"{"cron": "0 0 31 2 *"}"#, "never happens"),
        ] {
            let err = rule(json).compile(HCM).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
        assert!(serde_json::from_str::<Rule>(r#"{"hourly": 1}"#).is_err());
    }

    fn any_rule() -> impl Strategy<Value = Rule> {
        let hhmm = (0u32..24, 0u32..60).prop_map(|(h, m)| format!("{h:02}:{m:02}"));
        let day = prop::sample::select(vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        prop_oneof![
            prop::collection::vec(hhmm.clone(), 1..5).prop_map(Rule::Daily),
            (prop::collection::vec(day, 1..4), prop::collection::vec(hhmm, 1..4)).prop_map(|(d, t)| Rule::Weekly(
                Weekly { days: d.into_iter().map(str::to_string).collect(), times: t }
            )),
            (0u32..60, 0u32..24, prop::sample::select(vec!["*", "1-5", "0,6", "3"]))
                .prop_map(|(m, h, dow)| Rule::Cron(format!("{m} {h} * * {dow}"))),
            (0i64..40 * 24 * 60).prop_map(|min| Rule::At(
                (NaiveDate::from_ymd_opt(2026, 11, 1).unwrap().and_time(NaiveTime::MIN)
                    + chrono::Duration::minutes(min))
                .format("%Y-%m-%dT%H:%M")
                .to_string()
            )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn expansion_stays_in_the_window_sorted_and_unique(
            r in any_rule(),
            start_min in 0i64..30 * 24 * 60,
            len_min in 0i64..10 * 24 * 60,
        ) {
            let from = utc("2026-11-01T00:00:00Z") + chrono::Duration::minutes(start_min);
            let until = from + chrono::Duration::minutes(len_min);
            let got = r.compile(HCM).unwrap().occurrences(HCM, from, until);
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(got.iter().all(|t| from <= *t && *t < until));
        }

        #[test]
        fn daily_yields_its_wall_times_every_day(h in 0u32..24, m in 0u32..60, days in 1i64..20) {
            let from = utc("2026-11-01T00:00:00Z");
            let until = from + chrono::Duration::days(days);
            let got = Rule::Daily(vec![format!("{h:02}:{m:02}")]).compile(HCM).unwrap().occurrences(HCM, from, until);
            prop_assert!(got.len() as i64 >= days - 1 && got.len() as i64 <= days + 1);
            for t in &got {
                let local = t.with_timezone(&HCM);
                prop_assert_eq!((local.hour(), local.minute(), local.second()), (h, m, 0));
            }
        }

        #[test]
        fn weekly_keeps_to_its_days(r in any_rule()) {
            if let Rule::Weekly(w) = &r {
                let from = utc("2026-11-01T00:00:00Z");
                let got = r.compile(HCM).unwrap().occurrences(HCM, from, from + chrono::Duration::days(21));
                let days: Vec<Weekday> = w.days.iter().map(|d| Weekday::from_str(d).unwrap()).collect();
                prop_assert!(got.iter().all(|t| days.contains(&t.with_timezone(&HCM).weekday())));
                prop_assert!(got.len() >= 3 * days.iter().map(|d| d.num_days_from_monday()).collect::<std::collections::BTreeSet<_>>().len());
            }
        }
    }
}
