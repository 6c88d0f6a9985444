"""The error codes of DescribeConfigs and AlterConfigs, through confluent-kafka's
AdminClient (rust-rdkafka 0.39 reports every resource of those answers as a success,
so the Rust admin tests can only check their effects).

Usage: confluent_kafka_admin_errors.py BOOTSTRAP TOPIC   (TOPIC exists)
Prints a last line `RESULT {...}`. Exits non-zero with a message on any failure.
"""

import json
import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
checked = []


def error_code(future):
    """The Kafka error code a resource's result carries (None for success)."""
    try:
        future.result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0].code()


def expect(what, future, code):
    got = error_code(future)
    if got != code:
        sys.exit(f"{what}: expected {KafkaError(code).name() if code else 'success'}, got "
                 f"{KafkaError(got).name() if got is not None else 'success'}")
    checked.append(what)


def only(futures):
    (future,) = futures.values()
    return future


expect("DescribeConfigs of a missing topic",
       only(admin.describe_configs([ConfigResource("topic", "no-such-topic")])),
       KafkaError.UNKNOWN_TOPIC_OR_PART)
expect("DescribeConfigs of an existing topic",
       only(admin.describe_configs([ConfigResource("topic", topic)])), None)
expect("AlterConfigs with retention.ms=-7",
       only(admin.alter_configs([ConfigResource("topic", topic, set_config={"retention.ms": "-7"})])),
       KafkaError.INVALID_CONFIG)
expect("AlterConfigs with an unknown key",
       only(admin.alter_configs([ConfigResource("topic", topic, set_config={"no.such.key": "1"})])),
       KafkaError.INVALID_CONFIG)
expect("AlterConfigs of a missing topic",
       only(admin.alter_configs([ConfigResource("topic", "no-such-topic", set_config={"retention.ms": "1"})])),
       KafkaError.UNKNOWN_TOPIC_OR_PART)
expect("AlterConfigs with retention.ms=60000",
       only(admin.alter_configs([ConfigResource("topic", topic, set_config={"retention.ms": "60000"})])), None)
configs = only(admin.describe_configs([ConfigResource("topic", topic)])).result(timeout=30)
if configs["retention.ms"].value != "60000":
    sys.exit(f"retention.ms after AlterConfigs: {configs['retention.ms'].value}")

print("RESULT " + json.dumps({"checked": len(checked)}))
