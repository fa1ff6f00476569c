//! `loa-sim`: simulated Loa receivers. `loa-sim demo` is the README's main job: a controller with its embedded
//! broker and SQLite, seeded with demo villages, and one simulated receiver per village behind emulated links.
//! `loa-sim run` keeps a fleet of receivers running against any controller; `loa-sim bench wire|bulk|emergency|fleet` are
//! the benchmarks and `loa-sim soak` the long run under faults (docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loa_firmware_sim::bench::{bulk, emergency, fleet as fleet_bench, setup::ReceiverTuning, wire};
use loa_firmware_sim::demo::{self, DemoOptions};
use loa_firmware_sim::fleet::{ClockFault, PowerCuts};
use loa_firmware_sim::link::{self, LinkProfile, OutageSchedule};
use loa_firmware_sim::run::{self, RunOptions};
use loa_firmware_sim::soak;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "loa-sim", version, about = "Simulated Loa receivers, the demo and the fleet benchmarks")]
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
        /// Links of the village receivers: a profile or a mix (ethernet, wifi, 4g, 3g, edge, gprs).
        #[arg(long, default_value = demo::DEMO_PROFILE)]
        profile: String,
    },
    /// A standing fleet of receivers against a running controller, each behind an emulated link.
    Run {
        /// Controller base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        controller: String,
        /// Admin token (default: the LOA_ADMIN_TOKEN environment variable).
        #[arg(long)]
        admin_token: Option<String>,
        /// Number of receivers.
        #[arg(long, default_value_t = 10)]
        receivers: usize,
        /// Link profile or mix, e.g. 3g or 3g:50,edge:30,gprs:20.
        #[arg(long, default_value = "3g")]
        profile: String,
        /// Register new receivers in this area.
        #[arg(long, conflicts_with = "areas")]
        area_id: Option<i64>,
        /// Register new receivers in these areas, round robin (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        areas: Vec<i64>,
        /// Receiver configs (reused on the next run) and state directories.
        #[arg(long, default_value = "loa-sim-data")]
        data_dir: PathBuf,
        /// Capture plays as WAV files under this directory (one folder per receiver).
        #[arg(long)]
        wav_dir: Option<PathBuf>,
        /// Heartbeat interval of the receivers, ms.
        #[arg(long)]
        heartbeat_ms: Option<u64>,
        /// Clock of every receiver: ok, 1970, +1h, -1h or an offset in ms.
        #[arg(long, default_value = "ok")]
        clock: ClockFault,
        /// Random outages and disconnects on every link (about every N seconds).
        #[arg(long)]
        outages_every_s: Option<u64>,
        /// Random power cuts on every receiver (about every N seconds; power back after 5-120 s).
        #[arg(long)]
        power_cuts_every_s: Option<u64>,
        /// Seconds between status lines.
        #[arg(long, default_value_t = 10)]
        status_every_s: u64,
    },
    /// A long run under faults (loss, link failures, power cuts, a broker restart, a controller SIGKILL), judged
    /// for late, missing, duplicate and corrupt plays and lost reports (the controller runs as a child process:
    /// build loa-controller first). Fails if anything was lost.
    Soak {
        /// The suite's short version: 100 receivers, 2 minutes (other flags still apply on top).
        #[arg(long)]
        short: bool,
        /// Number of receivers.
        #[arg(long)]
        receivers: Option<usize>,
        /// Minutes during which bulletins keep being scheduled.
        #[arg(long)]
        minutes: Option<f64>,
        /// embedded or mosquitto.
        #[arg(long, default_value = "mosquitto")]
        broker: String,
        /// Link profile mix.
        #[arg(long)]
        profile: Option<String>,
        /// Segment loss on every link, percent.
        #[arg(long)]
        loss_percent: Option<f64>,
        /// Share of receivers losing power after each schedule, percent.
        #[arg(long)]
        power_cut_percent: Option<f64>,
        /// Keep the data, logs and receiver disks in this folder.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// The loa-controller binary (default: beside loa-sim).
        #[arg(long)]
        controller_exe: Option<PathBuf>,
        /// Print one JSON object of the figures as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks over emulated links.
    Bench {
        #[command(subcommand)]
        scenario: Bench,
    },
}

