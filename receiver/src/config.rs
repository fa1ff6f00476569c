//! The receiver's configuration: one [`ReceiverConfig`], read from the TOML file that the controller hands out
//! at registration (`id`, `password`, `broker_url`, `topic_root`, `[[trusted_keys]]`), with the receiver's own
//! settings defaulted. Sources apply in order: the file, then environment variables `LOA_RECEIVER_<FIELD>`
//! (e.g. `LOA_RECEIVER_STATE_DIR`, `LOA_RECEIVER_HEARTBEAT_MS`), then command-line flags (the binary sets the
//! fields). [`ReceiverConfig::validate`] checks everything and turns it into the typed [`Checked`] values; its
//! errors name the field and say what is expected.
//!
//! TLS: `broker_url = "mqtts://host:port"` connects over TLS (rustls, ring provider) and verifies the broker's
//! certificate and host name against the PEM certificates in `ca_file`, or the system's trust roots
//! (`rustls-native-certs`: the OS's `ca-certificates`, kept current by its updates) when `ca_file` is not set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loa_protocol::{KeyId, ReceiverId, Topics, TrustedKeys};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "LOA_RECEIVER_";

/// What is wrong with the configuration; each message names the field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read: check the path given with `--config`.
    #[error("cannot read the configuration file {}: {source}: check the path", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an environment variable is not valid TOML for this struct: fix the named field.
    #[error("configuration {origin}: {detail}")]
    Parse {
        /// The file or variable.
        origin: String,
        /// What the parser said.
        detail: String,
    },
    /// A value is out of range or malformed: fix that field.
    #[error("configuration field `{field}`: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is expected.
        detail: String,
    },
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, detail: detail.into() }
}

/// A controller public key the receiver trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// Key id, e.g. `ctl-1a2b3c4d`.
    pub kid: String,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: String,
}

/// Everything a receiver is configured with. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Receiver id (`rx-` + 12 hex), also the MQTT client id and username.
    pub id: String,
    /// MQTT password given at registration.
    pub password: String,
    /// `mqtt://host:port` (port 1883 if left out), or `mqtts://host:port` for TLS (8883 if left out).
    pub broker_url: String,
    /// With `mqtts://`: PEM certificates of the authorities that sign the broker's certificate (default: the
    /// system's trust roots).
    pub ca_file: Option<PathBuf>,
    /// Topic root (`loa` gives topics under `loa/v1`).
    pub topic_root: String,
    /// Controller keys whose signatures are accepted (two during a key rotation).
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// Where the plan, manifests, reports outbox and audio cache live.
    pub state_dir: PathBuf,
    /// Audio output: `null`, `wav:DIR`, `alsa` or `alsa:DEVICE`.
    pub sink: String,
    /// Interval between health heartbeats.
    pub heartbeat_ms: u64,
    /// Amplifier on this long before the audio.
    pub preroll_ms: u64,
    /// Amplifier on this long before an emergency (shorter: every second counts, and the chime comes first).
    pub emergency_preroll_ms: u64,
    /// Amplifier kept on this long after the audio.
    pub hold_ms: u64,
    /// Chunks requested and not yet received, at most.
    pub window_chunks: u32,
    /// A requested chunk not received after this long is asked for again.
    pub chunk_timeout_ms: u64,
    /// Unacknowledged reports are sent again this often while connected.
    pub report_resend_ms: u64,
    /// Cap of the audio cache (planned files are kept even above it).
    pub cache_max_bytes: u64,
    /// Master volume at start, percent (a `set_volume` command changes it until restart).
    pub volume_percent: u8,
    /// MQTT keep-alive.
    pub keepalive_s: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            id: String::new(),
            password: String::new(),
            broker_url: "mqtt://127.0.0.1:1883".into(),
            ca_file: None,
            topic_root: "loa".into(),
            trusted_keys: Vec::new(),
            state_dir: PathBuf::from("/var/lib/loa-receiver"),
            sink: "null".into(),
            heartbeat_ms: 60_000,
            preroll_ms: 1500,
            emergency_preroll_ms: 300,
            hold_ms: 3000,
            window_chunks: 16,
            chunk_timeout_ms: 10_000,
            report_resend_ms: 60_000,
            cache_max_bytes: 1 << 30,
            volume_percent: 100,
            keepalive_s: 60,
        }
    }
}

/// Fields whose environment value is always a string (others are read as TOML numbers).
const STRING_FIELDS: &[&str] = &["id", "password", "broker_url", "ca_file", "topic_root", "state_dir", "sink"];

