//! The bulk benchmark: a 5-minute bulletin delivered to one receiver behind a `gprs` link (48 kbit/s down,
//! 600 ms round trip, 3 % loss). Seconds from the schedule (the plan is published at once) until the receiver's
//! cache holds the verified file, against the floor: the file's bytes ÷ the link rate. Goal: ≤ 1.2 × the floor.
//! Also shown: the time from the start of the download (the partial file appears once the manifest arrived).
//!
//! Two links can carry it ([`BulkLink`]): the user-space relay of every other benchmark (an in-process receiver),
//! and the [`KernelLink`] (the real
//! `loa-receiver` binary in a network namespace, the same profile applied to IP packets, the kernel's own TCP
//! recovering the losses; root only). `--link both` runs them one after the other in the same process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::setup::{self, BenchController, Bulletin, ReceiverTuning};
use crate::api::ApiClient;
use crate::fleet::Fleet;
use crate::link::{KernelLink, LinkProfile};

/// Which link carries the bulletin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkLink {
    /// The user-space relay (loss repaired about a round trip later, as by TCP's fast retransmit).
    Emulated,
    /// Kernel TCP over a packet-level link between network namespaces (root only).
    Kernel,
}

impl std::str::FromStr for BulkLink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulated" => Ok(BulkLink::Emulated),
            "kernel" => Ok(BulkLink::Kernel),
            other => Err(format!("unknown link {other:?}: use emulated, kernel or both")),
        }
    }
}

/// Parses `emulated`, `kernel` or `both`.
pub fn parse_links(s: &str) -> Result<Vec<BulkLink>, String> {
    match s {
        "both" => Ok(vec![BulkLink::Emulated, BulkLink::Kernel]),
        one => Ok(vec![one.parse()?]),
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// The link profile.
    pub profile: LinkProfile,
    /// Bulletin length, s.
    pub seconds: u32,
    /// Receiver settings to override.
    pub tuning: ReceiverTuning,
    /// The links to run it over, in turn.
    pub links: Vec<BulkLink>,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            profile: LinkProfile::named("gprs").unwrap_or_default(),
            seconds: 300,
            tuning: ReceiverTuning::default(),
            links: vec![BulkLink::Emulated],
        }
    }
}

/// How long a delivery took, from the schedule request.
struct Delivery {
    /// Until the verified file was in the cache.
    total: Duration,
    /// Until the partial file appeared (the download started).
    started: Option<Duration>,
}

