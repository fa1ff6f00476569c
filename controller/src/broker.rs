//! The embedded MQTT broker: rumqttd, wrapped so that it behaves like the rest of the controller.
//!
//! rumqttd's `Broker::start()` blocks forever, has no shutdown, and reports a busy port only in its log. So the
//! broker proper listens on a private loopback port that this module picks, and the public listener (which the
//! caller binds and passes in, so a busy port is the caller's error, and tests use port 0) is served by a small
//! TCP relay here. On cancel the relay closes its listener and every client connection, which frees the public
//! port at once and looks to receivers exactly like a broker restart; the idle rumqttd threads stay behind until
//! the process exits (a documented limit of rumqttd). The relay also counts bytes in each direction, which the
//! wire benchmark reads.
//!
//! Authentication: every client must log in with username = client id. The controller's own client uses a secret
//! kept in the settings table; a receiver's password is checked against the SHA-256 stored at registration.
//!
//! Authorisation: rumqttd has no per-client topic permissions, so the relay reads each client's packets
//! ([`packet`]) and enforces the topic ACL ([`acl`]): a receiver subscribes only under its own `rx/{id}/` and
//! publishes only its own `up/{id}/...` topics; a violation closes the connection and is counted
//! ([`WireCounters::acl_denied`]). [`mosquitto`] writes the same rules as Mosquitto password and ACL files.
//!
//! TLS: with [`EmbeddedBroker::with_tls`] ([`tls::server_acceptor`]) the public listener speaks only TLS; each
//! connection's handshake is done here and the decrypted stream goes through the same ACL relay. rumqttd itself
//! and the controller's own client stay on plain TCP over loopback.

pub mod acl;
pub mod mosquitto;
pub mod packet;
pub mod tls;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loa_protocol::Topics;
use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;

/// Largest MQTT packet accepted (a signed plan is at most ~257 KiB).
pub const MAX_PACKET_BYTES: usize = 512 * 1024;
/// Segment size of rumqttd's per-topic log (two kept; a segment may overrun by one message).
const SEGMENT_BYTES: usize = 256 * 1024;
/// Segment size of the chunk topics' logs: a few 8 KiB frames.
const CHUNK_SEGMENT_BYTES: usize = 16 * 1024;

/// What can go wrong starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No private loopback port could be reserved for rumqttd.
    #[error("cannot reserve a loopback port for the embedded broker: {0}")]
    Reserve(std::io::Error),
    /// rumqttd did not start listening (its thread ended or it stayed silent).
    #[error("the embedded MQTT broker did not start: {0}")]
    Start(String),
    /// The public listener failed.
    #[error("MQTT listener: {0}")]
    Listener(std::io::Error),
    /// The TLS certificate or key of the public listener cannot be used.
    #[error("MQTT TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Byte counters of the public listener (all connections together).
#[derive(Debug, Default)]
pub struct WireCounters {
    /// Bytes from clients to the broker.
    pub up_bytes: AtomicU64,
    /// Bytes from the broker to clients.
    pub down_bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed because a receiver subscribed or published outside its own topics.
    pub acl_denied: AtomicU64,
    /// TLS connections whose handshake failed (plain MQTT on the TLS port, an untrusted certificate, a timeout).
    pub tls_failed: AtomicU64,
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started embedded broker. [`EmbeddedBroker::run`] serves the public listener until cancelled.
pub struct EmbeddedBroker {
    listener: TcpListener,
    internal: SocketAddr,
    counters: Arc<WireCounters>,
    rules: Arc<acl::AclRules>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("public", &self.listener.local_addr().ok())
            .field("internal", &self.internal)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Checks an MQTT login against the controller's own credentials and the receivers table.
fn check_login(
    store: &Store,
    controller_id: &str,
    controller_secret: &str,
    client: &str,
    user: &str,
    pass: &str,
) -> bool {
    if client != user {
        return false;
    }
    if client == controller_id {
        return !controller_secret.is_empty() && pass == controller_secret;
    }
    match store.check_receiver_secret(client, pass) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(client, error = %e, "broker login: store lookup failed");
            false
        }
    }
}

