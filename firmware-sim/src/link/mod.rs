//! Emulated links in user space (no netem, no root): each simulated receiver reaches the broker through its own
//! [`Relay`], a TCP relay that imposes a [`LinkProfile`] — rate each way, one-way delay and jitter, loss as the
//! delays it causes on TCP, outages and hard disconnects — and counts what crosses it ([`LinkCounters`], with an
//! MQTT packet meter and a model of the TCP-level bytes).
//!
//! - [`profile`]: [`LinkProfile`], the named profiles, and fleet mixes (`3g:50,edge:30,gprs:20`).
//! - [`relay`]: [`Relay`] (`run(self, cancel)`) and its [`RelayHandle`] (counters, `outage`, `disconnect`).
//! - `pump`: one direction of a connection (serialisation, loss repair, delay line, back-pressure).
//! - [`counters`]: byte, segment and MQTT counters and the TCP-level model.
//! - [`kernel`]: [`KernelLink`], the same profile applied to IP packets between network namespaces, so that
//!   kernel TCP crosses it (root only): the reference for the user-space model.

pub mod counters;
pub mod kernel;
pub mod profile;
mod pump;
pub mod relay;

pub use counters::{DirStats, LinkCounters, LinkStats, MqttMeter};
pub use kernel::{KernelLink, KernelLinkError, PacketStats};
pub use profile::{parse, FleetMix, LinkProfile, OutageSchedule, ProfileError};
pub use relay::{Relay, RelayError, RelayHandle};
