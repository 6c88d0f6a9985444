//! One broker per address.
//!
//! Every shard listens on the broker's address with SO_REUSEPORT, and the kernel
//! spreads new connections over all the sockets of that reuseport group. Linux lets
//! any process of the same user join the group, so a second broker started on the
//! same address would silently take a share of the connections: clients split
//! between two clusters with two data directories. So the group must hold this
//! broker's shards only, and [`ensure_no_other_listener`] checks it twice, in the
//! kernel's tables of listening sockets (`/proc/net/tcp` and `/proc/net/tcp6`):
//!
//! - before any shard listens: a second broker stops here, before it has accepted
//!   anything, with an error naming the address and the other process's pid;
//! - after every shard listens: two brokers that start at the same instant both pass
//!   the first check, and both stop here.
//!
//! Connections in TIME_WAIT left by an earlier broker on the port are not listeners
//! and do not count, so a restart on the same port is not refused. Nor is a
//! listening socket that no process holds: a broker that has just exited leaves its
//! listeners alive until the kernel has torn down its io_uring rings, whose pending
//! accepts still hold them. The check waits up to [`ORPHANED_LISTENER_WAIT`] for
//! such sockets to go, and refuses only if they stay.
//!
//! Limits: the tables are those of this network namespace. The pid is found by
//! looking for the socket among every process's open files, which hides the
//! processes of other users (then only the address is named). Two addresses overlap
//! when their ports are equal and their IPs are equal or either is a wildcard
//! (0.0.0.0 or ::), across families too: a v6 wildcard takes v4 connections on a
//! dual-stack host, and the rule errs on the side of refusing.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use corelog_engine::error::{EngineError, Result};

/// A socket in the LISTEN state, from the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listener {
    address: SocketAddr,
    /// The socket's inode: what `/proc/<pid>/fd/<n>` links to as `socket:[inode]`.
    inode: u64,
}

/// The state code of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// How long a listener that no visible process holds may take to go away (see the
/// module docs) before the broker refuses the address.
pub const ORPHANED_LISTENER_WAIT: Duration = Duration::from_secs(10);

/// How often the tables are read again while waiting.
const ORPHANED_LISTENER_POLL: Duration = Duration::from_millis(50);

/// Fails if a process other than this one listens on an address overlapping
/// `address` (see the module docs). Port 0 is not checked: the kernel has not
/// chosen the port yet. If the tables cannot be read, the check is skipped with a
/// warning: the broker still serves, it only cannot prove it is alone.
pub fn ensure_no_other_listener(address: SocketAddr) -> Result<()> {
    if address.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + ORPHANED_LISTENER_WAIT;
    let mut waiting_logged = false;
    loop {
        let (listeners, own) = match (listeners(), own_sockets()) {
            (Ok(listeners), Ok(own)) => (listeners, own),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!("cannot check that no other process listens on {address}: {error}");
                return Ok(());
            }
        };
        let others: Vec<(Listener, Option<u32>)> = listeners
            .into_iter()
            .filter(|l| overlaps(l.address, address) && !own.contains(&l.inode))
            .map(|listener| (listener, pid_holding(listener.inode)))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let orphans_only = others.iter().all(|(_, pid)| pid.is_none());
        if orphans_only && Instant::now() < deadline {
            if !waiting_logged {
                tracing::info!("waiting for the listener of an exited process on {address} to be released");
                waiting_logged = true;
            }
            std::thread::sleep(ORPHANED_LISTENER_POLL);
            continue;
        }
        let holders: Vec<String> = others
            .iter()
            .map(|(listener, pid)| match pid {
                Some(pid) => format!("pid {pid} listens on {}", listener.address),
                None => format!(
                    "a socket listens on {} that no process this user can see holds, after {}s",
                    listener.address,
                    ORPHANED_LISTENER_WAIT.as_secs()
                ),
            })
            .collect();
        // The OS's own words, which tools that retry a bind look for.
        let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        return Err(EngineError::InUse(format!(
            "listening on {address}: {in_use}: another process already serves this address ({}): one broker per \
             address, as two would split clients between two clusters",
            holders.join(", ")
        )));
    }
}

