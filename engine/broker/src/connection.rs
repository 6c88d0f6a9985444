//! Accepting and serving connections on one shard.
//!
//! A connection is a reader and a writer, run side by side in one task on the shard
//! that accepted it. The reader reads frames, decodes each request, spawns its
//! handler as a task of its own and queues that task; the writer awaits those tasks
//! in queue order and writes each response, so responses leave in request order
//! whatever order the handlers finish in. The queue holds at most
//! `inflight_requests_max` requests: past that, the reader stops reading and TCP
//! pushes back on the client.
//!
//! Requests take effect in order, as Kafka's do: the reader starts the next request
//! only once the handler of the previous one is dispatched, that is, has put every
//! op it needs on its partition or coordinator queue (see the handlers' module doc).
//! Only that stage is sequential; the waiting for replies (acks, fsync) of many
//! requests overlaps, so requests still pipeline.
//!
//! Bad input closes only its own connection, with one log line: an oversized,
//! truncated or undecodable frame, an unknown API key or an unsupported version (but
//! ApiVersions at an unknown version is answered, as Kafka does).
//!
//! Time bounds, so no client holds a connection for free (see `watch`): a
//! connection with no request in flight that receives nothing for
//! `connections.max.idle.ms` is closed (Kafka's idle expiry; a long-poll Fetch or a
//! Produce awaiting its acks keeps it, and the idle time counts from the last
//! answer); once a frame's first byte arrives, the whole frame must arrive within
//! `corelog.request.read.timeout.ms` (corelog's own: a client trickling bytes is
//! closed at the deadline). The limit: the deadline is for the whole frame, so a
//! request near `socket.request.max.bytes` over a slow link needs a longer one.
//! Connections over `max.connections` or `max.connections.per.ip` are closed at
//! accept ([`crate::connection_quotas`]). Lines a hostile client can cause by the
//! thousand (deadlines, refusals per IP) are rate-limited per shard.
//!
//! Endings: when the peer goes away, handlers still running are cancelled (nobody
//! would read their answers; a JoinGroup may otherwise wait minutes for a
//! rebalance). When the broker stops or the connection is closed for bad input,
//! requests already read get [`SHUTDOWN_GRACE`] to finish and be answered.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use corelog_engine::types::ShardId;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::ShardContext;
use crate::connection_quotas::{suppressed_note, ConnectionQuotas, LogLimit, Refusal};
use crate::kafka::codec::{self, DecodeError, FrameError, Request};
use crate::kafka::frame::ResponseFrame;
use crate::kafka::handlers::{self, api_versions, RequestContext};

