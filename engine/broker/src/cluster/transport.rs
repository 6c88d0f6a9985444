//! The links between the quorum's nodes: TCP on each node's controller listener,
//! carrying Raft messages and the requests a node forwards to the active controller.
//!
//! Each node keeps one outgoing connection to every other voter, made by a sender
//! thread that reconnects after any error, and accepts the others' connections on
//! its controller listener. Everything a node sends to a peer goes on its own
//! outgoing connection; the peer answers forwarded requests on that same
//! connection, and sends its Raft messages on its own. A Raft message that cannot be
//! sent is dropped: Raft retransmits, and a link that drops messages is one of the
//! faults it is built for.
//!
//! ## Frames
//!
//! `[length: u32 BE][kind: u8][payload]`, length counting kind and payload, at most
//! [`FRAME_BYTES_MAX`]. Kinds: [`KIND_HELLO`] (JSON [`Hello`], the first frame on a
//! connection, naming the cluster and the sender), [`KIND_RAFT`] (a raft-rs
//! `Message` in protobuf), [`KIND_REQUEST`] and [`KIND_REPLY`] (JSON [`Envelope`]s).
//! A connection whose hello names another cluster, or a node that is not a voter,
//! is closed and logged: nodes of two clusters never exchange a message.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};

use super::quorum::raft_id;
use super::records::NodeId;

pub const FRAME_BYTES_MAX: usize = 64 << 20;
pub const KIND_HELLO: u8 = 0;
pub const KIND_RAFT: u8 = 1;
pub const KIND_REQUEST: u8 = 2;
pub const KIND_REPLY: u8 = 3;

/// Frames queued for one peer beyond which new ones are dropped (the peer is slow
/// or gone; Raft resends what matters).
const QUEUE_FRAMES_MAX: usize = 4096;
/// A write to a peer that takes longer ends the link, which reconnects: a peer that
/// stopped reading (a process that went away with the connection half open) must
/// not hold a link's messages forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connection's reader wakes without data to see whether the node is
/// stopping; it then closes the connection, so the peer reconnects to whatever
/// listens at the address next (the same node restarted).
const READ_WAKE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: NodeId,
}

/// A forwarded request or its reply, matched by `id` (unique per sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

/// What the transport hands the quorum.
#[derive(Debug)]
pub enum Incoming<Req, Rep> {
    Raft(Message),
    /// A request `from` forwarded; answer it with [`Transport::reply`].
    Request {
        from: NodeId,
        envelope: Envelope<Req>,
    },
    /// The answer to a request this node forwarded.
    Reply(Envelope<Rep>),
}

/// One node's links. Dropping it stops the sender threads; the listener thread
/// stops at the next connection attempt after [`Transport::stop`].
pub struct Transport<Req, Rep> {
    node_id: NodeId,
    peers: BTreeMap<NodeId, flume::Sender<Vec<u8>>>,
    /// Replies to requests that arrived on a peer's connection, written back on it.
    reply_links: Arc<ReplyLinks>,
    stopped: Arc<AtomicBool>,
    local: SocketAddr,
    _types: std::marker::PhantomData<fn(Req, Rep)>,
}

