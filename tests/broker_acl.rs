//! Topic ACLs, on both brokers: receiver A's credentials can neither read receiver B's topics nor publish on
//! them (as B's uplink, on B's downlink, or as a last will), while A's and B's own traffic works. The embedded
//! broker refuses by closing A's connection (and counts it); Mosquitto, run with the files
//! `loa-controller mosquitto-acl` writes, grants subscriptions but delivers nothing of B's and drops the
//! publishes. Either
//! way a watcher with the controller's credentials, and B, never see A's forgeries: each check ends with a marker
//! message sent after the forgery, and the forgery must not have arrived before the marker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use loa_controller::broker::mosquitto::{write_files, FileSettings};
use loa_controller::broker::{EmbeddedBroker, WireCounters};
use loa_controller::store::areas::NewArea;
use loa_controller::store::Store;
use loa_protocol::Topics;
use loa_tests::Mosquitto;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// What a test client saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected,
    SubAck(Vec<SubscribeReasonCode>),
    PubAck,
    Message(String, Vec<u8>),
    Closed(String),
}

/// A client whose events are collected; its connection is not retried once closed.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Seen>,
    /// Ends the connection without DISCONNECT (so that its will fires).
    abort: CancellationToken,
    /// Everything seen so far, in order.
    log: Vec<Seen>,
}

impl Client {
    fn start(port: u16, client_id: &str, user: &str, password: &str, will: Option<(&str, &str)>) -> Client {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        if let Some((topic, payload)) = will {
            options.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, false));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let abort = CancellationToken::new();
        let aborted = abort.clone();
        tokio::spawn(async move {
            loop {
                let polled = tokio::select! {
                    _ = aborted.cancelled() => return,
                    polled = eventloop.poll() => polled,
                };
                let seen = match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                    Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(p.topic.clone(), p.payload.to_vec()),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Seen::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Client { client, events, abort, log: Vec::new() }
    }

    /// The next event.
    async fn next(&mut self) -> anyhow::Result<Seen> {
        let seen = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .with_context(|| format!("timed out; saw {:?}", self.log))?
            .unwrap_or(Seen::Closed("client task ended".into()));
        self.log.push(seen.clone());
        Ok(seen)
    }

    /// Waits for an event `want` accepts; returns it.
    async fn until(&mut self, what: &str, want: impl Fn(&Seen) -> bool) -> anyhow::Result<Seen> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("timed out waiting for {what}; saw {:?}", self.log))?
                .with_context(|| format!("client task ended waiting for {what}"))?;
            self.log.push(seen.clone());
            if want(&seen) {
                return Ok(seen);
            }
            if matches!(seen, Seen::Closed(_)) {
                bail!("connection closed waiting for {what}; saw {:?}", self.log);
            }
        }
    }

    async fn connected(&mut self) -> anyhow::Result<()> {
        self.until("CONNACK", |s| *s == Seen::Connected).await.map(drop)
    }

    async fn closed(&mut self) -> anyhow::Result<()> {
        while !matches!(self.next().await.context("the connection stays open")?, Seen::Closed(_)) {}
        Ok(())
    }

    async fn subscribe(&mut self, filter: &str) -> anyhow::Result<Vec<SubscribeReasonCode>> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        match self.until(&format!("SUBACK for {filter}"), |s| matches!(s, Seen::SubAck(_))).await? {
            Seen::SubAck(codes) => Ok(codes),
            _ => unreachable!(),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str, retain: bool) -> anyhow::Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec()).await?;
        self.until(&format!("PUBACK for {topic}"), |s| *s == Seen::PubAck).await.map(drop)
    }

    async fn message(&mut self, topic: &str, payload: &str) -> anyhow::Result<()> {
        let want = Seen::Message(topic.to_string(), payload.as_bytes().to_vec());
        self.until(&format!("{payload:?} on {topic}"), |s| *s == want).await.map(drop)
    }

    /// Whether any message with this payload was seen.
    fn saw_payload(&self, payload: &str) -> bool {
        self.log.iter().any(|s| matches!(s, Seen::Message(_, p) if p == payload.as_bytes()))
    }
}

/// The fleet: two receivers in one village.
struct Fleet {
    store: Store,
    a: (String, String),
    b: (String, String),
}

fn fleet(dir: &std::path::Path) -> anyhow::Result<Fleet> {
    let store = Store::open(dir)?;
    let area = store.create_area(&NewArea::root_village("Thôn Thử"), 0)?;
    let a = store.register_receiver("Loa A", area, 0)?;
    let b = store.register_receiver("Loa B", area, 0)?;
    Ok(Fleet { store, a: (a.id, a.secret), b: (b.id, b.secret) })
}

