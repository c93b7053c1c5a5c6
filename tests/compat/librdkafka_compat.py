"""Compatibility scenarios driven by librdkafka, through confluent-kafka for
Python (the librdkafka wrapper most applications use).

Usage: librdkafka_compat.py BOOTSTRAP PREFIX
Prints one JSON object: {"client", "version", "results": {scenario: "pass" | "fail: reason"}}.
"""
import json
import sys
import time
import traceback

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BOOTSTRAP, PREFIX = sys.argv[1], sys.argv[2]
results = {}


def scenario(name):
    def wrap(fn):
        try:
            fn()
            results[name] = "pass"
        except Exception as error:  # noqa: BLE001 - a report card records every failure
            results[name] = "fail: " + traceback.format_exception_only(type(error), error)[-1].strip()
        return fn
    return wrap


def check(condition, message):
    if not condition:
        raise AssertionError(message)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})


def create(topic, partitions, config=None):
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])
    for future in futures.values():
        future.result(timeout=15)


def produce(topic, records, **config):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5, **config})
    errors = []
    for record in records:
        p.produce(topic, **record, on_delivery=lambda err, _msg: err and errors.append(err))
    p.flush(30)
    check(not errors, f"delivery errors: {errors}")


def consume(topic, partition, count, start=confluent_kafka.OFFSET_BEGINNING, **config):
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{PREFIX}-reader",
                  "enable.auto.commit": False, **config})
    c.assign([TopicPartition(topic, partition, start)])
    out = []
    deadline = time.time() + 30
    while len(out) < count and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


T = f"{PREFIX}-data"
create(T, 3)


@scenario("admin: create, list and delete topics")
def _():
    name = f"{PREFIX}-admin"
    create(name, 2, {"retention.ms": "-1"})
    check(name in admin.list_topics(timeout=10).topics, "created topic is listed")
    for future in admin.delete_topics([name]).values():
        future.result(timeout=15)
    check(name not in admin.list_topics(timeout=10).topics, "deleted topic is gone")


@scenario("admin: describe topic configs")
def _():
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, T)])
    configs = list(futures.values())[0].result(timeout=15)
    check("max.message.bytes" in configs and "retention.ms" in configs, f"configs: {list(configs)[:5]}")
    check(configs["max.message.bytes"].is_default, "defaults are flagged")


for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
    @scenario(f"produce and consume: {codec}, keys, headers, null values")
    def _(codec=codec):
        topic = f"{PREFIX}-codec-{codec}"
        create(topic, 1)
        records = [{"key": f"k{i}", "value": None if i % 10 == 3 else f"{codec}-{i}",
                    "headers": [("h", f"{i}".encode())], "partition": 0} for i in range(50)]
        produce(topic, records, **{"compression.type": codec})
        got = consume(topic, 0, 50)
        check(len(got) == 50, f"consumed {len(got)} of 50")
        for i, m in enumerate(got):
            check(m.key() == f"k{i}".encode(), f"key {i}")
            check(m.value() == (None if i % 10 == 3 else f"{codec}-{i}".encode()), f"value {i}")
            check(m.headers() == [("h", f"{i}".encode())], f"headers {i}")


@scenario("idempotent producer: 1000 records in order")
def _():
    topic = f"{PREFIX}-idempotent"
    create(topic, 1)
    produce(topic, [{"value": f"i{i}", "partition": 0} for i in range(1000)],
            **{"enable.idempotence": True})
    got = consume(topic, 0, 1000)
    check([m.value() for m in got] == [f"i{i}".encode() for i in range(1000)],
          f"read {len(got)} records, in order: {[m.value() for m in got[:3]]}...")


@scenario("large message near the 1 MB limit")
def _():
    topic = f"{PREFIX}-large"
    create(topic, 1)
    big = bytes(range(256)) * 3900
    produce(topic, [{"value": big, "partition": 0}], **{"message.max.bytes": 2_000_000})
    got = consume(topic, 0, 1)
    check(len(got) == 1 and got[0].value() == big, "large value round-trips")


@scenario("consume from earliest, latest and a timestamp")
def _():
    topic = f"{PREFIX}-positions"
    create(topic, 1)
    base = int(time.time() * 1000) - 100_000
    produce(topic, [{"value": f"v{i}", "partition": 0, "timestamp": base + i * 1000} for i in range(20)])
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{PREFIX}-pos"})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    check((low, high) == (0, 20), f"watermarks {(low, high)}")
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 7500)], timeout=10)[0]
    check(found.offset == 8, f"offset for time {found.offset}")
    c.close()
    check([m.value() for m in consume(topic, 0, 2, start=18)] == [b"v18", b"v19"], "read from offset 18")


