//! Loa's firmware simulator: many real receivers (the `loa-receiver` library, not a mock) in one process.
//!
//! [`fleet`] starts, stops and restarts receivers from their config files, each with its own state directory,
//! sink, emulated link ([`link`]) and device faults (clock, power cuts), as the Raspberry Pis of a commune would
//! run; [`api`] is a small client of the controller's HTTP API used to register those receivers and drive
//! bulletins; [`demo`] is the README's main job: a controller with its embedded broker and SQLite, seeded on
//! first run with a demo province, communes and villages, and one simulated receiver per village writing what it
//! plays to WAV files; [`run`] is `loa-sim run`, a standing fleet against any controller; [`bench`] holds the
//! benchmarks (`wire`, `bulk`, `emergency`, `fleet`); [`soak`] is the long run under faults judged for lost,
//! late, duplicate and corrupt plays; [`procs`] runs the real `loa-controller` and Mosquitto as child processes
//! for those two. The `loa-sim` binary exposes them.

pub mod api;
pub mod bench;
pub mod demo;
pub mod fleet;
pub mod link;
pub mod procs;
pub mod run;
pub mod soak;
