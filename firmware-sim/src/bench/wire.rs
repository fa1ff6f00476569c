//! The wire benchmark: a bulletin scheduled for receivers behind `3g` and `gprs` links (several of each); for
//! each receiver the bytes that crossed its link from the schedule until it holds the verified file (plan,
//! manifest, chunk requests and frames, heartbeats and pings in that time), counted as MQTT packets and as
//! modelled TCP bytes (see [`crate::link::counters`]), per audio minute, next to the file's own bytes per audio
//! minute. Goal: MQTT level ≤ 1.05 × the file.

use std::time::Duration;

use serde_json::json;

use super::setup::{self, BenchController, ReceiverTuning};
use crate::fleet::Fleet;
use crate::link::{LinkProfile, LinkStats};

/// What to run.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// Profiles and how many receivers behind each.
    pub groups: Vec<(LinkProfile, usize)>,
    /// Bulletin length, s.
    pub seconds: u32,
    /// Receiver settings to override.
    pub tuning: ReceiverTuning,
}

impl Default for WireOptions {
    fn default() -> Self {
        let p = |n: &str| LinkProfile::named(n).unwrap_or_default();
        WireOptions { groups: vec![(p("3g"), 3), (p("gprs"), 3)], seconds: 120, tuning: ReceiverTuning::default() }
    }
}

/// One receiver's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WireRow {
    /// Link profile.
    pub profile: String,
    /// Seconds from the schedule until the file was in its cache.
    pub seconds: f64,
    /// The link's counters over that time.
    pub stats: LinkStats,
}

/// Runs the benchmark; prints the table (and the JSON line with `json`); returns the JSON object.
pub async fn run(options: WireOptions, json: bool) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let controller = BenchController::start(&dir.path().join("controller")).await?;
    let api = controller.api.clone();
    let area = setup::village(&api, "Thôn Đo Đường Truyền").await?;
    let bulletin = setup::bulletin(&api, dir.path(), options.seconds).await?;
    let profiles: Vec<LinkProfile> =
        options.groups.iter().flat_map(|(p, n)| std::iter::repeat_n(p.clone(), *n)).collect();
    let mut fleet = Fleet::new();
    let members = setup::receivers(&api, &mut fleet, &dir.path().join("rx"), area, &profiles, options.tuning).await?;
    // Let the registration traffic (first empty plan, status, first heartbeat) pass before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<LinkStats> = members.iter().map(|&i| fleet.link_stats(i).unwrap_or_default()).collect();
    let since = tokio::time::Instant::now();
    setup::schedule(&api, &bulletin.id, area, Duration::from_secs(1800)).await?;
    let dirs: Vec<_> =
        members.iter().map(|&i| fleet.state_dir(i).map(|p| p.to_path_buf()).unwrap_or_default()).collect();
    let times = setup::wait_cached(&dirs, &bulletin.sha256, since, Duration::from_secs(600)).await?;
    // The last frame's delivery is followed by nothing but an ack or two; give them a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows: Vec<WireRow> = members
        .iter()
        .zip(&before)
        .zip(&times)
        .map(|((&i, b), t)| WireRow {
            profile: fleet.profile(i).map(|p| p.name.clone()).unwrap_or_default(),
            seconds: t.as_secs_f64(),
            stats: fleet.link_stats(i).unwrap_or_default().since(b),
        })
        .collect();
    fleet.shutdown().await;
    controller.stop().await?;

    let minutes = bulletin.duration_ms as f64 / 60_000.0;
    let file_per_min = bulletin.bytes as f64 / minutes;
    println!("wire: bytes on the wire per receiver per audio minute");
    println!(
        "bulletin: {:.1} s of generated speech, Ogg Opus {} bytes = {:.0} B/audio min",
        bulletin.duration_ms as f64 / 1000.0,
        bulletin.bytes,
        file_per_min
    );
    println!("counted from the schedule until the receiver holds the verified file (both directions);");
    println!("down pl B = PUBLISH payloads to the receiver (chunk frames, plan, manifest); MQTT up B = all it sent");
    println!();
    println!(
        "{:<8} {:>7} {:>12} {:>12} {:>8} {:>10} {:>10} {:>8} {:>8} {:>5}",
        "profile", "secs", "MQTT B/min", "TCP B/min", "MQTT/f", "down pl B", "MQTT up B", "pkts dn", "pkts up", "lost"
    );
    println!("{}", "-".repeat(100));
    for r in &rows {
        let s = &r.stats;
        println!(
            "{:<8} {:>7.1} {:>12.0} {:>12.0} {:>8.3} {:>10} {:>10} {:>8} {:>8} {:>5}",
            r.profile,
            r.seconds,
            s.mqtt_bytes() as f64 / minutes,
            s.tcp_bytes() as f64 / minutes,
            s.mqtt_bytes() as f64 / bulletin.bytes as f64,
            s.down.publish_payload_bytes,
            s.up.mqtt_bytes,
            s.down.mqtt_packets,
            s.up.mqtt_packets,
            s.down.lost_segments + s.up.lost_segments,
        );
    }
    let n = rows.len().max(1) as f64;
    let mqtt = rows.iter().map(|r| r.stats.mqtt_bytes() as f64).sum::<f64>() / n / minutes;
    let tcp = rows.iter().map(|r| r.stats.tcp_bytes() as f64).sum::<f64>() / n / minutes;
    let mut by_profile = serde_json::Map::new();
    for (p, _) in &options.groups {
        let g: Vec<&WireRow> = rows.iter().filter(|r| r.profile == p.name).collect();
        let gn = g.len().max(1) as f64;
        by_profile.insert(
            p.name.clone(),
            json!({
                "receivers": g.len(),
                "mqtt_bytes_per_audio_min": (g.iter().map(|r| r.stats.mqtt_bytes() as f64).sum::<f64>() / gn / minutes).round(),
                "tcp_bytes_per_audio_min": (g.iter().map(|r| r.stats.tcp_bytes() as f64).sum::<f64>() / gn / minutes).round(),
                "seconds": g.iter().map(|r| r.seconds).sum::<f64>() / gn,
            }),
        );
    }
    println!();
    println!(
        "mean: MQTT {mqtt:.0} B/min ({:.3} × file), TCP {tcp:.0} B/min ({:.3} × file), file {file_per_min:.0} B/min; goal MQTT ≤ 1.05 × file: {}",
        mqtt / file_per_min,
        tcp / file_per_min,
        if mqtt <= 1.05 * file_per_min { "met" } else { "NOT met" }
    );
    let out = json!({
        "mqtt_bytes_per_audio_min": mqtt.round(),
        "tcp_bytes_per_audio_min": tcp.round(),
        "file_bytes_per_audio_min": file_per_min.round(),
        "mqtt_over_file": (mqtt / file_per_min * 1000.0).round() / 1000.0,
        "tcp_over_file": (tcp / file_per_min * 1000.0).round() / 1000.0,
        "audio_seconds": bulletin.duration_ms as f64 / 1000.0,
        "file_bytes": bulletin.bytes,
        "by_profile": by_profile,
    });
    if json {
        println!("{out}");
    }
    Ok(out)
}
