//! The ALSA sink (feature `alsa`): plays on a sound card through the ALSA library, mono 16-bit at the sink's
//! rate. The device (`default`, or e.g. `plughw:1,0`) is opened for each play with a short buffer (about
//! 100 ms in 20 ms periods) so a stop or preemption is heard quickly; writes block while the buffer is full.
//! An underrun (the player waited for a download) is recovered from, not treated as a failure. Use a `plug`
//! device when the card itself takes neither mono nor the rate.

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use super::{PlayInfo, Sink, SinkError};

const BUFFER_US: u32 = 100_000;
const PERIOD_US: u32 = 20_000;

/// Plays on an ALSA device. See the module documentation.
pub struct AlsaSink {
    device: String,
    rate: u32,
    pcm: Option<PCM>,
}

impl std::fmt::Debug for AlsaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaSink").field("device", &self.device).field("rate", &self.rate).finish()
    }
}

impl AlsaSink {
    /// A sink on ALSA device `device` at `rate` (the device is opened by [`Sink::open`]).
    pub fn new(device: &str, rate: u32) -> Self {
        AlsaSink { device: device.to_string(), rate, pcm: None }
    }

    fn error(&self, e: impl std::fmt::Display) -> SinkError {
        SinkError::Device { device: self.device.clone(), detail: e.to_string() }
    }

    fn open_pcm(&self) -> Result<PCM, alsa::Error> {
        let pcm = PCM::new(&self.device, Direction::Playback, false)?;
        {
            let hwp = HwParams::any(&pcm)?;
            hwp.set_channels(1)?;
            hwp.set_rate(self.rate, ValueOr::Nearest)?;
            hwp.set_format(Format::s16())?;
            hwp.set_access(Access::RWInterleaved)?;
            hwp.set_buffer_time_near(BUFFER_US, ValueOr::Nearest)?;
            hwp.set_period_time_near(PERIOD_US, ValueOr::Nearest)?;
            pcm.hw_params(&hwp)?;
        }
        {
            let hwp = pcm.hw_params_current()?;
            let swp = pcm.sw_params_current()?;
            // Start as soon as one period is queued: the first block is heard right away.
            swp.set_start_threshold(hwp.get_period_size()?)?;
            pcm.sw_params(&swp)?;
        }
        Ok(pcm)
    }
}

impl Sink for AlsaSink {
    fn open(&mut self, play: &PlayInfo) -> Result<(), SinkError> {
        self.pcm = None;
        let pcm = self.open_pcm().map_err(|e| self.error(e))?;
        let actual = pcm.hw_params_current().and_then(|h| h.get_rate()).map_err(|e| self.error(e))?;
        if actual != self.rate {
            let detail =
                format!("the device plays at {actual} Hz, not {} Hz: use a plughw: or default device", self.rate);
            return Err(self.error(detail));
        }
        tracing::debug!(play_id = %play.play_id, device = %self.device, "ALSA device opened");
        self.pcm = Some(pcm);
        Ok(())
    }

    fn write(&mut self, pcm_data: &[i16]) -> Result<(), SinkError> {
        let Some(pcm) = self.pcm.as_ref() else {
            return Err(SinkError::NotOpen);
        };
        let io = pcm.io_i16().map_err(|e| self.error(e))?;
        let mut rest = pcm_data;
        let mut recoveries = 0;
        while !rest.is_empty() {
            match io.writei(rest) {
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if recoveries < 3 => {
                    recoveries += 1;
                    tracing::debug!(device = %self.device, error = %e, "ALSA underrun; recovering");
                    pcm.try_recover(e, true).map_err(|e| self.error(e))?;
                }
                Err(e) => return Err(self.error(e)),
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let Some(pcm) = self.pcm.take() else {
            return Err(SinkError::NotOpen);
        };
        pcm.drain().map_err(|e| self.error(e))
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        match self.pcm.take() {
            Some(pcm) => pcm.drop().map_err(|e| self.error(e)),
            None => Ok(()),
        }
    }

    fn rate(&self) -> u32 {
        self.rate
    }
}
