//! The embedded MQTT broker: a small MQTT 3.1.1 broker made for Loa's traffic, in the controller's process.
//!
//! Layout: [`EmbeddedBroker`] (here) accepts connections on the public listener (which the caller binds and
//! passes in, so a busy port is the caller's error, and tests use port 0) and on a private loopback listener for
//! the controller's own client; [`connection`] serves each one (login, ACL, keep-alive, will); [`router`] holds
//! the clients, subscriptions and retained messages and routes each PUBLISH; [`topic`] has the filter rules and
//! the subscription index; [`acl`] the topic permissions; [`tls`] the public listener's TLS; [`mosquitto`]
//! writes the same rules as Mosquitto password and ACL files for a deployment on Mosquitto. Packets are read and
//! written with rumqttc's MQTT 3.1.1 codec (the crate of the controller's and receivers' client).
//!
//! Why not rumqttd (used until stop 12): each of its connections cost about 200 kB (fixed queues of 200 packets
//! of 392 bytes and more), it has no topic permissions (so a relay in front of it checked them, 3 file
//! descriptors per receiver), no shutdown, and a busy-loop on `EMFILE`. A province's 10,000 receivers need
//! ≤ 300 MB for the whole controller. What this broker leaves out, because Loa does not use it: stored sessions
//! (every connection is clean), QoS 2 towards subscribers (granted as QoS 1; a client's QoS 2 PUBLISH is taken
//! and acknowledged with PUBREC/PUBCOMP), MQTT 5.
//!
//! Authentication: every client must log in with username = client id. The controller's own client uses a secret
//! kept in the settings table; a receiver's password is checked against the SHA-256 stored at registration.
//! Authorisation: a receiver subscribes only under its own `rx/{id}/` and publishes only its own `up/{id}/...`
//! topics; a violation closes the connection and is counted ([`WireCounters::acl_denied`]).
//! On cancel both listeners and every connection close at once, which looks to receivers exactly like a broker
//! restart. The public connections' bytes are counted each way; the wire benchmark reads them.

pub mod acl;
pub mod connection;
pub mod mosquitto;
pub mod router;
pub mod tls;
pub mod topic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loa_protocol::Topics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;

/// Largest MQTT packet accepted (a signed plan is at most ~257 KiB).
pub const MAX_PACKET_BYTES: usize = 512 * 1024;

/// What can go wrong starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The private loopback listener for the controller's own client could not be bound.
    #[error("cannot bind a loopback port for the embedded broker: {0}")]
    Reserve(std::io::Error),
    /// The broker was started with a chunks filter [`Topics`] did not make.
    #[error("the embedded MQTT broker cannot start: {0}")]
    Start(String),
    /// The public listener failed.
    #[error("MQTT listener: {0}")]
    Listener(std::io::Error),
    /// The TLS certificate or key of the public listener cannot be used.
    #[error("MQTT TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Counters of the public listener (all connections together).
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
    /// Messages lost because a client did not read them fast enough (its outbox was full).
    pub messages_dropped: AtomicU64,
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started embedded broker. [`EmbeddedBroker::run`] serves both listeners until cancelled.
pub struct EmbeddedBroker {
    listener: TcpListener,
    internal: TcpListener,
    internal_addr: SocketAddr,
    shared: Arc<connection::Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("public", &self.listener.local_addr().ok())
            .field("internal", &self.internal_addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Prepares the broker, with logins checked against `store`, and binds its private loopback listener.
    /// `listener` is the public MQTT listener that receivers connect to. `chunks_filter` is
    /// [`Topics::chunks_filter`]; its prefix is the topic tree whose ACL the broker enforces.
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
        let internal = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.map_err(BrokerError::Reserve)?;
        let internal_addr = internal.local_addr().map_err(BrokerError::Reserve)?;
        let shared = Arc::new(connection::Shared {
            router: router::Router::new(counters.clone()),
            rules,
            login: connection::Login { store, controller_id, controller_secret },
            counters,
        });
        tracing::info!(public = ?listener.local_addr().ok(), internal = %internal_addr, "embedded MQTT broker ready");
        Ok(EmbeddedBroker { listener, internal, internal_addr, shared, tls: None })
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

    /// The loopback address for the controller's own client (plain MQTT, not counted).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// The public address receivers connect to.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Byte counters of the public listener.
    pub fn counters(&self) -> Arc<WireCounters> {
        self.shared.counters.clone()
    }

    /// Serves both listeners until `cancel`; then closes them and every connection.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BrokerError> {
        let tracker = TaskTracker::new();
        loop {
            let (accepted, public) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => (accepted, true),
                accepted = self.internal.accept() => (accepted, false),
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most often: wait instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let cancel = cancel.clone();
            let tls = if public { self.tls.clone() } else { None };
            if public {
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            }
            tracker.spawn(async move {
                let ended = match tls {
                    None => connection::serve(stream, shared, public, cancel).await,
                    Some(acceptor) => {
                        let handshake = tokio::select! {
                            _ = cancel.cancelled() => return,
                            h = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
                        };
                        match handshake {
                            Ok(Ok(stream)) => connection::serve(stream, shared, public, cancel).await,
                            Ok(Err(e)) => {
                                shared.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%peer, error = %e, "MQTT TLS handshake failed: connection closed");
                                return;
                            }
                            Err(_) => {
                                shared.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
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
        drop(self.internal);
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
