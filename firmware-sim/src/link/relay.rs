//! [`Relay`]: one emulated link. It accepts connections on a listener the caller binds (`127.0.0.1:0` in tests),
//! connects each to the upstream broker, and moves the bytes of each direction through [`super::pump`] with the
//! [`LinkProfile`]'s rate, delay, jitter and loss. [`RelayHandle`] is the remote control: counters,
//! [`RelayHandle::outage`] (a black hole: nothing moves, connections stay up unless the outage outlasts
//! [`Relay::with_max_outage`]) and [`RelayHandle::disconnect`] (closes every live connection at once). With an
//! [`super::OutageSchedule`] in the profile the relay also fails at random by itself.
//!
//! Both kernel sockets of a connection get small receive buffers ([`SOCKET_BUFFER_BYTES`]), so what the emulated
//! link cannot carry yet waits in the sender's socket, where TCP flow control slows the sender down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counters::{LinkCounters, LinkStats};
use super::profile::LinkProfile;
use super::pump::{pump, DirParams};

/// Kernel receive buffer asked for on the relay's sockets (Linux doubles it).
pub const SOCKET_BUFFER_BYTES: u32 = 8 * 1024;
/// Default longest outage the connections survive.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(60);

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listener failed; bind another one and start a new relay.
    #[error("link relay listener: {0}")]
    Listener(std::io::Error),
}

/// State shared by the relay, its connections and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    counters: Arc<LinkCounters>,
    outage_until: Mutex<Option<Instant>>,
    outage_changed: Notify,
    generation: Mutex<CancellationToken>,
    max_outage: Mutex<Duration>,
    addr: Option<SocketAddr>,
}

impl Shared {
    fn current_outage(&self) -> Option<Instant> {
        let until = *self.outage_until.lock().unwrap_or_else(PoisonError::into_inner);
        until.filter(|u| *u > Instant::now())
    }

    /// Returns when no outage is going on.
    pub(crate) async fn wait_outage(&self) {
        while let Some(until) = self.current_outage() {
            let changed = self.outage_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = changed => {}
            }
        }
    }

    fn generation(&self) -> CancellationToken {
        self.generation.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Remote control and counters of a [`Relay`]; cheap to clone, usable while the relay runs.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// The address receivers connect to (the listener's).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.shared.addr
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<LinkCounters> {
        self.shared.counters.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }

    /// Starts an outage of `duration` from now (replacing one going on): nothing moves either way. If it is
    /// longer than the relay's limit, live connections are closed when the limit is reached.
    pub fn outage(&self, duration: Duration) {
        let until = Instant::now() + duration;
        *self.shared.outage_until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
        self.shared.counters.outages.fetch_add(1, Ordering::Relaxed);
        self.shared.outage_changed.notify_waiters();
        let limit = *self.shared.max_outage.lock().unwrap_or_else(PoisonError::into_inner);
        if duration > limit {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let handle = self.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(limit).await;
                    if handle.shared.current_outage() == Some(until) {
                        handle.disconnect();
                    }
                });
            }
        }
    }

    /// Ends an outage now.
    pub fn end_outage(&self) {
        *self.shared.outage_until.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.shared.outage_changed.notify_waiters();
    }

    /// Whether an outage is going on.
    pub fn in_outage(&self) -> bool {
        self.shared.current_outage().is_some()
    }

    /// Closes every live connection at once (both sides see the connection end); new ones are accepted.
    pub fn disconnect(&self) {
        let mut generation = self.shared.generation.lock().unwrap_or_else(PoisonError::into_inner);
        generation.cancel();
        *generation = CancellationToken::new();
    }
}

