//! Consumers in their own process, so a fault can kill them for real.
//!
//! A `consumer-crash` fault must look to the cluster like a machine dying: no
//! final commit, no LeaveGroup, heartbeats simply stop, and the group coordinator
//! finds out when the session times out. librdkafka closes a consumer (commit,
//! leave) whenever its handle is destroyed, so an in-process consumer cannot die
//! that way; a child process killed with SIGKILL can. `corelog run` therefore runs
//! every consumer of a workload with consumer-crash faults as a hidden
//! `corelog consumer-worker` child, which consumes exactly as the in-process
//! consumer does ([`kafka::consume`]) and streams what it processed to the parent
//! over its stdout.
//!
//! The crash point: on SIGUSR1 the worker dies (SIGKILL to itself) halfway
//! through processing its next batch, after the commit under at-most-once and
//! before it under at-least-once. That is the worst moment for each commit mode,
//! so a short run shows what the guarantee allows (a skipped half batch, or a
//! re-delivered one) instead of hoping a random signal lands in a microsecond
//! window. If no batch comes within [`CRASH_GRACE`], the parent kills it outright.
//!
//! Stdout record, per processed message (little-endian):
//!
//! ```text
//! size  field
//!    2  topic index (into the worker's --topic list)
//!    4  partition
//!    8  offset
//!    8  received time, µs since the Unix epoch
//!    4  payload length
//!    1  n = bytes of the payload that follow (its harness header, at most 28)
//!    n  the payload's first n bytes
//! ```
//!
//! The parent rebuilds a payload of the original length from the header (the
//! filler is not needed by any measurement), so the sink cannot tell a worker's
//! messages from an in-process consumer's.

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::kafka::{self, Ending};
use super::{CommitMode, ConsumerSettings, MessageSink, Received};
use crate::payload::PAYLOAD_HEADER_BYTES;

/// How long a crashing worker may take to reach its crash point before it is
/// killed outright.
pub const CRASH_GRACE: Duration = Duration::from_secs(2);
/// How long a stopping worker may take to commit, leave and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    group: String,
    /// A topic to subscribe to (repeatable); records name it by position.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// `before` (at-most-once) or `after` (at-least-once) processing.
    #[arg(long, value_parser = parse_commit)]
    commit: CommitMode,
    /// A librdkafka consumer setting, `key=value` (repeatable).
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_commit(text: &str) -> Result<CommitMode, String> {
    CommitMode::from_name(text).ok_or_else(|| format!("`{text}`: expected `before` or `after`"))
}

pub(crate) fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected key=value"))?;
    Ok((key.to_string(), value.to_string()))
}

/// The child's side: consume until SIGTERM (clean close, exit 0) or SIGUSR1
/// (crash, see the module docs).
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let crash = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, crash.clone())?;
    let overrides = args.settings.into_iter().collect();
    let consumer = kafka::subscribed_consumer(&args.bootstrap, &args.topics, &args.group, &overrides)?;
    let sink = StdoutSink {
        topics: args.topics,
        out: std::sync::Mutex::new(BufWriter::new(std::io::stdout())),
        parent_gone: stop.clone(),
    };
    let ending = kafka::consume(&consumer, args.commit, &sink, &stop, Some(&crash))?;
    sink.flush()?;
    if ending == Ending::Crashed {
        crash_now();
    }
    kafka::close(&consumer);
    drop(consumer);
    Ok(())
}

