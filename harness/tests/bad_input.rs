//! Bad input never hurts anyone else: a real `corelog broker` process gets oversized,
//! cut and garbage frames, unknown API keys, unsupported versions, invalid topic
//! names, absurd partition counts and more connections than it allows, each on its own
//! TCP connection. After each, the offending connection is closed (or answered with an
//! error code, for a well-formed request that asks for something invalid), a
//! connection opened before it still works, a fresh connection gets well-formed
//! ApiVersions and Metadata answers, and a closed connection left exactly one line in
//! the broker's log, naming the peer and the reason.
//!
//! Requests are encoded with the `kafka-protocol` crate and written with `std::net`,
//! so the bytes on the wire are exactly the ones the test means. Every read and write
//! has a timeout, so a broker that stops answering fails the test with a message
//! instead of hanging it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw::{request_frame, RawConnection as Connection, IO_TIMEOUT};
use common::*;
use corelog_broker::kafka::handlers;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
    FetchResponse, MetadataRequest, MetadataResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

/// Longest wait for the broker's log line about a closed connection.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(180);
/// The request size limit the tests configure (the default is 100 MiB).
const REQUEST_BYTES_MAX: usize = 1 << 20;

/// The YAML every broker of these tests starts with.
fn config_yaml(extra: &str) -> String {
    format!("max_request_bytes: {REQUEST_BYTES_MAX}\n{extra}")
}

fn start_broker(name: &str, extra_yaml: &str) -> BrokerProcess {
    let mut options = BrokerOptions::new(&format!("bad-input-{name}"));
    options.config_yaml = Some(config_yaml(extra_yaml));
    BrokerProcess::start(options)
}

/// One raw Kafka connection.
fn api_versions(connection: &mut Connection) -> ApiVersionsResponse {
    let response = connection.request(&ApiVersionsRequest::default(), 3);
    assert_eq!(response.error_code, 0, "{}: ApiVersions v3 error code", connection.peer);
    assert!(
        response.api_keys.iter().any(|k| k.api_key == ApiKey::Metadata as i16),
        "ApiVersions does not list Metadata"
    );
    response
}

/// A fresh connection gets well-formed ApiVersions and Metadata answers: the broker
/// is alive and serving after whatever the test did.
fn assert_serves_fresh_clients(broker: &BrokerProcess, after: &str) {
    assert_serves(broker, &mut Connection::open(broker), after);
}

fn assert_serves(broker: &BrokerProcess, connection: &mut Connection, after: &str) {
    api_versions(connection);
    let metadata: MetadataResponse = connection.request(&MetadataRequest::default().with_topics(None), 12);
    assert_eq!(metadata.brokers.len(), 1, "after {after}: Metadata lists {} brokers", metadata.brokers.len());
    assert_eq!(
        metadata.brokers[0].port,
        i32::from(broker.address().port()),
        "after {after}: Metadata advertises another port"
    );
}

/// The broker's whole log. `BrokerProcess` shows only its tail, but names the file
/// in the tail's first line; the tail itself is the fallback.
fn broker_log(broker: &BrokerProcess) -> String {
    let tail = broker.log_tail();
    let path = tail
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("--- broker log tail ("))
        .and_then(|line| line.strip_suffix(") ---"));
    path.and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or(tail)
}

