//! Loa's receiver: the Raspberry Pi in a village culture house that caches bulletins and plays them on time.
//!
//! Not built yet: MQTT client, cache, player and amplifier control arrive with the core-loop issue.
