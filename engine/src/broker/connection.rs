//! Accepting and serving connections on one shard.
//!
//! A connection is two tasks on the shard that accepted it. The reader reads frames,
//! decodes each request and spawns its handler at once (so requests pipeline), and
//! queues the handler's task; the writer awaits those tasks in queue order and
//! writes each response, so responses leave in request order whatever order the
//! handlers finish in. The queue holds at most `inflight_requests_max` requests:
//! past that, the reader stops reading and TCP pushes back on the client.
//!
//! Bad input closes only its own connection, with one log line: an oversized,
//! truncated or undecodable frame, an unknown API key or an unsupported version (but
//! ApiVersions at an unknown version is answered, as Kafka does).

use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::ShardContext;
use crate::kafka::codec::{self, DecodeError, FrameError};
use crate::kafka::handlers::{self, api_versions, RequestContext};

/// Accepts connections until `stop` is disconnected, then waits for every
/// connection of this shard to finish what it has read.
pub async fn accept_loop(listener: TcpListener, context: Rc<ShardContext>, stop: flume::Receiver<()>) {
    let connections = glommio::sync::Gate::new();
    loop {
        let accepted = async { Some(listener.accept().await) }.or(async {
            // The broker never sends on `stop`; it drops the sender to say "stop".
            let _ = stop.recv_async().await;
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

/// What the writer sends for one request, in order.
enum Pending {
    Handler { api_key: ApiKey, version: i16, correlation_id: i32, silent: bool, task: JoinHandle<Option<ResponseKind>> },
    /// A response known at read time (ApiVersions at an unsupported version).
    Ready(Bytes),
}

async fn serve(stream: TcpStream, context: &Rc<ShardContext>, peer: &str, stop: flume::Receiver<()>) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("{peer}: TCP_NODELAY: {error}");
    }
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let stop = &stop;
    let reader = &mut reader;
    let (queue, pending) = local_channel::new_bounded::<Pending>(context.broker.config.inflight_requests_max.max(1));
    let shard = context.shard;
    let read_side = async move {
        loop {
            let frame = async { Some(codec::read_frame(reader, context.broker.config.request_bytes_max).await) }
                .or(async {
                    let _ = stop.recv_async().await;
                    None
                })
                .await;
            let frame = match frame {
                None => return,
                Some(Ok(Some(frame))) => frame,
                Some(Ok(None)) => return,
                Some(Err(FrameError::Io(error))) => {
                    tracing::debug!("shard {shard}: {peer}: {error}");
                    return;
                }
                Some(Err(error)) => {
                    tracing::warn!("shard {shard}: closing {peer}: {error}");
                    return;
                }
            };
            let next = match codec::decode_request(frame) {
                Ok(request) => {
                    let version = request.header.request_api_version;
                    let correlation_id = request.header.correlation_id;
                    let api_key = request.api_key;
                    // Produce with acks=0: the client reads no response.
                    let silent = matches!(&request.body, RequestKind::Produce(produce) if produce.acks == 0);
                    let context = context.clone();
                    let task = glommio::spawn_local(async move {
                        let request_context = RequestContext { shard: &context, header: &request.header, version };
                        handlers::dispatch(&request_context, request.body).await
                    })
                    .detach();
                    Pending::Handler { api_key, version, correlation_id, silent, task }
                }
                Err(DecodeError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                    let body = ResponseKind::ApiVersions(api_versions::unsupported_version());
                    match codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
                        Ok(bytes) => Pending::Ready(bytes),
                        Err(error) => {
                            tracing::error!("shard {shard}: {peer}: {error}");
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!("shard {shard}: closing {peer}: {error}");
                    return;
                }
            };
            if queue.send(next).await.is_err() {
                return;
            }
        }
    };
    let write_side = async {
        while let Some(next) = pending.recv().await {
            let bytes = match next {
                Pending::Ready(bytes) => bytes,
                Pending::Handler { api_key, version, correlation_id, silent, task } => match task.await {
                    Some(Some(_)) if silent => continue,
                    Some(Some(body)) => match codec::encode_response(api_key, version, correlation_id, &body) {
                        Ok(bytes) => bytes,
                        Err(error) => {
                            tracing::error!("shard {shard}: {peer}: {error}");
                            return;
                        }
                    },
                    Some(None) | None => {
                        tracing::error!("shard {shard}: {peer}: no handler answered {api_key:?} v{version}");
                        return;
                    }
                },
            };
            if let Err(error) = writer.write_all(&bytes).await {
                tracing::debug!("shard {shard}: {peer}: writing a response: {error}");
                return;
            }
        }
    };
    // The reader ends first (closing the queue) or the writer fails; either way the
    // responses already queued are written before the connection closes, unless
    // the writer itself failed.
    // `read_side` owns the queue's sender: when it returns, the queue closes and
    // the writer ends after the last queued response.
    futures_lite::future::zip(read_side, write_side).await;
    if let Err(error) = writer.close().await {
        tracing::debug!("shard {shard}: {peer}: closing: {error}");
    }
}
