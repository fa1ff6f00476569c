//! The amplifier relay. Horn loudspeakers are driven by a power amplifier that stays off between bulletins
//! (it hums, wears and draws power); the player switches it on a pre-roll before the audio and off a hold time
//! after. [`Amplifier`] is that switch. [`SimulatedAmp`] records every switch with its time, for tests, and can
//! be told to fail, as a stuck relay would. With the `gpio` feature, [`GpioRelay`] drives a relay from a line of
//! a Linux GPIO character device (`/dev/gpiochipN`), active-high or active-low.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

/// What went wrong switching the amplifier; each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AmpError {
    /// The relay did not switch: check the relay and its wiring (audio may go out unheard, or the amplifier
    /// may stay on).
    #[error("amplifier relay failed to switch {}: {detail}: check the relay and its wiring", if *on { "on" } else { "off" })]
    Fault {
        /// The state that was asked for.
        on: bool,
        /// What the driver said.
        detail: String,
    },

    /// The relay's GPIO line cannot be opened: check the configured chip path and line offset, and that no
    /// other program holds the line.
    #[error("cannot open the amplifier relay on {chip} line {line}: {detail}: check the chip path and line offset")]
    Unavailable {
        /// Path of the GPIO chip.
        chip: String,
        /// Line offset on that chip.
        line: u32,
        /// What the driver said.
        detail: String,
    },
}

/// Switches the amplifier that feeds the loudspeakers.
pub trait Amplifier: Send {
    /// Switches the amplifier on or off.
    fn set_on(&mut self, on: bool) -> Result<(), AmpError>;
    /// Whether the amplifier is on (as last switched successfully).
    fn is_on(&self) -> bool;
}

/// One switch of a [`SimulatedAmp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The new state.
    pub on: bool,
    /// When, on the monotonic clock.
    pub at: Instant,
    /// When, on the wall clock.
    pub wall: SystemTime,
}

#[derive(Debug, Default)]
struct SimState {
    on: bool,
    failing: bool,
    switches: Vec<Switch>,
}

/// An amplifier in memory. Clones share their state, so a test keeps one clone and gives the other to the
/// player.
#[derive(Debug, Clone, Default)]
pub struct SimulatedAmp {
    state: Arc<Mutex<SimState>>,
}

impl SimulatedAmp {
    /// An amplifier that is off and works.
    pub fn new() -> Self {
        SimulatedAmp::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every successful switch so far, oldest first (switches to the state it already had included).
    pub fn switches(&self) -> Vec<Switch> {
        self.lock().switches.clone()
    }

    /// While `failing`, every [`Amplifier::set_on`] fails with [`AmpError::Fault`] and changes nothing.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }
}

impl Amplifier for SimulatedAmp {
    fn set_on(&mut self, on: bool) -> Result<(), AmpError> {
        let mut state = self.lock();
        if state.failing {
            return Err(AmpError::Fault { on, detail: "simulated relay fault".into() });
        }
        state.on = on;
        state.switches.push(Switch { on, at: Instant::now(), wall: SystemTime::now() });
        tracing::debug!(on, "simulated amplifier switched");
        Ok(())
    }

    fn is_on(&self) -> bool {
        self.lock().on
    }
}

#[cfg(feature = "gpio")]
pub use gpio::GpioRelay;

#[cfg(feature = "gpio")]
mod gpio {
    //! The relay on a GPIO line, through the Linux character-device interface.

    use std::path::Path;

    use gpio_cdev::{Chip, LineHandle, LineRequestFlags};

    use super::{AmpError, Amplifier};

    /// An amplifier relay on one GPIO line. The line is held as an output for as long as this lives, starting
    /// with the amplifier off.
    #[derive(Debug)]
    pub struct GpioRelay {
        handle: LineHandle,
        active_low: bool,
        on: bool,
    }

    impl GpioRelay {
        /// Takes line `line` of the chip at `chip` (e.g. `/dev/gpiochip0`, line 17) as the relay output.
        /// `active_low` means the relay closes (amplifier on) when the line is driven low.
        pub fn open(chip: &Path, line: u32, active_low: bool) -> Result<GpioRelay, AmpError> {
            let unavailable = |e: gpio_cdev::Error| AmpError::Unavailable {
                chip: chip.display().to_string(),
                line,
                detail: e.to_string(),
            };
            let mut gpio = Chip::new(chip).map_err(unavailable)?;
            let handle = gpio
                .get_line(line)
                .and_then(|l| l.request(LineRequestFlags::OUTPUT, level(false, active_low), "loa-receiver amp"))
                .map_err(unavailable)?;
            tracing::info!(chip = %chip.display(), line, active_low, "amplifier relay ready");
            Ok(GpioRelay { handle, active_low, on: false })
        }
    }

    /// The line level that means `on`.
    fn level(on: bool, active_low: bool) -> u8 {
        u8::from(on != active_low)
    }

    impl Amplifier for GpioRelay {
        fn set_on(&mut self, on: bool) -> Result<(), AmpError> {
            self.handle
                .set_value(level(on, self.active_low))
                .map_err(|e| AmpError::Fault { on, detail: e.to_string() })?;
            self.on = on;
            Ok(())
        }

        fn is_on(&self) -> bool {
            self.on
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn levels() {
            assert_eq!(super::level(true, false), 1);
            assert_eq!(super::level(false, false), 0);
            assert_eq!(super::level(true, true), 0);
            assert_eq!(super::level(false, true), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_amp_records_switches_and_can_fail() {
        let probe = SimulatedAmp::new();
        let mut amp: Box<dyn Amplifier> = Box::new(probe.clone());
        assert!(!amp.is_on());
        amp.set_on(true).unwrap();
        assert!(amp.is_on() && probe.is_on());
        probe.set_failing(true);
        assert!(matches!(amp.set_on(false), Err(AmpError::Fault { on: false, .. })));
        assert!(amp.is_on(), "a failed switch changes nothing");
        probe.set_failing(false);
        amp.set_on(false).unwrap();
        let switches = probe.switches();
        assert_eq!(switches.iter().map(|s| s.on).collect::<Vec<_>>(), vec![true, false]);
        assert!(switches[0].at <= switches[1].at);
    }
}
