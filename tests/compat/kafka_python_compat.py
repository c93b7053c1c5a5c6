"""Compatibility scenarios driven by kafka-python (pure Python).

Usage: kafka_python_compat.py BOOTSTRAP PREFIX
Prints one JSON object: {"client", "version", "results": {scenario: "pass" | "fail: reason"}}.
Every scenario checks its data end to end; a failure never stops the others.
"""
import json
import sys
import threading
import time
import traceback

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

BOOTSTRAP, PREFIX = sys.argv[1], sys.argv[2]
results = {}


def scenario(name):
    def wrap(fn):
        try:
            fn()
            results[name] = "pass"
        except Exception as error:  # noqa: BLE001 - a report card records every failure
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            results[name] = f"fail: {detail}"
        return fn
    return wrap


def check(condition, message):
    if not condition:
        raise AssertionError(message)


admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
T = f"{PREFIX}-data"
admin.create_topics([NewTopic(T, 3, 1)])


def producer(**extra):
    # Default settings: kafka-python 3 is idempotent (acks=all) by default.
    return KafkaProducer(bootstrap_servers=BOOTSTRAP, **extra)


def consume_all(topic, partitions, count, **extra):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                             consumer_timeout_ms=10000, **extra)
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    consumer.seek_to_beginning()
    out = []
    for message in consumer:
        out.append(message)
        if len(out) >= count:
            break
    consumer.close()
    return out


@scenario("admin: create, list and delete topics")
def _():
    name = f"{PREFIX}-admin"
    admin.create_topics([NewTopic(name, 2, 1, topic_configs={"retention.ms": "-1"})])
    check(name in admin.list_topics(), "created topic is listed")
    admin.delete_topics([name])
    deadline = time.time() + 10
    while name in admin.list_topics() and time.time() < deadline:
        time.sleep(0.1)
    check(name not in admin.list_topics(), "deleted topic is gone")


@scenario("admin: describe topic configs")
def _():
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, T)], config_filter="all")
    text = json.dumps(described, default=str)
    check("max.message.bytes" in text and "retention.ms" in text, f"configs listed: {text[:200]}")


for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
    label = codec or "none"

    @scenario(f"produce and consume: {label}, keys, headers, null values")
    def _(codec=codec, label=label):
        topic = f"{PREFIX}-codec-{label}"
        admin.create_topics([NewTopic(topic, 1, 1)])
        p = producer(compression_type=codec)
        sent = []
        for i in range(50):
            value = None if i % 10 == 3 else f"{label}-{i}".encode()
            headers = [("h", f"{i}".encode())]
            p.send(topic, key=f"k{i}".encode(), value=value, headers=headers, partition=0).get(timeout=10)
            sent.append((f"k{i}".encode(), value, headers))
        p.close()
        got = consume_all(topic, [0], 50)
        check([(m.key, m.value, list(m.headers)) for m in got] == sent, "records round-trip exactly")


@scenario("idempotent producer: 1000 records in order")
def _():
    topic = f"{PREFIX}-idempotent"
    admin.create_topics([NewTopic(topic, 1, 1)])
    p = producer()  # kafka-python 3: idempotent by default
    futures = [p.send(topic, value=f"i{i}".encode(), partition=0) for i in range(1000)]
    p.flush(timeout=30)
    for future in futures:
        future.get(timeout=10)
    p.close()
    got = consume_all(topic, [0], 1000)
    check([m.value for m in got] == [f"i{i}".encode() for i in range(1000)],
          f"read {len(got)} records, in order")


@scenario("large message near the 1 MB limit")
def _():
    topic = f"{PREFIX}-large"
    admin.create_topics([NewTopic(topic, 1, 1)])
    big = bytes(range(256)) * 3900  # 998,400 bytes
    p = producer(max_request_size=2_000_000)
    p.send(topic, value=big, partition=0).get(timeout=10)
    p.close()
    got = consume_all(topic, [0], 1, fetch_max_bytes=4_000_000, max_partition_fetch_bytes=4_000_000)
    check(len(got) == 1 and got[0].value == big, "large value round-trips")


