"""A kafka-python consumer-group member for the integration tests: prints
every consumed value on its own line. Usage: BOOTSTRAP GROUP TOPIC"""
import sys

from kafka import KafkaConsumer

bootstrap, group, topic = sys.argv[1:4]
consumer = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id=group,
    auto_offset_reset="earliest",
    enable_auto_commit=True,
    auto_commit_interval_ms=200,
    session_timeout_ms=6000,
    heartbeat_interval_ms=500,
)
for message in consumer:
    print(message.value.decode(), flush=True)
