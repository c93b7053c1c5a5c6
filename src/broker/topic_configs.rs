//! Every topic config Apache Kafka 4.x accepts, with Kafka's type, default
//! and validation. CreateTopics, AlterConfigs and IncrementalAlterConfigs
//! accept exactly these; DescribeConfigs reports all of them. A config that
//! Strata does not act on yet is still validated, stored and reported
//! (`acted_on` says which are; docs/configuration.md lists them).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use super::Broker;
use super::topics::TopicError;
use crate::config::KafkaConfig;
use crate::storage::cleaner::CleanupPolicy;

/// The type of a config's value, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl ConfigType {
    /// DescribeConfigs `config_type` code.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// What values a config takes, beyond its type.
#[derive(Debug, Clone, Copy)]
enum Valid {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// A double between the two bounds.
    Ratio(f64, f64),
    OneOf(&'static [&'static str]),
    /// A comma-separated list whose items are each one of these.
    ListOf(&'static [&'static str]),
    /// Throttled replicas: empty, `*`, or `partition:broker` pairs.
    Replicas,
    /// `-1` (codec default) or a value in the range.
    LevelOrDefault(i64, i64),
}

/// One topic config: name, type, Kafka's default, validation, and whether
/// Strata acts on it today.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    default: &'static str,
    valid: Valid,
    pub acted_on: bool,
}

/// Kafka's broker-level synonym of each topic config that has one.
const BROKER_SYNONYMS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("file.delete.delay.ms", "log.segment.delete.delay.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("local.retention.bytes", "log.local.retention.bytes"),
    ("local.retention.ms", "log.local.retention.ms"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("preallocate", "log.preallocate"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.jitter.ms", "log.roll.jitter.ms"),
    ("segment.ms", "log.roll.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

const LONG_MAX: &str = "9223372036854775807";

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    valid: Valid,
    acted_on: bool,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        default,
        valid,
        acted_on,
    }
}

use ConfigType::{Boolean, Double, Int, List, Long, String as Str};

/// Kafka 4.x topic configs (`TopicConfig` / `LogConfig`), sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        List,
        "delete",
        Valid::ListOf(&["compact", "delete"]),
        false,
    ),
    def(
        "compression.gzip.level",
        Int,
        "-1",
        Valid::LevelOrDefault(1, 9),
        false,
    ),
    def(
        "compression.lz4.level",
        Int,
        "9",
        Valid::Between(1, 17),
        false,
    ),
    def(
        "compression.type",
        Str,
        "producer",
        Valid::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        false,
    ),
    def(
        "compression.zstd.level",
        Int,
        "3",
        Valid::Between(-131_072, 22),
        false,
    ),
    def(
        "delete.retention.ms",
        Long,
        "86400000",
        Valid::AtLeast(0),
        false,
    ),
    def(
        "file.delete.delay.ms",
        Long,
        "60000",
        Valid::AtLeast(0),
        false,
    ),
    def("flush.messages", Long, LONG_MAX, Valid::AtLeast(1), false),
    def("flush.ms", Long, LONG_MAX, Valid::AtLeast(0), false),
    def(
        "follower.replication.throttled.replicas",
        List,
        "",
        Valid::Replicas,
        false,
    ),
    def(
        "index.interval.bytes",
        Int,
        "4096",
        Valid::AtLeast(0),
        false,
    ),
    def(
        "leader.replication.throttled.replicas",
        List,
        "",
        Valid::Replicas,
        false,
    ),
    def(
        "local.retention.bytes",
        Long,
        "-2",
        Valid::AtLeast(-2),
        false,
    ),
    def("local.retention.ms", Long, "-2", Valid::AtLeast(-2), false),
    def(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        Valid::AtLeast(1),
        false,
    ),
    def("max.message.bytes", Int, "1048588", Valid::AtLeast(0), true),
    def(
        "message.timestamp.after.max.ms",
        Long,
        "3600000",
        Valid::AtLeast(0),
        true,
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Valid::AtLeast(0),
        true,
    ),
    def(
        "message.timestamp.type",
        Str,
        "CreateTime",
        Valid::OneOf(&["CreateTime", "LogAppendTime"]),
        true,
    ),
    def(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Valid::Ratio(0.0, 1.0),
        false,
    ),
    def("min.compaction.lag.ms", Long, "0", Valid::AtLeast(0), false),
    def("min.insync.replicas", Int, "1", Valid::AtLeast(1), false),
    def("preallocate", Boolean, "false", Valid::Any, false),
    def(
        "remote.log.copy.disable",
        Boolean,
        "false",
        Valid::Any,
        false,
    ),
    def(
        "remote.log.delete.on.disable",
        Boolean,
        "false",
        Valid::Any,
        false,
    ),
    def("remote.storage.enable", Boolean, "false", Valid::Any, false),
    def("retention.bytes", Long, "-1", Valid::Any, false),
    def("retention.ms", Long, "604800000", Valid::AtLeast(-1), false),
    def(
        "segment.bytes",
        Int,
        "1073741824",
        Valid::AtLeast(1_048_576),
        false,
    ),
    def(
        "segment.index.bytes",
        Int,
        "10485760",
        Valid::AtLeast(4),
        false,
    ),
    def("segment.jitter.ms", Long, "0", Valid::AtLeast(0), false),
    def("segment.ms", Long, "604800000", Valid::AtLeast(1), false),
    def(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Valid::Any,
        false,
    ),
];

pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

impl TopicConfigDef {
    /// The value a topic without an override has: the broker's setting
    /// where Strata has one, else Kafka's default.
    pub fn default_value(&self, broker: &Broker) -> String {
        self.default_for(&broker.config.kafka)
    }

    fn default_for(&self, kafka: &KafkaConfig) -> String {
        match self.name {
            "max.message.bytes" => kafka.message_max_bytes.to_string(),
            "retention.ms" => kafka.retention_ms.to_string(),
            "retention.bytes" => kafka.retention_bytes.to_string(),
            _ => self.default.to_string(),
        }
    }

    /// The broker config that gives this config's default (Kafka's synonym).
    pub fn broker_synonym(&self) -> Option<&'static str> {
        BROKER_SYNONYMS
            .iter()
            .find(|(topic, _)| *topic == self.name)
            .map(|(_, broker)| *broker)
    }

    /// Kafka's check of a value for this config; the message says what to fix.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        let trimmed = value.trim();
        let bad = |why: String| Err(format!("invalid value '{value}' for {}: {why}", self.name));
        let number = match self.kind {
            Int => match trimmed.parse::<i32>() {
                Ok(n) => Some(i64::from(n)),
                Err(_) => return bad("expected a 32-bit integer".into()),
            },
            Long => match trimmed.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => return bad("expected a 64-bit integer".into()),
            },
            Boolean => {
                if !trimmed.eq_ignore_ascii_case("true") && !trimmed.eq_ignore_ascii_case("false") {
                    return bad("expected true or false".into());
                }
                None
            }
            Double => {
                if trimmed.parse::<f64>().map_or(true, |d| !d.is_finite()) {
                    return bad("expected a number".into());
                }
                None
            }
            Str | List => None,
        };
        match (self.valid, number) {
            (Valid::AtLeast(min), Some(n)) if n < min => bad(format!("must be at least {min}")),
            (Valid::Between(lo, hi), Some(n)) if !(lo..=hi).contains(&n) => {
                bad(format!("must be between {lo} and {hi}"))
            }
            (Valid::LevelOrDefault(lo, hi), Some(n)) if n != -1 && !(lo..=hi).contains(&n) => {
                bad(format!("must be -1 or between {lo} and {hi}"))
            }
            (Valid::Ratio(lo, hi), _) => match trimmed.parse::<f64>() {
                Ok(d) if (lo..=hi).contains(&d) => Ok(()),
                _ => bad(format!("must be between {lo} and {hi}")),
            },
            (Valid::OneOf(allowed), _) if !allowed.contains(&trimmed) => {
                bad(format!("must be one of {}", allowed.join(", ")))
            }
            (Valid::ListOf(allowed), _) => {
                let items: Vec<&str> = trimmed.split(',').map(str::trim).collect();
                if items.iter().all(|item| allowed.contains(item)) {
                    Ok(())
                } else {
                    bad(format!(
                        "must be a comma-separated list of {}",
                        allowed.join(", ")
                    ))
                }
            }
            (Valid::Replicas, _) => {
                let ok = trimmed.is_empty()
                    || trimmed == "*"
                    || trimmed.split(',').all(|pair| {
                        pair.trim().split_once(':').is_some_and(|(p, b)| {
                            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                        })
                    });
                if ok {
                    Ok(())
                } else {
                    bad("expected '*' or PARTITION:BROKER pairs separated by commas".into())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Checks requested config overrides: every name known, every value valid.
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
    for (name, value) in configs {
        let Some(def) = lookup(name) else {
            return Err(TopicError::new(
                ResponseError::InvalidConfig,
                format!("unknown topic config '{name}'"),
            ));
        };
        def.validate(value)
            .map_err(|message| TopicError::new(ResponseError::InvalidConfig, message))?;
    }
    Ok(())
}

/// What retention and compaction do to a topic with these overrides.
pub fn cleanup_policy(overrides: &BTreeMap<String, String>, kafka: &KafkaConfig) -> CleanupPolicy {
    let value = |name: &str| -> String {
        overrides
            .get(name)
            .cloned()
            .or_else(|| lookup(name).map(|def| def.default_for(kafka)))
            .unwrap_or_default()
    };
    // Values were validated when set; an unparsable one keeps the data.
    let long = |name: &str, fallback: i64| value(name).trim().parse::<i64>().unwrap_or(fallback);
    let policy = value("cleanup.policy");
    let has = |p: &str| policy.split(',').any(|item| item.trim() == p);
    CleanupPolicy {
        delete: has("delete"),
        compact: has("compact"),
        retention_ms: long("retention.ms", -1),
        retention_bytes: long("retention.bytes", -1),
        delete_retention_ms: long("delete.retention.ms", i64::MAX),
        min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
        min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
            .trim()
            .parse()
            .unwrap_or(0.5),
        segment_bytes: long("segment.bytes", 1 << 30),
    }
}

/// Every topic config with its effective value for a topic with these
/// overrides: `(def, value, is_override)`.
pub fn effective(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static TopicConfigDef, String, bool)> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| match overrides.get(def.name) {
            Some(value) => (def, value.clone(), true),
            None => (def, def.default_value(broker), false),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str) -> Result<(), String> {
        lookup(name).expect(name).validate(value)
    }

    #[test]
    fn values_are_checked_as_kafka_does() {
        assert!(check("retention.ms", "-1").is_ok());
        assert!(check("retention.ms", "-2").is_err());
        assert!(check("retention.bytes", "-5").is_ok());
        assert!(check("cleanup.policy", "compact,delete").is_ok());
        assert!(check("cleanup.policy", "forever").is_err());
        assert!(check("max.message.bytes", "abc").is_err());
        assert!(check("max.message.bytes", "3000000000").is_err(), "an int");
        assert!(check("segment.bytes", "1000").is_err(), "at least 1 MiB");
        assert!(check("min.cleanable.dirty.ratio", "0.2").is_ok());
        assert!(check("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(check("preallocate", "TRUE").is_ok());
        assert!(check("preallocate", "yes").is_err());
        assert!(check("compression.gzip.level", "-1").is_ok());
        assert!(check("compression.gzip.level", "0").is_err());
        assert!(check("leader.replication.throttled.replicas", "0:1, 1:1").is_ok());
        assert!(check("leader.replication.throttled.replicas", "*").is_ok());
        assert!(check("leader.replication.throttled.replicas", "x").is_err());
        assert!(check("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(check("delete.retention.ms", " 1000 ").is_ok(), "trimmed");
        assert!(
            lookup("message.format.version").is_none(),
            "removed in Kafka 4"
        );
    }

    #[test]
    fn the_table_is_sorted_and_every_default_is_valid() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} sorted", pair[1].name);
        }
        for def in TOPIC_CONFIGS {
            assert_eq!(def.validate(def.default), Ok(()), "{}", def.name);
        }
    }
}
