//! The broker's shared state, behind one lock: the connected clients by client id, every subscription
//! ([`Subscriptions`]) and the retained messages. A PUBLISH is routed here: kept if retained, then put on the
//! outbox of each subscribed connection. Outboxes are bounded; a full one (a client that stopped reading) loses
//! the message, which is logged and counted ([`WireCounters::messages_dropped`]) — the protocol repairs it (a
//! chunk is asked for again, a plan is retained and sent again on reconnect). Nothing here waits: the lock is
//! held for a lookup and a few `try_send`s.
//!
//! Sessions are not kept: every connection starts clean (Loa's clients all connect with `clean_session`), and a
//! second connection with a client id closes the first one, whose will is published before the new one is
//! acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::topic::{self, Subscriptions};
use super::WireCounters;

/// One message on its way to subscribers.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// Its payload (shared by every subscriber's copy).
    pub payload: Bytes,
    /// QoS 0 or 1 (QoS 2 is delivered as 1).
    pub qos: QoS,
    /// Set on retained messages sent because of a new subscription, never on live ones.
    pub retain: bool,
}

/// What a connection's writer sends, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// A message from the router.
    Publish(Message),
    /// An answer of the connection itself (CONNACK, SUBACK, PUBACK, PINGRESP…), encoded.
    Packet(Bytes),
}

/// A connection as the router hands it back from [`Router::attach`].
#[derive(Debug)]
pub struct Attached {
    /// Its number (client ids are reused; numbers are not).
    pub conn: u64,
    /// For the connection's own answers, ordered with what the router sends.
    pub sender: mpsc::Sender<Outgoing>,
    /// What the writer sends.
    pub outbox: mpsc::Receiver<Outgoing>,
    /// Cancelled when another connection takes the client id over.
    pub taken_over: CancellationToken,
}

#[derive(Debug)]
struct Client {
    client_id: Arc<str>,
    outbox: mpsc::Sender<Outgoing>,
    taken_over: CancellationToken,
    will: Option<Message>,
    filters: Vec<String>,
    dropped: u64,
}

#[derive(Debug, Default)]
struct State {
    next_conn: u64,
    conns: HashMap<u64, Client>,
    by_id: HashMap<Arc<str>, u64>,
    subscriptions: Subscriptions,
    retained: BTreeMap<String, (Bytes, QoS)>,
}

/// The router. One per broker, shared by every connection.
#[derive(Debug)]
pub struct Router {
    state: Mutex<State>,
    counters: Arc<WireCounters>,
}

/// The lower of two QoS levels.
pub fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

impl Router {
    /// An empty router counting its drops in `counters`.
    pub fn new(counters: Arc<WireCounters>) -> Self {
        Router { state: Mutex::new(State::default()), counters }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can leave the state half-changed, so a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a connection for `client_id` with an outbox of `capacity` messages. A connection already
    /// holding the client id is closed and its will published first.
    pub fn attach(&self, client_id: &str, will: Option<Message>, capacity: usize) -> Attached {
        let (sender, outbox) = mpsc::channel(capacity.max(1));
        let taken_over = CancellationToken::new();
        let mut state = self.lock();
        if let Some(old) = state.by_id.get(client_id).copied() {
            tracing::debug!(client = client_id, "MQTT client id connected again: the older connection is closed");
            self.detach_locked(&mut state, old, true);
        }
        state.next_conn += 1;
        let conn = state.next_conn;
        let client_id: Arc<str> = client_id.into();
        state.by_id.insert(client_id.clone(), conn);
        let client = Client {
            client_id,
            outbox: sender.clone(),
            taken_over: taken_over.clone(),
            will,
            filters: Vec::new(),
            dropped: 0,
        };
        state.conns.insert(conn, client);
        Attached { conn, sender, outbox, taken_over }
    }

    /// Removes a connection and its subscriptions; publishes its will if `with_will` (it ended without
    /// DISCONNECT). Nothing happens for a connection already gone (taken over).
    pub fn detach(&self, conn: u64, with_will: bool) {
        let mut state = self.lock();
        self.detach_locked(&mut state, conn, with_will);
    }

    fn detach_locked(&self, state: &mut State, conn: u64, with_will: bool) {
        let Some(client) = state.conns.remove(&conn) else { return };
        if state.by_id.get(&client.client_id) == Some(&conn) {
            state.by_id.remove(&client.client_id);
        }
        for filter in &client.filters {
            state.subscriptions.remove(filter, conn);
        }
        client.taken_over.cancel();
        if let (true, Some(will)) = (with_will, client.will) {
            self.route_locked(state, will);
        }
    }

    /// Subscribes a connection to a valid `filter` and queues the retained messages it matches (with the retain
    /// flag). False if the connection is gone.
    pub fn subscribe(&self, conn: u64, filter: &str, qos: QoS) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(client) = state.conns.get_mut(&conn) else { return false };
        if !client.filters.iter().any(|f| f == filter) {
            client.filters.push(filter.to_string());
        }
        state.subscriptions.insert(filter, conn, qos);
        let prefix = topic::literal_prefix(filter);
        let retained = state
            .retained
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(t, _)| t.starts_with(prefix))
            .filter(|(t, _)| topic::matches(filter, t));
        for (t, (payload, stored_qos)) in retained {
            let message = Message {
                topic: t.as_str().into(),
                payload: payload.clone(),
                qos: min_qos(qos, *stored_qos),
                retain: true,
            };
            deliver(client, message, &self.counters);
        }
        true
    }

    /// Ends a connection's subscription to `filter` (if it had one).
    pub fn unsubscribe(&self, conn: u64, filter: &str) {
        let mut state = self.lock();
        if let Some(client) = state.conns.get_mut(&conn) {
            client.filters.retain(|f| f != filter);
            state.subscriptions.remove(filter, conn);
        }
    }

    /// Forgets a connection's will (it sent DISCONNECT).
    pub fn clear_will(&self, conn: u64) {
        if let Some(client) = self.lock().conns.get_mut(&conn) {
            client.will = None;
        }
    }

    /// Routes a PUBLISH with a valid topic: keeps it if retained (an empty payload clears the topic), then
    /// queues it for every subscriber at the lower of the two QoS levels.
    pub fn publish(&self, message: Message) {
        let mut state = self.lock();
        self.route_locked(&mut state, message);
    }

    fn route_locked(&self, state: &mut State, message: Message) {
        if message.retain {
            if message.payload.is_empty() {
                state.retained.remove(&*message.topic);
            } else {
                // A copy: the payload may be a slice of a connection's read buffer, which it would keep alive.
                let kept = Bytes::copy_from_slice(&message.payload);
                state.retained.insert(message.topic.to_string(), (kept, message.qos));
            }
        }
        for (conn, qos) in state.subscriptions.subscribers(&message.topic) {
            if let Some(client) = state.conns.get_mut(&conn) {
                let live = Message { qos: min_qos(qos, message.qos), retain: false, ..message.clone() };
                deliver(client, live, &self.counters);
            }
        }
    }

    /// How many connections, subscriptions and retained messages there are.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.conns.len(), state.subscriptions.len(), state.retained.len())
    }
}