/// One emulated link in front of an upstream broker. See the module documentation.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    upstream: String,
    profile: LinkProfile,
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay accepting on `listener` and connecting to `upstream` (`host:port`).
    pub fn new(listener: TcpListener, upstream: impl Into<String>, profile: LinkProfile) -> Relay {
        if let Err(e) = socket2::SockRef::from(&listener).set_recv_buffer_size(SOCKET_BUFFER_BYTES as usize) {
            tracing::debug!(error = %e, "cannot shrink the relay listener's receive buffer");
        }
        let shared = Arc::new(Shared {
            counters: Arc::default(),
            outage_until: Mutex::new(None),
            outage_changed: Notify::new(),
            generation: Mutex::new(CancellationToken::new()),
            max_outage: Mutex::new(DEFAULT_MAX_OUTAGE),
            addr: listener.local_addr().ok(),
        });
        Relay { listener, upstream: upstream.into(), profile, shared }
    }

    /// Outages longer than `limit` close the live connections when they reach it (default 60 s).
    pub fn with_max_outage(self, limit: Duration) -> Relay {
        *self.shared.max_outage.lock().unwrap_or_else(PoisonError::into_inner) = limit;
        self
    }

    /// Its remote control.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle { shared: self.shared.clone() }
    }

    /// The profile.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Serves connections until `cancel`; then closes them all.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), RelayError> {
        let tracker = TaskTracker::new();
        if let Some(schedule) = self.profile.outages.clone() {
            let handle = self.handle();
            let token = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = random_failures(handle, schedule) => {}
                }
            });
        }
        let (down, up) = params(&self.profile);
        let mut failures = 0u32;
        let outcome = loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            let client = match accepted {
                Ok((client, _)) => {
                    failures = 0;
                    client
                }
                Err(e) => {
                    failures += 1;
                    if failures > 100 {
                        break Err(RelayError::Listener(e));
                    }
                    tracing::warn!(error = %e, "link relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            let (shared, upstream, cancel) = (self.shared.clone(), self.upstream.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = serve(client, &upstream, down, up, shared, cancel).await {
                    tracing::debug!(error = %e, "link relay connection ended");
                }
            });
        };
        tracker.close();
        tracker.wait().await;
        outcome
    }
}

fn params(p: &LinkProfile) -> (DirParams, DirParams) {
    let dir = |rate| DirParams {
        rate_kbps: rate,
        delay: Duration::from_millis(u64::from(p.delay_ms)),
        jitter: Duration::from_millis(u64::from(p.jitter_ms)),
        loss: (p.loss_percent / 100.0).clamp(0.0, 1.0),
        rtt: Duration::from_millis(p.rtt_ms()),
        rto: Duration::from_millis(p.rto_ms()),
    };
    (dir(p.rate_down_kbps), dir(p.rate_up_kbps))
}

async fn connect_upstream(upstream: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(upstream).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{upstream}: no address"))))
}

/// One connection: receiver ↔ relay ↔ broker.
async fn serve(
    client: TcpStream,
    upstream: &str,
    down: DirParams,
    up: DirParams,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let generation = shared.generation();
    // The connection attempt itself crosses the link: one round trip, none during an outage.
    shared.wait_outage().await;
    tokio::time::sleep(down.delay + up.delay).await;
    let server = tokio::select! {
        _ = generation.cancelled() => return Ok(()),
        _ = cancel.cancelled() => return Ok(()),
        s = connect_upstream(upstream) => s?,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let counters = shared.counters.clone();
    let downstream = pump(server_rx, client_tx, down, &counters.down, shared.clone());
    let upstream_pump = pump(client_rx, server_tx, up, &counters.up, shared.clone());
    tokio::pin!(downstream, upstream_pump);
    let (mut down_done, mut up_done) = (false, false);
    while !(down_done && up_done) {
        tokio::select! {
            _ = generation.cancelled() => {
                counters.forced_closes.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            _ = cancel.cancelled() => return Ok(()),
            r = &mut downstream, if !down_done => { r?; down_done = true; }
            r = &mut upstream_pump, if !up_done => { r?; up_done = true; }
        }
    }
    Ok(())
}

/// Outages and disconnects at random moments, per the schedule.
async fn random_failures(handle: RelayHandle, schedule: super::OutageSchedule) {
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mean = schedule.mean_interval_ms.max(1) as f64;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let wait = Duration::from_millis((-u.ln() * mean).min(86_400_000.0) as u64);
        tokio::time::sleep(wait).await;
        if rng.random::<f64>() * 100.0 < schedule.disconnect_percent {
            tracing::info!(relay = ?handle.addr(), "link: random disconnect");
            handle.disconnect();
        } else {
            let (lo, hi) = (schedule.min_duration_ms, schedule.max_duration_ms.max(schedule.min_duration_ms));
            let ms = rng.random_range(lo..=hi);
            tracing::info!(relay = ?handle.addr(), ms, "link: random outage");
            handle.outage(Duration::from_millis(ms));
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}
