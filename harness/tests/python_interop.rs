//! Python clients against a `corelog broker` process: the snippets users write, as
//! the seed course notes show them (kafka-python's producer with a JSON
//! `value_serializer` and string keys; confluent-kafka's producer and a consumer of a
//! group that subscribes and polls), plus an aiokafka producer/consumer-group round
//! trip. The scripts live in `tests/python/` and check what they read themselves;
//! this side checks their exit status and summary, and reads kafka-python's records
//! back with librdkafka. One more script checks the error codes of DescribeConfigs
//! and AlterConfigs, which rust-rdkafka does not report; another keeps a
//! kafka-python group reading and committing on a three-broker cluster while this
//! side SIGKILLs the group's coordinator.
//!
//! The interpreter comes from `CORELOG_TEST_PYTHON`, which `scripts/test.sh` sets to
//! its virtualenv (with `tests/python/requirements.txt` installed). Without it these
//! tests fail and say so: they are part of the suite, never skipped.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{create_replicated_topic, offset_fetch, wait_for_coordinator, ClusterProcesses};
use common::*;

const PYTHON_ENV: &str = "CORELOG_TEST_PYTHON";
/// Longest a script may run; each script gives up by itself well before.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

fn python() -> PathBuf {
    let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| {
        panic!(
            "{PYTHON_ENV} is not set: run the suite with `bash scripts/test.sh`, which creates the Python \
             virtualenv with the clients of harness/tests/python/requirements.txt and sets {PYTHON_ENV} to \
             its interpreter"
        )
    });
    let python = PathBuf::from(python);
    assert!(python.exists(), "{PYTHON_ENV}={} does not exist; run `bash scripts/test.sh`", python.display());
    python
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("python").join(name)
}

/// Runs a script with `args`, asserts it exits 0, and returns its stdout.
fn run_script(python: &Path, name: &str, args: &[&str]) -> String {
    let mut command = Command::new(python);
    command
        .arg(script(name))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_dying_with_parent(&mut command).unwrap_or_else(|e| panic!("starting {name}: {e}"));
    // Drain both pipes on their own threads so a chatty script cannot block.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_timeout(&mut child, SCRIPT_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (out.join().expect("stdout reader"), err.join().expect("stderr reader"));
    let tail =
        |text: &str| text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => {
            panic!("{name} exited with {status}\n--- stderr ---\n{}\n--- stdout ---\n{}", tail(&stderr), tail(&stdout))
        }
        None => panic!(
            "{name} ran past {SCRIPT_TIMEOUT:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            tail(&stderr),
            tail(&stdout)
        ),
    }
}

/// The `RESULT {...}` summary a script prints last.
fn result_line(name: &str, stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{name} printed no RESULT line"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: RESULT is not JSON ({e}): {line}"))
}

#[test]
fn kafka_python_seed_producer_with_json_values_and_string_keys() {
    let _watchdog = Watchdog::new("kafka_python_seed", Duration::from_secs(300));
    let python = python();
    let broker = BrokerProcess::start(BrokerOptions::new("python-kafka-python"));
    let topic = "user-activity-topic";
    block_on(create_topic(&broker, topic, 4, &[]));

    let stdout = run_script(&python, "kafka_python_seed.py", &[&broker.bootstrap(), topic]);
    let result = result_line("kafka_python_seed.py", &stdout);
    assert_eq!(result["sent"], 201, "events the script sent: {result}");
    assert_eq!(result["read"], 201, "events the script read back: {result}");
    assert!(result["partitions"].as_u64() > Some(1), "keyed events all went to one partition: {result}");

    // librdkafka reads the same records at the places kafka-python reported.
    let stored = read_partitions(&broker, topic, 4, Duration::from_secs(60));
    let reported: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON record line"))
        .collect();
    assert_eq!(reported.len(), 201, "record lines the script printed");
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), reported.len(), "records stored in {topic}");
    for line in &reported {
        let partition = line["partition"].as_i64().expect("partition") as i32;
        let offset = line["offset"].as_i64().expect("offset");
        let record = stored[&partition]
            .iter()
            .find(|r| r.offset == offset)
            .unwrap_or_else(|| panic!("no record at {partition}/{offset}"));
        assert_eq!(record.key_text(), line["key"].as_str().expect("key"), "key at {partition}/{offset}");
        assert_eq!(record.value_text(), line["value_json"].as_str().expect("value"), "value at {partition}/{offset}");
        let value: serde_json::Value = serde_json::from_str(&record.value_text()).expect("the value is JSON");
        assert_eq!(value["user_id"].to_string(), record.key_text(), "the key is the user id, as a string");
    }
}

