//! Client quotas with Kafka's semantics (KIP-13, KIP-55, KIP-124, KIP-219).
//!
//! Quotas are set on entities: a user, a client id, or a user and a client
//! id, each either named or the default (`<default>`). For a request, each
//! quota type is looked up in Kafka's order of precedence, from
//! `user=U, client-id=C` down to `client-id=<default>`; the first entity
//! that sets it decides the bound, and also what is measured together: a
//! quota on users measures each user on its own (a default user quota gives
//! every user that much), one on (user, client id) each pair.
//!
//! Usage is held to the bound by a virtual schedule (the generic cell rate
//! algorithm): each request moves the time its client is "paid up to"
//! forward by value / bound, and a client more than one second ahead of
//! the clock is throttled by the difference (at most 11 s at a time, Kafka's
//! longest; the debt stays). Kafka measures a rate over 11 one-second
//! samples instead, which lets a client send a whole window's worth at once
//! and then stalls it for most of the window: the same long-run bound, but
//! a client measured over half a minute swings by half its quota either
//! way. Here a client may burst one second of quota, and its throughput is
//! steady. The response says the throttle time in `throttle_time_ms`, and
//! the connection reads nothing more until it has passed (Kafka's muting;
//! clients since KIP-219 also wait on their side). A Fetch from a client
//! still throttled is answered without data, as Kafka does, and counts
//! nothing; one that is not is answered in full and counted, so a response
//! larger than a second of quota still goes through, followed by its wait.
//!
//! Types: `producer_byte_rate` (bytes of Produce requests),
//! `consumer_byte_rate` (bytes of Fetch responses), `request_percentage`
//! (time spent handling requests, in percent of one thread; Strata counts a
//! request's processing in the connection's read loop, not its waits).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::metadata::QuotaRecord;

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

/// The quota keys Strata enforces.
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// Kafka's entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// Longest single throttle (Kafka's quota window, 11 x 1 s).
const MAX_THROTTLE_MS: f64 = 11_000.0;
/// How far ahead of the clock a client may get before it is throttled.
const BURST_MS: f64 = 1_000.0;
/// A sensor unused this long is forgotten (Kafka: one hour).
const SENSOR_IDLE_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
}

impl QuotaType {
    fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
        }
    }
}

/// A quota entity: each part absent, the default (`Some(None)`) or named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Entity {
    pub user: Option<Option<String>>,
    pub client_id: Option<Option<String>>,
}

impl Entity {
    /// The text stored in the metadata store: JSON pairs, client-id first.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<(&str, Option<&str>)> = Vec::new();
        if let Some(client) = &self.client_id {
            parts.push((CLIENT_ID, client.as_deref()));
        }
        if let Some(user) = &self.user {
            parts.push((USER, user.as_deref()));
        }
        serde_json::to_string(&parts).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Entity> {
        let parts: Vec<(String, Option<String>)> = serde_json::from_str(text).ok()?;
        let mut entity = Entity::default();
        for (kind, name) in parts {
            match kind.as_str() {
                USER => entity.user = Some(name),
                CLIENT_ID => entity.client_id = Some(name),
                _ => return None,
            }
        }
        (entity.user.is_some() || entity.client_id.is_some()).then_some(entity)
    }

    /// (type, name) pairs as Kafka's responses give them (None: default).
    pub fn components(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        if let Some(user) = &self.user {
            out.push((USER, user.clone()));
        }
        if let Some(client) = &self.client_id {
            out.push((CLIENT_ID, client.clone()));
        }
        out
    }
}

/// One part of an entity: absent, the default, or named.
type Part = Option<Option<String>>;

/// Milliseconds since the first call, for atomics.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A connection's mute: it reads no request until this time.
#[derive(Debug, Default)]
pub struct Mute(AtomicU64);

impl Mute {
    pub fn for_ms(&self, ms: u64) {
        if ms > 0 {
            self.0.fetch_max(now_ms() + ms, Ordering::AcqRel);
        }
    }

    /// Waits out the mute, if any.
    pub async fn wait(&self) {
        let until = self.0.load(Ordering::Acquire);
        let now = now_ms();
        if until > now {
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }
}

/// One client's schedule: the time (ms) it has been paid up to.
#[derive(Debug, Default)]
struct Sensor {
    paid_until: f64,
    last_ms: u64,
}

impl Sensor {
    /// Counts `value` against `bound` (per second); the throttle time in ms.
    fn record(&mut self, value: f64, bound: f64, now: u64) -> f64 {
        let now_f = now as f64;
        self.paid_until = self.paid_until.max(now_f) + value / bound * 1000.0;
        self.last_ms = now;
        (self.paid_until - now_f - BURST_MS).clamp(0.0, MAX_THROTTLE_MS)
    }

