//! [`DmaStorage`]: files opened with O_DIRECT through glommio, driven by io_uring.
//!
//! O_DIRECT needs writes aligned to the device block (4 KiB here). Each file keeps an
//! aligned write buffer holding the bytes from `buffer_start` (block-aligned) to the
//! logical end. A full buffer is written as is; a flush writes the buffer rounded up
//! to whole blocks, zero-padded, and keeps the partial last block in memory so the
//! next flush rewrites it with more bytes. So the file on disk can be up to one block
//! longer than its logical length, ending in zeros. Crash story: zero padding is not
//! a valid batch (its `batch_length` is 0), so recovery stops there and truncates.
//! A clean close truncates the padding away.
//!
//! Directory operations are rare (segment roll, topic create/delete) and use
//! blocking `std::fs` calls.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{FileRole, Storage, StorageFile};
use crate::error::{EngineError, Result};

/// Default size of each file's write buffer: large writes keep O_DIRECT near the
/// device's sequential bandwidth.
pub const WRITE_BUFFER_BYTES_DEFAULT: usize = 1 << 20;
/// Index files grow by 8 or 12 bytes per entry; a small buffer is plenty.
pub const INDEX_WRITE_BUFFER_BYTES: usize = 16 << 10;

#[derive(Clone, Debug)]
pub struct DmaStorage {
    write_buffer_bytes: usize,
}

impl Default for DmaStorage {
    fn default() -> Self {
        DmaStorage { write_buffer_bytes: WRITE_BUFFER_BYTES_DEFAULT }
    }
}

impl DmaStorage {
    /// `write_buffer_bytes` is rounded up to a multiple of 4 KiB.
    pub fn new(write_buffer_bytes: usize) -> DmaStorage {
        DmaStorage { write_buffer_bytes: write_buffer_bytes.max(4096).next_multiple_of(4096) }
    }
}

impl DmaStorage {
    /// Must run on each executor before it opens data files under `dir`.
    ///
    /// glommio decides once per device and thread whether reads may use the io_uring
    /// poll ring, by reading the first block of the first file it opens. If that file
    /// is empty, the read "succeeds" and the device is wrongly marked pollable; every
    /// later read then fails with EOPNOTSUPP on devices without polled IO (virtio,
    /// most cloud disks). Opening a file that does have a block first gets the probe
    /// right: an existing file of the data directory on the same device when there
    /// is one (so a full disk, where no probe file can be written, still starts),
    /// else a block written for the purpose as `probe_name` and removed after.
    pub async fn prime_device_probe(&self, dir: &Path, probe_name: &str) -> Result<()> {
        if let Some(existing) = file_with_a_block(dir) {
            // Another shard may remove it meanwhile (its own probe file, a deleted
            // topic's segment): then write a probe of our own after all.
            if let Ok(file) = OpenOptions::new().read(true).dma_open(&existing).await {
                return file.close().await.map_err(|e| glommio_io("close", &existing, e));
            }
        }
        let path = dir.join(probe_name);
        if let Err(error) = std::fs::write(&path, vec![0u8; 4096]) {
            let _ = std::fs::remove_file(&path);
            return Err(EngineError::io("write", &path, error));
        }
        let file = OpenOptions::new().read(true).dma_open(&path).await.map_err(|e| glommio_io("open", &path, e))?;
        file.close().await.map_err(|e| glommio_io("close", &path, e))?;
        std::fs::remove_file(&path).map_err(std_io("remove", &path))
    }
}

/// Keeps the OS error of a failed IO: glommio's own conversion of its
/// `EnhancedIoError` into `io::Error` keeps the kind and message but not the error
/// number, so ENOSPC could not become [`EngineError::NoSpace`].
fn glommio_io<T>(op: &'static str, path: &Path, error: glommio::GlommioError<T>) -> EngineError {
    let source = match error {
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        glommio::GlommioError::IoError(source) => source,
        other => io::Error::from(other),
    };
    EngineError::io(op, path, source)
}

