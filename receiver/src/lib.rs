//! Loa's receiver: the Raspberry Pi in a village culture house that caches bulletins and plays them on time,
//! with or without a link.
//!
//! # API (what the controller's tests and the firmware simulator call)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use loa_receiver::{Receiver, ReceiverConfig, SystemClock};
//! let cfg = ReceiverConfig::load(Some("receiver.toml".as_ref()), std::env::vars())?;
//! let receiver = Receiver::from_config(cfg, Arc::new(SystemClock))?; // or Receiver::new(cfg, sink, amp, clock)
//! let cancel = tokio_util::sync::CancellationToken::new();
//! receiver.run(cancel.clone()).await?; // Ok on cancel; Err(RestartRequested) on a `restart` command
//! # Ok(()) }
//! ```
//!
//! - [`ReceiverConfig`] ([`config`]): the registration TOML plus defaulted receiver settings; `load` then
//!   `validate`. Set `state_dir` per receiver; `sink = "wav:DIR"` to capture plays as WAV files.
//! - [`Receiver::new`]`(cfg, Box<dyn Sink>, Box<dyn Amplifier>, Arc<dyn Clock>)` or
//!   [`Receiver::from_config`]`(cfg, clock)`; then [`Receiver::run`]`(cancel)`.
//! - [`clock`]: [`Clock`], [`SystemClock`], [`SimClock`] (system time plus a settable offset).
//! - [`Receiver::with_faults`]`(DeviceFaults) -> Receiver`: obey injected [`DeviceFaults`] (disk full, speaker
//!   line [`SpeakerLine`], amplifier fault; see [`faults`]), for the firmware simulator.
//! - [`Receiver::air_events`]`() -> tokio::sync::broadcast::Receiver<AirEvent>` (call before `run`): what goes
//!   on air as it goes (chime, first speech sample, end), for benchmarks and tests.
//!
//! # Parts
//!
//! [`agent`] is the MQTT agent (link, verified plan/manifest store, chunk downloader, scheduler, reports
//! outbox, heartbeat; its module doc describes the behaviour); [`cache`] keeps verified Ogg Opus files by
//! SHA-256 in the state folder, with downloads that resume after a power cut; [`sink`] is where decoded audio
//! goes (null, WAV and, with the `alsa` feature, ALSA); [`amp`] switches the amplifier relay (simulated, or a
//! GPIO line with the `gpio` feature); [`player`] plays on its own thread, on time, with tiers that preempt.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod amp;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
pub mod faults;
pub mod player;
pub mod sink;

pub use agent::Receiver;
pub use clock::{Clock, SimClock, SystemClock};
pub use config::{ConfigError, ReceiverConfig};
pub use error::ReceiverError;
pub use faults::{DeviceFaults, SpeakerLine};
pub use player::AirEvent;