#[test]
fn confluent_kafka_seed_producer_and_group_consumer() {
    let _watchdog = Watchdog::new("confluent_kafka_seed", Duration::from_secs(300));
    let python = python();
    let broker = BrokerProcess::start(BrokerOptions::new("python-confluent-kafka"));
    let topic = "orders";
    block_on(create_topic(&broker, topic, 3, &[]));

    let stdout = run_script(&python, "confluent_kafka_seed.py", &[&broker.bootstrap(), topic]);
    let result = result_line("confluent_kafka_seed.py", &stdout);
    assert_eq!(result["produced"], 101, "messages the seed producer sent: {result}");
    assert_eq!(result["received"], 101, "messages the seed consumer received: {result}");
    assert_eq!(result["partitions"], 3, "partitions the consumer was assigned: {result}");
}

#[test]
fn aiokafka_producer_and_group_consumer_round_trip() {
    let _watchdog = Watchdog::new("aiokafka_round_trip", Duration::from_secs(300));
    let python = python();
    let broker = BrokerProcess::start(BrokerOptions::new("python-aiokafka"));
    let topic = "sensor-readings";
    block_on(create_topic(&broker, topic, 3, &[]));

    let stdout = run_script(&python, "aiokafka_round_trip.py", &[&broker.bootstrap(), topic]);
    let result = result_line("aiokafka_round_trip.py", &stdout);
    assert_eq!(result["produced"], 300, "events aiokafka sent: {result}");
    assert_eq!(result["received"], 300, "events the aiokafka group read: {result}");
    assert!(result["partitions"].as_u64() > Some(1), "keyed events all went to one partition: {result}");
}

#[test]
fn confluent_kafka_admin_reports_config_errors() {
    let _watchdog = Watchdog::new("confluent_kafka_admin_errors", Duration::from_secs(180));
    let python = python();
    let broker = BrokerProcess::start(BrokerOptions::new("python-admin-errors"));
    let topic = "billing";
    block_on(create_topic(&broker, topic, 1, &[]));

    let stdout = run_script(&python, "confluent_kafka_admin_errors.py", &[&broker.bootstrap(), topic]);
    let result = result_line("confluent_kafka_admin_errors.py", &stdout);
    assert_eq!(result["checked"], 6, "admin calls the script checked: {result}");
}

#[test]
fn kafka_python_group_reads_on_through_a_killed_coordinator() {
    let _watchdog = Watchdog::new("kafka_python_group_failover", Duration::from_secs(300));
    let python = python();
    // Sessions expire 6 s after a broker's last heartbeat (see tests/cluster.rs).
    let yaml = "broker_session_timeout_ms: 6000\nbroker_heartbeat_interval_ms: 500\n";
    let mut cluster = ClusterProcesses::start_live("python-group-failover", 3, yaml);
    let (topic, group) = ("payments", "payment-processors");
    create_replicated_topic(&cluster.nodes[0], topic, 3, 3, &[]);
    let bootstrap = cluster.bootstrap();
    let script =
        std::thread::spawn(move || run_script(&python, "kafka_python_group_failover.py", &[&bootstrap, topic, group]));

    // Once the member's first commit is in, SIGKILL the group's coordinator.
    let coordinator = wait_for_coordinator(&cluster.nodes[0], group, None);
    wait_until("the member's first commit", Duration::from_secs(90), || {
        let (error, offsets) = offset_fetch(&cluster.nodes[coordinator as usize], group);
        error == 0 && offsets.iter().any(|(_, _, offset)| *offset > 0)
    });
    cluster.nodes[coordinator as usize].kill();
    let survivor = (0..3).find(|id| *id != coordinator as usize).expect("a survivor");
    let successor = wait_for_coordinator(&cluster.nodes[survivor], group, Some(coordinator));

    let stdout = script.join().expect("the script's thread");
    let result = result_line("kafka_python_group_failover.py", &stdout);
    eprintln!("kafka-python across the coordinator's death (broker {coordinator} -> {successor}): {result}");
    assert_eq!(result["received"], 600, "every event arrived: {result}");
    assert_eq!(result["committed"], 600, "the member committed the end of every partition: {result}");
    // The new coordinator holds those commits.
    let (error, offsets) = offset_fetch(&cluster.nodes[successor as usize], group);
    assert_eq!(error, 0);
    assert_eq!(offsets.iter().map(|(_, _, offset)| offset).sum::<i64>(), 600, "{offsets:?}");
    for (id, node) in cluster.nodes.iter_mut().enumerate() {
        if id != coordinator as usize {
            node.stop();
        }
    }
}

