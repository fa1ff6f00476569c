//! Time on the wire: every instant is a [`Timestamp`], UTC milliseconds since the Unix epoch, written as a
//! plain JSON integer (`1748736000000` is 2025-06-01T00:00:00Z). Integers are compact, exact to the
//! millisecond, free of time-zone and formatting ambiguity, and cheap to compare on a Raspberry Pi. Durations
//! are integer fields named with their unit (`_ms`, `_s`). Local time (Vietnam is UTC+7 all year) is a
//! display concern of the controller, never a wire concern.
//!
//! This crate never reads a clock: callers pass "now" in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// An instant, UTC, in milliseconds since 1970-01-01T00:00:00Z. Valid range: the epoch to the end of year
/// 9999 (so it always converts to a calendar date and never takes more than 15 digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest valid instant: the Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest valid instant: 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// The instant `ms` milliseconds after the epoch, if within the valid range.
    pub fn from_unix_ms(ms: i64) -> Result<Self, ProtocolError> {
        if (Self::EPOCH.0..=Self::MAX.0).contains(&ms) {
            Ok(Timestamp(ms))
        } else {
            Err(ProtocolError::invalid("timestamp", format!("{ms} ms is outside 0..={}", Self::MAX.0)))
        }
    }

    /// Milliseconds since the epoch.
    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// This instant plus `ms` milliseconds (negative goes back), clamped to the valid range.
    pub fn saturating_add_ms(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms).clamp(Self::EPOCH.0, Self::MAX.0))
    }

    /// `self - earlier` in milliseconds (negative if `earlier` is later).
    pub fn ms_since(self, earlier: Timestamp) -> i64 {
        // Both are within 0..=MAX, so the difference cannot overflow.
        self.0 - earlier.0
    }

    /// The same instant as a chrono date-time.
    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        // Always Some within the valid range; fall back to the epoch rather than panic.
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// The instant of a chrono date-time (milliseconds, sub-millisecond part dropped), if in range.
    pub fn from_datetime(dt: chrono::DateTime<chrono::Utc>) -> Result<Self, ProtocolError> {
        Self::from_unix_ms(dt.timestamp_millis())
    }
}

impl TryFrom<i64> for Timestamp {
    type Error = ProtocolError;
    fn try_from(ms: i64) -> Result<Self, Self::Error> {
        Self::from_unix_ms(ms)
    }
}

impl From<Timestamp> for i64 {
    fn from(t: Timestamp) -> i64 {
        t.0
    }
}

/// RFC 3339 with milliseconds, e.g. `2025-06-01T00:00:00.000Z`, for logs and errors.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_plain_integer_on_the_wire() {
        let t = Timestamp::from_unix_ms(1_748_736_000_000).unwrap_or(Timestamp::EPOCH);
        assert_eq!(serde_json::to_string(&t).ok().as_deref(), Some("1748736000000"));
        assert_eq!(serde_json::from_str::<Timestamp>("1748736000000").ok(), Some(t));
        assert_eq!(t.to_string(), "2025-06-01T00:00:00.000Z");
    }

    #[test]
    fn out_of_range_is_rejected_when_parsed() {
        assert!(serde_json::from_str::<Timestamp>("-1").is_err());
        assert!(serde_json::from_str::<Timestamp>("253402300800000").is_err());
        assert!(serde_json::from_str::<Timestamp>("1.5").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"2025-06-01\"").is_err());
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::EPOCH.saturating_add_ms(-5), Timestamp::EPOCH);
        assert_eq!(Timestamp::MAX.saturating_add_ms(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::MAX.ms_since(Timestamp::EPOCH), 253_402_300_799_999);
    }

    #[test]
    fn converts_to_and_from_chrono() {
        let t = Timestamp::from_unix_ms(1_748_736_000_123).unwrap_or(Timestamp::EPOCH);
        assert_eq!(Timestamp::from_datetime(t.to_datetime()), Ok(t));
    }
}