@scenario("consumer group: rebalance on join and leave")
def _():
    topic = f"{PREFIX}-group"
    create(topic, 4)
    conf = {"bootstrap.servers": BOOTSTRAP, "group.id": f"{PREFIX}-g", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}
    a, b = Consumer(conf), Consumer(conf)

    def wait(cond, what, members):
        deadline = time.time() + 40
        while not cond() and time.time() < deadline:
            for member in members:
                member.poll(0.1)
        check(cond(), what)

    a.subscribe([topic])
    wait(lambda: len(a.assignment()) == 4, "one member owns everything", [a])
    b.subscribe([topic])
    wait(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, "two members share four partitions", [a, b])
    b.close()
    wait(lambda: len(a.assignment()) == 4, "the survivor owns everything again", [a])
    a.close()


@scenario("offset commit and fetch")
def _():
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{PREFIX}-commits", "enable.auto.commit": False})
    tp = TopicPartition(T, 1, 0, metadata="checkpoint")
    c.commit(offsets=[tp], asynchronous=False)
    committed = c.committed([TopicPartition(T, 1)], timeout=10)[0]
    c.close()
    check(committed.offset == 0 and committed.metadata == "checkpoint", f"committed {committed}")


@scenario("admin: list and describe groups")
def _():
    listed = admin.list_consumer_groups().result(timeout=15)
    ids = [g.group_id for g in listed.valid]
    check(f"{PREFIX}-commits" in ids, f"listed {ids}")
    described = list(admin.describe_consumer_groups([f"{PREFIX}-commits"]).values())[0].result(timeout=15)
    check(described.group_id == f"{PREFIX}-commits", "group described")


def txn_producer(txn_id, **config):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": txn_id, "linger.ms": 5, **config})
    p.init_transactions(30)
    return p


def values(messages):
    return [m.value().decode() for m in messages]


@scenario("transactions: commit and abort, read_committed skips the aborted records")
def _():
    topic = f"{PREFIX}-txn"
    create(topic, 1)
    p = txn_producer(f"{PREFIX}-txn")
    p.begin_transaction()
    p.produce(topic, value=b"a1", partition=0)
    p.produce(topic, value=b"a2", partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, value=b"b1", partition=0)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, value=b"c1", partition=0)
    p.commit_transaction(30)
    committed = values(consume(topic, 0, 3, **{"isolation.level": "read_committed"}))
    check(committed == ["a1", "a2", "c1"], f"read_committed reads a1 a2 c1, got {committed}")
    everything = values(consume(topic, 0, 4, **{"isolation.level": "read_uncommitted"}))
    check(everything == ["a1", "a2", "b1", "c1"], f"read_uncommitted reads all four, got {everything}")


@scenario("transactions: a new producer with the same transactional.id fences the old one")
def _():
    topic = f"{PREFIX}-fence"
    create(topic, 1)
    zombie = txn_producer(f"{PREFIX}-fence")
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie", partition=0)
    zombie.flush(30)
    fresh = txn_producer(f"{PREFIX}-fence")
    fresh.begin_transaction()
    fresh.produce(topic, value=b"fresh", partition=0)
    fresh.commit_transaction(30)
    fenced = False
    try:
        zombie.produce(topic, value=b"late", partition=0)
        zombie.commit_transaction(30)
    except KafkaException as error:
        e = error.args[0]
        fenced = e.fatal() or e.code() in (confluent_kafka.KafkaError._FENCED,
                                           confluent_kafka.KafkaError.PRODUCER_FENCED,
                                           confluent_kafka.KafkaError.INVALID_PRODUCER_EPOCH)
    check(fenced, "the old producer was not fenced")
    committed = values(consume(topic, 0, 1, **{"isolation.level": "read_committed"}))
    check(committed == ["fresh"], f"only the new producer's record is committed, got {committed}")


@scenario("transactions: sendOffsetsToTransaction commits the group's offsets on commit only")
def _():
    src, dst, group = f"{PREFIX}-txn-in", f"{PREFIX}-txn-out", f"{PREFIX}-txn-group"
    create(src, 1)
    create(dst, 1)
    p = txn_producer(f"{PREFIX}-txn-offsets")
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
    p.begin_transaction()
    p.produce(dst, value=b"x", partition=0)
    p.send_offsets_to_transaction([TopicPartition(src, 0, 5)], c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(dst, value=b"y", partition=0)
    p.send_offsets_to_transaction([TopicPartition(src, 0, 9)], c.consumer_group_metadata(), 30)
    p.abort_transaction(30)
    committed = c.committed([TopicPartition(src, 0)], timeout=30)[0].offset
    c.close()
    check(committed == 5, f"the committed transaction's offset 5 stands, not the aborted 9: {committed}")


print(json.dumps({"client": "librdkafka (confluent-kafka)",
                  "version": f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}",
                  "results": results}))
