//! End to end over a real MQTT broker (rumqttd, in-process on a free port): the test plays the controller with
//! a test signing key. It publishes a signed plan and manifest, answers chunk requests from an Ogg Opus file
//! made with loa_audio, and checks that the receiver — whose clock boots an hour fast — plays it into the WAV
//! sink at the right time, reports `started` and `finished`, re-sends the reports until they are acked, and
//! refuses and counts a tampered manifest.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loa_protocol::{
    BulletinId, BulletinInfo, Category, ChunkRequest, Codec, Health, KeyId, Language, Manifest, Message, Plan,
    PlannedPlay, PlayEvent, PlayId, PlayReport, ReceiverId, ReportAck, ReportBatch, Signer, Status, StatusState, Tier,
    Timestamp, Topic, Topics,
};
use loa_receiver::amp::SimulatedAmp;
use loa_receiver::clock::{Clock, SimClock, SystemClock};
use loa_receiver::config::TrustedKeyConfig;
use loa_receiver::sink::WavSink;
use loa_receiver::{Receiver, ReceiverConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use common::{free_port, start_broker};

const HOUR_MS: i64 = 3_600_000;

/// Two seconds of a 440 Hz tone, as Ogg Opus.
fn opus_file() -> Vec<u8> {
    let samples: Vec<f32> =
        (0..32_000).map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin()).collect();
    loa_audio::encode::encode_ogg_opus(&samples, &loa_audio::encode::EncodeOptions::default()).unwrap()
}

fn manifest(bulletin: &str, file: &[u8], now: Timestamp) -> Manifest {
    let info = BulletinInfo {
        bulletin: BulletinId::new(bulletin).unwrap(),
        title: "Giá lúa tuần này".into(),
        category: Category::Market,
        tier: Tier::Normal,
        lang: Language::new("vi").unwrap(),
        issued_at: now,
        expires_at: now.saturating_add_ms(7 * 24 * HOUR_MS),
        duration_ms: 2000,
        codec: Codec::speech(),
    };
    Manifest::for_file(info, file, 1024).unwrap()
}

/// What the fake controller saw.
#[derive(Default)]
struct Seen {
    reports: Vec<PlayReport>,
    finished_sends: usize,
    health: Vec<Health>,
    status: Vec<Status>,
    chunk_requests: usize,
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_on_time_reports_until_acked_and_refuses_tampering() {
    let port = start_broker();
    let topics = Topics::new("loa").unwrap();
    let me = ReceiverId::new("rx-00000000000a").unwrap();
    let signer = Signer::from_seed(KeyId::new("ctl-test").unwrap(), &[9; 32]);
    let file = Arc::new(opus_file());
    let now = SystemClock.now();
    let good = manifest("b-0000000000aa-vi", &file, now);

    // The controller.
    let mut opts = MqttOptions::new("controller", "127.0.0.1", port);
    opts.set_max_packet_size(300 * 1024, 300 * 1024);
    let (ctl, mut ctl_loop) = AsyncClient::new(opts, 100);
    ctl.subscribe(topics.controller_subscription(), QoS::AtLeastOnce).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let (ctl, seen, topics, me, file, good) =
            (ctl.clone(), Arc::clone(&seen), topics.clone(), me.clone(), Arc::clone(&file), good.clone());
        tokio::spawn(async move {
            loop {
                let Ok(event) = ctl_loop.poll().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Event::Incoming(Packet::Publish(p)) = event else { continue };
                match topics.parse(&p.topic) {
                    Ok(Topic::ChunkRequest(_)) => {
                        let req = ChunkRequest::from_json(&p.payload).unwrap();
                        seen.lock().unwrap().chunk_requests += 1;
                        for i in req.indices() {
                            let frame = good.frame(&file, i).unwrap().encode().unwrap();
                            ctl.publish(topics.chunks(&me), QoS::AtMostOnce, false, frame).await.unwrap();
                        }
                    }
                    Ok(Topic::Reports(_)) => {
                        let batch = ReportBatch::from_json(&p.payload).unwrap();
                        let ack = {
                            let mut s = seen.lock().unwrap();
                            let has_finished = batch.reports.iter().any(|r| r.event == PlayEvent::Finished);
                            s.finished_sends += usize::from(has_finished);
                            s.reports.extend(batch.reports.iter().cloned());
                            // Ack only once the finished report came twice: the receiver must re-send.
                            s.finished_sends >= 2
                        };
                        if ack {
                            let ack = ReportAck { ids: batch.ack().ids, now: Some(SystemClock.now()) };
                            ctl.publish(topics.report_ack(&me), QoS::AtLeastOnce, false, ack.to_json().unwrap())
                                .await
                                .unwrap();
                        }
                    }
                    Ok(Topic::Health(_)) => {
                        seen.lock().unwrap().health.push(Health::from_json(&p.payload).unwrap());
                    }
                    Ok(Topic::Status(_)) if !p.payload.is_empty() => {
                        seen.lock().unwrap().status.push(Status::from_json(&p.payload).unwrap());
                    }
                    _ => {}
                }
            }
        });
    }

