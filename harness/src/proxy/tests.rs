//! The proxy against real sockets on 127.0.0.1: small echo, sink and greeter servers
//! upstream, a client in the test. Every read has a timeout, so a broken proxy fails
//! a test instead of hanging it. Timing bounds are loose on purpose: the machine is
//! shared and the scheduler noisy; the lower bounds (a delay, a rate) are the strict
//! ones, the upper bounds only catch "the fault did not end" or "it never applied".

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bandwidth::TokenBucket;
use super::fault::Effective;
use super::*;

/// Longest any single read in these tests may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

/// Serves every connection of a listener on 127.0.0.1 with `serve`, each on its own
/// thread; the server lives as long as the test binary.
fn server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind(any_port()).expect("binding a test server");
    let address = listener.local_addr().expect("the test server's address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    address
}

/// Echoes everything until EOF, then closes its write half.
fn echo(stream: TcpStream) {
    stream.set_nodelay(true).expect("nodelay");
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match (&stream).read(&mut buffer) {
            Ok(0) => {
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => {
                if (&stream).write_all(&buffer[..read]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What a sink received on one connection.
struct Sunk {
    bytes: Vec<u8>,
    ended_at: Instant,
}

/// A server that reads every connection to its end and reports what it got.
fn sink_server() -> (SocketAddr, mpsc::Receiver<Sunk>) {
    let listener = TcpListener::bind(any_port()).expect("binding the sink");
    let address = listener.local_addr().expect("the sink's address");
    let (report, reports) = mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let report = report.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                let _ = report.send(Sunk { bytes, ended_at: Instant::now() });
            });
        }
    });
    (address, reports)
}

fn start(upstream: SocketAddr) -> FaultProxy {
    FaultProxy::start("test", any_port(), upstream).expect("starting the proxy")
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.local_addr()).expect("connecting to the proxy");
    // A connection the proxy resets at once (a `reset` fault) may already refuse
    // socket options (EINVAL); the test then sees the reset on its first read.
    if let Err(error) = stream.set_nodelay(true).and_then(|()| stream.set_read_timeout(Some(READ_TIMEOUT))) {
        eprintln!("socket options on a fresh proxy connection: {error}");
    }
    stream
}

/// Sends `message`, reads the echo, checks it, returns how long it took.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).expect("writing to the proxy");
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed).expect("reading the echo");
    assert_eq!(echoed, message, "the echo differs from what was sent");
    started.elapsed()
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    /// A TCP RST (ECONNRESET).
    Reset,
    /// A FIN (EOF).
    Eof,
}

