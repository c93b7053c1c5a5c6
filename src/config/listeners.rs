//! Kafka-style listeners: `listeners`, `advertised_listeners`,
//! `listener_security_protocol_map` and `inter_broker_listener_name`, with
//! Kafka's meaning. Each listener is a name, a security protocol and a
//! bind address; clients are told the advertised address of the listener
//! they connected to, and brokers reach each other on the inter-broker one.
//! `kafka_addr` / `advertised_addr` remain a shorthand for one listener
//! named `PLAINTEXT`.

use std::collections::HashSet;

use super::{Config, ConfigError};

/// How a listener's connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

/// One listener as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Upper case, as Kafka normalises listener names.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// What to bind: a host (empty: every interface) and port (0: any).
    pub bind_host: String,
    pub bind_port: u16,
    /// What clients on this listener are told; `None`: the bind address
    /// (`127.0.0.1` for every interface, the bound port for port 0).
    pub advertised: Option<(String, u16)>,
}

impl ListenerSpec {
    /// The address to bind, in a form `TcpListener::bind` resolves.
    pub fn bind_addr(&self) -> String {
        let host = if self.bind_host.is_empty() {
            "0.0.0.0"
        } else {
            &self.bind_host
        };
        join_host_port(host, self.bind_port)
    }

    /// The advertised `(host, port)` once bound to `local`.
    pub fn advertised_for(&self, local: std::net::SocketAddr) -> (String, u16) {
        if let Some((host, port)) = &self.advertised {
            return (host.clone(), *port);
        }
        let host = if self.bind_host.is_empty() || local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.bind_host.clone()
        };
        (host, local.port())
    }
}

/// `host:port`, bracketing an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `host:port` (`[v6]:port` too); the host may be empty.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(['/', ' ', ',']) {
        return None;
    }
    Some((host.to_string(), port))
}

/// Parses `NAME://host:port,...` into (upper-cased name, host, port).
pub fn parse_endpoints(
    key: &'static str,
    value: &str,
) -> Result<Vec<(String, String, u16)>, ConfigError> {
    let mut endpoints = Vec::new();
    let mut names = HashSet::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |message: String| ConfigError::Invalid { key, message };
        let (name, addr) = entry.split_once("://").ok_or_else(|| {
            invalid(format!(
                "'{entry}' is not NAME://HOST:PORT (for example PLAINTEXT://0.0.0.0:9092)"
            ))
        })?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!(
                "listener name '{name}' must be letters, digits and underscores"
            )));
        }
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| invalid(format!("'{addr}' in '{entry}' is not HOST:PORT")))?;
        if !names.insert(name.clone()) {
            return Err(invalid(format!("listener {name} is listed twice")));
        }
        endpoints.push((name, host, port));
    }
    if endpoints.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            message: "no listener given".into(),
        });
    }
    Ok(endpoints)
}