/// A regular file of at least one block on `dir`'s device, looked for in `dir` and
/// two levels below it (`<topic>/<partition>/` segments); `None` if there is none.
fn file_with_a_block(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir).ok()?.dev();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((path, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&path).ok()?.flatten() {
            let Ok(metadata) = entry.metadata() else { continue };
            if metadata.dev() != device {
                continue;
            }
            // Not a probe file, which its shard removes at once.
            let probe = entry.file_name().to_string_lossy().starts_with(".io-probe");
            if metadata.is_file() && metadata.len() >= 4096 && !probe {
                return Some(entry.path());
            }
            if metadata.is_dir() && depth < 2 {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
    None
}

fn std_io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EngineError + 'a {
    move |source| EngineError::io(op, path, source)
}

pub(crate) fn sync_dir_blocking(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(std_io("fsync directory", path))
}

/// Replaces a small file atomically and durably with blocking calls: write a
/// temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn replace_file_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let written = std::fs::File::create(&temporary).map_err(std_io("create", &temporary)).and_then(|mut file| {
        file.write_all(bytes).map_err(std_io("write", &temporary))?;
        file.sync_all().map_err(std_io("fsync", &temporary))
    });
    if let Err(error) = written {
        // A full disk leaves no half-written temporary behind; `path` is untouched.
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, path).map_err(std_io("rename", path))?;
    sync_dir_blocking(path.parent().unwrap_or(Path::new(".")))
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn open(&self, path: &Path, create: bool, role: FileRole) -> Result<DmaStorageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| glommio_io("open", path, e))?;
        let write_buffer_bytes = match role {
            FileRole::Log => self.write_buffer_bytes,
            FileRole::Index => INDEX_WRITE_BUFFER_BYTES,
        };
        DmaStorageFile::new(file, path.to_path_buf(), write_buffer_bytes).await
    }

    async fn remove_file(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).map_err(std_io("remove", path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(std_io("rename", from))
    }

    async fn create_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(std_io("create directory", path))
    }

    async fn remove_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::remove_dir_all(path).map_err(std_io("remove directory", path))
    }

    async fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(std_io("list directory", path))? {
            let entry = entry.map_err(std_io("list directory", path))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    async fn exists(&self, path: &Path) -> Result<bool> {
        path.try_exists().map_err(std_io("stat", path))
    }

    async fn sync_dir(&self, path: &Path) -> Result<()> {
        sync_dir_blocking(path)
    }

    async fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        replace_file_durably(path, bytes)
    }

    async fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(EngineError::io("read", path, error)),
        }
    }
}

/// One O_DIRECT file with an aligned write buffer. Owned by one shard.
pub struct DmaStorageFile {
    file: Rc<DmaFile>,
    path: PathBuf,
    alignment: u64,
    write_buffer_bytes: usize,
    /// Holds logical bytes `[buffer_start, buffer_start + buffer_len)`. `None` while
    /// nothing is pending (and after [`StorageFile::seal`]): then every byte is on disk
    /// and `buffer_start == len`, `buffer_len == 0`.
    buffer: Option<DmaBuffer>,
    buffer_start: u64,
    buffer_len: usize,
    /// Logical bytes `[0, flushed_end)` have been handed to the device.
    flushed_end: u64,
}

impl DmaStorageFile {
    async fn new(file: DmaFile, path: PathBuf, write_buffer_bytes: usize) -> Result<DmaStorageFile> {
        let alignment = file.alignment().max(512);
        assert!((write_buffer_bytes as u64).is_multiple_of(alignment), "write buffer must be block aligned");
        let size = file.file_size().await.map_err(|e| glommio_io("stat", &path, e))?;
        Ok(DmaStorageFile {
            buffer: None,
            file: Rc::new(file),
            path,
            alignment,
            write_buffer_bytes,
            buffer_start: size,
            buffer_len: 0,
            flushed_end: size,
        })
    }

    fn buffer_mut(&mut self) -> &mut DmaBuffer {
        self.buffer.as_mut().expect("buffer is present between writes")
    }

