//! `loa-sim bench`: benchmarks of the whole system over emulated links, each printing a human table and, with
//! `--json`, one JSON object of the figures as the last line.
//!
//! - [`wire`]: bytes on the wire per receiver per audio minute, at the MQTT level and the (modelled) TCP level,
//!   next to the Ogg Opus file's size.
//! - [`bulk`]: delivery time of a 5-minute bulletin over `gprs` against the floor (file size ÷ link rate).
//!
//! Both start a controller in this process (embedded broker, data in a temporary directory), register receivers
//! behind [`crate::link::Relay`]s, upload a generated speech-like bulletin and schedule it ([`setup`]).

pub mod bulk;
pub mod setup;
pub mod wire;
