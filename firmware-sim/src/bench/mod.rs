//! `loa-sim bench`: benchmarks of the whole system over emulated links, each printing a human table and, with
//! `--json`, one JSON object of the figures as the last line.
//!
//! - [`wire`]: bytes on the wire per receiver per audio minute, at the MQTT level and the (modelled) TCP level,
//!   next to the Ogg Opus file's size.
//! - [`emergency`]: time to air of a warning (API call → first speech sample at each sink) over `3g` and `gprs`
//!   while a long normal bulletin is downloading: p50, p95, max.
//! - [`bulk`]: delivery time of a 5-minute bulletin over `gprs` against the floor (file size ÷ link rate).
//! - [`fleet`]: 10,000 receivers on direct connections, then one bulletin to all: time until all are online and
//!   all caches ready, CPU seconds and peak RSS of the controller (a child process; embedded broker and Mosquitto);
//!   then the reconnect [`storm`]: the broker restarts under the whole fleet.
//!
//! All but `fleet` start a controller in this process (embedded broker, data in a temporary directory); all
//! register receivers (behind [`crate::link::Relay`]s but for `fleet`), upload a generated speech-like bulletin
//! and schedule it ([`setup`]).

pub mod bulk;
pub mod emergency;
pub mod fleet;
pub mod setup;
pub mod storm;
pub mod wire;
