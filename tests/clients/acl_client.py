"""A librdkafka (confluent-kafka) client for the ACL tests: one action,
one line of output, `ok ...` or `error NAME` (the Kafka error's name).

    acl_client.py CONFIG_JSON produce TOPIC N
    acl_client.py CONFIG_JSON consume TOPIC GROUP N
    acl_client.py CONFIG_JSON topics
    acl_client.py CONFIG_JSON txn TRANSACTIONAL_ID TOPIC
    acl_client.py CONFIG_JSON create TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def name(err):
    if isinstance(err, KafkaException):
        err = err.args[0]
    if isinstance(err, KafkaError):
        return err.name()
    return str(err)


def main():
    config = json.loads(sys.argv[1])
    action = sys.argv[2]
    if action == "produce":
        topic, count = sys.argv[3], int(sys.argv[4])
        errors = []
        p = Producer({**config, "message.timeout.ms": 8000,
                      "error_cb": lambda e: errors.append(e)})
        delivered = []
        for i in range(count):
            p.produce(topic, value=f"v{i}".encode(),
                      on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg))
        p.flush(15)
        if len(delivered) == count:
            print("ok", count)
        else:
            print("error", name(errors[0]) if errors else "NOT_DELIVERED")
    elif action == "consume":
        topic, group, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
        c = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        seen = 0
        deadline = time.time() + 20
        while seen < count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                print("error", m.error().name())
                c.close()
                return
            seen += 1
        if seen >= count:
            try:
                c.commit(asynchronous=False)
            except KafkaException as e:
                print("error", name(e))
                c.close()
                return
            print("ok", seen)
        else:
            print("error", "TIMED_OUT", seen)
        c.close()
    elif action == "topics":
        c = Consumer({**config, "group.id": "unused"})
        md = c.list_topics(timeout=10)
        print("ok", ",".join(sorted(t for t in md.topics if not t.startswith("__"))))
        c.close()
    elif action == "txn":
        txn_id, topic = sys.argv[3], sys.argv[4]
        p = Producer({**config, "transactional.id": txn_id, "message.timeout.ms": 8000})
        try:
            p.init_transactions(15)
            p.begin_transaction()
            p.produce(topic, value=b"in-txn")
            p.commit_transaction(15)
            print("ok")
        except KafkaException as e:
            print("error", name(e))
    elif action == "create":
        admin = AdminClient(config)
        futures = admin.create_topics([NewTopic(sys.argv[3], 1, 1)])
        try:
            for f in futures.values():
                f.result(15)
            print("ok")
        except KafkaException as e:
            print("error", name(e))
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main()
