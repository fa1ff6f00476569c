//! What a simulated device is like besides its config: its link ([`LinkProfile`]), its clock ([`ClockFault`]: a
//! Pi without a battery-backed clock boots in 1970 or with its clock an hour off) and whether its power fails
//! ([`PowerCuts`]: the receiver stops dead at a random moment and starts again later with the same disk).

use std::sync::Arc;

use loa_receiver::clock::{Clock, SimClock, SystemClock};

use crate::link::LinkProfile;

/// How a device's clock is wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockFault {
    /// The system clock.
    #[default]
    Correct,
    /// No RTC and no network time yet: the clock starts at 1970-01-01 00:00 UTC and runs from there.
    Epoch1970,
    /// Off by this many ms (positive: ahead).
    OffsetMs(i64),
}

/// Why a clock fault does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad clock fault {0:?}: use ok, 1970, +1h, -1h or an offset in ms such as -90000")]
pub struct ClockFaultError(pub String);

impl std::str::FromStr for ClockFault {
    type Err = ClockFaultError;

    /// `ok`, `1970`, `+1h`, `-1h`, or milliseconds (`-90000`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "ok" | "correct" => Ok(ClockFault::Correct),
            "1970" | "epoch" => Ok(ClockFault::Epoch1970),
            "+1h" | "1h" => Ok(ClockFault::OffsetMs(3_600_000)),
            "-1h" => Ok(ClockFault::OffsetMs(-3_600_000)),
            other => other.parse::<i64>().map(ClockFault::OffsetMs).map_err(|_| ClockFaultError(s.to_string())),
        }
    }
}

impl ClockFault {
    /// The clock for a device with this fault (a [`SimClock`], so a test may move it later).
    pub fn clock(&self) -> Arc<SimClock> {
        let offset = match self {
            ClockFault::Correct => 0,
            ClockFault::OffsetMs(ms) => *ms,
            ClockFault::Epoch1970 => -SystemClock.now().unix_ms(),
        };
        Arc::new(SimClock::with_offset_ms(offset))
    }
}

/// Random power cuts: exponentially distributed time between cuts, power back after a uniform delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCuts {
    /// Mean time between cuts (while powered), ms.
    pub mean_interval_ms: u64,
    /// Shortest time without power, ms.
    pub min_off_ms: u64,
    /// Longest time without power, ms.
    pub max_off_ms: u64,
}

impl Default for PowerCuts {
    fn default() -> Self {
        PowerCuts { mean_interval_ms: 3_600_000, min_off_ms: 5_000, max_off_ms: 120_000 }
    }
}

/// A simulated device's link and faults. The default is a perfect device on a direct connection.
#[derive(Debug, Clone, Default)]
pub struct SimDevice {
    /// The emulated link in front of the broker; `None` connects directly.
    pub link: Option<LinkProfile>,
    /// The clock.
    pub clock: ClockFault,
    /// Random power cuts, if any.
    pub power_cuts: Option<PowerCuts>,
}

impl SimDevice {
    /// A device behind `profile`.
    pub fn behind(profile: LinkProfile) -> SimDevice {
        SimDevice { link: Some(profile), ..SimDevice::default() }
    }
}

/// `host:port` of a plain `mqtt://` broker URL for a socket connect (port 1883 if left out); `None` for a URL
/// that does not parse or uses TLS (a relay in front would break the certificate's host name check).
pub fn broker_host_port(url: &str) -> Option<String> {
    let parsed = loa_protocol::BrokerUrl::parse(url).ok().filter(|u| !u.tls)?;
    Some(if parsed.host.contains(':') {
        format!("[{}]:{}", parsed.host, parsed.port)
    } else {
        format!("{}:{}", parsed.host, parsed.port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_faults_parse_and_apply() {
        assert_eq!("1970".parse::<ClockFault>().unwrap(), ClockFault::Epoch1970);
        assert_eq!("-1h".parse::<ClockFault>().unwrap(), ClockFault::OffsetMs(-3_600_000));
        assert_eq!("250".parse::<ClockFault>().unwrap(), ClockFault::OffsetMs(250));
        assert!("soon".parse::<ClockFault>().is_err());
        let c = ClockFault::Epoch1970.clock();
        assert!(c.now().unix_ms() < 60_000, "{}", c.now().unix_ms());
        let c = ClockFault::OffsetMs(3_600_000).clock();
        assert!(c.now().unix_ms() - SystemClock.now().unix_ms() > 3_590_000);
    }

    #[test]
    fn broker_urls() {
        assert_eq!(broker_host_port("mqtt://127.0.0.1:1884").unwrap(), "127.0.0.1:1884");
        assert_eq!(broker_host_port("mqtt://broker/").unwrap(), "broker:1883");
        assert_eq!(broker_host_port("tcp://[::1]:7").unwrap(), "[::1]:7");
        assert!(broker_host_port("http://x").is_none());
        assert!(broker_host_port("mqtt://").is_none());
        assert!(broker_host_port("mqtts://h:8883").is_none());
    }
}
