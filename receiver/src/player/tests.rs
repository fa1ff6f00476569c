//! Player tests: real plays into a WAV sink, on time, and preemption by a higher tier.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::amp::{Amplifier, SimulatedAmp};
use crate::cache::GrowingFile;
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
    let cfg = PlayerConfig { preroll_ms: 100, hold_ms: 100, block_ms: 20, ..PlayerConfig::default() };
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

/// The figure: an emergency takes the air from a lower tier within 200 ms.
#[test]
fn a_higher_tier_preempts_within_200_ms_and_the_cut_play_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = WavSink::new(dir.path(), RATE).unwrap();
    let cfg = PlayerConfig { preroll_ms: 50, hold_ms: 50, block_ms: 20, ..PlayerConfig::default() };
    let player = Player::spawn(Box::new(sink), Box::new(SimulatedAmp::new()), cfg).unwrap();
    let events = player.events();
    player.play(tone("normal", Tier::Normal, Instant::now(), 5000)).unwrap();
    let PlayerEvent::Started { play_id, at: started } = next_event(&events) else { panic!("the normal play starts") };
    assert_eq!(play_id, "normal");
    std::thread::sleep(Duration::from_millis(300));
    let asked = SystemTime::now();
    player.play(tone("alert", Tier::Emergency, Instant::now(), 300)).unwrap();
    let preempted = next_event(&events);
    let PlayerEvent::Preempted { play_id, by, at: cut_at } = &preempted else { panic!("{preempted:?}") };
    assert_eq!((play_id.as_str(), by.as_str()), ("normal", "alert"));
    let took = cut_at.duration_since(asked).unwrap_or_default();
    assert!(took <= Duration::from_millis(200), "the normal play went on for {took:?} after the emergency came");
    assert!(matches!(next_event(&events), PlayerEvent::Started { play_id, .. } if play_id == "alert"));
    assert!(matches!(next_event(&events), PlayerEvent::Finished { play_id, .. } if play_id == "alert"));
    // Nothing more: the normal play does not come back.
    assert!(events.recv_timeout(Duration::from_millis(700)).is_err());
    // What reached the loudspeaker agrees: the cut file holds no more than the time it was on air until the
    // emergency came, plus 200 ms.
    let on_air = asked.duration_since(started).unwrap_or_default().as_secs_f64();
    let cut = wav_seconds(&dir.path().join("normal.wav"));
    eprintln!("preempted {took:?} after the emergency came; {cut:.3} s of audio out after {on_air:.3} s on air");
    assert!(cut <= on_air + 0.2, "the preempted play kept {cut} s of audio, {on_air} s before the emergency");
    assert!(wav_seconds(&dir.path().join("alert.wav")) > 0.25);
}

/// `ms` of a 440 Hz tone as Ogg Opus.
fn opus(ms: usize) -> Vec<u8> {
    let samples: Vec<f32> =
        (0..ms * 16).map(|i| 0.3 * (std::f32::consts::TAU * 440.0 * i as f32 / 16_000.0).sin()).collect();
    loa_audio::encode::encode_ogg_opus(&samples, &loa_audio::encode::EncodeOptions::default()).unwrap()
}

fn air_event(rx: &mut tokio::sync::broadcast::Receiver<AirEvent>) -> AirEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(event) => {
                return event;
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no air event: {e:?}"),
        }
    }
}

