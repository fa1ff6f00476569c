//! Harness for Loa's end-to-end tests: start a real controller in-process on free ports (embedded broker or an
//! external Mosquitto the harness starts), stop and restart it on the same ports, find the shared fixtures, and
//! wait on conditions with deadlines. The tests themselves are in `core_loop.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use loa_controller::clock::SystemClock;
use loa_controller::config::ControllerConfig;
use loa_controller::server::Controller;
use loa_firmware_sim::api::ApiClient;
use tokio_util::sync::CancellationToken;

/// `../shared/fixtures/audio/NAME` beside the project root.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/audio").join(name)
}

/// The bulletin the end-to-end tests upload: the shared 30 s Vietnamese fixture, or, where `../shared` is absent,
/// 20 s of a generated speech-like signal (syllable-rate modulated harmonics) written into `dir`.
pub fn bulletin_audio(dir: &Path) -> PathBuf {
    let shared = fixture("bulletin-vi-22k-mono.wav");
    if shared.is_file() {
        return shared;
    }
    eprintln!("../shared/fixtures/audio is absent: using a generated test signal");
    let path = dir.join("generated-bulletin.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for n in 0..22_050 * 20 {
        let t = n as f32 / 22_050.0;
        let pitch = 140.0 + 30.0 * (t * 0.7).sin();
        let envelope = (0.5 + 0.5 * (t * 2.0 * std::f32::consts::PI * 4.0).sin()).powi(2);
        let voice: f32 = (1..8).map(|k| (2.0 * std::f32::consts::PI * pitch * k as f32 * t).sin() / k as f32).sum();
        w.write_sample((voice * envelope * 6000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=loa_receiver=debug`); quiet otherwise.
pub fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 50 ms until it yields `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Now, UTC ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Waits until the controller shows every receiver in `ids` online.
pub async fn wait_online(api: &ApiClient, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    wait_for("every receiver online", timeout, || async {
        for id in ids {
            if api.get(&format!("/receivers/{id}")).await.ok()?["online"] != serde_json::json!(true) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Which broker a test controller uses.
#[derive(Debug, Clone)]
pub enum BrokerKind {
    /// The broker embedded in the controller.
    Embedded,
    /// An external broker at this URL.
    External(String),
    /// The broker embedded in the controller, its public listener speaking TLS with this PEM certificate and key.
    EmbeddedTls {
        /// `mqtt_tls_cert_file`.
        cert_file: PathBuf,
        /// `mqtt_tls_key_file`.
        key_file: PathBuf,
    },
}

/// A controller running in this process.
pub struct TestController {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token.
    pub token: String,
    /// The MQTT address receivers use.
    pub mqtt_url: String,
    /// Dispatch's counters (chunks sent per receiver, plans, reports).
    pub stats: Arc<std::sync::Mutex<loa_controller::dispatch::Stats>>,
    data_dir: PathBuf,
    http_port: u16,
    mqtt_port: u16,
    broker: BrokerKind,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), loa_controller::server::ServerError>>,
}

impl TestController {
    /// Starts a controller on fresh ports with its data in `data_dir`.
    pub async fn start(data_dir: &Path, broker: BrokerKind) -> anyhow::Result<Self> {
        Self::start_on(data_dir, broker, free_port(), free_port(), None).await
    }

    async fn start_on(
        data_dir: &Path,
        broker: BrokerKind,
        http_port: u16,
        mqtt_port: u16,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut config = ControllerConfig {
            data_dir: data_dir.to_path_buf(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], http_port)),
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
            replan_interval_ms: 1000,
            ..ControllerConfig::default()
        };
        match &broker {
            BrokerKind::Embedded => {}
            BrokerKind::External(url) => config.broker = Some(url.clone()),
            BrokerKind::EmbeddedTls { cert_file, key_file } => {
                config.mqtt_tls_cert_file = Some(cert_file.clone());
                config.mqtt_tls_key_file = Some(key_file.clone());
            }
        }
        let http = bind_retry(config.http_listen).await?;
        let mqtt = match broker {
            BrokerKind::Embedded | BrokerKind::EmbeddedTls { .. } => Some(bind_retry(config.mqtt_listen).await?),
            BrokerKind::External(_) => None,
        };
        let opened = Controller::open(config.clone(), Arc::new(SystemClock), http, mqtt).await?;
        let token = match (opened.new_admin_token, token) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => bail!("no admin token"),
        };
        let mqtt_url = config.receiver_broker_url(opened.controller.mqtt_addr());
        let stats = opened.controller.dispatch_stats();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(opened.controller.run(cancel.clone()));
        let c = TestController {
            base: format!("http://127.0.0.1:{http_port}"),
            token,
            mqtt_url,
            stats,
            data_dir: data_dir.to_path_buf(),
            http_port,
            mqtt_port,
            broker,
            cancel,
            task,
        };
        let api = c.api();
        wait_for("the controller's HTTP API", Duration::from_secs(10), || {
            let api = api.clone();
            async move { api.get("/areas").await.ok() }
        })
        .await?;
        Ok(c)
    }

    /// Dispatch's counters so far.
    pub fn dispatch_stats(&self) -> loa_controller::dispatch::Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Chunks dispatch has sent to `receiver` so far.
    pub fn chunks_sent_to(&self, receiver: &str) -> u64 {
        self.stats.lock().map(|s| s.chunks_to.get(receiver).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// A client of its API.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.base, &self.token)
    }

    /// Stops it (graceful), keeping its data and ports for [`TestController::restart`].
    pub async fn stop(self) -> anyhow::Result<StoppedController> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.context("controller did not stop")???;
        Ok(StoppedController {
            data_dir: self.data_dir,
            http_port: self.http_port,
            mqtt_port: self.mqtt_port,
            broker: self.broker,
            token: self.token,
        })
    }
}

/// A stopped controller's data and ports.
pub struct StoppedController {
    data_dir: PathBuf,
    http_port: u16,
    mqtt_port: u16,
    broker: BrokerKind,
    token: String,
}

impl StoppedController {
    /// Starts it again on the same ports with the same data.
    pub async fn restart(self) -> anyhow::Result<TestController> {
        TestController::start_on(&self.data_dir, self.broker, self.http_port, self.mqtt_port, Some(self.token)).await
    }
}

async fn bind_retry(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("bind {addr}")))
}

/// A Mosquitto broker on a free loopback port, stopped on drop.
pub struct Mosquitto {
    child: Child,
    /// `mqtt://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (from Debian's package), or `None` when it is not installed and `LOA_REQUIRE_TOOLS` is
    /// unset (then the test says it skipped).
    pub async fn start() -> anyhow::Result<Option<Self>> {
        Self::start_with("allow_anonymous true\n").await
    }

    /// Like [`Mosquitto::start`], with logins from `passwd` and topic permissions from `acl` (the files
    /// `loa-controller mosquitto-acl` writes), no anonymous clients and client ids forced to user names, as the
    /// generated `loa.conf` sets. (`user root` keeps a root test run from dropping to a user that cannot read
    /// the files; it does nothing for other users.)
    pub async fn start_secured(passwd: &Path, acl: &Path) -> anyhow::Result<Option<Self>> {
        let conf = format!(
            "user root\nallow_anonymous false\npassword_file {}\nacl_file {}\nuse_username_as_clientid true\n",
            passwd.display(),
            acl.display()
        );
        Self::start_with(&conf).await
    }

    async fn start_with(settings: &str) -> anyhow::Result<Option<Self>> {
        let program =
            ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|p| Command::new(p).arg("-h").output().is_ok());
        let Some(program) = program else {
            if std::env::var_os("LOA_REQUIRE_TOOLS").is_some() {
                bail!("mosquitto is required (LOA_REQUIRE_TOOLS is set)");
            }
            eprintln!("skipping: mosquitto is not installed");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{settings}persistence false\nmessage_size_limit 1048576\n"),
        )?;
        let child = Command::new(program).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let m = Mosquitto { child, url: format!("mqtt://127.0.0.1:{port}"), _dir: dir };
        wait_for("mosquitto to listen", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await?;
        Ok(Some(m))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
