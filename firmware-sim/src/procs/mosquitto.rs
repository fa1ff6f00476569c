//! Mosquitto as a child process for the fleet benchmark and the soak, run as a deployment runs it: no anonymous
//! clients, client ids forced to user names, logins and topic permissions from the files that
//! `loa-controller mosquitto-acl` writes from the controller's data directory. [`MosquittoProcess::start`]
//! writes them (the controller alone, before any receiver is registered) and starts Mosquitto on them;
//! after registering receivers, [`MosquittoProcess::allow_registered`] writes them again and sends SIGHUP, as
//! docs/protocol.md tells an operator to do.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::{free_port, tail, terminate};

/// The controller's files and the password it logs in with.
struct Auth {
    /// `loa-controller`.
    exe: PathBuf,
    /// Its data directory.
    data_dir: PathBuf,
    /// Where `passwd`, `acl` and `loa.conf` are written.
    out: PathBuf,
    /// The controller's password on Mosquitto (`broker_password`).
    password: String,
}

impl Auth {
    /// Runs `loa-controller mosquitto-acl` for the receivers registered now.
    fn write_files(&self) -> anyhow::Result<()> {
        let out = Command::new(&self.exe)
            .arg("mosquitto-acl")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--out")
            .arg(&self.out)
            .env("LOA_CONTROLLER_BROKER_PASSWORD", &self.password)
            .env("NO_COLOR", "1")
            .output()?;
        if !out.status.success() {
            bail!(
                "loa-controller mosquitto-acl failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Mosquitto as a child process on a free loopback port with the controller's logins and permissions (see the
/// module documentation), keeping retained messages across restarts (persistence in its folder, saved when it
/// stops), killed when dropped.
pub struct MosquittoProcess {
    child: Child,
    program: &'static str,
    conf: PathBuf,
    log_path: PathBuf,
    port: u16,
    auth: Auth,
}

impl MosquittoProcess {
    /// Starts it with its config, log and persistence file in `dir`, and the logins of the `loa-controller`
    /// `exe` whose data directory is `data_dir` (written there now: the controller alone, with a fresh password
    /// that [`Self::controller_password`] gives).
    pub async fn start(dir: &Path, exe: &Path, data_dir: &Path) -> anyhow::Result<MosquittoProcess> {
        let program = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|p| Command::new(p).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
            .context("mosquitto is not installed (apt-get install mosquitto)")?;
        let auth = Auth {
            exe: exe.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            out: dir.join("auth"),
            password: format!("bench-{:032x}", rand::random::<u128>()),
        };
        auth.write_files()?;
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        // `user root` keeps a root run from dropping to a user that cannot read the files (no effect otherwise).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nuser root\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
                 use_username_as_clientid true\nmessage_size_limit 1048576\npersistence true\npersistence_location {}/\n",
                auth.out.join("passwd").display(),
                auth.out.join("acl").display(),
                dir.display()
            ),
        )?;
        let log_path = dir.join("mosquitto.log");
        std::fs::write(&log_path, "")?;
        let child = Self::spawn(program, &conf, &log_path)?;
        let mut m = MosquittoProcess { child, program, conf, log_path, port, auth };
        m.wait_listening().await?;
        Ok(m)
    }

    /// The controller's password on this Mosquitto.
    pub fn controller_password(&self) -> &str {
        &self.auth.password
    }

    /// Lets in the receivers registered since: writes the files again and sends SIGHUP (Mosquitto rereads them).
    pub fn allow_registered(&self) -> anyhow::Result<()> {
        self.auth.write_files()?;
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid")?);
        kill(pid, Signal::SIGHUP).context("SIGHUP to mosquitto")?;
        Ok(())
    }

    fn spawn(program: &str, conf: &Path, log_path: &Path) -> anyhow::Result<Child> {
        let log = OpenOptions::new().create(true).append(true).open(log_path)?;
        Ok(Command::new(program).arg("-c").arg(conf).stdout(Stdio::null()).stderr(log).spawn()?)
    }

    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("mosquitto exited ({status}): {}", tail(&self.log_path, 15));
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {}: {}", self.port, tail(&self.log_path, 15));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM: it saves its retained messages) and starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, Duration::from_secs(30)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.child = Self::spawn(self.program, &self.conf, &self.log_path)?;
            match self.wait_listening().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

impl Drop for MosquittoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
