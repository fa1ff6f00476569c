//! Link profiles: how an emulated link behaves ([`LinkProfile`]: rate each way, one-way delay and jitter, loss,
//! optional random outages and disconnects), the named profiles of the issue (`ethernet`, `wifi`, `4g`, `3g`,
//! `edge`, `gprs`) and fleet mixes such as `3g:50,edge:30,gprs:20` ([`FleetMix`]).
//!
//! The issue gives one rate and a round-trip time per cellular profile; the downlink is that rate, the uplink a
//! realistic fraction of it, and the one-way delay half the round trip.

use serde::{Deserialize, Serialize};

/// Why a profile or mix cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not one of the named profiles.
    #[error("unknown link profile {0:?}: use one of ethernet, wifi, 4g, 3g, edge, gprs")]
    Unknown(String),
    /// A mix entry is not `NAME:PERCENT`, or the percentages do not add up to 100.
    #[error("bad profile mix {0:?}: write e.g. 3g:50,edge:30,gprs:20 (percentages adding up to 100)")]
    BadMix(String),
}

/// Random link failures: outages (a black hole: nothing moves) and hard disconnects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutageSchedule {
    /// Mean time between failures (exponentially distributed), ms.
    pub mean_interval_ms: u64,
    /// Shortest outage, ms.
    pub min_duration_ms: u64,
    /// Longest outage, ms (the length is uniform between the two).
    pub max_duration_ms: u64,
    /// Share of failures that are a hard disconnect instead of an outage, percent.
    pub disconnect_percent: f64,
}

impl Default for OutageSchedule {
    fn default() -> Self {
        OutageSchedule {
            mean_interval_ms: 600_000,
            min_duration_ms: 5_000,
            max_duration_ms: 60_000,
            disconnect_percent: 20.0,
        }
    }
}

/// How one emulated link behaves. Rates count IP packets (payload plus 40 bytes of IP and TCP headers per
/// ~1460-byte segment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkProfile {
    /// Profile name (for tables and status lines).
    pub name: String,
    /// Controller → receiver rate, kbit/s.
    pub rate_down_kbps: u32,
    /// Receiver → controller rate, kbit/s.
    pub rate_up_kbps: u32,
    /// One-way delay, ms (half the round trip).
    pub delay_ms: u32,
    /// Extra one-way delay, uniform in 0..=jitter_ms (order is kept, as TCP does).
    pub jitter_ms: u32,
    /// Probability that a segment is lost, percent; a loss is repaired about one round trip later, as TCP's fast
    /// retransmit does (a lost resend waits for the retransmission timeout).
    pub loss_percent: f64,
    /// Random outages and disconnects, if any.
    pub outages: Option<OutageSchedule>,
}

impl Default for LinkProfile {
    fn default() -> Self {
        LinkProfile::named("ethernet").unwrap_or_else(|_| LinkProfile {
            name: "ethernet".into(),
            rate_down_kbps: 100_000,
            rate_up_kbps: 100_000,
            delay_ms: 1,
            jitter_ms: 0,
            loss_percent: 0.0,
            outages: None,
        })
    }
}

/// The named profiles: (name, down kbit/s, up kbit/s, one-way delay ms, jitter ms, loss %).
pub const NAMED: &[(&str, u32, u32, u32, u32, f64)] = &[
    ("ethernet", 100_000, 100_000, 1, 0, 0.0),
    ("wifi", 20_000, 10_000, 5, 5, 0.2),
    ("4g", 10_000, 3_000, 30, 10, 0.1),
    ("3g", 384, 128, 75, 15, 1.0),
    ("edge", 200, 100, 150, 30, 2.0),
    ("gprs", 48, 24, 300, 60, 3.0),
];

impl LinkProfile {
    /// One of the named profiles (`ethernet`, `wifi`, `4g`, `3g`, `edge`, `gprs`), case-insensitive.
    pub fn named(name: &str) -> Result<LinkProfile, ProfileError> {
        let lower = name.trim().to_ascii_lowercase();
        let (n, down, up, delay, jitter, loss) =
            NAMED.iter().find(|p| p.0 == lower).copied().ok_or_else(|| ProfileError::Unknown(name.to_string()))?;
        Ok(LinkProfile {
            name: n.to_string(),
            rate_down_kbps: down,
            rate_up_kbps: up,
            delay_ms: delay,
            jitter_ms: jitter,
            loss_percent: loss,
            outages: None,
        })
    }