@scenario("consume from earliest, latest and a timestamp")
def _():
    topic = f"{PREFIX}-positions"
    admin.create_topics([NewTopic(topic, 1, 1)])
    p = producer()
    base = int(time.time() * 1000) - 100_000
    for i in range(20):
        p.send(topic, value=f"v{i}".encode(), partition=0, timestamp_ms=base + i * 1000).get(timeout=10)
    p.close()
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    check(c.beginning_offsets([tp])[tp] == 0, "earliest is 0")
    check(c.end_offsets([tp])[tp] == 20, "latest is 20")
    found = c.offsets_for_times({tp: base + 7500})[tp]
    check(found is not None and found.offset == 8, f"offset for time: {found}")
    c.close()


@scenario("consumer group: rebalance on join and leave")
def _():
    topic = f"{PREFIX}-group"
    admin.create_topics([NewTopic(topic, 4, 1)])
    group = f"{PREFIX}-g"
    a = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, session_timeout_ms=6000,
                      heartbeat_interval_ms=500, auto_offset_reset="earliest")
    deadline = time.time() + 30
    while len(a.assignment()) < 4 and time.time() < deadline:
        a.poll(200)
    check(len(a.assignment()) == 4, "one member owns everything")
    b = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, session_timeout_ms=6000,
                      heartbeat_interval_ms=500, auto_offset_reset="earliest")
    # Each member polls on its own thread, as applications do: one thread
    # polling both would hold one member's rejoin behind the other's poll.
    owned = {"a": 0, "b": 0}
    stop = threading.Event()

    def member(name, consumer):
        while not stop.is_set():
            consumer.poll(100)
            owned[name] = len(consumer.assignment())

    threads = [threading.Thread(target=member, args=m) for m in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while owned != {"a": 2, "b": 2} and time.time() < deadline:
        time.sleep(0.1)
    shared = dict(owned)
    stop.set()
    for t in threads:
        t.join()
    check(shared == {"a": 2, "b": 2}, f"two members share four partitions (partitions owned: {shared})")
    b.close()
    deadline = time.time() + 30
    while len(a.assignment()) < 4 and time.time() < deadline:
        a.poll(200)
    check(len(a.assignment()) == 4, "the survivor owns everything again")
    a.close()


@scenario("offset commit and fetch")
def _():
    group = f"{PREFIX}-commits"
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
    tp = TopicPartition(T, 1)
    c.assign([tp])
    c.commit({tp: OffsetAndMetadata(0, "checkpoint", -1)})
    committed = c.committed(tp, metadata=True)
    c.close()
    check(committed is not None and committed.offset == 0 and committed.metadata == "checkpoint",
          f"committed: {committed}")


@scenario("admin: list and describe groups")
def _():
    listed = admin.list_groups()
    check(f"{PREFIX}-commits" in json.dumps(listed, default=str), f"group listed: {listed}")
    described = admin.describe_groups([f"{PREFIX}-commits"])
    check(f"{PREFIX}-commits" in json.dumps(described, default=str), f"group described: {described}")


@scenario("transactions: commit and abort, read_committed skips the aborted records")
def _():
    topic = f"{PREFIX}-txn"
    admin.create_topics([NewTopic(topic, 1, 1)])
    p = producer(transactional_id=f"{PREFIX}-txn")
    p.init_transactions()
    for values, commit in ((["a1", "a2"], True), (["b1"], False), (["c1"], True)):
        p.begin_transaction()
        for v in values:
            p.send(topic, value=v.encode(), partition=0)
        p.flush()
        if commit:
            p.commit_transaction()
        else:
            p.abort_transaction()
    p.close()
    committed = [m.value.decode() for m in
                 consume_all(topic, [0], 3, isolation_level="read_committed")]
    check(committed == ["a1", "a2", "c1"], f"read_committed reads a1 a2 c1, got {committed}")
    everything = [m.value.decode() for m in consume_all(topic, [0], 4)]
    check(everything == ["a1", "a2", "b1", "c1"], f"read_uncommitted reads all four, got {everything}")


print(json.dumps({"client": "kafka-python", "version": kafka.__version__, "results": results}))
