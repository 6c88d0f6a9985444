//! `corelog proxy` as a process: the ready line, `--fault`, the control port's line
//! protocol, exit 0 on SIGTERM/SIGINT and 2 on a bad fault; in front of a small echo
//! server of this test, all on 127.0.0.1.
//!
//! `overhead_without_faults` compares a ping-pong and a bulk transfer direct
//! against through the proxy. In the suite it runs small (2,000 round trips, 64 MiB)
//! and checks only that every byte crossed; `CORELOG_BENCH_PROXY=1` (what
//! `scripts/bench-proxy.sh` sets) makes it the full measurement.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{spawn_dying_with_parent, wait_with_timeout, Watchdog};

/// What `corelog proxy` prints once it accepts connections.
const READY_MARKER: &str = "corelog proxy ready on ";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A `corelog proxy` child process; killed on drop, its stderr shown if the test failed.
struct ProxyProcess {
    child: Option<Child>,
    listen: SocketAddr,
    control: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl ProxyProcess {
    /// Starts `corelog proxy` and waits for its ready line.
    fn start(upstream: SocketAddr, faults: &[&str]) -> ProxyProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corelog"));
        command.args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.to_string(),
            "--control",
            "127.0.0.1:0",
        ]);
        for fault in faults {
            command.args(["--fault", fault]);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = spawn_dying_with_parent(&mut command).expect("starting corelog proxy");
        let stderr = forward_lines(child.stderr.take().expect("piped stderr"));
        match wait_for_ready(&stderr) {
            Ok((listen, control)) => ProxyProcess { child: Some(child), listen, control, stderr },
            Err(seen) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line from corelog proxy within {START_TIMEOUT:?}; stderr:\n{}", seen.join("\n"))
            }
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.listen).expect("connecting to the proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        stream
    }

    fn control(&self) -> Control {
        let stream = TcpStream::connect(self.control).expect("connecting to the control port");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        Control { reader: BufReader::new(stream.try_clone().expect("cloning the control stream")), writer: stream }
    }

    /// Sends `signal` and waits for the exit.
    fn stop(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("the proxy is running");
        // SAFETY: kill() with the pid of our own child, which has not been reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0, "sending signal {signal}");
        wait_with_timeout(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("corelog proxy still running {EXIT_TIMEOUT:?} after signal {signal}")
        })
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let lines: Vec<String> = self.stderr.try_iter().collect();
            eprintln!("corelog proxy stderr:\n{}", lines.join("\n"));
        }
    }
}

/// The listen and control addresses from the ready line, or the lines seen before
/// giving up.
fn wait_for_ready(stderr: &mpsc::Receiver<String>) -> Result<(SocketAddr, SocketAddr), Vec<String>> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            return Err(seen);
        };
        if let Some(ready) = line.strip_prefix(READY_MARKER) {
            return Ok(parse_ready(ready));
        }
        seen.push(line);
    }
}

/// `LISTEN -> UPSTREAM (control CONTROL)`: the listen and control addresses.
fn parse_ready(ready: &str) -> (SocketAddr, SocketAddr) {
    let (listen, rest) = ready.split_once(" -> ").unwrap_or_else(|| panic!("ready line without ' -> ': {ready}"));
    let control = rest
        .split_once("(control ")
        .and_then(|(_, control)| control.strip_suffix(')'))
        .unwrap_or_else(|| panic!("ready line without '(control ...)': {ready}"));
    (listen.parse().expect("the listen address"), control.parse().expect("the control address"))
}

/// Reads a child's stderr on a thread (so the child never blocks on a full pipe),
/// one line per message.
fn forward_lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// A client of the control port.
struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    /// Sends one command line, returns the reply line.
    fn command(&mut self, line: &str) -> String {
        writeln!(self.writer, "{line}").expect("sending a control command");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("reading the control reply");
        assert!(reply.ends_with('\n'), "the reply to {line:?} is not a whole line: {reply:?}");
        reply.trim_end().to_string()
    }
}

