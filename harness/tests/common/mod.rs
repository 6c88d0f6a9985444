//! Shared by the real-client integration tests: a `corelog broker` child process
//! ([`BrokerProcess`]), librdkafka client settings, and bounded waits.
//!
//! Every test stops by itself: each wait has a deadline and panics with a message
//! naming what it waited for, and [`Watchdog`] ends the whole test binary if a test
//! outlives its bound anyway (a client library call that never returns). Children
//! (brokers, Python scripts) get SIGKILL when the test thread that started them dies
//! (`PR_SET_PDEATHSIG`), and [`BrokerProcess`] kills its broker on drop, so no
//! broker outlives its test. On a failure the broker's log tail is printed.
//!
//! Data directories live under `CARGO_TARGET_TMPDIR` (the build disk: the engine's
//! O_DIRECT files need a real file system, and /tmp may be tmpfs); a passing test
//! removes its own, a failing one leaves it for inspection.

#![allow(dead_code)] // Each test binary uses its own subset.

pub mod cluster;
pub mod raw;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The line `corelog broker` logs once it accepts connections.
const READY_MARKER: &str = "corelog broker ready on ";
/// Longest wait for a broker to print its ready line (recovery included).
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a broker to exit after SIGTERM or SIGKILL.
const BROKER_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restart keeps retrying to bind the previous port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of broker log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// A broker's settings for one test.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Names the data directory; unique per test.
    pub name: String,
    pub cores: usize,
    /// Contents of the `--config` YAML file, if any.
    pub config_yaml: Option<String>,
    /// `--advertised-listener host:port` (e.g. a test proxy in front of the broker).
    pub advertised_listener: Option<String>,
    /// A data directory of the test's own (e.g. on a small file system it mounted),
    /// instead of a fresh one under the test's temporary directory. Left in place.
    pub data_dir: Option<PathBuf>,
    /// More `corelog broker` arguments (hidden test-only flags).
    pub extra_args: Vec<String>,
}

impl BrokerOptions {
    pub fn new(name: &str) -> BrokerOptions {
        BrokerOptions {
            name: name.to_string(),
            cores: 2,
            config_yaml: None,
            advertised_listener: None,
            data_dir: None,
            extra_args: Vec::new(),
        }
    }

    /// Every topic, internal ones included, acknowledges writes only once they are
    /// fdatasync'ed. A SIGKILL loses nothing acknowledged under any policy; this one
    /// makes the tests that kill the broker hold under a power loss too.
    pub fn durable(mut self) -> BrokerOptions {
        self.config_yaml = Some("topic_defaults:\n  fsync.policy: always\n".to_string());
        self
    }
}

/// A `corelog broker` child process on its own data directory.
pub struct BrokerProcess {
    options: BrokerOptions,
    child: Option<Child>,
    /// The test's directory: log, config, and the data directory unless the options
    /// name another.
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    config_path: Option<PathBuf>,
    address: SocketAddr,
}

