//! What is the broker's stays the broker's, against real `corelog broker` processes:
//!
//! - one broker per data directory and per address: a second one exits non-zero
//!   naming the first one's pid (and the address), and the first keeps serving;
//! - the broker's own files live apart from the topics: topics named like them are
//!   created, written by idempotent producers (InitProducerId) and read back across
//!   a restart; a data directory of the old layout is moved into the new one.
//!
//! Metadata and InitProducerId are raw Kafka requests (encoded with the
//! `kafka-protocol` crate).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, MetadataResponse, ProducerId, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::producer::FutureProducer;

/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(240);
/// Longest wait for a refused broker to exit.
const REFUSED_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for any one read, write or connect of a raw connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for produced messages to be acknowledged.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);
/// The meta directory of the data directory (`corelog_engine::data_dir::META_DIR`).
const META_DIR: &str = "corelog+meta";

/// One raw Kafka connection.
struct Connection {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Connection {
    fn open(broker: &BrokerProcess) -> Connection {
        let stream = TcpStream::connect_timeout(&broker.address(), IO_TIMEOUT).expect("connecting to the broker");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        Connection { stream, next_correlation_id: 1 }
    }

    /// Sends `request` at `version` and reads its response.
    fn request<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("corelog-ownership")));
        let mut frame = vec![0u8; 4];
        header.encode(&mut frame, R::header_version(version)).expect("encoding a request header");
        request.encode(&mut frame, version).expect("encoding a request body");
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).expect("sending a request");

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("reading a response size");
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).expect("reading a response");
        let mut rest = frame.as_slice();
        let header = ResponseHeader::decode(&mut rest, R::Response::header_version(version)).expect("a response header");
        assert_eq!(header.correlation_id, correlation_id, "the answer's correlation id");
        R::Response::decode(&mut rest, version).expect("decoding a response")
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata_of(connection: &mut Connection, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]))
        .with_allow_auto_topic_creation(false);
    connection.request(&request, 12)
}

/// A fresh producer id from InitProducerId (what an idempotent producer asks for).
fn init_producer_id(connection: &mut Connection) -> i64 {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = connection.request(&request, 4);
    assert_eq!(response.error_code, 0, "InitProducerId error code");
    response.producer_id.0
}

fn idempotent_producer(broker: &BrokerProcess) -> FutureProducer {
    client_config(broker).set("enable.idempotence", "true").set("acks", "all").create().expect("creating a producer")
}

/// Produces `count` messages `{prefix}-{i}` to partition 0 of `topic` and asserts
/// every one was acknowledged.
fn produce_all(producer: &FutureProducer, topic: &str, prefix: &str, count: usize) {
    let messages: Vec<Outgoing> = (0..count).map(|i| (None, format!("{prefix}-{i}").into_bytes())).collect();
    for (index, outcome) in produce(producer, topic, Some(0), &messages, PRODUCE_TIMEOUT).into_iter().enumerate() {
        if let Err(error) = outcome {
            panic!("message {index} to {topic} was not acknowledged: {error}");
        }
    }
}

/// The values of every record of partition 0 of `topic`, in offset order.
fn values(broker: &BrokerProcess, topic: &str) -> Vec<String> {
    read_partitions(broker, topic, 1, Duration::from_secs(60))[&0].iter().map(Record::value_text).collect()
}

fn expected_values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn a_second_broker_on_the_same_data_directory_exits_naming_the_first_ones_pid() {
    let _watchdog = Watchdog::new("second_broker_same_data_dir", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("ownership-same-dir"));
    let data_dir = broker.data_dir().display().to_string();
    let (status, log) =
        run_broker_expecting_exit(&["--data-dir", &data_dir, "--listen", "127.0.0.1:0", "--cores", "1"], REFUSED_EXIT_TIMEOUT);
    assert!(!status.success(), "the second broker exited with {status}\n{log}");
    assert!(log.contains(&format!("pid {}", broker.pid())), "the error names the first broker's pid:\n{log}");
    assert!(log.contains(&data_dir), "the error names the data directory:\n{log}");

    // The first broker never noticed.
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "after-the-refusal", "kept", 5);
    assert_eq!(values(&broker, "after-the-refusal"), expected_values("kept", 5));
}

