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

/// One JSON object per line, buffered; flushed after every batch the
/// pipeline reads and at shutdown.
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
    pub records_written: u64,
}

impl JsonLines {
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// Appends to `path`, created with mode 0600: records hold command lines.
    pub fn file(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening output file {}", path.display()))?;
        Ok(Self::new(Box::new(file)))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out: BufWriter::with_capacity(64 * 1024, out), records_written: 0 }
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, record).context("writing a record")?;
        self.out.write_all(b"\n").context("writing a record")?;
        self.records_written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flushing output")
    }
}
