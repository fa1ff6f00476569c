//! Fuzzes the schedule parsers an official's request reaches: the JSON of a rule and of a whole schedule
//! request, cron expressions, wall times and validity bounds, then expands what compiles over a window.
//! Any input must give instants or a typed error (never a panic), and expansions stay sorted, unique, in the
//! window and within `MAX_OCCURRENCES`.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use loa_controller::schedule::rule::{parse_bound, parse_instant, Rule, MAX_OCCURRENCES};
use loa_controller::schedule::ScheduleRequest;

const ZONES: [chrono_tz::Tz; 4] =
    [chrono_tz::Asia::Ho_Chi_Minh, chrono_tz::UTC, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe];

fn expand(rule: &Rule, tz: chrono_tz::Tz, from: DateTime<Utc>, days: i64) {
    let Ok(compiled) = rule.compile(tz) else { return };
    let until = from + Duration::days(days);
    let out = compiled.occurrences(tz, from, until);
    assert!(out.len() <= MAX_OCCURRENCES);
    assert!(out.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert!(out.iter().all(|t| *t >= from && *t < until), "inside the window");
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let tz = ZONES[usize::from(head & 3)];
    // Windows around 1970, today and far out; 1..=64 days long.
    let base = [0i64, 1_800_000_000, 4_000_000_000, 253_000_000_000][usize::from(head >> 2 & 3)];
    let from = DateTime::from_timestamp(base, 0).unwrap_or_default();
    let days = i64::from(head >> 4) * 4 + 1;
    let Ok(text) = std::str::from_utf8(rest) else {
        let _ = serde_json::from_slice::<Rule>(rest);
        let _ = serde_json::from_slice::<ScheduleRequest>(rest);
        return;
    };
    let _ = parse_instant(text, tz);
    let _ = parse_bound(text, tz, head & 0x80 != 0);
    expand(&Rule::Cron(text.to_string()), tz, from, days);
    expand(&Rule::At(text.to_string()), tz, from, days);
    expand(&Rule::Daily(text.split(',').map(str::to_string).collect()), tz, from, days);
    if let Ok(rule) = serde_json::from_str::<Rule>(text) {
        expand(&rule, tz, from, days);
    }
    let _ = serde_json::from_str::<ScheduleRequest>(text);
});
