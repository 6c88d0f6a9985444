//! The data directory: its layout, its lock, and the move from the old layout.
//!
//! ```text
//! <data_dir>/
//!   corelog+meta/           the engine's and the broker's own files
//!     lock                  locked by the process serving the directory; holds its pid
//!     cluster-id            the broker's cluster id
//!     producer-id-block     end of the last durably reserved block of producer ids
//!     device-probe          one block of zeros for the shards' start-up device probe
//!     .io-probe-<shard>     a shard's own probe file, only when device-probe is missing
//!   <topic>/                one directory per topic (see `crate::shard`)
//!     topic.properties
//!     <partition>/          segments, indexes, snapshots (see `crate::log`)
//! ```
//!
//! Topic directories are named by the topic, and a Kafka topic name may hold only
//! ASCII letters, digits, '.', '_' and '-'. [`META_DIR`] holds a '+', so no topic can
//! ever be named like it, and the files inside it cannot collide with any topic: a
//! topic may be called `producer-id-block`, `cluster-id`, `lock` or `.io-probe-0`.
//!
//! ## The device probe
//!
//! Every shard opens a file of at least one block before its data files (see
//! `DmaStorage::prime_device_probe`). `device-probe` is that file: written once and
//! never removed, so the shards only read it. Without it, each shard would look for
//! any such file in the data directory and else write and remove a probe of its
//! own, and one shard may pick up another's probe just as it is removed (glommio
//! then panics on the vanished file). If it cannot be written (a first start on a
//! full disk), the shards fall back to that search.
//!
//! ## One process per data directory
//!
//! [`DataDir::open`] (a broker, or any engine) and [`DataDir::lock_existing`]
//! (`corelog repair`) take an exclusive `flock(2)` on `corelog+meta/lock` without
//! waiting, and [`DataDir`] holds it for its whole life (the engine keeps it until its
//! shards have stopped; the repair until it is done). The kernel releases it when the
//! process ends, however it ends (SIGKILL included), so a crash never leaves a stale
//! lock behind. The holder writes its pid into the file, so the process that is
//! refused can name it. Limits: the lock is advisory (only corelog honours it), and
//! `flock` on a network file system may lock only on one client.
//!
//! ## The old layout
//!
//! Data directories written before [`META_DIR`] existed kept `cluster-id` and
//! `producer-id-block` (and their `.tmp` files of an interrupted replace) at the root,
//! and the shards' probe files too. [`DataDir::open`] moves each such root entry that
//! is a regular file into [`META_DIR`] (a rename, then both directories synced) and
//! removes leftover probe and `.tmp` files; an entry that is a directory is a topic of
//! that name and stays where it is. If a file exists in both places the start is
//! refused, naming both: corelog never copies these files, so the two are not
//! versions of one another and the engine cannot tell which one is right.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::storage::dma::sync_dir_blocking;

/// The directory, inside the data directory, of the engine's and the broker's own
/// files. The '+' keeps it apart from every legal topic name.
pub const META_DIR: &str = "corelog+meta";

/// The lock file in [`META_DIR`].
const LOCK_FILE: &str = "lock";

/// Files of [`META_DIR`] that older versions kept at the data directory's root.
const MOVED_FROM_ROOT: &[&str] = &["cluster-id", "producer-id-block"];

/// The prefix of a shard's probe file (see `DmaStorage::prime_device_probe`).
pub const IO_PROBE_PREFIX: &str = ".io-probe-";

/// The file in [`META_DIR`] every shard's device probe reads (see the module docs).
const DEVICE_PROBE_FILE: &str = "device-probe";

/// The size of [`DEVICE_PROBE_FILE`]: one block, as the probe needs.
const DEVICE_PROBE_BYTES: usize = 4096;

/// Where the engine's and the broker's own files live in `data_dir`.
pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(META_DIR)
}

/// Whether `data_dir` has a whole `device-probe` for the shards' probes to read.
pub fn has_device_probe(data_dir: &Path) -> bool {
    let path = meta_dir(data_dir).join(DEVICE_PROBE_FILE);
    std::fs::metadata(path).is_ok_and(|metadata| metadata.is_file() && metadata.len() >= DEVICE_PROBE_BYTES as u64)
}

/// An open, locked data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// The locked file; the lock lives as long as this descriptor.
    _lock: File,
}

impl DataDir {
    /// Creates the directory and [`META_DIR`] if missing, locks it for this process
    /// and moves the files of the old layout into [`META_DIR`]. Fails, naming the
    /// holder's pid, if another process has it open.
    pub fn open(path: &Path) -> Result<DataDir> {
        std::fs::create_dir_all(path).map_err(|e| EngineError::io("create directory", path, e))?;
        let data_dir = DataDir::lock_meta_dir(path)?;
        move_old_layout(path, &data_dir.meta_dir())?;
        write_device_probe(path);
        Ok(data_dir)
    }

