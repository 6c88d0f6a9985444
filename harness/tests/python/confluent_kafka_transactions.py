"""confluent-kafka transactions against one corelog broker.

Usage: confluent_kafka_transactions.py BOOTSTRAP TOPIC produce|verify|prepare|prepared

produce: a transactional producer commits one transaction (a record on each of the
topic's 3 partitions) and aborts a second; a zombie producer with the same
transactional.id is fenced by a new instance (its commit fails, its records are
aborted); a transaction left open past its transaction.timeout.ms is aborted by the
broker (a later committed record on the same partition becomes readable, the
timed-out one never); offsets sent to a transaction become the group's when it
commits, not when it aborts; read_committed and read_uncommitted consumers then read the
topic. verify: a read_committed consumer reads the topic again and the group's
offsets are read again (after a restart). prepare: one transaction committed on a
broker that holds its markers (nothing readable committed); prepared: after a
restart, read_committed reads it (the reloaded coordinator wrote the markers).
Prints RESULT {json} last; exits 1 on any check that fails.
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

BOOTSTRAP, TOPIC, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
PARTITIONS = 3
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAILED: " + what, flush=True)


def producer(transactional_id, timeout_ms=60000):
    return Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": timeout_ms,
        }
    )


def produce_all(p, prefix, partitions=range(PARTITIONS)):
    for partition in partitions:
        p.produce(TOPIC, value=f"{prefix}-{partition}".encode(), partition=partition)
    p.flush(30)


def read(isolation, expect_at_least=(), idle_s=3.0, deadline_s=60.0):
    """Every value of the topic, read from the start until `expect_at_least` are all
    read and nothing more came for `idle_s`."""
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"reader-{uuid.uuid4()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    values, last, start = [], time.time(), time.time()
    while time.time() - start < deadline_s:
        message = consumer.poll(0.5)
        if message is None:
            if set(expect_at_least) <= set(values) and time.time() - last > idle_s:
                break
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                print(f"consume error: {message.error()}", flush=True)
            continue
        values.append(message.value().decode())
        last = time.time()
    consumer.close()
    return values


def fenced(error):
    return error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def commit_and_abort(result):
    p = producer("txn-main")
    p.init_transactions(30)
    p.begin_transaction()
    produce_all(p, "committed")
    p.commit_transaction(30)
    p.begin_transaction()
    produce_all(p, "aborted")
    p.abort_transaction(30)
    result["committed_transactions"] = 1
    result["aborted_transactions"] = 1


def zombie(result):
    old = producer("txn-zombie")
    old.init_transactions(30)
    old.begin_transaction()
    produce_all(old, "zombie-old", [0])
    new = producer("txn-zombie")
    new.init_transactions(60)  # fences `old` and aborts its transaction
    try:
        old.commit_transaction(30)
        result["zombie_commit"] = "succeeded"
    except KafkaException as e:
        error = e.args[0]
        result["zombie_commit"] = error.name()
        check(fenced(error), f"the zombie's commit failed with {error}, not a fenced error")
    new.begin_transaction()
    produce_all(new, "zombie-new", [0])
    new.commit_transaction(30)


def timeout(result):
    stuck = producer("txn-stuck", timeout_ms=2000)
    stuck.init_transactions(30)
    stuck.begin_transaction()
    produce_all(stuck, "timed-out", [1])
    started = time.time()
    later = producer("txn-later")
    later.init_transactions(30)
    later.begin_transaction()
    produce_all(later, "after-timeout", [1])
    later.commit_transaction(30)
    # read_committed reaches the later record only once the broker aborted `stuck`.
    values = read("read_committed", expect_at_least=["after-timeout-1"], idle_s=0.5, deadline_s=60)
    result["timeout_abort_seconds"] = round(time.time() - started, 1)
    check("after-timeout-1" in values, "the record after the timed-out transaction never became readable")
    check("timed-out-1" not in values, "a record of the timed-out transaction was read committed")
    try:
        stuck.commit_transaction(10)
        result["timed_out_commit"] = "succeeded"
    except KafkaException as e:
        result["timed_out_commit"] = e.args[0].name()


GROUP = "txn-offsets-group"


def group_offsets(expected=None, deadline_s=15.0):
    """The group's committed offsets of partitions 0 and 1 (-1: none), polled until
    they are `expected` or the deadline passes."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "enable.auto.commit": False})
    start = time.time()
    while True:
        committed = consumer.committed([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)], 10)
        offsets = [tp.offset if tp.offset >= 0 else -1 for tp in committed]
        if expected is None or offsets == expected or time.time() - start > deadline_s:
            consumer.close()
            return offsets
        time.sleep(0.2)


def send_offsets(result):
    """send_offsets_to_transaction: the offsets become the group's when the
    transaction commits, never when it aborts."""
    p = producer("txn-offsets")
    p.init_transactions(30)
    group = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP})
    metadata = group.consumer_group_metadata()
    p.begin_transaction()
    produce_all(p, "offsets-commit", [2])
    p.send_offsets_to_transaction([TopicPartition(TOPIC, 0, 5), TopicPartition(TOPIC, 1, 7)], metadata, 30)
    p.commit_transaction(30)
    result["offsets_after_commit"] = group_offsets([5, 7])
    p.begin_transaction()
    produce_all(p, "offsets-abort", [2])
    p.send_offsets_to_transaction([TopicPartition(TOPIC, 0, 9)], metadata, 30)
    p.abort_transaction(30)
    time.sleep(2)
    result["offsets_after_abort"] = group_offsets()
    group.close()


def too_long_timeout(result):
    p = producer("txn-too-long", timeout_ms=900001)
    try:
        p.init_transactions(30)
        result["too_long_timeout"] = "accepted"
    except KafkaException as e:
        result["too_long_timeout"] = e.args[0].name()


def main():
    result = {}
    if MODE == "prepare":
        p = producer("txn-prepared")
        p.init_transactions(30)
        p.begin_transaction()
        produce_all(p, "prepared")
        p.commit_transaction(30)
        expected = ["prepared-0", "prepared-1", "prepared-2"]
        result["read_uncommitted"] = sorted(read("read_uncommitted", expect_at_least=expected))
        committed = read("read_committed", idle_s=2.0)
    elif MODE == "prepared":
        expected = ["prepared-0", "prepared-1", "prepared-2"]
        committed = read("read_committed", expect_at_least=expected, idle_s=1.0)
    elif MODE == "produce":
        commit_and_abort(result)
        zombie(result)
        timeout(result)
        too_long_timeout(result)
        send_offsets(result)
        committed = read("read_committed", expect_at_least=["committed-0", "committed-1", "committed-2"])
        uncommitted = read("read_uncommitted", expect_at_least=["aborted-0", "aborted-1", "aborted-2"])
        result["read_uncommitted"] = sorted(uncommitted)
    else:
        committed = read("read_committed", expect_at_least=["committed-0", "committed-1", "committed-2"])
        result["offsets"] = group_offsets([5, 7])
    result["read_committed"] = sorted(committed)
    result["failures"] = failures
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