/// Kills this process with SIGKILL, which cannot be caught, so nothing of it
/// (librdkafka's threads included) runs after it: a crash, not an exit.
#[allow(unsafe_code)] // kill(2) on our own pid: `std::process::abort` raises SIGABRT
pub(crate) fn crash_now() {
    // SAFETY: kill(2) takes no pointers and touches no memory of ours.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Writes one record per processed message; flushed after every message so what
/// was processed before a crash reaches the parent.
struct StdoutSink {
    topics: Vec<String>,
    out: std::sync::Mutex<BufWriter<std::io::Stdout>>,
    /// Set when stdout fails: the parent is gone, so the worker stops consuming.
    parent_gone: Arc<AtomicBool>,
}

impl StdoutSink {
    fn flush(&self) -> anyhow::Result<()> {
        self.out.lock().expect("stdout lock").flush().context("writing to the parent")
    }
}

impl MessageSink for StdoutSink {
    fn received(&self, message: Received<'_>) {
        let topic = self.topics.iter().position(|t| t == message.topic).unwrap_or(0) as u16;
        let record = encode_record(topic, &message);
        let mut out = self.out.lock().expect("stdout lock");
        if let Err(error) = out.write_all(&record).and_then(|()| out.flush()) {
            // A closed pipe: nobody reads what this worker processes any more.
            tracing::warn!("consumer worker: writing to the parent failed ({error}); stopping");
            self.parent_gone.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One stdout record (layout in the module docs).
fn encode_record(topic: u16, message: &Received<'_>) -> Vec<u8> {
    let head = &message.payload[..message.payload.len().min(PAYLOAD_HEADER_BYTES)];
    let mut record = Vec::with_capacity(27 + head.len());
    record.extend_from_slice(&topic.to_le_bytes());
    record.extend_from_slice(&message.partition.to_le_bytes());
    record.extend_from_slice(&message.offset.to_le_bytes());
    record.extend_from_slice(&message.received_us.to_le_bytes());
    record.extend_from_slice(&(message.payload.len() as u32).to_le_bytes());
    record.push(head.len() as u8);
    record.extend_from_slice(head);
    record
}

/// The parent's side: a running worker and the thread that feeds its records to
/// the sink.
pub struct WorkerConsumer(ChildClient);

impl WorkerConsumer {
    pub fn spawn(
        bootstrap: &str,
        topics: &[String],
        settings: &ConsumerSettings,
        sink: Arc<dyn MessageSink>,
    ) -> anyhow::Result<WorkerConsumer> {
        let exe = std::env::current_exe().context("locating the corelog binary")?;
        let mut command = Command::new(exe);
        command.arg("consumer-worker").arg("--bootstrap").arg(bootstrap).arg("--group").arg(&settings.group_id);
        command.arg("--commit").arg(settings.commit.name());
        for topic in topics {
            command.arg("--topic").arg(topic);
        }
        for (key, value) in &settings.overrides {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        let topics = topics.to_vec();
        let child = ChildClient::spawn(command, "consumer worker", move |stdout| {
            read_records(BufReader::new(stdout), &topics, &*sink)
        })?;
        Ok(WorkerConsumer(child))
    }

    /// Makes the worker die at its crash point (or kills it after [`CRASH_GRACE`]);
    /// returns once it is dead and everything it processed was handed on.
    pub fn crash(self) -> anyhow::Result<()> {
        self.0.crash()
    }

    /// Stops the worker cleanly (final commit, leave the group).
    pub fn stop(self) -> anyhow::Result<()> {
        self.0.stop()
    }
}

/// A client of `corelog run` in a child process (a consumer worker, a processor
/// of the exactly-once stage), and the thread that reads what it writes to its
/// stdout. On SIGUSR1 the child crashes at its crash point, on SIGTERM it ends
/// cleanly; dropped, it is killed.
pub struct ChildClient {
    child: Child,
    reader: Option<JoinHandle<anyhow::Result<()>>>,
    /// What the child is, for errors ("consumer worker").
    what: &'static str,
}

impl ChildClient {
    /// Starts `command` (stdin closed, stderr shared, librdkafka's log off unless
    /// `CORELOG_LOG` says otherwise) and a thread running `read` on its stdout.
    pub fn spawn(
        mut command: Command,
        what: &'static str,
        read: impl FnOnce(ChildStdout) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<ChildClient> {
        let mut child = command
            .env(
                "CORELOG_LOG",
                std::env::var("CORELOG_LOG").unwrap_or_else(|_| "warn,rdkafka=off,librdkafka=off".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting a {what}"))?;
        let stdout = child.stdout.take().with_context(|| format!("{what} stdout"))?;
        let reader =
            std::thread::Builder::new().name("corelog-child-reader".to_string()).spawn(move || read(stdout))?;
        Ok(ChildClient { child, reader: Some(reader), what })
    }

    /// Makes the child die at its crash point (or kills it after [`CRASH_GRACE`]);
    /// returns once it is dead and everything it wrote was read.
    pub fn crash(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGUSR1);
        if !self.wait_for_exit(CRASH_GRACE)? {
            let _ = self.child.kill();
            self.child.wait()?;
        }
        self.join_reader()
    }

    /// Stops the child cleanly and checks that it exited with success.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM);
        if !self.wait_for_exit(STOP_TIMEOUT)? {
            let _ = self.child.kill();
            let _ = self.child.wait();
            bail!("a {} did not stop within {STOP_TIMEOUT:?} and was killed", self.what);
        }
        let status = self.child.wait()?;
        self.join_reader()?;
        if !status.success() {
            bail!("a {} exited with {status}", self.what);
        }
        Ok(())
    }

    #[allow(unsafe_code)] // kill(2): std sends no signal but SIGKILL
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) takes no pointers and touches no memory of ours. (The pid is
        // a child we own and have not reaped, so no other process can have it.)
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(false)
    }

    fn join_reader(&mut self) -> anyhow::Result<()> {
        match self.reader.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("a {}'s reader thread panicked", self.what),
            None => Ok(()),
        }
    }
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = self.join_reader();
        }
    }
}

/// Feeds the worker's records to `sink` until its stdout closes. A record cut
/// short by the worker's death is dropped: the worker had not finished handing it
/// over, so it was not processed.
fn read_records(mut input: impl Read, topics: &[String], sink: &dyn MessageSink) -> anyhow::Result<()> {
    let mut fixed = [0u8; 27];
    let mut payload = Vec::new();
    loop {
        match input.read_exact(&mut fixed) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error).context("reading from a consumer worker"),
        }
        let field = |at: usize, n: usize| &fixed[at..at + n];
        let topic = u16::from_le_bytes(field(0, 2).try_into().expect("2 bytes")) as usize;
        let partition = i32::from_le_bytes(field(2, 4).try_into().expect("4 bytes"));
        let offset = i64::from_le_bytes(field(6, 8).try_into().expect("8 bytes"));
        let received_us = i64::from_le_bytes(field(14, 8).try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(field(22, 4).try_into().expect("4 bytes")) as usize;
        let head = fixed[26] as usize;
        if head > PAYLOAD_HEADER_BYTES || head > length {
            bail!("a consumer worker wrote a malformed record");
        }
        payload.clear();
        payload.resize(length, 0);
        match input.read_exact(&mut payload[..head]) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error).context("reading from a consumer worker"),
        }
        let Some(topic) = topics.get(topic) else {
            bail!("a consumer worker named topic #{topic}, which it was not given")
        };
        sink.received(Received { topic, partition, offset, key: None, payload: &payload, received_us });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadHeader;
    use std::sync::Mutex;

    /// Topic, partition, offset, payload length, header.
    type Seen = (String, i32, i64, usize, Option<PayloadHeader>);

    #[derive(Default)]
    struct Collect(Mutex<Vec<Seen>>);

    impl MessageSink for Collect {
        fn received(&self, m: Received<'_>) {
            let header = PayloadHeader::parse(m.payload);
            self.0.lock().unwrap().push((m.topic.to_string(), m.partition, m.offset, m.payload.len(), header));
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_last_record_is_dropped() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let header = PayloadHeader { producer_id: 9, sequence: 41, send_time_us: 1_000 };
        let mut payload = vec![7u8; 1024];
        header.stamp(&mut payload);
        let mut bytes = Vec::new();
        for (topic, index, offset) in [("b", 1u16, 5i64), ("a", 0, 6)] {
            let message = Received { topic, partition: 3, offset, key: None, payload: &payload, received_us: 2_000 };
            bytes.extend(encode_record(index, &message));
        }
        // A third record cut in its payload head (its fixed part is whole).
        bytes.extend_from_within(..30);
        let collect = Collect::default();
        read_records(&bytes[..], &topics, &collect).unwrap();
        let got = collect.0.into_inner().unwrap();
        assert_eq!(got.len(), 2, "the torn third record is dropped");
        assert_eq!(got[0], ("b".to_string(), 3, 5, 1024, Some(header)));
        assert_eq!(got[1].0, "a");
        assert_eq!(got[1].2, 6);
    }

    #[test]
    fn a_record_longer_than_a_header_is_refused() {
        let mut bytes = encode_record(
            0,
            &Received { topic: "a", partition: 0, offset: 0, key: None, payload: &[1; 40], received_us: 0 },
        );
        bytes[26] = 29;
        let error = read_records(&bytes[..], &["a".to_string()], &Collect::default()).unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
    }
}
