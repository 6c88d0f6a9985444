//! The socket operations std does not offer: an abortive close (TCP RST) and waking
//! a thread blocked on a socket from another thread.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

/// Arms an abortive close: SO_LINGER 0, so the last close of the socket sends a TCP
/// RST (and drops unsent bytes) instead of a FIN; then shuts the read half, which
/// wakes a thread blocked reading it (its read returns 0) without sending anything.
/// The reset goes out when the last handle to the socket is dropped.
pub(super) fn arm_reset(stream: &TcpStream) -> io::Result<()> {
    set_linger_zero(stream.as_raw_fd())?;
    shutdown(stream.as_raw_fd(), libc::SHUT_RD)
}

/// Resets a connection now: SO_LINGER 0, then close.
pub(super) fn reset_now(stream: TcpStream) -> io::Result<()> {
    set_linger_zero(stream.as_raw_fd())
    // The drop closes it.
}

/// Stops a listener: new connection attempts are refused, connections not yet
/// accepted are reset, and a thread blocked in accept() returns (EINVAL on Linux).
/// The port stays bound until the last handle is dropped.
pub(super) fn stop_listening(listener: &TcpListener) -> io::Result<()> {
    shutdown(listener.as_raw_fd(), libc::SHUT_RDWR)
}

fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `fd` is an open socket owned by the caller's handle; the option value
    // is a live `linger` of the size passed.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller's handle.
    if unsafe { libc::shutdown(fd, how) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
