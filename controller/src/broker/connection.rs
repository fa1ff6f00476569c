//! One client connection of the embedded broker, from CONNECT to close, in two halves: this task reads and
//! answers the client's packets (rumqttc's MQTT 3.1.1 codec), and a writer task sends what the connection's
//! outbox holds — its own answers and the messages the [`Router`] routes to it — so that a client slow to read
//! never stops the broker, nor the client's own packets from being read.
//!
//! The login: CONNECT within 10 s; username = client id ([`AclRules::role`]); the controller's secret or the
//! receiver's registered secret; a will only on the client's own topics. Then every SUBSCRIBE and PUBLISH of a
//! receiver is checked against its ACL: a violation closes the connection (MQTT 3.1.1 cannot refuse one
//! PUBLISH), is logged with client and topic and counted ([`WireCounters::acl_denied`]). A client silent for
//! 1.5 × its keep-alive is closed. Any end but DISCONNECT publishes the will.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::acl::{AclRules, Refusal, Role};
use super::router::{min_qos, Message, Outgoing, Router};
use super::{topic, WireCounters, MAX_PACKET_BYTES};
use crate::store::Store;

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a receiver's outbox holds before new ones are dropped (Mosquitto's `max_queued_messages`).
const RECEIVER_OUTBOX: usize = 1000;
/// The controller's own client reads the whole fleet's uplink; its outbox is not the place to lose it.
const CONTROLLER_OUTBOX: usize = 1 << 20;
/// Payloads up to this size are gathered with the packets around them into one write; larger ones are written
/// from where they are. The gathering buffer is freed whenever the outbox is empty.
const GATHER_BYTES: usize = 1024;
/// Read buffer of a connection (receivers send small packets; a larger one grows it for a while).
const READ_BUFFER_BYTES: usize = 512;
/// Read buffer of the controller's own client, which sends every chunk of every download.
const CONTROLLER_READ_BYTES: usize = 64 * 1024;
/// How long a DISCONNECTed client's writer may take to send what is still queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The routing state.
    pub router: Router,
    /// The topic ACL.
    pub rules: Arc<AclRules>,
    /// Checks logins.
    pub login: Login,
    /// Counters of the public listener.
    pub counters: Arc<WireCounters>,
}

/// The credentials a CONNECT is checked against.
#[derive(Debug, Clone)]
pub struct Login {
    /// The store with the receivers' secret hashes.
    pub store: Store,
    /// The controller's client id.
    pub controller_id: String,
    /// The controller's secret.
    pub controller_secret: String,
}

impl Login {
    /// Whether `client` may log in as `user` with `pass` (the username must be the client id).
    pub fn check(&self, client: &str, user: &str, pass: &str) -> bool {
        if client != user {
            return false;
        }
        if client == self.controller_id {
            return !self.controller_secret.is_empty() && pass == self.controller_secret;
        }
        match self.store.check_receiver_secret(client, pass) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(client, error = %e, "broker login: store lookup failed");
                false
            }
        }
    }
}

/// Why a connection ended (logged at debug level by the caller; refusals are logged here).
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke MQTT 3.1.1 or an ACL rule, or failed to log in.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Nothing arrived in time (CONNECT, or within 1.5 × keep-alive).
    #[error("timed out")]
    TimedOut,
}

