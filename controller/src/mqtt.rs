//! The controller's MQTT client connection (rumqttc), to the embedded broker or to any external one
//! (`mqtt://host:port`, Mosquitto, EMQX; `mqtts://host:port` for TLS, the broker's certificate and host name
//! verified against `broker_ca_file` or the system's trust roots, see [`crate::broker::tls`]).
//!
//! rumqttc's event loop must be polled for anything to move, and `publish` waits when its queue is full, so the
//! loop runs in its own task ([`MqttLink::run`]) and hands every incoming message to dispatch over a channel,
//! together with a [`LinkEvent::Connected`] after each (re)connection so that dispatch can re-subscribe and
//! re-publish. That channel is unbounded on purpose: the loop must never wait for dispatch, because dispatch
//! waits for the loop whenever it publishes faster than the connection drains. With a bounded channel, a
//! Mosquitto restart under 10,000 receivers deadlocked the two (dispatch republishing every plan, the loop
//! holding the fleet's status messages), the keep-alive lapsed and the controller never published again
//! (found by `loa-sim bench fleet`'s storm). What waits in the channel is bounded by what the broker sends in
//! the time dispatch needs to catch up: a few MB in that storm. Failed connections are retried with the shared
//! [`Backoff`] and jitter.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loa_protocol::backoff::Backoff;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What goes wrong setting up the connection.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL cannot be used.
    #[error("broker URL {url:?}: {why} (expected mqtt://host:port or mqtts://host:port)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// TLS to the broker cannot be set up: fix `broker_ca_file`.
    #[error("MQTT TLS: {0}")]
    Tls(#[from] crate::broker::tls::TlsError),
}

/// Something that happened on the link.
#[derive(Debug)]
pub enum LinkEvent {
    /// (Re)connected: subscriptions and retained state must be (re)sent.
    Connected,
    /// A message arrived.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: bytes::Bytes,
    },
}

/// Where and how to connect.
#[derive(Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (also the username).
    pub client_id: String,
    /// Password, if the broker wants one.
    pub password: Option<String>,
    /// Keep-alive.
    pub keep_alive_s: u64,
    /// TLS (`mqtts://`): how the broker's certificate is verified. `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("keep_alive_s", &self.keep_alive_s)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MqttSettings {
    /// Parses `mqtt://host:port` (port 1883 if absent) or `mqtts://host:port` (8883) with
    /// [`loa_protocol::BrokerUrl`]. TLS starts out without trust roots; [`MqttSettings::with_ca_file`] sets them.
    pub fn from_url(url: &str, client_id: &str, password: Option<String>) -> Result<Self, MqttError> {
        let parsed = loa_protocol::BrokerUrl::parse(url)
            .map_err(|e| MqttError::BadUrl { url: url.to_string(), why: e.to_string() })?;
        let (host, port) = (parsed.host, parsed.port);
        let tls = parsed.tls.then(|| {
            let roots = rustls::RootCertStore::empty();
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            config.map(Arc::new)
        });
        let tls = tls.transpose().map_err(|e| MqttError::BadUrl { url: url.to_string(), why: e.to_string() })?;
        Ok(MqttSettings { host, port, client_id: client_id.to_string(), password, keep_alive_s: 30, tls })
    }

    /// For `mqtts://`: trust the CA certificates in `ca_file` (PEM), or the system's roots when `None`. Does
    /// nothing for plain `mqtt://`.
    pub fn with_ca_file(mut self, ca_file: Option<&Path>) -> Result<Self, MqttError> {
        if self.tls.is_some() {
            self.tls = Some(crate::broker::tls::client_config(ca_file)?);
        }
        Ok(self)
    }
}

/// A client connection: the [`AsyncClient`] to publish with, and the loop to run.
pub struct MqttLink {
    eventloop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
    received: Arc<AtomicU64>,
}

impl MqttLink {
    /// Prepares a connection; nothing happens until [`MqttLink::run`].
    pub fn new(settings: &MqttSettings, events: mpsc::UnboundedSender<LinkEvent>) -> (AsyncClient, MqttLink) {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options.set_keep_alive(Duration::from_secs(settings.keep_alive_s.max(5)));
        options.set_max_packet_size(crate::broker::MAX_PACKET_BYTES, crate::broker::MAX_PACKET_BYTES);
        options.set_clean_session(true);
        options.set_inflight(200);
        if let Some(password) = &settings.password {
            options.set_credentials(settings.client_id.clone(), password.clone());
        }
        if let Some(tls) = &settings.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
        }
        let (client, eventloop) = AsyncClient::new(options, 4096);
        (client, MqttLink { eventloop, events, received: Arc::default() })
    }

    /// Messages handed to dispatch so far (with dispatch's own count, the backlog between them: `/metrics`).
    pub fn received(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// Polls the connection until `cancel`, reconnecting with backoff and jitter.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(200, 30_000);
        loop {
            let polled = tokio::select! {
                _ = cancel.cancelled() => return,
                polled = self.eventloop.poll() => polled,
            };
            let forward = match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    tracing::info!("connected to the MQTT broker");
                    Some(LinkEvent::Connected)
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    Some(LinkEvent::Message { topic: p.topic.clone(), payload: p.payload.clone() })
                }
                Ok(_) => None,
                Err(e) => {
                    let delay = backoff.next_delay_ms(rand::random::<f64>());
                    if matches!(e, ConnectionError::Tls(_)) {
                        tracing::warn!(
                            error = %e,
                            retry_in_ms = delay,
                            "MQTT TLS handshake failed: the broker's certificate is not trusted or not for this host \
                             (check broker_ca_file and the host name in the broker URL)"
                        );
                    } else {
                        tracing::warn!(error = %e, retry_in_ms = delay, "MQTT connection lost");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    }
                    None
                }
            };
            if let Some(event) = forward {
                if matches!(event, LinkEvent::Message { .. }) {
                    self.received.fetch_add(1, Ordering::Relaxed);
                }
                if self.events.send(event).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let s = MqttSettings::from_url("mqtt://10.0.0.5:1884", "c", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.5", 1884));
        let s = MqttSettings::from_url("mqtt://broker.local", "c", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("broker.local", 1883));
        assert!(MqttSettings::from_url("http://x:1", "c", None).is_err());
        assert!(MqttSettings::from_url("mqtt://:1", "c", None).is_err());
        assert!(MqttSettings::from_url("mqtt://h:99999", "c", None).is_err());
        let s = MqttSettings::from_url("mqtts://broker.example.vn", "c", None).unwrap();
        assert_eq!(s.port, 8883);
        assert!(s.tls.is_some());
        assert!(MqttSettings::from_url("mqtt://h", "c", None).unwrap().tls.is_none());
    }
}