/// Accepts connections until `stop` is disconnected, then waits for every
/// connection of this shard to finish what it has read.
pub async fn accept_loop(listener: TcpListener, context: Rc<ShardContext>, stop: flume::Receiver<()>) {
    let connections = glommio::sync::Gate::new();
    let logs = Rc::new(ShardLogs::default());
    loop {
        let accepted = async { Some(listener.accept().await) }.or(async {
            super::stop_requested(&stop).await;
            None
        });
        match accepted.await {
            None => break,
            Some(Ok(stream)) => {
                let address = stream.peer_addr().ok();
                let peer = address.map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
                let ip = address.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                let permit = match ConnectionQuotas::admit(&context.broker, ip) {
                    Ok(permit) => permit,
                    Err(refusal) => {
                        log_refusal(&context, &logs, &peer, refusal);
                        continue;
                    }
                };
                let connection_context = context.clone();
                let stop = stop.clone();
                let logs = logs.clone();
                let spawned = connections.spawn(async move {
                    serve(stream, &connection_context, &peer, stop, &logs).await;
                    drop(permit);
                });
                match spawned {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(error) => tracing::error!("shard {}: cannot serve {error}", context.shard),
                }
            }
            Some(Err(error)) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!("shard {}: accept failed: {error}", context.shard);
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    if let Err(error) = connections.close().await {
        tracing::error!("shard {}: waiting for connections: {error}", context.shard);
    }
}

/// A shard's rate limits for the log lines hostile clients can cause by the
/// thousand (see [`LogLimit`]).
#[derive(Debug, Default)]
struct ShardLogs {
    per_ip_refusal: LogLimit,
    read_deadline: LogLimit,
}

/// Logs a connection refused at accept (the socket is closed as it is dropped).
/// Refusals over `max.connections` are each logged, as they always were; refusals
/// per IP, which one client can cause at will, are rate-limited.
fn log_refusal(context: &ShardContext, logs: &ShardLogs, peer: &str, refusal: Refusal) {
    let shard = context.shard;
    match refusal {
        Refusal::TooMany { connections_max } => {
            tracing::warn!("shard {shard}: refusing {peer}: {connections_max} connections already open");
        }
        Refusal::TooManyFromIp { ip, connections_max } => {
            if let Some(suppressed) = logs.per_ip_refusal.admit(Instant::now()) {
                let refused = context.broker.connection_stats.per_ip_refused.load(Ordering::Relaxed);
                tracing::warn!(
                    "shard {shard}: refusing {peer}: {connections_max} connections from {ip} already open \
                     (max.connections.per.ip; {refused} refused so far){}",
                    suppressed_note(suppressed)
                );
            }
        }
    }
}

/// Serves one connection: its read side and its write side run side by side until
/// both end, then the socket is closed.
async fn serve(stream: TcpStream, context: &Rc<ShardContext>, peer: &str, stop: flume::Receiver<()>, logs: &ShardLogs) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("{peer}: TCP_NODELAY: {error}");
    }
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let stop = &stop;
    let reader = &mut reader;
    let (queue, pending) = local_channel::new_bounded::<Pending>(context.broker.config.inflight_requests_max.max(1));
    // How the read side ended: the writer drains differently for each.
    let (ended, end_seen) = flume::bounded::<End>(1);
    let shard = context.shard;
    let activity = &Activity::new();
    let read_side = async move {
        let end = read_requests(reader, &queue, context, peer, stop, activity, logs).await;
        // Capacity 1 and sent once: this cannot fail while the writer lives.
        let _ = ended.try_send(end);
        // Dropping `queue` here closes it: the writer ends after the last response.
        drop(queue);
    };
    let write_side = write_responses(&mut writer, &pending, ReadEnd::new(end_seen), activity, shard, peer);
    futures_lite::future::zip(read_side, write_side).await;
    if let Err(error) = writer.close().await {
        tracing::debug!("shard {shard}: {peer}: closing: {error}");
    }
}

/// How long in-flight requests may take to finish once the broker is stopping (or
/// the connection is being closed for bad input); past it they are cancelled.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the read side of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed the connection or it failed: nobody reads responses any more,
    /// so pending handlers are cancelled.
    PeerGone,
    /// The broker is stopping, or the peer sent bad input: requests already read
    /// are finished and answered within [`SHUTDOWN_GRACE`], then the connection closes.
    Closing,
}

/// What the writer sends for one request, in order.
enum Pending {
    Handler(Handler),
    /// A response known at read time (ApiVersions at an unsupported version).
    Ready(ResponseFrame),
}

/// A request whose handler is running, and what its response needs.
struct Handler {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    /// Produce with acks=0: the client reads no response.
    silent: bool,
    task: JoinHandle<Option<ResponseKind>>,
}

// The read side.

