//! `corelog proxy`: one [`FaultProxy`] in front of a broker, with faults from the
//! command line and a control port to change them while it runs.
//!
//! Control protocol (TCP, one command per line, one reply line per command):
//!
//! ```text
//! add <kind> [key=value]...   ->  ok <id>          (kinds and keys: parse_fault)
//! remove <id>                 ->  ok
//! clear                       ->  ok
//! stats                       ->  {"accepted":..,"open":..,...}   (ProxyStats as JSON)
//! anything else               ->  error <message>
//! ```
//!
//! The control port has no authentication, so it binds loopback addresses only.
//! Runs until SIGINT or SIGTERM, then shuts the proxy down and exits 0.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Scope;
use std::time::Duration;

use anyhow::Context;

use super::{parse_fault, FaultId, FaultProxy, NetFault};
use crate::UsageError;

/// How often the control threads look at the stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Longest control command accepted; a longer line closes the control connection.
const CONTROL_LINE_BYTES_MAX: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Address clients connect to (port 0: any free port; the ready line names it).
    #[arg(long, value_parser = resolve)]
    listen: SocketAddr,
    /// The broker's address: every accepted connection is forwarded there.
    #[arg(long, value_parser = resolve)]
    upstream: SocketAddr,
    /// Control port address (loopback only: it has no authentication). Line
    /// protocol, one reply line per command: `add <kind> [key=value]...` → `ok <id>`;
    /// `remove <id>` → `ok`; `clear` → `ok`; `stats` → one JSON line; anything else
    /// → `error <message>`.
    #[arg(long, value_parser = resolve, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// A fault active from the start (repeatable), e.g. "latency delay_ms=200
    /// jitter_ms=50 direction=both". Kinds: latency delay_ms=N [jitter_ms=N],
    /// bandwidth bytes_per_second=N, blackhole, reset, down; latency, bandwidth and
    /// blackhole take direction=both|to-broker|to-client (default both).
    #[arg(long = "fault", value_name = "FAULT", value_parser = parse_fault)]
    faults: Vec<NetFault>,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if !args.control.ip().is_loopback() {
        return Err(UsageError(format!(
            "--control {}: must be a loopback address (the control port has no authentication)",
            args.control
        ))
        .into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing the SIGTERM/SIGINT handler")?;
    }
    let control =
        TcpListener::bind(args.control).with_context(|| format!("binding the control port {}", args.control))?;
    let control_addr = control.local_addr().context("reading the control port's address")?;
    control.set_nonblocking(true).context("making the control port non-blocking")?;
    let proxy = FaultProxy::start("proxy", args.listen, args.upstream)
        .with_context(|| format!("starting the proxy on {}", args.listen))?;
    for fault in args.faults {
        proxy.add(fault);
    }
    eprintln!("corelog proxy ready on {} -> {} (control {control_addr})", proxy.local_addr(), args.upstream);
    std::thread::scope(|scope| serve_control(scope, &control, &proxy, &stop));
    let stats = proxy.stats();
    tracing::info!(
        "corelog proxy {} stopping: {} connections accepted, {} bytes to the broker, {} to clients, {} resets",
        proxy.name(),
        stats.accepted,
        stats.bytes_to_broker,
        stats.bytes_to_client,
        stats.resets
    );
    proxy.shutdown();
    Ok(())
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("{address:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))
}

/// Accepts control connections until `stop` is set, each served on a scoped thread
/// (so all have ended when the scope returns).
fn serve_control<'scope>(
    scope: &'scope Scope<'scope, '_>,
    control: &TcpListener,
    proxy: &'scope FaultProxy,
    stop: &'scope AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match control.accept() {
            Ok((stream, peer)) => {
                let spawned =
                    std::thread::Builder::new().name("proxy-control".to_string()).spawn_scoped(scope, move || {
                        if let Err(error) = serve_control_connection(stream, proxy, stop) {
                            tracing::debug!("control connection from {peer}: {error}");
                        }
                    });
                if let Err(error) = spawned {
                    tracing::warn!("no thread for the control connection from {peer}: {error}");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL_INTERVAL),
            Err(error) => {
                tracing::warn!("accepting on the control port: {error}");
                std::thread::sleep(STOP_POLL_INTERVAL);
            }
        }
    }
}

/// Answers one control connection's commands until it closes or `stop` is set.
fn serve_control_connection(stream: TcpStream, proxy: &FaultProxy, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STOP_POLL_INTERVAL))?;
    let mut writer = &stream;
    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // A timeout keeps what was read so far in `line`; the next call goes on.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.ends_with(b"\n") => {
                let reply = match std::str::from_utf8(&line) {
                    Ok(command) => execute(proxy, command),
                    Err(_) => "error the command is not UTF-8".to_string(),
                };
                writer.write_all(format!("{reply}\n").as_bytes())?;
                line.clear();
            }
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(error),
        }
        if line.len() > CONTROL_LINE_BYTES_MAX {
            writer.write_all(format!("error command longer than {CONTROL_LINE_BYTES_MAX} bytes\n").as_bytes())?;
            return Ok(());
        }
    }
    Ok(())
}

/// Runs one control command and returns its reply line (without the newline).
fn execute(proxy: &FaultProxy, command: &str) -> String {
    let command = command.trim();
    let (verb, rest) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
    let rest = rest.trim();
    let result = match verb {
        "add" => parse_fault(rest).map(|fault| format!("ok {}", proxy.add(fault))),
        "remove" => remove(proxy, rest),
        "clear" if rest.is_empty() => {
            proxy.clear();
            Ok("ok".to_string())
        }
        "stats" if rest.is_empty() => {
            serde_json::to_string(&proxy.stats()).map_err(|error| format!("encoding the stats: {error}"))
        }
        "clear" | "stats" => Err(format!("{verb} takes no arguments, got {rest:?}")),
        "" => Err("empty command (expected add, remove, clear or stats)".to_string()),
        other => Err(format!("unknown command {other:?} (expected add, remove, clear or stats)")),
    };
    result.unwrap_or_else(|message| format!("error {message}"))
}

fn remove(proxy: &FaultProxy, id_text: &str) -> Result<String, String> {
    let id = id_text.parse::<u64>().map(FaultId).map_err(|_| format!("{id_text:?} is not a fault id (remove <id>)"))?;
    if proxy.remove_active(id) {
        Ok("ok".to_string())
    } else {
        Err(format!("no active fault {id}"))
    }
}