#[test]
fn an_emergency_streams_a_growing_file_twice_with_a_gap_and_reports_on_air() {
    let dir = tempfile::tempdir().unwrap();
    let file = opus(1000);
    // The download: only the first quarter is there when the play starts.
    let path = dir.path().join("download.part");
    std::fs::write(&path, &file).unwrap();
    let growing = Arc::new(GrowingFile::open(&path, file.len() as u64, file.len() as u64 / 4).unwrap());
    let sink = WavSink::new(dir.path(), RATE).unwrap();
    let amp = SimulatedAmp::new();
    let cfg = PlayerConfig { preroll_ms: 2000, emergency_preroll_ms: 100, hold_ms: 100, block_ms: 20 };
    let player = Player::spawn(Box::new(sink), Box::new(amp.clone()), cfg).unwrap();
    let mut air = player.air_events();
    player.set_volume(0.0).unwrap();
    let asked = Instant::now();
    player
        .play(PlayRequest {
            play_id: "alert".into(),
            title: "alert".into(),
            tier: Tier::Emergency,
            start_at: asked,
            volume: 1.0,
            items: vec![
                Source::Growing(Arc::clone(&growing)),
                Source::silence(Duration::from_millis(500)),
                Source::Growing(Arc::clone(&growing)),
            ],
            attention_tone: true,
        })
        .unwrap();
    let AirEvent::ToneStarted { play_id, at: tone } = air_event(&mut air) else { panic!("no chime first") };
    assert_eq!(play_id, "alert");
    assert!(asked.elapsed() < Duration::from_millis(1000), "the emergency pre-roll, not the normal one");
    // The rest arrives over 1.2 s (Ogg pages hold up to a second: nothing decodes before the first is in).
    let feeder = {
        let (growing, total) = (Arc::clone(&growing), file.len() as u64);
        std::thread::spawn(move || {
            for tenth in 3..=10 {
                std::thread::sleep(Duration::from_millis(150));
                growing.set_available(total * tenth / 10);
            }
            growing.mark_complete();
        })
    };
    let speech = loop {
        match air_event(&mut air) {
            AirEvent::SpeechStarted { at, .. } => break at,
            AirEvent::Underrun { .. } => {}
            other => panic!("no speech: {other:?}"),
        }
    };
    let chime = speech.duration_since(tone).unwrap();
    assert!((Duration::from_millis(1100)..Duration::from_millis(1800)).contains(&chime), "{chime:?}");
    feeder.join().unwrap();
    let mut events = Vec::new();
    loop {
        let event = air_event(&mut air);
        let end = matches!(event, AirEvent::Finished { .. } | AirEvent::Failed { .. });
        events.push(event);
        if end {
            break;
        }
    }
    assert!(matches!(events.last(), Some(AirEvent::Finished { .. })), "{events:?}");
    // Chime 1.2 s + 1 s + gap 0.5 s + 1 s, whatever underruns there were (silence is not written).
    let secs = wav_seconds(&dir.path().join("alert.wav"));
    assert!((3.6..3.9).contains(&secs), "{secs} s");
    // Played at the emergency's own volume although the master volume is 0.
    let reader = hound::WavReader::open(dir.path().join("alert.wav")).unwrap();
    let peak = reader.into_samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap();
    assert!(peak > 5000, "{peak}");
}

#[test]
fn warm_up_spares_the_preroll_and_a_failed_download_fails_the_play() {
    let dir = tempfile::tempdir().unwrap();
    let sink = WavSink::new(dir.path(), RATE).unwrap();
    let amp = SimulatedAmp::new();
    let cfg = PlayerConfig { preroll_ms: 1500, emergency_preroll_ms: 1500, hold_ms: 100, block_ms: 20 };
    let player = Player::spawn(Box::new(sink), Box::new(amp.clone()), cfg).unwrap();
    let events = player.events();
    let mut air = player.air_events();
    player.warm_up(Duration::from_secs(3)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !amp.is_on() {
        assert!(Instant::now() < deadline, "amplifier not warmed up");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let path = dir.path().join("broken.part");
    std::fs::write(&path, opus(500)).unwrap();
    let growing = Arc::new(GrowingFile::open(&path, 10_000, 0).unwrap());
    let asked = Instant::now();
    let mut request = tone("alert", Tier::Emergency, asked, 100);
    request.items = vec![Source::Growing(Arc::clone(&growing))];
    request.attention_tone = true;
    player.play(request).unwrap();
    assert!(matches!(air_event(&mut air), AirEvent::ToneStarted { .. }));
    assert!(asked.elapsed() < Duration::from_millis(300), "no pre-roll after a warm-up");
    growing.abandon();
    assert!(matches!(next_event(&events), PlayerEvent::Started { .. }));
    let failed = next_event(&events);
    assert!(matches!(&failed, PlayerEvent::Failed { reason, .. } if reason.contains("abandoned")), "{failed:?}");
    assert!(matches!(air_event(&mut air), AirEvent::Failed { .. }));
}