#[test]
fn a_second_broker_on_the_same_address_exits_naming_the_address() {
    let _watchdog = Watchdog::new("second_broker_same_address", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("ownership-same-address"));
    let other_dir = broker.data_dir().with_file_name("other-data");
    let address = broker.address().to_string();
    let (status, log) = run_broker_expecting_exit(
        &["--data-dir", &other_dir.display().to_string(), "--listen", &address, "--cores", "2"],
        REFUSED_EXIT_TIMEOUT,
    );
    assert!(!status.success(), "the second broker exited with {status}\n{log}");
    assert!(log.contains(&format!("listening on {address}")), "the error names the address:\n{log}");
    assert!(log.contains(&format!("pid {}", broker.pid())), "the error names the first broker's pid:\n{log}");

    // New connections all reach the first broker: with a second broker in the port's
    // reuseport group, about half of them would land on the other cluster, which
    // does not know this topic.
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "one-cluster", "kept", 5);
    for _ in 0..20 {
        let metadata = metadata_of(&mut Connection::open(&broker), "one-cluster");
        assert_eq!(metadata.topics.len(), 1);
        assert_eq!(metadata.topics[0].error_code, 0, "a fresh connection reached a broker without the topic");
    }
    assert_eq!(values(&broker, "one-cluster"), expected_values("kept", 5));
}

/// Names a topic may have that the broker's own files have or had.
const BROKER_FILE_NAMES: &[&str] = &["producer-id-block", "cluster-id", "lock", ".io-probe-0", ".io-probe-1", "corelog-meta"];

#[test]
fn topics_named_like_the_brokers_files_work_across_a_restart_and_init_producer_id_too() {
    let _watchdog = Watchdog::new("topics_named_like_broker_files", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-file-names").durable());
    for topic in BROKER_FILE_NAMES {
        block_on(create_topic(&broker, topic, 1, &[]));
    }
    let producer = idempotent_producer(&broker);
    for topic in BROKER_FILE_NAMES {
        produce_all(&producer, topic, "before", 3);
    }
    drop(producer);
    let first_id = init_producer_id(&mut Connection::open(&broker));
    for topic in BROKER_FILE_NAMES {
        assert!(broker.data_dir().join(topic).join("0").is_dir(), "{topic} has a partition directory");
    }

    broker.stop();
    broker.restart();
    let next_id = init_producer_id(&mut Connection::open(&broker));
    assert!(next_id > first_id, "InitProducerId after the restart gave {next_id}, not past {first_id}");
    let producer = idempotent_producer(&broker);
    for topic in BROKER_FILE_NAMES {
        produce_all(&producer, topic, "after", 3);
    }
    for topic in BROKER_FILE_NAMES {
        let mut expected = expected_values("before", 3);
        expected.extend(expected_values("after", 3));
        assert_eq!(values(&broker, topic), expected, "records of {topic}");
    }
}

#[test]
fn a_data_directory_of_the_old_layout_keeps_its_cluster_id_and_producer_ids() {
    let _watchdog = Watchdog::new("old_layout", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-old-layout"));
    block_on(create_topic(&broker, "ledger", 1, &[]));
    broker.stop();
    // Put the directory back into the old layout: the broker's files at the root,
    // no meta directory, with a cluster id and a reserved block this test chose.
    let root = broker.data_dir().to_path_buf();
    std::fs::remove_dir_all(root.join(META_DIR)).expect("removing the meta directory");
    std::fs::write(root.join("cluster-id"), "old-layout-cluster\n").expect("writing cluster-id");
    std::fs::write(root.join("producer-id-block"), "7000").expect("writing producer-id-block");
    std::fs::write(root.join(".io-probe-0"), [0u8; 4096]).expect("writing a leftover probe file");

    broker.restart();
    let mut connection = Connection::open(&broker);
    let metadata = metadata_of(&mut connection, "ledger");
    assert_eq!(metadata.cluster_id.as_ref().map(|id| id.to_string()).as_deref(), Some("old-layout-cluster"));
    assert_eq!(metadata.topics[0].error_code, 0, "the topic survived the move");
    let id = init_producer_id(&mut connection);
    assert!(id >= 7000, "InitProducerId gave {id}, below the block reserved in the old layout");
    for name in ["cluster-id", "producer-id-block", ".io-probe-0"] {
        assert!(!root.join(name).exists(), "{name} is still at the data directory's root");
    }
    assert!(root.join(META_DIR).join("producer-id-block").is_file(), "producer-id-block moved into {META_DIR}");
}
