//! The exactly-once guarantee's consume-transform-produce stage, the parent's side.
//!
//! Under `exactly-once`, the run's producers write the input topics, a stage of
//! `processing.processors` transactional processors (child processes:
//! [`crate::driver::processor`]) copies every input message to an output topic
//! in transactions that also commit the input offsets, and the run's
//! subscriptions read the outputs with `read_committed`: the checker's history is
//! the output's, and its verdict says whether every acknowledged input appears
//! there exactly once, in order, with no aborted copy read.
//!
//! [`Processors`] starts the processors, crashes and restarts them for
//! `processor-crash` faults, and collects what they report: transactions
//! committed and aborted, commit latency, and how far the stage has committed
//! each input partition, which tells the drain when the stage is done.
//!
//! The drain's end: the output's end offsets do not say where its last record is
//! (transaction markers take offsets after it, and may still be written after the
//! stage stopped), so once the stage is stopped the harness appends one end mark
//! ([`END_MARK`], no harness header, not transactional) to every output partition;
//! a subscription that read a partition's end mark has read everything the stage
//! committed before it.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use corelog_reports::model::StageSummary;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::driver::worker::ChildClient;

/// The payload of the end mark appended to every output partition once the stage
/// has stopped.
pub const END_MARK: &[u8] = b"corelog: end of the exactly-once stage's output";

/// The output topic of an input topic.
pub fn output_topic(input: &str) -> String {
    format!("{input}-out")
}

/// What the stage is: enough to start a processor again after a crash.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub bootstrap: String,
    /// The stage's consumer group; processor `i` is `transactional.id` `<group>-<i>`.
    pub group: String,
    pub inputs: Vec<String>,
    /// The output of `inputs[i]` is `outputs[i]`.
    pub outputs: Vec<String>,
    pub abort_rate: f64,
    pub max_messages: u32,
    pub seed: u64,
    /// Test only: an at-least-once stage (`corelog run --test-non-transactional-stage`).
    pub non_transactional: bool,
    pub producer_config: BTreeMap<String, String>,
    pub consumer_config: BTreeMap<String, String>,
}

/// What the processors reported, over all of them.
struct Reported {
    committed: u64,
    aborted_planned: u64,
    aborted_on_error: u64,
    messages_committed: u64,
    /// From `begin_transaction` to the commit's answer, µs.
    commit_latency_us: Histogram<u64>,
    /// The next offset the stage committed, per (input index, partition).
    committed_to: HashMap<(u32, i32), i64>,
}

/// The running stage.
pub struct Processors {
    spec: StageSpec,
    count: u32,
    reported: Arc<Mutex<Reported>>,
    slots: Mutex<Vec<Option<ChildClient>>>,
}

impl Processors {
    /// Starts `count` processors.
    pub fn start(spec: StageSpec, count: u32) -> anyhow::Result<Processors> {
        let reported = Reported::new()?;
        let processors =
            Processors { spec, count, reported: Arc::new(Mutex::new(reported)), slots: Mutex::new(Vec::new()) };
        for index in 0..count as usize {
            let child = processors.launch(index)?;
            processors.lock_slots().push(Some(child));
        }
        Ok(processors)
    }