/// The validated, typed parts of a configuration.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The receiver id.
    pub id: ReceiverId,
    /// The topic builder.
    pub topics: Topics,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (`mqtts://`): how the broker's certificate is verified. `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The trusted keys.
    pub keys: TrustedKeys,
}

impl ReceiverConfig {
    /// Reads `path` (TOML) and applies the `LOA_RECEIVER_*` variables of `env` over it; not yet validated.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ReceiverConfig, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { origin: path.display().to_string(), detail: e.to_string() })?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        for (key, value) in env {
            let Some(field) = key.strip_prefix(ENV_PREFIX) else { continue };
            let field = field.to_ascii_lowercase();
            let value = if STRING_FIELDS.contains(&field.as_str()) {
                toml::Value::String(value)
            } else {
                value.trim().parse::<toml::Value>().unwrap_or(toml::Value::String(value))
            };
            table.insert(field, value);
        }
        table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: format!("{origin} + environment"),
            detail: e.to_string(),
        })
    }

    /// Checks every field and returns the typed values.
    pub fn validate(&self) -> Result<Checked, ConfigError> {
        let id = ReceiverId::new(self.id.clone())
            .map_err(|e| invalid("id", format!("{e} (expected the id from registration, e.g. rx-3f2a9c1b7d4e)")))?;
        let topics = Topics::new(&self.topic_root).map_err(|e| invalid("topic_root", e.to_string()))?;
        let url = parse_broker_url(&self.broker_url)?;
        let (host, port) = (url.host, url.port);
        let tls = match (url.tls, &self.ca_file) {
            (true, ca_file) => Some(tls_client_config(ca_file.as_deref())?),
            (false, Some(_)) => {
                return Err(invalid("broker_url", "ca_file is set but the URL is plain mqtt://; use mqtts:// for TLS"))
            }
            (false, None) => None,
        };
        if self.trusted_keys.is_empty() {
            return Err(invalid("trusted_keys", "at least one [[trusted_keys]] entry (kid, public_key) is needed"));
        }
        let mut keys = TrustedKeys::new();
        for k in &self.trusted_keys {
            let kid = KeyId::new(k.kid.clone()).map_err(|e| invalid("trusted_keys.kid", e.to_string()))?;
            keys.insert_hex(kid, &k.public_key)
                .map_err(|e| invalid("trusted_keys.public_key", format!("key {}: {e}", k.kid)))?;
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }
        let ranges: [(&'static str, u64, u64, u64); 9] = [
            ("heartbeat_ms", self.heartbeat_ms, 100, 86_400_000),
            ("preroll_ms", self.preroll_ms, 0, 60_000),
            ("emergency_preroll_ms", self.emergency_preroll_ms, 0, 60_000),
            ("hold_ms", self.hold_ms, 0, 600_000),
            ("window_chunks", u64::from(self.window_chunks), 1, 1024),
            ("chunk_timeout_ms", self.chunk_timeout_ms, 100, 600_000),
            ("report_resend_ms", self.report_resend_ms, 100, 86_400_000),
            ("volume_percent", u64::from(self.volume_percent), 0, 100),
            ("keepalive_s", self.keepalive_s, 5, 3600),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(invalid(field, format!("{value} is outside {min}..={max}")));
            }
        }
        if self.cache_max_bytes < 1 << 20 {
            return Err(invalid("cache_max_bytes", format!("{} is below 1 MiB", self.cache_max_bytes)));
        }
        Ok(Checked { id, topics, host, port, tls, keys })
    }
}

/// Parses `mqtt://host[:port]` (also `tcp://`) or `mqtts://host[:port]` with [`loa_protocol::BrokerUrl`].
fn parse_broker_url(url: &str) -> Result<loa_protocol::BrokerUrl, ConfigError> {
    loa_protocol::BrokerUrl::parse(url).map_err(|e| invalid("broker_url", e.to_string()))
}