impl<Req, Rep> Transport<Req, Rep>
where
    Req: Serialize + serde::de::DeserializeOwned + Send + 'static,
    Rep: Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    /// Binds `listen` and starts the threads: a listener, and a sender per peer in
    /// `voters` (`(node id, host:port)`, this node's own entry skipped).
    pub fn start(
        hello: Hello,
        listen: SocketAddr,
        voters: &[(NodeId, String)],
        incoming: flume::Sender<Incoming<Req, Rep>>,
    ) -> std::io::Result<Transport<Req, Rep>> {
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let reply_links: Arc<ReplyLinks> = Arc::default();
        let accepting = Accepting {
            hello: hello.clone(),
            voters: voters.iter().map(|(id, _)| *id).collect(),
            incoming: incoming.clone(),
            stopped: stopped.clone(),
            reply_links: reply_links.clone(),
        };
        std::thread::Builder::new()
            .name(format!("corelog-quorum-listen-{}", hello.node_id))
            .spawn(move || accept_loop(listener, accepting))?;
        let mut peers = BTreeMap::new();
        for (peer, address) in voters.iter().filter(|(id, _)| *id != hello.node_id) {
            let (send, queue) = flume::bounded(QUEUE_FRAMES_MAX);
            let link = Link { hello: hello.clone(), peer: *peer, address: address.clone(), stopped: stopped.clone() };
            let incoming = incoming.clone();
            std::thread::Builder::new()
                .name(format!("corelog-quorum-to-{peer}"))
                .spawn(move || link.run(queue, incoming))?;
            peers.insert(*peer, send);
        }
        Ok(Transport { node_id: hello.node_id, peers, reply_links, stopped, local, _types: std::marker::PhantomData })
    }

    /// The controller listener's address (with the port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Queues a Raft message for node `to`; dropped if the link is full or unknown.
    pub fn send_raft(&self, to: NodeId, message: &Message) {
        match message.write_to_bytes() {
            Ok(bytes) => self.queue(to, frame(KIND_RAFT, &bytes)),
            Err(error) => tracing::error!("encoding a raft message: {error}"),
        }
    }

    pub fn forward(&self, to: NodeId, envelope: &Envelope<Req>) {
        self.queue(to, frame(KIND_REQUEST, &json(envelope)));
    }

    /// Answers a request that `to` forwarded (on the connection it came on).
    pub fn reply(&self, to: NodeId, envelope: &Envelope<Rep>) {
        let link = self.reply_links.lock().ok().and_then(|links| links.get(&to).cloned());
        match link {
            Some(link) if link.try_send(frame(KIND_REPLY, &json(envelope))).is_ok() => {}
            _ => tracing::debug!("node {}: the connection from {to} is gone; its request times out", self.node_id),
        }
    }

    fn queue(&self, to: NodeId, frame: Vec<u8>) {
        match self.peers.get(&to) {
            Some(peer) => {
                if peer.try_send(frame).is_err() {
                    tracing::debug!("node {}: link to {to} is full, a frame is dropped", self.node_id);
                }
            }
            None => tracing::warn!("node {}: no link to node {to}", self.node_id),
        }
    }

    /// Stops the threads: senders at once, the listener at its next wake-up.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // Wake the listener so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(100));
    }
}

impl<Req, Rep> Drop for Transport<Req, Rep> {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(100));
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame: `Ok(None)` at a clean end of stream.
pub fn read_frame(reader: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {length} bytes")));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let kind = body.remove(0);
    Ok(Some((kind, body)))
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Decodes a frame into what the quorum gets, `from` the node that sent it.
fn decode<Req, Rep>(from: NodeId, kind: u8, payload: &[u8]) -> std::io::Result<Incoming<Req, Rep>>
where
    Req: serde::de::DeserializeOwned,
    Rep: serde::de::DeserializeOwned,
{
    match kind {
        KIND_RAFT => {
            let message = Message::parse_from_bytes(payload).map_err(|e| invalid(format!("raft message: {e}")))?;
            if message.from != raft_id(from) {
                return Err(invalid(format!("raft message from {} on node {from}'s link", message.from)));
            }
            Ok(Incoming::Raft(message))
        }
        KIND_REQUEST => serde_json::from_slice(payload)
            .map(|envelope| Incoming::Request { from, envelope })
            .map_err(|e| invalid(format!("request: {e}"))),
        KIND_REPLY => serde_json::from_slice(payload).map(Incoming::Reply).map_err(|e| invalid(format!("reply: {e}"))),
        other => Err(invalid(format!("frame kind {other}"))),
    }
}

/// Replies to requests that arrived on a peer's connection, by peer, written back
/// on that connection by its reply thread.
type ReplyLinks = std::sync::Mutex<BTreeMap<NodeId, flume::Sender<Vec<u8>>>>;

/// What every connection the listener accepts is served with.
struct Accepting<Req, Rep> {
    hello: Hello,
    voters: Vec<NodeId>,
    incoming: flume::Sender<Incoming<Req, Rep>>,
    stopped: Arc<AtomicBool>,
    reply_links: Arc<ReplyLinks>,
}

// By hand: a derive would ask `Req` and `Rep` to be `Clone`.
impl<Req, Rep> Clone for Accepting<Req, Rep> {
    fn clone(&self) -> Self {
        Accepting {
            hello: self.hello.clone(),
            voters: self.voters.clone(),
            incoming: self.incoming.clone(),
            stopped: self.stopped.clone(),
            reply_links: self.reply_links.clone(),
        }
    }
}

fn accept_loop<Req, Rep>(listener: TcpListener, accepting: Accepting<Req, Rep>)
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Rep: serde::de::DeserializeOwned + Send + 'static,
{
    for stream in listener.incoming() {
        if accepting.stopped.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let accepting = accepting.clone();
        let spawned = std::thread::Builder::new().name("corelog-quorum-from".to_string()).spawn(move || {
            if let Err(error) = serve_peer(stream, &accepting) {
                tracing::debug!("node {}: a quorum connection ended: {error}", accepting.hello.node_id);
            }
        });
        if let Err(error) = spawned {
            tracing::error!("starting a quorum connection thread: {error}");
        }
    }
}

/// Serves one peer's connection: its hello, then its frames until it closes.
fn serve_peer<Req, Rep>(stream: TcpStream, accepting: &Accepting<Req, Rep>) -> std::io::Result<()>
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Rep: serde::de::DeserializeOwned + Send + 'static,
{
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_WAKE))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let result = serve_frames(&stream, accepting);
    // Whatever ended it, the peer must see the connection close (the reply thread
    // holds a clone of the socket).
    let _ = stream.shutdown(std::net::Shutdown::Both);
    result
}