/// confluent-kafka's transactional producer against one broker (the script checks
/// the fencing and the timeout itself): a committed and an aborted transaction, a
/// zombie fenced by a new instance of its transactional.id, a transaction the broker
/// aborts after its transaction.timeout.ms, a timeout above transaction.max.timeout.ms
/// refused; offsets sent to a transaction (AddOffsetsToTxn, TxnOffsetCommit) the
/// group's once it commits, not when it aborts; read_committed sees exactly the
/// committed records, read_uncommitted all.
/// Then the broker is SIGKILLed and restarted: the coordinator reloads the
/// transactional ids from `__transaction_state` (InitProducerId keeps the producer
/// id and bumps the epoch), read_committed still sees exactly the committed records
/// and the group its transactionally committed offsets (replay of the transactional
/// batch and its marker in `__consumer_offsets`).
#[test]
fn confluent_kafka_transactions_commit_abort_fence_timeout_and_reload() {
    let _watchdog = Watchdog::new("confluent_kafka_transactions", Duration::from_secs(400));
    let python = python();
    let mut broker = BrokerProcess::start(BrokerOptions::new("python-confluent-transactions"));
    let topic = "payments";
    block_on(create_topic(&broker, topic, 3, &[]));

    let name = "confluent_kafka_transactions.py";
    let stdout = run_script(&python, name, &[&broker.bootstrap(), topic, "produce"]);
    let result = result_line(name, &stdout);
    eprintln!("{name}: {result}");
    let committed =
        ["after-timeout-1", "committed-0", "committed-1", "committed-2", "offsets-commit-2", "zombie-new-0"];
    assert_eq!(result["read_committed"], serde_json::json!(committed), "{result}");
    let mut everything = vec!["aborted-0", "aborted-1", "aborted-2", "offsets-abort-2", "timed-out-1", "zombie-old-0"];
    everything.extend(committed);
    everything.sort();
    assert_eq!(result["read_uncommitted"], serde_json::json!(everything), "{result}");
    assert_eq!(result["too_long_timeout"], "INVALID_TRANSACTION_TIMEOUT", "{result}");
    assert!(result["zombie_commit"].as_str().is_some_and(|e| e.contains("FENCED")), "{result}");
    // Offsets sent to a transaction: the group's once it commits, not when it aborts.
    assert_eq!(result["offsets_after_commit"], serde_json::json!([5, 7]), "{result}");
    assert_eq!(result["offsets_after_abort"], serde_json::json!([5, 7]), "{result}");

    let (producer_id, epoch) = init_transactional_producer(&broker, "txn-main");
    broker.kill();
    broker.restart();
    let (reloaded_id, reloaded_epoch) = init_transactional_producer(&broker, "txn-main");
    assert_eq!((reloaded_id, reloaded_epoch), (producer_id, epoch + 1), "txn-main after a restart");
    let stdout = run_script(&python, name, &[&broker.bootstrap(), topic, "verify"]);
    let result = result_line(name, &stdout);
    assert_eq!(result["read_committed"], serde_json::json!(committed), "after a restart: {result}");
    assert_eq!(result["offsets"], serde_json::json!([5, 7]), "the group's offsets after a restart: {result}");
}

