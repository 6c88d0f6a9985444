//! The idempotent producer (KIP-98) with librdkafka: batches the producer sends
//! again are stored once.
//!
//! A retry happens when the producer does not learn whether a batch was stored. The
//! tests make that happen on purpose, with a proxy between client and broker that
//! reads Kafka frames and, at chosen Produce responses, closes the client's
//! connection instead of forwarding the response: the broker has appended the batch,
//! the producer never hears of it and sends it again with the same producer id,
//! epoch and sequence number. The broker advertises the proxy's address in
//! Metadata, so every connection of the client goes through it.
//!
//! - `retried_batches_are_stored_once`: three Produce responses are lost; the
//!   retries must be recognised as duplicates.
//! - `a_batch_retried_across_a_broker_kill_is_stored_once`: a Produce response is
//!   lost and the broker is SIGKILLed right after (under `fsync.policy=always` the
//!   batch is on disk); the restarted broker must recognise the retry from the
//!   producer state it rebuilds from the log.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;

/// Kafka's API key of Produce.
const API_KEY_PRODUCE: i16 = 0;
/// Largest frame the proxy forwards (the broker's default request limit).
const FRAME_BYTES_MAX: usize = 100 << 20;

/// Forwards Kafka connections to a broker, closing the client connection instead of
/// forwarding the Produce responses whose ordinal (1-based, over all connections)
/// is in `lose`.
struct LossyProxy {
    address: SocketAddr,
    /// Produce responses withheld so far.
    lost: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

struct ProxyShared {
    upstream: SocketAddr,
    lose: HashSet<usize>,
    produce_responses: AtomicUsize,
    lost: Arc<AtomicUsize>,
    /// Told the ordinal of each Produce response withheld.
    on_lost: Mutex<mpsc::Sender<usize>>,
}

impl LossyProxy {
    /// Binds a free port; call [`LossyProxy::run`] once the broker's address is known.
    fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let address = listener.local_addr().expect("proxy address");
        (listener, address)
    }

    fn run(listener: TcpListener, upstream: SocketAddr, lose: &[usize], on_lost: mpsc::Sender<usize>) -> LossyProxy {
        let address = listener.local_addr().expect("proxy address");
        let lost = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(ProxyShared {
            upstream,
            lose: lose.iter().copied().collect(),
            produce_responses: AtomicUsize::new(0),
            lost: lost.clone(),
            on_lost: Mutex::new(on_lost),
        });
        listener.set_nonblocking(true).expect("non-blocking accept");
        let accept_stop = stop.clone();
        std::thread::spawn(move || {
            while !accept_stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).expect("blocking client socket");
                        let shared = shared.clone();
                        std::thread::spawn(move || serve(client, &shared));
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(error) => panic!("proxy accept: {error}"),
                }
            }
        });
        LossyProxy { address, lost, stop }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Reads one size-prefixed Kafka frame (size included); `None` at end of stream.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let len = i32::from_be_bytes(size);
    if len < 8 || len as usize > FRAME_BYTES_MAX {
        return None;
    }
    let mut frame = vec![0u8; 4 + len as usize];
    frame[..4].copy_from_slice(&size);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// One client connection: requests go up as they are; responses come back unless
