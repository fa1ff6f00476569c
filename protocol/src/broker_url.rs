//! [`BrokerUrl`]: where the MQTT broker is, as written in config files — `mqtt://host:port` (plain, port 1883
//! if left out; `tcp://` is accepted too) or `mqtts://host:port` (TLS, port 8883 if left out). IPv6 hosts go in
//! brackets (`mqtt://[::1]:1883`). The controller, the receiver and the simulator all read it with [`BrokerUrl::parse`].

use std::fmt;

use crate::ProtocolError;

/// A parsed broker address. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS (`mqtts://`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]`, `tcp://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(url: &str) -> Result<BrokerUrl, ProtocolError> {
        let bad = |why: &str| ProtocolError::Invalid {
            what: "broker URL",
            why: format!("{url:?}: {why} (expected mqtt://host:port or mqtts://host:port)"),
        };
        let url = url.trim();
        let (rest, tls) = if let Some(r) = url.strip_prefix("mqtts://") {
            (r, true)
        } else if let Some(r) = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")) {
            (r, false)
        } else {
            return Err(bad("unknown scheme"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '@', '?', '#', ' ']) {
            return Err(bad("only a host and a port may follow the scheme"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse::<u16>().map_err(|_| bad("bad port"))?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad("junk after the host")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(BrokerUrl { host: host.to_string(), port, tls })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_config_files_use() {
        let p = |s| BrokerUrl::parse(s).unwrap();
        assert_eq!(p("mqtt://10.0.0.5:1884"), BrokerUrl { host: "10.0.0.5".into(), port: 1884, tls: false });
        assert_eq!(p("mqtt://broker.local").port, 1883);
        assert_eq!(p("tcp://h:2/").port, 2);
        assert_eq!(p("mqtts://loa.example.vn"), BrokerUrl { host: "loa.example.vn".into(), port: 8883, tls: true });
        assert_eq!(p("mqtt://[::1]:1999"), BrokerUrl { host: "::1".into(), port: 1999, tls: false });
        assert_eq!(p("mqtt://[fe80::1]").port, 1883);
        for bad in ["http://h:1", "mqtt://:1", "mqtt://h:99999", "mqtt://h:0", "mqtt://[::1", "mqtt://u@h:1", "h:1", ""]
        {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parses_back(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16.., tls: bool) {
            let url = BrokerUrl { host, port, tls };
            prop_assert_eq!(BrokerUrl::parse(&url.to_string()).unwrap(), url);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = BrokerUrl::parse(&s);
        }
    }
}
