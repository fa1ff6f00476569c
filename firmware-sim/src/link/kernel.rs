//! [`KernelLink`]: the same [`LinkProfile`] applied to IP packets, so that the kernel's own TCP (slow start,
//! fast retransmit, SACK, RACK, its timers) crosses it — the reference the user-space [`super::Relay`] is
//! measured against. This kernel has no `netem`; instead two TUN devices stand for the two ends of the radio
//! link: one in the host's network namespace, one moved into a namespace of its own where the receiver runs
//! (`ip netns exec`). Two threads move the packets between them, each through a [`PacketDir`]: a bottleneck
//! queue drained at the rate, random loss of the packets that crossed it (airtime spent), the one-way delay
//! plus jitter, delivery in order.
//!
//! Needs root and `ip` (iproute2). [`KernelLink::up`] says why when it cannot be made; dropping the link
//! removes the namespace and the host device.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::profile::LinkProfile;

/// Packets the bottleneck queue of each direction holds (a cellular link's buffer); later ones are dropped.
pub const QUEUE_PACKETS: usize = 64;
/// Largest packet the devices carry (their MTU).
const MTU: usize = 1500;
/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Why a kernel link cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KernelLinkError {
    /// Network namespaces and TUN devices need root: run as root, or use the user-space link.
    #[error("the kernel link needs root (network namespaces and TUN devices)")]
    NotRoot,
    /// A setup command failed (is iproute2 installed?).
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output, or why it could not run.
        detail: String,
    },
    /// The TUN device could not be made (is /dev/net/tun there?).
    #[error("TUN device {name}: {source}")]
    Tun {
        /// Its name.
        name: String,
        /// The error.
        source: tun::Error,
    },
}

/// One direction of a packet link: what happens to each packet, decided when it enters.
#[derive(Debug)]
pub(crate) struct PacketDir {
    rate_kbps: u32,
    delay: Duration,
    jitter: Duration,
    loss: f64,
    next_free: Instant,
    last_delivery: Instant,
    rng: rand::rngs::StdRng,
}

/// What becomes of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Delivered at this time.
    Deliver(Instant),
    /// Crossed the link and was lost (the airtime is spent).
    Lost,
    /// The bottleneck queue was full.
    QueueFull,
}

impl PacketDir {
    pub(crate) fn new(rate_kbps: u32, delay: Duration, jitter: Duration, loss: f64, seed: u64, now: Instant) -> Self {
        PacketDir {
            rate_kbps,
            delay,
            jitter,
            loss: loss.clamp(0.0, 1.0),
            next_free: now,
            last_delivery: now,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    fn serialisation(&self, bytes: usize) -> Duration {
        if self.rate_kbps == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(bytes as f64 * 8.0 / (f64::from(self.rate_kbps) * 1000.0))
    }

    /// The fate of a packet of `bytes` entering at `now`.
    pub(crate) fn admit(&mut self, now: Instant, bytes: usize) -> Fate {
        let backlog = self.next_free.saturating_duration_since(now);
        if backlog > self.serialisation(MTU) * QUEUE_PACKETS as u32 {
            return Fate::QueueFull;
        }
        let done = self.next_free.max(now) + self.serialisation(bytes);
        self.next_free = done;
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return Fate::Lost;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.rng.random_range(0..=self.jitter.as_micros() as u64))
        };
        let at = (done + self.delay + jitter).max(self.last_delivery);
        self.last_delivery = at;
        Fate::Deliver(at)
    }
}

/// Counts of one direction.
#[derive(Debug, Default)]
pub struct PacketCounters {
    /// Packets that entered.
    pub packets: AtomicU64,
    /// Their bytes (IP headers included).
    pub bytes: AtomicU64,
    /// Lost on the link.
    pub lost: AtomicU64,
    /// Dropped because the queue was full.
    pub queue_full: AtomicU64,
}

/// A snapshot of [`PacketCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Packets that entered.
    pub packets: u64,
    /// Their bytes (IP headers included).
    pub bytes: u64,
    /// Lost on the link.
    pub lost: u64,
    /// Dropped because the queue was full.
    pub queue_full: u64,
}

impl PacketCounters {
    fn snapshot(&self) -> PacketStats {
        PacketStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
        }
    }
}

