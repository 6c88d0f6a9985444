//! The acceptor thread: owns the listener's life (closed for `down`, bound again on
//! the same address after), resets connections as they arrive while `reset` is
//! active, starts a link thread for every other one, and joins them all at the end.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{link, lock, socket, Shared};

/// How often the acceptor retries binding the listener after `down` if the port is
/// taken meanwhile.
const REBIND_INTERVAL: Duration = Duration::from_millis(100);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// The listener, when there is one. Shared so `down` and shutdown can stop it from
/// another thread while the acceptor is blocked in accept().
pub(super) struct ListenerSlot {
    listener: Option<Arc<TcpListener>>,
    /// The proxy is shutting down: never bind again.
    closing: bool,
    /// Binding again failed at least once in this outage (warned once).
    bind_failing: bool,
}

impl ListenerSlot {
    pub fn new(listener: TcpListener) -> ListenerSlot {
        ListenerSlot { listener: Some(Arc::new(listener)), closing: false, bind_failing: false }
    }
}

pub(super) fn accept_loop(shared: Arc<Shared>) {
    let mut links: Vec<JoinHandle<()>> = Vec::new();
    while let Some(listener) = wait_for_listener(&shared) {
        join_finished(&shared, &mut links);
        match listener.accept() {
            Ok((client, peer)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if let Some(link) = admit(&shared, client, peer) {
                    links.push(link);
                }
            }
            Err(error) => accept_failed(&shared, &listener, &error),
        }
    }
    for link in links {
        join(&shared, link);
    }
}

/// Closes the listener because `down` began; the acceptor then waits for it to end.
pub(super) fn close_listener(shared: &Shared) {
    stop(lock(&shared.listener).listener.take(), shared);
}

/// Closes the listener for good (shutdown) and wakes the acceptor so it ends.
pub(super) fn close_for_good(shared: &Shared) {
    let mut slot = lock(&shared.listener);
    slot.closing = true;
    stop(slot.listener.take(), shared);
    shared.listener_changed.notify_all();
}

fn stop(listener: Option<Arc<TcpListener>>, shared: &Shared) {
    if let Some(listener) = listener {
        if let Err(error) = socket::stop_listening(&listener) {
            tracing::warn!("proxy {}: stopping the listener on {}: {error}", shared.name, shared.local_addr);
        }
    }
}

/// The listener to accept on: the current one, or a new one bound on the same
/// address once `down` has ended; `None` when the proxy shuts down.
fn wait_for_listener(shared: &Shared) -> Option<Arc<TcpListener>> {
    let mut slot = lock(&shared.listener);
    loop {
        if slot.closing {
            return None;
        }
        if shared.effective().down {
            slot.listener = None;
            slot = shared.listener_changed.wait(slot).unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        if let Some(listener) = &slot.listener {
            return Some(Arc::clone(listener));
        }
        match TcpListener::bind(shared.local_addr) {
            Ok(listener) => {
                tracing::info!("proxy {}: listening again on {}", shared.name, shared.local_addr);
                slot.bind_failing = false;
                slot.listener = Some(Arc::new(listener));
            }
            Err(error) => {
                if !slot.bind_failing {
                    tracing::warn!(
                        "proxy {}: binding {} again failed ({error}); retrying every {REBIND_INTERVAL:?}",
                        shared.name,
                        shared.local_addr
                    );
                    slot.bind_failing = true;
                }
                let (next, _) =
                    shared.listener_changed.wait_timeout(slot, REBIND_INTERVAL).unwrap_or_else(PoisonError::into_inner);
                slot = next;
            }
        }
    }
}

/// An accept failed: expected if `down` or shutdown stopped this listener meanwhile
/// (the slot no longer holds it), otherwise logged.
fn accept_failed(shared: &Shared, listener: &Arc<TcpListener>, error: &std::io::Error) {
    let current = lock(&shared.listener).listener.as_ref().is_some_and(|slot| Arc::ptr_eq(slot, listener));
    if current {
        tracing::warn!("proxy {}: accepting on {}: {error}", shared.name, shared.local_addr);
        std::thread::sleep(ACCEPT_ERROR_PAUSE);
    }
}

/// Resets a new connection if `reset` is active; otherwise starts its link thread.
fn admit(shared: &Arc<Shared>, client: TcpStream, peer: SocketAddr) -> Option<JoinHandle<()>> {
    if shared.effective().reset {
        shared.resets.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("proxy {}: reset the new connection from {peer} (reset active)", shared.name);
        if let Err(error) = socket::reset_now(client) {
            tracing::debug!("proxy {}: resetting the connection from {peer}: {error}", shared.name);
        }
        return None;
    }
    let id = shared.next_link_id();
    let spawned = std::thread::Builder::new().name(format!("proxy-link-{id}")).spawn({
        let shared = Arc::clone(shared);
        move || link::serve(&shared, client, peer, id)
    });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!("proxy {}: no thread for the connection from {peer} ({error}); closing it", shared.name);
            None
        }
    }
}

/// Joins the link threads that have ended, so finished threads do not pile up.
fn join_finished(shared: &Shared, links: &mut Vec<JoinHandle<()>>) {
    let mut index = 0;
    while index < links.len() {
        if links[index].is_finished() {
            join(shared, links.swap_remove(index));
        } else {
            index += 1;
        }
    }
}

fn join(shared: &Shared, link: JoinHandle<()>) {
    if link.join().is_err() {
        tracing::error!("proxy {}: a connection thread panicked", shared.name);
    }
}