    // The receiver, its clock an hour fast.
    let dir = tempfile::tempdir().unwrap();
    let cfg = ReceiverConfig {
        id: me.to_string(),
        password: "secret".into(),
        broker_url: format!("mqtt://127.0.0.1:{port}"),
        trusted_keys: vec![TrustedKeyConfig {
            kid: "ctl-test".into(),
            public_key: loa_protocol::hash::encode_hex(&signer.public_key()),
        }],
        state_dir: dir.path().join("state"),
        heartbeat_ms: 300,
        preroll_ms: 200,
        hold_ms: 200,
        report_resend_ms: 400,
        chunk_timeout_ms: 1000,
        ..ReceiverConfig::default()
    };
    let wav_dir = dir.path().join("wav");
    let sink = WavSink::new(&wav_dir, 16_000).unwrap();
    let clock = Arc::new(SimClock::with_offset_ms(HOUR_MS));
    let receiver = Receiver::new(cfg, Box::new(sink), Box::new(SimulatedAmp::new()), clock).unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(receiver.run(cancel.clone()));
    wait_for("online status", Duration::from_secs(10), || {
        seen.lock().unwrap().status.iter().any(|s| s.state == StatusState::Online)
    })
    .await;

    // Plan (published live, so the receiver learns the controller's time from it) and manifests.
    let now = SystemClock.now();
    let at = now.saturating_add_ms(6000);
    let plan = Plan {
        receiver: me.clone(),
        answers_session: None,
        seq: 1,
        from: now,
        until: now.saturating_add_ms(49 * HOUR_MS),
        plays: vec![PlannedPlay {
            id: PlayId::new("p-1").unwrap(),
            at,
            bulletins: vec![good.bulletin.clone()],
            times: 1,
            tier: Tier::Normal,
            volume: 80,
            late_s: 900,
            gap_s: 0,
        }],
    };
    let day_later = now.saturating_add_ms(24 * HOUR_MS);
    let signed_plan = signer.sign(&plan, now, day_later).unwrap().to_json().unwrap();
    let signed_manifest = signer.sign(&good, now, good.expires_at).unwrap().to_json().unwrap();
    ctl.publish(topics.manifest(&me, &good.bulletin), QoS::AtLeastOnce, true, signed_manifest).await.unwrap();
    ctl.publish(topics.plan(&me), QoS::AtLeastOnce, true, signed_plan).await.unwrap();

    // A tampered manifest (title changed after signing) is refused and counted as a bad signature.
    let other = manifest("b-0000000000bb-vi", &file, now);
    let tampered = String::from_utf8(signer.sign(&other, now, other.expires_at).unwrap().to_json().unwrap())
        .unwrap()
        .replace("Giá lúa", "Giá ngô");
    ctl.publish(topics.manifest(&me, &other.bulletin), QoS::AtLeastOnce, true, tampered).await.unwrap();
    wait_for("bad signature counted", Duration::from_secs(10), || {
        seen.lock().unwrap().health.iter().any(|h| h.rej.bad_signature >= 1)
    })
    .await;