/// Schedules `bulletin` half an hour ahead for `area` and waits until the receiver with `state` holds it.
async fn deliver(api: &ApiClient, bulletin: &Bulletin, area: i64, state: &Path) -> anyhow::Result<Delivery> {
    let since = tokio::time::Instant::now();
    setup::schedule(api, &bulletin.id, area, Duration::from_secs(1800)).await?;
    let partial = state.join("cache").join("partial").join(format!("{}.part", bulletin.sha256));
    let mut started = None;
    let deadline = Duration::from_secs(900);
    loop {
        if started.is_none() && partial.exists() {
            started = Some(since.elapsed());
        }
        if setup::cached(state, &bulletin.sha256) {
            return Ok(Delivery { total: since.elapsed(), started });
        }
        anyhow::ensure!(since.elapsed() < deadline, "the bulletin did not arrive within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark over each link asked for; prints the tables (and a JSON line each with `json`); returns
/// the JSON objects.
pub async fn run(options: BulkOptions, json: bool) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for link in &options.links {
        let out = match link {
            BulkLink::Emulated => run_emulated(&options).await?,
            BulkLink::Kernel => run_kernel(&options).await?,
        };
        if json {
            println!("{out}");
        }
        println!();
        all.push(out);
    }
    Ok(all)
}

/// Prints the top of a run's table: what ran, the link, the floor and the delivery times.
fn print_head(
    options: &BulkOptions,
    bulletin: &Bulletin,
    what: &str,
    loss: &str,
    [floor, seconds]: [f64; 2],
    from_start: Option<f64>,
) {
    let p = &options.profile;
    println!("bulk: delivery of a {:.0} s bulletin over {} ({what})", bulletin.duration_ms as f64 / 1000.0, p.name);
    println!(
        "link: {} kbit/s down, {} ms RTT, {} % {loss}; file {} bytes",
        p.rate_down_kbps,
        p.rtt_ms(),
        p.loss_percent,
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
}

/// A run's JSON object: the figures both links give, and the link's own (`extra`, an object).
fn figures(
    options: &BulkOptions,
    bulletin: &Bulletin,
    [floor, seconds, serialising]: [f64; 3],
    from_start: Option<f64>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    let mut out = json!({
        "seconds": tenth(seconds),
        "floor_seconds": tenth(floor),
        "ratio": (seconds / floor * 1000.0).round() / 1000.0,
        "download_seconds": from_start.map(tenth),
        "file_bytes": bulletin.bytes,
        "audio_seconds": bulletin.duration_ms as f64 / 1000.0,
        "profile": options.profile.name,
        "serialising_seconds": tenth(serialising),
    });
    if let (Some(out), serde_json::Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

/// Over the user-space relay, with an in-process receiver.
async fn run_emulated(options: &BulkOptions) -> anyhow::Result<serde_json::Value> {
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
    let Delivery { total, started } = deliver(&api, &bulletin, area, &state).await?;
    let stats = fleet.link_stats(i).unwrap_or_default().since(&before);
    fleet.shutdown().await;
    controller.stop().await?;

    let rate = f64::from(options.profile.rate_down_kbps) * 1000.0 / 8.0;
    let floor = bulletin.bytes as f64 / rate;
    let seconds = total.as_secs_f64();
    let from_start = started.map(|s| seconds - s.as_secs_f64());
    // What the emulated link itself needed: serialising every byte sent (payload, headers, retransmissions); the
    // rest is the link idle (waiting for a loss to be repaired, round trips).
    let serialising = stats.down.tcp_data_bytes() as f64 / rate;
    let held = stats.down.held_us as f64 / 1e6;
    print_head(options, &bulletin, "user-space link, in-process receiver", "loss", [floor, seconds], from_start);
    println!("{:<34} {:>10.1}", "  link serialising (all bytes)", serialising);
    println!("{:<34} {:>10.1}", "  rest (loss repair, round trips)", seconds - serialising);
    println!("{:<34} {:>10.1}", "  (lost segments held, summed)", held);
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
    Ok(figures(
        options,
        &bulletin,
        [floor, seconds, serialising],
        from_start,
        json!({
            "link": "emulated",
            "down_bytes": stats.down.bytes,
            "lost_segments": stats.down.lost_segments + stats.up.lost_segments,
            "loss_held_seconds": (held * 10.0).round() / 10.0,
        }),
    ))
}

/// Stops the receiver process when the run ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Over kernel TCP: the `loa-receiver` binary (beside this one) in a network namespace behind a [`KernelLink`].
async fn run_kernel(options: &BulkOptions) -> anyhow::Result<serde_json::Value> {
    let binary = std::env::current_exe()?.with_file_name("loa-receiver");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it beside loa-sim first (cargo build --release -p loa-receiver)",
        binary.display()
    );
    let link = KernelLink::up(&options.profile).context("the kernel link (it needs root and iproute2)")?;
    let dir = tempfile::tempdir()?;
    let controller =
        BenchController::start_with_broker_on(&dir.path().join("controller"), link.host_ip().into()).await?;
    let api = controller.api.clone();
    let area = setup::village(&api, "Thôn Tải Lớn").await?;
    let bulletin = setup::bulletin(&api, dir.path(), options.seconds).await?;
    let (id, config) = api.register_receiver(&format!("bench kernel {}", options.profile.name), area).await?;
    let state = dir.path().join("rx").join(&id);
    let config_path = dir.path().join("receiver.toml");
    std::fs::write(&config_path, setup::tune(&config, options.tuning)?)?;
    let receiver = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", link.namespace()])
            .arg(&binary)
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(&state)
            .args(["--sink", "null"])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .context("starting loa-receiver in the namespace")?,
    );
    setup::wait_online(&api, &id, tokio::time::Instant::now() + Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (down_before, up_before) = link.stats();
    let Delivery { total, started } = deliver(&api, &bulletin, area, &state).await?;
    let (down, up) = link.stats();
    drop(receiver);
    controller.stop().await?;

    let rate = f64::from(options.profile.rate_down_kbps) * 1000.0 / 8.0;
    let floor = bulletin.bytes as f64 / rate;
    let seconds = total.as_secs_f64();
    let from_start = started.map(|s| seconds - s.as_secs_f64());
    let down_bytes = down.bytes - down_before.bytes;
    let down_packets = down.packets - down_before.packets;
    let lost = (down.lost - down_before.lost) + (up.lost - up_before.lost);
    let queue_full = (down.queue_full - down_before.queue_full) + (up.queue_full - up_before.queue_full);
    // Every IP packet sent down, retransmissions included, took its time on the link.
    let serialising = down_bytes as f64 / rate;
    let what = "kernel TCP between network namespaces, loa-receiver binary";
    print_head(options, &bulletin, what, "of IP packets lost each way", [floor, seconds], from_start);
    println!("{:<34} {:>10.1}", "  link busy (all IP packets down)", serialising);
    println!("{:<34} {:>10.1}", "  rest (repair, round trips, idle)", seconds - serialising);
    println!();
    println!(
        "ratio {:.3} × floor (goal ≤ 1.2: {}); down {down_bytes} B in {down_packets} IP packets; {lost} packets lost, \
         {queue_full} dropped by a full queue (both ways); up {} B",
        seconds / floor,
        if seconds <= 1.2 * floor { "met" } else { "NOT met" },
        up.bytes - up_before.bytes,
    );
    Ok(figures(
        options,
        &bulletin,
        [floor, seconds, serialising],
        from_start,
        json!({
            "link": "kernel",
            "down_ip_bytes": down_bytes,
            "down_packets": down_packets,
            "lost_packets": lost,
            "queue_full_packets": queue_full,
        }),
    ))
}