impl EmbeddedBroker {
    /// Starts rumqttd on a private loopback port, with logins checked against `store`, and waits until it
    /// accepts connections. `listener` is the public MQTT listener that receivers connect to. `chunks_filter` is
    /// [`Topics::chunks_filter`]; its prefix is also the topic tree whose ACL the relay enforces.
    pub async fn start(
        listener: TcpListener,
        store: Store,
        controller_id: String,
        controller_secret: String,
        counters: Arc<WireCounters>,
        chunks_filter: String,
    ) -> Result<Self, BrokerError> {
        let topics = topics_of_chunks_filter(&chunks_filter)?;
        let rules = Arc::new(acl::AclRules::new(topics, controller_id.clone()));
        let reserve =
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).map_err(BrokerError::Reserve)?;
        let internal = reserve.local_addr().map_err(BrokerError::Reserve)?;
        drop(reserve);

        let mut connections = ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        connections.set_auth_handler(move |client: String, user: String, pass: String| {
            let store = store.clone();
            let controller_id = controller_id.clone();
            let controller_secret = controller_secret.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    check_login(&store, &controller_id, &controller_secret, &client, &user, &pass)
                })
                .await
                .unwrap_or(false)
            }
        });
        let server = ServerSettings {
            name: "loa-v4".into(),
            listen: internal,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        };
        let config = Config {
            id: 0,
            // rumqttd keeps what is published on each topic in an in-memory log of segments, dropping the
            // oldest segment only when the count is exceeded; sizes here bound memory per topic. Chunk frames
            // (QoS 0; a lost one is asked for again) need only the few in flight, other topics hold a handful of
            // small messages. With rumqttd's 100 MB × 10 a fleet of 5,000 grew past 2 GB after one bulletin.
            router: RouterConfig {
                max_connections: 100_000,
                max_outgoing_packet_count: 1000,
                max_segment_size: SEGMENT_BYTES,
                max_segment_count: 2,
                custom_segment: Some(HashMap::from([(
                    chunks_filter,
                    SegmentConfig { max_segment_size: CHUNK_SEGMENT_BYTES, max_segment_count: 2 },
                )])),
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("loa".to_string(), server)])),
            ..Config::default()
        };

        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::Builder::new()
            .name("rumqttd".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                let outcome = match broker.start() {
                    Ok(()) => "rumqttd stopped (is the port in use?)".to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = done_tx.send(outcome);
            })
            .map_err(|e| BrokerError::Start(e.to_string()))?;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(internal).await.is_ok() {
                break;
            }
            if let Ok(why) = done_rx.try_recv() {
                return Err(BrokerError::Start(why));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::Start(format!("nothing listens on {internal} after 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(public = ?listener.local_addr().ok(), %internal, "embedded MQTT broker started");
        Ok(EmbeddedBroker { listener, internal, counters, rules, tls: None })
    }

    /// Makes the public listener accept only TLS, with this acceptor ([`tls::server_acceptor`]).
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Whether the public listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The loopback address of rumqttd itself (the controller's own client connects here).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal
    }

    /// The public address receivers connect to.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Byte counters of the public listener.
    pub fn counters(&self) -> Arc<WireCounters> {
        self.counters.clone()
    }

    /// Relays public connections to rumqttd until `cancel`; then closes the listener and every connection.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BrokerError> {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (client, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            let internal = self.internal;
            let counters = self.counters.clone();
            let rules = self.rules.clone();
            let cancel = cancel.clone();
            let tls = self.tls.clone();
            tracker.spawn(async move {
                let _ = client.set_nodelay(true);
                let ended = match tls {
                    None => relay(client, internal, counters, rules, cancel).await,
                    Some(acceptor) => {
                        let handshake = tokio::select! {
                            _ = cancel.cancelled() => return,
                            h = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(client)) => h,
                        };
                        match handshake {
                            Ok(Ok(stream)) => relay(stream, internal, counters, rules, cancel).await,
                            Ok(Err(e)) => {
                                counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%peer, error = %e, "MQTT TLS handshake failed: connection closed");
                                return;
                            }
                            Err(_) => {
                                counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%peer, "MQTT TLS handshake timed out: connection closed");
                                return;
                            }
                        }
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "MQTT connection ended");
                }
            });
        }
        drop(self.listener);
        tracker.close();
        tracker.wait().await;
        tracing::info!("embedded MQTT broker stopped");
        Ok(())
    }
}

