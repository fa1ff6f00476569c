//! Text-to-speech for typed bulletins, behind the [`Speech`] trait so that a better engine can replace it.
//! [`EspeakNg`] runs Debian's `espeak-ng` program (its `vi` voice; offline, nothing leaves the machine) with the
//! text on stdin and takes the WAV it writes on stdout; the WAV then goes through the normal upload and encode.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why speech could not be made; the message is for the person who typed the text.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// The engine is not installed: install it (`apt-get install espeak-ng`) or upload a recording.
    #[error("the text-to-speech program {0} is not installed on the controller (apt-get install espeak-ng)")]
    NotInstalled(String),
    /// The engine has no voice for this language: record it instead.
    #[error("there is no text-to-speech voice for language '{0}'; please upload a recording instead")]
    NoVoice(String),
    /// Nothing to say, or too much.
    #[error("{0}")]
    BadText(String),
    /// The engine failed or took too long; try again or upload a recording.
    #[error("text-to-speech failed: {0}")]
    Failed(String),
}

/// Something that turns text into a WAV file.
pub trait Speech: Send + Sync {
    /// A WAV file of `text` spoken in `language` (a bulletin language code, e.g. `vi`).
    fn speak(&self, text: &str, language: &str) -> Result<Vec<u8>, SpeechError>;
}

/// The most text one bulletin may have (about 10 minutes of speech).
pub const MAX_TEXT_CHARS: usize = 5000;

/// `espeak-ng`, called as a program.
#[derive(Debug, Clone)]
pub struct EspeakNg {
    /// The program (default `espeak-ng`, found on PATH).
    pub program: PathBuf,
    /// Words per minute (espeak's default 175 is fast for a loudspeaker; 140 is clearer).
    pub words_per_minute: u32,
    /// Longest run allowed.
    pub timeout: Duration,
}

impl Default for EspeakNg {
    fn default() -> Self {
        EspeakNg { program: PathBuf::from("espeak-ng"), words_per_minute: 140, timeout: Duration::from_secs(60) }
    }
}

/// The espeak-ng voice for a bulletin language, if it has one.
fn voice(language: &str) -> Option<&'static str> {
    match language {
        "vi" => Some("vi"),
        "en" => Some("en"),
        _ => None,
    }
}

/// Checks typed text: something to say, not too much, no control characters.
pub fn check_text(text: &str) -> Result<&str, SpeechError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SpeechError::BadText("there is no text to speak".into()));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(SpeechError::BadText(format!("the text is longer than {MAX_TEXT_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(SpeechError::BadText("the text contains control characters".into()));
    }
    Ok(text)
}

impl Speech for EspeakNg {
    fn speak(&self, text: &str, language: &str) -> Result<Vec<u8>, SpeechError> {
        let text = check_text(text)?;
        let voice = voice(language).ok_or_else(|| SpeechError::NoVoice(language.to_string()))?;
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(["-v", voice, "-s", &self.words_per_minute.to_string(), "--stdout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SpeechError::NotInstalled(program.clone()),
                _ => SpeechError::Failed(e.to_string()),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(|e| SpeechError::Failed(e.to_string()))?;
        }
        let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let deadline = std::time::Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SpeechError::Failed(format!("{program} took longer than {:?}", self.timeout)));
                }
                Err(e) => return Err(SpeechError::Failed(e.to_string())),
            }
        };
        let output = std::process::Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        };
        if !output.status.success() || !output.stdout.starts_with(b"RIFF") {
            let why = String::from_utf8_lossy(&output.stderr).trim().chars().take(200).collect::<String>();
            return Err(SpeechError::Failed(if why.is_empty() { output.status.to_string() } else { why }));
        }
        Ok(output.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_long_and_control_text_is_refused() {
        assert!(matches!(check_text("  "), Err(SpeechError::BadText(_))));
        assert!(matches!(check_text(&"a".repeat(MAX_TEXT_CHARS + 1)), Err(SpeechError::BadText(_))));
        assert!(matches!(check_text("a\u{0}b"), Err(SpeechError::BadText(_))));
        assert_eq!(check_text(" Xin chào bà con.\n").unwrap(), "Xin chào bà con.");
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let e = EspeakNg { program: "/nonexistent/espeak-ng".into(), ..EspeakNg::default() };
        let err = e.speak("Xin chào", "vi").unwrap_err();
        assert!(err.to_string().contains("apt-get install espeak-ng"), "{err}");
        assert!(matches!(e.speak("Xin chào", "xx"), Err(SpeechError::NoVoice(_))));
    }

    #[test]
    fn espeak_ng_speaks_vietnamese_when_installed() {
        let e = EspeakNg::default();
        match e.speak("Thông báo của Ủy ban nhân dân xã về lịch tiêm phòng.", "vi") {
            Ok(wav) => assert!(wav.len() > 10_000 && wav.starts_with(b"RIFF")),
            Err(SpeechError::NotInstalled(_)) if std::env::var_os("LOA_REQUIRE_TOOLS").is_none() => {
                eprintln!("espeak-ng is not installed; skipping (scripts/test installs it)");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
