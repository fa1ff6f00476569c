//! Shared by the MQTT tests: an in-process rumqttd broker on a free port, Ogg Opus test files, and a fake
//! controller that signs plans and manifests with a test key, answers chunk requests through a simulated link
//! (frames leave one after another, `frame_gap` apart, first in first out, like a narrow pipe) and records
//! what the receiver sends.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loa_protocol::{
    BulletinId, BulletinInfo, Category, ChunkRequest, Codec, Health, KeyId, Language, Manifest, Message, Plan,
    PlannedPlay, PlayReport, ReceiverId, ReportAck, ReportBatch, Signer, Status, Tier, Timestamp, Topic, Topics,
};
use loa_receiver::clock::{Clock, SystemClock};
use loa_receiver::config::TrustedKeyConfig;
use loa_receiver::ReceiverConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub const HOUR_MS: i64 = 3_600_000;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_broker() -> u16 {
    start_broker_on([127, 0, 0, 1].into())
}

/// A broker listening on `ip` (another interface than loopback: the network-namespace test).
pub fn start_broker_on(ip: std::net::IpAddr) -> u16 {
    let port = free_port();
    let listen = SocketAddr::new(ip, port);
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 300 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server =
        rumqttd::ServerSettings { name: "v4".into(), listen, tls: None, next_connection_delay_ms: 1, connections };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            eprintln!("broker stopped: {e}");
        }
    });
    // Wait until it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// `ms` of a 440 Hz tone, as Ogg Opus (12 kbit/s, pages of up to a second).
pub fn opus_file(ms: usize) -> Vec<u8> {
    let samples: Vec<f32> =
        (0..ms * 16).map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin()).collect();
    loa_audio::encode::encode_ogg_opus(&samples, &loa_audio::encode::EncodeOptions::default()).unwrap()
}

/// A manifest for `file`, valid for a week.
pub fn manifest(bulletin: &str, file: &[u8], now: Timestamp, tier: Tier, duration_ms: u32, chunk: u32) -> Manifest {
    let info = BulletinInfo {
        bulletin: BulletinId::new(bulletin).unwrap(),
        title: "Cảnh báo lũ".into(),
        category: Category::Security,
        tier,
        lang: Language::new("vi").unwrap(),
        issued_at: now,
        expires_at: now.saturating_add_ms(7 * 24 * HOUR_MS),
        duration_ms,
        codec: Codec::speech(),
    };
    Manifest::for_file(info, file, chunk).unwrap()
}

/// A play of `bulletin` at `at`.
pub fn play(id: &str, at: Timestamp, bulletin: &BulletinId, tier: Tier) -> PlannedPlay {
    PlannedPlay {
        id: loa_protocol::PlayId::new(id).unwrap(),
        at,
        bulletins: vec![bulletin.clone()],
        times: 1,
        tier,
        volume: 90,
        late_s: 900,
        gap_s: 0,
    }
}

/// What the fake controller saw.
#[derive(Default)]
pub struct Seen {
    pub reports: Vec<PlayReport>,
    pub health: Vec<Health>,
    pub status: Vec<Status>,
    /// Every chunk request, with when it arrived.
    pub requests: Vec<(Instant, ChunkRequest)>,
    /// Every frame that left the simulated link: bulletin, chunk, when.
    pub frames: Vec<(BulletinId, u32, Instant)>,
}

impl Seen {
    pub fn frames_of(&self, bulletin: &BulletinId) -> usize {
        self.frames.iter().filter(|(b, _, _)| b == bulletin).count()
    }
}

/// The files served, by bulletin.
type Files = HashMap<BulletinId, (Manifest, Arc<Vec<u8>>)>;

/// The fake controller. See the module documentation.
#[derive(Clone)]
pub struct Ctl {
    pub client: AsyncClient,
    pub topics: Topics,
    pub me: ReceiverId,
    pub signer: Arc<Signer>,
    pub seen: Arc<Mutex<Seen>>,
    files: Arc<Mutex<Files>>,
    /// Time between two frames on the simulated link.
    pub frame_gap: Arc<Mutex<Duration>>,
}

impl Ctl {
    pub async fn start(port: u16, me: &ReceiverId) -> Ctl {
        Ctl::start_at("127.0.0.1", port, me).await
    }