    /// Locks an existing data directory for a tool that works on its files while no
    /// broker runs (`corelog repair`), so that it refuses to run beside one. Changes
    /// nothing in the directory but the lock file (and [`META_DIR`], made if
    /// missing); the old layout stays until a broker opens it. Fails, naming the
    /// holder's pid, if another process has it open.
    pub fn lock_existing(path: &Path) -> Result<DataDir> {
        if !path.is_dir() {
            return Err(EngineError::DataDirectory(format!(
                "{} is not a data directory: no such directory",
                path.display()
            )));
        }
        DataDir::lock_meta_dir(path)
    }

    /// Makes [`META_DIR`] if missing and takes the lock in it.
    fn lock_meta_dir(path: &Path) -> Result<DataDir> {
        let meta = meta_dir(path);
        match std::fs::create_dir(&meta) {
            // A new META_DIR is made durable before anything durable is written in it.
            Ok(()) => sync_dir_blocking(path)?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(EngineError::io("create directory", &meta, error)),
        }
        let lock = lock(path, &meta.join(LOCK_FILE))?;
        Ok(DataDir { path: path.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`META_DIR`] of this data directory.
    pub fn meta_dir(&self) -> PathBuf {
        meta_dir(&self.path)
    }
}

/// Opens `lock_path` and locks it exclusively, or says who holds it.
fn lock(data_dir: &Path, lock_path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|e| EngineError::io("open", lock_path, e))?;
    // On Linux this is flock(2), LOCK_EX | LOCK_NB: the lock earlier versions took.
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::Error(error)) => return Err(EngineError::io("lock", lock_path, error)),
        Err(TryLockError::WouldBlock) => {
            let holder = match holder_pid(&file) {
                Some(pid) => format!("pid {pid}"),
                None => "another process (its pid is not written yet)".to_string(),
            };
            return Err(EngineError::InUse(format!(
                "data directory {} is in use by {holder}, which holds the lock on {}: one process per data \
                 directory (a broker, or corelog repair), as two would overwrite each other's files",
                data_dir.display(),
                lock_path.display()
            )));
        }
    }
    // The pid is only for the error message above: it is not synced, and a stale one
    // after a crash is overwritten here before anyone can read it. Overwriting in
    // place before cutting the rest needs no new block once the file has one, so a
    // restart on a full disk writes it too; if it cannot, the lock still holds.
    let pid = format!("{}\n", std::process::id());
    let written = file.write_all_at(pid.as_bytes(), 0).and_then(|()| file.set_len(pid.len() as u64));
    if let Err(error) = written {
        tracing::warn!("writing this process's pid into {}: {error}", lock_path.display());
    }
    Ok(file)
}

