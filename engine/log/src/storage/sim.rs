//! An in-memory disk with crash semantics, for model-based crash tests.
//!
//! Every file keeps two images: `current` (what reads see, like the page cache) and
//! `durable` (the content at its last successful sync). [`SimStorage::crash`]
//! replaces every file by its durable image plus some of its unsynced tail, as a
//! power loss would: the tail may be lost entirely, torn at any byte, or survive
//! with bit flips. Directory operations (create, remove, rename) and truncation are
//! durable at once; the engine syncs after each of them anyway.
//!
//! A detached sync ([`StorageFile::sync_detached`]) makes durable exactly the bytes
//! present when it was started, and completes no earlier than one poll later, so
//! work interleaves with it as with a real fdatasync in flight. A test can hold every
//! detached sync in flight ([`SimStorage::hold_syncs`]) to act while one is pending.
//!
//! A test can also stop the process at any change to the disk
//! ([`SimStorage::die_after_changes`]): the changes after the chosen one fail and
//! leave the disk as it was, and the crash that follows shows what an open finds
//! after a crash at exactly that point of an operation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{FileRole, Storage, StorageFile};
use crate::error::{EngineError, Result};

/// What a simulated crash does to the bytes written since each file's last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashFault {
    /// Every unsynced byte is lost.
    LoseUnsynced,
    /// A prefix of the unsynced bytes survives, cut at a byte chosen by `seed`.
    TornTail { seed: u64 },
    /// Like `TornTail`, then one bit of the surviving unsynced bytes is flipped.
    BitFlipInTail { seed: u64 },
    /// Everything written survives (the kernel flushed it all in time).
    KeepAll,
}

#[derive(Default)]
struct SimFileState {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Bytes of `current` handed to the kernel (flushed, synced, sealed): what a
    /// crash of the process, as opposed to the machine, leaves. The rest stands for
    /// a write buffer in the process's memory. `durable.len() <= written`.
    written: usize,
}

#[derive(Default)]
struct SimDisk {
    files: BTreeMap<PathBuf, SimFileState>,
    dirs: std::collections::BTreeSet<PathBuf>,
    /// Incremented by each crash; handles from before it stop working.
    generation: u64,
    fail_next_syncs: u32,
    space_bytes_max: Option<u64>,
    syncs: u64,
    /// While set, detached syncs wait (their wakers are kept here) before completing.
    syncs_held: bool,
    held_wakers: Vec<Waker>,
    /// Detached syncs started and neither completed nor dropped.
    syncs_in_flight: usize,
    /// Changes the process may still make before it dies
    /// ([`SimStorage::die_after_changes`]); `None`: no limit.
    changes_left: Option<u64>,
}

