//! Emergencies end to end over a real MQTT broker, with the fake controller of `common` serving chunks through
//! a simulated narrow link: an emergency jumps a long download in progress, starts from the partial file,
//! repeats with gaps, is cancelled on air by a plan without it, is not played once expired; and injected
//! device faults show in the heartbeat and in the reports.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loa_protocol::{MissReason, PlayEvent, SpeakerState, Tier, Timestamp};
use loa_receiver::amp::SimulatedAmp;
use loa_receiver::clock::{Clock, SystemClock};
use loa_receiver::sink::WavSink;
use loa_receiver::{AirEvent, DeviceFaults, Receiver, SpeakerLine};
use tokio_util::sync::CancellationToken;

use common::{manifest, opus_file, play, start_broker, wait_for, Ctl};

const RATE: u32 = 16_000;

/// A running receiver and what went on air.
struct Rx {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), loa_receiver::ReceiverError>>,
    air: Arc<Mutex<Vec<(AirEvent, Instant)>>>,
    faults: DeviceFaults,
    wav: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rx {
    async fn start(ctl: &Ctl, port: u16, paced: bool) -> Rx {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let wav = dir.path().join("wav");
        let sink = WavSink::new(&wav, RATE).unwrap().paced(paced);
        let faults = DeviceFaults::new();
        let receiver = Receiver::new(
            ctl.receiver_config(port, state.clone()),
            Box::new(sink),
            Box::new(SimulatedAmp::new()),
            Arc::new(SystemClock),
        )
        .unwrap()
        .with_faults(faults.clone());
        let mut events = receiver.air_events();
        let air = Arc::new(Mutex::new(Vec::new()));
        {
            let air = Arc::clone(&air);
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    air.lock().unwrap().push((event, Instant::now()));
                }
            });
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(receiver.run(cancel.clone()));
        let seen = Arc::clone(&ctl.seen);
        wait_for("online", Duration::from_secs(10), || !seen.lock().unwrap().status.is_empty()).await;
        Rx { cancel, task, air, faults, wav, state, _dir: dir }
    }

    /// When `pick` first matched an air event.
    fn when(&self, pick: impl Fn(&AirEvent) -> bool) -> Option<Instant> {
        self.air.lock().unwrap().iter().find(|(e, _)| pick(e)).map(|(_, at)| *at)
    }

    fn cached(&self, m: &loa_protocol::Manifest) -> bool {
        self.state.join("cache").join("objects").join(format!("{}.opus", m.sha256.to_hex())).is_file()
    }

    fn wav_seconds(&self, play_id: &str) -> f64 {
        let reader = hound::WavReader::open(self.wav.join(format!("{play_id}.wav"))).unwrap();
        f64::from(reader.duration()) / f64::from(RATE)
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn speech(id: &'static str) -> impl Fn(&AirEvent) -> bool {
    move |e| matches!(e, AirEvent::SpeechStarted { play_id, .. } if play_id == id)
}

fn reported(ctl: &Ctl, id: &str, event: &PlayEvent) -> bool {
    ctl.seen.lock().unwrap().reports.iter().any(|r| r.play.as_str() == id && r.event == *event)
}

fn emergency_play(id: &str, at: Timestamp, m: &loa_protocol::Manifest, late_s: u32) -> loa_protocol::PlannedPlay {
    let mut p = play(id, at, &m.bulletin, Tier::Emergency);
    p.times = 1;
    p.volume = 100;
    p.late_s = late_s;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_jumps_a_long_download_and_starts_before_it_completes() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e1").unwrap();
    let ctl = Ctl::start(port, &me).await;
    // A 20 kB/s link.
    *ctl.frame_gap.lock().unwrap() = Duration::from_millis(50);
    let rx = Rx::start(&ctl, port, true).await;
    let now = SystemClock.now();
    let long_file = Arc::new(opus_file(60_000));
    let long = manifest("b-00000000000a-vi", &long_file, now, Tier::Normal, 60_000, 1024);
    assert!(long.chunk_count() > 60, "{} chunks", long.chunk_count());
    ctl.offer(&long, Arc::clone(&long_file)).await;
    let normal = play("p-normal", now.saturating_add_ms(HOUR), &long.bulletin, Tier::Normal);
    ctl.plan(1, vec![normal.clone()]).await;
    let seen = Arc::clone(&ctl.seen);
    wait_for("the long download under way", Duration::from_secs(10), || {
        seen.lock().unwrap().frames_of(&long.bulletin) >= 10
    })
    .await;

    // The emergency: manifest, then the plan (with the normal play still in it).
    let alert_file = Arc::new(opus_file(3000));
    let alert = manifest("b-0000000000ee-vi", &alert_file, SystemClock.now(), Tier::Emergency, 3000, 1024);
    let sent = Instant::now();
    ctl.offer(&alert, Arc::clone(&alert_file)).await;
    ctl.plan(2, vec![emergency_play("p-alert", SystemClock.now(), &alert, 600), normal]).await;
    wait_for("emergency speech on air", Duration::from_secs(15), || rx.when(speech("p-alert")).is_some()).await;
    let on_air = rx.when(speech("p-alert")).unwrap().duration_since(sent);
    assert!(!rx.cached(&long), "the long download finished before the emergency went on air");
    {
        let s = seen.lock().unwrap();
        let last_alert = s.frames.iter().rfind(|(b, _, _)| *b == alert.bulletin).map(|(_, _, at)| *at).unwrap();
        let long_after = s.frames.iter().filter(|(b, _, at)| *b == long.bulletin && *at > last_alert).count();
        assert!(long_after > 10, "the emergency did not go first: {long_after} long frames after it");
    }
    eprintln!("emergency speech on air {on_air:?} after it was sent");
    assert!(on_air < Duration::from_secs(4), "speech {on_air:?} after the emergency was sent");
    wait_for("started report", Duration::from_secs(5), || reported(&ctl, "p-alert", &PlayEvent::Started)).await;
    wait_for("finished report", Duration::from_secs(10), || reported(&ctl, "p-alert", &PlayEvent::Finished)).await;
    wait_for("the long download", Duration::from_secs(20), || rx.cached(&long)).await;
    rx.stop().await;
}

const HOUR: i64 = common::HOUR_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_plays_from_the_partial_file_when_chunks_come_slowly() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e2").unwrap();
    let ctl = Ctl::start(port, &me).await;
    // 2.5 kB/s: faster than the audio (1.5 kB/s), far slower than the file's length.
    *ctl.frame_gap.lock().unwrap() = Duration::from_millis(400);
    let rx = Rx::start(&ctl, port, true).await;
    let file = Arc::new(opus_file(8000));
    let alert = manifest("b-0000000000e2-vi", &file, SystemClock.now(), Tier::Emergency, 8000, 1024);
    assert!(alert.chunk_count() >= 8, "{} chunks", alert.chunk_count());
    ctl.offer(&alert, Arc::clone(&file)).await;
    ctl.plan(1, vec![emergency_play("p-slow", SystemClock.now(), &alert, 600)]).await;
    wait_for("emergency speech on air", Duration::from_secs(15), || rx.when(speech("p-slow")).is_some()).await;
    let spoke = rx.when(speech("p-slow")).unwrap();
    let tone = rx.when(|e| matches!(e, AirEvent::ToneStarted { .. })).unwrap();
    assert!(tone < spoke);
    let seen = Arc::clone(&ctl.seen);
    wait_for("the whole file sent", Duration::from_secs(15), || {
        seen.lock().unwrap().frames_of(&alert.bulletin) >= alert.chunk_count() as usize
    })
    .await;
    let last = seen.lock().unwrap().frames.iter().map(|(_, _, at)| *at).max().unwrap();
    assert!(spoke < last, "speech began only after the download completed");
    wait_for("finished report", Duration::from_secs(20), || reported(&ctl, "p-slow", &PlayEvent::Finished)).await;
    let secs = rx.wav_seconds("p-slow");
    assert!((9.0..9.6).contains(&secs), "chime and 8 s of speech: {secs} s");
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_separated_by_the_gap() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e3").unwrap();
    let ctl = Ctl::start(port, &me).await;
    let rx = Rx::start(&ctl, port, false).await;
    let file = Arc::new(opus_file(1000));
    let alert = manifest("b-0000000000e3-vi", &file, SystemClock.now(), Tier::Emergency, 1000, 4096);
    ctl.offer(&alert, Arc::clone(&file)).await;
    let mut p = emergency_play("p-thrice", SystemClock.now(), &alert, 600);
    p.times = 3;
    p.gap_s = 1;
    ctl.plan(1, vec![p]).await;
    wait_for("finished report", Duration::from_secs(15), || reported(&ctl, "p-thrice", &PlayEvent::Finished)).await;
    let secs = rx.wav_seconds("p-thrice");
    // 3 × 1 s + 2 × 1 s + the 1.2 s chime.
    assert!((6.1..6.4).contains(&secs), "{secs} s");
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_without_the_emergency_stops_it_on_air() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e4").unwrap();
    let ctl = Ctl::start(port, &me).await;
    let rx = Rx::start(&ctl, port, true).await;
    let file = Arc::new(opus_file(8000));
    let alert = manifest("b-0000000000e4-vi", &file, SystemClock.now(), Tier::Emergency, 8000, 4096);
    ctl.offer(&alert, Arc::clone(&file)).await;
    ctl.plan(1, vec![emergency_play("p-cancel", SystemClock.now(), &alert, 600)]).await;
    wait_for("emergency speech on air", Duration::from_secs(15), || rx.when(speech("p-cancel")).is_some()).await;
    let cancelled = Instant::now();
    ctl.plan(2, vec![]).await;
    let stopped = |e: &AirEvent| matches!(e, AirEvent::Stopped { play_id, .. } if play_id == "p-cancel");
    wait_for("stopped on air", Duration::from_secs(5), || rx.when(stopped).is_some()).await;
    let took = rx.when(stopped).unwrap().duration_since(cancelled);
    assert!(took < Duration::from_secs(1), "stopped {took:?} after the cancel");
    let preempted = PlayEvent::Preempted { by: None };
    wait_for("preempted report", Duration::from_secs(5), || reported(&ctl, "p-cancel", &preempted)).await;
    assert!(rx.wav_seconds("p-cancel") < 4.0);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_emergency_is_not_played() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e5").unwrap();
    let ctl = Ctl::start(port, &me).await;
    let rx = Rx::start(&ctl, port, true).await;
    let file = Arc::new(opus_file(1000));
    let alert = manifest("b-0000000000e5-vi", &file, SystemClock.now(), Tier::Emergency, 1000, 4096);
    ctl.offer(&alert, Arc::clone(&file)).await;
    // It was due 30 s ago and expired 20 s ago (the receiver was offline then).
    let at = SystemClock.now().saturating_add_ms(-30_000);
    ctl.plan(1, vec![emergency_play("p-stale", at, &alert, 10)]).await;
    let expired = PlayEvent::Missed { reason: MissReason::Expired };
    wait_for("missed expired", Duration::from_secs(10), || reported(&ctl, "p-stale", &expired)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.air.lock().unwrap().is_empty(), "something went on air");
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_faults_show_in_health_and_reports_and_clear() {
    let port = start_broker();
    let me = loa_protocol::ReceiverId::new("rx-0000000000e6").unwrap();
    let ctl = Ctl::start(port, &me).await;
    let rx = Rx::start(&ctl, port, true).await;
    rx.faults.set_disk_full(true);
    rx.faults.set_speaker(SpeakerLine::Short);
    rx.faults.set_amp_fault(true);
    let seen = Arc::clone(&ctl.seen);
    wait_for("faults in the heartbeat", Duration::from_secs(10), || {
        seen.lock().unwrap().health.last().is_some_and(|h| {
            h.disk_mb == 0 && h.spk == Some(SpeakerState::Short) && h.amp == loa_protocol::AmpState::Fault
        })
    })
    .await;
    // A play due on a shorted line is missed.
    rx.faults.set_disk_full(false);
    let file = Arc::new(opus_file(1000));
    let m = manifest("b-0000000000e6-vi", &file, SystemClock.now(), Tier::Normal, 1000, 1024);
    ctl.offer(&m, Arc::clone(&file)).await;
    let mut p = play("p-short", SystemClock.now().saturating_add_ms(1000), &m.bulletin, Tier::Normal);
    p.late_s = 60;
    ctl.plan(1, vec![p.clone()]).await;
    let missed = PlayEvent::Missed { reason: MissReason::SpeakerFault };
    wait_for("missed speaker_fault", Duration::from_secs(10), || reported(&ctl, "p-short", &missed)).await;
    assert!(rx.air.lock().unwrap().is_empty(), "played on a shorted line");
    // A download on a full disk waits.
    rx.faults.set_disk_full(true);
    let other = Arc::new(opus_file(1500));
    let m = manifest("b-0000000000e7-vi", &other, SystemClock.now(), Tier::Normal, 1500, 1024);
    ctl.offer(&m, Arc::clone(&other)).await;
    let later = play("p-later", SystemClock.now().saturating_add_ms(HOUR), &m.bulletin, Tier::Normal);
    ctl.plan(2, vec![p, later]).await;
    wait_for("chunks asked for", Duration::from_secs(5), || {
        seen.lock().unwrap().requests.iter().any(|(_, r)| r.bulletin == m.bulletin)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!rx.cached(&m), "stored on a full disk");
    // Cleared: the heartbeat says so, and the download resumes.
    rx.faults.set_disk_full(false);
    rx.faults.set_speaker(SpeakerLine::Ok);
    rx.faults.set_amp_fault(false);
    wait_for("faults cleared in the heartbeat", Duration::from_secs(10), || {
        seen.lock()
            .unwrap()
            .health
            .last()
            .is_some_and(|h| h.disk_mb > 0 && h.spk.is_none() && h.amp != loa_protocol::AmpState::Fault)
    })
    .await;
    wait_for("download after the disk was freed", Duration::from_secs(15), || rx.cached(&m)).await;
    assert!(!reported(&ctl, "p-short", &PlayEvent::Started));
    rx.stop().await;
}
