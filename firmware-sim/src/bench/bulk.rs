//! The bulk benchmark: a 5-minute bulletin delivered to one receiver behind a `gprs` link (48 kbit/s down,
//! 600 ms round trip, 3 % loss). Seconds from the schedule (the plan is published at once) until the receiver's
//! cache holds the verified file, against the floor: the file's bytes ÷ the link rate. Goal: ≤ 1.2 × the floor.
//! Also shown: the time from the start of the download (the partial file appears once the manifest arrived).

use std::time::Duration;

use serde_json::json;

use super::setup::{self, BenchController, ReceiverTuning};
use crate::fleet::Fleet;
use crate::link::LinkProfile;

/// What to run.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// The link.
    pub profile: LinkProfile,
    /// Bulletin length, s.
    pub seconds: u32,
    /// Receiver settings to override.
    pub tuning: ReceiverTuning,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            profile: LinkProfile::named("gprs").unwrap_or_default(),
            seconds: 300,
            tuning: ReceiverTuning::default(),
        }
    }
}

/// Runs the benchmark; prints the table (and the JSON line with `json`); returns the JSON object.
pub async fn run(options: BulkOptions, json: bool) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let controller = BenchController::start(&dir.path().join("controller")).await?;
    let api = controller.api.clone();
    let area = setup::village(&api, "Thôn Tải Lớn").await?;
    let bulletin = setup::bulletin(&api, dir.path(), options.seconds).await?;
    let mut fleet = Fleet::new();
    let members = setup::receivers(
        &api,
        &mut fleet,
        &dir.path().join("rx"),
        area,
        std::slice::from_ref(&options.profile),
        options.tuning,
    )
    .await?;
    let i = members[0];
    let state = fleet.state_dir(i).map(|p| p.to_path_buf()).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = fleet.link_stats(i).unwrap_or_default();
    let since = tokio::time::Instant::now();
    setup::schedule(&api, &bulletin.id, area, Duration::from_secs(1800)).await?;
    let partial = state.join("cache").join("partial").join(format!("{}.part", bulletin.sha256));
    let mut started = None;
    let deadline = Duration::from_secs(900);
    let total = loop {
        if started.is_none() && partial.exists() {
            started = Some(since.elapsed());
        }
        if setup::cached(&state, &bulletin.sha256) {
            break since.elapsed();
        }
        anyhow::ensure!(since.elapsed() < deadline, "the bulletin did not arrive within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stats = fleet.link_stats(i).unwrap_or_default().since(&before);
    fleet.shutdown().await;
    controller.stop().await?;

    let rate = f64::from(options.profile.rate_down_kbps) * 1000.0 / 8.0;
    let floor = bulletin.bytes as f64 / rate;
    let seconds = total.as_secs_f64();
    let from_start = started.map(|s| seconds - s.as_secs_f64());
    // What the emulated link itself needed: serialising every byte sent (payload, headers, retransmissions) and
    // standing still for the retransmission timeouts; the rest is the system's own (round trips, idle link).
    let serialising = stats.down.tcp_data_bytes() as f64 / rate;
    let stalls = stats.down.stalled_us as f64 / 1e6;
    println!(
        "bulk: delivery of a {:.0} s bulletin over {}",
        bulletin.duration_ms as f64 / 1000.0,
        options.profile.name
    );
    println!(
        "link: {} kbit/s down, {} ms RTT, {} % loss; file {} bytes",
        options.profile.rate_down_kbps,
        options.profile.rtt_ms(),
        options.profile.loss_percent,
        bulletin.bytes
    );
    println!();
    println!("{:<34} {:>10}", "", "seconds");
    println!("{}", "-".repeat(45));
    println!("{:<34} {:>10.1}", "floor (file bytes / link rate)", floor);
    println!("{:<34} {:>10.1}", "schedule → verified in cache", seconds);
    if let Some(s) = from_start {
        println!("{:<34} {:>10.1}", "download start → verified in cache", s);
    }
    println!("{:<34} {:>10.1}", "  link serialising (all bytes)", serialising);
    println!("{:<34} {:>10.1}", "  link stalled by losses (RTO)", stalls);
    println!("{:<34} {:>10.1}", "  rest (round trips, idle link)", seconds - serialising - stalls);
    println!();
    println!(
        "ratio {:.3} × floor (goal ≤ 1.2: {}); down {} B payload in {} segments, {} lost; up {} B; {} MQTT packets down",
        seconds / floor,
        if seconds <= 1.2 * floor { "met" } else { "NOT met" },
        stats.down.bytes,
        stats.down.segments,
        stats.down.lost_segments,
        stats.up.bytes,
        stats.down.mqtt_packets,
    );
    let out = json!({
        "seconds": (seconds * 10.0).round() / 10.0,
        "floor_seconds": (floor * 10.0).round() / 10.0,
        "ratio": (seconds / floor * 1000.0).round() / 1000.0,
        "download_seconds": from_start.map(|s| (s * 10.0).round() / 10.0),
        "file_bytes": bulletin.bytes,
        "audio_seconds": bulletin.duration_ms as f64 / 1000.0,
        "profile": options.profile.name,
        "down_bytes": stats.down.bytes,
        "lost_segments": stats.down.lost_segments + stats.up.lost_segments,
        "serialising_seconds": (serialising * 10.0).round() / 10.0,
        "loss_stall_seconds": (stalls * 10.0).round() / 10.0,
    });
    if json {
        println!("{out}");
    }
    Ok(out)
}
