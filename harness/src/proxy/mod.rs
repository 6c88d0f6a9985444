//! The TCP fault proxy: sits between Kafka clients and one broker and does to the
//! traffic what the active faults say (latency, a bandwidth limit, a blackhole,
//! resets, the listener going down). `corelog run` starts one per broker and has
//! each broker advertise its proxy, so every client connection crosses it;
//! `corelog proxy` ([`cli`]) runs one standalone with a control port.
//!
//! Execution model: plain threads and blocking sockets, 127.0.0.1 in practice.
//!
//! ```text
//!  client ─► reader(to-broker) ─► Pipe ─► writer(to-broker) ─► upstream broker
//!  client ◄─ writer(to-client) ◄─ Pipe ◄─ reader(to-client) ◄─ upstream broker
//! ```
//!
//! - One acceptor thread per proxy ([`accept`]) owns the listener: it closes it for
//!   `down` and binds it again on the same address afterwards.
//! - Each accepted connection gets a link thread ([`link`]) that connects upstream
//!   and then runs four roles, a reader and a writer per direction, as scoped
//!   threads; the acceptor joins the link threads, so shutdown joins everything.
//! - A reader reads chunks of at most [`link::CHUNK_BYTES`]; when no fault touches its direction
//!   and nothing is queued it writes them itself (one read, one write: the proxy's
//!   overhead without faults); otherwise it queues them, stamped with their read
//!   time, for the writer, which delays, paces and holds them as the faults say.
//! - The active faults are combined into one [`fault::Effective`] value, published
//!   with a generation counter: threads re-read it only when the counter moved, and
//!   every change wakes every waiting thread, so a fault added or removed applies to
//!   live connections at once (a delayed chunk is released as soon as its latency
//!   is removed; a writer waiting on the bandwidth limit stops waiting when the
//!   limit changes).
//!
//! Limits: at most [`link::QUEUED_BYTES_MAX`] bytes queued per direction of a
//! connection, beyond which the reader stops reading and TCP backpressure reaches
//! the sender (under latency this caps a connection's throughput at that much per
//! delay, like a TCP window). A blackhole holds what it has read, stops reading, and
//! releases everything in order when removed. A reset arms SO_LINGER 0 on both
//! sockets of a link; the RST goes out when the link's threads have let go of them,
//! within a few milliseconds. Connecting upstream waits at most
//! [`link::UPSTREAM_CONNECT_TIMEOUT`]; if it fails, the client connection is closed.
//!
//! Lock order (a thread holding one takes only those to its right): `faults` →
//! `listener` → `links` → a link's pipe → `effective`, a token bucket.

mod accept;
mod bandwidth;
mod cli;
mod fault;
mod link;
#[allow(unsafe_code)] // setsockopt(2) and shutdown(2) through libc
mod socket;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

pub use cli::{run, ProxyArgs};
pub use fault::{parse_fault, Direction, Directions, NetFault};

use bandwidth::TokenBucket;
use fault::Effective;
use link::Link;

/// Names one added fault, for [`FaultProxy::remove`]; unique within a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(u64);

impl fmt::Display for FaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Counters of one proxy since it started (`open` and `active_faults`: now).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProxyStats {
    /// Connections accepted, including those reset right away.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes forwarded from clients to the broker.
    pub bytes_to_broker: u64,
    /// Bytes forwarded from the broker to clients.
    pub bytes_to_client: u64,
    /// Connections the proxy reset because of a `reset` or `down` fault.
    pub resets: u64,
    /// Faults active now.
    pub active_faults: u64,
}

