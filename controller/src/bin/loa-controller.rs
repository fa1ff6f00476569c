//! `loa-controller`: the district or province controller. Settings come from `--config FILE`, then
//! `LOA_CONTROLLER_*` environment variables, then these flags. `loa-controller user add NAME --role R
//! [--area ID] [--emergency]` and `loa-controller user passwd NAME` manage console users from the shell (the
//! password is read from standard input with `--password-stdin`, or generated and printed once).
//! `loa-controller mosquitto-acl --out DIR` writes Mosquitto password, ACL and configuration files for the
//! registered fleet (for running on Mosquitto instead of the embedded broker).
//! `loa-controller rotate-key` moves to a new signing key, announced to receivers under the current one.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage console users (the controller may be running).
    #[command(subcommand)]
    User(UserCommand),
    /// Move to a new signing key: announce it to receivers under the current one (restart the controller after).
    RotateKey,
    /// Write Mosquitto `passwd`, `acl` and `loa.conf` for the registered receivers and the controller (run it
    /// again after registering receivers, then send mosquitto SIGHUP).
    MosquittoAcl {
        /// Data directory to read the receivers from (overrides the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Directory to write the files into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        /// Login name (3 to 32 of a-z 0-9 . _ -).
        name: String,
        /// admin, editor, approver, operator or viewer.
        #[arg(long)]
        role: String,
        /// Area id the user is scoped to (its subtree); the whole tree if left out.
        #[arg(long)]
        area: Option<i64>,
        /// Give the emergency right.
        #[arg(long)]
        emergency: bool,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (ends their sessions).
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// The password from standard input (one line), or a generated one and whether it was generated.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((loa_controller::store::users::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

fn user_command(config: &ControllerConfig, cmd: UserCommand) -> anyhow::Result<()> {
    use loa_controller::store::users::{hash_password, NewUser, Role, UserPatch};
    let store = loa_controller::store::Store::open(&config.data_dir)
        .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        UserCommand::Add { name, role, area, emergency, password_stdin } => {
            let role = Role::parse(&role)?;
            let (pw, generated) = password(password_stdin)?;
            let new = NewUser {
                username: name.clone(),
                display_name: None,
                password_hash: hash_password(&pw)?,
                role,
                area_id: area,
                emergency,
            };
            let id = store.create_user(&new, now)?;
            println!("user {name} (id {id}, {}) added", role.as_str());
            if generated {
                println!("password: {pw}   (shown once)");
            }
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (user, _) = store.user_by_name(&name)?.with_context(|| format!("there is no user {name}"))?;
            let (pw, generated) = password(password_stdin)?;
            let patch = UserPatch { password_hash: Some(hash_password(&pw)?), ..UserPatch::default() };
            store.update_user(user.id, &patch, now)?;
            println!("password of {name} changed; their sessions have ended");
            if generated {
                println!("password: {pw}   (shown once)");
            }
        }
    }
    Ok(())
}

/// Writes the Mosquitto files. Without `broker_password` in the settings, one is generated and printed once.
fn mosquitto_acl(config: &ControllerConfig, data_dir: Option<PathBuf>, out: &std::path::Path) -> anyhow::Result<()> {
    use loa_controller::broker::mosquitto::{write_files, FileSettings};
    let data_dir = data_dir.unwrap_or_else(|| config.data_dir.clone());
    let store = loa_controller::store::Store::open(&data_dir)
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let topics = loa_protocol::Topics::new(&config.topic_root).context("topic_root")?;
    let (controller_password, generated) = match &config.broker_password {
        Some(p) => (p.clone(), false),
        None => (loa_controller::store::users::generate_password(), true),
    };
    let port = match &config.broker {
        Some(url) => loa_protocol::BrokerUrl::parse(url).map(|u| u.port).context("broker")?,
        None => 1883,
    };
    let settings =
        FileSettings { topics, controller_id: config.controller_client_id.clone(), controller_password, port };
    let written = write_files(&store, &settings, out)?;
    println!(
        "wrote {}, {} and {} ({} receivers)",
        written.passwd.display(),
        written.acl.display(),
        written.conf.display(),
        written.receivers
    );
    if !written.without_hash.is_empty() {
        println!(
            "not in passwd (registered before Mosquitto hashes were kept; register them again): {}",
            written.without_hash.join(", ")
        );
    }
    if generated {
        println!(
            "controller MQTT password: {}   (shown once; set broker_password or LOA_CONTROLLER_BROKER_PASSWORD to it)",
            settings.controller_password
        );
    }
    Ok(())
}

/// `rotate-key`: see `loa_controller::keys::rotate`.
fn rotate_key(config: &ControllerConfig) -> anyhow::Result<()> {
    let now = loa_protocol::Timestamp::from_datetime(chrono::Utc::now())?;
    let r = loa_controller::keys::rotate(&config.data_dir, now)?;
    println!("new signing key {} (public key {})", r.new.kid(), loa_controller::keys::public_key_hex(&r.new));
    println!("announced under the old key {}; restart the controller to sign with the new key and", r.old.kid());
    println!("publish the announcement to every receiver (receivers registered from now on get the new key)");
    Ok(())
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars(), args.flags())?;
    match args.command {
        Some(Command::User(cmd)) => return user_command(&config, cmd),
        Some(Command::RotateKey) => return rotate_key(&config),
        Some(Command::MosquittoAcl { data_dir, out }) => return mosquitto_acl(&config, data_dir, &out),
        None => {}
    }
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
    if let Some(password) = opened.new_admin_password {
        println!("console user: admin   password: {password}   (shown once; change it after logging in)");
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