/// The [`Topics`] whose [`Topics::chunks_filter`] is `filter` (`{root}/v1/rx/+/chunk`).
fn topics_of_chunks_filter(filter: &str) -> Result<Topics, BrokerError> {
    let suffix = format!("/v{}/rx/+/chunk", loa_protocol::PROTOCOL_VERSION);
    filter
        .strip_suffix(&suffix)
        .and_then(|root| Topics::new(root).ok())
        .filter(|t| t.chunks_filter() == filter)
        .ok_or_else(|| BrokerError::Start(format!("{filter:?} is not a chunks filter made by Topics")))
}

/// Relays one client connection (plain TCP or decrypted TLS) to rumqttd through the ACL gate.
async fn relay<S>(
    client: S,
    internal: SocketAddr,
    counters: Arc<WireCounters>,
    rules: Arc<acl::AclRules>,
    cancel: CancellationToken,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let broker = TcpStream::connect(internal).await?;
    let _ = broker.set_nodelay(true);
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = pump_checked(&mut client_rx, &mut broker_tx, &counters, acl::Gate::new(rules)) => r,
        r = pump(&mut broker_rx, &mut client_tx, &counters.down_bytes) => r,
    }
}

/// Copies the client's packets to rumqttd until end of stream, counting bytes as they arrive and passing on only
/// whole packets the ACL allows; a refused or malformed packet ends the connection before any of it is passed on.
async fn pump_checked(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    counters: &WireCounters,
    mut gate: acl::Gate,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A PUBLISH may carry MAX_PACKET_BYTES of payload after its topic and header.
    let mut framer = packet::Framer::new(MAX_PACKET_BYTES + 64 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        framer.buffer_mut().reserve(16 * 1024);
        let n = from.read_buf(framer.buffer_mut()).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        counters.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
        out.clear();
        loop {
            let refusal = match framer.next_packet() {
                Ok(None) => break,
                Ok(Some(p)) => match gate.check(&p) {
                    Ok(()) => {
                        out.extend_from_slice(&p);
                        continue;
                    }
                    Err(refusal) => refusal,
                },
                Err(e) => acl::Refusal::from(e),
            };
            // Whatever came before the refused packet still goes through (e.g. a report before a bad SUBSCRIBE).
            let _ = to.write_all(&out).await;
            if let acl::Refusal::Denied { client, action, topic } = &refusal {
                counters.acl_denied.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %client, action, topic = %topic, "MQTT ACL violation: connection closed");
            } else {
                tracing::debug!(role = ?gate.role(), error = %refusal, "MQTT client refused: connection closed");
            }
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, refusal.to_string()));
        }
        if !out.is_empty() {
            to.write_all(&out).await?;
        }
    }
}

/// Copies one direction until end of stream, counting bytes as they pass.
async fn pump(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    counter: &AtomicU64,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_prefix_comes_from_the_chunks_filter() {
        for root in ["loa", "vn/laocai"] {
            let topics = Topics::new(root).unwrap();
            assert_eq!(topics_of_chunks_filter(&topics.chunks_filter()).unwrap(), topics);
        }
        for bad in ["", "#", "loa/v1/rx/+/chunk/x", "loa/v2/rx/+/chunk", "/v1/rx/+/chunk", "l+a/v1/rx/+/chunk"] {
            assert!(topics_of_chunks_filter(bad).is_err(), "{bad}");
        }
    }
}