    /// Allocates the write buffer on the first append after open or seal.
    async fn ensure_buffer(&mut self) -> Result<()> {
        if self.buffer.is_none() {
            let len = self.len();
            self.buffer = Some(self.file.alloc_dma_buffer(self.write_buffer_bytes));
            self.load_tail_block(len).await?;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.buffer.as_ref().map_or(0, DmaBuffer::len)
    }

    /// Points the buffer at the block holding logical end `len`, reading the partial
    /// block from disk so later flushes can rewrite it whole.
    async fn load_tail_block(&mut self, len: u64) -> Result<()> {
        let block_start = len - len % self.alignment;
        let partial = (len - block_start) as usize;
        if partial > 0 {
            let read = self.file.read_at(block_start, partial).await.map_err(|e| glommio_io("read", &self.path, e))?;
            if read.len() != partial {
                let short = io::Error::new(io::ErrorKind::UnexpectedEof, "short read of the tail block");
                return Err(EngineError::io("read", &self.path, short));
            }
            self.buffer_mut().as_bytes_mut()[..partial].copy_from_slice(&read);
        }
        self.buffer_start = block_start;
        self.buffer_len = partial;
        Ok(())
    }

    fn short_write(&self, written: usize, expected: usize) -> EngineError {
        let short =
            io::Error::new(io::ErrorKind::WriteZero, format!("short O_DIRECT write: {written} of {expected} bytes"));
        EngineError::io("write", &self.path, short)
    }

    /// Writes the whole buffer at `buffer_start`, keeping the buffer whether the
    /// write succeeds or fails.
    async fn write_buffer(&mut self) -> Result<()> {
        let write_len = self.capacity();
        let shared = Rc::new(self.buffer.take().expect("buffer is present between writes"));
        let result = self.file.write_rc_at(shared.clone(), self.buffer_start).await;
        let buffer = Rc::try_unwrap(shared).unwrap_or_else(|shared| {
            let mut fresh = self.file.alloc_dma_buffer(shared.len());
            fresh.as_bytes_mut().copy_from_slice(shared.as_bytes());
            fresh
        });
        self.buffer = Some(buffer);
        match result {
            Ok(written) if written == write_len => Ok(()),
            Ok(written) => Err(self.short_write(written, write_len)),
            Err(e) => Err(glommio_io("write", &self.path, e)),
        }
    }

    /// Writes the full buffer and moves it forward by its whole length.
    async fn write_full_buffer(&mut self) -> Result<()> {
        let capacity = self.capacity();
        self.write_buffer().await?;
        self.buffer_start += capacity as u64;
        self.buffer_len = 0;
        self.flushed_end = self.buffer_start;
        Ok(())
    }
}

impl StorageFile for DmaStorageFile {
    fn len(&self) -> u64 {
        self.buffer_start + self.buffer_len as u64
    }

