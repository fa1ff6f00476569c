//! Child processes run by the fleet benchmark and the soak: the real `loa-controller` binary
//! ([`ControllerProcess`]) and Mosquitto with the controller's logins ([`MosquittoProcess`], in `mosquitto`), each killed when dropped and restartable on the
//! same ports and data (a graceful SIGTERM, or SIGKILL for a crash); and what `/proc` says about a process
//! ([`Proc`]: CPU seconds, peak memory, open files), so the figures of a child are its own.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::api::ApiClient;

mod mosquitto;

pub use mosquitto::MosquittoProcess;

/// Utime + stime in clock ticks from the text of `/proc/PID/stat` (fields 14 and 15; the command name in
/// parentheses may hold spaces and parentheses, so fields are counted after its last `)`).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` value such as `VmHWM` or `VmRSS`, or a plain count such as `Threads`, from `/proc/PID/status`.
pub fn status_value(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Reads a process's counters from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    /// The process.
    pub pid: u32,
    /// `CLK_TCK` ([`clock_ticks`]).
    pub ticks_per_s: f64,
}

impl Proc {
    /// This process.
    pub fn me() -> Proc {
        Proc { pid: std::process::id(), ticks_per_s: clock_ticks() }
    }

    /// Process `pid`.
    pub fn of(pid: u32) -> Proc {
        Proc { pid, ticks_per_s: clock_ticks() }
    }

    /// CPU seconds used so far (user + system); 0 once it is gone.
    pub fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        stat_cpu_ticks(&stat).unwrap_or(0) as f64 / self.ticks_per_s
    }

    /// A value of `/proc/PID/status` (0 if unreadable).
    pub fn status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status_value(&status, key).unwrap_or(0)
    }

    /// A `kB` value of `/proc/PID/status` in MB.
    pub fn mb(&self, key: &str) -> f64 {
        self.status(key) as f64 / 1024.0
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map(|d| d.count()).unwrap_or(0)
    }

    /// The soft `Max open files` (`/proc/PID/limits`).
    pub fn fd_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        limits.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, the Linux value, if that fails).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Raises this process's open-file limit (children inherit it): the hard limit too when privileged, else the
/// soft limit up to the hard one. Returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let want = nr_open.unwrap_or(hard).min(262_144).max(hard);
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, want).is_ok() {
        return want;
    }
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(hard)
}

/// A number from a one-line file such as `/proc/sys/kernel/pid_max`.
pub fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// TCP connections established to local `port` now, from `/proc/net/tcp` and `/proc/net/tcp6` of this
/// network namespace (the broker's side of each client connection).
pub fn established_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|path| count_established(&std::fs::read_to_string(path).unwrap_or_default(), port))
        .sum()
}

/// Lines of a `/proc/net/tcp` table whose local port is `port` and state `01` (established).
pub fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port =
                fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// Samples the connections established to the broker's `port` every 250 ms for `window` (or until `n` are
/// back); returns seconds until `n` were connected again (if they were) and the peak reconnect rate, per second.
pub async fn watch_reconnects(port: u16, n: usize, window: Duration) -> (Option<f64>, f64) {
    let since = Instant::now();
    let (mut last, mut last_t, mut peak) = (established_to(port), 0.0f64, 0.0f64);
    while since.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (now, t) = (established_to(port), since.elapsed().as_secs_f64());
        if now > last {
            peak = peak.max((now - last) as f64 / (t - last_t).max(0.001));
        }
        (last, last_t) = (now, t);
        if now >= n {
            return (Some(t), peak);
        }
    }
    (None, peak)
}

/// Restarts the broker under a connected fleet: Mosquitto (SIGTERM, start again on the same port), or, with
/// the embedded broker, the controller itself (SIGTERM, start again on the same data and ports). Returns how
/// long it took until the broker listened (Mosquitto) or the API answered again (embedded).
pub async fn restart_broker(
    mosquitto: Option<&mut MosquittoProcess>,
    ctl: &mut ControllerProcess,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    match mosquitto {
        Some(m) => {
            m.restart().await.context("mosquitto did not come back")?;
            println!("  broker (Mosquitto) restarted in {} ms", t.elapsed().as_millis());
        }
        None => {
            ctl.terminate().await?;
            ctl.restart().await.context("the controller (embedded broker) did not come back")?;
            println!("  controller with its embedded broker restarted in {} ms", t.elapsed().as_millis());
        }
    }
    Ok(t.elapsed())
}

