//! Loa's controller: stores, encodes and schedules bulletins and dispatches them to receivers over MQTT.
//!
//! Not built yet: the HTTP API, SQLite store, schedules, dispatch and embedded broker arrive with the
//! core-loop issue. Today every bulletin goes through `loa-audio` (see the `audio/` crate).