    /// How far past its burst the client is now (ms), without counting
    /// anything.
    fn debt(&self, now: u64) -> f64 {
        (self.paid_until - now as f64 - BURST_MS).clamp(0.0, MAX_THROTTLE_MS)
    }
}

#[derive(Default)]
struct Sensors {
    by_key: HashMap<(QuotaType, String, String), Sensor>,
    purged_ms: u64,
}

pub struct Quotas {
    table: RwLock<Arc<HashMap<Entity, HashMap<String, f64>>>>,
    sensors: Mutex<Sensors>,
    throttled_ms: [AtomicU64; 3],
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            table: RwLock::new(Arc::new(HashMap::new())),
            sensors: Mutex::new(Sensors::default()),
            throttled_ms: Default::default(),
        }
    }
}

/// The quota's user name of a principal (`User:alice` is `alice`).
pub fn user_of(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

impl Quotas {
    /// Replaces the quotas with the stored ones (rows that do not parse are
    /// left out).
    pub fn set(&self, records: Vec<QuotaRecord>) {
        let mut table: HashMap<Entity, HashMap<String, f64>> = HashMap::new();
        for record in records {
            if let Some(entity) = Entity::parse(&record.entity) {
                table
                    .entry(entity)
                    .or_default()
                    .insert(record.key, record.value);
            }
        }
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// Whether any quota is set (nothing is measured otherwise).
    pub fn active(&self) -> bool {
        !self.table().is_empty()
    }

    pub fn table(&self) -> Arc<HashMap<Entity, HashMap<String, f64>>> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The bound of `kind` for (user, client id) and the sensor's key, in
    /// Kafka's order of precedence.
    fn bound(&self, kind: QuotaType, user: &str, client: &str) -> Option<(f64, String, String)> {
        let table = self.table();
        if table.is_empty() {
            return None;
        }
        let named = |s: &str| Some(Some(s.to_string()));
        let default = Some(None);
        let order: [(Part, Part); 8] = [
            (named(user), named(client)),
            (named(user), default.clone()),
            (named(user), None),
            (default.clone(), named(client)),
            (default.clone(), default.clone()),
            (default.clone(), None),
            (None, named(client)),
            (None, default),
        ];
        order.into_iter().find_map(|(u, c)| {
            let (has_user, has_client) = (u.is_some(), c.is_some());
            let entity = Entity {
                user: u,
                client_id: c,
            };
            let value = *table.get(&entity)?.get(kind.key())?;
            Some((
                value,
                if has_user {
                    user.to_string()
                } else {
                    String::new()
                },
                if has_client {
                    client.to_string()
                } else {
                    String::new()
                },
            ))
        })
    }

    /// Records `value` of `kind` for (user, client id); the throttle time in
    /// ms (0 when within the quota or when no quota applies).
    pub fn record(&self, kind: QuotaType, user: &str, client: &str, value: f64) -> u64 {
        let Some((bound, user_key, client_key)) = self.bound(kind, user, client) else {
            return 0;
        };
        let now = now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_sub(sensors.purged_ms) > 60_000 {
            sensors
                .by_key
                .retain(|_, s| now.saturating_sub(s.last_ms) < SENSOR_IDLE_MS);
            sensors.purged_ms = now;
        }
        let sensor = sensors
            .by_key
            .entry((kind, user_key, client_key))
            .or_default();
        if bound <= 0.0 {
            return 0;
        }
        let throttle = sensor.record(value, bound, now).round() as u64;
        if throttle == 0 {
            return 0;
        }
        self.throttled_ms[kind as usize].fetch_add(throttle, Ordering::Relaxed);
        throttle
    }

    /// consumer_byte_rate for a Fetch response of `size` bytes: `Err` with
    /// the throttle time when the client is still throttled (send no data,
    /// count nothing); else counted, `Ok` with the throttle time it earns.
    pub fn fetch(&self, user: &str, client: &str, size: f64) -> Result<u64, u64> {
        let Some((bound, user_key, client_key)) = self.bound(QuotaType::Fetch, user, client) else {
            return Ok(0);
        };
        if bound <= 0.0 {
            return Ok(0);
        }
        let now = now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(PoisonError::into_inner);
        let sensor = sensors
            .by_key
            .entry((QuotaType::Fetch, user_key, client_key))
            .or_default();
        let debt = sensor.debt(now).round() as u64;
        let throttle = if debt > 0 {
            debt
        } else {
            sensor.record(size, bound, now).round() as u64
        };
        self.throttled_ms[QuotaType::Fetch as usize].fetch_add(throttle, Ordering::Relaxed);
        if debt > 0 { Err(debt) } else { Ok(throttle) }
    }

    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP strata_quota_throttle_ms_total Throttle time given to clients past a quota, by quota type.\n\
             # TYPE strata_quota_throttle_ms_total counter"
        );
        for kind in [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request] {
            let _ = writeln!(
                out,
                "strata_quota_throttle_ms_total{{quota=\"{}\"}} {}",
                kind.key(),
                self.throttled_ms[kind as usize].load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entity: Entity, key: &str, value: f64) -> QuotaRecord {
        QuotaRecord {
            entity: entity.canonical(),
            key: key.into(),
            value,
        }
    }

    fn user(name: Option<&str>) -> Entity {
        Entity {
            user: Some(name.map(String::from)),
            client_id: None,
        }
    }

    fn client(name: Option<&str>) -> Entity {
        Entity {
            user: None,
            client_id: Some(name.map(String::from)),
        }
    }

    #[test]
    fn entities_round_trip() {
        let both = Entity {
            user: Some(Some("al\"ice".into())),
            client_id: Some(None),
        };
        assert_eq!(Entity::parse(&both.canonical()), Some(both));
        assert_eq!(Entity::parse("[]"), None);
        assert_eq!(Entity::parse("[[\"ip\",null]]"), None);
    }

    #[test]
    fn precedence_is_kafkas() {
        let quotas = Quotas::default();
        quotas.set(vec![
            record(client(None), PRODUCER_BYTE_RATE, 1.0),
            record(client(Some("app")), PRODUCER_BYTE_RATE, 2.0),
            record(user(None), PRODUCER_BYTE_RATE, 3.0),
            record(user(Some("alice")), PRODUCER_BYTE_RATE, 4.0),
            record(
                Entity {
                    user: Some(Some("alice".into())),
                    client_id: Some(Some("app".into())),
                },
                PRODUCER_BYTE_RATE,
                5.0,
            ),
        ]);
        let bound = |u: &str, c: &str| quotas.bound(QuotaType::Produce, u, c);
        assert_eq!(
            bound("alice", "app"),
            Some((5.0, "alice".into(), "app".into()))
        );
        assert_eq!(
            bound("alice", "other"),
            Some((4.0, "alice".into(), String::new()))
        );
        assert_eq!(
            bound("bob", "app"),
            Some((3.0, "bob".into(), String::new()))
        );
        assert_eq!(quotas.bound(QuotaType::Fetch, "bob", "app"), None);
        quotas.set(vec![
            record(client(None), PRODUCER_BYTE_RATE, 1.0),
            record(client(Some("app")), PRODUCER_BYTE_RATE, 2.0),
        ]);
        assert_eq!(
            bound("bob", "app"),
            Some((2.0, String::new(), "app".into()))
        );
        assert_eq!(bound("bob", "x"), Some((1.0, String::new(), "x".into())));
    }

    #[test]
    fn throttle_holds_the_long_run_rate_to_the_bound() {
        let mut sensor = Sensor::default();
        // 100 B/s: one second of burst is free, then each 100 B waits 1 s.
        assert_eq!(sensor.record(100.0, 100.0, 10_000), 0.0);
        assert_eq!(sensor.record(100.0, 100.0, 10_000), 1_000.0);
        assert_eq!(sensor.record(50.0, 100.0, 10_500), 1_000.0);
        assert_eq!(sensor.debt(10_500), 1_000.0);
        // A client that waits as told is admitted at exactly the bound.
        let mut now = 20_000;
        let mut sent = 0.0;
        for _ in 0..100 {
            let wait = sensor.record(100.0, 100.0, now);
            sent += 100.0;
            now += wait as u64;
        }
        let rate = sent / ((now - 20_000) as f64 / 1000.0);
        assert!((rate - 100.0).abs() < 2.0, "{rate}");
        // A huge request is throttled at most 11 s at a time; the debt stays.
        let mut big = Sensor::default();
        assert_eq!(big.record(10_000.0, 100.0, 0), 11_000.0);
        assert_eq!(big.record(1.0, 100.0, 11_000), 11_000.0);
        let quotas = Quotas::default();
        quotas.set(vec![record(client(Some("c")), PRODUCER_BYTE_RATE, 100.0)]);
        assert_eq!(quotas.record(QuotaType::Produce, "u", "c", 100.0), 0);
        assert_eq!(quotas.record(QuotaType::Produce, "u", "c", 100.0), 1_000);
        assert_eq!(quotas.record(QuotaType::Produce, "u", "other", 1.0e9), 0);
        // A Fetch past a second of quota goes through once, then waits.
        quotas.set(vec![record(user(None), CONSUMER_BYTE_RATE, 100.0)]);
        assert_eq!(quotas.fetch("u", "c", 300.0), Ok(2_000));
        assert!(matches!(quotas.fetch("u", "c", 300.0), Err(1_990..=2_000)));
        assert_eq!(quotas.fetch("v", "c", 50.0), Ok(0), "every user on its own");
    }
}
