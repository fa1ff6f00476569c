//! The MQTT link: one task that owns the rumqttc event loop, connects with a clean session
//! (`clean_session = true`, client id and username = the receiver id), sets the last will `offline` on
//! `up/{id}/status` (retained), subscribes to `rx/{id}/#` and then publishes `online` with the same
//! session number on every connect, and reconnects after a failure with the shared [`Backoff`] and jitter. It
//! forwards what arrives as [`LinkEvent`]s; the agent publishes through the [`AsyncClient`] with `try_publish`
//! (never waiting on the link, so neither side can block the other). On cancel it publishes `offline` itself
//! and disconnects cleanly. With `mqtts://` the connection is TLS ([`LinkConfig::tls`], built by
//! [`crate::config`]); a certificate that is not trusted or not for the host is logged as such (a warning naming
//! `ca_file` and the host name) and retried with the same backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use loa_protocol::{Backoff, Message, Status, StatusState};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// Largest MQTT packet accepted or sent: a 256 KiB signed manifest or plan plus envelope and topic.
pub(crate) const MAX_PACKET: usize = 256 * 1024 + 4096;

/// What the link tells the agent.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// Connected (and `online` published, subscription sent).
    Connected {
        /// The session number of this connection's `online` status.
        session: u64,
        /// When that status was handed to the client (before it went out).
        online_sent: std::time::Instant,
    },
    /// The connection dropped; the link is retrying.
    Disconnected,
    /// A message on a subscribed topic.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload (empty: a retained message was cleared).
        payload: Bytes,
        /// Whether the broker sent it as a stored retained message (not live).
        retain: bool,
    },
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub id: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub keepalive: Duration,
    pub status_topic: String,
    pub subscription: String,
    /// TLS client configuration (`mqtts://`); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

fn status(state: StatusState, session: u64) -> Vec<u8> {
    Status { state, session }.to_json().unwrap_or_default()
}

fn new_session(clock: &dyn Clock) -> u64 {
    clock.now().unix_ms().clamp(1, loa_protocol::MAX_SEQ as i64) as u64
}

fn will(cfg: &LinkConfig, session: u64) -> LastWill {
    LastWill::new(&cfg.status_topic, status(StatusState::Offline, session), QoS::AtLeastOnce, true)
}

/// Starts the link task; returns the client to publish with and the events.
pub(crate) fn spawn(
    cfg: LinkConfig,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> (AsyncClient, mpsc::Receiver<LinkEvent>, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(cfg.id.clone(), cfg.host.clone(), cfg.port);
    opts.set_credentials(cfg.id.clone(), cfg.password.clone());
    // A clean session: nothing is queued for the receiver while it is away. Queued messages arrive late, and a
    // late controller message read as a live one sets the receiver's clock back by the time it was away (seen:
    // an expired emergency played). Everything that matters is retained (plan, manifests, keys) or asked for
    // again (chunks, report acks), and commands are for "now".
    opts.set_clean_session(true);
    opts.set_keep_alive(cfg.keepalive);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(tls) = &cfg.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    let session = new_session(clock.as_ref());
    opts.set_last_will(will(&cfg, session));
    let (client, eventloop) = AsyncClient::new(opts, 512);
    let (tx, rx) = mpsc::channel(512);
    let task_client = client.clone();
    let handle = tokio::spawn(run(cfg, clock, eventloop, task_client, tx, session, cancel));
    (client, rx, handle)
}

async fn run(
    cfg: LinkConfig,
    clock: Arc<dyn Clock>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<LinkEvent>,
    mut session: u64,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                connected = true;
                tracing::info!(broker = %cfg.host, port = cfg.port, session, resumed = ack.session_present, "connected");
                // Subscribe first: the controller answers `online` with a live plan (the receiver's clock sample),
                // which a subscription made after the status would miss on a fresh session. Subscribing again even
                // on a resumed session costs the retained plan and manifests once more per reconnect, but a broker
                // that reports a session and lost its subscription would otherwise leave the receiver deaf.
                if let Err(e) = client.try_subscribe(&cfg.subscription, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "cannot queue the subscription");
                }
                let online_sent = std::time::Instant::now();
                if let Err(e) =
                    client.try_publish(&cfg.status_topic, QoS::AtLeastOnce, true, status(StatusState::Online, session))
                {
                    tracing::warn!(error = %e, "cannot queue the online status");
                }
                if tx.send(LinkEvent::Connected { session, online_sent }).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let event = LinkEvent::Message { topic: p.topic, payload: p.payload, retain: p.retain };
                if tx.send(event).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    connected = false;
                    tracing::warn!(error = %e, "connection lost");
                    if tx.send(LinkEvent::Disconnected).await.is_err() {
                        break;
                    }
                } else if matches!(e, ConnectionError::Tls(_)) {
                    tracing::warn!(
                        broker = %cfg.host,
                        port = cfg.port,
                        error = %e,
                        "TLS handshake failed: the broker's certificate is not trusted or not for this host name \
                         (check ca_file and the host in broker_url)"
                    );
                } else {
                    tracing::debug!(error = %e, "cannot connect");
                }
                let delay = Duration::from_millis(backoff.next_delay_ms(rand::random::<f64>()));
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    attempt = backoff.attempt,
                    "reconnecting after a pause"
                );
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                session = new_session(clock.as_ref());
                eventloop.mqtt_options.set_last_will(will(&cfg, session));
            }
        }
    }
    if connected {
        // A clean disconnect suppresses the will, so say `offline` ourselves and flush for a moment.
        let _ = client.try_publish(&cfg.status_topic, QoS::AtLeastOnce, true, status(StatusState::Offline, session));
        let _ = client.try_disconnect();
        let flush = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    }
    tracing::info!("link closed");
}
