"""The confluent-kafka producer and consumer of the course notes (seed 003), run
against corelog.

The seed's snippets are kept as written but for the bootstrap address and the topic
name, and the consumer's endless loop stops once everything has arrived (or at the
deadline). The seed's consumer sets no `auto.offset.reset`, so it starts at the end of
the log (librdkafka's default, `latest`): it is subscribed, and has its partitions,
before anything it must receive is produced. The test knows that moment by sending a
marker to every partition until the consumer has seen one from each.

Usage: confluent_kafka_seed.py BOOTSTRAP TOPIC
Prints what the consumer receives and, last, a line `RESULT {...}`. Exits non-zero
with a message on any failure; gives up after DEADLINE_S.
"""

import json
import sys
import time

DEADLINE_S = 60
bootstrap, topic = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + DEADLINE_S
MARKER = "marker"

# --- seed 003, consumer set-up, as written (bootstrap address and topic adapted) ---
from confluent_kafka import Consumer

consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "order-service"
})
consumer.subscribe([topic])
# --- end ---

partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
if not partitions:
    sys.exit(f"no partitions known for {topic}")

# --- seed 003, producer, as written (bootstrap address and topic adapted) ---
from confluent_kafka import Producer

producer = Producer({"bootstrap.servers": bootstrap})
# --- end (its produce call follows, once the consumer is in place) ---

# Markers until the consumer has received one from every partition: from then on it
# receives everything produced.
errors = []
marked = set()
while marked != set(partitions):
    if time.monotonic() > deadline:
        sys.exit(f"the consumer of group order-service got markers from partitions {sorted(marked)} of "
                 f"{partitions} within {DEADLINE_S} s; consumer errors: {errors[-5:]}")
    for partition in set(partitions) - marked:
        producer.produce(topic=topic, value=MARKER, partition=partition)
    producer.flush(10)
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            errors.append(str(msg.error()))
        elif msg.value() == MARKER.encode():
            marked.add(msg.partition())

# --- seed 003, the produce call, as written (topic adapted) ---
producer.produce(topic=topic, value='{"user_id": 42}')
producer.flush()
# --- end ---
expected = ['{"user_id": 42}']
for user_id in range(100):
    value = json.dumps({"user_id": user_id})
    producer.produce(topic=topic, value=value)
    expected.append(value)
remaining = producer.flush(30)
if remaining:
    sys.exit(f"{remaining} messages still queued in the producer after 30 s")

received = []
# --- seed 003, the consumer loop (bounded: it stops once everything has arrived) ---
while True:
    msg = consumer.poll(1.0)
    if msg:
        print(msg.value())
        # --- test: collect, and stop once everything has arrived ---
        if msg.error():
            errors.append(str(msg.error()))
        elif msg.value() != MARKER.encode():
            received.append(msg.value().decode())
    if sorted(received) == sorted(expected):
        break
    if len(received) > len(expected):
        sys.exit(f"received {len(received)} messages for {len(expected)} produced: duplicates")
    if time.monotonic() > deadline:
        missing = sorted(set(expected) - set(received))
        sys.exit(f"received {len(received)} of {len(expected)} messages within {DEADLINE_S} s; "
                 f"missing (first 5) {missing[:5]}; consumer errors {errors[-5:]}")
consumer.close()

print("RESULT " + json.dumps({"produced": len(expected), "received": len(received), "partitions": len(partitions)}))
