//! Over a real broker: every kind of refused message is counted in the heartbeat's `rej` under its own counter
//! (replayed, reordered, expired, unknown key, another key under a known key id, truncated signature, tampered
//! payload, unsigned, garbage), and a key rotation works: a plan signed with a new key is refused until the
//! key's announcement (signed with the old key) arrives, then accepted without being sent again, and the new
//! key is still trusted after a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use loa_protocol::hash::encode_hex;
use loa_protocol::{KeyAnnouncement, KeyId, Plan, ReceiverId, Rejections, Signer, StatusState, Timestamp};
use loa_receiver::clock::{Clock, SystemClock};
use loa_receiver::Receiver;
use rumqttc::QoS;
use tokio_util::sync::CancellationToken;

use common::{start_broker, wait_for, Ctl, HOUR_MS};

fn plan(me: &ReceiverId, seq: u64, now: Timestamp) -> Plan {
    Plan {
        receiver: me.clone(),
        seq,
        from: now,
        until: now.saturating_add_ms(49 * HOUR_MS),
        plays: vec![],
        answers_session: None,
    }
}

fn sign(by: &Signer, p: &Plan, issued: Timestamp, expires: Timestamp) -> String {
    String::from_utf8(by.sign(p, issued, expires).unwrap().to_json().unwrap()).unwrap()
}

async fn send_plan(ctl: &Ctl, payload: impl Into<Vec<u8>>) {
    ctl.client.publish(ctl.topics.plan(&ctl.me), QoS::AtLeastOnce, false, payload.into()).await.unwrap();
}

async fn wait_rej(ctl: &Ctl, what: &str, expected: Rejections) {
    wait_for(what, Duration::from_secs(10), || {
        ctl.seen.lock().unwrap().health.last().is_some_and(|h| h.rej == expected)
    })
    .await;
}

async fn wait_plan(ctl: &Ctl, seq: u64) {
    wait_for(&format!("plan {seq} held"), Duration::from_secs(10), || {
        ctl.seen.lock().unwrap().health.last().is_some_and(|h| h.plan == Some(seq))
    })
    .await;
}

