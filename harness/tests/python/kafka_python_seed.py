"""The kafka-python producer of the course notes (seed 000), run against corelog.

The seed's snippet is kept as written but for the bootstrap address and the topic
name; around it, the test sends more events the same way and reads everything back.

Usage: kafka_python_seed.py BOOTSTRAP TOPIC
Prints one JSON line per record read back ({"partition", "offset", "key",
"value_json"}) and, last, a line `RESULT {...}`. Exits non-zero with a message on any
failure; gives up after DEADLINE_S.
"""

import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

DEADLINE_S = 60
bootstrap, topic = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + DEADLINE_S

# --- seed 000, as written (bootstrap address and topic name adapted) ---
producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    value_serializer=lambda v: json.dumps(v).encode('utf-8') # Serialize to JSON
)

user_event = {"user_id": 123, "action": "purchase", "item_id": "sku_456"}
producer.send(topic, key=str(user_event['user_id']).encode('utf-8'), value=user_event)
# --- end of seed 000 ---

# More events the same way: 40 users, 5 actions each, so that keys spread over the
# partitions and each key has several events.
events = [user_event]
for user_id in range(40):
    for action in ["view", "add_to_cart", "purchase", "review", "return"]:
        user_event = {"user_id": user_id, "action": action, "item_id": f"sku_{user_id * 7 % 100}"}
        producer.send(topic, key=str(user_event['user_id']).encode('utf-8'), value=user_event)
        events.append(user_event)
producer.flush(timeout=60)
producer.close(timeout=10)

# Read everything back, without a consumer group, from the start of each partition.
consumer = KafkaConsumer(
    bootstrap_servers=bootstrap,
    value_deserializer=lambda b: json.loads(b.decode('utf-8')),
    enable_auto_commit=False,
)
partitions = consumer.partitions_for_topic(topic)
if not partitions:
    sys.exit(f"no partitions known for {topic}")
assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
consumer.assign(assignment)
consumer.seek_to_beginning(*assignment)
records = []
while len(records) < len(events):
    if time.monotonic() > deadline:
        sys.exit(f"read {len(records)} of {len(events)} events back within {DEADLINE_S} s")
    for batch in consumer.poll(timeout_ms=500).values():
        records.extend(batch)
consumer.close()

# Exactly the events sent, each once, each under its user's key; same key, same partition.
def identity(event):
    return json.dumps(event, sort_keys=True)

sent = sorted(identity(e) for e in events)
read = sorted(identity(r.value) for r in records)
if read != sent:
    sys.exit(f"read back {len(read)} events that differ from the {len(sent)} sent")
partition_of_key = {}
for r in records:
    key = r.key.decode('utf-8')
    if key != str(r.value["user_id"]):
        sys.exit(f"record at {r.partition}/{r.offset} has key {key!r} for user {r.value['user_id']}")
    if partition_of_key.setdefault(key, r.partition) != r.partition:
        sys.exit(f"key {key!r} found on partitions {partition_of_key[key]} and {r.partition}")

for r in records:
    print(json.dumps({"partition": r.partition, "offset": r.offset, "key": r.key.decode('utf-8'),
                      "value_json": json.dumps(r.value)}))
print("RESULT " + json.dumps({"sent": len(events), "read": len(records),
                              "partitions": len(set(r.partition for r in records))}))
