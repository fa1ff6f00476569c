//! `GET /metrics` (outside `/api/v1`, same authentication): Prometheus text format 0.0.4 — receivers by state,
//! plays by status, alerts open by kind, and, when the controller runs dispatch and the embedded broker, what
//! they sent (plans, chunks, chunk bytes, reports, drops; bytes on the wire each way).
//!
//! Dispatch's and the broker's counters are not in [`AppState`]: the server adds a [`MetricsSources`] as a
//! request extension (`api::app(state).layer(Extension(sources))`); without one (tests of the API alone) those
//! lines are left out.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::auth::CurrentUser;
use super::{ApiError, AppState};
use crate::broker::WireCounters;
use crate::dispatch::Stats;

/// The media type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Live counters of the running controller, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MetricsSources {
    /// Dispatch's counters.
    pub dispatch: Option<Arc<Mutex<Stats>>>,
    /// The embedded broker's byte counters.
    pub wire: Option<Arc<WireCounters>>,
    /// Messages the MQTT loop handed to dispatch ([`crate::mqtt::MqttLink::received`]).
    pub mqtt_received: Option<Arc<AtomicU64>>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Writes one metric family: HELP, TYPE, and one sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn label(name: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("{name}=\"{escaped}\"")
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn metrics(
    State(state): State<AppState>,
    user: CurrentUser,
    sources: Option<Extension<MetricsSources>>,
) -> Result<Response, ApiError> {
    // Delivery counters are the whole controller's: only someone who sees the whole tree gets them.
    let sources = if user.scope.is_none() { sources } else { None };
    let fleet = state.store.fleet_counts(user.scope)?;
    let alerts = state.store.open_alert_counts(user.scope)?;
    let mut out = String::new();
    family(
        &mut out,
        "loa_receivers",
        "gauge",
        "Receivers by state (online: connected; offline: seen before, not connected; never_seen).",
        &[
            (label("state", "online"), fleet.receivers_online),
            (label("state", "offline"), fleet.receivers_offline),
            (label("state", "never_seen"), fleet.receivers_never_seen),
        ],
    );
    let plays: Vec<(String, i64)> = fleet.plays.iter().map(|(s, n)| (label("status", s), *n)).collect();
    family(&mut out, "loa_plays", "gauge", "Plays in the database by status.", &plays);
    let alerts: Vec<(String, i64)> = alerts.iter().map(|(k, n)| (label("kind", k.as_str()), *n)).collect();
    family(&mut out, "loa_alerts_open", "gauge", "Open alerts by kind.", &alerts);
    if let Some(Extension(sources)) = sources {
        if let Some(stats) = &sources.dispatch {
            let s = stats.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone());
            let counters = [
                ("loa_dispatch_plans_total", "Signed plans published.", s.plans),
                ("loa_dispatch_chunks_total", "Audio chunks sent to receivers.", s.chunks),
                ("loa_dispatch_chunk_bytes_total", "Audio payload bytes sent to receivers.", s.chunk_bytes),
                ("loa_dispatch_reports_total", "Play reports stored (resends not counted).", s.reports),
                (
                    "loa_dispatch_dropped_total",
                    "Messages from receivers dropped as malformed or not allowed.",
                    s.dropped,
                ),
            ];
            for (name, help, value) in counters {
                family(&mut out, name, "counter", help, &[(String::new(), clamp(value))]);
            }
            if let Some(received) = &sources.mqtt_received {
                // The loop never waits for dispatch (see crate::mqtt), so a dispatch that falls behind shows here.
                let waiting = received.load(Ordering::Relaxed).saturating_sub(s.handled);
                family(
                    &mut out,
                    "loa_dispatch_backlog",
                    "gauge",
                    "Messages from receivers received by the controller's MQTT client and not yet handled by dispatch.",
                    &[(String::new(), clamp(waiting))],
                );
            }
        }
        if let Some(wire) = &sources.wire {
            family(
                &mut out,
                "loa_broker_bytes_total",
                "counter",
                "Bytes through the embedded MQTT broker's public listener.",
                &[
                    (label("direction", "up"), clamp(wire.up_bytes.load(Ordering::Relaxed))),
                    (label("direction", "down"), clamp(wire.down_bytes.load(Ordering::Relaxed))),
                ],
            );
            family(
                &mut out,
                "loa_broker_connections_total",
                "counter",
                "Connections accepted by the embedded MQTT broker.",
                &[(String::new(), clamp(wire.connections.load(Ordering::Relaxed)))],
            );
            family(
                &mut out,
                "loa_mqtt_acl_denied_total",
                "counter",
                "MQTT connections closed for breaking a topic rule (a receiver reaching for another's topics).",
                &[(String::new(), clamp(wire.acl_denied.load(Ordering::Relaxed)))],
            );
            family(
                &mut out,
                "loa_broker_messages_dropped_total",
                "counter",
                "Messages the embedded MQTT broker dropped because a client did not read them (its outbox was full).",
                &[(String::new(), clamp(wire.messages_dropped.load(Ordering::Relaxed)))],
            );
        }
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}