/// Reads, decodes and dispatches requests until the connection or the broker ends.
async fn read_requests<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    queue: &local_channel::LocalSender<Pending>,
    context: &Rc<ShardContext>,
    peer: &str,
    stop: &flume::Receiver<()>,
    activity: &Activity,
    logs: &ShardLogs,
) -> End {
    // The connection's receive room, reused from frame to frame (see `read_frame_into`).
    let mut room = BytesMut::new();
    let mut reader = Watched { inner: reader, activity };
    loop {
        let frame = match next_frame(&mut reader, &mut room, context, peer, stop, logs).await {
            Ok(frame) => frame,
            Err(end) => return end,
        };
        let (next, on_dispatched) = match start_request(frame, context, peer) {
            Ok(started) => started,
            Err(end) => return end,
        };
        // Counted before it is queued: the writer may answer it as soon as it is.
        activity.in_flight.set(activity.in_flight.get() + 1);
        if queue.send(next).await.is_err() {
            return End::PeerGone;
        }
        // glommio polls a task as it is spawned, so a handler is usually dispatched
        // by now; if not, one of its queues is full. A handler that ends or is
        // cancelled before it is dispatched drops the sender, which lets go too.
        if let Some(on_dispatched) = on_dispatched {
            if stopped_before_dispatched(&on_dispatched, stop).await {
                return End::Closing;
            }
        }
    }
}

/// The next request's frame, or how the read side ends: the peer closed or failed
/// (`PeerGone`), the broker stops, the frame is bad, missed its read deadline or
/// never started before the connection idled out (`Closing`, logged).
async fn next_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut Watched<'_, R>,
    room: &mut BytesMut,
    context: &ShardContext,
    peer: &str,
    stop: &flume::Receiver<()>,
    logs: &ShardLogs,
) -> Result<Bytes, End> {
    let shard = context.shard;
    let activity = reader.activity;
    activity.frame_started.set(None);
    let bounds = Bounds::of(&context.broker.config);
    let request_bytes_max = context.broker.config.request_bytes_max;
    let read = async { Read::Frame(codec::read_frame_into(reader, room, request_bytes_max).await) }
        .or(async { Read::Expired(watch(activity, bounds).await) })
        .or(async {
            super::stop_requested(stop).await;
            Read::Stopping
        })
        .await;
    match read {
        Read::Stopping => Err(End::Closing),
        Read::Expired(expiry) => {
            log_expiry(context, logs, peer, expiry, bounds);
            Err(End::Closing)
        }
        Read::Frame(Ok(Some(frame))) => Ok(frame),
        Read::Frame(Ok(None)) => Err(End::PeerGone),
        Read::Frame(Err(FrameError::Io(error))) => {
            tracing::debug!("shard {shard}: {peer}: {error}");
            Err(End::PeerGone)
        }
        Read::Frame(Err(error)) => {
            tracing::warn!("shard {shard}: closing {peer}: {error}");
            Err(End::Closing)
        }
    }
}

/// How reading the next frame ended.
enum Read {
    Frame(Result<Option<Bytes>, FrameError>),
    Expired(Expiry),
    Stopping,
}

/// Counts and logs a connection closed by a time bound: an idle one at debug (it is
/// routine: Kafka's clients reconnect when they need to), a missed read deadline
/// as a warning, rate-limited.
fn log_expiry(context: &ShardContext, logs: &ShardLogs, peer: &str, expiry: Expiry, bounds: Bounds) {
    let (shard, stats) = (context.shard, &context.broker.connection_stats);
    match expiry {
        Expiry::Idle => {
            stats.idle_reaped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                "shard {shard}: closing {peer}: idle for {} ms (connections.max.idle.ms)",
                bounds.idle.as_millis()
            );
        }
        Expiry::ReadDeadline => {
            let hit = stats.read_deadlines_hit.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = logs.read_deadline.admit(Instant::now()) {
                tracing::warn!(
                    "shard {shard}: closing {peer}: a request frame did not arrive whole within {} ms of its \
                     first byte (corelog.request.read.timeout.ms; {hit} deadlines hit so far){}",
                    bounds.read_timeout.as_millis(),
                    suppressed_note(suppressed)
                );
            }
        }
    }
}

// The time bounds of the read side.