#[derive(Debug, clap::Args)]
struct BenchCommon {
    /// Print one JSON object of the figures as the last line.
    #[arg(long)]
    json: bool,
    /// Override the receivers' window_chunks.
    #[arg(long)]
    window_chunks: Option<u32>,
    /// Override the receivers' chunk_timeout_ms.
    #[arg(long)]
    chunk_timeout_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Bytes per receiver per audio minute at the MQTT and TCP levels, next to the Ogg Opus file size.
    Wire {
        #[command(flatten)]
        common: BenchCommon,
        /// Profiles and receivers per profile.
        #[arg(long, default_value = "3g:3,gprs:3")]
        receivers: String,
        /// Bulletin length, s.
        #[arg(long, default_value_t = 120)]
        seconds: u32,
    },
    /// Time to air of an emergency (API call → first speech at each sink) while a long bulletin downloads.
    Emergency {
        #[command(flatten)]
        common: BenchCommon,
        /// Link profiles, one run each.
        #[arg(long, default_value = "3g,gprs")]
        profiles: String,
        /// Receivers per run.
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        /// Length of the long normal bulletin, s.
        #[arg(long, default_value_t = 600)]
        normal_seconds: u32,
        /// Length of the warning, s.
        #[arg(long, default_value_t = 20)]
        warning_seconds: u32,
        /// Where the receivers' disks (and the controller's data) go: default /dev/shm when there is one, so
        /// that a thousand receivers do not queue behind each other's fsyncs on one shared disk (each real
        /// receiver has its own SD card).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Delivery time of a 5-minute bulletin over gprs against file size ÷ link rate.
    Bulk {
        #[command(flatten)]
        common: BenchCommon,
        /// Link profile.
        #[arg(long, default_value = "gprs")]
        profile: String,
        /// Bulletin length, s.
        #[arg(long, default_value_t = 300)]
        seconds: u32,
        /// The link: `emulated` (user-space relay), `kernel` (kernel TCP between network namespaces; root, and
        /// loa-receiver built beside loa-sim) or `both`, one after the other.
        #[arg(long, default_value = "emulated")]
        link: String,
    },
    /// Many receivers on direct connections, then one bulletin to all: time until all are ready, controller CPU and
    /// peak RSS (the controller runs as a child process: build loa-controller first).
    Fleet {
        /// Print one JSON object of the figures per broker, one per line, after the table.
        #[arg(long)]
        json: bool,
        /// Number of receivers.
        #[arg(long, default_value_t = 10_000)]
        receivers: usize,
        /// embedded, mosquitto or both (one run each).
        #[arg(long, default_value = "both")]
        broker: String,
        /// Skip the reconnect storm (the broker restarted under the whole fleet) at the end.
        #[arg(long)]
        no_storm: bool,
    },
}

fn tuning(c: &BenchCommon) -> ReceiverTuning {
    ReceiverTuning { window_chunks: c.window_chunks, chunk_timeout_ms: c.chunk_timeout_ms }
}

/// `3g:3,gprs:3` → profiles and counts.
fn groups(spec: &str) -> anyhow::Result<Vec<(LinkProfile, usize)>> {
    spec.split(',')
        .map(|part| {
            let (name, n) = part.split_once(':').unwrap_or((part, "1"));
            Ok((LinkProfile::named(name)?, n.trim().parse()?))
        })
        .collect()
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
        Cmd::Demo { data_dir, http_listen, mqtt_listen, profile } => {
            link::parse(&profile)?;
            demo::run(DemoOptions { data_dir, http_listen, mqtt_listen, profile }, cancel).await
        }
        Cmd::Run {
            controller,
            admin_token,
            receivers,
            profile,
            area_id,
            areas,
            data_dir,
            wav_dir,
            heartbeat_ms,
            clock,
            outages_every_s,
            power_cuts_every_s,
            status_every_s,
        } => {
            let admin_token = admin_token.or_else(|| std::env::var("LOA_ADMIN_TOKEN").ok()).ok_or_else(|| {
                anyhow::anyhow!("give the controller's admin token with --admin-token or LOA_ADMIN_TOKEN")
            })?;
            let options = RunOptions {
                controller,
                admin_token,
                receivers,
                profile,
                areas: area_id.map(|a| vec![a]).unwrap_or(areas),
                data_dir,
                wav_dir,
                heartbeat_ms,
                clock,
                outages: outages_every_s
                    .map(|s| OutageSchedule { mean_interval_ms: s * 1000, ..OutageSchedule::default() }),
                power_cuts: power_cuts_every_s
                    .map(|s| PowerCuts { mean_interval_ms: s * 1000, ..PowerCuts::default() }),
                status_every: Duration::from_secs(status_every_s.max(1)),
            };
            run::run(options, cancel).await
        }
        Cmd::Soak {
            short,
            receivers,
            minutes,
            broker,
            profile,
            loss_percent,
            power_cut_percent,
            work_dir,
            controller_exe,
            json,
        } => {
            let mut o = if short { soak::SoakOptions::short() } else { soak::SoakOptions::default() };
            let [broker] = fleet_bench::BrokerKind::parse_choice(&broker)?[..] else {
                anyhow::bail!("the soak runs with one broker: embedded or mosquitto");
            };
            o.broker = broker;
            o.receivers = receivers.unwrap_or(o.receivers);
            if let Some(m) = minutes {
                anyhow::ensure!(m > 0.0 && m.is_finite(), "--minutes must be positive");
                o.duration = Duration::from_secs_f64(m * 60.0);
            }
            o.profile = profile.unwrap_or(o.profile);
            link::parse(&o.profile)?;
            o.loss_percent = loss_percent.unwrap_or(o.loss_percent);
            o.power_cut_percent = power_cut_percent.unwrap_or(o.power_cut_percent);
            o.work_dir = work_dir;
            o.controller_exe = controller_exe;
            tokio::select! {
                r = soak::run(o) => {
                    let figures = r?;
                    if json {
                        println!("{figures}");
                    }
                    Ok(())
                }
                _ = cancel.cancelled() => Ok(()),
            }
        }
        Cmd::Bench { scenario: Bench::Wire { common, receivers, seconds } } => {
            let options = wire::WireOptions { groups: groups(&receivers)?, seconds, tuning: tuning(&common) };
            tokio::select! {
                r = wire::run(options, common.json) => r.map(|_| ()),
                _ = cancel.cancelled() => Ok(()),
            }
        }
        Cmd::Bench {
            scenario: Bench::Emergency { common, profiles, receivers, normal_seconds, warning_seconds, state_dir },
        } => {
            let options = emergency::EmergencyOptions {
                profiles: profiles.split(',').map(|p| LinkProfile::named(p.trim())).collect::<Result<_, _>>()?,
                receivers,
                normal_seconds,
                warning_seconds,
                state_dir: state_dir.or_else(emergency::default_state_dir),
            };
            tokio::select! {
                r = emergency::run(options, common.json) => r.map(|_| ()),
                _ = cancel.cancelled() => Ok(()),
            }
        }
        Cmd::Bench { scenario: Bench::Bulk { common, profile, seconds, link } } => {
            let options = bulk::BulkOptions {
                profile: LinkProfile::named(&profile)?,
                seconds,
                tuning: tuning(&common),
                links: bulk::parse_links(&link).map_err(anyhow::Error::msg)?,
            };
            tokio::select! {
                r = bulk::run(options, common.json) => r.map(|_| ()),
                _ = cancel.cancelled() => Ok(()),
            }
        }
        Cmd::Bench { scenario: Bench::Fleet { json, receivers, broker, no_storm } } => {
            let options = fleet_bench::FleetOptions {
                receivers,
                storm: !no_storm,
                brokers: fleet_bench::BrokerKind::parse_choice(&broker)?,
                ..fleet_bench::FleetOptions::default()
            };
            tokio::select! {
                r = fleet_bench::run(options, json) => r.map(|_| ()),
                _ = cancel.cancelled() => Ok(()),
            }
        }
    }
}
