//! Commands: remote actions on one receiver, signed, on `{prefix}/rx/{receiver}/cmd`.
//!
//! JSON (the payload of a [`crate::signing::Signed`] envelope): `{"receiver":"rx1","seq":42,"do":"set_volume",
//! "volume":70}`. `seq` must rise with every command to that receiver, so a captured command cannot be played
//! again; the controller should use `max(last + 1, now in unix ms)` so that a controller reinstalled without its
//! counter still moves forward. The receiver stores the highest `seq` it executed and passes it as
//! [`crate::signing::VerifyOptions::held_seq`]. `receiver` binds the command to one device.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::ReceiverId;
use crate::signing::Signable;
use crate::Message;

/// Longest test tone, seconds.
pub const MAX_TONE_S: u8 = 30;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// Set the master volume, percent (0 to 100). Plan volumes are scaled by it.
    SetVolume {
        /// Percent.
        volume: u8,
    },
    /// Stop whatever is playing now (it is reported `preempted`); the plan goes on.
    StopNow,
    /// Play a 1 kHz test tone for `seconds` (1 to 30), now.
    TestTone {
        /// Seconds.
        seconds: u8,
    },
    /// Fetch the plan and manifests again, re-check the cache, and re-sync the clock.
    Resync,
    /// Restart the receiver service.
    Restart,
}

/// One command to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The receiver it is for.
    pub receiver: ReceiverId,
    /// Rises with every command to this receiver.
    pub seq: u64,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

impl Message for Command {
    const KIND: &'static str = "command";
    const MAX_BYTES: usize = 1024;

    fn validate(&self) -> Result<(), ProtocolError> {
        crate::check_seq(Self::KIND, "seq", self.seq)?;
        match self.action {
            Action::SetVolume { volume } if volume > 100 => {
                Err(ProtocolError::invalid(Self::KIND, format!("volume {volume} is above 100")))
            }
            Action::TestTone { seconds } if !(1..=MAX_TONE_S).contains(&seconds) => {
                Err(ProtocolError::invalid(Self::KIND, format!("test tone of {seconds} s is outside 1..={MAX_TONE_S}")))
            }
            _ => Ok(()),
        }
    }
}

impl Signable for Command {
    fn sequence(&self) -> Option<u64> {
        Some(self.seq)
    }

    fn addressee(&self) -> Option<&ReceiverId> {
        Some(&self.receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: Action) -> Command {
        Command { receiver: ReceiverId::new("rx1").unwrap(), seq: 42, action }
    }

    #[test]
    fn exact_json_of_every_action() {
        let cases = [
            (Action::SetVolume { volume: 70 }, r#"{"receiver":"rx1","seq":42,"do":"set_volume","volume":70}"#),
            (Action::StopNow, r#"{"receiver":"rx1","seq":42,"do":"stop_now"}"#),
            (Action::TestTone { seconds: 5 }, r#"{"receiver":"rx1","seq":42,"do":"test_tone","seconds":5}"#),
            (Action::Resync, r#"{"receiver":"rx1","seq":42,"do":"resync"}"#),
            (Action::Restart, r#"{"receiver":"rx1","seq":42,"do":"restart"}"#),
        ];
        for (action, json) in cases {
            assert_eq!(String::from_utf8(cmd(action).to_json().unwrap()).unwrap(), json);
            assert_eq!(Command::from_json(json.as_bytes()).unwrap(), cmd(action));
        }
    }

    #[test]
    fn out_of_range_is_refused() {
        assert!(cmd(Action::SetVolume { volume: 101 }).to_json().is_err());
        assert!(cmd(Action::TestTone { seconds: 0 }).to_json().is_err());
        assert!(cmd(Action::TestTone { seconds: 31 }).to_json().is_err());
        for json in [
            r#"{"receiver":"rx1","seq":42,"do":"set_volume","volume":101}"#,
            r#"{"receiver":"rx1","seq":42,"do":"set_volume","volume":300}"#,
            r#"{"receiver":"rx1","seq":42,"do":"set_volume"}"#,
            r#"{"receiver":"rx1","seq":42,"do":"self_destruct"}"#,
            r#"{"receiver":"rx1","seq":-1,"do":"restart"}"#,
            r#"{"receiver":"rx1","do":"restart"}"#,
            r#"{"seq":1,"do":"restart"}"#,
        ] {
            assert!(Command::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn is_bound_to_a_receiver_and_a_sequence() {
        let c = cmd(Action::Restart);
        assert_eq!(c.sequence(), Some(42));
        assert_eq!(c.addressee().map(ReceiverId::as_str), Some("rx1"));
    }
}