impl Config {
    /// The listeners this broker opens, in the order configured (the first
    /// is the one `strata listening on` names).
    pub fn listeners(&self) -> Result<Vec<ListenerSpec>, ConfigError> {
        let Some(listeners) = &self.listeners else {
            let bind = self
                .kafka_addr
                .unwrap_or_else(|| "0.0.0.0:9092".parse().expect("literal address"));
            let advertised = match &self.advertised_addr {
                Some(addr) => Some(split_host_port(addr).ok_or_else(|| ConfigError::Invalid {
                    key: "advertised_addr",
                    message: format!("'{addr}' is not HOST:PORT"),
                })?),
                None => None,
            };
            if self.advertised_listeners.is_some() {
                return Err(ConfigError::Invalid {
                    key: "advertised_listeners",
                    message: "needs listeners (or use advertised_addr with kafka_addr)".into(),
                });
            }
            return Ok(vec![ListenerSpec {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                bind_host: bind.ip().to_string(),
                bind_port: bind.port(),
                advertised,
            }]);
        };
        if self.kafka_addr.is_some() || self.advertised_addr.is_some() {
            return Err(ConfigError::Invalid {
                key: "listeners",
                message: "set either listeners (with advertised_listeners) or kafka_addr (with advertised_addr), not both".into(),
            });
        }
        let protocols = self.protocol_map()?;
        let mut specs = Vec::new();
        let mut ports = HashSet::new();
        for (name, host, port) in parse_endpoints("listeners", listeners)? {
            let protocol = match protocols.iter().find(|(n, _)| *n == name) {
                Some((_, protocol)) => *protocol,
                None => {
                    return Err(ConfigError::Invalid {
                        key: "listener_security_protocol_map",
                        message: format!(
                            "listener {name} has no security protocol: add {name}:PLAINTEXT (or SSL, SASL_PLAINTEXT, SASL_SSL)"
                        ),
                    });
                }
            };
            if port != 0 && !ports.insert(port) {
                return Err(ConfigError::Invalid {
                    key: "listeners",
                    message: format!("port {port} is used by two listeners"),
                });
            }
            specs.push(ListenerSpec {
                name,
                protocol,
                bind_host: host,
                bind_port: port,
                advertised: None,
            });
        }
        if let Some(advertised) = &self.advertised_listeners {
            for (name, host, port) in parse_endpoints("advertised_listeners", advertised)? {
                let Some(spec) = specs.iter_mut().find(|s| s.name == name) else {
                    return Err(ConfigError::Invalid {
                        key: "advertised_listeners",
                        message: format!("{name} is not one of listeners"),
                    });
                };
                if host.is_empty() || host == "0.0.0.0" || host == "::" {
                    return Err(ConfigError::Invalid {
                        key: "advertised_listeners",
                        message: format!(
                            "{name} advertises '{host}', which clients cannot connect to: give a host name or address"
                        ),
                    });
                }
                if port == 0 {
                    return Err(ConfigError::Invalid {
                        key: "advertised_listeners",
                        message: format!("{name} advertises port 0"),
                    });
                }
                spec.advertised = Some((host, port));
            }
        }
        Ok(specs)
    }

    /// `listener_security_protocol_map`, or Kafka's default (each protocol's
    /// name maps to itself).
    fn protocol_map(&self) -> Result<Vec<(String, SecurityProtocol)>, ConfigError> {
        let default = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";
        let map = self
            .listener_security_protocol_map
            .as_deref()
            .unwrap_or(default);
        let mut pairs = Vec::new();
        for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once(':').and_then(|(name, protocol)| {
                Some((
                    name.trim().to_ascii_uppercase(),
                    SecurityProtocol::parse(protocol.trim())?,
                ))
            });
            let Some(pair) = parsed else {
                return Err(ConfigError::Invalid {
                    key: "listener_security_protocol_map",
                    message: format!(
                        "'{entry}' is not NAME:PROTOCOL (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                    ),
                });
            };
            pairs.push(pair);
        }
        Ok(pairs)
    }

