//! One proxied connection (a [`Link`]): connecting upstream, then forwarding each
//! direction through a [`Pipe`] with a reader and a writer thread, applying the
//! faults chunk by chunk.
//!
//! A direction ends with the source's EOF: the writer delivers what is queued, then
//! shuts the destination's write half (a client's half-close reaches the broker and
//! the other way round). The link ends when both directions have. A read or write
//! error on either socket, a `reset`/`down` fault or shutdown aborts the link:
//! both sockets are armed to send a RST, every thread of the link is woken and
//! returns, and the last handle's close sends the resets.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::bandwidth::piece_bytes;
use super::fault::{DirectionFaults, Effective};
use super::{lock, socket, Direction, Shared};

/// Largest chunk read from a socket at once. Large enough that a bulk transfer
/// costs few system calls (in `overhead_without_faults`, 256 KiB chunks moved bulk
/// data somewhat faster than 64 KiB ones); a fresh buffer is zero pages mapped on
/// demand, so only what reads touch is resident.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes a direction may hold queued (delayed, paced or blackholed) before its
/// reader stops reading and TCP backpressure reaches the sender.
pub(super) const QUEUED_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest wait for the upstream broker to accept a connection.
pub(super) const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A blocked write gives up after this long to check whether the link was aborted,
/// then goes on writing; it bounds how long an abort waits for a writer whose peer
/// does not read.
const WRITE_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Chunk buffers a pipe keeps for reuse instead of allocating a new one per read
/// (without faults the reader reuses a single one).
const SPARE_BUFFERS_MAX: usize = 2;

/// One accepted connection and its upstream counterpart.
pub(super) struct Link {
    pub id: u64,
    peer: SocketAddr,
    client: TcpStream,
    /// Set once connecting upstream succeeded.
    upstream: OnceLock<TcpStream>,
    aborted: AtomicBool,
    /// Per direction ([`Direction::index`]).
    pipes: [Pipe; 2],
}

impl Link {
    fn new(id: u64, peer: SocketAddr, client: TcpStream) -> Link {
        let pipes = [Pipe::new(), Pipe::new()];
        Link { id, peer, client, upstream: OnceLock::new(), aborted: AtomicBool::new(false), pipes }
    }

    /// Aborts the link: arms a RST on both sockets, wakes every thread of the link
    /// (a blocked reader through the read shutdown, a waiting one through its pipe, a
    /// blocked writer within [`WRITE_POLL_INTERVAL`]). True if this call aborted it,
    /// false if it already was.
    pub fn abort(&self) -> bool {
        if self.aborted.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.arm_reset(&self.client, "client");
        if let Some(upstream) = self.upstream.get() {
            self.arm_reset(upstream, "upstream");
        }
        self.wake();
        true
    }

    /// Wakes the threads waiting in this link's pipes, so they re-read the faults.
    pub fn wake(&self) {
        for pipe in &self.pipes {
            let _state = pipe.lock();
            pipe.changed.notify_all();
        }
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    fn arm_reset(&self, stream: &TcpStream, side: &str) {
        // ENOTCONN when the peer is already gone: nothing left to reset.
        if let Err(error) = socket::arm_reset(stream) {
            tracing::debug!("proxy link {} ({}): arming a reset of the {side} socket: {error}", self.id, self.peer);
        }
    }

    /// Keeps the upstream socket; false (and the socket armed to reset) if the link
    /// was aborted meanwhile. The flag and the slot are both checked on each side, so
    /// an abort racing with this reaches the socket either way.
    fn attach_upstream(&self, upstream: TcpStream) -> bool {
        let upstream = self.upstream.get_or_init(|| upstream);
        if self.is_aborted() {
            self.arm_reset(upstream, "upstream");
            return false;
        }
        true
    }

    fn pipe(&self, direction: Direction) -> &Pipe {
        &self.pipes[direction.index()]
    }

    /// The socket a direction reads from and the one it writes to.
    fn ends(&self, direction: Direction) -> (&TcpStream, &TcpStream) {
        let upstream = self.upstream.get().expect("forwarding starts after the upstream is attached");
        match direction {
            Direction::ToBroker => (&self.client, upstream),
            Direction::ToClient => (upstream, &self.client),
        }
    }
}

/// Runs one accepted connection to its end, on the thread the acceptor started.
pub(super) fn serve(shared: &Shared, client: TcpStream, peer: SocketAddr, id: u64) {
    let link = Arc::new(Link::new(id, peer, client));
    if !shared.register(&link) {
        return;
    }
    if connect_upstream(shared, &link) {
        forward(shared, &link);
    }
    shared.deregister(link.id);
    // The last handles to the sockets drop here: a normal close, or a RST if aborted.
}

/// Connects to the upstream broker and sets both sockets up; false if that failed
/// (the client connection is then closed) or the link was aborted meanwhile.
fn connect_upstream(shared: &Shared, link: &Link) -> bool {
    let address = shared.upstream();
    let upstream = match TcpStream::connect_timeout(&address, UPSTREAM_CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(error) => {
            let message = format!(
                "proxy {}: connecting to the upstream {address} for {} failed: {error}; closing the client connection",
                shared.name, link.peer
            );
            if shared.upstream_failing.swap(true, Ordering::Relaxed) || shared.quiet.load(Ordering::Relaxed) {
                tracing::debug!("{message}");
            } else {
                tracing::warn!("{message} (further failures are logged at debug level)");
            }
            return false;
        }
    };
    if shared.upstream_failing.swap(false, Ordering::Relaxed) {
        shared.log(format_args!("connecting to the upstream {address} works again"));
    }
    if !link.attach_upstream(upstream) {
        return false;
    }
    let (client, upstream) = link.ends(Direction::ToBroker);
    let configured = [client, upstream].into_iter().try_for_each(|stream| {
        // Kafka clients and brokers disable Nagle themselves; the proxy must not
        // add it back between them.
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_POLL_INTERVAL))
    });
    if let Err(error) = configured {
        tracing::debug!("proxy {}: setting up the sockets of {}: {error}; closing it", shared.name, link.peer);
        return false;
    }
    true
}