/// A connection's activity, as its time bounds see it.
struct Activity {
    /// When the last byte arrived or the last request was answered (or the
    /// connection was accepted).
    last: Cell<Instant>,
    /// When the first byte of the frame being read arrived; `None` between frames.
    frame_started: Cell<Option<Instant>>,
    /// Requests read and not yet answered (or dropped unanswered).
    in_flight: Cell<usize>,
}

impl Activity {
    fn new() -> Self {
        Self { last: Cell::new(Instant::now()), frame_started: Cell::new(None), in_flight: Cell::new(0) }
    }

    /// The writer is done with one request.
    fn answered(&self) {
        assert!(self.in_flight.get() > 0, "a request answered that was never counted");
        self.in_flight.set(self.in_flight.get() - 1);
        self.last.set(Instant::now());
    }
}

/// The connection's reader, noting in its [`Activity`] when bytes arrive.
/// `read_frame_into` reads exactly one frame's bytes, so the first byte read after
/// `frame_started` is reset is the first byte of the next frame.
struct Watched<'a, R> {
    inner: &'a mut R,
    activity: &'a Activity,
}

impl<R: futures_lite::AsyncRead + Unpin> futures_lite::AsyncRead for Watched<'_, R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(read)) = &polled {
            if *read > 0 {
                let now = Instant::now();
                this.activity.last.set(now);
                if this.activity.frame_started.get().is_none() {
                    this.activity.frame_started.set(Some(now));
                }
            }
        }
        polled
    }
}

/// The time bounds of a connection's read side.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// `connections.max.idle.ms`.
    idle: Duration,
    /// `corelog.request.read.timeout.ms`.
    read_timeout: Duration,
}

impl Bounds {
    fn of(config: &crate::BrokerConfig) -> Self {
        Self {
            idle: Duration::from_millis(config.connections_max_idle_ms),
            read_timeout: Duration::from_millis(config.request_read_timeout_ms),
        }
    }
}

/// Which time bound a connection crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No request in flight and nothing received for `connections.max.idle.ms`.
    Idle,
    /// A frame begun `corelog.request.read.timeout.ms` ago is still not whole.
    ReadDeadline,
}

/// Longest sleep of [`watch`] between two looks at the activity: a frame that
/// starts while it sleeps is seen at its deadline at the latest.
fn watch_interval_max(bounds: Bounds) -> Duration {
    bounds.read_timeout.min(Duration::from_secs(3600))
}

/// Resolves when the connection crosses one of its time bounds (runs beside the
/// read of a frame, and is dropped with it).
async fn watch(activity: &Activity, bounds: Bounds) -> Expiry {
    loop {
        let now = Instant::now();
        let until = |start: Instant, bound: Duration| {
            start.checked_add(bound).map_or(Duration::MAX, |at| at.saturating_duration_since(now))
        };
        let sleep = match activity.frame_started.get() {
            Some(started) => match until(started, bounds.read_timeout) {
                Duration::ZERO => return Expiry::ReadDeadline,
                left => left,
            },
            None if activity.in_flight.get() == 0 => match until(activity.last.get(), bounds.idle) {
                Duration::ZERO => return Expiry::Idle,
                left => left,
            },
            // A request in flight (a long-poll Fetch, a Produce waiting for its
            // acks) keeps the connection; the idle time counts from its answer.
            None => bounds.idle,
        };
        glommio::timer::sleep(sleep.min(watch_interval_max(bounds))).await;
    }
}