/// The pid the lock's holder wrote, if it has written it yet.
fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Moves the old layout's files from the root into `meta` (see the module docs).
fn move_old_layout(root: &Path, meta: &Path) -> Result<()> {
    let mut moved = false;
    for name in MOVED_FROM_ROOT {
        let old = root.join(name);
        if !is_file(&old)? {
            continue;
        }
        let new = meta.join(name);
        if std::fs::symlink_metadata(&new).is_ok() {
            return Err(EngineError::DataDirectory(format!(
                "both {} (the old layout) and {} exist: keep the one that belongs to this data directory \
                 and remove the other",
                old.display(),
                new.display()
            )));
        }
        std::fs::rename(&old, &new).map_err(|e| EngineError::io("rename", &old, e))?;
        tracing::info!("moved {} to {} (the data directory's new layout)", old.display(), new.display());
        moved = true;
    }
    // Leftovers that hold nothing: temporary files of an interrupted replace (the
    // file they were replacing is intact) and probe files of a start that crashed.
    for entry in std::fs::read_dir(root).map_err(|e| EngineError::io("list directory", root, e))? {
        let entry = entry.map_err(|e| EngineError::io("list directory", root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover =
            name.starts_with(IO_PROBE_PREFIX) || MOVED_FROM_ROOT.iter().any(|moved| name == format!("{moved}.tmp"));
        if leftover && is_file(&entry.path())? {
            std::fs::remove_file(entry.path()).map_err(|e| EngineError::io("remove", entry.path(), e))?;
            moved = true;
        }
    }
    if moved {
        sync_dir_blocking(meta)?;
        sync_dir_blocking(root)?;
    }
    Ok(())
}

/// Writes [`DEVICE_PROBE_FILE`] unless it is already whole. It holds nothing, so it
/// is not synced, and failing to write it only costs the fallback (module docs).
fn write_device_probe(data_dir: &Path) {
    if has_device_probe(data_dir) {
        return;
    }
    let path = meta_dir(data_dir).join(DEVICE_PROBE_FILE);
    if let Err(error) = std::fs::write(&path, [0u8; DEVICE_PROBE_BYTES]) {
        tracing::warn!("writing {}: {error}; each shard's device probe will look for another file", path.display());
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::debug!("removing the partial {}: {error}", path.display());
        }
    }
}

/// Whether `path` is a regular file (not a directory, not missing).
fn is_file(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => Ok(metadata.is_file()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(EngineError::io("stat", path, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TopicName;

    #[test]
    fn the_meta_directory_can_never_be_a_topic() {
        assert!(TopicName::new(META_DIR).is_err(), "{META_DIR} must not be a legal topic name");
    }

    #[test]
    fn a_second_open_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("first open");
        // flock locks belong to the open file description, so a second open in the
        // same process is refused just as one in another process is.
        let refused = DataDir::open(dir.path()).expect_err("a second open must be refused");
        let message = refused.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "names the holder: {message}");
        assert!(message.contains(&dir.path().display().to_string()), "names the directory: {message}");
        drop(first);
        DataDir::open(dir.path()).expect("open after the holder let go");
    }

    #[test]
    fn lock_existing_is_refused_beside_a_broker_keeps_a_broker_out_and_moves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let message = DataDir::lock_existing(&missing).expect_err("no directory").to_string();
        assert!(message.contains("not a data directory"), "{message}");
        assert!(!missing.exists(), "lock_existing made the directory");

        let broker = DataDir::open(dir.path()).expect("open");
        let message = DataDir::lock_existing(dir.path()).expect_err("a repair beside a broker").to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "names the holder: {message}");
        drop(broker);

        std::fs::write(dir.path().join("cluster-id"), "old").expect("an old-layout file");
        let repair = DataDir::lock_existing(dir.path()).expect("lock once the broker is gone");
        assert!(DataDir::open(dir.path()).is_err(), "a broker started beside the repair");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cluster-id")).expect("left"),
            "old",
            "the repair moved a file"
        );
        drop(repair);
    }

    #[test]
    fn old_layout_files_move_into_the_meta_directory_and_topic_directories_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("producer-id-block"), "7000").expect("write");
        std::fs::write(root.join("producer-id-block.tmp"), "8000").expect("write");
        std::fs::write(root.join(".io-probe-1"), [0u8; 16]).expect("write");
        // A topic named like the old cluster-id file.
        std::fs::create_dir_all(root.join("cluster-id").join("0")).expect("topic directory");
        let data_dir = DataDir::open(root).expect("open");
        let meta = data_dir.meta_dir();
        assert_eq!(std::fs::read_to_string(meta.join("producer-id-block")).expect("moved"), "7000");
        assert!(!root.join("producer-id-block").exists(), "the old file is gone");
        assert!(!root.join("producer-id-block.tmp").exists(), "the leftover .tmp is removed");
        assert!(!root.join(".io-probe-1").exists(), "the leftover probe is removed");
        assert!(root.join("cluster-id").join("0").is_dir(), "a topic directory is left alone");
        assert!(!meta.join("cluster-id").exists(), "a directory is never moved");
    }

    #[test]
    fn the_device_probe_file_holds_one_block_and_a_short_one_is_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!has_device_probe(dir.path()));
        drop(DataDir::open(dir.path()).expect("open"));
        let path = meta_dir(dir.path()).join(DEVICE_PROBE_FILE);
        assert_eq!(std::fs::metadata(&path).expect("written").len(), DEVICE_PROBE_BYTES as u64);
        assert!(has_device_probe(dir.path()));
        std::fs::write(&path, [0u8; 10]).expect("cut short");
        assert!(!has_device_probe(dir.path()), "a short file is no probe");
        drop(DataDir::open(dir.path()).expect("reopen"));
        assert!(has_device_probe(dir.path()), "rewritten whole");
    }

    #[test]
    fn a_file_in_both_layouts_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(DataDir::open(dir.path()).expect("open"));
        std::fs::write(meta_dir(dir.path()).join("cluster-id"), "new").expect("write");
        std::fs::write(dir.path().join("cluster-id"), "old").expect("write");
        let message = DataDir::open(dir.path()).expect_err("ambiguous").to_string();
        assert!(message.contains("corelog+meta/cluster-id") && message.contains("both"), "{message}");
        assert_eq!(std::fs::read_to_string(dir.path().join("cluster-id")).expect("kept"), "old");
    }
}
