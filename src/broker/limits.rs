//! Bounds on connections, as Kafka's `max.connections`,
//! `max.connections.per.ip`, `max.connections.per.ip.overrides` and
//! `connections.max.idle.ms`: a connection past a bound is closed as soon as
//! it is accepted, before anything is read from it, and counted. When
//! there are several listeners, the inter-broker one is exempt from the
//! broker-wide bound (as in Kafka: brokers must reach each other whatever
//! clients do), not from the per-IP one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::KafkaConfig;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` open already.
    Broker,
    /// The address's `max_connections_per_ip` (or override) open already.
    Address,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

pub struct ConnectionLimits {
    max: usize,
    per_ip: Option<usize>,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<Open>,
    refused_broker: AtomicU64,
    refused_address: AtomicU64,
    idle_closed: AtomicU64,
}

/// An admitted connection; its slot is given back when dropped.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Parses Kafka's `max.connections.per.ip.overrides`: `ADDRESS:COUNT,...`
/// (IPv6 addresses in brackets or bare; the count follows the last ':').
pub fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, usize>, String> {
    let mut overrides = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (address, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("'{entry}' is not ADDRESS:COUNT"))?;
        let address = address.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = address.parse().map_err(|_| {
            format!("'{address}' in '{entry}' is not an IP address (host names are not resolved)")
        })?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("'{count}' in '{entry}' is not a connection count"))?;
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

impl ConnectionLimits {
    pub fn new(config: &KafkaConfig) -> Self {
        Self {
            max: config.max_connections,
            per_ip: config.max_connections_per_ip,
            // Checked by Config::validate.
            overrides: parse_overrides(&config.max_connections_per_ip_overrides)
                .unwrap_or_default(),
            open: Mutex::new(Open::default()),
            refused_broker: AtomicU64::new(0),
            refused_address: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        }
    }

    /// Takes a slot for a connection from `ip`, or says which bound it is
    /// past.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, inter_broker: bool) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if !inter_broker && open.total >= self.max {
            self.refused_broker.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Broker);
        }
        let bound = self.overrides.get(&ip).copied().or(self.per_ip);
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        if bound.is_some_and(|bound| from_ip >= bound) {
            self.refused_address.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Address);
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Counts a connection closed for being idle.
    pub fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP strata_connections Kafka connections open now.\n\
             # TYPE strata_connections gauge\n\
             strata_connections {}\n\
             # HELP strata_connections_refused_total Connections closed at once for being past max_connections (reason=\"broker\") or the address's max_connections_per_ip (reason=\"address\").\n\
             # TYPE strata_connections_refused_total counter\n\
             strata_connections_refused_total{{reason=\"broker\"}} {}\n\
             strata_connections_refused_total{{reason=\"address\"}} {}\n\
             # HELP strata_connections_idle_closed_total Connections closed after connections_max_idle_ms without a request.\n\
             # TYPE strata_connections_idle_closed_total counter\n\
             strata_connections_idle_closed_total {}\n",
            self.open(),
            self.refused_broker.load(Ordering::Relaxed),
            self.refused_address.load(Ordering::Relaxed),
            self.idle_closed.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: Option<usize>, overrides: &str) -> Arc<ConnectionLimits> {
        let config = KafkaConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            max_connections_per_ip_overrides: overrides.into(),
            ..KafkaConfig::default()
        };
        Arc::new(ConnectionLimits::new(&config))
    }

    #[test]
    fn bounds_hold_and_slots_come_back() {
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let limits = limits(3, Some(2), "10.0.0.2:3");
        let first = limits.admit(a, false).expect("1");
        let _second = limits.admit(a, false).expect("2");
        assert_eq!(limits.admit(a, false).err(), Some(Refusal::Address));
        let _third = limits.admit(b, false).expect("3");
        assert_eq!(limits.admit(b, false).err(), Some(Refusal::Broker));
        // Brokers still reach each other; the address bound still holds.
        let _peer = limits.admit(b, true).expect("inter-broker");
        assert_eq!(limits.admit(a, true).err(), Some(Refusal::Address));
        drop(first);
        assert_eq!(limits.open(), 3);
        let _again = limits.admit(a, true).expect("a slot came back");
    }

    #[test]
    fn overrides_parse_as_kafka_writes_them() {
        let parsed = parse_overrides("127.0.0.1:200, [::1]:5,10.1.2.3:0").expect("parse");
        assert_eq!(
            parsed.get(&"127.0.0.1".parse::<IpAddr>().expect("ip")),
            Some(&200)
        );
        assert_eq!(parsed.get(&"::1".parse::<IpAddr>().expect("ip")), Some(&5));
        assert_eq!(parsed.len(), 3);
        assert!(parse_overrides("broker-1:10").is_err_and(|e| e.contains("host names")));
        assert!(parse_overrides("127.0.0.1").is_err());
        assert!(parse_overrides("127.0.0.1:many").is_err());
        assert!(parse_overrides("").expect("empty").is_empty());
    }
}
