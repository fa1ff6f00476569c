//! The controller's MQTT client connection (rumqttc), to the embedded broker or to any external one
//! (`mqtt://host:port`, Mosquitto, EMQX).
//!
//! rumqttc's event loop must be polled for anything to move, and `publish` waits when its queue is full, so the
//! loop runs in its own task ([`MqttLink::run`]) and hands every incoming message to dispatch over a channel,
//! together with a [`LinkEvent::Connected`] after each (re)connection so that dispatch can re-subscribe and
//! re-publish. Failed connections are retried with the shared [`Backoff`] and jitter.

use std::time::Duration;

use loa_protocol::backoff::Backoff;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What goes wrong setting up the connection.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL cannot be used.
    #[error("broker URL {url:?}: {why} (expected mqtt://host:port)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
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
#[derive(Debug, Clone)]
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
}

impl MqttSettings {
    /// Parses `mqtt://host:port` (port 1883 if absent) with [`loa_protocol::BrokerUrl`].
    pub fn from_url(url: &str, client_id: &str, password: Option<String>) -> Result<Self, MqttError> {
        let parsed = loa_protocol::BrokerUrl::parse(url)
            .map_err(|e| MqttError::BadUrl { url: url.to_string(), why: e.to_string() })?;
        if parsed.tls {
            return Err(MqttError::BadUrl { url: url.to_string(), why: "TLS (mqtts://) is not supported yet".into() });
        }
        let (host, port) = (parsed.host, parsed.port);
        Ok(MqttSettings { host, port, client_id: client_id.to_string(), password, keep_alive_s: 30 })
    }
}

/// A client connection: the [`AsyncClient`] to publish with, and the loop to run.
pub struct MqttLink {
    eventloop: EventLoop,
    events: mpsc::Sender<LinkEvent>,
}

impl MqttLink {
    /// Prepares a connection; nothing happens until [`MqttLink::run`].
    pub fn new(settings: &MqttSettings, events: mpsc::Sender<LinkEvent>) -> (AsyncClient, MqttLink) {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options.set_keep_alive(Duration::from_secs(settings.keep_alive_s.max(5)));
        options.set_max_packet_size(crate::broker::MAX_PACKET_BYTES, crate::broker::MAX_PACKET_BYTES);
        options.set_clean_session(true);
        options.set_inflight(200);
        if let Some(password) = &settings.password {
            options.set_credentials(settings.client_id.clone(), password.clone());
        }
        let (client, eventloop) = AsyncClient::new(options, 4096);
        (client, MqttLink { eventloop, events })
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
                    tracing::warn!(error = %e, retry_in_ms = delay, "MQTT connection lost");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    }
                    None
                }
            };
            if let Some(event) = forward {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    sent = self.events.send(event) => if sent.is_err() { return },
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
    }
}
