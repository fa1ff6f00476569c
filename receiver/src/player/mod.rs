//! Playback, on its own thread behind a [`PlayerHandle`] (as in librespot). The scheduler hands over
//! [`PlayRequest`]s ahead of time; the player switches the amplifier on a pre-roll before a play's `start_at`,
//! starts the audio at that instant, plays the language variants back to back (after a two-tone chime for
//! emergencies), keeps the amplifier on for a hold time after the audio so back-to-back plays don't click the
//! relay, and reports what happened as [`PlayerEvent`]s.
//!
//! Audio is decoded with `loa_audio`'s streaming Ogg Opus decoder straight to the sink's rate, a block
//! (`block_ms`) at a time, mixed down to mono and scaled by the play's volume times the master volume. A
//! [`Source::Growing`] file is played while it still downloads: when the player catches up with the download it
//! waits (an underrun, with silence on air) rather than ending, and it fails the play if the download is
//! abandoned or fails its hash.
//!
//! Tiers: between blocks the thread reads its commands, so a request of a higher [`Tier`] than the play on air
//! preempts it within a block or two once the new request's start time has come. The preempted play ends
//! ([`PlayerEvent::Preempted`]) and is not resumed: a half-heard bulletin replayed from the start is clearer
//! than one resumed mid-sentence, and whether to replay it is the scheduler's call. Requests of equal or lower
//! tier wait in a queue ordered by start time (when several are due, the highest tier goes first) and play late
//! rather than never; a request whose amplifier was off begins no earlier than a full pre-roll after switching
//! it on. A request with the `play_id` of one already queued replaces it.
//!
//! Repeats and gaps are the caller's: a request's `items` are played in order, and a gap between repeats is a
//! silent [`Source::silence`]. Emergencies play at their own volume whatever the master volume (a receiver
//! turned down for the night must still wake the village). [`PlayerHandle::warm_up`] switches the amplifier on
//! ahead of a play that is not handed over yet (an emergency still downloading), so its pre-roll is over by the
//! time the play comes.
//!
//! Besides the [`PlayerEvent`]s for the agent, the thread broadcasts [`AirEvent`]s, stamped as the audio goes to
//! the sink: when the attention chime starts, when the first decoded speech (not a tone) is written, and how the
//! play ended. Benchmarks and tests subscribe with [`PlayerHandle::air_events`].
//!
//! An amplifier that fails to switch is reported as [`PlayerEvent::AmpFault`] and the audio is played anyway
//! (the relay may be stuck on, or wired around); a sink that fails ends the play as
//! [`PlayerEvent::Failed`]; the thread itself does not stop until the handle is dropped.

mod source;
pub(crate) use source::CHIME_MS;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::amp::Amplifier;
use crate::cache::GrowingFile;
use crate::sink::Sink;

/// Timing of the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerConfig {
    /// How long before the audio the amplifier is switched on (default 1500).
    pub preroll_ms: u64,
    /// The same for emergencies (default 300).
    pub emergency_preroll_ms: u64,
    /// How long the amplifier stays on after the audio ends (default 3000).
    pub hold_ms: u64,
    /// Audio written per block; commands are read between blocks (default 20).
    pub block_ms: u64,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        PlayerConfig { preroll_ms: 1500, emergency_preroll_ms: 300, hold_ms: 3000, block_ms: 20 }
    }
}

/// How urgent a play is; a higher tier preempts a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Regular bulletins.
    Normal,
    /// Important notices.
    Priority,
    /// Emergencies (floods, landslides): preempt everything, with an attention chime.
    Emergency,
}

