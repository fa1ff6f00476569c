//! Player tests: real plays into a WAV sink, on time, and preemption by a higher tier.

use std::time::{Duration, Instant};

use super::*;
use crate::amp::{Amplifier, SimulatedAmp};
use crate::sink::WavSink;

const RATE: u32 = 16_000;

fn tone(play_id: &str, tier: Tier, start_at: Instant, ms: u64) -> PlayRequest {
    PlayRequest {
        play_id: play_id.into(),
        title: play_id.into(),
        tier,
        start_at,
        volume: 0.5,
        items: vec![Source::Tone { hz: 440.0, duration: Duration::from_millis(ms) }],
        attention_tone: false,
    }
}

fn next_event(events: &Receiver<PlayerEvent>) -> PlayerEvent {
    events.recv_timeout(Duration::from_secs(10)).expect("a player event within 10 s")
}

fn wav_seconds(path: &std::path::Path) -> f64 {
    let reader = hound::WavReader::open(path).unwrap();
    f64::from(reader.duration()) / f64::from(RATE)
}

#[test]
fn plays_into_a_wav_file_on_time_with_the_amplifier() {
    let dir = tempfile::tempdir().unwrap();
    let sink = WavSink::new(dir.path(), RATE).unwrap();
    let amp = SimulatedAmp::new();
    let cfg = PlayerConfig { preroll_ms: 100, hold_ms: 100, block_ms: 20 };
    let player = Player::spawn(Box::new(sink), Box::new(amp.clone()), cfg).unwrap();
    let events = player.events();
    let start_at = Instant::now() + Duration::from_millis(400);
    player.play(tone("p-1", Tier::Normal, start_at, 600)).unwrap();
    let PlayerEvent::Started { play_id, .. } = next_event(&events) else { panic!("not started") };
    assert_eq!(play_id, "p-1");
    let started = Instant::now();
    assert!(started + Duration::from_millis(150) >= start_at, "started too early");
    assert!(started <= start_at + Duration::from_millis(300), "started too late");
    assert!(matches!(next_event(&events), PlayerEvent::Finished { play_id, .. } if play_id == "p-1"));
    let secs = wav_seconds(&dir.path().join("p-1.wav"));
    assert!((0.55..0.7).contains(&secs), "{secs} s");
    // The amplifier went on before the audio, and off after the hold.
    let deadline = Instant::now() + Duration::from_secs(5);
    while amp.is_on() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let switches = amp.switches();
    assert!(switches.first().is_some_and(|s| s.on && s.at <= start_at), "{switches:?}");
    assert!(switches.last().is_some_and(|s| !s.on), "{switches:?}");
}

#[test]
fn a_higher_tier_preempts_and_the_cut_play_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = WavSink::new(dir.path(), RATE).unwrap();
    let cfg = PlayerConfig { preroll_ms: 50, hold_ms: 50, block_ms: 20 };
    let player = Player::spawn(Box::new(sink), Box::new(SimulatedAmp::new()), cfg).unwrap();
    let events = player.events();
    player.play(tone("normal", Tier::Normal, Instant::now(), 5000)).unwrap();
    assert!(matches!(next_event(&events), PlayerEvent::Started { play_id, .. } if play_id == "normal"));
    std::thread::sleep(Duration::from_millis(300));
    player.play(tone("alert", Tier::Emergency, Instant::now(), 300)).unwrap();
    let preempted = next_event(&events);
    assert!(
        matches!(&preempted, PlayerEvent::Preempted { play_id, by, .. } if play_id == "normal" && by == "alert"),
        "{preempted:?}"
    );
    assert!(matches!(next_event(&events), PlayerEvent::Started { play_id, .. } if play_id == "alert"));
    assert!(matches!(next_event(&events), PlayerEvent::Finished { play_id, .. } if play_id == "alert"));
    // Nothing more: the normal play does not come back.
    assert!(events.recv_timeout(Duration::from_millis(700)).is_err());
    let cut = wav_seconds(&dir.path().join("normal.wav"));
    assert!(cut < 1.5, "the preempted play kept {cut} s");
    assert!(wav_seconds(&dir.path().join("alert.wav")) > 0.25);
}