impl SimDisk {
    /// Counts one change to the disk (`op` on `path`); fails, changing nothing, once
    /// the process is dead.
    fn change(&mut self, op: &'static str, path: &Path) -> Result<()> {
        match self.changes_left {
            Some(0) => {
                let dead = io::Error::other("simulated crash: the process died before this change");
                Err(EngineError::io(op, path, dead))
            }
            Some(left) => {
                self.changes_left = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }
}

/// A simulated disk. Cloning shares the disk.
#[derive(Clone, Default)]
pub struct SimStorage {
    disk: Rc<RefCell<SimDisk>>,
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Simulates power loss: every open handle dies, and each file keeps its durable
    /// image plus what `fault` lets survive of its unsynced tail.
    pub fn crash(&self, fault: CrashFault) {
        let mut disk = self.disk.borrow_mut();
        disk.generation += 1;
        disk.changes_left = None;
        for (index, (_, file)) in disk.files.iter_mut().enumerate() {
            let durable_len = file.durable.len();
            let common = file.current.len().min(durable_len);
            // Truncation is durable at once, so `current` extends `durable` or is a
            // prefix of it.
            let unsynced = file.current.get(durable_len..).unwrap_or(&[]).to_vec();
            let mut survivor = file.durable[..common].to_vec();
            if file.current.len() < durable_len {
                survivor.truncate(file.current.len());
            }
            let seed_for = |seed: u64| crate::hash::splitmix64(seed ^ (index as u64).wrapping_mul(0x1000_0001));
            match fault {
                CrashFault::LoseUnsynced => {}
                CrashFault::KeepAll => survivor.extend_from_slice(&unsynced),
                CrashFault::TornTail { seed } | CrashFault::BitFlipInTail { seed } => {
                    if !unsynced.is_empty() {
                        let random = seed_for(seed);
                        let keep = (random % (unsynced.len() as u64 + 1)) as usize;
                        let start = survivor.len();
                        survivor.extend_from_slice(&unsynced[..keep]);
                        if matches!(fault, CrashFault::BitFlipInTail { .. }) && keep > 0 {
                            let at = start + (crate::hash::splitmix64(random) % keep as u64) as usize;
                            survivor[at] ^= 1 << (random % 8);
                        }
                    }
                }
            }
            file.written = survivor.len();
            file.current = survivor.clone();
            file.durable = survivor;
        }
    }

    /// Simulates a crash of the process (SIGKILL), not of the machine: every open
    /// handle dies, and each file keeps every byte that was flushed to the kernel
    /// (synced or not); bytes appended but never flushed, still in the process's
    /// write buffer, are lost.
    pub fn kill_process(&self) {
        let mut disk = self.disk.borrow_mut();
        disk.generation += 1;
        disk.changes_left = None;
        for file in disk.files.values_mut() {
            file.current.truncate(file.written);
        }
    }

    /// Lets the process make `count` more changes to the disk (a file created,
    /// removed, replaced, written, flushed, synced or truncated), then has it die:
    /// every later change fails (an IO error naming the simulated crash) and changes
    /// nothing, until [`SimStorage::crash`] or [`SimStorage::kill_process`] ends it.
    /// Reads keep working.
    pub fn die_after_changes(&self, count: u64) {
        self.disk.borrow_mut().changes_left = Some(count);
    }

    /// Makes the next `count` syncs fail with EIO.
    pub fn fail_next_syncs(&self, count: u32) {
        self.disk.borrow_mut().fail_next_syncs = count;
    }

    /// Limits the total bytes held by all files; appends past it fail with ENOSPC.
    pub fn set_space_bytes_max(&self, space_bytes_max: Option<u64>) {
        self.disk.borrow_mut().space_bytes_max = space_bytes_max;
    }

    /// Number of successful file syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.disk.borrow().syncs
    }

    /// While `held`, every detached sync ([`StorageFile::sync_detached`]) stays in
    /// flight; releasing lets them complete (each consumes a [`fail_next_syncs`]
    /// failure, if any, when it completes).
    ///
    /// [`fail_next_syncs`]: SimStorage::fail_next_syncs
    pub fn hold_syncs(&self, held: bool) {
        let wakers = {
            let mut disk = self.disk.borrow_mut();
            disk.syncs_held = held;
            if held {
                Vec::new()
            } else {
                std::mem::take(&mut disk.held_wakers)
            }
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Detached syncs started and not yet completed.
    pub fn syncs_in_flight(&self) -> usize {
        self.disk.borrow().syncs_in_flight
    }

    /// Mutates the durable bytes of a file directly (to test detection of corruption).
    pub fn corrupt(&self, path: &Path, position: usize, xor: u8) {
        let mut disk = self.disk.borrow_mut();
        if let Some(file) = disk.files.get_mut(path) {
            if position < file.current.len() {
                file.current[position] ^= xor;
            }
            if position < file.durable.len() {
                file.durable[position] ^= xor;
            }
        }
    }

    /// Size of a file as currently seen, for tests.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        self.disk.borrow().files.get(path).map(|f| f.current.len() as u64)
    }

    /// Size of a file as a crash of the process now would leave it (its bytes flushed
    /// to the kernel).
    pub fn written_file_len(&self, path: &Path) -> Option<u64> {
        self.disk.borrow().files.get(path).map(|f| f.written as u64)
    }

    /// Size of a file as a crash now would leave it at least (its synced bytes).
    pub fn durable_file_len(&self, path: &Path) -> Option<u64> {
        self.disk.borrow().files.get(path).map(|f| f.durable.len() as u64)
    }
}

fn not_found(op: &'static str, path: &Path) -> EngineError {
    EngineError::io(op, path, io::Error::from(io::ErrorKind::NotFound))
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open(&self, path: &Path, create: bool, _role: FileRole) -> Result<SimFile> {
        let mut disk = self.disk.borrow_mut();
        if !disk.files.contains_key(path) {
            if !create {
                return Err(not_found("open", path));
            }
            disk.change("create", path)?;
            disk.files.insert(path.to_path_buf(), SimFileState::default());
        }
        let generation = disk.generation;
        Ok(SimFile { disk: self.disk.clone(), path: path.to_path_buf(), generation })
    }

    async fn remove_file(&self, path: &Path) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.change("remove", path)?;
        match disk.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found("remove", path)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        if !disk.files.contains_key(from) {
            return Err(not_found("rename", from));
        }
        disk.change("rename", from)?;
        let state = disk.files.remove(from).expect("checked above");
        disk.files.insert(to.to_path_buf(), state);
        Ok(())
    }

    async fn create_dir_all(&self, path: &Path) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        for ancestor in path.ancestors() {
            disk.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.change("remove", path)?;
        disk.files.retain(|file, _| !file.starts_with(path));
        disk.dirs.retain(|dir| !dir.starts_with(path));
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let disk = self.disk.borrow();
        if !disk.dirs.contains(path) {
            return Err(not_found("list", path));
        }
        let children = disk.files.keys().chain(disk.dirs.iter()).filter(|p| p.parent() == Some(path));
        let mut names: Vec<String> =
            children.filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn exists(&self, path: &Path) -> Result<bool> {
        let disk = self.disk.borrow();
        Ok(disk.files.contains_key(path) || disk.dirs.contains(path))
    }

    async fn sync_dir(&self, _path: &Path) -> Result<()> {
        Ok(())
    }

    async fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        if let Some(space_bytes_max) = disk.space_bytes_max {
            // The temporary file needs room while the old one still exists.
            if disk.used_bytes() + bytes.len() as u64 > space_bytes_max {
                return Err(EngineError::io("write", path, io::Error::from_raw_os_error(libc::ENOSPC)));
            }
        }
        if disk.fail_next_syncs > 0 {
            disk.fail_next_syncs -= 1;
            return Err(EngineError::io("fsync", path, io::Error::from_raw_os_error(libc::EIO)));
        }
        disk.change("rename", path)?;
        let state = SimFileState { current: bytes.to_vec(), durable: bytes.to_vec(), written: bytes.len() };
        disk.files.insert(path.to_path_buf(), state);
        Ok(())
    }

    async fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        Ok(self.disk.borrow().files.get(path).map(|f| f.current.clone()))
    }
}

