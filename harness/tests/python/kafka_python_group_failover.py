"""A kafka-python consumer group living through the death of its coordinator.

Produces EVENTS numbered events to TOPIC (acks=all), then one member of group
GROUP reads them slowly, committing after every poll. The test SIGKILLs the
group's coordinator (the leader of the group's `__consumer_offsets` partition)
once the first commit is in; the member must find the new coordinator, keep its
place (the committed offsets are replicated) and read on to the end. At-least-once:
every event arrives, some may arrive twice (read after the last commit the dead
coordinator acknowledged); nothing may arrive from before a committed offset.

Usage: kafka_python_group_failover.py BOOTSTRAP TOPIC GROUP
Prints a last line `RESULT {...}`. Exits non-zero with a message on any failure;
gives up after DEADLINE_S.
"""

import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

DEADLINE_S = 100
EVENTS = 600
BATCH = 20
bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.monotonic() + DEADLINE_S

producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", retries=10)
for seq in range(EVENTS):
    producer.send(topic, key=str(seq).encode(), value=json.dumps({"seq": seq}).encode())
producer.flush(30)
producer.close()

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap.split(","),
    group_id=group,
    enable_auto_commit=False,
    auto_offset_reset="earliest",
    max_poll_records=BATCH,
)
received = {}
committed = {}
commit_errors = []
while len(received) < EVENTS:
    if time.monotonic() > deadline:
        sys.exit(f"read {len(received)} of {EVENTS} events in {DEADLINE_S} s; commit errors: {commit_errors[-5:]}")
    batches = consumer.poll(timeout_ms=500)
    for partition, records in batches.items():
        for record in records:
            seq = json.loads(record.value)["seq"]
            # Nothing below an offset this member committed comes back.
            floor = committed.get(record.partition, 0)
            if record.offset < floor:
                sys.exit(f"{record.partition}/{record.offset} read again below the committed offset {floor}")
            received[seq] = received.get(seq, 0) + 1
    if batches:
        try:
            consumer.commit()
            for tp in consumer.assignment():
                committed[tp.partition] = consumer.position(tp)
        except KafkaError as error:
            # The coordinator died under the commit: the member looks it up again
            # and retries with its next poll.
            commit_errors.append(repr(error))
        print(f"read {len(received)} of {EVENTS}, committed {committed}", flush=True)
        time.sleep(0.3)

# The last position committed, retried until a coordinator takes it.
while True:
    try:
        consumer.commit()
        break
    except KafkaError as error:
        commit_errors.append(repr(error))
        if time.monotonic() > deadline:
            sys.exit(f"the final commit failed until the deadline: {commit_errors[-5:]}")
        time.sleep(0.5)
final = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
consumer.close()
print("RESULT " + json.dumps({
    "received": len(received),
    "twice": sum(1 for count in received.values() if count > 1),
    "commit_errors": len(commit_errors),
    "committed": sum(offset or 0 for offset in final.values()),
}))