    fn launch(&self, index: usize) -> anyhow::Result<ChildClient> {
        let spec = &self.spec;
        let exe = std::env::current_exe().context("locating the corelog binary")?;
        let mut command = Command::new(exe);
        command.arg("txn-processor").arg("--bootstrap").arg(&spec.bootstrap).arg("--group").arg(&spec.group);
        command.arg("--transactional-id").arg(format!("{}-{index}", spec.group));
        for (input, output) in spec.inputs.iter().zip(&spec.outputs) {
            command.arg("--input").arg(input).arg("--output").arg(output);
        }
        command.arg("--abort-rate").arg(spec.abort_rate.to_string());
        command.arg("--max-messages").arg(spec.max_messages.to_string());
        // Each processor (and each restart) draws its own aborts.
        command.arg("--seed").arg(spec.seed.wrapping_add(index as u64).to_string());
        if spec.non_transactional {
            command.arg("--non-transactional");
        }
        for (key, value) in &spec.producer_config {
            command.arg("--producer-set").arg(format!("{key}={value}"));
        }
        for (key, value) in &spec.consumer_config {
            command.arg("--consumer-set").arg(format!("{key}={value}"));
        }
        let reported = self.reported.clone();
        ChildClient::spawn(command, "transactional processor", move |stdout| {
            for line in BufReader::new(stdout).lines() {
                let line = line.context("reading from a transactional processor")?;
                let mut reported = reported.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(error) = reported.note(&line) {
                    tracing::warn!("transactional processor: {error:#} (in `{line}`)");
                }
            }
            Ok(())
        })
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<ChildClient>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock_slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Kills processor `index` in the middle of its next transaction.
    pub fn crash(&self, index: usize) -> anyhow::Result<()> {
        let mut slots = self.lock_slots();
        let Some(slot) = slots.get_mut(index) else { bail!("there is no processor-{index}") };
        match slot.take() {
            Some(child) => child.crash(),
            None => Ok(()),
        }
    }

    /// Starts processor `index` again if it is down: same `transactional.id`, so it
    /// fences the crashed instance and aborts what that left open.
    pub fn restart(&self, index: usize) -> anyhow::Result<()> {
        let mut slots = self.lock_slots();
        let Some(slot) = slots.get_mut(index) else { bail!("there is no processor-{index}") };
        if slot.is_none() {
            *slot = Some(self.launch(index)?);
        }
        Ok(())
    }

    /// Stops every processor after its current transaction; returns their errors.
    pub fn stop_all(&self) -> Vec<String> {
        let slots = std::mem::take(&mut *self.lock_slots());
        let mut errors = Vec::new();
        for (index, slot) in slots.into_iter().enumerate() {
            if let Some(Err(error)) = slot.map(ChildClient::stop) {
                errors.push(format!("processor-{index}: {error:#}"));
            }
        }
        errors
    }

    /// Whether the stage has committed every input partition up to its end offset
    /// (`ends[topic][partition]`, exclusive).
    pub fn caught_up(&self, ends: &[Vec<i64>]) -> bool {
        let reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        ends.iter().enumerate().all(|(topic, ends)| {
            ends.iter().enumerate().all(|(partition, &end)| {
                end <= 0 || reported.committed_to.get(&(topic as u32, partition as i32)).is_some_and(|&to| to >= end)
            })
        })
    }

    /// Transactions ended so far, committed or aborted: the stage's progress.
    pub fn transactions(&self) -> u64 {
        let reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.committed + reported.aborted_planned + reported.aborted_on_error
    }

    /// What the stage did, for the result.
    pub fn summary(&self) -> StageSummary {
        let reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let latency = &reported.commit_latency_us;
        let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
        StageSummary {
            processors: self.count,
            abort_rate: self.spec.abort_rate,
            transactional: !self.spec.non_transactional,
            committed: reported.committed,
            aborted_planned: reported.aborted_planned,
            aborted_on_error: reported.aborted_on_error,
            messages_committed: reported.messages_committed,
            commit_latency_p50_ms: ms(0.5),
            commit_latency_p99_ms: ms(0.99),
            commit_latency_max_ms: latency.max() as f64 / 1000.0,
        }
    }
}

impl Reported {
    fn new() -> anyhow::Result<Reported> {
        Ok(Reported {
            committed: 0,
            aborted_planned: 0,
            aborted_on_error: 0,
            messages_committed: 0,
            commit_latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).context("a latency histogram")?,
            committed_to: HashMap::new(),
        })
    }

