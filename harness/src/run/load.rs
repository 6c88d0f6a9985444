//! The load: producer threads that follow a rate schedule (open loop).
//!
//! Each message is due one interval (1 / rate) after the previous one's due time.
//! The producer hands it to the client at that time or, if it has fallen behind,
//! as soon as it can; the token carries both times, so the corrected latency (due →
//! acknowledged) shows any lag that the service time (handed over → acknowledged)
//! would hide. The rate is read from a shared [`Rate`] before every message, so a
//! controller can move it while the run goes (OMB's `producerRate: 0`, see
//! [`RateController`]); a fixed-rate workload sets it once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checker::History;
use crate::driver::{ProducerHandle, SendError, SendToken};
use crate::payload::{now_us, PayloadHeader, PAYLOAD_HEADER_BYTES};
use crate::run::metrics::Metrics;

/// How keys are chosen (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChoice {
    None,
    RoundRobin,
    RandomNano,
}

/// How often a producer that sends back to back stops to report acknowledgements.
pub const POLL_INTERVAL_US: i64 = 10;

/// Keys in the pool the key distributors draw from.
pub const KEY_POOL_SIZE: usize = 10_000;

/// A producer's current rate in messages per second, shared with a controller.
#[derive(Debug, Default)]
pub struct Rate(AtomicU64);

impl Rate {
    pub fn new(per_second: f64) -> Rate {
        Rate(AtomicU64::new(per_second.to_bits()))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, per_second: f64) {
        self.0.store(per_second.to_bits(), Ordering::Relaxed);
    }
}

/// Finds the highest rate the system sustains, as OMB's `producerRate: 0` does:
/// start low, grow by a quarter each second while the producers reach their target
/// and consumers keep up, back off by a fifth as soon as a backlog of more than
/// [`RateController::BACKLOG_SECONDS_MAX`] seconds of traffic builds up or
/// producers fall behind their schedule.
pub struct RateController {
    /// The aggregate rate over all producers.
    total_per_second: f64,
    producers: usize,
}

impl RateController {
    pub const START_PER_SECOND: f64 = 10_000.0;
    pub const BACKLOG_SECONDS_MAX: f64 = 1.0;
    pub const PUBLISH_DELAY_US_MAX: u64 = 50_000;

    pub fn new(producers: usize) -> RateController {
        RateController { total_per_second: Self::START_PER_SECOND, producers: producers.max(1) }
    }

    pub fn per_producer(&self) -> f64 {
        self.total_per_second / self.producers as f64
    }

    /// Adjusts after a window: what was acknowledged per second, the backlog, and
    /// the producers' median lag behind their schedule.
    pub fn adjust(&mut self, acknowledged_per_second: f64, backlog: i64, publish_delay_us_p50: u64) -> f64 {
        let behind = backlog as f64 > self.total_per_second * Self::BACKLOG_SECONDS_MAX
            || publish_delay_us_p50 > Self::PUBLISH_DELAY_US_MAX;
        if behind {
            self.total_per_second = (self.total_per_second * 0.8).max(100.0);
        } else if acknowledged_per_second >= self.total_per_second * 0.9 {
            self.total_per_second *= 1.25;
        }
        self.per_producer()
    }
}

/// Makes a new client producer: after a producer-crash fault, the thread starts
/// over with a fresh one, as a restarted application would.
pub type ProducerFactory = Arc<dyn Fn() -> anyhow::Result<Box<dyn ProducerHandle>> + Send + Sync>;

/// A producer-crash fault's hold on one producer thread.
///
/// `crash` makes the thread drop its client without flushing: librdkafka purges
/// what it holds, reporting queued messages as failed (never sent) and in-flight
/// ones as ambiguous (maybe written), which is what the checker should see of a
/// producer that died mid-send. The thread sends nothing until `restart`, then
/// starts a new client and resumes its rate schedule from that moment (a new
/// process does not make up for the time it was dead).
#[derive(Debug, Default)]
pub struct CrashSwitch(AtomicU8);

impl CrashSwitch {
    const RUNNING: u8 = 0;
    const CRASH: u8 = 1;
    const DOWN: u8 = 2;
    const RESTART: u8 = 3;

    pub fn crash(&self) {
        self.0.store(Self::CRASH, Ordering::SeqCst);
    }

    /// Whether a crash is in effect: the thread was told to crash and does not
    /// send again until it has restarted.
    pub fn is_crashed(&self) -> bool {
        self.0.load(Ordering::SeqCst) != Self::RUNNING
    }

    pub fn restart(&self) {
        // Only a producer that is down (or about to be) restarts.
        let _ = self.0.compare_exchange(Self::DOWN, Self::RESTART, Ordering::SeqCst, Ordering::SeqCst);
        let _ = self.0.compare_exchange(Self::CRASH, Self::RESTART, Ordering::SeqCst, Ordering::SeqCst);
    }
}