/// The body of one of a link's threads.
type Role = fn(&Shared, &Link, Direction);

/// Runs the four roles of a link: a reader and a writer per direction, three on
/// scoped threads and the last on this one; returns when all four have.
fn forward(shared: &Shared, link: &Link) {
    std::thread::scope(|scope| {
        let roles: [(&str, Direction, Role); 3] = [
            ("rb", Direction::ToBroker, read_loop),
            ("wb", Direction::ToBroker, write_loop),
            ("rc", Direction::ToClient, read_loop),
        ];
        for (role, direction, body) in roles {
            let spawned = std::thread::Builder::new()
                .name(format!("proxy-{}-{role}", link.id))
                .spawn_scoped(scope, move || body(shared, link, direction));
            if let Err(error) = spawned {
                tracing::warn!("proxy {}: no thread for {} ({error}); resetting it", shared.name, link.peer);
                link.abort();
            }
        }
        write_loop(shared, link, Direction::ToClient);
    });
}

/// A chunk read but not yet written.
struct Chunk {
    buffer: Vec<u8>,
    len: usize,
    read_at: Instant,
    /// This chunk's draw of the jitter, in [-1, 1].
    jitter_sample: f64,
}

/// One direction's hand-over from reader to writer.
struct Pipe {
    state: Mutex<PipeState>,
    /// Signalled on every change of the state, of the faults, and on abort.
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    chunks: VecDeque<Chunk>,
    queued_bytes: usize,
    /// Someone is writing to the destination outside the lock: the writer with a
    /// chunk it took, or the reader forwarding directly. Keeps bytes in order.
    writing: bool,
    /// The reader saw EOF: once `chunks` is empty, the writer half-closes.
    source_closed: bool,
    spare: Vec<Vec<u8>>,
}

impl PipeState {
    fn take_buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| vec![0; CHUNK_BYTES])
    }

    fn give_back(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS_MAX {
            self.spare.push(buffer);
        }
    }
}

impl Pipe {
    fn new() -> Pipe {
        Pipe { state: Mutex::new(PipeState::default()), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        lock(&self.state)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, PipeState>) -> MutexGuard<'a, PipeState> {
        self.changed.wait(state).unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout<'a>(&self, state: MutexGuard<'a, PipeState>, timeout: Duration) -> MutexGuard<'a, PipeState> {
        self.changed.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0
    }

    /// Ends a write outside the lock: lets the next one start, keeps the buffer.
    fn finish_write(&self, buffer: Vec<u8>) {
        let mut state = self.lock();
        state.writing = false;
        state.give_back(buffer);
        self.changed.notify_all();
    }
}

/// The faults in force as one thread last saw them; re-read only when the proxy's
/// generation counter moved, so the per-chunk check is one atomic load.
struct FaultView {
    generation: u64,
    effective: Arc<Effective>,
}