impl BrokerProcess {
    /// Starts a broker on a fresh data directory, on a free port.
    pub fn start(options: BrokerOptions) -> BrokerProcess {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corelog-itest").join(&options.name);
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap_or_else(|e| panic!("removing the old {}: {e}", root.display()));
        }
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let config_path = options.config_yaml.as_ref().map(|yaml| {
            let path = root.join("broker.yaml");
            std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        });
        let mut broker = BrokerProcess {
            data_dir: options.data_dir.clone().unwrap_or_else(|| root.join("data")),
            log_path: root.join("broker.log"),
            config_path,
            options,
            child: None,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            root,
        };
        broker.spawn_and_wait_ready(0).unwrap_or_else(|e| panic!("{e}"));
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The broker process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    /// The directory of one partition's log.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(topic).join(partition.to_string())
    }

    /// SIGTERM, then waits for the exit and asserts it was clean (status 0).
    pub fn stop(&mut self) {
        let status = self.signal_and_wait(libc::SIGTERM);
        assert!(status.success(), "broker exited with {status} after SIGTERM\n{}", self.log_tail());
    }

    /// Waits for the broker to exit by itself, at most `timeout`; panics (with the
    /// log tail) if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        match wait_with_timeout(&mut child, timeout) {
            Some(status) => {
                // Give the log reader a moment to write the last lines.
                std::thread::sleep(Duration::from_millis(200));
                status
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the broker was still running {timeout:?} later\n{}", self.log_tail())
            }
        }
    }

    /// The broker's whole log (all runs of this test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The extra `corelog broker` arguments of the next [`BrokerProcess::restart`].
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.options.extra_args = args;
    }

    /// SIGKILL: the broker gets no chance to sync or close anything.
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// Starts the broker again on the same data directory and the same port, so
    /// clients that knew it reconnect to it.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the broker is still running");
        let port = self.address.port();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.spawn_and_wait_ready(port) {
                Ok(()) => return,
                // The port may be held a moment longer by the dead process's sockets.
                Err(error) if error.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("restarting the broker on port {port}: {error}"),
            }
        }
    }

    /// The last lines the broker logged (all runs of this test).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!("--- broker log tail ({}) ---\n{}\n---", self.log_path.display(), lines[from..].join("\n"))
    }

    fn signal_and_wait(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({}, {signal}): {}", child.id(), std::io::Error::last_os_error());
        wait_with_timeout(&mut child, BROKER_EXIT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker did not exit within {BROKER_EXIT_TIMEOUT:?} of signal {signal}\n{}", self.log_tail())
        })
    }

    fn spawn_and_wait_ready(&mut self, port: u16) -> Result<(), String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corelog"));
        command
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cores")
            .arg(self.options.cores.to_string())
            .env("NO_COLOR", "1")
            .env("CORELOG_LOG", std::env::var("CORELOG_LOG").unwrap_or_else(|_| "info".to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(path) = &self.config_path {
            command.arg("--config").arg(path);
        }
        if let Some(advertised) = &self.options.advertised_listener {
            command.arg("--advertised-listener").arg(advertised);
        }
        command.args(&self.options.extra_args);
        let mut child = spawn_dying_with_parent(&mut command).map_err(|e| format!("spawning corelog broker: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("opening {}: {e}", self.log_path.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.split(READY_MARKER).nth(1) {
                    let address = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    if let (Some(address), Some(tx)) = (address, ready_tx.take()) {
                        let _ = tx.send(address);
                    }
                }
            }
        });
        match ready_rx.recv_timeout(BROKER_START_TIMEOUT) {
            Ok(address) => {
                self.address = address;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                // Give the log reader a moment to write the last lines.
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "the broker did not print {READY_MARKER:?} within {BROKER_START_TIMEOUT:?} (exit: {status})\n{}",
                    self.log_tail()
                ))
            }
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            eprintln!("data directory kept: {}", self.data_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Runs `corelog broker` with `args`, expecting it to refuse to start: returns its
/// exit status and everything it wrote to stderr. Panics (after killing it) if it is
/// still running after `timeout`, which is a broker that started.
pub fn run_broker_expecting_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corelog"));
    command
        .arg("broker")
        .args(args)
        .env("NO_COLOR", "1")
        .env("CORELOG_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn_dying_with_parent(&mut command).expect("spawning corelog broker");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let Some(status) = wait_with_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let log = reader.join().unwrap_or_default();
        panic!("corelog broker {args:?} was still running after {timeout:?}: it started\n{log}");
    };
    (status, reader.join().expect("the stderr reader"))
}

/// Spawns `command` so that the child gets SIGKILL when the thread that spawned it
/// dies (the test thread, or the whole test binary).
pub fn spawn_dying_with_parent(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Waits for `child` to exit, at most `timeout`; `None` if it is still running.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(error) => panic!("waiting for child {}: {error}", child.id()),
        }
    }
}

/// Ends the whole test binary if the test holding it runs past `bound`: the safety
/// net for a client call that never returns. Dropping it disarms it.
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(test: &'static str, bound: Duration) -> Watchdog {
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(bound) {
                eprintln!("test {test} ran past its bound of {bound:?}: ending the test binary");
                std::process::exit(101);
            }
        });
        Watchdog { disarm: Some(disarm) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm.take();
    }
}

/// Now, as a record timestamp. Batches a test builds itself carry it: a topic's age
/// retention (7 days by default) deletes the active segment too, as Kafka's does,
/// so a made-up old timestamp would have the records deleted while the test runs.
pub fn now_timestamp() -> corelog_engine::TimestampMs {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    corelog_engine::TimestampMs(now.as_millis() as i64)
}

/// Polls `done` every 50 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// librdkafka settings every client of the tests starts from.
pub fn client_config(broker: &BrokerProcess) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("broker.address.family", "v4")
        // Reconnect quickly after a broker restart.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    config
}

pub fn admin_client(broker: &BrokerProcess) -> AdminClient<DefaultClientContext> {
    client_config(broker).create().expect("creating the admin client")
}

/// Admin requests wait at most this long for an answer.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(Duration::from_secs(30))).operation_timeout(Some(Duration::from_secs(30)))
}