    /// Like [`Ctl::start`], with the broker at `host`.
    pub async fn start_at(host: &str, port: u16, me: &ReceiverId) -> Ctl {
        let topics = Topics::new("loa").unwrap();
        let mut opts = MqttOptions::new("controller", host, port);
        opts.set_max_packet_size(300 * 1024, 300 * 1024);
        let (client, mut event_loop) = AsyncClient::new(opts, 1000);
        client.subscribe(topics.controller_subscription(), QoS::AtLeastOnce).await.unwrap();
        let ctl = Ctl {
            client,
            topics,
            me: me.clone(),
            signer: Arc::new(Signer::from_seed(KeyId::new("ctl-test").unwrap(), &[9; 32])),
            seen: Arc::new(Mutex::new(Seen::default())),
            files: Arc::new(Mutex::new(HashMap::new())),
            frame_gap: Arc::new(Mutex::new(Duration::ZERO)),
        };
        // The simulated downlink: frames leave in order, `frame_gap` apart.
        let (link_tx, mut link_rx) = tokio::sync::mpsc::unbounded_channel::<(BulletinId, u32, Vec<u8>)>();
        {
            let ctl = ctl.clone();
            tokio::spawn(async move {
                while let Some((bulletin, index, frame)) = link_rx.recv().await {
                    let gap = *ctl.frame_gap.lock().unwrap();
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    ctl.seen.lock().unwrap().frames.push((bulletin, index, Instant::now()));
                    let topic = ctl.topics.chunks(&ctl.me);
                    ctl.client.publish(topic, QoS::AtMostOnce, false, frame).await.unwrap();
                }
            });
        }
        {
            let ctl = ctl.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(event) = event_loop.poll().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Event::Incoming(Packet::Publish(p)) = event else { continue };
                    match ctl.topics.parse(&p.topic) {
                        Ok(Topic::ChunkRequest(_)) => {
                            let req = ChunkRequest::from_json(&p.payload).unwrap();
                            let file = ctl.files.lock().unwrap().get(&req.bulletin).cloned();
                            if let Some((m, bytes)) = file {
                                for i in req.indices() {
                                    let frame = m.frame(&bytes, i).unwrap().encode().unwrap();
                                    link_tx.send((m.bulletin.clone(), i, frame)).unwrap();
                                }
                            }
                            ctl.seen.lock().unwrap().requests.push((Instant::now(), req));
                        }
                        Ok(Topic::Reports(_)) => {
                            let batch = ReportBatch::from_json(&p.payload).unwrap();
                            ctl.seen.lock().unwrap().reports.extend(batch.reports.iter().cloned());
                            let ack = ReportAck { ids: batch.ack().ids, now: Some(SystemClock.now()) };
                            let topic = ctl.topics.report_ack(&ctl.me);
                            ctl.client.publish(topic, QoS::AtLeastOnce, false, ack.to_json().unwrap()).await.unwrap();
                        }
                        Ok(Topic::Health(_)) => {
                            ctl.seen.lock().unwrap().health.push(Health::from_json(&p.payload).unwrap());
                        }
                        Ok(Topic::Status(_)) if !p.payload.is_empty() => {
                            ctl.seen.lock().unwrap().status.push(Status::from_json(&p.payload).unwrap());
                        }
                        _ => {}
                    }
                }
            });
        }
        ctl
    }

    /// Publishes the signed manifest of `file` (retained) and serves its chunks.
    pub async fn offer(&self, m: &Manifest, file: Arc<Vec<u8>>) {
        self.files.lock().unwrap().insert(m.bulletin.clone(), (m.clone(), file));
        let now = SystemClock.now();
        let signed = self.signer.sign(m, now, m.expires_at).unwrap().to_json().unwrap();
        self.client.publish(self.topics.manifest(&self.me, &m.bulletin), QoS::AtLeastOnce, true, signed).await.unwrap();
    }

    /// Publishes a signed plan (retained) with these plays.
    pub async fn plan(&self, seq: u64, plays: Vec<PlannedPlay>) {
        let now = SystemClock.now();
        let from = plays.first().map_or(now, |p| p.at.min(now));
        let plan = Plan {
            receiver: self.me.clone(),
            seq,
            from,
            until: from.saturating_add_ms(49 * HOUR_MS),
            plays,
            answers_session: None,
        };
        let signed = self.signer.sign(&plan, now, now.saturating_add_ms(24 * HOUR_MS)).unwrap().to_json().unwrap();
        self.client.publish(self.topics.plan(&self.me), QoS::AtLeastOnce, true, signed).await.unwrap();
    }

    /// A receiver configuration for this controller.
    pub fn receiver_config(&self, port: u16, state_dir: std::path::PathBuf) -> ReceiverConfig {
        ReceiverConfig {
            id: self.me.to_string(),
            password: "secret".into(),
            broker_url: format!("mqtt://127.0.0.1:{port}"),
            trusted_keys: vec![TrustedKeyConfig {
                kid: "ctl-test".into(),
                public_key: loa_protocol::hash::encode_hex(&self.signer.public_key()),
            }],
            state_dir,
            heartbeat_ms: 300,
            preroll_ms: 1500,
            emergency_preroll_ms: 300,
            hold_ms: 200,
            report_resend_ms: 1000,
            chunk_timeout_ms: 4000,
            ..ReceiverConfig::default()
        }
    }
}

pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