/// Serves one connection until it ends or `cancel`. `public`: counted in the wire counters.
pub async fn serve<S>(stream: S, shared: Arc<Shared>, public: bool, cancel: CancellationToken) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut reader = Reader { buf: BytesMut::new(), min_read: READ_BUFFER_BYTES, counters: &shared.counters, public };
    let first = tokio::time::timeout(CONNECT_TIMEOUT, reader.next(&mut rd)).await.map_err(|_| Ended::TimedOut)??;
    let Some(Packet::Connect(connect)) = first else {
        return Err(Refusal::Protocol("the first packet must be CONNECT".into()).into());
    };
    let (role, will) = match login(&shared, &connect).await {
        Ok(ok) => ok,
        Err((code, refusal)) => {
            let _ = wr.write_all(&encode(&Packet::ConnAck(ConnAck::new(code, false)))).await;
            let _ = wr.shutdown().await;
            return Err(refusal.into());
        }
    };
    let (capacity, min_read) = match role {
        Role::Controller => (CONTROLLER_OUTBOX, CONTROLLER_READ_BYTES),
        Role::Receiver(_) => (RECEIVER_OUTBOX, READ_BUFFER_BYTES),
    };
    reader.min_read = min_read;
    let attached = shared.router.attach(&connect.client_id, will, capacity);
    let conn = attached.conn;
    let writer_stop = CancellationToken::new();
    let mut writer =
        tokio::spawn(write_loop(wr, attached.outbox, shared.counters.clone(), public, writer_stop.clone()));
    let answer = Outgoing::Packet(encode(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))));
    let mut session = Session { shared: &shared, conn, role, sender: attached.sender, disconnected: false };
    let keep_alive = match connect.keep_alive {
        0 => Duration::from_secs(u32::MAX as u64),
        secs => Duration::from_millis(secs as u64 * 1500),
    };
    let ended = match session.sender.send(answer).await {
        Err(_) => Ok(()),
        Ok(()) => tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            _ = attached.taken_over.cancelled() => Ok(()),
            _ = writer_stop.cancelled() => Ok(()),
            r = session.read_loop(&mut reader, &mut rd, keep_alive) => r,
        },
    };
    // A broker shutting down sends no wills: nobody is left to read them.
    let graceful = session.disconnected;
    shared.router.detach(conn, !graceful && !cancel.is_cancelled());
    drop(session);
    // After DISCONNECT the writer sends what is queued (for a while); otherwise the connection closes now.
    if !graceful {
        writer_stop.cancel();
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer).await.is_err() {
        writer_stop.cancel();
        let _ = writer.await;
    }
    ended
}

/// Checks a CONNECT: the client's role and password, and its will's topic. On refusal, the CONNACK code.
async fn login(
    shared: &Shared,
    connect: &rumqttc::Connect,
) -> Result<(Role, Option<Message>), (ConnectReturnCode, Refusal)> {
    let client_id = connect.client_id.clone();
    let (user, pass) = match &connect.login {
        Some(l) => (Some(l.username.clone()), l.password.clone()),
        None => (None, String::new()),
    };
    let role =
        shared.rules.role(&client_id, user.as_deref()).map_err(|r| (ConnectReturnCode::BadUserNamePassword, r))?;
    let checker = shared.login.clone();
    let (id, user) = (client_id.clone(), user.unwrap_or_default());
    let ok = tokio::task::spawn_blocking(move || checker.check(&id, &user, &pass)).await.unwrap_or(false);
    if !ok {
        let why = Refusal::Protocol(format!("{client_id}: wrong password"));
        return Err((ConnectReturnCode::BadUserNamePassword, why));
    }
    let Some(will) = &connect.last_will else { return Ok((role, None)) };
    if !topic::valid_topic(&will.topic) {
        return Err((ConnectReturnCode::NotAuthorized, Refusal::Protocol(format!("bad will topic {:?}", will.topic))));
    }
    let allowed = shared.rules.may_publish(&role, &will.topic);
    acl_check(shared, &role, allowed, "leave a will on", &will.topic)
        .map_err(|d| (ConnectReturnCode::NotAuthorized, d))?;
    let message = Message {
        topic: will.topic.as_str().into(),
        payload: Bytes::copy_from_slice(&will.message),
        qos: min_qos(will.qos, QoS::AtLeastOnce),
        retain: will.retain,
    };
    Ok((role, Some(message)))
}

/// Turns a refused ACL check of a receiver into a counted, logged violation (the connection is then closed).
fn acl_check(shared: &Shared, role: &Role, allowed: bool, action: &'static str, topic: &str) -> Result<(), Refusal> {
    let Role::Receiver(client) = role else { return Ok(()) };
    if allowed {
        return Ok(());
    }
    shared.counters.acl_denied.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(receiver = %client, action, topic, "MQTT ACL violation: connection closed");
    Err(Refusal::Denied { client: client.clone(), action, topic: topic.to_string() })
}