impl FaultView {
    fn new(shared: &Shared) -> FaultView {
        FaultView { generation: shared.generation(), effective: shared.effective() }
    }

    fn refresh(&mut self, shared: &Shared, direction: Direction) -> DirectionFaults {
        let generation = shared.generation();
        if generation != self.generation {
            self.effective = shared.effective();
            self.generation = generation;
        }
        *self.effective.direction(direction)
    }
}

/// Why forwarding stopped early.
enum Stop {
    /// The link was aborted: just return.
    Aborted,
    /// A socket failed: abort the link (the peers get resets).
    Failed(&'static str, io::Error),
}

/// Reads the source of `direction` until EOF: forwards each chunk directly when no
/// fault touches the direction and nothing is queued, queues it for the writer
/// otherwise. Stops reading while the direction is blackholed or its queue is full.
fn read_loop(shared: &Shared, link: &Link, direction: Direction) {
    let pipe = link.pipe(direction);
    let (source, destination) = link.ends(direction);
    let mut view = FaultView::new(shared);
    let mut jitter = Jitter::seeded(link.id, direction);
    loop {
        let Some(mut buffer) = admit_read(shared, link, pipe, &mut view, direction) else { return };
        let len = match read_chunk(source, &mut buffer) {
            Ok(len) => len,
            Err(error) => return fail(shared, link, direction, Stop::Failed("reading", error)),
        };
        if link.is_aborted() {
            return;
        }
        if len == 0 {
            let mut state = pipe.lock();
            state.source_closed = true;
            pipe.changed.notify_all();
            return;
        }
        let read_at = Instant::now();
        let mut state = pipe.lock();
        let faults = view.refresh(shared, direction);
        if faults.is_clear() && state.chunks.is_empty() && !state.writing {
            state.writing = true;
            drop(state);
            let written = write_all(link, destination, &buffer[..len]);
            pipe.finish_write(buffer);
            match written {
                Ok(()) => shared.count_bytes(direction, len),
                Err(stop) => return fail(shared, link, direction, stop),
            }
        } else {
            state.queued_bytes += len;
            state.chunks.push_back(Chunk { buffer, len, read_at, jitter_sample: jitter.sample() });
            pipe.changed.notify_all();
        }
    }
}

/// Waits until the reader of `direction` may read (not blackholed, room in the
/// queue) and returns a buffer to read into; `None` if the link was aborted.
fn admit_read(
    shared: &Shared,
    link: &Link,
    pipe: &Pipe,
    view: &mut FaultView,
    direction: Direction,
) -> Option<Vec<u8>> {
    let mut state = pipe.lock();
    loop {
        if link.is_aborted() {
            return None;
        }
        let faults = view.refresh(shared, direction);
        if !faults.blackhole && state.queued_bytes < QUEUED_BYTES_MAX {
            return Some(state.take_buffer());
        }
        state = pipe.wait(state);
    }
}

fn read_chunk(mut source: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match source.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Writes the queued chunks of `direction` in order, each once it is due (latency),
/// unless the direction is blackholed, paced by the bandwidth limit; after the
/// source's EOF and the last chunk, half-closes the destination.
fn write_loop(shared: &Shared, link: &Link, direction: Direction) {
    let pipe = link.pipe(direction);
    let (_, destination) = link.ends(direction);
    let mut view = FaultView::new(shared);
    loop {
        let Some((chunk, faults)) = next_due_chunk(shared, link, pipe, &mut view, direction) else { return };
        let bytes = &chunk.buffer[..chunk.len];
        let sent = match faults.bytes_per_second {
            None => write_all(link, destination, bytes).map(|()| shared.count_bytes(direction, bytes.len())),
            Some(limit) => send_paced(shared, link, pipe, direction, destination, bytes, limit),
        };
        pipe.finish_write(chunk.buffer);
        if let Err(stop) = sent {
            return fail(shared, link, direction, stop);
        }
    }
}

/// Waits for the next chunk that may be written now and takes it (marking the pipe
/// `writing`), with the faults it goes out under. `None` once the direction is done:
/// the link was aborted, or the source's EOF has been passed on.
fn next_due_chunk(
    shared: &Shared,
    link: &Link,
    pipe: &Pipe,
    view: &mut FaultView,
    direction: Direction,
) -> Option<(Chunk, DirectionFaults)> {
    let mut state = pipe.lock();
    loop {
        if link.is_aborted() {
            return None;
        }
        let faults = view.refresh(shared, direction);
        if state.writing || (state.chunks.is_empty() && !state.source_closed) || faults.blackhole {
            state = pipe.wait(state);
            continue;
        }
        let Some(front) = state.chunks.front() else {
            drop(state);
            half_close(shared, link, direction);
            return None;
        };
        // FIFO: a chunk due earlier than the one before it still waits for it.
        let due = faults.due_at(front.read_at, front.jitter_sample);
        let now = Instant::now();
        if due > now {
            state = pipe.wait_timeout(state, due - now);
            continue;
        }
        let chunk = state.chunks.pop_front().expect("the front chunk was just seen");
        state.queued_bytes -= chunk.len;
        state.writing = true;
        // The reader may be waiting for room in the queue.
        pipe.changed.notify_all();
        return Some((chunk, faults));
    }
}

/// Sends `bytes` in pieces of at most 20 ms of the limit, each once the shared
/// token bucket of `direction` allows it.
fn send_paced(
    shared: &Shared,
    link: &Link,
    pipe: &Pipe,
    direction: Direction,
    destination: &TcpStream,
    bytes: &[u8],
    bytes_per_second: u64,
) -> Result<(), Stop> {
    for piece in bytes.chunks(piece_bytes(bytes_per_second, CHUNK_BYTES)) {
        wait_for_tokens(shared, link, pipe, direction, piece.len())?;
        write_all(link, destination, piece)?;
        shared.count_bytes(direction, piece.len());
    }
    Ok(())
}

/// Takes `bytes` tokens from the bucket of `direction` and waits until they are
/// paid for, or until the limit changes (the bucket starts over: the debt is void).
fn wait_for_tokens(shared: &Shared, link: &Link, pipe: &Pipe, direction: Direction, bytes: usize) -> Result<(), Stop> {
    let bucket = &shared.buckets[direction.index()];
    let (wait, epoch) = {
        let mut bucket = lock(bucket);
        (bucket.take(bytes, Instant::now()), bucket.epoch)
    };
    if wait.is_zero() {
        return Ok(());
    }
    let deadline = Instant::now() + wait;
    let mut state = pipe.lock();
    loop {
        if link.is_aborted() {
            return Err(Stop::Aborted);
        }
        let now = Instant::now();
        if now >= deadline || lock(bucket).epoch != epoch {
            return Ok(());
        }
        state = pipe.wait_timeout(state, deadline - now);
    }
}

/// Writes all of `bytes`, giving up only if the link is aborted or the socket fails.
fn write_all(link: &Link, mut destination: &TcpStream, mut bytes: &[u8]) -> Result<(), Stop> {
    while !bytes.is_empty() {
        if link.is_aborted() {
            return Err(Stop::Aborted);
        }
        match destination.write(bytes) {
            Ok(0) => return Err(Stop::Failed("writing", io::ErrorKind::WriteZero.into())),
            Ok(written) => bytes = &bytes[written..],
            // The write timeout: the peer is not reading; check for an abort and go on.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(Stop::Failed("writing", error)),
        }
    }
    Ok(())
}

/// Passes the source's EOF on: shuts the destination's write half.
fn half_close(shared: &Shared, link: &Link, direction: Direction) {
    let (_, destination) = link.ends(direction);
    // ENOTCONN if the peer has already reset: the link ends anyway.
    if let Err(error) = destination.shutdown(Shutdown::Write) {
        tracing::debug!("proxy {}: half-closing {} of {}: {error}", shared.name, direction.name(), link.peer);
    }
}

/// Ends a role of the link; a socket failure aborts the whole link, so the peer on
/// the other side learns of it as a reset.
fn fail(shared: &Shared, link: &Link, direction: Direction, stop: Stop) {
    if let Stop::Failed(operation, error) = stop {
        if link.abort() {
            tracing::debug!(
                "proxy {}: {operation} ({}) for {} failed: {error}; resetting the connection",
                shared.name,
                direction.name(),
                link.peer
            );
        }
    }
}

/// The per-chunk jitter draws of one direction: SplitMix64, seeded from the clock
/// and the link, so runs differ but no lock is shared.
struct Jitter(corelog_engine::hash::SplitMix64);

impl Jitter {
    fn seeded(link_id: u64, direction: Direction) -> Jitter {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Jitter(corelog_engine::hash::SplitMix64::new(nanos ^ link_id.rotate_left(32) ^ direction.index() as u64))
    }

    /// A uniform draw in [-1, 1].
    fn sample(&mut self) -> f64 {
        self.0.signed_unit()
    }
}