/// The TLS client configuration: server certificates verified against `ca_file` (PEM) or the system's roots.
fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let (field, certs) = match ca_file {
        Some(path) => {
            let read = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| invalid("ca_file", format!("{}: {e} (expected PEM certificates)", path.display())))?;
            ("ca_file", read)
        }
        None => ("broker_url", rustls_native_certs::load_native_certs().certs),
    };
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(match ca_file {
            Some(path) => invalid(field, format!("{}: no usable CA certificate in it", path.display())),
            None => invalid(field, "mqtts:// needs trust roots: no system CA certificates found; set ca_file"),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("broker_url", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let signer = loa_protocol::Signer::from_seed(KeyId::new("ctl-1a2b3c4d").unwrap(), &[7; 32]);
        let key = loa_protocol::hash::encode_hex(&signer.public_key());
        format!(
            "id = \"rx-3f2a9c1b7d4e\"\npassword = \"s3cret\"\nbroker_url = \"mqtt://10.1.2.3:1884\"\n\
             topic_root = \"loa\"\n[[trusted_keys]]\nkid = \"ctl-1a2b3c4d\"\npublic_key = \"{key}\"\n"
        )
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receiver.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn registration_file_loads_with_defaults() {
        let (_d, path) = write(&sample());
        let cfg = ReceiverConfig::load(Some(&path), []).unwrap();
        let checked = cfg.validate().unwrap();
        assert_eq!(checked.id.as_str(), "rx-3f2a9c1b7d4e");
        assert_eq!((checked.host.as_str(), checked.port), ("10.1.2.3", 1884));
        assert_eq!(cfg.heartbeat_ms, 60_000);
        assert_eq!(cfg.window_chunks, 16);
        assert_eq!(cfg.sink, "null");
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_d, path) = write(&sample());
        let env = [
            ("LOA_RECEIVER_HEARTBEAT_MS".to_string(), "5000".to_string()),
            ("LOA_RECEIVER_PASSWORD".to_string(), "1234".to_string()),
            ("LOA_RECEIVER_STATE_DIR".to_string(), "/tmp/rx".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let cfg = ReceiverConfig::load(Some(&path), env).unwrap();
        assert_eq!(cfg.heartbeat_ms, 5000);
        assert_eq!(cfg.password, "1234");
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/rx"));
        let bad = ReceiverConfig::load(Some(&path), [("LOA_RECEIVER_HEARTBEAT_MS".into(), "soon".into())]);
        assert!(bad.unwrap_err().to_string().contains("heartbeat_ms"));
    }

    #[test]
    fn errors_name_the_field() {
        let (_d, path) = write(&format!("speed = 3\n{}", sample()));
        assert!(ReceiverConfig::load(Some(&path), []).unwrap_err().to_string().contains("speed"));
        let (_d, path) = write(&sample());
        let good = ReceiverConfig::load(Some(&path), []).unwrap();
        let cases: Vec<(&str, ReceiverConfig)> = vec![
            ("id", ReceiverConfig { id: "rx/1".into(), ..good.clone() }),
            ("broker_url", ReceiverConfig { broker_url: "http://x".into(), ..good.clone() }),
            ("broker_url", ReceiverConfig { broker_url: "mqtt://x:99999".into(), ..good.clone() }),
            ("trusted_keys", ReceiverConfig { trusted_keys: vec![], ..good.clone() }),
            ("volume_percent", ReceiverConfig { volume_percent: 101, ..good.clone() }),
            ("window_chunks", ReceiverConfig { window_chunks: 0, ..good.clone() }),
            ("keepalive_s", ReceiverConfig { keepalive_s: 1, ..good.clone() }),
        ];
        for (field, cfg) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "no certificate here\n").unwrap();
        let tls = |ca: Option<&Path>| ReceiverConfig {
            broker_url: "mqtts://loa.example.vn".into(),
            ca_file: ca.map(Path::to_path_buf),
            ..good.clone()
        };
        let err = tls(Some(&junk)).validate().unwrap_err().to_string();
        assert!(err.contains("ca_file") && err.contains("ca.pem"), "{err}");
        let err = tls(Some(&dir.path().join("missing.pem"))).validate().unwrap_err().to_string();
        assert!(err.contains("ca_file") && err.contains("missing.pem"), "{err}");
        let plain = ReceiverConfig { ca_file: Some(junk.clone()), ..good.clone() };
        assert!(plain.validate().unwrap_err().to_string().contains("mqtts://"));
        let mut bad_key = good.clone();
        bad_key.trusted_keys[0].public_key = "zz".into();
        assert!(bad_key.validate().unwrap_err().to_string().contains("public_key"));
    }

    #[test]
    fn broker_urls() {
        let p = |u| parse_broker_url(u).map(|b| (b.host, b.port, b.tls)).unwrap();
        assert_eq!(p("mqtt://host"), ("host".to_string(), 1883, false));
        assert_eq!(p("tcp://h:1/"), ("h".to_string(), 1, false));
        assert_eq!(p("mqtt://[::1]:7"), ("::1".to_string(), 7, false));
        assert_eq!(p("mqtts://loa.example.vn"), ("loa.example.vn".to_string(), 8883, true));
        assert!(parse_broker_url("mqtt://").is_err());
        assert!(parse_broker_url("mqtt://:80").is_err());
    }
}
