//! The run's consumers, by index (`consumer-<i>` in fault targets: topics in
//! order, then subscriptions, then members), so a fault can crash one and start
//! it again.
//!
//! Consumers are threads of this process, except in workloads with
//! consumer-crash faults: there every consumer is a `corelog consumer-worker`
//! child process (see [`crate::driver::worker`]), so a crash is a real SIGKILL
//! the group coordinator must notice by itself.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::bail;

use crate::driver::worker::WorkerConsumer;
use crate::driver::{ConsumerSettings, Driver};
use crate::run::recorder::ConsumerSink;

/// What a consumer is: enough to start it again after a crash.
pub struct ConsumerSpec {
    pub topic: String,
    pub settings: ConsumerSettings,
    pub sink: Arc<ConsumerSink>,
}

enum Running {
    Thread(JoinHandle<anyhow::Result<()>>),
    Worker(WorkerConsumer),
    /// Crashed, not started again yet.
    Down,
}

pub struct Consumers {
    driver: Arc<dyn Driver>,
    /// `Some(bootstrap)`: consumers are worker processes talking to it.
    workers: Option<String>,
    stop: Arc<AtomicBool>,
    slots: Mutex<Vec<(ConsumerSpec, Running)>>,
}

impl Consumers {
    pub fn new(driver: Arc<dyn Driver>, workers: Option<String>) -> Consumers {
        Consumers { driver, workers, stop: Arc::new(AtomicBool::new(false)), slots: Mutex::new(Vec::new()) }
    }

    /// Starts a consumer; it gets the next index.
    pub fn start(&self, spec: ConsumerSpec) -> anyhow::Result<()> {
        let running = self.launch(&spec)?;
        self.slots.lock().expect("consumers lock").push((spec, running));
        Ok(())
    }

    fn launch(&self, spec: &ConsumerSpec) -> anyhow::Result<Running> {
        let topics = std::slice::from_ref(&spec.topic);
        Ok(match &self.workers {
            Some(bootstrap) => {
                Running::Worker(WorkerConsumer::spawn(bootstrap, topics, &spec.settings, spec.sink.clone())?)
            }
            None => {
                Running::Thread(self.driver.consumer(topics, &spec.settings, spec.sink.clone(), self.stop.clone())?)
            }
        })
    }

    /// Whether consumers are worker processes (that a fault can crash).
    pub fn runs_workers(&self) -> bool {
        self.workers.is_some()
    }

    pub fn len(&self) -> usize {
        self.slots.lock().expect("consumers lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Kills consumer `index` without a commit or a goodbye to its group.
    pub fn crash(&self, index: usize) -> anyhow::Result<()> {
        let mut slots = self.slots.lock().expect("consumers lock");
        let Some((_, running)) = slots.get_mut(index) else { bail!("there is no consumer-{index}") };
        match std::mem::replace(running, Running::Down) {
            Running::Worker(worker) => worker.crash(),
            Running::Down => Ok(()),
            Running::Thread(thread) => {
                *running = Running::Thread(thread);
                bail!("consumer-{index} runs in the harness' process and cannot crash (only workloads with consumer-crash faults run consumers as processes)")
            }
        }
    }

    /// Starts consumer `index` again if it is down: a new member of its group.
    pub fn restart(&self, index: usize) -> anyhow::Result<()> {
        let mut slots = self.slots.lock().expect("consumers lock");
        let Some((spec, running)) = slots.get_mut(index) else { bail!("there is no consumer-{index}") };
        if matches!(running, Running::Down) {
            *running = self.launch(spec)?;
        }
        Ok(())
    }

    /// Stops every consumer cleanly (final commit, leave); returns their errors.
    pub fn stop_all(&self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let slots = std::mem::take(&mut *self.slots.lock().expect("consumers lock"));
        let mut errors = Vec::new();
        for (index, (_, running)) in slots.into_iter().enumerate() {
            let outcome = match running {
                Running::Thread(thread) => thread.join().unwrap_or_else(|_| bail!("the thread panicked")),
                Running::Worker(worker) => worker.stop(),
                Running::Down => Ok(()),
            };
            if let Err(error) = outcome {
                errors.push(format!("consumer-{index}: {error:#}"));
            }
        }
        errors
    }
}