/// Decodes `frame` and starts its request: what the writer gets for it, and, for a
/// handler, the channel that tells when the handler is dispatched. An undecodable
/// request closes the connection (logged), but ApiVersions at an unsupported
/// version, which is answered at once.
fn start_request(
    frame: Bytes,
    context: &Rc<ShardContext>,
    peer: &str,
) -> Result<(Pending, Option<local_channel::LocalReceiver<()>>), End> {
    let shard = context.shard;
    match codec::decode_request(frame) {
        Ok(request) => {
            let (handler, on_dispatched) = spawn_handler(request, context);
            Ok((Pending::Handler(handler), Some(on_dispatched)))
        }
        Err(DecodeError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
            let body = ResponseKind::ApiVersions(api_versions::unsupported_version(context.transactions.is_some()));
            match codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
                Ok(bytes) => Ok((Pending::Ready(bytes), None)),
                Err(error) => {
                    tracing::error!("shard {shard}: {peer}: {error}");
                    Err(End::Closing)
                }
            }
        }
        Err(error) => {
            tracing::warn!("shard {shard}: closing {peer}: {error}");
            Err(End::Closing)
        }
    }
}

/// Spawns the handler of `request` on this shard; the receiver gets a message (or
/// is disconnected) once the handler is dispatched.
fn spawn_handler(request: Request, context: &Rc<ShardContext>) -> (Handler, local_channel::LocalReceiver<()>) {
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let api_key = request.api_key;
    let silent = matches!(&request.body, RequestKind::Produce(produce) if produce.acks == 0);
    let context = context.clone();
    let (dispatched, on_dispatched) = local_channel::new_bounded::<()>(1);
    let task = glommio::spawn_local(async move {
        let request_context = RequestContext { shard: &context, header: &request.header, version };
        handlers::dispatch(&request_context, request.body, move || {
            // The reader is gone (the connection ends): nobody waits for it.
            if dispatched.try_send(()).is_err() {
                tracing::trace!("a request was dispatched after its reader ended");
            }
        })
        .await
    })
    .detach();
    (Handler { api_key, version, correlation_id, silent, task }, on_dispatched)
}

/// Waits until a handler is dispatched; true if the broker stops first.
async fn stopped_before_dispatched(
    on_dispatched: &local_channel::LocalReceiver<()>,
    stop: &flume::Receiver<()>,
) -> bool {
    let dispatched = async {
        on_dispatched.recv().await;
        false
    };
    let stopping = async {
        super::stop_requested(stop).await;
        true
    };
    dispatched.or(stopping).await
}

// The write side.

/// Writes the responses of the queued requests in queue order, until the read side
/// closes the queue, the peer is gone or the grace period is over (then the handlers
/// still queued are cancelled), or a response cannot be made.
async fn write_responses<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    pending: &local_channel::LocalReceiver<Pending>,
    mut read_end: ReadEnd,
    activity: &Activity,
    shard: ShardId,
    peer: &str,
) {
    while let Some(next) = pending.recv().await {
        let frame = match next {
            Pending::Ready(frame) => frame,
            Pending::Handler(handler) => match handler.reply(&mut read_end, shard, peer).await {
                Reply::Write(frame) => frame,
                Reply::Nothing => {
                    activity.answered();
                    continue;
                }
                Reply::Fail => return,
                Reply::Abandon => {
                    cancel_all(pending).await;
                    return;
                }
            },
        };
        if let Err(error) = write_frame(writer, &frame).await {
            tracing::debug!("shard {shard}: {peer}: writing a response: {error}");
            cancel_all(pending).await;
            return;
        }
        activity.answered();
    }
}

/// Writes every part of `frame`, in order, with as few writes as the socket takes
/// (vectored where the socket writes several slices at once; glommio's writes the
/// first, so each part is one `send` there).
async fn write_frame<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &ResponseFrame,
) -> std::io::Result<()> {
    use futures_lite::AsyncWriteExt;
    let mut parts = frame.parts();
    // Bytes of `parts[0]` already written.
    let mut done = 0;
    while let Some((first, rest)) = parts.split_first() {
        let mut slices = Vec::with_capacity(parts.len().min(WRITE_SLICES_MAX));
        slices.push(std::io::IoSlice::new(&first[done..]));
        slices.extend(rest.iter().take(WRITE_SLICES_MAX - 1).map(|part| std::io::IoSlice::new(part)));
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Skip what was written: whole parts, then into the next one.
        while let Some((first, rest)) = parts.split_first() {
            let left = first.len() - done;
            if written < left {
                done += written;
                break;
            }
            written -= left;
            done = 0;
            parts = rest;
        }
    }
    Ok(())
}

