//! A broker's membership in the cluster (Kafka's `BrokerLifecycleManager`): it
//! registers with the active controller, heartbeats to keep its session, asks to be
//! unfenced once it has caught up with the metadata log, registers again when the
//! controller no longer knows its epoch, and at shutdown hands its leaderships over
//! before it stops (controlled shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::controller::{ControllerError, Heartbeat};
use super::quorum::{ControllerReply, ControllerRequest, Quorum};
use super::records::NodeId;

/// What the membership thread shares with the broker.
#[derive(Default)]
struct Shared {
    /// The current registration's epoch; 0 before the first registration.
    epoch: AtomicU64,
    fenced: AtomicBool,
    shutting_down: AtomicBool,
    shutdown_ready: AtomicBool,
}

pub struct Membership {
    quorum: Arc<Quorum>,
    shared: Arc<Shared>,
    stop: Option<flume::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where clients reach this broker, as it registers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

impl Membership {
    /// Starts registering and heartbeating every `interval`.
    pub fn start(quorum: Arc<Quorum>, endpoint: Endpoint, interval: Duration) -> std::io::Result<Membership> {
        let shared = Arc::new(Shared { fenced: AtomicBool::new(true), ..Shared::default() });
        let (stop, stopped) = flume::bounded::<()>(1);
        let (thread_shared, thread_quorum) = (shared.clone(), quorum.clone());
        let thread = std::thread::Builder::new()
            .name(format!("corelog-membership-{}", endpoint.node_id))
            .spawn(move || run(&thread_quorum, &endpoint, interval, &thread_shared, &stopped))?;
        Ok(Membership { quorum, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// The epoch of the current registration, once registered.
    pub fn broker_epoch(&self) -> Option<u64> {
        Some(self.shared.epoch.load(Ordering::Acquire)).filter(|e| *e > 0)
    }

    /// [`Membership::broker_epoch`] for another thread (the reconciler's).
    pub fn epoch_reader(&self) -> impl Fn() -> Option<u64> + Send + 'static {
        let shared = self.shared.clone();
        move || Some(shared.epoch.load(Ordering::Acquire)).filter(|e| *e > 0)
    }

    /// Whether the controller holds this broker fenced (it leads nothing then).
    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Acquire)
    }

    /// Asks the controller to move this broker's leaderships elsewhere and fence
    /// it; returns whether that happened within `timeout`. Without a controller (no
    /// quorum leader for a second: the last brokers of a cluster stopping) the
    /// broker stops anyway and its session expires.
    pub fn controlled_shutdown(&self, timeout: Duration) -> bool {
        self.shared.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut leaderless_since: Option<Instant> = None;
        while Instant::now() < deadline {
            if self.shared.shutdown_ready.load(Ordering::Acquire) {
                return true;
            }
            match self.quorum.status().leader {
                Some(_) => leaderless_since = None,
                None if leaderless_since.is_some_and(|since| since.elapsed() > Duration::from_secs(1)) => {
                    return false;
                }
                None => leaderless_since = leaderless_since.or(Some(Instant::now())),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the membership thread panicked");
            }
        }
    }
}

fn run(quorum: &Quorum, endpoint: &Endpoint, interval: Duration, shared: &Shared, stopped: &flume::Receiver<()>) {
    // A controlled shutdown heartbeats faster: the broker is waiting on it.
    let wait = |shared: &Shared| if shared.shutting_down.load(Ordering::Acquire) { interval / 5 } else { interval };
    loop {
        match stopped.recv_timeout(wait(shared)) {
            Err(flume::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if shared.epoch.load(Ordering::Acquire) == 0 {
            register(quorum, endpoint, shared);
        } else {
            heartbeat(quorum, endpoint, shared);
        }
    }
}

fn register(quorum: &Quorum, endpoint: &Endpoint, shared: &Shared) {
    let request =
        ControllerRequest::Register { node_id: endpoint.node_id, host: endpoint.host.clone(), port: endpoint.port };
    match quorum.request(request) {
        ControllerReply::Registered { broker_epoch } => {
            tracing::info!("broker {} registered with epoch {broker_epoch}", endpoint.node_id);
            shared.fenced.store(true, Ordering::Release);
            shared.epoch.store(broker_epoch, Ordering::Release);
        }
        other => tracing::debug!("broker {}: registration not answered yet: {other:?}", endpoint.node_id),
    }
}

fn heartbeat(quorum: &Quorum, endpoint: &Endpoint, shared: &Shared) {
    let epoch = shared.epoch.load(Ordering::Acquire);
    let heartbeat = Heartbeat {
        node_id: endpoint.node_id,
        epoch,
        caught_up: quorum.image().applied_index >= epoch,
        want_shutdown: shared.shutting_down.load(Ordering::Acquire),
    };
    match quorum.request(ControllerRequest::Heartbeat(heartbeat)) {
        ControllerReply::Heartbeat(reply) => {
            if shared.fenced.swap(reply.fenced, Ordering::AcqRel) != reply.fenced {
                let now = if reply.fenced { "fenced" } else { "unfenced" };
                tracing::info!("broker {} is {now} (epoch {epoch})", endpoint.node_id);
            }
            shared.shutdown_ready.store(reply.shutdown_ready, Ordering::Release);
        }
        ControllerReply::Done { .. } => {
            // Records were written (unfenced, or leaderships handed over); the next
            // heartbeat reads where that left the broker.
        }
        ControllerReply::Refused(ControllerError::StaleBrokerEpoch { .. }) => {
            tracing::warn!(
                "broker {}: the controller no longer knows epoch {epoch}; registering again",
                endpoint.node_id
            );
            shared.fenced.store(true, Ordering::Release);
            shared.epoch.store(0, Ordering::Release);
        }
        other => tracing::debug!("broker {}: heartbeat not answered: {other:?}", endpoint.node_id),
    }
}
