//! Loa's controller: stores, encodes and schedules bulletins, and dispatches them to receivers over MQTT.
//!
//! Follow a bulletin through the modules: [`api`] (axum, `fn app() -> Router`) takes the upload and the
//! schedule; [`encode_job`] turns the upload into Ogg Opus in the background with `loa-audio`; [`store`] keeps
//! everything in SQLite; [`schedule`] expands rules (once, daily, weekly, cron; Asia/Ho_Chi_Minh) into plays per
//! receiver over the planning horizon, with quiet hours and clash checks; [`dispatch`] turns each receiver's
//! plays into a signed plan, serves the chunks receivers ask for, and records health and play reports; [`mqtt`]
//! is the client connection to the broker (the embedded one from [`broker`], or Mosquitto / EMQX);
//! [`server`] starts all of it with `run(self, cancel)`. [`config`] is the one settings struct; [`clock`] is
//! where "now" comes from; [`keys`] holds the Ed25519 signing key.

pub mod alerts;
pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod encode_job;
pub mod keys;
pub mod mqtt;
pub mod schedule;
pub mod server;
pub mod store;
pub mod web;