/// IoSlices per vectored write (Linux's IOV_MAX is 1024).
const WRITE_SLICES_MAX: usize = 64;

/// What the writer does for one request.
enum Reply {
    /// Writes this frame, the response.
    Write(ResponseFrame),
    /// Writes nothing: the client reads no response (Produce with acks=0).
    Nothing,
    /// Stops writing: the handler gave no answer or its response could not be
    /// encoded (logged).
    Fail,
    /// Stops writing and cancels the handlers queued after this one: the peer is
    /// gone or the grace period is over (logged).
    Abandon,
}

impl Handler {
    /// Waits for the handler's answer (see [`ReadEnd::answer`]) and encodes it.
    async fn reply(mut self, read_end: &mut ReadEnd, shard: ShardId, peer: &str) -> Reply {
        let (api_key, version) = (self.api_key, self.version);
        match read_end.answer(&mut self.task).await {
            Some(Some(_)) if self.silent => Reply::Nothing,
            Some(Some(body)) => match codec::encode_response(api_key, version, self.correlation_id, &body) {
                Ok(bytes) => Reply::Write(bytes),
                Err(error) => {
                    tracing::error!("shard {shard}: {peer}: {error}");
                    Reply::Fail
                }
            },
            Some(None) => {
                tracing::error!("shard {shard}: {peer}: no handler answered {api_key:?} v{version}");
                Reply::Fail
            }
            None => {
                tracing::debug!("shard {shard}: {peer}: dropping {api_key:?} (peer gone or shutdown grace over)");
                Reply::Abandon
            }
        }
    }
}

/// What the writer knows of how the read side ended.
struct ReadEnd {
    /// Gets the read side's [`End`], once.
    end_seen: flume::Receiver<End>,
    /// The read side ended with [`End::Closing`]: nothing more comes on `end_seen`.
    closing: bool,
    /// Once closing, when the handlers still running are cancelled.
    deadline: Option<std::time::Instant>,
}

impl ReadEnd {
    fn new(end_seen: flume::Receiver<End>) -> Self {
        Self { end_seen, closing: false, deadline: None }
    }

    /// Waits for the handler's answer, unless the peer is gone (nobody to answer:
    /// cancel it) or the connection is closing and the grace period runs out. `None`
    /// when the handler is cancelled; `Some(None)` when it gave no answer.
    async fn answer(&mut self, task: &mut JoinHandle<Option<ResponseKind>>) -> Option<Option<ResponseKind>> {
        loop {
            let end_signal = async {
                if self.closing {
                    std::future::pending::<()>().await;
                }
                let end = self.end_seen.recv_async().await.unwrap_or(End::PeerGone);
                Some(end)
            };
            let grace = async {
                match self.deadline {
                    Some(at) => glommio::timer::sleep(at.saturating_duration_since(std::time::Instant::now())).await,
                    None => std::future::pending::<()>().await,
                }
                Some(End::PeerGone)
            };
            let outcome = async { (&mut *task).await.map(Ok) }.or(async { end_signal.or(grace).await.map(Err) }).await;
            match outcome {
                Some(Ok(answer)) => return Some(answer),
                Some(Err(End::Closing)) => {
                    self.closing = true;
                    self.deadline.get_or_insert(std::time::Instant::now() + SHUTDOWN_GRACE);
                }
                Some(Err(End::PeerGone)) | None => {
                    task.cancel();
                    return None;
                }
            }
        }
    }
}

/// Cancels every handler queued for the writer until the reader closes the queue.
async fn cancel_all(pending: &local_channel::LocalReceiver<Pending>) {
    while let Some(next) = pending.recv().await {
        if let Pending::Handler(handler) = next {
            handler.task.cancel();
        }
    }
}