fn start(ctl: &Ctl, port: u16, state: std::path::PathBuf) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let receiver = Receiver::from_config(ctl.receiver_config(port, state), Arc::new(SystemClock)).unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { receiver.run(cancel).await.unwrap() }
    });
    (cancel, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_counted_and_a_rotated_key_is_trusted() {
    let port = start_broker();
    let me = ReceiverId::new("rx-0000000000e1").unwrap();
    let ctl = Ctl::start(port, &me).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (cancel, task) = start(&ctl, port, state.clone());
    wait_for("online", Duration::from_secs(10), || {
        ctl.seen.lock().unwrap().status.iter().any(|s| s.state == StatusState::Online)
    })
    .await;

    let old = &*ctl.signer;
    let now = SystemClock.now();
    let day = now.saturating_add_ms(24 * HOUR_MS);
    ctl.plan(7, vec![]).await;
    wait_plan(&ctl, 7).await;
    let mut want = Rejections::default();

    // Replayed: the same plan again is a normal re-delivery (not counted); a lower seq is counted.
    send_plan(&ctl, sign(old, &plan(&me, 7, now), now, day)).await;
    send_plan(&ctl, sign(old, &plan(&me, 3, now), now, day)).await;
    want.replay += 1;
    wait_rej(&ctl, "replay counted", want).await;
    // Reordered: plan 9 arrives, then the older plan 8.
    let p8 = sign(old, &plan(&me, 8, now), now, day);
    send_plan(&ctl, sign(old, &plan(&me, 9, now), now, day)).await;
    wait_plan(&ctl, 9).await;
    send_plan(&ctl, p8).await;
    want.replay += 1;
    wait_rej(&ctl, "reordered plan counted", want).await;
    // Expired an hour ago.
    let past = now.saturating_add_ms(-2 * HOUR_MS);
    send_plan(&ctl, sign(old, &plan(&me, 10, past), past, now.saturating_add_ms(-HOUR_MS))).await;
    want.expired += 1;
    wait_rej(&ctl, "expired counted", want).await;
    // Unknown key id.
    let stranger = Signer::from_seed(KeyId::new("ctl-stranger").unwrap(), &[31; 32]);
    send_plan(&ctl, sign(&stranger, &plan(&me, 11, now), now, day)).await;
    want.unknown_key += 1;
    wait_rej(&ctl, "unknown key counted", want).await;
    // Another key under our key id; a truncated signature; a tampered payload.
    let forger = Signer::from_seed(old.kid().clone(), &[32; 32]);
    send_plan(&ctl, sign(&forger, &plan(&me, 12, now), now, day)).await;
    let good = sign(old, &plan(&me, 13, now), now, day);
    let sig_at = good.find("\"sig\":\"").unwrap() + 7;
    send_plan(&ctl, format!("{}\"}}", &good[..sig_at + 100])).await;
    send_plan(&ctl, good.replace("\"seq\":13", "\"seq\":99")).await;
    want.bad_signature += 3;
    wait_rej(&ctl, "bad signatures counted", want).await;
    // Unsigned, and not JSON at all.
    send_plan(&ctl, format!("{}\"}}", &good[..sig_at])).await;
    send_plan(&ctl, "{\"kind\":\"plan\"").await;
    want.unsigned += 1;
    want.malformed += 1;
    wait_rej(&ctl, "unsigned and malformed counted", want).await;
    wait_plan(&ctl, 9).await;

    // Key rotation. A plan signed with the new key is refused (unknown key) until the announcement comes.
    let new = Signer::from_seed(KeyId::new("ctl-new").unwrap(), &[33; 32]);
    send_plan(&ctl, sign(&new, &plan(&me, 20, now), now, day)).await;
    want.unknown_key += 1;
    wait_rej(&ctl, "plan with the new key refused", want).await;
    let announcement =
        KeyAnnouncement { kid: new.kid().clone(), public_key: encode_hex(&new.public_key()), valid_from: now };
    // Announced on another key's topic: refused.
    let signed = old.sign(&announcement, now, now.saturating_add_ms(365 * 24 * HOUR_MS)).unwrap().to_json().unwrap();
    let wrong_topic = ctl.topics.key(&me, &KeyId::new("ctl-other").unwrap());
    ctl.client.publish(wrong_topic, QoS::AtLeastOnce, true, signed.clone()).await.unwrap();
    want.malformed += 1;
    wait_rej(&ctl, "announcement on the wrong topic refused", want).await;
    // On its own topic: trusted, and the parked plan is taken without being sent again.
    ctl.client.publish(ctl.topics.key(&me, new.kid()), QoS::AtLeastOnce, true, signed).await.unwrap();
    wait_plan(&ctl, 20).await;
    assert!(state.join("keys").join("ctl-new.json").is_file());
    send_plan(&ctl, sign(&new, &plan(&me, 21, now), now, day)).await;
    wait_plan(&ctl, 21).await;
    // The old key still works.
    send_plan(&ctl, sign(old, &plan(&me, 22, now), now, day)).await;
    wait_plan(&ctl, 22).await;
    assert_eq!(ctl.seen.lock().unwrap().health.last().unwrap().rej, want);
    cancel.cancel();
    task.await.unwrap();

    // After a restart the new key is still trusted: the stored plan 23, signed with it, is loaded from disk.
    let p23 = sign(&new, &plan(&me, 23, now), now, day);
    std::fs::write(state.join("plan.json"), &p23).unwrap();
    let (cancel, task) = start(&ctl, port, state);
    ctl.seen.lock().unwrap().health.clear();
    wait_plan(&ctl, 23).await;
    cancel.cancel();
    task.await.unwrap();
}