/// Cuts the byte stream into packets.
struct Reader<'a> {
    buf: BytesMut,
    /// The least a read asks for.
    min_read: usize,
    counters: &'a WireCounters,
    public: bool,
}

impl Reader<'_> {
    /// The next whole packet; `None` at end of stream.
    async fn next(&mut self, rd: &mut (impl AsyncRead + Unpin)) -> Result<Option<Packet>, Ended> {
        loop {
            let missing = match Packet::read(&mut self.buf, MAX_PACKET_BYTES) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::Error::InsufficientBytes(n)) => n,
                Err(e) => return Err(Refusal::Protocol(e.to_string()).into()),
            };
            if self.buf.is_empty() && self.buf.capacity() > self.min_read {
                // A large packet has gone through: an idle connection does not keep its buffer.
                self.buf = BytesMut::new();
            }
            self.buf.reserve(missing.max(self.min_read));
            let n = rd.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            if self.public {
                self.counters.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// The reading half's state after login.
struct Session<'a> {
    shared: &'a Shared,
    conn: u64,
    role: Role,
    sender: mpsc::Sender<Outgoing>,
    disconnected: bool,
}

impl Session<'_> {
    async fn read_loop(
        &mut self,
        reader: &mut Reader<'_>,
        rd: &mut (impl AsyncRead + Unpin),
        keep_alive: Duration,
    ) -> Result<(), Ended> {
        loop {
            let packet = match tokio::time::timeout(keep_alive, reader.next(rd)).await {
                Err(_) => return Err(Ended::TimedOut),
                Ok(read) => read?,
            };
            let Some(packet) = packet else { return Ok(()) };
            if !self.handle(packet).await? {
                return Ok(());
            }
        }
    }

    /// Answers one packet; false after DISCONNECT.
    async fn handle(&mut self, packet: Packet) -> Result<bool, Ended> {
        let answer = match packet {
            Packet::Publish(p) => {
                if !topic::valid_topic(&p.topic) {
                    return Err(Refusal::Protocol(format!("cannot publish on {:?}", p.topic)).into());
                }
                self.check(self.shared.rules.may_publish(&self.role, &p.topic), "publish on", &p.topic)?;
                let (qos, pkid) = (p.qos, p.pkid);
                let qos_out = min_qos(qos, QoS::AtLeastOnce);
                let message = Message { topic: p.topic.into(), payload: p.payload, qos: qos_out, retain: p.retain };
                self.shared.router.publish(message);
                match qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(pkid))),
                }
            }
            Packet::PubRel(r) => Some(Packet::PubComp(PubComp::new(r.pkid))),
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    self.check(self.shared.rules.may_subscribe(&self.role, &f.path), "subscribe to", &f.path)?;
                }
                let codes = s
                    .filters
                    .iter()
                    .map(|f| match topic::valid_filter(&f.path) {
                        true => SubscribeReasonCode::Success(min_qos(f.qos, QoS::AtLeastOnce)),
                        false => SubscribeReasonCode::Failure,
                    })
                    .collect();
                self.send(Packet::SubAck(SubAck::new(s.pkid, codes))).await?;
                for f in s.filters.iter().filter(|f| topic::valid_filter(&f.path)) {
                    self.shared.router.subscribe(self.conn, &f.path, min_qos(f.qos, QoS::AtLeastOnce));
                }
                None
            }
            Packet::Unsubscribe(u) => {
                for filter in &u.topics {
                    self.shared.router.unsubscribe(self.conn, filter);
                }
                Some(Packet::UnsubAck(UnsubAck::new(u.pkid)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => {
                self.shared.router.clear_will(self.conn);
                self.disconnected = true;
                return Ok(false);
            }
            // Acknowledgements of what the broker sent: sessions are not kept, so there is nothing to resend.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => None,
            Packet::Connect(_) => return Err(Refusal::Protocol("a second CONNECT".into()).into()),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Refusal::Protocol("a client sent a packet only a broker sends".into()).into())
            }
        };
        if let Some(answer) = answer {
            self.send(answer).await?;
        }
        Ok(true)
    }

    fn check(&self, allowed: bool, action: &'static str, topic: &str) -> Result<(), Refusal> {
        acl_check(self.shared, &self.role, allowed, action, topic)
    }

    async fn send(&self, packet: Packet) -> Result<(), Ended> {
        self.sender
            .send(Outgoing::Packet(encode(&packet)))
            .await
            .map_err(|_| Ended::Io(std::io::ErrorKind::BrokenPipe.into()))
    }
}

