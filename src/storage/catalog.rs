//! The topics this broker serves, by name and by id, each with its partition
//! logs. Loaded from the metadata store at startup and kept in step with it
//! by the topic admin handlers (the only writers).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::partition::PartitionLog;
use crate::metadata::{TopicId, TopicRecord};

pub struct TopicState {
    pub record: TopicRecord,
    pub partitions: Vec<Arc<PartitionLog>>,
}

impl TopicState {
    pub fn partition(&self, partition: i32) -> Option<&Arc<PartitionLog>> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
    }
}

#[derive(Default)]
struct Maps {
    by_name: HashMap<String, Arc<TopicState>>,
    by_id: HashMap<TopicId, Arc<TopicState>>,
}

#[derive(Default)]
pub struct Catalog {
    maps: RwLock<Maps>,
}

impl Catalog {
    pub fn insert(&self, topic: TopicState) -> Arc<TopicState> {
        let topic = Arc::new(topic);
        if let Ok(mut maps) = self.maps.write() {
            maps.by_name
                .insert(topic.record.name.clone(), Arc::clone(&topic));
            maps.by_id.insert(topic.record.id, Arc::clone(&topic));
        }
        topic
    }

    pub fn remove(&self, id: TopicId) -> Option<Arc<TopicState>> {
        let mut maps = self.maps.write().ok()?;
        let topic = maps.by_id.remove(&id)?;
        maps.by_name.remove(&topic.record.name);
        Some(topic)
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<TopicState>> {
        self.maps.read().ok()?.by_name.get(name).cloned()
    }

    pub fn by_id(&self, id: TopicId) -> Option<Arc<TopicState>> {
        self.maps.read().ok()?.by_id.get(&id).cloned()
    }

    /// All topics, sorted by name.
    pub fn all(&self) -> Vec<Arc<TopicState>> {
        let mut topics: Vec<_> = self
            .maps
            .read()
            .map(|maps| maps.by_name.values().cloned().collect())
            .unwrap_or_default();
        topics.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        topics
    }
}