    /// The listener brokers reach each other on: `inter_broker_listener_name`,
    /// else the one named PLAINTEXT (Kafka's default), else the only one.
    pub fn inter_broker_listener(&self, specs: &[ListenerSpec]) -> Result<String, ConfigError> {
        let names = || {
            specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = if let Some(name) = &self.inter_broker_listener_name {
            let name = name.trim().to_ascii_uppercase();
            specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "inter_broker_listener_name",
                    message: format!("{name} is not one of listeners ({})", names()),
                })?
        } else if let Some(spec) = specs.iter().find(|s| s.name == "PLAINTEXT") {
            spec
        } else {
            match specs {
                [only] => only,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "inter_broker_listener_name",
                        message: format!(
                            "several listeners ({}) and none named PLAINTEXT: say which one brokers use",
                            names()
                        ),
                    });
                }
            }
        };
        if matches!(
            chosen.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            return Err(ConfigError::Invalid {
                key: "inter_broker_listener_name",
                message: format!(
                    "{} is {}: brokers do not authenticate to each other with SASL yet; give them a PLAINTEXT or SSL listener of their own",
                    chosen.name,
                    chosen.protocol.name()
                ),
            });
        }
        Ok(chosen.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listeners: &str, advertised: Option<&str>, map: Option<&str>) -> Config {
        Config {
            listeners: Some(listeners.into()),
            advertised_listeners: advertised.map(String::from),
            listener_security_protocol_map: map.map(String::from),
            ..Config::default()
        }
    }

    #[test]
    fn the_default_is_one_plaintext_listener() {
        let specs = Config::default().listeners().expect("valid");
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "PLAINTEXT");
        assert_eq!(specs[0].bind_addr(), "0.0.0.0:9092");
        let local = "0.0.0.0:9092".parse().expect("addr");
        assert_eq!(specs[0].advertised_for(local), ("127.0.0.1".into(), 9092));
        let cfg = Config {
            advertised_addr: Some("broker.example:19092".into()),
            ..Config::default()
        };
        let specs = cfg.listeners().expect("valid");
        assert_eq!(
            specs[0].advertised_for(local),
            ("broker.example".into(), 19092)
        );
    }

    #[test]
    fn named_listeners_map_to_protocols_and_advertise_their_own_address() {
        let cfg = config(
            "internal://0.0.0.0:9092,EXTERNAL://:19092",
            Some("INTERNAL://strata-1:9092,EXTERNAL://localhost:19092"),
            Some("INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"),
        );
        let specs = cfg.listeners().expect("valid");
        assert_eq!(specs[0].name, "INTERNAL");
        assert_eq!(specs[1].bind_addr(), "0.0.0.0:19092");
        let local = "0.0.0.0:19092".parse().expect("addr");
        assert_eq!(specs[1].advertised_for(local), ("localhost".into(), 19092));
        assert!(cfg.inter_broker_listener(&specs).is_err(), "which one?");
        let cfg = Config {
            inter_broker_listener_name: Some("internal".into()),
            ..cfg
        };
        assert_eq!(cfg.inter_broker_listener(&specs).expect("set"), "INTERNAL");
    }

    #[test]
    fn mistakes_are_named() {
        let error = |cfg: Config| cfg.listeners().expect_err("invalid").to_string();
        assert!(error(config("INTERNAL://:9092", None, None)).contains("INTERNAL:PLAINTEXT"));
        assert!(error(config("PLAINTEXT://:9092", Some("OTHER://h:1"), None)).contains("OTHER"));
        assert!(
            error(config(
                "PLAINTEXT://:9092",
                Some("PLAINTEXT://0.0.0.0:9092"),
                None
            ))
            .contains("cannot connect")
        );
        assert!(
            error(config(
                "A://:1,B://:1",
                None,
                Some("A:PLAINTEXT,B:PLAINTEXT")
            ))
            .contains("port 1")
        );
        assert!(error(config("PLAINTEXT://:1,PLAINTEXT://:2", None, None)).contains("twice"));
        assert!(error(config("0.0.0.0:9092", None, None)).contains("NAME://HOST:PORT"));
        let sasl_only = config("SASL_SSL://:9093", None, None);
        let specs = sasl_only.listeners().expect("valid");
        assert!(
            sasl_only
                .inter_broker_listener(&specs)
                .expect_err("brokers need another")
                .to_string()
                .contains("SASL")
        );
        assert!(error(config("A://:1", None, Some("A:TLS"))).contains("NAME:PROTOCOL"));
        let both = Config {
            kafka_addr: Some("0.0.0.0:9092".parse().expect("addr")),
            ..config("PLAINTEXT://:9092", None, None)
        };
        assert!(error(both).contains("not both"));
        assert_eq!(split_host_port("[::1]:9092"), Some(("::1".into(), 9092)));
        assert_eq!(join_host_port("::1", 9092), "[::1]:9092");
    }
}
