//! The controller's settings: one serde struct with defaults, loaded from a TOML file, then environment variables
//! `LOA_CONTROLLER_<FIELD>` (upper case), then command-line flags — each layer overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is wrong with the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A value has the wrong form.
    #[error("config: {0}")]
    Invalid(String),
}

/// Every setting of `loa-controller`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// Where the database, the encoded bulletins and the signing key live.
    pub data_dir: PathBuf,
    /// HTTP API and web console.
    pub http_listen: SocketAddr,
    /// The embedded MQTT broker's listener (unused with `broker`).
    pub mqtt_listen: SocketAddr,
    /// An external broker (`mqtt://host:port`) instead of the embedded one.
    pub broker: Option<String>,
    /// The controller's password on the external broker (its username is `controller_client_id`).
    pub broker_password: Option<String>,
    /// CA certificates (PEM) that sign an external `mqtts://` broker's certificate; default: the system's roots.
    pub broker_ca_file: Option<PathBuf>,
    /// The embedded broker's TLS certificate chain (PEM); with `mqtt_tls_key_file`, `mqtt_listen` speaks only TLS.
    pub mqtt_tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `mqtt_tls_cert_file`.
    pub mqtt_tls_key_file: Option<PathBuf>,
    /// The controller's MQTT client id and username.
    pub controller_client_id: String,
    /// The broker address written into receiver config files; default: derived from `mqtt_listen` or `broker`.
    pub public_mqtt_url: Option<String>,
    /// The topic root (`loa` → topics under `loa/v1/`).
    pub topic_root: String,
    /// Time zone of schedules.
    pub time_zone: String,
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// How far ahead plans reach.
    pub plan_horizon_ms: i64,
    /// How often plans are recomposed without being asked.
    pub replan_interval_ms: u64,
    /// Seed a demo province with communes, villages and receivers on first run.
    pub seed_demo: bool,
    /// Alert thresholds (the `[alerts]` section).
    pub alerts: crate::alerts::AlertSettings,
    /// The text-to-speech program for typed bulletins (espeak-ng, called with `-v vi --stdout`).
    pub tts_program: PathBuf,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            data_dir: PathBuf::from("loa-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            broker: None,
            broker_password: None,
            broker_ca_file: None,
            mqtt_tls_cert_file: None,
            mqtt_tls_key_file: None,
            controller_client_id: "loa-controller".into(),
            public_mqtt_url: None,
            topic_root: "loa".into(),
            time_zone: "Asia/Ho_Chi_Minh".into(),
            max_upload_bytes: 100 * 1024 * 1024,
            plan_horizon_ms: 72 * 3600 * 1000,
            replan_interval_ms: 60_000,
            seed_demo: false,
            alerts: crate::alerts::AlertSettings::default(),
            tts_program: PathBuf::from("espeak-ng"),
        }
    }
}

impl ControllerConfig {
    /// Loads `file` (if given) over the defaults, then `env` pairs named `LOA_CONTROLLER_<FIELD>`, then `flags`
    /// (field name → TOML value text; plain text is taken as a string).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            if let Some(field) = key.strip_prefix("LOA_CONTROLLER_") {
                table.insert(field.to_ascii_lowercase(), value_of(&value));
            }
        }
        for (field, value) in flags {
            table.insert(field.to_string(), value_of(&value));
        }
        let config: ControllerConfig =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!("time_zone {:?} is not an IANA time zone (e.g. Asia/Ho_Chi_Minh)", self.time_zone));
        }
        if self.plan_horizon_ms < loa_protocol::plan::MIN_HORIZON_MS {
            return bad("plan_horizon_ms must be at least 48 hours (172800000)".into());
        }
        self.alerts.validate().map_err(ConfigError::Invalid)?;
        if self.max_upload_bytes < 1024 {
            return bad("max_upload_bytes is too small".into());
        }
        if let Some(url) = &self.broker {
            crate::mqtt::MqttSettings::from_url(url, "x", None).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if self.mqtt_tls_cert_file.is_some() != self.mqtt_tls_key_file.is_some() {
            return bad("mqtt_tls_cert_file and mqtt_tls_key_file go together: set both (PEM files) or neither".into());
        }
        Ok(())
    }

    /// The time zone (validated).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Asia::Ho_Chi_Minh)
    }

    /// The broker URL to give receivers, given the embedded broker's actual address (if embedded).
    pub fn receiver_broker_url(&self, embedded: Option<SocketAddr>) -> String {
        if let Some(url) = &self.public_mqtt_url {
            return url.clone();
        }
        if let Some(url) = &self.broker {
            return url.clone();
        }
        let addr = embedded.unwrap_or(self.mqtt_listen);
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        loa_protocol::BrokerUrl { host, port: addr.port(), tls: self.mqtt_tls_cert_file.is_some() }.to_string()
    }
}

/// A flag or environment value as TOML: numbers and booleans as such, anything else as a string.
fn value_of(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match wrapped.parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")) {
        Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => v,
        _ => toml::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data_dir = \"/srv/loa\"\nhttp_listen = \"0.0.0.0:80\"\nseed_demo = false\n").unwrap();
        let env = vec![("LOA_CONTROLLER_SEED_DEMO".to_string(), "true".to_string()), ("HOME".into(), "/x".into())];
        let flags = vec![("http_listen", "127.0.0.1:9000".to_string())];
        let c = ControllerConfig::load(Some(&file), env, flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/loa"));
        assert!(c.seed_demo);
        assert_eq!(c.http_listen.port(), 9000);
        assert_eq!(c.topic_root, "loa");
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let err = ControllerConfig::load(None, vec![], vec![("time_zone", "Mars/Olympus".into())]).unwrap_err();
        assert!(err.to_string().contains("time_zone"));
        let err = ControllerConfig::load(None, vec![], vec![("http_listen", "nowhere".into())]).unwrap_err();
        assert!(err.to_string().contains("http_listen") || err.to_string().contains("address"), "{err}");
        let err = ControllerConfig::load(None, vec![], vec![("colour", "blue".into())]).unwrap_err();
        assert!(err.to_string().contains("colour"));
    }

    #[test]
    fn receivers_get_a_reachable_broker_address() {
        let c = ControllerConfig::default();
        assert_eq!(c.receiver_broker_url(Some("0.0.0.0:1999".parse().unwrap())), "mqtt://127.0.0.1:1999");
        let c = ControllerConfig { broker: Some("mqtt://mosq:1883".into()), ..ControllerConfig::default() };
        assert_eq!(c.receiver_broker_url(None), "mqtt://mosq:1883");
        let c = ControllerConfig {
            mqtt_tls_cert_file: Some("cert.pem".into()),
            mqtt_tls_key_file: Some("key.pem".into()),
            ..ControllerConfig::default()
        };
        assert_eq!(c.receiver_broker_url(Some("0.0.0.0:8883".parse().unwrap())), "mqtts://127.0.0.1:8883");
        let err = ControllerConfig::load(None, vec![], vec![("mqtt_tls_cert_file", "c.pem".into())]).unwrap_err();
        assert!(err.to_string().contains("mqtt_tls_key_file"), "{err}");
    }
}
