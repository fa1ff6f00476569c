//! `loa-controller`: the district or province controller. Settings come from `--config FILE`, then
//! `LOA_CONTROLLER_*` environment variables, then these flags.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use loa_controller::clock::SystemClock;
use loa_controller::config::ControllerConfig;
use loa_controller::server::Controller;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "loa-controller", version, about = "Loa controller: HTTP API, schedules, MQTT dispatch")]
struct Args {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (database, bulletins, signing key).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 0.0.0.0:8080.
    #[arg(long)]
    http_listen: Option<String>,
    /// Embedded MQTT broker listen address, e.g. 0.0.0.0:1883.
    #[arg(long)]
    mqtt_listen: Option<String>,
    /// Use an external broker instead of the embedded one, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    broker: Option<String>,
}

impl Args {
    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        if let Some(d) = &self.data_dir {
            flags.push(("data_dir", d.display().to_string()));
        }
        if let Some(v) = &self.http_listen {
            flags.push(("http_listen", v.clone()));
        }
        if let Some(v) = &self.mqtt_listen {
            flags.push(("mqtt_listen", v.clone()));
        }
        if let Some(v) = &self.broker {
            flags.push(("broker", v.clone()));
        }
        flags
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rumqttd logs at ERROR in a tight loop when the process runs out of file descriptors (gigabytes of log in
    // minutes) and at ERROR for every peer that leaves abruptly; the relay in front of it (`broker.rs`) logs
    // accepts and failures itself, so rumqttd's own log is off unless RUST_LOG asks for it.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .init();
    let args = Args::parse();
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars(), args.flags())?;
    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {} (is the port in use?)", config.http_listen))?;
    let mqtt = if config.broker.is_none() {
        Some(
            tokio::net::TcpListener::bind(config.mqtt_listen)
                .await
                .with_context(|| format!("cannot listen for MQTT on {} (is the port in use?)", config.mqtt_listen))?,
        )
    } else {
        None
    };
    let opened = Controller::open(config, Arc::new(SystemClock), http, mqtt).await?;
    let controller = opened.controller;
    if let Some(token) = opened.new_admin_token {
        println!("admin token: {token}   (shown once; keep it safe)");
    }
    if let Some(addr) = controller.http_addr() {
        println!("web: http://{addr}/   API: http://{addr}/api/v1/");
    }
    if let Some(addr) = controller.mqtt_addr() {
        println!("mqtt: embedded broker on {addr}");
    }

    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(cancel.clone()));
    controller.run(cancel).await?;
    Ok(())
}

async fn shutdown_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        } else {
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    cancel.cancel();
}
