//! The storage seam: everything the log does to a disk goes through [`Storage`] and
//! [`StorageFile`], so a test can swap in [`SimStorage`] and crash it at any write.
//!
//! Two implementations:
//! - [`DmaStorage`]: glommio `DmaFile`s (O_DIRECT over io_uring). This is the only
//!   place outside `shard/` that knows glommio, so another io_uring runtime could
//!   replace it here.
//! - [`SimStorage`]: an in-memory disk that remembers what was synced, and on a
//!   simulated crash keeps only that plus whatever the chosen [`CrashFault`] lets
//!   survive (torn tails, lost unsynced writes, bit flips). It can also fail the next
//!   fsync or run out of space.
//!
//! Both are single-threaded: files are owned by one shard (`!Send` in practice).

use std::future::Future;
use std::path::Path;

use crate::error::Result;

pub mod dma;
mod sim;

pub use dma::DmaStorage;
pub use sim::{CrashFault, SimStorage};

/// A directory tree of files. Paths are built by the engine from validated names.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;

    /// Opens a file for appending and reading; its logical length is its size.
    async fn open(&self, path: &Path, create: bool, role: FileRole) -> Result<Self::File>;
    async fn remove_file(&self, path: &Path) -> Result<()>;
    /// Renames a file, replacing `to` if it exists (POSIX `rename`: atomic). Durable
    /// only after [`Storage::sync_dir`]. No handle to `from` may be open.
    async fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    async fn create_dir_all(&self, path: &Path) -> Result<()>;
    async fn remove_dir_all(&self, path: &Path) -> Result<()>;
    /// Names (not paths) of the entries in a directory, sorted.
    async fn list_dir(&self, path: &Path) -> Result<Vec<String>>;
    async fn exists(&self, path: &Path) -> Result<bool>;
    /// Makes creations and removals of entries in `path` durable.
    async fn sync_dir(&self, path: &Path) -> Result<()>;
    /// Replaces a small file atomically and durably: write a temporary file, sync
    /// it, rename it over `path`, sync the directory.
    async fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()>;
    /// Reads a whole small file, or `None` if it does not exist.
    async fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>>;
}

/// What a file is for; implementations size their write buffers by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A segment's `.log`: large sequential appends.
    Log,
    /// An `.index` or `.timeindex`: small appends.
    Index,
}

/// An append-only file with random reads. Appends may be buffered by the
/// implementation; `read_at` always sees every appended byte.
#[allow(async_fn_in_trait)]
// `len` is the file's size in bytes, as `std::fs::Metadata::len` is: not a
// collection's length, and no caller asks whether a file is empty.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: 'static {
    /// Bytes appended so far (buffered or not).
    fn len(&self) -> u64;
    async fn append(&mut self, bytes: &[u8]) -> Result<()>;
    /// Hands buffered bytes to the kernel/device. Not durable until [`sync`](Self::sync).
    async fn flush(&mut self) -> Result<()>;
    /// Flushes and fdatasyncs. When this returns `Ok`, every appended byte survives a crash.
    async fn sync(&mut self) -> Result<()>;
    /// An fdatasync that does not borrow the file, so appends (and flushes) can go on
    /// while it is in flight (the partition actor's pipelined group commit). When it
    /// returns `Ok`, every byte flushed before this call survives a crash; bytes
    /// flushed after it may or may not. The file must not be truncated before it
    /// completes, and must not be closed while it is alive.
    fn sync_detached(&self) -> impl Future<Output = Result<()>> + 'static + use<Self>;
    async fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>>;
    /// Cuts the file to `len` bytes (`len <= self.len()`).
    async fn truncate(&mut self, len: u64) -> Result<()>;
    /// Flushes and releases write buffers: no more appends will come (the segment is
    /// no longer active). Reads keep working.
    async fn seal(&mut self) -> Result<()>;
    async fn close(self) -> Result<()>;
}
