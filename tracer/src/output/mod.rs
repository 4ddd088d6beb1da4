//! Output: the record schema, safe string escaping, and the JSON-lines sink.

pub mod escape;
pub mod record;

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// Where records go: a plain stream, or a gzip file that must be finished.
enum Output {
    Plain(Box<dyn Write + Send>),
    Gzip(flate2::write::GzEncoder<std::fs::File>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
        }
    }
}

/// One JSON object per line, buffered; flushed after every batch the
/// pipeline reads and at shutdown.
pub struct JsonLines {
    out: BufWriter<Output>,
}

impl JsonLines {
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// Appends to `path`, created with mode 0600: records hold command lines.
    /// A name ending in `.gz` is written gzip-compressed (a new gzip member
    /// when appending, which readers concatenate).
    pub fn file(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening output file {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "gz") {
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            return Ok(Self { out: BufWriter::with_capacity(64 * 1024, Output::Gzip(gz)) });
        }
        Ok(Self::new(Box::new(file)))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out: BufWriter::with_capacity(64 * 1024, Output::Plain(out)) }
    }

    /// Flushes, and completes a gzip stream (its trailer), at shutdown.
    pub fn finish(self) -> Result<()> {
        let out = self.out.into_inner().map_err(|e| e.into_error()).context("flushing output")?;
        if let Output::Gzip(gz) = out {
            gz.finish().context("finishing the gzip stream")?.sync_all().context("syncing the capture")?;
        }
        Ok(())
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, record).context("writing a record")?;
        self.out.write_all(b"\n").context("writing a record")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flushing output")
    }
}