/// The last lines of the broker's log, without backtrace frames (indented lines),
/// which would hide what happened before a crash.
fn log_summary(broker: &BrokerProcess) -> String {
    let log = broker_log(broker);
    let lines: Vec<&str> = log.lines().filter(|line| !line.starts_with(' ')).collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Lines of the broker's log that are about the connection from `peer`.
fn log_lines_about(broker: &BrokerProcess, peer: &str) -> Vec<String> {
    // Log lines name the peer as `ip:port` followed by a colon.
    let needle = format!("{peer}:");
    broker_log(broker).lines().filter(|line| line.contains(&needle)).map(str::to_string).collect()
}

/// The broker logged exactly one line about `connection`, and it says `reason`.
fn assert_logged_once(broker: &BrokerProcess, connection: &Connection, reason: &str) {
    wait_until(&format!("a log line about {}", connection.peer), LOG_TIMEOUT, || {
        !log_lines_about(broker, &connection.peer).is_empty()
    });
    let lines = log_lines_about(broker, &connection.peer);
    assert_eq!(lines.len(), 1, "log lines about {}: {lines:#?}", connection.peer);
    assert!(lines[0].contains(reason), "the log line about {} does not say {reason:?}: {}", connection.peer, lines[0]);
}

/// Sends `bytes` on a fresh connection (then optionally closes our side), expects
/// the broker to close it with one log line saying `reason`, and checks that
/// `bystander`, opened earlier, and a fresh connection are still served.
fn expect_rejected(
    broker: &BrokerProcess,
    bystander: &mut Connection,
    what: &str,
    bytes: &[u8],
    close_after: bool,
    reason: &str,
) {
    let mut connection = Connection::open(broker);
    connection.send_raw(bytes);
    if close_after {
        connection.stream.shutdown(Shutdown::Write).expect("shutting down our side");
    }
    connection.expect_closed(what);
    let mut fresh = Connection::open(broker);
    assert!(
        is_answered(&mut fresh),
        "after {what}, a fresh connection was closed unanswered: did the broker die? Its last log lines:\n{}",
        log_summary(broker)
    );
    assert_serves(broker, &mut fresh, what);
    api_versions(bystander);
    assert_logged_once(broker, &connection, reason);
}

#[test]
fn an_oversized_frame_closes_only_its_connection() {
    let _watchdog = Watchdog::new("oversized_frame", TEST_BOUND);
    let broker = start_broker("oversized", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    // A size one byte over the limit, followed by a little of the promised body: the
    // broker refuses on the size alone, without waiting for (or buffering) the rest.
    let mut bytes = ((REQUEST_BYTES_MAX + 1) as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    expect_rejected(
        &broker,
        &mut bystander,
        "a frame 1 byte over the limit",
        &bytes,
        false,
        "exceeds the maximum request size",
    );
    expect_rejected(
        &broker,
        &mut bystander,
        "a frame of i32::MAX bytes",
        &i32::MAX.to_be_bytes(),
        false,
        "exceeds the maximum request size",
    );
}

#[test]
fn a_frame_cut_short_then_closed_is_logged_and_dropped() {
    let _watchdog = Watchdog::new("truncated_frame", TEST_BOUND);
    let broker = start_broker("truncated", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    let whole = request_frame(ApiKey::Metadata as i16, 12, 1, |frame| {
        MetadataRequest::default().with_topics(None).encode(frame, 12)
    });
    let cut = &whole[..whole.len() / 2];
    expect_rejected(
        &broker,
        &mut bystander,
        "half a Metadata frame, then a close",
        cut,
        true,
        "closed in the middle of a frame",
    );
    expect_rejected(
        &broker,
        &mut bystander,
        "two bytes of a size prefix, then a close",
        &whole[..2],
        true,
        "closed in the middle of a frame",
    );
}

#[test]
fn garbage_bytes_close_only_their_connection() {
    let _watchdog = Watchdog::new("garbage", TEST_BOUND);
    let broker = start_broker("garbage", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    // What really reaches a Kafka port by mistake: an HTTP request and a TLS
    // ClientHello (their first 4 bytes read as sizes of 1.1 GB and 369 MB).
    let http = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    expect_rejected(&broker, &mut bystander, "an HTTP request", http, false, "exceeds the maximum request size");
    let client_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x5a, 0x5a];
    expect_rejected(
        &broker,
        &mut bystander,
        "a TLS ClientHello",
        &client_hello,
        false,
        "exceeds the maximum request size",
    );
    expect_rejected(
        &broker,
        &mut bystander,
        "a negative frame size",
        &[0xff, 0xff, 0xff, 0xfe, 1, 2, 3],
        false,
        "is negative",
    );
    expect_rejected(&broker, &mut bystander, "an empty frame", &[0, 0, 0, 0], false, "too short for a request header");
    // A well-framed request whose header is all ones: API key -1.
    let mut ones = 64i32.to_be_bytes().to_vec();
    ones.extend_from_slice(&[0xff; 64]);
    expect_rejected(&broker, &mut bystander, "a frame of 0xff bytes", &ones, false, "unknown API key -1");
    // A served API and version whose body is not that request.
    let mut wrong_body = request_frame(ApiKey::CreateTopics as i16, 7, 9, |_| Ok(()));
    wrong_body.extend_from_slice(b"not a CreateTopics body");
    let size = (wrong_body.len() - 4) as i32;
    wrong_body[..4].copy_from_slice(&size.to_be_bytes());
    expect_rejected(
        &broker,
        &mut bystander,
        "a CreateTopics v7 header with a text body",
        &wrong_body,
        false,
        "malformed CreateTopics v7 request",
    );
}

#[test]
fn an_unknown_api_key_closes_the_connection() {
    let _watchdog = Watchdog::new("unknown_api_key", TEST_BOUND);
    let broker = start_broker("unknown-key", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    let unknown = request_frame(9999, 0, 1, |_| Ok(()));
    expect_rejected(&broker, &mut bystander, "API key 9999", &unknown, false, "unknown API key 9999");
    // A real Kafka API that a single broker never serves (controller-bound).
    assert!(handlers::versions(ApiKey::Envelope).is_none(), "this test assumes Envelope is not served");
    let envelope = request_frame(ApiKey::Envelope as i16, 0, 1, |_| Ok(()));
    expect_rejected(
        &broker,
        &mut bystander,
        "Envelope",
        &envelope,
        false,
        &format!("unknown API key {}", ApiKey::Envelope as i16),
    );
}

#[test]
fn an_unsupported_version_closes_the_connection_except_for_api_versions() {
    let _watchdog = Watchdog::new("unsupported_version", TEST_BOUND);
    let broker = start_broker("unsupported-version", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    let metadata_v99 =
        request_frame(ApiKey::Metadata as i16, 99, 1, |frame| MetadataRequest::default().encode(frame, 12));
    expect_rejected(&broker, &mut bystander, "Metadata v99", &metadata_v99, false, "Metadata v99 is not supported");
    let produce_v1 = request_frame(ApiKey::Produce as i16, 1, 1, |_| Ok(()));
    expect_rejected(
        &broker,
        &mut bystander,
        "Produce v1 (message sets)",
        &produce_v1,
        false,
        "Produce v1 is not supported",
    );

    // ApiVersions at a version from the future is answered at v0 with
    // UNSUPPORTED_VERSION and the full list (KIP-511), and the connection stays open
    // for the client to ask again at a version both speak.
    let mut connection = Connection::open(&broker);
    let frame =
        request_frame(ApiKey::ApiVersions as i16, 99, 42, |frame| ApiVersionsRequest::default().encode(frame, 3));
    connection.send_raw(&frame);
    let answer = connection.receive_frame("ApiVersions v99");
    let mut rest = answer.as_slice();
    let header = ResponseHeader::decode(&mut rest, 0).expect("a v0 response header");
    assert_eq!(header.correlation_id, 42, "correlation id of the answer to ApiVersions v99");
    let response = ApiVersionsResponse::decode(&mut rest, 0).expect("an ApiVersions v0 response");
    assert!(rest.is_empty(), "{} bytes after the ApiVersions v0 response", rest.len());
    assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code());
    let listed: BTreeSet<(i16, i16, i16)> =
        response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
    let served: BTreeSet<(i16, i16, i16)> = handlers::API_KEYS
        .iter()
        .map(|&key| {
            let versions = handlers::versions(key).expect("a served key has versions");
            // Produce is advertised from v0 (see handlers::api_versions).
            let min = if key == ApiKey::Produce { 0 } else { versions.min };
            (key as i16, min, versions.max)
        })
        .collect();
    assert_eq!(listed, served, "the API list in the answer to ApiVersions v99");
    api_versions(&mut connection);
    assert!(
        log_lines_about(&broker, &connection.peer).is_empty(),
        "ApiVersions v99 is a normal negotiation, yet was logged"
    );
    assert_serves_fresh_clients(&broker, "ApiVersions v99");
}

fn create_topics(
    connection: &mut Connection,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> CreateTopicsResponse {
    let request =
        CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(30_000).with_validate_only(validate_only);
    connection.request(&request, 7)
}

fn creatable(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

/// Names of the entries of `dir`.
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn invalid_topic_names_are_refused_and_nothing_is_created_outside_the_data_dir() {
    let _watchdog = Watchdog::new("invalid_topic_names", TEST_BOUND);
    let broker = start_broker("invalid-names", "");
    let data_dir = broker.data_dir().to_path_buf();
    let root = data_dir.parent().expect("the data directory has a parent").to_path_buf();
    let (data_before, root_before) = (entries(&data_dir), entries(&root));

    let long = "a".repeat(250);
    let names = ["../x", long.as_str(), ".", "..", "a/b", "/tmp/corelog-escape", "x\u{0}y", ""];
    let mut connection = Connection::open(&broker);
    for validate_only in [true, false] {
        let topics = names.iter().map(|name| creatable(name, 1)).collect();
        let response = create_topics(&mut connection, topics, validate_only);
        assert_eq!(response.topics.len(), names.len(), "CreateTopics answers every topic");
        for (name, result) in names.iter().zip(&response.topics) {
            assert_eq!(result.name.0.as_str(), *name, "CreateTopics answers in request order");
            assert_eq!(
                result.error_code,
                ResponseError::InvalidTopicException.code(),
                "CreateTopics (validate_only {validate_only}) of {name:?}: {:?}",
                result.error_message
            );
        }
    }
    // Metadata for the same names, with auto-creation allowed: refused, not created.
    let topics = names
        .iter()
        .map(|name| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.to_string())))))
        .collect();
    let metadata: MetadataResponse = connection
        .request(&MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(true), 12);
    assert_eq!(metadata.topics.len(), names.len(), "Metadata answers every topic");
    for (name, topic) in names.iter().zip(&metadata.topics) {
        assert_eq!(topic.error_code, ResponseError::InvalidTopicException.code(), "Metadata of {name:?}");
        assert!(topic.partitions.is_empty(), "Metadata of {name:?} lists partitions");
    }
    // The connection stays open: these are well-formed requests for invalid things.
    api_versions(&mut connection);
    assert_serves_fresh_clients(&broker, "invalid topic names");
    assert_eq!(entries(&data_dir), data_before, "entries of the data directory {}", data_dir.display());
    assert_eq!(entries(&root), root_before, "entries beside the data directory, in {}", root.display());
    assert!(!Path::new("/tmp/corelog-escape").exists(), "a topic name created /tmp/corelog-escape");
    let listed: MetadataResponse = connection.request(&MetadataRequest::default().with_topics(None), 12);
    let listed: Vec<String> = listed.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
    assert!(
        listed.iter().all(|name| name.starts_with("__")),
        "topics exist after only invalid names were asked for: {listed:?}"
    );
}

#[test]
fn absurd_partition_counts_are_refused_with_an_error_code() {
    let _watchdog = Watchdog::new("absurd_partitions", TEST_BOUND);
    let broker = start_broker("absurd-partitions", "");
    let data_before = entries(broker.data_dir());
    let mut connection = Connection::open(&broker);
    for validate_only in [true, false] {
        for partitions in [1_000_000_000, i32::MAX, 0, -2, i32::MIN] {
            let response = create_topics(&mut connection, vec![creatable("huge", partitions)], validate_only);
            let result = &response.topics[0];
            assert_eq!(
                result.error_code,
                ResponseError::InvalidPartitions.code(),
                "CreateTopics (validate_only {validate_only}) with {partitions} partitions: {:?}",
                result.error_message
            );
        }
    }
    api_versions(&mut connection);
    assert_serves_fresh_clients(&broker, "absurd partition counts");
    assert_eq!(entries(broker.data_dir()), data_before, "entries of the data directory after refused CreateTopics");
    // A sane count still works on the same connection.
    let response = create_topics(&mut connection, vec![creatable("sane", 3)], false);
    assert_eq!(
        response.topics[0].error_code, 0,
        "CreateTopics with 3 partitions: {:?}",
        response.topics[0].error_message
    );
}

#[test]
fn a_connection_flood_past_max_connections_closes_only_the_extra_connections() {
    const CONNECTIONS_MAX: usize = 4;
    const EXTRA_CONNECTIONS: usize = 6;
    let _watchdog = Watchdog::new("connection_flood", TEST_BOUND);
    let broker = start_broker("flood", &format!("max_connections: {CONNECTIONS_MAX}\n"));

    // An answered request proves the broker admitted the connection (the kernel
    // completes the TCP handshake before the broker decides).
    let mut admitted: Vec<Connection> = (0..CONNECTIONS_MAX).map(|_| Connection::open(&broker)).collect();
    for connection in &mut admitted {
        api_versions(connection);
    }
    let mut extra: Vec<Connection> = (0..EXTRA_CONNECTIONS).map(|_| Connection::open(&broker)).collect();
    for connection in &mut extra {
        connection.expect_closed(&format!("connecting beyond max_connections {CONNECTIONS_MAX}"));
    }
    for connection in &mut admitted {
        api_versions(connection);
        let metadata: MetadataResponse = connection.request(&MetadataRequest::default().with_topics(None), 12);
        assert_eq!(metadata.brokers.len(), 1, "Metadata on an admitted connection during the flood");
    }
    for connection in &extra {
        assert_logged_once(&broker, connection, &format!("{CONNECTIONS_MAX} connections already open"));
    }

    // Closing one admitted connection frees its place for a new client; the broker
    // counts the close when it notices it, so the new client may be refused a few
    // times first.
    drop(admitted.pop());
    let mut fresh = None;
    wait_until("a fresh connection to be admitted after one closed", Duration::from_secs(30), || {
        let mut connection = Connection::open(&broker);
        if is_answered(&mut connection) {
            fresh = Some(connection);
        }
        fresh.is_some()
    });
    let mut fresh = fresh.expect("admitted");
    assert_serves(&broker, &mut fresh, "a connection flood");
    for connection in &mut admitted {
        api_versions(connection);
    }
}

/// Whether ApiVersions gets an answer on `connection`, or the broker closes it.
fn is_answered(connection: &mut Connection) -> bool {
    let frame = request_frame(ApiKey::ApiVersions as i16, 3, 1, |frame| ApiVersionsRequest::default().encode(frame, 3));
    if connection.stream.write_all(&frame).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    match connection.stream.read_exact(&mut size) {
        Ok(()) => {
            let mut rest = vec![0u8; i32::from_be_bytes(size).clamp(0, REQUEST_BYTES_MAX as i32) as usize];
            connection
                .stream
                .read_exact(&mut rest)
                .unwrap_or_else(|e| panic!("{}: reading an ApiVersions answer: {e}", connection.peer));
            true
        }
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) =>
        {
            false
        }
        Err(error) => panic!("{}: waiting for an answer or a close: {error}", connection.peer),
    }
}

/// What the garbage sprayer sends, one payload per connection, in turn, with what
/// the broker's log line about that connection says.
fn garbage_payloads() -> Vec<(Vec<u8>, &'static str)> {
    let mut oversized = ((REQUEST_BYTES_MAX + 1) as i32).to_be_bytes().to_vec();
    oversized.extend_from_slice(b"more to come");
    let mut ones = 32i32.to_be_bytes().to_vec();
    ones.extend_from_slice(&[0xff; 32]);
    let mut unsupported = request_frame(ApiKey::Fetch as i16, 99, 1, |_| Ok(()));
    unsupported.extend_from_slice(&[0; 16]);
    let size = (unsupported.len() - 4) as i32;
    unsupported[..4].copy_from_slice(&size.to_be_bytes());
    vec![
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "exceeds the maximum request size"),
        (oversized, "exceeds the maximum request size"),
        (ones, "unknown API key -1"),
        (vec![0xff, 0xff, 0xff, 0xff], "is negative"),
        (unsupported, "Fetch v99 is not supported"),
        (vec![0, 0, 0, 3, 0, 1, 2], "too short for a request header"),
    ]
}

#[test]
fn a_garbage_sending_connection_beside_a_real_producer_does_not_disturb_the_producer() {
    const TOPIC: &str = "beside-garbage";
    const PARTITIONS: i32 = 3;
    const MESSAGES: usize = 3_000;
    let _watchdog = Watchdog::new("garbage_beside_producer", TEST_BOUND);
    // The stalled connection below must outlast the run: its read deadline is
    // pushed far out (the deadline itself is tested on its own below).
    let broker = start_broker("beside-producer", "request_read_timeout_ms: 600000\n");
    block_on(create_topic(&broker, TOPIC, PARTITIONS, &[]));

    // A connection that sends most of a frame and then nothing, for the whole run: a
    // stalled client must not hold up the others of its shard.
    let mut stalled = Connection::open(&broker);
    let whole = request_frame(ApiKey::Metadata as i16, 12, 1, |frame| {
        MetadataRequest::default().with_topics(None).encode(frame, 12)
    });
    stalled.send_raw(&whole[..whole.len() - 3]);

    // Connection after connection sends garbage and waits to be closed, from before
    // the first message is produced (every kind of garbage has been sent once) until
    // after the last is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let address = broker.address();
    let sprayer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let payloads = garbage_payloads();
            let mut started_tx = Some(started_tx);
            let mut sent: Vec<(String, &'static str)> = Vec::new();
            for (payload, reason) in payloads.iter().cycle() {
                let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT).expect("connecting the garbage sprayer");
                let mut connection = Connection::from_stream(stream);
                connection.send_raw(payload);
                connection.expect_closed("garbage beside a producer");
                sent.push((connection.peer, reason));
                if sent.len() == payloads.len() {
                    if let Some(tx) = started_tx.take() {
                        tx.send(()).expect("the test waits for the sprayer to start");
                    }
                }
                if started_tx.is_none() && stop.load(Ordering::Relaxed) {
                    return sent;
                }
            }
            unreachable!("cycle() never ends")
        })
    };
    started
        .recv_timeout(IO_TIMEOUT)
        .expect("the garbage sprayer's first round of connections to be closed by the broker");

    let producer: rdkafka::producer::FutureProducer = client_config(&broker)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "2")
        .create()
        .expect("creating a producer");
    let messages: Vec<Outgoing> = (0..MESSAGES)
        .map(|i| (Some(format!("key-{}", i % 17).into_bytes()), format!("value-{i}").into_bytes()))
        .collect();
    let outcomes = produce(&producer, TOPIC, None, &messages, Duration::from_secs(90));
    let acknowledged = expect_all_acknowledged(TOPIC, &outcomes);
    stop.store(true, Ordering::Relaxed);
    let sprayed = sprayer.join().expect("the garbage sprayer panicked");

    // Every acknowledged message is where the broker said, with its value.
    let records = read_partitions(&broker, TOPIC, PARTITIONS, Duration::from_secs(60));
    let total: usize = records.values().map(Vec::len).sum();
    assert_eq!(total, MESSAGES, "records read back from {TOPIC}");
    for (index, (partition, offset)) in acknowledged.iter().enumerate() {
        let record = records[partition]
            .iter()
            .find(|r| r.offset == *offset)
            .unwrap_or_else(|| panic!("message {index}: no record at {partition}/{offset}"));
        assert_eq!(record.value_text(), format!("value-{index}"), "message {index} at {partition}/{offset}");
    }

    // The stalled connection was held open the whole time, and still is.
    stalled.stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
    let mut buffer = [0u8; 1];
    match stalled.stream.read(&mut buffer) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the stalled connection was not left waiting: {other:?}"),
    }
    assert_serves_fresh_clients(&broker, "garbage beside a producer");

    // One log line per garbage connection, with its reason. (A port may serve
    // several connections of the run, one after the other.)
    let mut reasons_by_peer: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (peer, reason) in &sprayed {
        reasons_by_peer.entry(peer.clone()).or_default().push(reason);
    }
    for (peer, reasons) in &reasons_by_peer {
        let lines = log_lines_about(&broker, peer);
        assert_eq!(
            lines.len(),
            reasons.len(),
            "log lines about {peer}, which sent garbage {} times: {lines:#?}",
            reasons.len()
        );
        for reason in reasons {
            assert!(
                lines.iter().any(|line| line.contains(reason)),
                "no log line about {peer} says {reason:?}: {lines:#?}"
            );
        }
    }
    assert!(log_lines_about(&broker, &stalled.peer).is_empty(), "the stalled connection was logged as bad");
}

