"""aiokafka's transactions against corelog: commit, abort, offsets sent to the
transaction, and what read_committed and read_uncommitted consumers see.

1. A transactional producer writes `committed-<i>` to every partition and commits;
   then `aborted-<i>` and aborts.
2. A consume-transform-produce step: a consumer of group `aiokafka-eos` reads the
   committed records, the producer copies each to the same partition as
   `copied-<value>` and sends the consumer's offsets to the transaction, then
   commits; a second round does the same with `dropped-<value>` and aborts, so the
   group's committed offsets must stay where the first round put them.
3. A read_committed consumer and a read_uncommitted one read the topic from the
   start.

Usage: aiokafka_transactions.py BOOTSTRAP TOPIC PARTITIONS
Prints a last line `RESULT {...}`: the values each consumer read (sorted) and the
group's committed offsets. Exits non-zero with a message on any failure; gives up
after DEADLINE_S.
"""

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

DEADLINE_S = 90
bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
GROUP = "aiokafka-eos"


async def read_all(isolation, expected, deadline):
    """Every record of the topic from the start, as a read_committed or
    read_uncommitted consumer (no group) sees them, once `expected` were read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        values = []
        while len(values) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values.extend(r.value.decode() for records in batch.values() for r in records)
        # A little longer, so that records the consumer must not see have a chance to show.
        batch = await consumer.getmany(timeout_ms=1000)
        values.extend(r.value.decode() for records in batch.values() for r in records)
        return sorted(values)
    finally:
        await consumer.stop()


async def copy_round(producer, consumer, prefix, commit, deadline):
    """Copies what the group's consumer reads next (the committed records) in one
    transaction with its offsets, then commits or aborts it."""
    got = []
    while len(got) < partitions and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500, max_records=partitions - len(got))
        got.extend(r for records in batch.values() for r in records)
    if len(got) < partitions:
        raise SystemExit(f"the group read {len(got)} of {partitions} committed records")
    async with producer.transaction() if commit else _AbortingTransaction(producer):
        for record in got:
            await producer.send(topic, value=f"{prefix}-{record.value.decode()}".encode(), partition=record.partition)
        offsets = {TopicPartition(topic, r.partition): r.offset + 1 for r in got}
        await producer.send_offsets_to_transaction(offsets, GROUP)
    return got


class _AbortingTransaction:
    """A transaction that is aborted at the end of its block."""

    def __init__(self, producer):
        self.producer = producer

    async def __aenter__(self):
        await self.producer.begin_transaction()

    async def __aexit__(self, *exc):
        await self.producer.abort_transaction()
        return False


async def main():
    deadline = time.monotonic() + DEADLINE_S
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aiokafka-tx", enable_idempotence=True)
    await producer.start()
    try:
        async with producer.transaction():
            for p in range(partitions):
                await producer.send(topic, value=f"committed-{p}".encode(), partition=p)
        await producer.begin_transaction()
        for p in range(partitions):
            await producer.send(topic, value=f"aborted-{p}".encode(), partition=p)
        await producer.abort_transaction()

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=GROUP,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            first = await copy_round(producer, consumer, "copied", True, deadline)
            # The copies are committed records too: the next round reads them, and aborts.
            await copy_round(producer, consumer, "dropped", False, deadline)
            committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
        finally:
            await consumer.stop()
    finally:
        await producer.stop()

    # read_committed: committed-* and copied-*; read_uncommitted: aborted-* and dropped-* too.
    read_committed = await read_all("read_committed", 2 * partitions, deadline)
    read_uncommitted = await read_all("read_uncommitted", 4 * partitions, deadline)
    print("RESULT " + json.dumps({
        "read_committed": read_committed,
        "read_uncommitted": read_uncommitted,
        "first_round": sorted(r.value.decode() for r in first),
        "committed_offsets": committed,
    }))


asyncio.run(main())