    /// The same profile with random outages and disconnects.
    pub fn with_outages(mut self, outages: OutageSchedule) -> LinkProfile {
        self.outages = Some(outages);
        self
    }

    /// Round-trip time without jitter, ms.
    pub fn rtt_ms(&self) -> u64 {
        2 * u64::from(self.delay_ms)
    }

    /// The retransmission timeout a lost resend waits: max(200 ms, 2 × RTT).
    pub fn rto_ms(&self) -> u64 {
        (2 * self.rtt_ms()).max(200)
    }
}

/// A fleet's profiles by share, e.g. `3g:50,edge:30,gprs:20`; a single name means 100 %.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetMix {
    /// Profiles and their percentages (adding up to 100).
    pub parts: Vec<(LinkProfile, u32)>,
}

/// Parses `3g` or `3g:50,edge:30,gprs:20`.
pub fn parse(spec: &str) -> Result<FleetMix, ProfileError> {
    let bad = || ProfileError::BadMix(spec.to_string());
    let mut parts = Vec::new();
    let entries: Vec<&str> = spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if entries.is_empty() {
        return Err(bad());
    }
    for entry in &entries {
        match entry.split_once(':') {
            Some((name, pct)) => {
                let pct: u32 = pct.trim().parse().map_err(|_| bad())?;
                parts.push((LinkProfile::named(name)?, pct));
            }
            None if entries.len() == 1 => parts.push((LinkProfile::named(entry)?, 100)),
            None => return Err(bad()),
        }
    }
    if parts.iter().map(|p| p.1).sum::<u32>() != 100 {
        return Err(bad());
    }
    Ok(FleetMix { parts })
}

impl FleetMix {
    /// Profiles for `n` receivers in these shares (largest remainder, in the order written): e.g. 4 receivers of
    /// `4g:50,3g:25,edge:25` get 4g, 4g, 3g, edge.
    pub fn assign(&self, n: usize) -> Vec<LinkProfile> {
        let exact: Vec<f64> = self.parts.iter().map(|(_, p)| n as f64 * f64::from(*p) / 100.0).collect();
        let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut left = n.saturating_sub(counts.iter().sum());
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| {
            let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        for i in order {
            if left == 0 {
                break;
            }
            counts[i] += 1;
            left -= 1;
        }
        let mut out = Vec::with_capacity(n);
        for ((profile, _), count) in self.parts.iter().zip(counts) {
            out.extend(std::iter::repeat_n(profile.clone(), count));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles_match_the_issue() {
        let g = LinkProfile::named("GPRS").unwrap();
        assert_eq!((g.rate_down_kbps, g.rtt_ms(), g.loss_percent), (48, 600, 3.0));
        assert_eq!(g.rto_ms(), 1200);
        let t = LinkProfile::named("3g").unwrap();
        assert_eq!((t.rate_down_kbps, t.rtt_ms(), t.loss_percent), (384, 150, 1.0));
        let e = LinkProfile::named("edge").unwrap();
        assert_eq!((e.rate_down_kbps, e.rtt_ms(), e.loss_percent), (200, 300, 2.0));
        assert_eq!(LinkProfile::named("ethernet").unwrap().rto_ms(), 200);
        assert!(matches!(LinkProfile::named("5g"), Err(ProfileError::Unknown(_))));
    }

    #[test]
    fn mixes_parse_and_assign() {
        let m = parse("3g").unwrap();
        assert_eq!(m.assign(3).iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["3g", "3g", "3g"]);
        let m = parse("4g:50, 3g:25,edge:25").unwrap();
        let names: Vec<String> = m.assign(4).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["4g", "4g", "3g", "edge"]);
        let m = parse("3g:50,edge:30,gprs:20").unwrap();
        let names: Vec<String> = m.assign(10).into_iter().map(|p| p.name).collect();
        assert_eq!(names.iter().filter(|n| *n == "edge").count(), 3);
        assert_eq!(m.assign(7).len(), 7);
        assert_eq!(m.assign(0).len(), 0);
        for bad in ["", "3g:50", "3g:50,gprs", "3g:x,gprs:50", "3g:50,wire:50"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profiles_round_trip_through_toml() {
        let p = LinkProfile::named("edge").unwrap().with_outages(OutageSchedule::default());
        let text = toml::to_string(&p).unwrap();
        let back: LinkProfile = toml::from_str(&text).unwrap();
        assert_eq!(back, p);
    }
}
