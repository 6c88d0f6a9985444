//! Where the harness' own log lines (tracing, librdkafka's lines through it) go:
//! stderr, until `corelog run` sends them to `<out>/logs/corelog.log`, so that
//! they never interleave with its progress lines. The file gets them without
//! colour codes; on stderr they are coloured only when stderr is a terminal.

use std::fs::File;
use std::io::{self, IsTerminal as _, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

/// The file the log lines go to instead of stderr, once set.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Whether log lines on stderr may carry colour codes.
pub fn colour() -> bool {
    io::stderr().is_terminal()
}

/// Sends every later log line to `path` (created, with its directory; appended to).
pub fn to_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    *FILE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    Ok(())
}

/// Sends later log lines back to stderr (the file is closed).
pub fn to_stderr() {
    *FILE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
}

/// The [`MakeWriter`] of the harness' tracing subscriber.
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

/// One log line's writer: to the file if one is set, else to stderr.
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut file = FILE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match file.as_mut() {
            Some(file) => {
                file.write_all(&strip_colour(bytes))?;
                Ok(bytes.len())
            }
            None => io::stderr().write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match FILE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut() {
            Some(file) => file.flush(),
            None => io::stderr().flush(),
        }
    }
}

/// `bytes` without ANSI colour sequences (ESC `[` parameters, ending in a letter).
/// A sequence split across two writes is not recognised; tracing writes each line
/// whole.
pub fn strip_colour(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == 0x1b && bytes.get(index + 1) == Some(&b'[') {
            let end = bytes[index + 2..].iter().position(u8::is_ascii_alphabetic);
            if let Some(end) = end {
                index += 2 + end + 1;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_sequences_are_stripped_and_everything_else_kept() {
        let line = b"\x1b[2m2026-12-06T21:00:00Z\x1b[0m \x1b[32m INFO\x1b[0m corelog: [ok] 100%\n";
        assert_eq!(strip_colour(line), b"2026-12-06T21:00:00Z  INFO corelog: [ok] 100%\n".to_vec());
        assert_eq!(strip_colour(b"no escape [1m here\x1b"), b"no escape [1m here\x1b".to_vec());
    }
}