/// A loopback port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends SIGTERM and waits up to `grace` for the child to exit; then SIGKILL.
async fn terminate(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
    if child.try_wait()?.is_none() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            child.wait()?;
            bail!("pid {pid} did not stop within {grace:?} of SIGTERM; killed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `loa-controller` as a child process, with its log in `dir/controller.log`, killed when dropped.
pub struct ControllerProcess {
    child: Child,
    exe: PathBuf,
    args: Vec<OsString>,
    /// Extra environment (the broker password).
    env: Vec<(String, String)>,
    log_path: PathBuf,
    /// Its API, as the first-run admin.
    pub api: ApiClient,
    /// The port of its embedded broker (`None` with an external broker).
    pub mqtt_port: Option<u16>,
}

impl ControllerProcess {
    /// `loa-controller` in the same folder as this program (how cargo lays out a target directory).
    pub fn exe_beside_me() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe()?.with_file_name("loa-controller");
        if !exe.is_file() {
            bail!(
                "{} is missing: build it first: cargo build --release -p loa-controller -p loa-firmware-sim",
                exe.display()
            );
        }
        Ok(exe)
    }

    /// Starts `exe` with its data in `dir/data` (the `data_dir` a [`MosquittoProcess`] was started with) on free
    /// loopback ports: its embedded broker, or `mosquitto` with the controller's login there. Returns once its API
    /// answers, with the admin token it printed on first start.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        mosquitto: Option<&MosquittoProcess>,
    ) -> anyhow::Result<ControllerProcess> {
        let broker = mosquitto.map(|m| m.url());
        let env: Vec<(String, String)> = mosquitto
            .map(|m| vec![("LOA_CONTROLLER_BROKER_PASSWORD".to_string(), m.controller_password().to_string())])
            .unwrap_or_default();
        let http = format!("127.0.0.1:{}", free_port()?);
        let mqtt_port = free_port()?;
        let mut args: Vec<OsString> = vec!["--data-dir".into(), dir.join("data").into(), "--http-listen".into()];
        args.push(http.clone().into());
        match &broker {
            Some(url) => args.extend(["--broker".into(), url.into()]),
            None => args.extend(["--mqtt-listen".into(), format!("127.0.0.1:{mqtt_port}").into()]),
        }
        let log_path = dir.join("controller.log");
        std::fs::write(&log_path, "")?;
        let child = spawn(exe, &args, &env, &log_path)?;
        let mut ctl = ControllerProcess {
            child,
            exe: exe.to_path_buf(),
            args,
            env,
            log_path,
            api: ApiClient::new(&format!("http://{http}"), ""),
            mqtt_port: broker.is_none().then_some(mqtt_port),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            let text = std::fs::read_to_string(&ctl.log_path).unwrap_or_default();
            if let Some(t) = text.lines().find_map(|l| l.split("admin token: ").nth(1)?.split_whitespace().next()) {
                break t.to_string();
            }
            ctl.check_alive(deadline, "printed no admin token")?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ctl.api = ApiClient::new(&format!("http://{http}"), &token);
        ctl.wait_api(deadline).await?;
        Ok(ctl)
    }

    fn check_alive(&mut self, deadline: Instant, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("loa-controller exited ({status}):\n{}", tail(&self.log_path, 15));
        }
        if Instant::now() > deadline {
            bail!("loa-controller {what} within 30 s:\n{}", tail(&self.log_path, 15));
        }
        Ok(())
    }

    async fn wait_api(&mut self, deadline: Instant) -> anyhow::Result<()> {
        while self.api.get("/areas").await.is_err() {
            self.check_alive(deadline, "API did not come up")?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A crash: SIGKILL, no clean shutdown.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// A clean stop: SIGTERM, then it has 30 s to finish.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, Duration::from_secs(30)).await
    }

    /// Starts it again on the same data and ports (after [`Self::kill9`] or [`Self::terminate`]); returns once
    /// its API answers. A port of the killed run may take a moment to be free: the start is retried.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.child = spawn(&self.exe, &self.args, &self.env, &self.log_path)?;
            match self.wait_api(deadline).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(exe: &Path, args: &[OsString], env: &[(String, String)], log_path: &Path) -> anyhow::Result<Child> {
    let log = OpenOptions::new().create(true).append(true).open(log_path)?;
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    Ok(cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_ticks() {
        let stat = "4242 (loa (con) ller) S 1 4242 4242 0 -1 4194560 1200 0 0 0 731 95 0 0 20 0 9 0 5123 1 2";
        assert_eq!(stat_cpu_ticks(stat), Some(826));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn proc_status_values() {
        let status =
            "Name:\tloa-controller\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\nThreads:\t7\n";
        assert_eq!(status_value(status, "VmHWM"), Some(123_456));
        assert_eq!(status_value(status, "VmRSS"), Some(99_999));
        assert_eq!(status_value(status, "Threads"), Some(7));
        assert_eq!(status_value(status, "VmSwap"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_value(&own, "VmHWM").unwrap() > 0);
        assert!(Proc::me().fd_limit().unwrap() > 0);
    }

    #[test]
    fn established_connections_to_a_port() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   100        0 1 1\n\
   1: 0100007F:075B 0100007F:D4A2 01 00000000:00000000 00:00000000 00000000   100        0 2 1\n\
   2: 0100007F:D4A2 0100007F:075B 01 00000000:00000000 00:00000000 00000000   100        0 3 1\n\
   3: 0100007F:075B 0100007F:D4A4 06 00000000:00000000 00:00000000 00000000   100        0 4 1\n";
        assert_eq!(count_established(table, 1883), 1, "the broker's side, established; not the listener");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        assert_eq!(established_to(port), 1);
    }
}