/// An echo server on 127.0.0.1 for the life of the test binary.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the echo server");
    let address = listener.local_addr().expect("the echo server's address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(read @ 1..) = (&stream).read(&mut buffer) {
                    if (&stream).write_all(&buffer[..read]).is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    address
}

fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).expect("sending");
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed).expect("reading the echo");
    assert_eq!(echoed, message, "the echo differs from what was sent");
    started.elapsed()
}

fn median_round_trip(stream: &mut TcpStream, count: usize) -> Duration {
    let mut took: Vec<Duration> = (0..count).map(|_| round_trip(stream, b"ping")).collect();
    took.sort();
    took[count / 2]
}

#[test]
fn the_control_port_adds_and_removes_faults_reports_stats_and_sigterm_exits_0() {
    let _watchdog = Watchdog::new(
        "the_control_port_adds_and_removes_faults_reports_stats_and_sigterm_exits_0",
        Duration::from_secs(120),
    );
    let mut proxy = ProxyProcess::start(echo_server(), &[]);
    let mut client = proxy.connect();
    let mut control = proxy.control();
    round_trip(&mut client, b"hello");

    assert_eq!(control.command("add latency delay_ms=100 direction=to-client"), "ok 1");
    let took = round_trip(&mut client, b"slow");
    assert!(took >= Duration::from_millis(100), "a round trip under 100 ms of latency took {took:?}");

    let stats: serde_json::Value = serde_json::from_str(&control.command("stats")).expect("stats is one JSON line");
    assert_eq!(stats["accepted"], 1, "{stats}");
    assert_eq!(stats["open"], 1, "{stats}");
    assert_eq!(stats["active_faults"], 1, "{stats}");
    assert_eq!(stats["bytes_to_broker"], 9, "hello + slow: {stats}");
    assert_eq!(stats["resets"], 0, "{stats}");

    assert_eq!(control.command("bogus"), "error unknown command \"bogus\" (expected add, remove, clear or stats)");
    assert_eq!(control.command("add latency"), "error latency needs delay_ms=N");
    assert_eq!(control.command("add latency delay_ms=x"), "error \"delay_ms=x\": delay_ms must be a whole number");
    assert_eq!(control.command("remove one"), "error \"one\" is not a fault id (remove <id>)");
    assert_eq!(control.command("remove 1"), "ok");
    assert_eq!(control.command("remove 1"), "error no active fault 1");
    let typical = median_round_trip(&mut client, 5);
    assert!(typical < Duration::from_millis(100), "round trips take {typical:?} after the latency was removed");

    assert_eq!(control.command("add blackhole direction=to-broker"), "ok 2");
    assert_eq!(control.command("add reset"), "ok 3");
    assert_eq!(control.command("clear"), "ok");
    let stats: serde_json::Value = serde_json::from_str(&control.command("stats")).expect("stats is one JSON line");
    assert_eq!((stats["active_faults"].as_u64(), stats["resets"].as_u64()), (Some(0), Some(1)), "{stats}");

    let status = proxy.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

#[test]
fn faults_given_on_the_command_line_are_active_from_the_start() {
    let _watchdog =
        Watchdog::new("faults_given_on_the_command_line_are_active_from_the_start", Duration::from_secs(120));
    let mut proxy = ProxyProcess::start(
        echo_server(),
        &["latency delay_ms=100 direction=to-broker", "bandwidth bytes_per_second=1000000"],
    );
    let mut client = proxy.connect();
    let took = round_trip(&mut client, b"first");
    assert!(took >= Duration::from_millis(100), "the first round trip took {took:?} under 100 ms of latency");
    let stats: serde_json::Value =
        serde_json::from_str(&proxy.control().command("stats")).expect("stats is one JSON line");
    assert_eq!(stats["active_faults"], 2, "{stats}");
    let status = proxy.stop(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[test]
fn a_bad_fault_is_a_usage_error_naming_the_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--fault", "latency delay_ms=soon"])
        .output()
        .expect("running corelog proxy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("\"delay_ms=soon\": delay_ms must be a whole number"), "stderr: {stderr}");
}

/// Round trips of 1 KiB (p50/p99) and 1 GiB one-way transfers, direct to the
/// servers and through `corelog proxy` without faults.
#[test]
fn overhead_without_faults() {
    let full = std::env::var_os("CORELOG_BENCH_PROXY").is_some_and(|v| v == "1");
    let (round_trips, bulk_bytes, bulk_repeats): (usize, u64, usize) =
        if full { (20_000, 1 << 30, 5) } else { (2_000, 64 << 20, 1) };
    const MESSAGE_BYTES: usize = 1024;
    let echo = echo_server();
    let (sink, sunk) = sink_server();
    let echo_proxy = ProxyProcess::start(echo, &[]);
    let sink_proxy = ProxyProcess::start(sink, &[]);

    let direct = ping_pong(echo, round_trips, MESSAGE_BYTES);
    let proxied = ping_pong(echo_proxy.listen, round_trips, MESSAGE_BYTES);
    println!("ping-pong, {round_trips} round trips of {MESSAGE_BYTES} B (µs):");
    println!("  direct        p50 {:>7.1}  p99 {:>7.1}", direct.0, direct.1);
    println!("  through proxy p50 {:>7.1}  p99 {:>7.1}", proxied.0, proxied.1);
    println!("  added         p50 {:>7.1}  p99 {:>7.1}", proxied.0 - direct.0, proxied.1 - direct.1);

    // The machine is shared: alternate the two, report medians and the spread.
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..bulk_repeats {
        direct.push(bulk(sink, &sunk, bulk_bytes));
        proxied.push(bulk(sink_proxy.listen, &sunk, bulk_bytes));
    }
    let (direct, proxied) = (median(direct), median(proxied));
    println!("bulk, {} MiB one way, median of {bulk_repeats} (MB/s, min..max):", bulk_bytes >> 20);
    println!("  direct        {:>6.0}  ({:.0}..{:.0})", direct.1, direct.0, direct.2);
    println!("  through proxy {:>6.0}  ({:.0}..{:.0})", proxied.1, proxied.0, proxied.2);
    println!("  ratio         {:>6.2}", proxied.1 / direct.1);
}

/// (min, median, max).
fn median(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2], values[values.len() - 1])
}