/// Reads until the connection is reset or ends, failing if it is still open after
/// `within`. Bytes still in flight may arrive first and are skipped.
fn expect_closed(stream: &mut TcpStream, within: Duration) -> Closed {
    let deadline = Instant::now() + within;
    let mut buffer = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        // A socket the peer already reset may refuse the option; the read says so.
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buffer) {
            Ok(0) => return Closed::Eof,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return Closed::Reset,
            Ok(_) => assert!(Instant::now() < deadline, "the connection still delivers data after {within:?}"),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the connection is still open {within:?} later")
            }
            Err(error) => panic!("unexpected error instead of a reset or EOF: {error}"),
        }
    }
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic, incompressible test data (SplitMix64).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut generator = corelog_engine::hash::SplitMix64::new(seed);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&generator.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// FNV-1a, to compare large transfers without printing megabytes on failure.
fn checksum(bytes: &[u8]) -> u64 {
    corelog_engine::hash::fnv1a(bytes)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[test]
fn without_faults_bytes_pass_intact_both_ways_and_half_close_propagates() {
    let proxy = start(server(echo));
    let mut client = connect(&proxy);
    let sent = random_bytes(8 * 1024 * 1024, 1);
    let writer = std::thread::spawn({
        let mut client = client.try_clone().expect("cloning the client");
        let sent = sent.clone();
        move || {
            client.write_all(&sent).expect("sending through the proxy");
            client.shutdown(Shutdown::Write).expect("half-closing the client");
        }
    });
    let mut received = Vec::new();
    // EOF here means the client's half-close reached the echo server and the echo
    // server's half-close came back.
    client.read_to_end(&mut received).expect("reading the echo to its end");
    writer.join().expect("the writer thread");
    assert_eq!(received.len(), sent.len(), "echoed length");
    assert_eq!(checksum(&received), checksum(&sent), "echoed bytes differ");
    let stats = proxy.stats();
    assert_eq!((stats.bytes_to_broker, stats.bytes_to_client), (sent.len() as u64, sent.len() as u64));
    assert_eq!((stats.accepted, stats.resets, stats.active_faults), (1, 0, 0));
    wait_until("the link to end after both half-closes", Duration::from_secs(2), || proxy.stats().open == 0);
}

#[test]
fn latency_delays_each_direction_and_faults_compose() {
    let proxy = start(server(echo));
    let mut client = connect(&proxy);
    round_trip(&mut client, b"warm-up");
    let delay = Duration::from_millis(50);
    proxy.add(NetFault::Latency { delay, jitter: Duration::ZERO, directions: Directions::TO_BROKER });
    proxy.add(NetFault::Latency { delay, jitter: Duration::ZERO, directions: Directions::TO_CLIENT });
    let round_trips: Vec<Duration> = (0..5).map(|_| round_trip(&mut client, b"ping")).collect();
    for took in &round_trips {
        assert!(*took >= 2 * delay, "a round trip took {took:?}, less than the two 50 ms delays");
    }
    let typical = median(round_trips);
    assert!(typical < Duration::from_millis(350), "round trips take {typical:?}, far above 100 ms");
    assert_eq!(proxy.stats().active_faults, 2);
}

#[test]
fn jitter_never_reorders_bytes() {
    let proxy = start(server(echo));
    let client = connect(&proxy);
    proxy.add(NetFault::Latency {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(10),
        directions: Directions::BOTH,
    });
    const MESSAGES: u32 = 300;
    let writer = std::thread::spawn({
        let mut client = client.try_clone().expect("cloning the client");
        move || {
            // Separate writes 0.5 ms apart: separate chunks whose jitter draws would
            // swap many of them if the proxy did not keep them in order.
            for sequence in 0..MESSAGES {
                client.write_all(&sequence.to_be_bytes()).expect("sending");
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    });
    let mut received = vec![0; MESSAGES as usize * 4];
    (&client).read_exact(&mut received).expect("reading the echoes");
    writer.join().expect("the writer thread");
    let sequences: Vec<u32> = received.chunks(4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes"))).collect();
    assert_eq!(sequences, (0..MESSAGES).collect::<Vec<_>>(), "bytes came back out of order");
}

#[test]
fn bandwidth_limits_the_rate() {
    let (sink, sunk) = sink_server();
    let proxy = start(sink);
    proxy.add(NetFault::Bandwidth { bytes_per_second: 1024 * 1024, directions: Directions::TO_BROKER });
    let mut client = connect(&proxy);
    let sent = random_bytes(2 * 1024 * 1024, 2);
    let started = Instant::now();
    client.write_all(&sent).expect("sending");
    client.shutdown(Shutdown::Write).expect("half-closing");
    let sunk = sunk.recv_timeout(Duration::from_secs(20)).expect("the sink's report");
    let took = sunk.ended_at - started;
    assert_eq!(checksum(&sunk.bytes), checksum(&sent), "the sink got other bytes");
    assert!(took >= Duration::from_millis(1600), "2 MiB at 1 MiB/s took only {took:?}");
    assert!(took <= Duration::from_secs(4), "2 MiB at 1 MiB/s took {took:?}");
}

#[test]
fn reset_resets_open_connections() {
    let proxy = start(server(echo));
    let mut clients = [connect(&proxy), connect(&proxy)];
    for client in &mut clients {
        round_trip(client, b"hello");
    }
    proxy.add(NetFault::Reset);
    for client in &mut clients {
        assert_eq!(expect_closed(client, Duration::from_secs(1)), Closed::Reset);
    }
    assert_eq!(proxy.stats().resets, 2);
    wait_until("the reset links to end", Duration::from_secs(1), || proxy.stats().open == 0);
}

#[test]
fn while_reset_is_active_new_connections_are_reset() {
    let proxy = start(server(echo));
    let reset = proxy.add(NetFault::Reset);
    let mut client = connect(&proxy);
    assert_eq!(expect_closed(&mut client, Duration::from_secs(1)), Closed::Reset);
    assert_eq!(proxy.stats().resets, 1);
    proxy.remove(reset);
    let mut client = connect(&proxy);
    round_trip(&mut client, b"after the reset fault");
}

#[test]
fn blackhole_holds_bytes_then_releases_them_intact() {
    let proxy = start(server(echo));
    let mut client = connect(&proxy);
    round_trip(&mut client, b"before");
    let blackhole = proxy.add(NetFault::Blackhole { directions: Directions::BOTH });
    let message = random_bytes(100 * 1024, 3);
    client.write_all(&message).expect("sending into the blackhole");
    client.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
    let mut byte = [0; 1];
    match client.read(&mut byte) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence from the blackhole, got {other:?}"),
    }
    proxy.remove(blackhole);
    client.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    let mut echoed = vec![0; message.len()];
    client.read_exact(&mut echoed).expect("the held bytes after the blackhole ended");
    assert_eq!(checksum(&echoed), checksum(&message), "held bytes changed");
}

#[test]
fn blackhole_stops_reading_so_backpressure_builds_and_nothing_is_lost() {
    let (sink, sunk) = sink_server();
    let proxy = start(sink);
    let mut client = connect(&proxy);
    let blackhole = proxy.add(NetFault::Blackhole { directions: Directions::TO_BROKER });
    client.set_nonblocking(true).expect("non-blocking client");
    let block = random_bytes(64 * 1024, 4);
    let mut sent = Vec::new();
    let mut blocked_since: Option<Instant> = None;
    // Kernel buffers on both sides plus the proxy's queue: far below this.
    const SENT_BYTES_BOUND: usize = 64 * 1024 * 1024;
    while !matches!(blocked_since, Some(since) if since.elapsed() >= Duration::from_millis(200)) {
        assert!(sent.len() < SENT_BYTES_BOUND, "the proxy takes bytes without bound under a blackhole");
        match client.write(&block) {
            Ok(written) => {
                sent.extend_from_slice(&block[..written]);
                blocked_since = None;
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                blocked_since.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("sending into the blackhole: {error}"),
        }
    }
    assert_eq!(proxy.stats().bytes_to_broker, 0, "bytes crossed the blackhole");
    proxy.remove(blackhole);
    client.set_nonblocking(false).expect("blocking client");
    client.shutdown(Shutdown::Write).expect("half-closing");
    let sunk = sunk.recv_timeout(Duration::from_secs(10)).expect("the sink's report");
    assert_eq!(sunk.bytes.len(), sent.len(), "bytes lost or added across the blackhole");
    assert_eq!(checksum(&sunk.bytes), checksum(&sent), "bytes changed across the blackhole");
}

#[test]
fn down_refuses_connections_then_listens_again_on_the_same_port() {
    let proxy = start(server(echo));
    let address = proxy.local_addr();
    let mut open = connect(&proxy);
    round_trip(&mut open, b"before");
    let down = proxy.add(NetFault::Down);
    match TcpStream::connect(address) {
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "connecting while down: {error}"),
        Ok(_) => panic!("connected to {address} while the proxy is down"),
    }
    assert_eq!(expect_closed(&mut open, Duration::from_secs(1)), Closed::Reset);
    assert_eq!(proxy.stats().resets, 1);
    proxy.remove(down);
    wait_until("the listener to come back", Duration::from_secs(2), || TcpStream::connect(address).is_ok());
    assert_eq!(proxy.local_addr(), address);
    let mut client = connect(&proxy);
    round_trip(&mut client, b"after");
}

#[test]
fn a_fault_added_to_an_open_connection_applies_at_once() {
    let proxy = start(server(echo));
    let mut client = connect(&proxy);
    round_trip(&mut client, b"before");
    let delay = Duration::from_millis(300);
    proxy.add(NetFault::Latency { delay, jitter: Duration::ZERO, directions: Directions::TO_CLIENT });
    std::thread::sleep(Duration::from_millis(50));
    let took = round_trip(&mut client, b"after");
    assert!(took >= delay, "the round trip after adding 300 ms of latency took {took:?}");
}

#[test]
fn removing_latency_releases_delayed_bytes_and_round_trips_are_fast_again() {
    let proxy = start(server(echo));
    let mut client = connect(&proxy);
    let latency = proxy.add(NetFault::Latency {
        delay: Duration::from_secs(5),
        jitter: Duration::ZERO,
        directions: Directions::TO_CLIENT,
    });
    client.write_all(b"held").expect("sending");
    std::thread::sleep(Duration::from_millis(100));
    let removed_at = Instant::now();
    proxy.remove(latency);
    let mut echoed = [0; 4];
    client.read_exact(&mut echoed).expect("the delayed echo");
    let after_removal = removed_at.elapsed();
    assert_eq!(&echoed, b"held");
    assert!(
        after_removal < Duration::from_secs(1),
        "the delayed echo came {after_removal:?} after the latency was removed"
    );
    let typical = median((0..5).map(|_| round_trip(&mut client, b"ping")).collect());
    assert!(typical < Duration::from_millis(100), "round trips take {typical:?} after the latency was removed");
}

#[test]
fn shutdown_closes_open_connections_and_returns_promptly() {
    let proxy = start(server(echo));
    let address = proxy.local_addr();
    let mut idle = connect(&proxy);
    round_trip(&mut idle, b"idle");
    let mut held = connect(&proxy);
    round_trip(&mut held, b"held");
    proxy.add(NetFault::Blackhole { directions: Directions::BOTH });
    held.write_all(b"bytes the blackhole holds").expect("sending");
    proxy.add(NetFault::Latency {
        delay: Duration::from_secs(5),
        jitter: Duration::ZERO,
        directions: Directions::BOTH,
    });
    let started = Instant::now();
    proxy.shutdown();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert_eq!(expect_closed(&mut idle, Duration::from_secs(1)), Closed::Reset);
    assert_eq!(expect_closed(&mut held, Duration::from_secs(1)), Closed::Reset);
    match TcpStream::connect(address) {
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionRefused),
        Ok(_) => panic!("connected to {address} after shutdown"),
    }
}

/// Writes `greeting` to every connection, then closes it.
fn greet_a(mut stream: TcpStream) {
    let _ = stream.write_all(b"A");
}

fn greet_b(mut stream: TcpStream) {
    let _ = stream.write_all(b"B");
}

#[test]
fn set_upstream_sends_new_connections_elsewhere() {
    let proxy = start(server(greet_a));
    let greeting = |proxy: &FaultProxy| {
        let mut text = String::new();
        connect(proxy).read_to_string(&mut text).expect("reading the greeting");
        text
    };
    assert_eq!(greeting(&proxy), "A");
    proxy.set_upstream(server(greet_b));
    assert_eq!(greeting(&proxy), "B");
}

#[test]
fn an_unreachable_upstream_closes_the_client_connection() {
    let nothing_there = TcpListener::bind(any_port()).and_then(|l| l.local_addr()).expect("a free port");
    let proxy = start(nothing_there);
    let mut client = connect(&proxy);
    assert_eq!(expect_closed(&mut client, Duration::from_secs(1)), Closed::Eof, "closed, not reset");
    wait_until("the link to end", Duration::from_secs(1), || proxy.stats().open == 0);
    assert_eq!(proxy.stats().accepted, 1);
}

#[test]
fn parse_fault_reads_the_workload_words() {
    let ms = Duration::from_millis;
    let check = |text: &str, expected: NetFault| {
        assert_eq!(parse_fault(text), Ok(expected.clone()), "{text}");
        assert_eq!(parse_fault(&expected.to_string()), Ok(expected), "the Display form of {text}");
    };
    check("latency delay_ms=200", NetFault::Latency { delay: ms(200), jitter: ms(0), directions: Directions::BOTH });
    check(
        "latency  delay_ms=200 jitter_ms=50 direction=to-client",
        NetFault::Latency { delay: ms(200), jitter: ms(50), directions: Directions::TO_CLIENT },
    );
    check(
        "bandwidth bytes_per_second=1000 direction=to-broker",
        NetFault::Bandwidth { bytes_per_second: 1000, directions: Directions::TO_BROKER },
    );
    check("blackhole", NetFault::Blackhole { directions: Directions::BOTH });
    check("blackhole direction=both", NetFault::Blackhole { directions: Directions::BOTH });
    check("reset", NetFault::Reset);
    check("down", NetFault::Down);
}

#[test]
fn parse_fault_errors_name_the_bad_token() {
    let check = |text: &str, expected: &str| {
        let error = parse_fault(text).expect_err(text);
        assert_eq!(error, expected, "{text}");
    };
    check("", "empty fault: expected a kind (latency, bandwidth, reset, blackhole, down)");
    check(
        "latncy delay_ms=1",
        "\"latncy\" is not a network fault kind (expected latency, bandwidth, reset, blackhole, down)",
    );
    check("crash", "\"crash\" is not a network fault kind (expected latency, bandwidth, reset, blackhole, down)");
    check("latency", "latency needs delay_ms=N");
    check("latency delay_ms=abc", "\"delay_ms=abc\": delay_ms must be a whole number");
    check("latency delay_ms=5 delay_ms=6", "\"delay_ms=6\": delay_ms is given twice");
    check("latency delay_ms=5 rate=7", "\"rate=7\": latency takes only delay_ms, jitter_ms, direction");
    check("latency delay_ms", "\"delay_ms\": expected key=value");
    check(
        "blackhole direction=sideways",
        "\"direction=sideways\": direction must be one of both, to-broker, to-client",
    );
    check("bandwidth bytes_per_second=0", "\"bytes_per_second=0\": must be at least 1");
    check("reset now=1", "\"now=1\": reset takes no parameters");
}

#[test]
fn active_faults_compose() {
    let ms = Duration::from_millis;
    let faults = [
        NetFault::Latency { delay: ms(10), jitter: ms(2), directions: Directions::BOTH },
        NetFault::Latency { delay: ms(5), jitter: ms(0), directions: Directions::TO_CLIENT },
        NetFault::Bandwidth { bytes_per_second: 500, directions: Directions::BOTH },
        NetFault::Bandwidth { bytes_per_second: 200, directions: Directions::TO_BROKER },
        NetFault::Blackhole { directions: Directions::TO_CLIENT },
    ];
    let effective = Effective::of(&faults);
    let to_broker = effective.direction(Direction::ToBroker);
    let to_client = effective.direction(Direction::ToClient);
    assert_eq!(
        (to_broker.delay, to_broker.jitter, to_broker.bytes_per_second, to_broker.blackhole),
        (ms(10), ms(2), Some(200), false)
    );
    assert_eq!(
        (to_client.delay, to_client.jitter, to_client.bytes_per_second, to_client.blackhole),
        (ms(15), ms(2), Some(500), true)
    );
    assert!(!effective.reset && !effective.down);
    assert!(Effective::of(&[NetFault::Reset, NetFault::Down]).reset);
    assert!(Effective::of(&[]).direction(Direction::ToBroker).is_clear());
}

#[test]
fn due_times_never_precede_the_read() {
    let faults = Effective::of(&[NetFault::Latency {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(50),
        directions: Directions::BOTH,
    }]);
    let read_at = Instant::now();
    let faults = faults.direction(Direction::ToBroker);
    assert_eq!(faults.due_at(read_at, -1.0), read_at, "a negative draw below the delay clamps to the read time");
    assert_eq!(faults.due_at(read_at, 1.0), read_at + Duration::from_millis(55));
}

#[test]
fn the_token_bucket_holds_the_rate_and_starts_with_a_small_burst() {
    let mut bucket = TokenBucket::new();
    let start = Instant::now();
    assert_eq!(bucket.take(1 << 30, start), Duration::ZERO, "no limit: no wait");
    bucket.reset(Some(1000), start);
    assert_eq!(bucket.take(20, start), Duration::ZERO, "the burst is 20 ms of the rate");
    let wait = bucket.take(1000, start);
    assert_eq!(wait, Duration::from_secs(1), "1000 bytes more at 1000 B/s");
    // Another sender queues behind the debt.
    assert_eq!(bucket.take(500, start + Duration::from_millis(500)), Duration::from_secs(1));
}