/// Counts a detached sync in [`SimDisk::syncs_in_flight`] until it is dropped.
struct SyncInFlight {
    disk: Rc<RefCell<SimDisk>>,
}

impl SyncInFlight {
    fn start(disk: Rc<RefCell<SimDisk>>) -> SyncInFlight {
        disk.borrow_mut().syncs_in_flight += 1;
        SyncInFlight { disk }
    }
}

impl Drop for SyncInFlight {
    fn drop(&mut self) {
        self.disk.borrow_mut().syncs_in_flight -= 1;
    }
}

/// A handle on a [`SimStorage`] file. It stops working after a crash.
pub struct SimFile {
    disk: Rc<RefCell<SimDisk>>,
    path: PathBuf,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, op: &'static str, f: impl FnOnce(&mut SimDisk, &PathBuf) -> Result<T>) -> Result<T> {
        let mut disk = self.disk.borrow_mut();
        if disk.generation != self.generation {
            let dead = io::Error::other("simulated crash: this handle belongs to a dead process");
            return Err(EngineError::io(op, &self.path, dead));
        }
        if !disk.files.contains_key(&self.path) {
            return Err(not_found(op, &self.path));
        }
        f(&mut disk, &self.path)
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> u64 {
        self.disk.borrow().files.get(&self.path).map_or(0, |f| f.current.len() as u64)
    }