/// Queues a message on a client's outbox without waiting; a full outbox loses it (logged and counted).
fn deliver(client: &mut Client, message: Message, counters: &WireCounters) {
    match client.outbox.try_send(Outgoing::Publish(message)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(Outgoing::Publish(lost))) => {
            counters.messages_dropped.fetch_add(1, Ordering::Relaxed);
            client.dropped += 1;
            if client.dropped == 1 || client.dropped % 1000 == 0 {
                tracing::warn!(client = %client.client_id, topic = %lost.topic, dropped = client.dropped,
                    "MQTT client does not keep up: its outbox is full and messages are dropped");
            }
        }
        // The connection is closing; what it would have got goes with it.
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str, retain: bool) -> Message {
        Message { topic: topic.into(), payload: Bytes::from(payload.to_string()), qos: QoS::AtLeastOnce, retain }
    }

    fn received(outbox: &mut mpsc::Receiver<Outgoing>) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Publish(m)) = outbox.try_recv() {
            out.push((m.topic.to_string(), String::from_utf8_lossy(&m.payload).into_owned(), m.retain));
        }
        out
    }

    #[test]
    fn retained_messages_reach_later_subscribers_and_live_ones_carry_no_retain_flag() {
        let router = Router::new(Arc::default());
        router.publish(message("loa/v1/rx/a/plan", "old", true));
        router.publish(message("loa/v1/rx/a/plan", "new", true));
        router.publish(message("loa/v1/rx/b/plan", "b", true));
        router.publish(message("loa/v1/rx/a/manifest/x", "gone", true));
        router.publish(message("loa/v1/rx/a/manifest/x", "", true));
        let mut a = router.attach("a", None, 10);
        assert!(router.subscribe(a.conn, "loa/v1/rx/a/#", QoS::AtLeastOnce));
        assert_eq!(received(&mut a.outbox), vec![("loa/v1/rx/a/plan".into(), "new".into(), true)]);
        router.publish(message("loa/v1/rx/a/plan", "live", true));
        router.publish(message("loa/v1/rx/b/plan", "not a's", false));
        assert_eq!(received(&mut a.outbox), vec![("loa/v1/rx/a/plan".into(), "live".into(), false)]);
        assert_eq!(router.sizes(), (1, 1, 2));
    }

    #[test]
    fn a_second_connection_closes_the_first_and_fires_its_will() {
        let router = Router::new(Arc::default());
        let mut watcher = router.attach("controller", None, 10);
        router.subscribe(watcher.conn, "up/+/status", QoS::AtLeastOnce);
        let first = router.attach("a", Some(message("up/a/status", "offline-1", true)), 10);
        router.subscribe(first.conn, "rx/a/#", QoS::AtLeastOnce);
        let second = router.attach("a", Some(message("up/a/status", "offline-2", true)), 10);
        assert!(first.taken_over.is_cancelled());
        assert!(!second.taken_over.is_cancelled());
        assert_eq!(received(&mut watcher.outbox), vec![("up/a/status".into(), "offline-1".into(), false)]);
        // The first connection ending later changes nothing for the second.
        router.detach(first.conn, true);
        assert!(received(&mut watcher.outbox).is_empty());
        assert_eq!(router.sizes(), (2, 1, 1));
        // A clean end: no will.
        router.clear_will(second.conn);
        router.detach(second.conn, true);
        assert!(received(&mut watcher.outbox).is_empty());
        assert_eq!(router.sizes(), (1, 1, 1));
    }

    #[test]
    fn a_full_outbox_loses_messages_and_counts_them() {
        let counters = Arc::new(WireCounters::default());
        let router = Router::new(counters.clone());
        let mut slow = router.attach("slow", None, 2);
        router.subscribe(slow.conn, "t", QoS::AtMostOnce);
        for i in 0..5 {
            router.publish(message("t", &i.to_string(), false));
        }
        assert_eq!(received(&mut slow.outbox).len(), 2);
        assert_eq!(counters.messages_dropped.load(Ordering::Relaxed), 3);
        assert_eq!(min_qos(QoS::AtLeastOnce, QoS::AtMostOnce), QoS::AtMostOnce);
    }
}