/// How a broker answers a refused request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refuses {
    /// The connection is closed.
    ByClosing,
    /// A subscription is granted but nothing forbidden is delivered; a publish is acknowledged and dropped.
    Silently,
}

/// Runs every check against a broker on `port`. `controller` = (client id, password).
async fn scenario(port: u16, controller: (&str, &str), fleet: &Fleet, refuses: Refuses) -> anyhow::Result<()> {
    let t = Topics::default();
    let (a, a_pw) = (&fleet.a.0, fleet.a.1.as_str());
    let (b, b_pw) = (&fleet.b.0, fleet.b.1.as_str());
    let a_rx = loa_protocol::ReceiverId::new(a.as_str())?;
    let b_rx = loa_protocol::ReceiverId::new(b.as_str())?;

    // The controller's watcher sees everything; it leaves a retained plan for each receiver.
    let mut watcher = Client::start(port, controller.0, controller.0, controller.1, None);
    watcher.connected().await?;
    ensure!(watcher.subscribe("loa/v1/#").await? == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    watcher.publish(&t.plan(&a_rx), "plan-for-a", true).await?;
    watcher.publish(&t.plan(&b_rx), "plan-for-b", true).await?;

    // B and A, on their own topics: it works.
    let mut rb = Client::start(port, b, b, b_pw, Some((&t.status(&b_rx), "b-offline")));
    rb.connected().await?;
    ensure!(rb.subscribe(&t.receiver_subscription(&b_rx)).await? == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    rb.message(&t.plan(&b_rx), "plan-for-b").await?;
    // (Each later connection with A's credentials has A's client id, so it pushes `ra` off: `ra` is not used
    // after this.)
    let mut ra = Client::start(port, a, a, a_pw, Some((&t.status(&a_rx), "a-offline")));
    ra.connected().await?;
    ensure!(ra.subscribe(&t.receiver_subscription(&a_rx)).await? == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    ra.message(&t.plan(&a_rx), "plan-for-a").await?;
    ra.publish(&t.reports(&a_rx), "report-from-a", false).await?;
    watcher.message(&t.reports(&a_rx), "report-from-a").await?;
    ra.publish(&t.health(&a_rx), "health-from-a", false).await?;
    watcher.message(&t.health(&a_rx), "health-from-a").await?;
    ensure!(!ra.saw_payload("plan-for-b"), "A got B's plan: {:?}", ra.log);

    // A's credentials may not read B's topics: not one filter, not a wildcard over all receivers.
    let mut marker = 0;
    for filter in [t.plan(&b_rx), t.receiver_subscription(&b_rx), "loa/v1/rx/+/#".into(), "#".into()] {
        let mut spy = Client::start(port, a, a, a_pw, None);
        spy.connected().await?;
        match refuses {
            Refuses::ByClosing => {
                spy.client.subscribe(&filter, QoS::AtLeastOnce).await?;
                spy.closed().await?;
            }
            Refuses::Silently => {
                // Mosquitto's acl_file checks reading when it delivers, not when one subscribes: the SUBACK may
                // grant the filter, but nothing of B's may arrive. The spy's own topic carries a marker published
                // after the SUBACK: B's retained plan, had it been let through, would have come first.
                spy.subscribe(&filter).await?;
                ensure!(spy.subscribe(&t.receiver_subscription(&a_rx)).await?.len() == 1);
                marker += 1;
                let m = format!("marker-{marker}");
                watcher.publish(&t.command(&a_rx), &m, false).await?;
                spy.message(&t.command(&a_rx), &m).await?;
            }
        }
        ensure!(!spy.saw_payload("plan-for-b"), "{filter}: A's credentials read B's plan: {:?}", spy.log);
    }

    // A's credentials may not write B's topics: B's uplink (a forged report or an "offline") or B's downlink.
    let forgeries = [
        (t.reports(&b_rx), "forged-report"),
        (t.status(&b_rx), "forged-status"),
        (t.health(&b_rx), "forged-health"),
        (t.command(&b_rx), "forged-command"),
        (t.plan(&b_rx), "forged-plan"),
    ];
    for (topic, payload) in &forgeries {
        let mut forger = Client::start(port, a, a, a_pw, None);
        forger.connected().await?;
        forger.client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await?;
        match refuses {
            Refuses::ByClosing => forger.closed().await?,
            Refuses::Silently => forger.until("PUBACK", |s| *s == Seen::PubAck).await.map(drop)?,
        }
        // Markers after the forgery, on the same paths it would have taken.
        marker += 1;
        let m = format!("marker-{marker}");
        rb.publish(&t.reports(&b_rx), &m, false).await?;
        watcher.message(&t.reports(&b_rx), &m).await?;
        watcher.publish(&t.command(&b_rx), &m, false).await?;
        rb.message(&t.command(&b_rx), &m).await?;
    }

    // Nor leave a last will on B's status: refused at CONNECT, or dropped when it fires. A control will on A's
    // own status, fired after it, must arrive.
    let mut willer = Client::start(port, a, a, a_pw, Some((&t.status(&b_rx), "forged-will")));
    match willer.next().await? {
        Seen::Connected => {
            ensure!(refuses == Refuses::Silently, "a will on B's status was accepted");
            willer.abort.cancel();
        }
        Seen::Closed(_) => {}
        other => bail!("unexpected {other:?}"),
    }
    let mut control = Client::start(port, a, a, a_pw, Some((&t.status(&a_rx), "own-will")));
    control.connected().await?;
    control.abort.cancel();
    watcher.message(&t.status(&a_rx), "own-will").await?;

    // Nor take B's client id (which would push B off the broker).
    let mut thief = Client::start(port, b, a, a_pw, None);
    match refuses {
        Refuses::ByClosing => thief.closed().await?,
        // Mosquitto replaces the client id by the user name: the thief is just A again.
        Refuses::Silently => thief.connected().await?,
    }
    ensure!(!thief.log.contains(&Seen::Connected) || refuses == Refuses::Silently);
    marker += 1;
    let m = format!("marker-{marker}");
    rb.publish(&t.reports(&b_rx), &m, false).await?;
    watcher.message(&t.reports(&b_rx), &m).await?;

    for (_, payload) in forgeries.iter().chain([&(String::new(), "forged-will")]) {
        ensure!(!watcher.saw_payload(payload), "the controller got {payload:?}: {:?}", watcher.log);
        ensure!(!rb.saw_payload(payload), "B got {payload:?}: {:?}", rb.log);
    }
    ensure!(!rb.log.iter().any(|s| matches!(s, Seen::Closed(_))), "B was disconnected: {:?}", rb.log);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_keeps_receivers_to_their_own_topics() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let dir = tempfile::tempdir()?;
    let fleet = fleet(dir.path())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let counters = Arc::new(WireCounters::default());
    let broker = EmbeddedBroker::start(
        listener,
        fleet.store.clone(),
        "loa-controller".into(),
        "controller-secret".into(),
        counters.clone(),
        Topics::default().chunks_filter(),
    )
    .await?;
    let port = broker.public_addr().context("public address")?.port();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(broker.run(cancel.clone()));

    scenario(port, ("loa-controller", "controller-secret"), &fleet, Refuses::ByClosing).await?;
    // 4 subscriptions, 5 publishes and 1 will refused; the client id theft fails at login (not an ACL matter).
    assert_eq!(counters.acl_denied.load(Ordering::Relaxed), 10);

    cancel.cancel();
    running.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_generated_files_keeps_receivers_to_their_own_topics() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let dir = tempfile::tempdir()?;
    let fleet = fleet(&dir.path().join("data"))?;
    let settings = FileSettings {
        topics: Topics::default(),
        controller_id: "loa-controller".into(),
        controller_password: "controller-secret".into(),
        port: 1883,
    };
    let written = write_files(&fleet.store, &settings, &dir.path().join("mosquitto"))?;
    ensure!(written.receivers == 2 && written.without_hash.is_empty(), "{written:?}");
    let conf = std::fs::read_to_string(&written.conf)?;
    for line in ["allow_anonymous false", "use_username_as_clientid true", "password_file /", "acl_file /"] {
        ensure!(conf.contains(line), "loa.conf lacks {line:?}:\n{conf}");
    }
    let Some(mosquitto) = Mosquitto::start_secured(&written.passwd, &written.acl).await? else {
        return Ok(());
    };
    let port: u16 = mosquitto.url.rsplit(':').next().context("port")?.parse()?;

    // Wrong passwords are refused outright.
    let mut stranger = Client::start(port, &fleet.a.0, &fleet.a.0, "wrong", None);
    stranger.closed().await?;
    ensure!(!stranger.log.contains(&Seen::Connected));

    scenario(port, ("loa-controller", "controller-secret"), &fleet, Refuses::Silently).await
}