    /// One line of a processor's stdout (the protocol is in `driver::processor`).
    fn note(&mut self, line: &str) -> anyhow::Result<()> {
        let mut words = line.split(' ');
        let kind = words.next().unwrap_or("");
        if kind == "ready" {
            return Ok(());
        }
        let mut number = |what: &str| -> anyhow::Result<u64> {
            words.next().and_then(|word| word.parse().ok()).with_context(|| format!("no {what}"))
        };
        let (messages, latency_us) = (number("message count")?, number("latency")?);
        match kind {
            "commit" => {
                self.committed += 1;
                self.messages_committed += messages;
                self.commit_latency_us.saturating_record(latency_us.max(1));
                for position in words {
                    let parsed: Option<(u32, i32, i64)> = (|| {
                        let mut parts = position.split(':');
                        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
                    })();
                    let (topic, partition, offset) = parsed.with_context(|| format!("`{position}` is no position"))?;
                    let to = self.committed_to.entry((topic, partition)).or_insert(offset);
                    *to = (*to).max(offset);
                }
            }
            "abort" => match words.next() {
                Some("planned") => self.aborted_planned += 1,
                _ => self.aborted_on_error += 1,
            },
            other => bail!("an unknown report `{other}`"),
        }
        Ok(())
    }
}

impl Drop for Processors {
    fn drop(&mut self) {
        for error in self.stop_all() {
            tracing::warn!("stopping the exactly-once stage: {error}");
        }
    }
}

/// Collects the offsets the end marks were written at.
struct MarkOffsets(Mutex<Vec<(String, i32, i64)>>);

impl ClientContext for MarkOffsets {}

impl ProducerContext for MarkOffsets {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => self.0.lock().unwrap_or_else(PoisonError::into_inner).push((
                message.topic().to_string(),
                message.partition(),
                message.offset(),
            )),
            Err((error, _)) => tracing::warn!("writing an end mark: {error}"),
        }
    }
}

/// Appends [`END_MARK`] to every partition of every output topic; returns, per
/// output (in order) and partition, the offset after its mark: what a
/// subscription must have read to have read the whole output.
pub fn write_end_marks(bootstrap: &str, outputs: &[String], partitions: u32) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config.set("acks", "all");
    config.set("enable.idempotence", "true");
    let producer: BaseProducer<MarkOffsets> =
        config.create_with_context(MarkOffsets(Mutex::new(Vec::new()))).context("creating the end-mark producer")?;
    for output in outputs {
        for partition in 0..partitions as i32 {
            producer
                .send(BaseRecord::<(), _>::to(output).partition(partition).payload(END_MARK))
                .map_err(|(error, _)| error)
                .with_context(|| format!("writing the end mark of {output}/{partition}"))?;
        }
    }
    producer.flush(Duration::from_secs(30)).context("writing the end marks")?;
    let written = std::mem::take(&mut *producer.context().0.lock().unwrap_or_else(PoisonError::into_inner));
    let mut ends = vec![vec![0i64; partitions as usize]; outputs.len()];
    for (topic, partition, offset) in written {
        if let (Some(index), Ok(partition)) = (outputs.iter().position(|o| *o == topic), usize::try_from(partition)) {
            if let Some(end) = ends[index].get_mut(partition) {
                *end = offset + 1;
            }
        }
    }
    if ends.iter().flatten().any(|&end| end == 0) {
        bail!("not every end mark of the exactly-once stage's output was acknowledged");
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_counted_and_committed_positions_only_move_forward() {
        let mut r = Reported::new().unwrap();
        r.note("ready").unwrap();
        r.note("commit 10 2500 0:1:10 1:0:4").unwrap();
        r.note("commit 3 1500 0:1:7").unwrap();
        r.note("abort 5 900 planned").unwrap();
        r.note("abort 5 900 error").unwrap();
        assert_eq!((r.committed, r.messages_committed, r.aborted_planned, r.aborted_on_error), (2, 13, 1, 1));
        assert_eq!(r.committed_to.get(&(0, 1)), Some(&10), "an older commit does not move a position back");
        assert_eq!(r.committed_to.get(&(1, 0)), Some(&4));
        assert_eq!(r.commit_latency_us.len(), 2, "aborts are not commit latencies");
        assert!(r.note("commit 1 5 0:x:3").is_err());
        assert!(r.note("commit").is_err());
        assert!(r.note("hello 1 2").is_err());
    }
}
