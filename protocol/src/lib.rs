//! Loa's wire protocol: MQTT topics and payloads shared by the controller and the receivers.
//!
//! Not built yet: it arrives with the core-loop issue. This crate holds no I/O and no code that pretends otherwise.