/// aiokafka's own transactions (its Python implementation of the protocol, not
/// librdkafka's): a commit and an abort, a consume-transform-produce round with the
/// group's offsets sent to a committed transaction and one to an aborted one; a
/// read_committed consumer sees exactly the committed records, a read_uncommitted
/// one sees the aborted ones too, and the group keeps the committed round's offsets.
#[test]
fn aiokafka_transactions_commit_abort_and_send_offsets() {
    let _watchdog = Watchdog::new("aiokafka_transactions", Duration::from_secs(300));
    let python = python();
    let broker = BrokerProcess::start(BrokerOptions::new("python-aiokafka-transactions"));
    let topic = "ledger";
    block_on(create_topic(&broker, topic, 2, &[]));

    let name = "aiokafka_transactions.py";
    let stdout = run_script(&python, name, &[&broker.bootstrap(), topic, "2"]);
    let result = result_line(name, &stdout);
    eprintln!("{name}: {result}");
    let committed = ["committed-0", "committed-1", "copied-committed-0", "copied-committed-1"];
    assert_eq!(result["read_committed"], serde_json::json!(committed), "{result}");
    let mut everything = vec!["aborted-0", "aborted-1", "dropped-copied-committed-0", "dropped-copied-committed-1"];
    everything.extend(committed);
    everything.sort();
    assert_eq!(result["read_uncommitted"], serde_json::json!(everything), "{result}");
    assert_eq!(result["first_round"], serde_json::json!(["committed-0", "committed-1"]), "{result}");
    // Each partition: committed-* at 0 and its marker at 1; the committed round's
    // offsets (1) stand, the aborted round's (5) were dropped with its transaction.
    assert_eq!(result["committed_offsets"], serde_json::json!({"0": 1, "1": 1}), "{result}");
}

/// A raw InitProducerId v1 for `transactional_id`, retried while the coordinator
/// answers a retriable error: its producer id and epoch.
fn init_transactional_producer(broker: &BrokerProcess, transactional_id: &str) -> (i64, i16) {
    use kafka_protocol::messages::{InitProducerIdRequest, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(transactional_id.to_string()))))
        .with_transaction_timeout_ms(60_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = common::raw::RawConnection::open(broker).request(&request, 1);
        match response.error_code {
            0 => return (response.producer_id.0, response.producer_epoch),
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS
            14 | 15 | 51 if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            code => panic!("InitProducerId {transactional_id}: error {code}"),
        }
    }
}

/// A broker SIGKILLed between EndTxn and the markers (deterministically: started
/// with `--test-hold-txn-markers`, it never writes them): confluent-kafka's commit
/// returned, yet nothing is readable committed; restarted without the flag, the
/// coordinator reloads the PrepareCommit transaction from `__transaction_state` and
/// writes its markers, and read_committed reads all three records.
#[test]
fn confluent_kafka_commit_survives_a_kill_between_end_txn_and_the_markers() {
    let _watchdog = Watchdog::new("confluent_kafka_prepared_commit", Duration::from_secs(300));
    let python = python();
    let mut options = BrokerOptions::new("python-confluent-prepared-commit");
    options.extra_args = vec!["--test-hold-txn-markers".to_string()];
    let mut broker = BrokerProcess::start(options);
    let topic = "ledger";
    block_on(create_topic(&broker, topic, 3, &[]));

    let name = "confluent_kafka_transactions.py";
    let result = result_line(name, &run_script(&python, name, &[&broker.bootstrap(), topic, "prepare"]));
    let prepared = serde_json::json!(["prepared-0", "prepared-1", "prepared-2"]);
    assert_eq!(result["read_uncommitted"], prepared, "{result}");
    assert_eq!(result["read_committed"], serde_json::json!([]), "markers held, yet read committed: {result}");
    broker.kill();
    broker.set_extra_args(Vec::new());
    broker.restart();
    let result = result_line(name, &run_script(&python, name, &[&broker.bootstrap(), topic, "prepared"]));
    assert_eq!(result["read_committed"], prepared, "{result}");
}