/// Every listening TCP socket of this network namespace, v4 and v6.
fn listeners() -> std::io::Result<Vec<Listener>> {
    let mut all = parse_table(&std::fs::read_to_string("/proc/net/tcp")?);
    match std::fs::read_to_string("/proc/net/tcp6") {
        Ok(text) => all.extend(parse_table(&text)),
        // A kernel without IPv6 has no v6 table, and no v6 listener either.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(all)
}

/// The listening sockets of one `/proc/net/tcp{,6}` table. A line reads
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`,
/// the local address as hex `ADDRESS:PORT`; lines that do not parse are skipped.
fn parse_table(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let address = parse_address(fields.get(1)?)?;
            let inode = fields.get(9)?.parse().ok()?;
            Some(Listener { address, inode })
        })
        .collect()
}

/// `0100007F:2384` → 127.0.0.1:9092. The kernel prints the port in host order and
/// the address as 32-bit words of network-order bytes read as native integers.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |index: usize| -> Option<[u8; 4]> {
        let hex = ip.get(index * 8..index * 8 + 8)?;
        u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for index in 0..4 {
                bytes[index * 4..index * 4 + 4].copy_from_slice(&word(index)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// Whether a connection meant for one address could reach a listener on the other.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (a_ip, b_ip) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && (a_ip == b_ip || a_ip.is_unspecified() || b_ip.is_unspecified())
}

/// The inodes of every socket this process has open.
fn own_sockets() -> std::io::Result<BTreeSet<u64>> {
    Ok(socket_inodes(std::path::Path::new("/proc/self/fd"))?.into_iter().collect())
}

/// The inodes of the sockets among the open files in `fd_dir` (`/proc/<pid>/fd`).
fn socket_inodes(fd_dir: &std::path::Path) -> std::io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(fd_dir)? {
        // A descriptor closed while listing is not an error.
        let Ok(target) = entry.and_then(|entry| std::fs::read_link(entry.path())) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')) {
            if let Ok(inode) = inode.parse() {
                inodes.push(inode);
            }
        }
    }
    Ok(inodes)
}

/// The pid of a process holding socket `inode`, if one this user may inspect does.
fn pid_holding(inode: u64) -> Option<u32> {
    let processes = std::fs::read_dir("/proc").ok()?;
    processes.filter_map(|entry| entry.ok()).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let inodes = socket_inodes(&entry.path().join("fd")).ok()?;
        inodes.contains(&inode).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   2: 0100007F:2384 0100007F:C350 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: garbage
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5151 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6161 1 0000000000000000 100 0 0 10 0
";

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn listening_sockets_are_read_from_the_kernel_table_and_time_wait_is_not_one() {
        // The sample tables are little-endian, as on x86 and arm64.
        if cfg!(target_endian = "big") {
            return;
        }
        assert_eq!(
            parse_table(TCP),
            vec![
                Listener { address: address("127.0.0.1:9092"), inode: 4242 },
                Listener { address: address("0.0.0.0:8080"), inode: 77 },
            ]
        );
        assert_eq!(
            parse_table(TCP6),
            vec![
                Listener { address: address("[::1]:9092"), inode: 5151 },
                // A v4-mapped v6 address reads as the v4 address it maps.
                Listener { address: address("127.0.0.1:8081"), inode: 6161 },
            ]
        );
    }

    #[test]
    fn addresses_overlap_on_one_port_when_equal_or_one_is_a_wildcard() {
        assert!(overlaps(address("127.0.0.1:9092"), address("127.0.0.1:9092")));
        assert!(overlaps(address("0.0.0.0:9092"), address("127.0.0.1:9092")));
        assert!(overlaps(address("127.0.0.1:9092"), address("[::]:9092")));
        assert!(overlaps(address("[::ffff:127.0.0.1]:9092"), address("127.0.0.1:9092")));
        assert!(!overlaps(address("127.0.0.1:9092"), address("127.0.0.1:9093")));
        assert!(!overlaps(address("127.0.0.1:9092"), address("127.0.0.2:9092")));
        assert!(!overlaps(address("[::1]:9092"), address("127.0.0.1:9092")));
    }

    #[test]
    fn a_listener_of_this_process_is_its_own_and_one_of_another_is_refused_with_its_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = listener.local_addr().expect("local address");
        ensure_no_other_listener(bound).expect("our own socket is no other listener");
        // Hand the listening socket to a child process (as its stdin) and close ours:
        // now another process serves the address.
        let mut command = std::process::Command::new("sleep");
        command.arg("60").stdin(std::os::fd::OwnedFd::from(listener));
        let mut child = command.spawn().expect("spawning sleep");
        // The command keeps our copy of the socket until it is dropped.
        drop(command);
        let result = ensure_no_other_listener(bound);
        let _ = child.kill();
        let _ = child.wait();
        let message = result.expect_err("another process listens there").to_string();
        assert!(message.contains(&format!("pid {}", child.id())), "names the other process: {message}");
        assert!(message.contains(&bound.to_string()), "names the address: {message}");
    }
}
