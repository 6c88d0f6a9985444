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
//! Endings: when the peer goes away, handlers still running are cancelled (nobody
//! would read their answers; a JoinGroup may otherwise wait minutes for a
//! rebalance). When the broker stops or the connection is closed for bad input,
//! requests already read get [`SHUTDOWN_GRACE`] to finish and be answered.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use corelog_engine::types::ShardId;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::ShardContext;
use crate::kafka::codec::{self, DecodeError, FrameError, Request};
use crate::kafka::handlers::{self, api_versions, RequestContext};

/// Accepts connections until `stop` is disconnected, then waits for every
/// connection of this shard to finish what it has read.
pub async fn accept_loop(listener: TcpListener, context: Rc<ShardContext>, stop: flume::Receiver<()>) {
    let connections = glommio::sync::Gate::new();
    loop {
        let accepted = async { Some(listener.accept().await) }.or(async {
            super::stop_requested(&stop).await;
            None
        });
        match accepted.await {
            None => break,
            Some(Ok(stream)) => {
                let peer = stream.peer_addr().map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
                if !context.broker.admit_connection() {
                    tracing::warn!(
                        "shard {}: refusing {peer}: {} connections already open",
                        context.shard,
                        context.broker.config.connections_max
                    );
                    continue;
                }
                let connection_context = context.clone();
                let stop = stop.clone();
                let spawned = connections.spawn(async move {
                    serve(stream, &connection_context, &peer, stop).await;
                    connection_context.broker.release_connection();
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

/// Serves one connection: its read side and its write side run side by side until
/// both end, then the socket is closed.
async fn serve(stream: TcpStream, context: &Rc<ShardContext>, peer: &str, stop: flume::Receiver<()>) {
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
    let read_side = async move {
        let end = read_requests(reader, &queue, context, peer, stop).await;
        // Capacity 1 and sent once: this cannot fail while the writer lives.
        let _ = ended.try_send(end);
        // Dropping `queue` here closes it: the writer ends after the last response.
        drop(queue);
    };
    let write_side = write_responses(&mut writer, &pending, ReadEnd::new(end_seen), shard, peer);
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
    Ready(Bytes),
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
) -> End {
    // The connection's receive room, reused from frame to frame (see `read_frame_into`).
    let mut room = BytesMut::new();
    loop {
        let frame = match next_frame(reader, &mut room, context, peer, stop).await {
            Ok(frame) => frame,
            Err(end) => return end,
        };
        let (next, on_dispatched) = match start_request(frame, context, peer) {
            Ok(started) => started,
            Err(end) => return end,
        };
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
/// (`PeerGone`), the broker stops or the frame is bad (`Closing`, logged).
async fn next_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    room: &mut BytesMut,
    context: &ShardContext,
    peer: &str,
    stop: &flume::Receiver<()>,
) -> Result<Bytes, End> {
    let shard = context.shard;
    let frame = async { Some(codec::read_frame_into(reader, room, context.broker.config.request_bytes_max).await) }
        .or(async {
            super::stop_requested(stop).await;
            None
        })
        .await;
    match frame {
        None => Err(End::Closing),
        Some(Ok(Some(frame))) => Ok(frame),
        Some(Ok(None)) => Err(End::PeerGone),
        Some(Err(FrameError::Io(error))) => {
            tracing::debug!("shard {shard}: {peer}: {error}");
            Err(End::PeerGone)
        }
        Some(Err(error)) => {
            tracing::warn!("shard {shard}: closing {peer}: {error}");
            Err(End::Closing)
        }
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
            let body = ResponseKind::ApiVersions(api_versions::unsupported_version());
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
    shard: ShardId,
    peer: &str,
) {
    while let Some(next) = pending.recv().await {
        let bytes = match next {
            Pending::Ready(bytes) => bytes,
            Pending::Handler(handler) => match handler.reply(&mut read_end, shard, peer).await {
                Reply::Write(bytes) => bytes,
                Reply::Nothing => continue,
                Reply::Fail => return,
                Reply::Abandon => {
                    cancel_all(pending).await;
                    return;
                }
            },
        };
        if let Err(error) = writer.write_all(&bytes).await {
            tracing::debug!("shard {shard}: {peer}: writing a response: {error}");
            cancel_all(pending).await;
            return;
        }
    }
}

/// What the writer does for one request.
enum Reply {
    /// Writes these bytes, the response.
    Write(Bytes),
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