/// A running proxy. Send + Sync: faults may be added from any thread.
pub struct FaultProxy {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0: the kernel picks) and forwards every accepted
    /// connection to `upstream`.
    pub fn start(name: &str, listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(name, local_addr, upstream, listener));
        let acceptor = std::thread::Builder::new().name(format!("proxy-{name}")).spawn({
            let shared = Arc::clone(&shared);
            move || accept::accept_loop(shared)
        })?;
        tracing::debug!("proxy {name}: listening on {local_addr}, forwarding to {upstream}");
        Ok(FaultProxy { shared, acceptor: Some(acceptor) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// New connections go to this address from now on (a restarted broker may
    /// listen elsewhere); open connections stay where they are.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Activates `fault` on every connection, open or to come, within milliseconds.
    pub fn add(&self, fault: NetFault) -> FaultId {
        let mut faults = lock(&self.shared.faults);
        let id = FaultId(faults.next_id);
        faults.next_id += 1;
        self.shared.log(format_args!("fault {id} added: {fault}"));
        let resets = fault == NetFault::Reset;
        faults.active.insert(id, fault);
        self.shared.publish(&faults);
        if resets {
            self.shared.reset_links("reset");
        }
        id
    }

    /// Logs this proxy's faults and upstream failures at the debug level only:
    /// for proxies whose owner reports what it does to them.
    pub fn quiet(&self) {
        self.shared.quiet.store(true, Ordering::Relaxed);
    }

    /// Ends fault `id`; nothing if it is not active.
    pub fn remove(&self, id: FaultId) {
        self.remove_active(id);
    }

    /// Ends every fault.
    pub fn clear(&self) {
        let mut faults = lock(&self.shared.faults);
        if !faults.active.is_empty() {
            tracing::info!("proxy {}: faults cleared ({} active)", self.shared.name, faults.active.len());
            faults.active.clear();
            self.shared.publish(&faults);
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let shared = &self.shared;
        ProxyStats {
            accepted: shared.accepted.load(Ordering::Relaxed),
            open: lock(&shared.links).links.len() as u64,
            bytes_to_broker: shared.bytes[Direction::ToBroker.index()].load(Ordering::Relaxed),
            bytes_to_client: shared.bytes[Direction::ToClient.index()].load(Ordering::Relaxed),
            resets: shared.resets.load(Ordering::Relaxed),
            active_faults: lock(&shared.faults).active.len() as u64,
        }
    }

    /// Stops accepting, closes every connection (with a reset: whatever is held
    /// or queued is dropped), joins the threads. Drop does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// [`FaultProxy::remove`], telling whether the fault was active (the control
    /// port says so).
    fn remove_active(&self, id: FaultId) -> bool {
        let mut faults = lock(&self.shared.faults);
        let Some(fault) = faults.active.remove(&id) else {
            return false;
        };
        self.shared.log(format_args!("fault {id} removed: {fault}"));
        self.shared.publish(&faults);
        true
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        let shared = &self.shared;
        accept::close_for_good(shared);
        let links = {
            let mut registry = lock(&shared.links);
            registry.closing = true;
            registry.links.values().cloned().collect::<Vec<_>>()
        };
        for link in links {
            link.abort();
        }
        if acceptor.join().is_err() {
            tracing::error!("proxy {}: the acceptor thread panicked", shared.name);
        }
        tracing::debug!("proxy {}: stopped", shared.name);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state every thread of one proxy shares.
struct Shared {
    name: String,
    /// Where the listener is bound (the port the kernel picked, if 0 was asked),
    /// kept so `down` can bind the same address again.
    local_addr: SocketAddr,
    upstream: Mutex<SocketAddr>,
    /// The active faults; holding it serializes add/remove/clear.
    faults: Mutex<FaultTable>,
    /// The combined effect of `faults`, replaced as a whole on every change.
    effective: Mutex<Arc<Effective>>,
    /// Bumped after every change of `effective`.
    generation: AtomicU64,
    /// A `bandwidth` fault's token bucket per direction ([`Direction::index`]).
    buckets: [Mutex<TokenBucket>; 2],
    listener: Mutex<accept::ListenerSlot>,
    /// Wakes the acceptor while it waits for `down` to end (and on shutdown).
    listener_changed: Condvar,
    links: Mutex<Registry>,
    /// Set while connecting upstream fails, so a dead broker is warned about once
    /// per outage, not once per client retry.
    upstream_failing: AtomicBool,
    /// Set for a proxy on a link between brokers: its owner says what was done to
    /// it, so its own fault and upstream messages go to the debug level.
    quiet: AtomicBool,
    accepted: AtomicU64,
    bytes: [AtomicU64; 2],
    resets: AtomicU64,
}

#[derive(Default)]
struct FaultTable {
    active: BTreeMap<FaultId, NetFault>,
    next_id: u64,
}

/// The open connections, so faults and shutdown can reach them.
#[derive(Default)]
struct Registry {
    links: HashMap<u64, Arc<Link>>,
    next_id: u64,
    /// Shutting down: no link may register any more.
    closing: bool,
}

impl Shared {
    /// One line about this proxy: at the info level, or debug when it is quiet.
    fn log(&self, message: fmt::Arguments<'_>) {
        if self.quiet.load(Ordering::Relaxed) {
            tracing::debug!("proxy {}: {message}", self.name);
        } else {
            tracing::info!("proxy {}: {message}", self.name);
        }
    }

    fn new(name: &str, local_addr: SocketAddr, upstream: SocketAddr, listener: TcpListener) -> Shared {
        Shared {
            name: name.to_string(),
            local_addr,
            upstream: Mutex::new(upstream),
            faults: Mutex::new(FaultTable { active: BTreeMap::new(), next_id: 1 }),
            effective: Mutex::new(Arc::new(Effective::default())),
            generation: AtomicU64::new(0),
            buckets: [Mutex::new(TokenBucket::new()), Mutex::new(TokenBucket::new())],
            listener: Mutex::new(accept::ListenerSlot::new(listener)),
            listener_changed: Condvar::new(),
            links: Mutex::new(Registry::default()),
            upstream_failing: AtomicBool::new(false),
            quiet: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            resets: AtomicU64::new(0),
        }
    }

    fn effective(&self) -> Arc<Effective> {
        Arc::clone(&lock(&self.effective))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn upstream(&self) -> SocketAddr {
        *lock(&self.upstream)
    }

    /// Makes the faults of `table` the ones in force: publishes their combined
    /// effect, resets the token buckets whose limit changed, closes the listener and
    /// resets every connection if `down` began, and wakes every waiting thread so it
    /// re-reads the faults. Called with the `faults` lock held.
    fn publish(&self, table: &FaultTable) {
        let next = Effective::of(table.active.values());
        let previous = std::mem::replace(&mut *lock(&self.effective), Arc::new(next.clone()));
        self.generation.fetch_add(1, Ordering::Release);
        let now = Instant::now();
        for direction in Direction::ALL {
            let limit = next.direction(direction).bytes_per_second;
            if limit != previous.direction(direction).bytes_per_second {
                lock(&self.buckets[direction.index()]).reset(limit, now);
            }
        }
        if next.down && !previous.down {
            accept::close_listener(self);
            self.reset_links("down");
        }
        {
            // Taken so the acceptor is either before its check or already waiting.
            let _listener = lock(&self.listener);
            self.listener_changed.notify_all();
        }
        for link in self.open_links() {
            link.wake();
        }
    }

    /// Resets every open connection, counting them in `resets`.
    fn reset_links(&self, reason: &str) {
        let links = self.open_links();
        let mut reset = 0;
        for link in &links {
            if link.abort() {
                reset += 1;
            }
        }
        self.resets.fetch_add(reset, Ordering::Relaxed);
        tracing::info!("proxy {}: {reason}: reset {reset} open connections", self.name);
    }

    fn open_links(&self) -> Vec<Arc<Link>> {
        lock(&self.links).links.values().cloned().collect()
    }

    fn next_link_id(&self) -> u64 {
        let mut registry = lock(&self.links);
        registry.next_id += 1;
        registry.next_id
    }

    /// Adds a new connection to the registry, unless the proxy is shutting down or a
    /// `reset` or `down` fault is active (checked after inserting, so a fault added
    /// meanwhile reaches it one way or the other); a refused link is aborted.
    fn register(&self, link: &Arc<Link>) -> bool {
        {
            let mut registry = lock(&self.links);
            if registry.closing {
                drop(registry);
                link.abort();
                return false;
            }
            registry.links.insert(link.id, Arc::clone(link));
        }
        let effective = self.effective();
        if effective.reset || effective.down {
            if link.abort() {
                self.resets.fetch_add(1, Ordering::Relaxed);
            }
            self.deregister(link.id);
            return false;
        }
        true
    }

    fn deregister(&self, id: u64) {
        lock(&self.links).links.remove(&id);
    }

    fn count_bytes(&self, direction: Direction, bytes: usize) {
        self.bytes[direction.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Locks `mutex` even if a thread panicked holding it: the state behind every lock
/// here stays consistent between statements, and one connection's bug must not take
/// the whole proxy (and the control port) down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