/// one is a Produce response chosen to be lost, which closes both connections.
fn serve(client: TcpStream, shared: &ProxyShared) {
    let Ok(upstream) = TcpStream::connect(shared.upstream) else {
        // The broker is down (being restarted): the client sees a closed connection.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let produce_requests: Arc<Mutex<HashSet<i32>>> = Arc::default();
    let (mut client_reader, mut upstream_writer) =
        (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
    let requests = produce_requests.clone();
    let up = std::thread::spawn(move || {
        while let Some(frame) = read_frame(&mut client_reader) {
            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
            let correlation_id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            if api_key == API_KEY_PRODUCE {
                requests.lock().expect("requests").insert(correlation_id);
            }
            if upstream_writer.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = upstream_writer.shutdown(Shutdown::Both);
        let _ = client_reader.shutdown(Shutdown::Both);
    });
    let (mut upstream_reader, mut client_writer) = (upstream, client);
    while let Some(frame) = read_frame(&mut upstream_reader) {
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if produce_requests.lock().expect("requests").remove(&correlation_id) {
            let ordinal = shared.produce_responses.fetch_add(1, Ordering::AcqRel) + 1;
            if shared.lose.contains(&ordinal) {
                shared.lost.fetch_add(1, Ordering::AcqRel);
                let _ = shared.on_lost.lock().expect("on_lost").send(ordinal);
                break;
            }
        }
        if client_writer.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client_writer.shutdown(Shutdown::Both);
    let _ = upstream_reader.shutdown(Shutdown::Both);
    let _ = up.join();
}

const PARTITIONS: i32 = 3;
const MESSAGES: usize = 6_000;

fn idempotent_producer(bootstrap: SocketAddr) -> FutureProducer {
    rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap.to_string())
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Many small batches, so that Produce responses are many.
        .set("batch.num.messages", "100")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .expect("creating the idempotent producer")
}

fn messages() -> Vec<Outgoing> {
    (0..MESSAGES).map(|i| (Some(format!("account-{}", i % 50).into_bytes()), format!("{i}").into_bytes())).collect()
}

/// Every message is stored once, where its delivery report says, and each
/// partition holds its messages in the order they were sent.
fn assert_stored_once(broker: &BrokerProcess, topic: &str, acknowledged: &[(i32, i64)]) {
    let stored = read_partitions(broker, topic, PARTITIONS, Duration::from_secs(120));
    let index_of = |record: &Record| -> usize {
        record.value_text().parse().unwrap_or_else(|_| panic!("unexpected record {record:?}"))
    };
    let total: usize = stored.values().map(Vec::len).sum();
    let mut seen = vec![0u32; MESSAGES];
    for record in stored.values().flatten() {
        seen[index_of(record)] += 1;
    }
    let duplicated: Vec<usize> = (0..MESSAGES).filter(|&i| seen[i] > 1).take(10).collect();
    let missing: Vec<usize> = (0..MESSAGES).filter(|&i| seen[i] == 0).take(10).collect();
    assert!(
        duplicated.is_empty() && missing.is_empty() && total == MESSAGES,
        "{total} records stored for {MESSAGES} messages; stored more than once (first 10): {duplicated:?}; \
         missing (first 10): {missing:?}"
    );
    for (partition, records) in &stored {
        for pair in records.windows(2) {
            let (earlier, later) = (index_of(&pair[0]), index_of(&pair[1]));
            assert!(earlier < later, "partition {partition}: message {later} stored before message {earlier}");
        }
        for record in records {
            let index = index_of(record);
            assert_eq!(
                (record.partition, record.offset),
                acknowledged[index],
                "message {index} is not where its delivery report put it"
            );
        }
    }
}

#[test]
fn retried_batches_are_stored_once() {
    let _watchdog = Watchdog::new("retried_batches_are_stored_once", Duration::from_secs(300));
    let (listener, proxy_address) = LossyProxy::bind();
    let mut options = BrokerOptions::new("idempotence-retries");
    options.advertised_listener = Some(proxy_address.to_string());
    let broker = BrokerProcess::start(options);
    let (lost_tx, _lost_rx) = mpsc::channel();
    let lost_responses = [2, 5, 9];
    let proxy = LossyProxy::run(listener, broker.address(), &lost_responses, lost_tx);
    let topic = "payments";
    block_on(create_topic(&broker, topic, PARTITIONS, &[]));

    let producer = idempotent_producer(proxy.address);
    let outcomes = produce(&producer, topic, None, &messages(), Duration::from_secs(180));
    let acknowledged = expect_all_acknowledged(topic, &outcomes);
    assert_eq!(
        proxy.lost.load(Ordering::Acquire),
        lost_responses.len(),
        "the proxy withheld fewer Produce responses than planned: the retries this test is about did not happen"
    );
    drop(producer);
    assert_stored_once(&broker, topic, &acknowledged);
}

#[test]
fn a_batch_retried_across_a_broker_kill_is_stored_once() {
    let _watchdog = Watchdog::new("a_batch_retried_across_a_broker_kill_is_stored_once", Duration::from_secs(360));
    let (listener, proxy_address) = LossyProxy::bind();
    let mut options = BrokerOptions::new("idempotence-kill").durable();
    options.advertised_listener = Some(proxy_address.to_string());
    let mut broker = BrokerProcess::start(options);
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_response = 12;
    let proxy = LossyProxy::run(listener, broker.address(), &[lost_response], lost_tx);
    let topic = "ledger";
    block_on(create_topic(&broker, topic, PARTITIONS, &[("fsync.policy", "always")]));

    let producer = Arc::new(idempotent_producer(proxy.address));
    let sending = {
        let producer = producer.clone();
        std::thread::spawn(move || produce(&producer, topic, None, &messages(), Duration::from_secs(240)))
    };
    // The broker stored (and synced) the batch whose response was lost; it dies
    // before the producer can learn anything more, and comes back on the same port.
    let ordinal = lost_rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
        panic!("Produce response {lost_response} never came: the producer sent fewer requests than the test needs")
    });
    assert_eq!(ordinal, lost_response);
    broker.kill();
    broker.restart();

    let outcomes = sending.join().expect("the producing thread panicked");
    let acknowledged = expect_all_acknowledged(topic, &outcomes);
    drop(producer);
    assert_stored_once(&broker, topic, &acknowledged);
    let by_partition = acknowledged.iter().fold(BTreeMap::<i32, usize>::new(), |mut counts, (partition, _)| {
        *counts.entry(*partition).or_default() += 1;
        counts
    });
    assert_eq!(by_partition.len(), PARTITIONS as usize, "partitions the keyed messages went to");
}