pub struct ProducerPlan {
    pub producer_id: u64,
    /// The topic's index in the run, for the history.
    pub topic_index: u32,
    pub topic: String,
    /// Where every message goes, when that is decided here: `Some(0)` for a topic
    /// of one partition, the only answer a partitioner can give (naming it skips
    /// librdkafka's partitioner: a lock and a clock read per message); `None` lets
    /// the client's partitioner choose, which for keyless messages avoids
    /// partitions without a leader.
    pub partition: Option<i32>,
    /// Messages per second, read before every message.
    pub rate: Arc<Rate>,
    pub keys: KeyChoice,
    /// Payload templates, used in turn; each is at least the header's size.
    pub payloads: Arc<Vec<Vec<u8>>>,
    pub factory: ProducerFactory,
    pub crash: Arc<CrashSwitch>,
    /// Every send is recorded here before it is handed to the client.
    pub history: Arc<History>,
}

/// What a producer thread reports when it ends.
#[derive(Debug, Default, Clone)]
pub struct ProducerReport {
    pub sent: u64,
    pub send_errors: SendErrors,
}

/// Sends the client refused (never handed over): how many, and the first one's
/// error text and message id (`p<producer>:<sequence>`), for the run's error table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendErrors {
    pub count: u64,
    pub first: Option<(String, String)>,
}

impl SendErrors {
    fn add(&mut self, other: SendErrors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

pub fn key_pool(seed: u64) -> Arc<Vec<Vec<u8>>> {
    let mut state = seed | 1;
    Arc::new(
        (0..KEY_POOL_SIZE)
            .map(|_| {
                // xorshift64*: cheap, deterministic keys; their values do not matter.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                format!("{:016x}", state.wrapping_mul(0x2545_f491_4f6c_dd1d)).into_bytes()
            })
            .collect(),
    )
}

/// The run's producer threads, in start order (`producer-<i>` in fault targets).
///
/// [`Producers::stop`] stops every thread and waits for it (each flushes what its
/// client holds first); dropping it does the same, so no exit path leaves a
/// producer sending.
#[derive(Default)]
pub struct Producers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ProducerReport>>,
    /// One per thread, in start order.
    crash_switches: Vec<Arc<CrashSwitch>>,
}

impl Producers {
    /// Starts one producer thread sending through `producer` as `plan` says.
    pub fn spawn(
        &mut self,
        producer: Box<dyn ProducerHandle>,
        plan: ProducerPlan,
        keys: Arc<Vec<Vec<u8>>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<()> {
        let crash = plan.crash.clone();
        let name = format!("corelog-producer-{}", plan.producer_id);
        let thread = ProducerThread {
            plan,
            keys,
            metrics,
            stop: self.stop.clone(),
            report: ProducerReport::default(),
            started: Instant::now(),
            due_us: now_us() as f64,
            buffer: Vec::new(),
            sequence: 0,
            polled_us: 0,
        };
        self.threads.push(std::thread::Builder::new().name(name).spawn(move || thread.run(producer))?);
        self.crash_switches.push(crash);
        Ok(())
    }

    /// Each thread's hold for producer-crash faults, in start order.
    pub fn crash_switches(&self) -> &[Arc<CrashSwitch>] {
        &self.crash_switches
    }

    /// Stops every producer thread and waits until each has flushed and ended;
    /// returns their send errors. Stopping again returns none.
    pub fn stop(&mut self) -> anyhow::Result<SendErrors> {
        self.stop.store(true, Ordering::Relaxed);
        let mut send_errors = SendErrors::default();
        let mut panicked = 0;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(report) => send_errors.add(report.send_errors),
                Err(_) => panicked += 1,
            }
        }
        if panicked > 0 {
            anyhow::bail!("{panicked} producer thread(s) panicked");
        }
        Ok(send_errors)
    }
}

impl Drop for Producers {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!("{error:#}");
        }
    }
}

/// One producer thread: its schedule and where it stands in it.
struct ProducerThread {
    plan: ProducerPlan,
    keys: Arc<Vec<Vec<u8>>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    report: ProducerReport,
    /// For `RandomNano` keys.
    started: Instant,
    /// When the next message is due (µs since the epoch; fractional, as 1 / rate is).
    due_us: f64,
    /// The message being sent: its template, stamped with its header.
    buffer: Vec<u8>,
    /// The next message's sequence number.
    sequence: u64,
    /// When the client last reported acknowledgements.
    polled_us: i64,
}

