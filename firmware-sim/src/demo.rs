//! The README's main job: one controller (embedded broker, SQLite in a data directory) and a few simulated
//! village receivers in one process.
//!
//! On first run (no `demo/` folder in the data directory) it seeds, through the controller's own HTTP API, a demo
//! province with two communes and four villages (Vietnamese, H'Mông and Tày language orders), registers one
//! receiver per village and keeps each receiver's config file under `DATA/demo/receivers/`; the admin token is
//! printed and kept in `DATA/demo/admin-token` (demo only: a real controller shows it once). Later runs reuse all
//! of it. Each receiver plays into WAV files under `DATA/demo/audio/<receiver>/`, and reaches the broker through
//! its own emulated link (default mix [`DEMO_PROFILE`]: 4G, 3G and EDGE).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use loa_controller::clock::SystemClock;
use loa_controller::config::ControllerConfig;
use loa_controller::server::Controller;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::fleet::{Fleet, SimDevice, SimReceiver};

/// Where and how to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Data directory of the controller (the demo's files go in `demo/` inside it).
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// MQTT listen address of the embedded broker.
    pub mqtt_listen: SocketAddr,
    /// Links of the village receivers: a profile or a mix (see [`crate::link::parse`]).
    pub profile: String,
}

/// The demo's default link mix: it shows real link behaviour and still delivers a bulletin in seconds.
pub const DEMO_PROFILE: &str = "4g:50,3g:25,edge:25";

/// The villages seeded on first run: (commune, village, languages in play order).
const VILLAGES: &[(&str, &str, &str)] = &[
    ("Xã Bản Hồ", "Thôn Bản Dền", "vi,hmn"),
    ("Xã Bản Hồ", "Thôn Tả Trung Hồ", "hmn,vi"),
    ("Xã Tả Van", "Thôn Tả Van Dáy", "vi,tyz"),
    ("Xã Tả Van", "Thôn Lồ Suối Tủng", "vi"),
];

/// Runs the demo until `cancel`.
pub async fn run(options: DemoOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let demo_dir = options.data_dir.join("demo");
    let config = ControllerConfig {
        data_dir: options.data_dir.clone(),
        http_listen: options.http_listen,
        mqtt_listen: options.mqtt_listen,
        ..ControllerConfig::default()
    };
    let http = tokio::net::TcpListener::bind(config.http_listen).await.with_context(|| {
        format!("cannot listen for HTTP on {} (port in use? try --http-listen)", config.http_listen)
    })?;
    let mqtt = tokio::net::TcpListener::bind(config.mqtt_listen).await.with_context(|| {
        format!("cannot listen for MQTT on {} (port in use? try --mqtt-listen)", config.mqtt_listen)
    })?;
    let opened = Controller::open(config, Arc::new(SystemClock), http, Some(mqtt)).await?;
    let controller = opened.controller;
    let http_addr = controller.http_addr().context("HTTP listener has no address")?;
    std::fs::create_dir_all(&demo_dir)?;
    let token_file = demo_dir.join("admin-token");
    if let Some(token) = &opened.new_admin_token {
        write_private(&token_file, token)?;
    }
    let password_file = demo_dir.join("admin-password");
    if let Some(password) = &opened.new_admin_password {
        write_private(&password_file, password)?;
    }
    let password = std::fs::read_to_string(&password_file).map(|p| p.trim().to_string()).unwrap_or_default();
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("{} is missing: this data directory was not made by the demo", token_file.display()))?
        .trim()
        .to_string();

    // Not a child of `cancel`: on Ctrl-C the receivers stop first (saying `offline` to a broker still there),
    // then the controller. The guard stops the controller if the demo ends early with an error.
    let controller_cancel = CancellationToken::new();
    let _stop_controller = controller_cancel.clone().drop_guard();
    let controller_task = tokio::spawn(controller.run(controller_cancel.clone()));

    let base = format!("http://{http_addr}");
    let api = ApiClient::new(&base, &token);
    let receivers_dir = demo_dir.join("receivers");
    if !receivers_dir.exists() {
        seed(&api, &receivers_dir).await.context("seeding the demo villages")?;
    }

    let mix = crate::link::parse(&options.profile)?;
    let mut fleet = Fleet::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&receivers_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    let profiles = mix.assign(entries.len());
    for (path, profile) in entries.iter().zip(profiles) {
        let id = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let config_toml = std::fs::read_to_string(path)?;
        fleet.spawn_device(
            SimReceiver {
                config_toml,
                state_dir: demo_dir.join("state").join(&id),
                wav_dir: Some(demo_dir.join("audio").join(&id)),
                heartbeat_ms: Some(10_000),
            },
            SimDevice::behind(profile),
        )?;
    }

    println!();
    println!("Loa demo is running: controller + embedded MQTT broker + {} simulated village receivers.", fleet.len());
    let links: Vec<String> = (0..fleet.len()).filter_map(|i| fleet.profile(i).map(|p| p.name.clone())).collect();
    println!("  links:       {} (emulated; --profile changes them)", links.join(", "));
    if password.is_empty() {
        println!("  web console: {base}/   (set the admin password: loa-controller --data-dir DIR user passwd admin)");
    } else {
        println!("  web console: {base}/   (log in as admin, password: {password})");
    }
    println!("  API:         {base}/api/v1/   (docs/api.md)");
    println!("  admin token: {token}");
    println!("  data:        {}", options.data_dir.display());
    println!("  played audio appears as WAV files under {}", demo_dir.join("audio").display());
    println!();
    println!("Try (see README.md):");
    println!("  export LOA=\"{base}/api/v1\" TOKEN=\"{token}\"");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" $LOA/areas");
    println!("Stop with Ctrl-C.");

    cancel.cancelled().await;
    fleet.shutdown().await;
    controller_cancel.cancel();
    controller_task.await??;
    Ok(())
}

async fn seed(api: &ApiClient, receivers_dir: &Path) -> anyhow::Result<()> {
    let province = api.create_area("Tỉnh Lào Cai", "province", None, Some("vi")).await?;
    let mut communes: Vec<(&str, i64)> = Vec::new();
    let tmp = receivers_dir.with_extension("partial");
    std::fs::create_dir_all(&tmp)?;
    for (commune, village, languages) in VILLAGES {
        let commune_id = match communes.iter().find(|(name, _)| name == commune) {
            Some((_, id)) => *id,
            None => {
                let id = api.create_area(commune, "commune", Some(province), None).await?;
                communes.push((commune, id));
                id
            }
        };
        let village_id = api.create_area(village, "village", Some(commune_id), Some(languages)).await?;
        let (id, config) = api.register_receiver(&format!("Loa {village}"), village_id).await?;
        write_private(&tmp.join(format!("{id}.toml")), &config)?;
    }
    std::fs::rename(&tmp, receivers_dir)?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