    // The play: started within a second of `at`; the report carries controller time although the receiver's clock
    // is an hour fast.
    wait_for("started report", Duration::from_secs(15), || {
        seen.lock().unwrap().reports.iter().any(|r| r.event == PlayEvent::Started)
    })
    .await;
    let started = seen.lock().unwrap().reports.iter().find(|r| r.event == PlayEvent::Started).unwrap().clone();
    let late = started.at.ms_since(at);
    assert!(late.abs() <= 1000, "started {late} ms from its time");
    wait_for("finished report re-sent and acked", Duration::from_secs(15), || seen.lock().unwrap().finished_sends >= 2)
        .await;
    assert!(wav_dir.join("p-1.wav").is_file(), "the WAV sink got the play");
    let wav = hound::WavReader::open(wav_dir.join("p-1.wav")).unwrap();
    let secs = wav.duration() as f64 / 16_000.0;
    assert!((1.8..2.3).contains(&secs), "{secs} s of audio");

    // After the ack, re-sends stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sends = seen.lock().unwrap().finished_sends;
    assert!(sends <= 3, "reports kept coming after the ack: {sends}");
    {
        let s = seen.lock().unwrap();
        let last = s.health.last().unwrap();
        let clock_ms = last.clock_ms.unwrap();
        assert!((i64::from(clock_ms) - HOUR_MS).abs() < 2000, "clock offset {clock_ms}");
        assert_eq!(last.plan, Some(1));
        assert!(s.chunk_requests >= 1);
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    wait_for("offline status on a clean exit", Duration::from_secs(5), || {
        seen.lock().unwrap().status.last().map(|s| s.state) == Some(StatusState::Offline)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_the_stored_plan_after_a_reboot_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let me = ReceiverId::new("rx-00000000000b").unwrap();
    let signer = Signer::from_seed(KeyId::new("ctl-test").unwrap(), &[9; 32]);
    let file = opus_file();
    let now = SystemClock.now();
    let good = manifest("b-0000000000cc-vi", &file, now);
    let at = now.saturating_add_ms(2500);
    let plan = Plan {
        receiver: me.clone(),
        answers_session: None,
        seq: 5,
        from: now,
        until: now.saturating_add_ms(49 * HOUR_MS),
        plays: vec![PlannedPlay {
            id: PlayId::new("p-off").unwrap(),
            at,
            bulletins: vec![good.bulletin.clone()],
            times: 2,
            tier: Tier::Priority,
            volume: 100,
            late_s: 60,
            gap_s: 0,
        }],
    };
    // What an earlier run left in the state folder.
    std::fs::create_dir_all(state.join("manifests")).unwrap();
    let day_later = now.saturating_add_ms(24 * HOUR_MS);
    std::fs::write(state.join("plan.json"), signer.sign(&plan, now, day_later).unwrap().to_json().unwrap()).unwrap();
    std::fs::write(
        state.join("manifests").join(format!("{}.json", good.bulletin)),
        signer.sign(&good, now, good.expires_at).unwrap().to_json().unwrap(),
    )
    .unwrap();
    let cache = loa_receiver::cache::Cache::open(state.join("cache"), 1 << 30).unwrap();
    cache.insert(&good.sha256.to_hex(), &file).unwrap();
    drop(cache);

    let cfg = ReceiverConfig {
        id: me.to_string(),
        password: "secret".into(),
        broker_url: format!("mqtt://127.0.0.1:{}", free_port()),
        trusted_keys: vec![TrustedKeyConfig {
            kid: "ctl-test".into(),
            public_key: loa_protocol::hash::encode_hex(&signer.public_key()),
        }],
        state_dir: state.clone(),
        preroll_ms: 200,
        hold_ms: 200,
        ..ReceiverConfig::default()
    };
    let wav_dir = dir.path().join("wav");
    let sink = WavSink::new(&wav_dir, 16_000).unwrap();
    let receiver = Receiver::new(cfg, Box::new(sink), Box::new(SimulatedAmp::new()), Arc::new(SystemClock)).unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(receiver.run(cancel.clone()));
    let wav = wav_dir.join("p-off.wav");
    wait_for("the play's WAV file", Duration::from_secs(15), || wav.is_file()).await;
    let secs = hound::WavReader::open(&wav).unwrap().duration() as f64 / 16_000.0;
    assert!((3.6..4.6).contains(&secs), "played twice: {secs} s");
    // Reports wait in the outbox for the link.
    let outbox = state.join("outbox.json");
    wait_for("reports in the outbox", Duration::from_secs(5), || {
        std::fs::read_to_string(&outbox).is_ok_and(|s| s.contains("\"finished\""))
    })
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}