/// p50 and p99 round trip, in µs, of `count` messages of `bytes`, one at a time.
fn ping_pong(address: SocketAddr, count: usize, bytes: usize) -> (f64, f64) {
    let mut stream = TcpStream::connect(address).expect("connecting");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
    let message = vec![0x5a; bytes];
    for _ in 0..count / 10 {
        round_trip(&mut stream, &message);
    }
    let mut took: Vec<Duration> = (0..count).map(|_| round_trip(&mut stream, &message)).collect();
    took.sort();
    let micros = |quantile: f64| took[((took.len() - 1) as f64 * quantile) as usize].as_secs_f64() * 1e6;
    (micros(0.50), micros(0.99))
}

/// A server that reads each connection to its end and reports the byte count.
fn sink_server() -> (SocketAddr, mpsc::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the sink");
    let address = listener.local_addr().expect("the sink's address");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0; 256 * 1024];
                let mut total = 0u64;
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    total += read as u64;
                }
                let _ = sender.send(total);
            });
        }
    });
    (address, receiver)
}

/// MB/s of sending `bytes` to a sink at `address`, until the sink has them all.
fn bulk(address: SocketAddr, sunk: &mpsc::Receiver<u64>, bytes: u64) -> f64 {
    let mut stream = TcpStream::connect(address).expect("connecting");
    let block = vec![0xa5; 1024 * 1024];
    let started = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        stream.write_all(&block).expect("sending");
        sent += block.len() as u64;
    }
    stream.shutdown(Shutdown::Write).expect("half-closing");
    let received = sunk.recv_timeout(Duration::from_secs(300)).expect("the sink's count");
    assert_eq!(received, bytes, "the sink got a different byte count");
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}
