//! Topic administration with librdkafka's admin client: create (with configs,
//! and the errors a user can cause), describe configs with their defaults,
//! metadata with topic ids, delete, auto-create, and all of it across a restart.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset};

use crate::common::TestBroker;

async fn create(broker: &TestBroker, topic: NewTopic<'_>) -> Result<String, RDKafkaErrorCode> {
    let results = broker
        .admin()
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("request");
    results
        .into_iter()
        .next()
        .expect("one result")
        .map_err(|(_, code)| code)
}

fn topic_names(broker: &TestBroker) -> Vec<(String, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut topics: Vec<(String, usize)> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    topics
}

async fn describe_topic(broker: &TestBroker, name: &str) -> Vec<(String, Option<String>, bool)> {
    let results = broker
        .admin()
        .describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new())
        .await
        .expect("describe request");
    let resource = results.into_iter().next().expect("one").expect("described");
    resource
        .entries
        .into_iter()
        .map(|e| (e.name, e.value, e.is_default))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_delete_topics() {
    let mut broker = TestBroker::start(&[]);
    let topic = NewTopic::new("orders", 3, TopicReplication::Fixed(1))
        .set("retention.ms", "-1")
        .set("cleanup.policy", "delete");
    assert_eq!(create(&broker, topic).await, Ok("orders".to_string()));
    assert_eq!(topic_names(&broker), vec![("orders".to_string(), 3)]);

    let configs = describe_topic(&broker, "orders").await;
    let get = |name: &str| {
        configs
            .iter()
            .find(|(n, _, _)| n == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(
        get("retention.ms"),
        ("retention.ms".into(), Some("-1".into()), false)
    );
    assert_eq!(
        get("max.message.bytes"),
        ("max.message.bytes".into(), Some("1048588".into()), true),
        "defaults are listed and flagged as defaults"
    );
    assert_eq!(
        get("message.timestamp.type").1.as_deref(),
        Some("CreateTime")
    );

    // The errors a user can cause, each with its Kafka code.
    let again = NewTopic::new("orders", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, again).await,
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );
    let bad_name = NewTopic::new("no spaces allowed", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, bad_name).await,
        Err(RDKafkaErrorCode::InvalidTopic)
    );
    let bad_config =
        NewTopic::new("c", 1, TopicReplication::Fixed(1)).set("retention.forever", "yes");
    assert_eq!(
        create(&broker, bad_config).await,
        Err(RDKafkaErrorCode::InvalidConfig)
    );
    let bad_value = NewTopic::new("c", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    assert_eq!(
        create(&broker, bad_value).await,
        Err(RDKafkaErrorCode::InvalidConfig)
    );
    let no_partitions = NewTopic::new("c", 0, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, no_partitions).await,
        Err(RDKafkaErrorCode::InvalidPartitions)
    );
    assert_eq!(
        topic_names(&broker),
        vec![("orders".to_string(), 3)],
        "failed creates leave nothing"
    );

    // Broker configs are described too.
    let results = broker
        .admin()
        .describe_configs(&[ResourceSpecifier::Broker(0)], &AdminOptions::new())
        .await
        .expect("describe broker");
    let broker_config = results.into_iter().next().expect("one").expect("described");
    assert!(
        broker_config
            .entries
            .iter()
            .any(|e| e.name == "message.max.bytes")
    );

    // Topics and their configs survive a restart.
    broker.restart();
    assert_eq!(topic_names(&broker), vec![("orders".to_string(), 3)]);
    assert_eq!(describe_topic(&broker, "orders").await.len(), configs.len());

    // Delete, then the name is free again and the new topic starts empty.
    let producer = broker.producer(&[]);
    let record: FutureRecord<'_, (), str> = FutureRecord::to("orders").partition(1).payload("old");
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
    let deleted = broker
        .admin()
        .delete_topics(&["orders"], &AdminOptions::new())
        .await
        .expect("delete request");
    assert_eq!(
        deleted.into_iter().next().expect("one"),
        Ok("orders".to_string())
    );
    let missing = broker
        .admin()
        .delete_topics(&["orders"], &AdminOptions::new())
        .await
        .expect("delete request");
    assert_eq!(
        missing.into_iter().next().expect("one"),
        Err((
            "orders".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    assert_eq!(topic_names(&broker), vec![]);
    let fresh = NewTopic::new("orders", 2, TopicReplication::Fixed(1));
    assert_eq!(create(&broker, fresh).await, Ok("orders".to_string()));
    assert_eq!(
        broker.high_watermark("orders", 1),
        0,
        "recreated topic is empty"
    );
    assert!(
        broker
            .consume_all("orders", 1, Offset::Beginning)
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_follows_the_setting() {
    let broker = TestBroker::start(&["--default-partitions", "4"]);
    let producer = broker.producer(&[]);
    let record: FutureRecord<'_, (), str> = FutureRecord::to("auto.created").payload("hi");
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("auto-created and delivered");
    assert_eq!(topic_names(&broker), vec![("auto.created".to_string(), 4)]);

    let strict = TestBroker::start(&["--auto-create-topics", "false"]);
    let producer = strict.producer(&[("message.timeout.ms", "3000")]);
    let record: FutureRecord<'_, (), str> = FutureRecord::to("not.there").payload("hi");
    let err = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect_err("no auto-create");
    assert!(
        matches!(
            err.0.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "unexpected error {:?}",
        err.0
    );
    assert_eq!(topic_names(&strict), vec![]);
}