#[test]
fn a_request_declaring_two_billion_elements_closes_only_its_connection() {
    let _watchdog = Watchdog::new("huge_array_count", TEST_BOUND);
    let broker = start_broker("huge-array", "");
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    // Metadata v0 whose topic array claims i32::MAX entries and then ends: 4 bytes
    // of body that must not turn into a 150 GB allocation (which would abort the
    // broker and with it every client).
    let frame = request_frame(ApiKey::Metadata as i16, 0, 1, |frame| {
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        Ok(())
    });
    expect_rejected(
        &broker,
        &mut bystander,
        "Metadata v0 with an i32::MAX-element topic array",
        &frame,
        false,
        "malformed Metadata v0 request",
    );
}

// Hostile clients that hold connections instead of sending bad bytes: idle ones,
// ones trickling a request a byte at a time, and many from one address. Each bound
// closes only the connections that cross it, counts them in the broker's connection
// stats (logged when it stops) and leaves the broker serving everyone else.

/// The broker's connection stats, from the line it logs when it stops.
fn connection_stats_at_stop(broker: &mut BrokerProcess) -> BTreeMap<String, u64> {
    broker.stop();
    let log = broker_log(broker);
    let line = log
        .lines()
        .rev()
        .find_map(|line| line.split_once("connection stats: ").map(|(_, stats)| stats.to_string()))
        .unwrap_or_else(|| panic!("no connection stats in the log of a stopped broker:\n{}", log_summary(broker)));
    line.split_whitespace()
        .map(|field| {
            let (name, value) = field.split_once('=').unwrap_or_else(|| panic!("stats field {field:?}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("stats field {field:?}")))
        })
        .collect()
}

/// Blocks until the broker closes `stream` (or `bound` passes: then fails); how
/// long that took.
fn wait_closed(stream: &TcpStream, what: &str, bound: Duration) -> Duration {
    let start = std::time::Instant::now();
    let mut stream = stream.try_clone().expect("cloning a stream");
    stream.set_read_timeout(Some(bound)).expect("read timeout");
    let mut buffer = [0u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return start.elapsed(),
            Ok(read) => panic!("{what}: the broker sent {read} bytes instead of closing"),
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return start.elapsed()
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: still open after {bound:?}")
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => panic!("{what}: reading failed with {error} instead of a close"),
        }
    }
}

/// A Fetch v12 of partition 0 of `topic` from offset 0 that waits up to
/// `max_wait_ms` for a byte.
fn long_poll_fetch(topic: &str, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

#[test]
fn an_idle_connection_is_reaped_but_one_awaiting_a_long_poll_fetch_is_answered() {
    const IDLE_MS: u64 = 1_000;
    const FETCH_WAIT_MS: i32 = 3_500;
    let _watchdog = Watchdog::new("idle_connections", TEST_BOUND);
    let mut broker = start_broker("idle", &format!("connections_max_idle_ms: {IDLE_MS}\n"));
    let mut creator = Connection::open(&broker);
    let created = create_topics(&mut creator, vec![creatable("long-poll", 1)], false);
    assert_eq!(created.topics[0].error_code, 0, "creating the topic: {:?}", created.topics[0].error_message);
    drop(creator);

    let mut idle = Connection::open(&broker);
    api_versions(&mut idle);
    let mut fetcher = Connection::open(&broker);
    let sent = std::time::Instant::now();
    let correlation_id = fetcher.send(&long_poll_fetch("long-poll", FETCH_WAIT_MS), 12);

    // The idle connection goes after connections.max.idle.ms from its last answer;
    // the fetcher's request is in flight meanwhile, and well past that time.
    let idle_for = wait_closed(&idle.stream, "the idle connection", Duration::from_secs(20));
    let idle_ms = IDLE_MS as u128;
    assert!(
        idle_for.as_millis() >= idle_ms * 8 / 10 && idle_for.as_millis() <= idle_ms * 4,
        "the idle connection was closed {idle_for:?} after its answer (connections.max.idle.ms {IDLE_MS})"
    );
    let answer: FetchResponse = fetcher.receive::<FetchRequest>(correlation_id, 12);
    let waited = sent.elapsed();
    assert_eq!(answer.error_code, 0, "the long-poll Fetch's error code");
    assert_eq!(answer.responses[0].partitions[0].error_code, 0, "the long-poll Fetch's partition error code");
    assert!(
        waited >= Duration::from_millis(FETCH_WAIT_MS as u64 * 9 / 10),
        "the long-poll Fetch was answered after {waited:?}, before its max_wait_ms {FETCH_WAIT_MS}"
    );
    // The connection is still served (closing it while the Fetch waited and only
    // then answering would not do), and once answered it is idle in its turn: the
    // idle time counts from its last answer.
    api_versions(&mut fetcher);
    let then_idle_for = wait_closed(&fetcher.stream, "the fetcher, once answered", Duration::from_secs(20));
    assert!(
        then_idle_for.as_millis() <= idle_ms * 4,
        "the answered fetcher was closed {then_idle_for:?} after its last answer (connections.max.idle.ms {IDLE_MS})"
    );
    assert_serves_fresh_clients(&broker, "idle connections reaped");
    let stats = connection_stats_at_stop(&mut broker);
    assert_eq!(stats.get("idle_reaped"), Some(&2), "idle connections reaped: {stats:?}");
}

#[test]
fn a_client_trickling_a_request_is_closed_at_its_read_deadline_while_others_are_served() {
    const READ_TIMEOUT_MS: u64 = 2_000;
    let _watchdog = Watchdog::new("read_deadline", TEST_BOUND);
    let mut broker = start_broker("trickle", &format!("request_read_timeout_ms: {READ_TIMEOUT_MS}\n"));
    let mut bystander = Connection::open(&broker);
    api_versions(&mut bystander);

    // A size prefix declaring 1000 bytes, then a byte every 200 ms: 200 s if let be.
    let trickler = Connection::open(&broker);
    let closed = Arc::new(AtomicBool::new(false));
    let dripping = {
        let (mut stream, closed) = (trickler.stream.try_clone().expect("cloning a stream"), closed.clone());
        std::thread::spawn(move || {
            let _ = stream.write_all(&1000i32.to_be_bytes());
            while !closed.load(Ordering::Relaxed) && stream.write_all(&[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // The bystander and fresh clients are served while the trickler drips.
    let watching = {
        let stream = trickler.stream.try_clone().expect("cloning a stream");
        let closed = closed.clone();
        std::thread::spawn(move || {
            let after = wait_closed(&stream, "the trickling connection", Duration::from_secs(30));
            closed.store(true, Ordering::Relaxed);
            after
        })
    };
    let mut served = 0;
    while !closed.load(Ordering::Relaxed) {
        api_versions(&mut bystander);
        assert_serves_fresh_clients(&broker, "a trickled byte");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = watching.join().expect("the watching thread panicked");
    dripping.join().expect("the dripping thread panicked");
    assert!(served >= 5, "only {served} rounds of requests were served while the trickler dripped");
    let bound = READ_TIMEOUT_MS as u128;
    assert!(
        closed_after.as_millis() >= bound * 9 / 10 && closed_after.as_millis() <= bound * 3,
        "the trickling connection was closed {closed_after:?} after its first byte (read timeout {READ_TIMEOUT_MS} ms)"
    );
    assert_logged_once(&broker, &trickler, "corelog.request.read.timeout.ms");
    api_versions(&mut bystander);
    let stats = connection_stats_at_stop(&mut broker);
    assert_eq!(stats.get("read_deadlines_hit"), Some(&1), "read deadlines hit: {stats:?}");
}

#[test]
fn connections_past_the_per_ip_limit_are_closed_at_accept_and_counted() {
    const PER_IP_MAX: usize = 3;
    let _watchdog = Watchdog::new("per_ip", TEST_BOUND);
    // Every address may hold 1 connection but 127.0.0.1, which is allowed 3: the
    // limit the test meets comes from the overrides.
    let mut broker = start_broker(
        "per-ip",
        &format!("max_connections_per_ip: 1\nmax_connections_per_ip_overrides: 127.0.0.1:{PER_IP_MAX}\n"),
    );
    let mut admitted: Vec<Connection> = (0..PER_IP_MAX).map(|_| Connection::open(&broker)).collect();
    for connection in &mut admitted {
        api_versions(connection);
    }
    let mut refused = 0;
    let mut over = Connection::open(&broker);
    let started = std::time::Instant::now();
    over.expect_closed(&format!("connection {} from 127.0.0.1", PER_IP_MAX + 1));
    refused += 1;
    assert!(started.elapsed() < Duration::from_secs(5), "the connection over the limit lived {:?}", started.elapsed());
    assert_logged_once(&broker, &over, &format!("{PER_IP_MAX} connections from 127.0.0.1 already open"));
    for connection in &mut admitted {
        api_versions(connection);
    }

    // A closed connection frees its place; the broker counts the close when it
    // notices it, so the new client may be refused a few times first.
    drop(admitted.pop());
    let mut fresh = None;
    wait_until("a connection to be admitted after one closed", Duration::from_secs(30), || {
        let mut connection = Connection::open(&broker);
        if is_answered(&mut connection) {
            fresh = Some(connection);
        } else {
            refused += 1;
        }
        fresh.is_some()
    });
    let mut fresh = fresh.expect("admitted");
    assert_serves(&broker, &mut fresh, "a refusal per IP");
    for connection in &mut admitted {
        api_versions(connection);
    }
    let stats = connection_stats_at_stop(&mut broker);
    assert_eq!(stats.get("per_ip_refused"), Some(&refused), "refusals per IP: {stats:?}");
}

#[test]
fn fifty_trickling_clients_holding_every_slot_are_closed_at_their_deadline() {
    const CONNECTIONS_MAX: usize = 50;
    const READ_TIMEOUT_MS: u64 = 3_000;
    let _watchdog = Watchdog::new("trickling_flood", TEST_BOUND);
    let mut broker = start_broker(
        "trickling-flood",
        &format!("max_connections: {CONNECTIONS_MAX}\nrequest_read_timeout_ms: {READ_TIMEOUT_MS}\n"),
    );
    let mut tricklers: Vec<Connection> = (0..CONNECTIONS_MAX).map(|_| Connection::open(&broker)).collect();
    for connection in &mut tricklers {
        api_versions(connection);
        connection.send_raw(&1000i32.to_be_bytes());
    }
    let started = std::time::Instant::now();
    // Every slot is held: a new client is refused (as measured on this box: 200
    // sockets dripping a byte a second held every slot for 120 s).
    assert!(!is_answered(&mut Connection::open(&broker)), "a client beyond max_connections was served");
    let stop = Arc::new(AtomicBool::new(false));
    let dripping = {
        let streams: Vec<TcpStream> =
            tricklers.iter().map(|c| c.stream.try_clone().expect("cloning a stream")).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for mut stream in &streams {
                    // The broker closes them: writes then fail, which is expected.
                    let _ = stream.write_all(&[0]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    for connection in &tricklers {
        wait_closed(&connection.stream, &format!("trickler {}", connection.peer), Duration::from_secs(30));
    }
    let all_closed_after = started.elapsed();
    assert!(
        all_closed_after >= Duration::from_millis(READ_TIMEOUT_MS * 9 / 10)
            && all_closed_after <= Duration::from_millis(READ_TIMEOUT_MS * 4),
        "the tricklers were closed within {all_closed_after:?} (read timeout {READ_TIMEOUT_MS} ms)"
    );
    // Their slots are free again (the broker releases each as it closes it).
    wait_until("a fresh client to be served after the deadline", Duration::from_secs(30), || {
        is_answered(&mut Connection::open(&broker))
    });
    assert_serves_fresh_clients(&broker, "fifty trickling clients");
    stop.store(true, Ordering::Relaxed);
    dripping.join().expect("the dripping thread panicked");
    // Fifty deadlines hit at once are not fifty log lines.
    let lines = broker_log(&broker).lines().filter(|line| line.contains("corelog.request.read.timeout.ms")).count();
    assert!((1..CONNECTIONS_MAX).contains(&lines), "{lines} log lines about read deadlines for {CONNECTIONS_MAX} hit");
    let stats = connection_stats_at_stop(&mut broker);
    assert_eq!(stats.get("read_deadlines_hit"), Some(&(CONNECTIONS_MAX as u64)), "read deadlines hit: {stats:?}");
}
