//! `loa-receiver`: runs one Loa receiver.
//!
//! `loa-receiver --config FILE [--state-dir DIR] [--sink alsa[:DEV]|wav:DIR|null]`. Settings come from the file,
//! then `LOA_RECEIVER_*` environment variables, then these flags. Logs go to stderr (`RUST_LOG` filters,
//! default `info`). SIGTERM or Ctrl-C stops it cleanly (exit 0); a `restart` command from the controller exits
//! with 75 so that the service manager (systemd `Restart=always`) starts it again; bad configuration exits 78.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use loa_receiver::{Receiver, ReceiverConfig, SystemClock};
use tokio_util::sync::CancellationToken;

/// Runs a Loa receiver: caches signed bulletins from the controller and plays them on time.
#[derive(Debug, Parser)]
#[command(name = "loa-receiver", version)]
struct Args {
    /// The receiver's TOML configuration (as returned at registration).
    #[arg(long)]
    config: PathBuf,
    /// Where the plan, manifests, reports and audio cache are kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Audio output: null, wav:DIR, alsa or alsa:DEVICE.
    #[arg(long)]
    sink: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<loa_receiver::ReceiverError>().map_or(1, |e| e.exit_code());
            tracing::error!(error = %e, code, "loa-receiver stopped");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg =
        ReceiverConfig::load(Some(&args.config), std::env::vars()).map_err(loa_receiver::ReceiverError::from)?;
    if let Some(dir) = args.state_dir {
        cfg.state_dir = dir;
    }
    if let Some(sink) = args.sink {
        cfg.sink = sink;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let receiver = Receiver::from_config(cfg, Arc::new(SystemClock))?;
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        receiver.run(cancel).await?;
        Ok(())
    })
}

async fn stop_on_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the receiver");
                let _ = tokio::signal::ctrl_c().await;
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    cancel.cancel();
}