    async fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.with("write", |disk, path| {
            if let Some(space_bytes_max) = disk.space_bytes_max {
                if disk.used_bytes() + bytes.len() as u64 > space_bytes_max {
                    return Err(EngineError::io("write", path, io::Error::from_raw_os_error(libc::ENOSPC)));
                }
            }
            disk.change("write", path)?;
            disk.files.get_mut(path).expect("checked").current.extend_from_slice(bytes);
            Ok(())
        })
    }

    async fn flush(&mut self) -> Result<()> {
        self.with("write", |disk, path| {
            disk.change("write", path)?;
            let file = disk.files.get_mut(path).expect("checked");
            file.written = file.current.len();
            Ok(())
        })
    }

    async fn sync(&mut self) -> Result<()> {
        self.with("fdatasync", |disk, path| {
            if disk.fail_next_syncs > 0 {
                disk.fail_next_syncs -= 1;
                return Err(EngineError::io("fdatasync", path, io::Error::from_raw_os_error(libc::EIO)));
            }
            disk.change("fdatasync", path)?;
            disk.syncs += 1;
            let file = disk.files.get_mut(path).expect("checked");
            file.durable = file.current.clone();
            file.written = file.current.len();
            Ok(())
        })
    }

    fn sync_detached(&self) -> impl Future<Output = Result<()>> + 'static + use<> {
        // What a real fdatasync issued now would cover at least: every byte flushed so
        // far (the caller flushes first).
        let covered = self.disk.borrow().files.get(&self.path).map_or(0, |f| f.written);
        let handle = SimFile { disk: self.disk.clone(), path: self.path.clone(), generation: self.generation };
        let in_flight = SyncInFlight::start(self.disk.clone());
        let disk = self.disk.clone();
        let mut polled = false;
        let gate = futures_lite::future::poll_fn(move |context| {
            let mut disk = disk.borrow_mut();
            if disk.syncs_held {
                disk.held_wakers.push(context.waker().clone());
                return Poll::Pending;
            }
            if !polled {
                polled = true;
                context.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(())
        });
        async move {
            gate.await;
            let _in_flight = in_flight;
            handle.with("fdatasync", |disk, path| {
                if disk.fail_next_syncs > 0 {
                    disk.fail_next_syncs -= 1;
                    return Err(EngineError::io("fdatasync", path, io::Error::from_raw_os_error(libc::EIO)));
                }
                disk.change("fdatasync", path)?;
                disk.syncs += 1;
                let file = disk.files.get_mut(path).expect("checked");
                // `durable` is always a prefix of `current`; this sync extends it to
                // what was there at its start (truncation meanwhile is the caller's bug).
                let end = covered.min(file.current.len());
                if end > file.durable.len() {
                    file.durable = file.current[..end].to_vec();
                }
                Ok(())
            })
        }
    }

    async fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        self.with("read", |disk, path| {
            let current = &disk.files[path].current;
            let start = (position as usize).min(current.len());
            let end = start.saturating_add(len).min(current.len());
            Ok(current[start..end].to_vec())
        })
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        self.with("truncate", |disk, path| {
            disk.change("truncate", path)?;
            let file = disk.files.get_mut(path).expect("checked");
            file.current.truncate(len as usize);
            file.durable.truncate(len as usize);
            file.written = file.written.min(len as usize);
            Ok(())
        })
    }

    async fn seal(&mut self) -> Result<()> {
        self.flush().await
    }

    async fn close(self) -> Result<()> {
        // Closing hands the rest to the kernel; a handle of a dead process has
        // nothing left to hand over.
        let mut disk = self.disk.borrow_mut();
        if disk.generation == self.generation {
            if let Some(file) = disk.files.get_mut(&self.path) {
                file.written = file.current.len();
            }
        }
        Ok(())
    }
}