/// A link between the host and a network namespace that kernel TCP crosses. See the module documentation.
#[derive(Debug)]
pub struct KernelLink {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    down: Arc<PacketCounters>,
    up: Arc<PacketCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn run(args: &[&str]) -> Result<(), KernelLinkError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| KernelLinkError::Command { command: command.clone(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KernelLinkError::Command { command, detail: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

fn tun_device(name: &str) -> Result<tun::Device, KernelLinkError> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).mtu(MTU as u16);
    tun::create(&config).map_err(|source| KernelLinkError::Tun { name: name.to_string(), source })
}

impl KernelLink {
    /// Makes the namespace, the two devices and their addresses, and starts moving packets with `profile`'s
    /// rates, delay, jitter and loss (its outages are not applied).
    pub fn up(profile: &LinkProfile) -> Result<KernelLink, KernelLinkError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(KernelLinkError::NotRoot);
        }
        let id = std::process::id() % 10_000;
        let subnet = (16 + id % 200) as u8;
        let mut link = KernelLink {
            ns: format!("loa-k{id}"),
            host_if: format!("loakh{id}"),
            host_ip: Ipv4Addr::new(10, 214, subnet, 1),
            down: Arc::default(),
            up: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        let ns_if = format!("loakn{id}");
        // Leftovers of a run that was killed.
        let _ = run(&["ip", "netns", "del", &link.ns]);
        let _ = run(&["ip", "link", "del", &link.host_if]);
        run(&["ip", "netns", "add", &link.ns])?;
        let host_dev = Arc::new(tun_device(&link.host_if)?);
        let ns_dev = Arc::new(tun_device(&ns_if)?);
        let (host, peer) = (link.host_ip.to_string(), Ipv4Addr::new(10, 214, subnet, 2).to_string());
        run(&["ip", "link", "set", &ns_if, "netns", &link.ns])?;
        run(&["ip", "addr", "add", &host, "peer", &peer, "dev", &link.host_if])?;
        run(&["ip", "link", "set", &link.host_if, "up"])?;
        let ns = link.ns.clone();
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        exec(&["ip", "addr", "add", &peer, "peer", &host, "dev", &ns_if])?;
        exec(&["ip", "link", "set", &ns_if, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;

        let now = Instant::now();
        let delay = Duration::from_millis(u64::from(profile.delay_ms));
        let jitter = Duration::from_millis(u64::from(profile.jitter_ms));
        let loss = profile.loss_percent / 100.0;
        let seed = rand::rng().random::<u64>();
        let down = PacketDir::new(profile.rate_down_kbps, delay, jitter, loss, seed, now);
        let up = PacketDir::new(profile.rate_up_kbps, delay, jitter, loss, seed ^ 0x5eed, now);
        link.threads.extend(forward(host_dev.clone(), ns_dev.clone(), down, link.down.clone(), link.stop.clone()));
        link.threads.extend(forward(ns_dev, host_dev, up, link.up.clone(), link.stop.clone()));
        Ok(link)
    }

    /// The namespace the receiver runs in (`ip netns exec NAME …`).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The host's address on the link (what the receiver connects to).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// Counts host → namespace (down) and namespace → host (up).
    pub fn stats(&self) -> (PacketStats, PacketStats) {
        (self.down.snapshot(), self.up.snapshot())
    }
}

impl Drop for KernelLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Starts the two threads of one direction: one takes packets off `from` and decides their fate, the other
/// writes them to `to` when they are due.
fn forward(
    from: Arc<tun::Device>,
    to: Arc<tun::Device>,
    mut dir: PacketDir,
    counters: Arc<PacketCounters>,
    stop: Arc<AtomicBool>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let stop_reader = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; MTU + 64];
        while !stop_reader.load(Ordering::Relaxed) {
            let n = match from.recv_timeout(&mut buf, POLL) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "kernel link: reading the TUN device failed");
                    return;
                }
            };
            counters.packets.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            match dir.admit(Instant::now(), n) {
                Fate::Deliver(at) => {
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Fate::Lost => {
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                }
                Fate::QueueFull => {
                    counters.queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let writer = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let (at, packet) = match rx.recv_timeout(POLL) {
                Ok(p) => p,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if let Err(e) = to.send(&packet) {
                tracing::debug!(error = %e, "kernel link: a packet could not be written");
            }
        }
    });
    [reader, writer]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_take_their_serialisation_and_delay_in_order() {
        let t0 = Instant::now();
        // 48 kbit/s: 1500 bytes take 250 ms.
        let mut d = PacketDir::new(48, Duration::from_millis(300), Duration::ZERO, 0.0, 1, t0);
        assert_eq!(d.admit(t0, 1500), Fate::Deliver(t0 + Duration::from_millis(550)));
        assert_eq!(d.admit(t0, 1500), Fate::Deliver(t0 + Duration::from_millis(800)));
        // A packet after the link went idle starts at once.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(d.admit(later, 60), Fate::Deliver(later + Duration::from_millis(310)));
    }

    #[test]
    fn the_queue_holds_a_bounded_backlog() {
        let t0 = Instant::now();
        let mut d = PacketDir::new(48, Duration::ZERO, Duration::ZERO, 0.0, 1, t0);
        let fates: Vec<Fate> = (0..QUEUE_PACKETS + 5).map(|_| d.admit(t0, MTU)).collect();
        let full = fates.iter().filter(|f| **f == Fate::QueueFull).count();
        assert_eq!(full, 4, "{QUEUE_PACKETS} queued plus the one on the link");
    }

    #[test]
    fn jitter_never_reorders_and_loss_takes_its_share() {
        let t0 = Instant::now();
        let mut d = PacketDir::new(0, Duration::from_millis(300), Duration::from_millis(60), 0.03, 7, t0);
        let mut last = t0;
        let mut lost = 0;
        for i in 0..20_000u64 {
            match d.admit(t0 + Duration::from_micros(i * 100), 100) {
                Fate::Deliver(at) => {
                    assert!(at >= last);
                    last = at;
                }
                Fate::Lost => lost += 1,
                Fate::QueueFull => panic!("no rate, no queue"),
            }
        }
        assert!((450..750).contains(&lost), "{lost} of 20000 at 3 %");
    }
}