/// What went on air, as it went to the sink (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AirEvent {
    /// The first block of the attention chime was written.
    ToneStarted {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// The first block decoded from an Ogg Opus source (the bulletin itself, not a tone) was written.
    SpeechStarted {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// A growing source had no more bytes: silence on air until the download catches up.
    Underrun {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// The play played out.
    Finished {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// The play was stopped or cancelled (on air or queued).
    Stopped {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// The play was cut off by a higher tier.
    Preempted {
        /// The play.
        play_id: String,
        /// The play that took over.
        by: String,
        /// When.
        at: SystemTime,
    },
    /// The play failed (sound output, unreadable file, abandoned download).
    Failed {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
}

/// How many air events a slow subscriber may fall behind before it loses the oldest.
const AIR_EVENTS: usize = 256;

/// One piece of audio of a play.
#[derive(Debug, Clone)]
pub enum Source {
    /// A complete Ogg Opus file (from the cache).
    File(PathBuf),
    /// An Ogg Opus file still arriving (from [`crate::cache::PartialDownload::growing`]).
    Growing(Arc<GrowingFile>),
    /// A sine tone (for test tones).
    Tone {
        /// Frequency in Hz.
        hz: f32,
        /// Length.
        duration: Duration,
    },
}

impl Source {
    /// Silence of `duration` (the gap between repeats).
    pub fn silence(duration: Duration) -> Source {
        Source::Tone { hz: 0.0, duration }
    }
}

/// A play for the player.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    /// Unique id of the play (reported in events).
    pub play_id: String,
    /// Human-readable title, for logs and sinks.
    pub title: String,
    /// Urgency.
    pub tier: Tier,
    /// When the audio must begin; the amplifier goes on `preroll_ms` earlier.
    pub start_at: Instant,
    /// Software gain, 0 to 1.
    pub volume: f32,
    /// Language variants, played back to back.
    pub items: Vec<Source>,
    /// Play the built-in two-tone attention chime first (emergencies).
    pub attention_tone: bool,
}

/// What the player reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerEvent {
    /// The first audio of a play went to the sink.
    Started {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// A play ended after all its audio played out.
    Finished {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// A play was cut off by a play of a higher tier (and will not resume).
    Preempted {
        /// The play that was cut off.
        play_id: String,
        /// The play that took over.
        by: String,
        /// When.
        at: SystemTime,
    },
    /// A play was stopped or cancelled through the handle (or the player shut down), on air or still queued.
    Stopped {
        /// The play.
        play_id: String,
        /// When.
        at: SystemTime,
    },
    /// A play could not be (fully) played: a file that cannot be read or decoded, a sink error.
    Failed {
        /// The play.
        play_id: String,
        /// What went wrong.
        reason: String,
    },
    /// The amplifier did not switch; audio went out anyway.
    AmpFault {
        /// The play that needed it, if any.
        play_id: Option<String>,
        /// The state asked for.
        on: bool,
        /// What went wrong.
        reason: String,
    },
}

/// What went wrong talking to the player.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    /// The operating system would not start the player thread: restart the receiver.
    #[error("cannot start the player thread: {0}: restart the receiver")]
    Spawn(std::io::Error),
    /// The player thread is gone (it panicked): restart the receiver.
    #[error("the player thread has stopped: restart the receiver")]
    Gone,
}

pub(crate) enum Command {
    Play(Box<PlayRequest>),
    Stop,
    Cancel(String),
    SetVolume(f32),
    WarmUp(Duration),
}

/// Starts players.
#[derive(Debug)]
pub struct Player;

impl Player {
    /// Starts the player thread with its sink, amplifier and timing.
    pub fn spawn(sink: Box<dyn Sink>, amp: Box<dyn Amplifier>, cfg: PlayerConfig) -> Result<PlayerHandle, PlayerError> {
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let now_playing = Arc::new(Mutex::new(None));
        let (air, _) = tokio::sync::broadcast::channel(AIR_EVENTS);
        let worker = worker::Worker::new(sink, amp, cfg, command_rx, event_tx, Arc::clone(&now_playing), air.clone());
        let thread = std::thread::Builder::new()
            .name("loa-player".into())
            .spawn(move || worker.run())
            .map_err(PlayerError::Spawn)?;
        Ok(PlayerHandle {
            commands: Some(command_tx),
            events: event_rx,
            now_playing,
            thread: Some(thread),
            tones: AtomicU64::new(0),
            air,
        })
    }
}

/// Controls a player thread; dropping it stops what plays, switches the amplifier off and ends the thread.
#[derive(Debug)]
pub struct PlayerHandle {
    commands: Option<Sender<Command>>,
    events: Receiver<PlayerEvent>,
    now_playing: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
    tones: AtomicU64,
    air: tokio::sync::broadcast::Sender<AirEvent>,
}

impl PlayerHandle {
    fn send(&self, command: Command) -> Result<(), PlayerError> {
        self.commands.as_ref().ok_or(PlayerError::Gone)?.send(command).map_err(|_| PlayerError::Gone)
    }

    /// Queues a play (or preempts what plays, if it is of a higher tier and due).
    pub fn play(&self, request: PlayRequest) -> Result<(), PlayerError> {
        self.send(Command::Play(Box::new(request)))
    }

    /// Stops the play on air, if any (queued plays stay queued).
    pub fn stop(&self) -> Result<(), PlayerError> {
        self.send(Command::Stop)
    }

    /// Removes a queued play, or stops it if it is on air.
    pub fn cancel(&self, play_id: &str) -> Result<(), PlayerError> {
        self.send(Command::Cancel(play_id.to_string()))
    }

    /// Switches the amplifier on now (if it is off) and keeps it on for at least `for_how_long` (then the usual
    /// hold time), so that a play handed over within that time needs no pre-roll.
    pub fn warm_up(&self, for_how_long: Duration) -> Result<(), PlayerError> {
        self.send(Command::WarmUp(for_how_long))
    }

    /// Subscribes to the [`AirEvent`]s from now on.
    pub fn air_events(&self) -> tokio::sync::broadcast::Receiver<AirEvent> {
        self.air.subscribe()
    }

    /// Sets the master volume (0 to 1), which scales every play's own volume, from the next block on.
    pub fn set_volume(&self, volume: f32) -> Result<(), PlayerError> {
        self.send(Command::SetVolume(volume))
    }

    /// Queues a 1 kHz test tone of `duration` through the amplifier, as a normal-tier play starting after the
    /// pre-roll; returns its play id.
    pub fn test_tone(&self, duration: Duration) -> Result<String, PlayerError> {
        let play_id = format!("test-tone-{}", self.tones.fetch_add(1, Ordering::Relaxed) + 1);
        self.play(PlayRequest {
            play_id: play_id.clone(),
            title: "test tone".into(),
            tier: Tier::Normal,
            start_at: Instant::now(),
            volume: 1.0,
            items: vec![Source::Tone { hz: 1000.0, duration }],
            attention_tone: false,
        })?;
        Ok(play_id)
    }

    /// The player's events. Receivers share one stream: each event goes to one of them, so keep one consumer.
    pub fn events(&self) -> Receiver<PlayerEvent> {
        self.events.clone()
    }

    /// The id of the play on air, if any.
    pub fn now_playing(&self) -> Option<String> {
        self.now_playing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for PlayerHandle {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the player thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests;
