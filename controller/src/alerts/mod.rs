//! Fleet alerts: the evaluator that opens an alert when a receiver goes wrong and resolves it by itself when the
//! cause goes away. Rules (in [`rules`], pure functions with defaults from [`AlertSettings`]): offline for more
//! than 10 minutes during the area's broadcast hours (outside its quiet hours), a missed play (one alert per play,
//! resolved by a late "played" report or by acknowledging it), a loudspeaker-line or amplifier fault, free disk
//! below a floor, a clock more than 5 s off, a temperature above 75 °C. Health rules read the receiver's last
//! heartbeat, so a fault seen before a receiver went offline stays open while it is offline.
//!
//! [`Alerts::run`] evaluates every `evaluate_interval_ms`; [`Alerts::evaluate`] does it once (tests).

pub mod rules;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use loa_protocol::{Health, Message};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::alerts::AlertKind;
use crate::store::areas::AreaSettings;
use crate::store::{Store, StoreError};

/// Thresholds of the alert rules (the `[alerts]` section of the controller's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// How often the rules run.
    pub evaluate_interval_ms: u64,
    /// A receiver offline longer than this, in broadcast hours, raises an alert.
    pub offline_after_ms: i64,
    /// A receiver connected but not heard from (no heartbeat) for this long counts as offline.
    pub silent_after_ms: i64,
    /// Missed plays planned within this much before now raise alerts (older ones are history).
    pub missed_play_lookback_ms: i64,
    /// Less free disk than this raises an alert (the heartbeat carries free MiB, not a percentage: 512 MiB is
    /// about 90 % full on a 4–8 GB card).
    pub disk_free_min_mb: u64,
    /// A clock further off than this (either way) raises an alert.
    pub clock_offset_max_ms: i64,
    /// Hotter than this raises an alert.
    pub temperature_max_c: i64,
    /// A temperature alert resolves only this far below the threshold.
    pub temperature_hysteresis_c: i64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            evaluate_interval_ms: 30_000,
            offline_after_ms: 10 * 60 * 1000,
            silent_after_ms: 15 * 60 * 1000,
            missed_play_lookback_ms: 24 * 3600 * 1000,
            disk_free_min_mb: 512,
            clock_offset_max_ms: 5_000,
            temperature_max_c: 75,
            temperature_hysteresis_c: 3,
        }
    }
}

impl AlertSettings {
    /// Checks values the types do not; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.evaluate_interval_ms < 1_000 {
            return Err("alerts.evaluate_interval_ms must be at least 1000".into());
        }
        if self.offline_after_ms < 0 || self.silent_after_ms < 60_000 {
            return Err("alerts.offline_after_ms must be positive and alerts.silent_after_ms at least 60000".into());
        }
        if self.missed_play_lookback_ms < 0 || self.clock_offset_max_ms < 0 || self.temperature_hysteresis_c < 0 {
            return Err("alerts: durations, offsets and the hysteresis cannot be negative".into());
        }
        Ok(())
    }
}

/// What one evaluation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluated {
    /// Alerts opened.
    pub opened: usize,
    /// Alerts resolved.
    pub resolved: usize,
}

/// The evaluator.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// The database.
    pub store: Store,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Thresholds.
    pub settings: AlertSettings,
    /// Time zone of the areas' quiet hours.
    pub tz: Tz,
}

impl Alerts {
    /// Evaluates every `evaluate_interval_ms` until `cancel`. A failed evaluation is logged and retried on the
    /// next tick; it never stops the evaluator.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), StoreError> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.evaluate_interval_ms.max(1_000)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.evaluate(this.clock.now())).await {
                Ok(Ok(e)) if e != Evaluated::default() => {
                    tracing::info!(opened = e.opened, resolved = e.resolved, "alerts changed")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "evaluating alerts failed"),
                Err(e) => tracing::error!(error = %e, "evaluating alerts panicked"),
            }
        }
    }

    /// Runs every rule once at `now`: opens alerts for new causes, resolves those whose cause went away.
    pub fn evaluate(&self, now: DateTime<Utc>) -> Result<Evaluated, StoreError> {
        let now_ms = now.timestamp_millis();
        let s = &self.settings;
        let mut done = Evaluated::default();
        let fleet = self.store.fleet_state(None)?;
        let mut open: HashMap<(String, AlertKind), i64> = HashMap::new();
        for a in self.store.open_condition_alerts(None)? {
            match a.receiver_id {
                Some(rx) => {
                    open.insert((rx, a.kind), a.id);
                }
                None => done.resolved += usize::from(self.store.resolve_alert(a.id, now_ms)?),
            }
        }
        let mut areas: HashMap<i64, AreaSettings> = HashMap::new();
        let mut seen: HashSet<(String, AlertKind)> = HashSet::new();
        for rx in &fleet {
            let area = match areas.get(&rx.area_id) {
                Some(a) => a,
                None => areas.entry(rx.area_id).or_insert(self.store.area_settings(rx.area_id)?),
            };
            let health = rx.health.as_deref().and_then(|h| match Health::from_json(h.as_bytes()) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::debug!(receiver = %rx.id, error = %e, "stored heartbeat unreadable; health rules skipped");
                    None
                }
            });
            let facts = rules::Facts {
                online: rx.online,
                last_seen: rx.last_seen,
                created_at: rx.created_at,
                health: health.as_ref(),
            };
            let in_hours = rules::broadcast_hours(now, self.tz, area);
            for c in rules::conditions(&facts, now_ms, in_hours, s) {
                let key = (rx.id.clone(), c.kind);
                if !open.contains_key(&key) && c.opens {
                    let detail = format!("{}: {}", rx.name, c.detail);
                    if self.store.open_alert(c.kind, Some(&rx.id), Some(rx.area_id), None, &detail, now_ms)? {
                        tracing::warn!(receiver = %rx.id, kind = c.kind.as_str(), detail = %c.detail, "alert opened");
                        done.opened += 1;
                    }
                }
                seen.insert(key);
            }
        }
        for (key, id) in open {
            if !seen.contains(&key) && self.store.resolve_alert(id, now_ms)? {
                tracing::info!(receiver = %key.0, kind = key.1.as_str(), "alert resolved");
                done.resolved += 1;
            }
        }
        done.resolved += self.store.resolve_recovered_plays(now_ms)?;
        for m in self.store.missed_plays_without_alert(now_ms - s.missed_play_lookback_ms, None)? {
            let when = crate::schedule::place::local_label(
                DateTime::from_timestamp_millis(m.planned_at).unwrap_or_default(),
                self.tz,
            );
            let why = m.reason.as_deref().unwrap_or("no reason given");
            let detail = format!("{}: «{}» planned {when} did not play ({why})", m.receiver_name, m.title);
            let opened = self.store.open_alert(
                AlertKind::MissedPlay,
                Some(&m.receiver_id),
                Some(m.area_id),
                Some(&m.play_id),
                &detail,
                now_ms,
            )?;
            done.opened += usize::from(opened);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
