//! Brokers the harness starts itself: `corelog broker` child processes on loopback
//! ports the kernel picks, each with a temporary data directory that is removed
//! when the [`LocalCluster`] is dropped.
//!
//! A broker is ready when it prints its "ready on ADDR" line; the address comes
//! from that line, so no port is guessed. Stopping is SIGTERM (the broker finishes
//! in-flight requests and syncs), then SIGKILL if it has not exited in time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a broker may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const READY_MARKER: &str = "corelog broker ready on ";

/// How to start each broker.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub name: String,
    /// Shards (0: one per core).
    pub cores: usize,
    /// Lines of the broker's YAML `--config` file.
    pub config_yaml: String,
    /// The address the broker tells clients to use (its fault proxy), if not its own.
    pub advertised: Option<String>,
}

pub struct LocalBroker {
    pub name: String,
    pub address: String,
    data_dir: PathBuf,
    config_path: PathBuf,
    cores: usize,
    advertised: Option<String>,
    log_path: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub brokers: Vec<LocalBroker>,
    /// Holds the brokers' data directories; removed on drop.
    _root: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts every broker under a temporary directory inside `parent`.
    pub fn start(parent: &Path, specs: &[BrokerSpec]) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let root = tempfile::Builder::new()
            .prefix("corelog-cluster-")
            .tempdir_in(parent)
            .context("creating the cluster directory")?;
        let mut brokers = Vec::with_capacity(specs.len());
        for spec in specs {
            let data_dir = root.path().join(&spec.name);
            let config_path = root.path().join(format!("{}.yaml", spec.name));
            std::fs::write(&config_path, &spec.config_yaml)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let mut broker = LocalBroker {
                name: spec.name.clone(),
                address: String::new(),
                log_path: root.path().join(format!("{}.log", spec.name)),
                data_dir,
                config_path,
                cores: spec.cores,
                advertised: spec.advertised.clone(),
                child: None,
            };
            broker.start("127.0.0.1:0")?;
            brokers.push(broker);
        }
        Ok(LocalCluster { brokers, _root: root })
    }

    /// Stops every broker gracefully; the first failure is returned after all tried.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for broker in &mut self.brokers {
            if let Err(error) = broker.stop() {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl LocalBroker {
    /// Starts the broker process (again, on the same data directory, after a stop or
    /// crash; `listen` keeps the address stable across restarts).
    pub fn start(&mut self, listen: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the corelog binary")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let mut child = Command::new(exe)
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen)
            .arg("--cores")
            .arg(self.cores.to_string())
            .arg("--config")
            .arg(&self.config_path)
            .args(self.advertised.iter().flat_map(|address| ["--advertised-listener", address.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting broker {}", self.name))?;
        let stderr = child.stderr.take().context("broker stderr")?;
        let (ready, ready_seen) = flume::bounded(1);
        // Copies the broker's log to its file and watches for the ready line.
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = log;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(READY_MARKER).nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = ready.try_send(address);
                }
                if writeln!(log, "{line}").is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = ready_seen.recv_timeout(Duration::from_millis(50)) {
                self.address = address;
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "broker {} exited ({status}) before it was ready; its log is {}",
                    self.name,
                    self.log_path.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "broker {} was not ready within {START_TIMEOUT:?}; its log is {}",
                    self.name,
                    self.log_path.display()
                );
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, wait, SIGKILL if needed. Errors if the broker did not exit cleanly.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("broker {} exited with {status}; its log is {}", self.name, self.log_path.display());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("broker {} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl LocalBroker {
    /// SIGKILL, and wait for the process to be gone: a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { bail!("broker {} is not running", self.name) };
        child.kill().with_context(|| format!("killing broker {}", self.name))?;
        child.wait()?;
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn freeze(&mut self, frozen: bool) -> anyhow::Result<()> {
        let Some(child) = &self.child else { bail!("broker {} is not running", self.name) };
        signal(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

#[allow(unsafe_code)] // kill(2): std sends no signal but SIGKILL
fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) takes no pointers and touches no memory of ours. (The pid is
    // a child we own and have not reaped, so no other process can have it.)
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