impl ProducerThread {
    /// Sends on schedule until `stop` is set, then flushes and returns the report.
    fn run(mut self, mut producer: Box<dyn ProducerHandle>) -> ProducerReport {
        while !self.stop.load(Ordering::Relaxed) {
            if self.plan.crash.0.load(Ordering::SeqCst) != CrashSwitch::RUNNING {
                match crashed(&self.plan, producer, &self.stop) {
                    Some(restarted) => producer = restarted,
                    None => return self.report,
                }
                self.due_us = now_us() as f64;
                continue;
            }
            // One clock read per message: it decides whether the message is due and,
            // if so, is its send time (at a million messages a second, clock reads
            // were a tenth of this thread's time).
            let now = now_us();
            let ahead_us = self.due_us as i64 - now;
            if ahead_us > 0 {
                // Wait in slices so a stop or a rate change is seen promptly.
                producer.poll(Duration::from_micros(ahead_us.min(50_000) as u64));
                continue;
            }
            self.send_next(&mut *producer, now);
            self.sequence += 1;
        }
        if let Err(error) = producer.flush(Duration::from_secs(30)) {
            tracing::warn!("producer {}: {error:#}", self.plan.producer_id);
        }
        self.report
    }

    /// Sends the next message, which is due (`now` is the clock read that said so):
    /// hands it to the client, polling while the client's queue is full, unless
    /// the producer is stopped meanwhile or the send fails.
    fn send_next(&mut self, producer: &mut dyn ProducerHandle, mut now: i64) {
        let template = &self.plan.payloads[(self.sequence % self.plan.payloads.len() as u64) as usize];
        self.buffer.clear();
        self.buffer.extend_from_slice(template);
        if self.buffer.len() < PAYLOAD_HEADER_BYTES {
            self.buffer.resize(PAYLOAD_HEADER_BYTES, 0);
        }
        let keys = &self.keys;
        let key = match self.plan.keys {
            KeyChoice::None => None,
            KeyChoice::RoundRobin => Some(keys[(self.sequence % keys.len() as u64) as usize].as_slice()),
            KeyChoice::RandomNano => {
                Some(keys[(self.started.elapsed().as_nanos() % keys.len() as u128) as usize].as_slice())
            }
        };
        let (producer_id, sequence) = (self.plan.producer_id, self.sequence);
        let message_due_us = self.due_us as i64;
        self.due_us += 1e6 / self.plan.rate.get().max(1e-3);
        loop {
            let sent_us = now;
            PayloadHeader { producer_id, sequence, send_time_us: sent_us }.stamp(&mut self.buffer);
            let token = SendToken { producer_id, sequence, intended_us: message_due_us, sent_us };
            // Before the send: its outcome may be reported before `send` returns.
            self.plan.history.sent(producer_id, sequence, self.plan.topic_index);
            match producer.send(&self.plan.topic, self.plan.partition, key, &self.buffer, token) {
                Ok(()) => {
                    // Between sends, report what was acknowledged meanwhile; at
                    // most every POLL_INTERVAL_US, which bounds how late an ack
                    // is timed while the producer is saturated (a waiting one
                    // times it on arrival).
                    if sent_us - self.polled_us >= POLL_INTERVAL_US {
                        producer.poll(Duration::ZERO);
                        self.polled_us = sent_us;
                    }
                    self.metrics.note_sent();
                    self.report.sent += 1;
                    return;
                }
                Err(SendError::QueueFull) => {
                    if self.stop.load(Ordering::Relaxed) {
                        // Never handed over: a definite failure, not a possible write.
                        self.plan.history.failed(producer_id, sequence, false);
                        return;
                    }
                    producer.poll(Duration::from_micros(200));
                    now = now_us();
                }
                Err(SendError::Failed(error)) => {
                    tracing::debug!("producer {producer_id}: send failed: {error}");
                    self.plan.history.failed(producer_id, sequence, false);
                    let errors = &mut self.report.send_errors;
                    errors.count += 1;
                    if errors.first.is_none() {
                        errors.first = Some((error.to_string(), format!("p{producer_id}:{sequence}")));
                    }
                    return;
                }
            }
        }
    }
}

/// A crashed producer: drops its client unflushed, waits for the restart (or the
/// end of the run: `None`), and returns a new client.
fn crashed(
    plan: &ProducerPlan,
    producer: Box<dyn ProducerHandle>,
    stop: &AtomicBool,
) -> Option<Box<dyn ProducerHandle>> {
    drop(producer);
    let _ = plan.crash.0.compare_exchange(CrashSwitch::CRASH, CrashSwitch::DOWN, Ordering::SeqCst, Ordering::SeqCst);
    while plan.crash.0.load(Ordering::SeqCst) != CrashSwitch::RESTART {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match (plan.factory)() {
        Ok(producer) => {
            plan.crash.0.store(CrashSwitch::RUNNING, Ordering::SeqCst);
            Some(producer)
        }
        Err(error) => {
            tracing::error!("producer {}: could not start again after its crash: {error:#}", plan.producer_id);
            None
        }
    }
}