/// Sends the outbox in order until it is closed or `stop`; stops (and cancels `stop`) on a write error.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut outbox: mpsc::Receiver<Outgoing>,
    counters: Arc<WireCounters>,
    public: bool,
    stop: CancellationToken,
) {
    let mut next_pkid: u16 = 0;
    let mut gathered = BytesMut::new();
    let written = async {
        loop {
            let item = match outbox.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if !gathered.is_empty() {
                        w.write_all(&gathered).await?;
                    }
                    gathered = BytesMut::new();
                    w.flush().await?;
                    match outbox.recv().await {
                        Some(item) => item,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let (head, payload) = match item {
                Outgoing::Publish(m) => {
                    let pkid = match m.qos {
                        QoS::AtMostOnce => 0,
                        _ => {
                            next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                            next_pkid
                        }
                    };
                    (publish_head(&m.topic, m.qos, m.retain, pkid, m.payload.len()), m.payload)
                }
                Outgoing::Packet(bytes) => (BytesMut::new(), bytes),
            };
            if public {
                counters.down_bytes.fetch_add((head.len() + payload.len()) as u64, Ordering::Relaxed);
            }
            gathered.extend_from_slice(&head);
            if payload.len() <= GATHER_BYTES {
                gathered.extend_from_slice(&payload);
            } else {
                // One vectored write: the head does not go out as a segment of its own.
                let mut both = gathered.split().freeze().chain(payload);
                w.write_all_buf(&mut both).await?;
            }
        }
        if !gathered.is_empty() {
            w.write_all(&gathered).await?;
        }
        w.flush().await?;
        w.shutdown().await
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        r = written => if let Err(e) = r {
            tracing::debug!(error = %e, "MQTT write failed: connection closed");
            stop.cancel();
        },
    }
}

/// A control packet's bytes.
fn encode(packet: &Packet) -> Bytes {
    let mut out = BytesMut::with_capacity(packet.size() + 5);
    // Only the broker's own small answers come here; none can exceed the limit.
    let _ = packet.write(&mut out, usize::MAX);
    out.freeze()
}

/// The bytes of a PUBLISH before its payload: fixed header, remaining length, topic, packet id (QoS > 0).
fn publish_head(topic: &str, qos: QoS, retain: bool, pkid: u16, payload_len: usize) -> BytesMut {
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let mut remaining = 2 + topic.len() + id_len + payload_len;
    let mut head = BytesMut::with_capacity(7 + topic.len() + id_len);
    head.put_u8(0x30 | ((qos as u8) << 1) | u8::from(retain));
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        head.put_u8(byte);
        if remaining == 0 {
            break;
        }
    }
    head.put_u16(topic.len() as u16);
    head.put_slice(topic.as_bytes());
    if id_len > 0 {
        head.put_u16(pkid);
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::areas::NewArea;
    use proptest::prelude::*;
    use tokio::io::DuplexStream;

    /// A broker's shared state with one registered receiver; returns it with (id, secret).
    fn shared(dir: &std::path::Path) -> (Arc<Shared>, String, String) {
        let store = Store::open(dir).unwrap();
        let area = store.create_area(&NewArea::root_village("Bản Thử"), 0).unwrap();
        let rx = store.register_receiver("Loa A", area, 0).unwrap();
        let counters = Arc::new(WireCounters::default());
        let shared = Shared {
            router: Router::new(counters.clone()),
            rules: Arc::new(AclRules::new(loa_protocol::Topics::default(), "loa-controller")),
            login: Login { store, controller_id: "loa-controller".into(), controller_secret: "s".into() },
            counters,
        };
        (Arc::new(shared), rx.id, rx.secret)
    }

    async fn send(client: &mut DuplexStream, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        client.write_all(&out).await.unwrap();
    }

    async fn receive(client: &mut DuplexStream) -> Packet {
        let mut buf = BytesMut::new();
        loop {
            match Packet::read(&mut buf, MAX_PACKET_BYTES) {
                Ok(p) => return p,
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(client.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    }

    fn connect(id: &str, password: &str, keep_alive_s: u16, will: Option<&str>) -> Packet {
        let mut c = rumqttc::Connect::new(id);
        c.set_login(id, password);
        c.keep_alive = keep_alive_s;
        c.last_will = will.map(|t| rumqttc::LastWill::new(t, "gone", QoS::AtLeastOnce, true));
        Packet::Connect(c)
    }

    #[tokio::test]
    async fn a_connection_must_start_with_connect() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, _, _) = shared(dir.path());
        let (mut client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve(server, shared, true, CancellationToken::new()));
        send(&mut client, Packet::PingReq).await;
        let ended = served.await.unwrap();
        assert!(matches!(ended, Err(Ended::Refused(Refusal::Protocol(_)))), "{ended:?}");
    }

    #[tokio::test]
    async fn a_wrong_password_gets_its_connack_code() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, id, _) = shared(dir.path());
        let (mut client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve(server, shared.clone(), true, CancellationToken::new()));
        send(&mut client, connect(&id, "wrong", 60, None)).await;
        let answer = receive(&mut client).await;
        assert_eq!(answer, Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadUserNamePassword, false)));
        assert!(served.await.unwrap().is_err());
        assert_eq!(shared.router.sizes().0, 0, "nothing attached");
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_its_keep_alive_and_its_will_goes_out() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, id, secret) = shared(dir.path());
        let status = format!("loa/v1/up/{id}/status");
        let mut watcher = shared.router.attach("loa-controller", None, 10);
        shared.router.subscribe(watcher.conn, "loa/v1/up/+/status", QoS::AtLeastOnce);
        let (mut client, server) = tokio::io::duplex(4096);
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(serve(server, shared.clone(), true, CancellationToken::new()));
        send(&mut client, connect(&id, &secret, 1, Some(&status))).await;
        assert_eq!(receive(&mut client).await, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
        // A PINGREQ is answered and keeps the connection; then silence.
        send(&mut client, Packet::PingReq).await;
        assert_eq!(receive(&mut client).await, Packet::PingResp);
        let ended = tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
        assert!(matches!(ended, Err(Ended::TimedOut)), "{ended:?}");
        assert!(started.elapsed() >= Duration::from_millis(1500), "closed after {:?}", started.elapsed());
        match watcher.outbox.try_recv() {
            Ok(Outgoing::Publish(m)) => assert_eq!((&*m.topic, &m.payload[..]), (status.as_str(), &b"gone"[..])),
            other => panic!("no will: {other:?}"),
        }
        assert_eq!(shared.router.sizes(), (1, 1, 1), "the receiver is gone, its will retained");
    }

    proptest! {
        /// The head written before a payload is exactly what rumqttc writes for the same PUBLISH.
        #[test]
        fn publish_head_matches_rumqttc(topic in "[a-z/]{1,40}", qos in 0u8..2, retain: bool, pkid in 1u16.., len in prop_oneof![0usize..200, 100usize..20_000, 2_000_000usize..2_100_000]) {
            let qos = rumqttc::qos(qos).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let payload = vec![7u8; len];
            let mut p = rumqttc::Publish::new(topic.clone(), qos, payload.clone());
            p.retain = retain;
            p.pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
            let mut want = BytesMut::new();
            Packet::Publish(p.clone()).write(&mut want, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut got = publish_head(&topic, qos, retain, p.pkid, len);
            got.extend_from_slice(&payload);
            prop_assert_eq!(got, want);
        }
    }
}
