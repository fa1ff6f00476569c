//! `loa-sim`: simulated Loa receivers. `loa-sim demo` is the README's main job: a controller with its embedded
//! broker and SQLite, seeded with demo villages, and one simulated receiver per village.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use loa_firmware_sim::demo::{self, DemoOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "loa-sim", version, about = "Simulated Loa receivers and the demo")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Controller (embedded broker, SQLite) + simulated village receivers, seeded on first run.
    Demo {
        /// Data directory.
        #[arg(long, default_value = "loa-demo")]
        data_dir: PathBuf,
        /// HTTP (web and API) listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_listen: SocketAddr,
        /// Embedded MQTT broker listen address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,loa_controller=info".into()),
        )
        .init();
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    #[cfg(unix)]
    {
        let token = cancel.clone();
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::spawn(async move {
                term.recv().await;
                token.cancel();
            });
        }
    }
    match Args::parse().command {
        Cmd::Demo { data_dir, http_listen, mqtt_listen } => {
            demo::run(DemoOptions { data_dir, http_listen, mqtt_listen }, cancel).await
        }
    }
}