/// Waits for the next byte of `reader` while the node runs: `Ok(false)` once it
/// stops.
fn wait_for_data(reader: &mut BufReader<TcpStream>, stopped: &AtomicBool) -> std::io::Result<bool> {
    use std::io::BufRead;
    loop {
        if stopped.load(Ordering::Acquire) {
            return Ok(false);
        }
        match reader.fill_buf() {
            Ok(_) => return Ok(true),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => return Err(error),
        }
    }
}

fn serve_frames<Req, Rep>(stream: &TcpStream, accepting: &Accepting<Req, Rep>) -> std::io::Result<()>
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Rep: serde::de::DeserializeOwned + Send + 'static,
{
    let Accepting { hello, voters, incoming, stopped, reply_links } = accepting;
    let mut reader = BufReader::new(stream.try_clone()?);
    if !wait_for_data(&mut reader, stopped)? {
        return Ok(());
    }
    let Some((KIND_HELLO, payload)) = read_frame(&mut reader)? else {
        return Err(invalid("no hello".to_string()));
    };
    let theirs: Hello = serde_json::from_slice(&payload).map_err(|e| invalid(format!("hello: {e}")))?;
    if theirs.cluster_id != hello.cluster_id {
        tracing::error!(
            "node {}: refused a quorum connection from node {} of cluster {} (this is cluster {})",
            hello.node_id,
            theirs.node_id,
            theirs.cluster_id,
            hello.cluster_id
        );
        return Ok(());
    }
    if !voters.contains(&theirs.node_id) || theirs.node_id == hello.node_id {
        tracing::error!(
            "node {}: refused a quorum connection from node {}: not a voter",
            hello.node_id,
            theirs.node_id
        );
        return Ok(());
    }
    let from = theirs.node_id;
    // Replies go back on this connection, written by their own thread.
    let (replies, reply_queue) = flume::bounded::<Vec<u8>>(QUEUE_FRAMES_MAX);
    if let Ok(mut links) = reply_links.lock() {
        links.insert(from, replies);
    }
    let writer = stream.try_clone()?;
    std::thread::Builder::new().name(format!("corelog-quorum-reply-{from}")).spawn(move || {
        let mut writer = BufWriter::new(writer);
        for frame in reply_queue.iter() {
            if writer.write_all(&frame).and_then(|()| writer.flush()).is_err() {
                return;
            }
        }
    })?;
    while wait_for_data(&mut reader, stopped)? {
        let Some((kind, payload)) = read_frame(&mut reader)? else { return Ok(()) };
        if incoming.send(decode(from, kind, &payload)?).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// One node's outgoing connection to one peer.
struct Link {
    hello: Hello,
    peer: NodeId,
    address: String,
    stopped: Arc<AtomicBool>,
}

impl Link {
    fn run<Req, Rep>(self, queue: flume::Receiver<Vec<u8>>, incoming: flume::Sender<Incoming<Req, Rep>>)
    where
        Req: serde::de::DeserializeOwned + Send + 'static,
        Rep: serde::de::DeserializeOwned + Send + 'static,
    {
        let mut backoff = Duration::from_millis(50);
        while !self.stopped.load(Ordering::Acquire) {
            match self.connect() {
                Ok(stream) => {
                    backoff = Duration::from_millis(50);
                    if let Err(error) = self.pump(stream, &queue, &incoming) {
                        tracing::debug!("node {}: link to {} failed: {error}", self.hello.node_id, self.peer);
                    }
                }
                Err(error) => {
                    tracing::debug!(
                        "node {}: connecting to {} at {}: {error}",
                        self.hello.node_id,
                        self.peer,
                        self.address
                    );
                }
            }
            // Frames queued while disconnected are stale by now, but for the
            // requests among them: those time out on the sender's side.
            while queue.try_recv().is_ok() {}
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(500));
            if queue.is_disconnected() {
                return;
            }
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let address = self
            .address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{} resolves to no address", self.address)))?;
        let stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(stream)
    }

    /// Sends the hello, then queued frames, while a reader thread hands replies in.
    fn pump<Req, Rep>(
        &self,
        stream: TcpStream,
        queue: &flume::Receiver<Vec<u8>>,
        incoming: &flume::Sender<Incoming<Req, Rep>>,
    ) -> std::io::Result<()>
    where
        Req: serde::de::DeserializeOwned + Send + 'static,
        Rep: serde::de::DeserializeOwned + Send + 'static,
    {
        let mut reader = BufReader::new(stream.try_clone()?);
        let (peer, incoming_replies) = (self.peer, incoming.clone());
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        std::thread::Builder::new().name(format!("corelog-quorum-replies-{peer}")).spawn(move || {
            while let Ok(Some((kind, payload))) = read_frame(&mut reader) {
                match decode::<Req, Rep>(peer, kind, &payload) {
                    Ok(reply @ Incoming::Reply(_)) => {
                        if incoming_replies.send(reply).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            reader_closed.store(true, Ordering::Release);
        })?;
        let mut writer = BufWriter::new(stream.try_clone()?);
        writer.write_all(&frame(KIND_HELLO, &json(&self.hello)))?;
        writer.flush()?;
        let result = loop {
            if self.stopped.load(Ordering::Acquire) || closed.load(Ordering::Acquire) {
                break Ok(());
            }
            match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(frame) => {
                    writer.write_all(&frame)?;
                    // More queued frames go out in the same write.
                    while let Ok(frame) = queue.try_recv() {
                        writer.write_all(&frame)?;
                    }
                    writer.flush()?;
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break Ok(()),
            }
        };
        let _ = stream.shutdown(std::net::Shutdown::Both);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestTransport = Transport<String, String>;

    fn voters(addresses: &[SocketAddr]) -> Vec<(NodeId, String)> {
        addresses.iter().enumerate().map(|(i, a)| (i as NodeId, a.to_string())).collect()
    }

    fn free_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }

    fn recv(incoming: &flume::Receiver<Incoming<String, String>>) -> Incoming<String, String> {
        incoming.recv_timeout(Duration::from_secs(10)).expect("a frame within 10 s")
    }

    #[test]
    fn raft_messages_requests_and_replies_cross_between_two_nodes() {
        let addresses = [free_port(), free_port()];
        let voters = voters(&addresses);
        let (in0, out0) = flume::unbounded();
        let (in1, out1) = flume::unbounded();
        let hello = |node_id| Hello { cluster_id: "c".to_string(), node_id };
        let node0: TestTransport = Transport::start(hello(0), addresses[0], &voters, in0).expect("node 0");
        let node1: TestTransport = Transport::start(hello(1), addresses[1], &voters, in1).expect("node 1");

        let message = Message { from: raft_id(0), to: raft_id(1), term: 3, ..Message::default() };
        node0.send_raft(1, &message);
        match recv(&out1) {
            Incoming::Raft(got) => assert_eq!(got, message),
            other => panic!("{other:?}"),
        }
        node0.forward(1, &Envelope { id: 9, body: "create t".to_string() });
        match recv(&out1) {
            Incoming::Request { from, envelope } => {
                assert_eq!((from, envelope.id, envelope.body.as_str()), (0, 9, "create t"));
            }
            other => panic!("{other:?}"),
        }
        node1.reply(0, &Envelope { id: 9, body: "done".to_string() });
        match recv(&out0) {
            Incoming::Reply(envelope) => assert_eq!((envelope.id, envelope.body.as_str()), (9, "done")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_node_of_another_cluster_is_not_heard() {
        let addresses = [free_port(), free_port()];
        let voters = voters(&addresses);
        let (in0, _out0) = flume::unbounded();
        let (in1, out1) = flume::unbounded();
        let stranger = Hello { cluster_id: "other".to_string(), node_id: 0 };
        let node0: TestTransport = Transport::start(stranger, addresses[0], &voters, in0).expect("node 0");
        let _node1: TestTransport =
            Transport::start(Hello { cluster_id: "c".to_string(), node_id: 1 }, addresses[1], &voters, in1)
                .expect("node 1");
        for _ in 0..5 {
            node0.send_raft(1, &Message { from: raft_id(0), to: raft_id(1), term: 3, ..Message::default() });
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(out1.recv_timeout(Duration::from_millis(500)).is_err(), "nothing crosses between clusters");
    }

    #[test]
    fn frames_too_large_or_empty_are_refused() {
        let mut big = Vec::from(((FRAME_BYTES_MAX + 1) as u32).to_be_bytes());
        big.push(KIND_RAFT);
        assert!(read_frame(&mut big.as_slice()).is_err());
        assert!(read_frame(&mut [0u8, 0, 0, 0].as_slice()).is_err());
        assert!(read_frame(&mut [].as_slice()).expect("clean end").is_none());
        let framed = frame(KIND_REPLY, b"{}");
        assert_eq!(read_frame(&mut framed.as_slice()).expect("frame"), Some((KIND_REPLY, b"{}".to_vec())));
    }
}
