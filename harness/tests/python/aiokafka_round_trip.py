"""An aiokafka producer and consumer-group round trip against corelog.

Produces keyed JSON events, then a consumer of a group reads them from the earliest
offset, commits, and checks the broker reports the commit. Every event must arrive
once, at the partition and offset its send reported, each key on one partition.

Usage: aiokafka_round_trip.py BOOTSTRAP TOPIC
Prints a last line `RESULT {...}`. Exits non-zero with a message on any failure;
gives up after DEADLINE_S.
"""

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

DEADLINE_S = 60
EVENTS = 300
bootstrap, topic = sys.argv[1], sys.argv[2]


async def main():
    deadline = time.monotonic() + DEADLINE_S
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
        acks="all",
    )
    await producer.start()
    try:
        sends = [await producer.send(topic, key=f"sensor-{seq % 12}", value={"seq": seq, "reading": seq * 0.5})
                 for seq in range(EVENTS)]
        placed = [await send for send in sends]
    finally:
        await producer.stop()
    where = {seq: (meta.partition, meta.offset) for seq, meta in enumerate(placed)}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="aiokafka-round-trip",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
    )
    await consumer.start()
    try:
        received = {}
        partition_of_key = {}
        while len(received) < EVENTS:
            if time.monotonic() > deadline:
                sys.exit(f"the group read {len(received)} of {EVENTS} events within {DEADLINE_S} s")
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    seq = m.value["seq"]
                    if seq in received:
                        sys.exit(f"event {seq} read twice: at {received[seq]} and {(tp.partition, m.offset)}")
                    received[seq] = (tp.partition, m.offset)
                    if m.key != f"sensor-{seq % 12}":
                        sys.exit(f"event {seq} has key {m.key!r}")
                    if partition_of_key.setdefault(m.key, tp.partition) != tp.partition:
                        sys.exit(f"key {m.key!r} on partitions {partition_of_key[m.key]} and {tp.partition}")
        if received != where:
            wrong = [seq for seq in where if received.get(seq) != where[seq]][:5]
            sys.exit(f"events not where their sends reported (first 5): {wrong}")
        await consumer.commit()
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            position = await consumer.position(tp)
            if committed != position:
                sys.exit(f"{tp}: committed {committed}, position {position}")
    finally:
        await consumer.stop()
    print("RESULT " + json.dumps({"produced": EVENTS, "received": len(received),
                                  "partitions": len(set(p for p, _ in received.values()))}))


asyncio.run(main())