/// Creates `topic` and asserts the broker said yes.
pub async fn create_topic(broker: &BrokerProcess, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin_client(broker);
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = admin.create_topics([&new_topic], &admin_options()).await.expect("CreateTopics request");
    assert_eq!(results.len(), 1);
    if let Err((name, code)) = &results[0] {
        panic!("creating topic {name}: {code:?}");
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    pub fn from_message(message: &impl Message) -> Record {
        Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        }
    }

    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

/// Every record of `partitions` partitions of `topic`, read without a consumer group
/// (manual assignment from the log start) up to each partition's high watermark as
/// it was when the read started. Per partition, in offset order.
pub fn read_partitions(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> BTreeMap<i32, Vec<Record>> {
    // librdkafka's assign() needs a group id, though no group is joined and
    // nothing is committed.
    let consumer: BaseConsumer = client_config(broker)
        .set("group.id", "corelog-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("creating a consumer");
    // partition -> (log start offset, high watermark)
    let mut bounds = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("ListOffsets for {topic}/{partition}: {e}"));
        bounds.insert(partition, (low, high));
        assignment.add_partition_offset(topic, partition, Offset::Offset(low)).expect("valid offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records: BTreeMap<i32, Vec<Record>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let deadline = Instant::now() + timeout;
    let done = |records: &BTreeMap<i32, Vec<Record>>| {
        bounds.iter().all(|(p, (low, high))| high <= low || records[p].last().is_some_and(|r| r.offset + 1 >= *high))
    };
    let mut last_error = None;
    while !done(&records) {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} reading {topic} (log start, high watermark) {bounds:?}; read up to {:?}; \
             last consumer error: {last_error:?}",
            records.iter().map(|(p, r)| (*p, r.last().map(|r| r.offset))).collect::<BTreeMap<_, _>>()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let record = Record::from_message(&message);
                if record.offset < bounds[&record.partition].1 {
                    records.get_mut(&record.partition).expect("assigned partition").push(record);
                }
            }
            // Errors may be passing (a broker restarting); the deadline decides.
            Some(Err(error)) => last_error = Some(error.to_string()),
            None => {}
        }
    }
    for (partition, list) in &records {
        for pair in list.windows(2) {
            assert!(pair[0].offset < pair[1].offset, "{topic}/{partition}: offsets out of order: {pair:?}");
        }
    }
    records
}

/// Runs `future` to completion on a fresh single-threaded tokio runtime (admin
/// calls and delivery reports are futures; the tests themselves are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(future)
}

/// One message to produce: key and value.
pub type Outgoing = (Option<Vec<u8>>, Vec<u8>);

/// Where the broker put an acknowledged message, or why it did not.
pub type DeliveryOutcome = Result<(i32, i64), String>;

/// Produces `messages` to `topic` (to `partition` if given, else by the producer's
/// partitioner) and waits for every delivery report, at most `timeout` in all.
/// Outcomes are in `messages` order.
pub fn produce<C: rdkafka::ClientContext + 'static>(
    producer: &rdkafka::producer::FutureProducer<C>,
    topic: &str,
    partition: Option<i32>,
    messages: &[Outgoing],
    timeout: Duration,
) -> Vec<DeliveryOutcome> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::FutureRecord;

    let deadline = Instant::now() + timeout;
    let mut deliveries = Vec::with_capacity(messages.len());
    for (index, (key, value)) in messages.iter().enumerate() {
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(value.as_slice());
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    assert!(
                        Instant::now() < deadline,
                        "timed out after {timeout:?} queueing message {index} for {topic}"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => panic!("queueing message {index} for {topic}: {error}"),
            }
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    block_on(async {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let waited = tokio::time::timeout(remaining, async {
            for delivery in deliveries {
                outcomes.push(match delivery.await {
                    Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                    Ok(Err((error, _))) => Err(error.to_string()),
                    Err(_) => Err("the producer dropped the delivery report".to_string()),
                });
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "timed out after {timeout:?} waiting for delivery reports from {topic}: {} of {} reported",
                outcomes.len(),
                messages.len()
            );
        }
        outcomes
    })
}

/// Panics with the first failures unless every outcome is an acknowledgement.
pub fn expect_all_acknowledged(topic: &str, outcomes: &[DeliveryOutcome]) -> Vec<(i32, i64)> {
    let failed: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().err().map(|e| format!("message {i}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} messages to {topic} were not acknowledged; first: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    outcomes.iter().map(|o| *o.as_ref().expect("checked")).collect()
}

/// A client context that keeps librdkafka's log lines (which otherwise go nowhere:
/// the tests install no logger), so a failure can show what the client decided.
#[derive(Clone, Default)]
pub struct KeptLogs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl KeptLogs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("kept logs").clone()
    }
}

impl rdkafka::ClientContext for KeptLogs {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.lock().expect("kept logs").push(format!("{level:?} {facility}: {message}"));
    }
}