    async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        let len_before = self.len();
        self.ensure_buffer().await?;
        while !bytes.is_empty() {
            let start = self.buffer_len;
            let take = (self.capacity() - start).min(bytes.len());
            self.buffer_mut().as_bytes_mut()[start..start + take].copy_from_slice(&bytes[..take]);
            self.buffer_len += take;
            bytes = &bytes[take..];
            if self.buffer_len == self.capacity() {
                if let Err(error) = self.write_full_buffer().await {
                    // Nothing of this append counts: forget it, keep what came before.
                    self.truncate_in_memory(len_before).await?;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.flushed_end == self.len() || self.buffer.is_none() {
            return Ok(());
        }
        let padded = (self.buffer_len as u64).next_multiple_of(self.alignment) as usize;
        let buffer_len = self.buffer_len;
        let whole_blocks = buffer_len - buffer_len % self.alignment as usize;
        let tail = buffer_len - whole_blocks;
        self.buffer_mut().as_bytes_mut()[buffer_len..padded].fill(0);
        // The buffer itself goes to the device, trimmed to the blocks to write (its
        // bytes are not copied again: under `never` every round of appends ends in a
        // flush); a fresh buffer carries the partial last block on, for the next flush
        // to rewrite with more bytes.
        let mut next = self.file.alloc_dma_buffer(self.capacity());
        let mut outgoing = self.buffer.take().expect("buffer is present between writes");
        next.as_bytes_mut()[..tail].copy_from_slice(&outgoing.as_bytes()[whole_blocks..buffer_len]);
        outgoing.trim_to_size(padded);
        let outgoing = Rc::new(outgoing);
        let result = self.file.write_rc_at(outgoing.clone(), self.buffer_start).await;
        if let Ok(written) = result {
            if written == padded {
                self.buffer = Some(next);
                self.flushed_end = self.len();
                self.buffer_start += whole_blocks as u64;
                self.buffer_len = tail;
                return Ok(());
            }
        }
        // Nothing counts as written: the bytes go back into a whole buffer, as they were.
        next.as_bytes_mut()[..buffer_len].copy_from_slice(&outgoing.as_bytes()[..buffer_len]);
        self.buffer = Some(next);
        Err(match result {
            Ok(written) => self.short_write(written, padded),
            Err(e) => glommio_io("write", &self.path, e),
        })
    }

    async fn sync(&mut self) -> Result<()> {
        self.flush().await?;
        self.file.fdatasync().await.map_err(|e| glommio_io("fdatasync", &self.path, e))
    }

    fn sync_detached(&self) -> impl std::future::Future<Output = Result<()>> + 'static + use<> {
        // The fdatasync is submitted at the first poll, after every flush this handle
        // has completed; it covers at least those bytes.
        let (file, path) = (self.file.clone(), self.path.clone());
        async move { file.fdatasync().await.map_err(|e| glommio_io("fdatasync", &path, e)) }
    }

    async fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        let end = (position + len as u64).min(self.len());
        if position >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - position) as usize);
        if position < self.buffer_start {
            let disk_end = end.min(self.buffer_start);
            let disk_len = (disk_end - position) as usize;
            let read = self.file.read_at(position, disk_len).await.map_err(|e| glommio_io("read", &self.path, e))?;
            if read.len() != disk_len {
                let short = io::Error::new(io::ErrorKind::UnexpectedEof, "short read below the write buffer");
                return Err(EngineError::io("read", &self.path, short));
            }
            out.extend_from_slice(&read);
        }
        if let Some(buffer) = self.buffer.as_ref().filter(|_| end > self.buffer_start) {
            let from = position.max(self.buffer_start) - self.buffer_start;
            let to = end - self.buffer_start;
            out.extend_from_slice(&buffer.as_bytes()[from as usize..to as usize]);
        }
        Ok(out)
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        assert!(len <= self.len(), "truncate can only shorten a file");
        self.file.truncate(len).await.map_err(|e| glommio_io("truncate", &self.path, e))?;
        self.truncate_in_memory(len).await?;
        self.flushed_end = self.flushed_end.min(len);
        Ok(())
    }

    async fn seal(&mut self) -> Result<()> {
        self.flush().await?;
        if self.buffer.take().is_some() {
            let len = self.len();
            self.buffer_start = len;
            self.buffer_len = 0;
            // Trim the zero padding of the last flush so the file ends at its last byte.
            let size = self.file.file_size().await.map_err(|e| glommio_io("stat", &self.path, e))?;
            if size > len {
                self.file.truncate(len).await.map_err(|e| glommio_io("truncate", &self.path, e))?;
                self.file.fdatasync().await.map_err(|e| glommio_io("fdatasync", &self.path, e))?;
            }
        }
        Ok(())
    }

    async fn close(mut self) -> Result<()> {
        self.flush().await?;
        let len = self.len();
        self.file.truncate(len).await.map_err(|e| glommio_io("truncate", &self.path, e))?;
        self.file.fdatasync().await.map_err(|e| glommio_io("fdatasync", &self.path, e))?;
        drop(self.buffer.take());
        match Rc::try_unwrap(self.file) {
            Ok(file) => file.close().await.map_err(|e| glommio_io("close", &self.path, e)),
            Err(_) => Ok(()),
        }
    }
}

impl DmaStorageFile {
    /// Moves the logical end back to `len` without touching the disk beyond what is
    /// needed to reload the partial block.
    async fn truncate_in_memory(&mut self, len: u64) -> Result<()> {
        if self.buffer.is_none() {
            self.buffer_start = len;
            self.flushed_end = self.flushed_end.min(len);
            Ok(())
        } else if len >= self.buffer_start {
            self.buffer_len = (len - self.buffer_start) as usize;
            self.flushed_end = self.flushed_end.min(len);
            Ok(())
        } else {
            self.flushed_end = self.flushed_end.min(len);
            self.load_tail_block(len).await
        }
    }
}
