//! Offline classification of a capture: the classifier reads the records
//! exactly as live, so the verdicts are the same. A damaged capture is read
//! up to the damage; the error names the line.

use std::{
    fs::File,
    io::{BufRead, BufReader, Cursor, ErrorKind, Read, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    classify::{Classifier, rules::Rules},
    cli::ReplayArgs,
};

/// Longest capture line read. Real records are a few KiB; anything longer
/// is damage (or a gzip bomb), and reading it whole would exhaust memory.
pub const MAX_LINE: usize = 16 << 20;

/// Opens a capture (`-` is stdin), gunzipping it when it starts with the
/// gzip magic.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return from_reader(std::io::stdin()).context("reading a capture from stdin");
    }
    let file = File::open(path).with_context(|| format!("opening capture {}", path.display()))?;
    from_reader(file).with_context(|| format!("reading capture {}", path.display()))
}

/// Reads a capture from `input`, gunzipping it when it starts with the gzip
/// magic. The magic is read from `input` itself and put back in front, so
/// a pipe or FIFO (`<(zcat x.gz)`, `/dev/stdin`), which cannot be opened
/// twice, loses nothing.
pub fn from_reader(mut input: impl Read + 'static) -> Result<Box<dyn BufRead>> {
    let mut magic = [0u8; 2];
    let mut n = 0;
    // A pipe may hand over fewer bytes than asked for.
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let input = Cursor::new(magic).take(n as u64).chain(input);
    if magic[..n] == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(input))))
    } else {
        Ok(Box::new(BufReader::new(input)))
    }
}

/// Reads line `n` (at most [`MAX_LINE`] bytes without its newline) into
/// `line`; `records` were read before it. Returns false at the end.
fn read_line(input: &mut dyn BufRead, line: &mut Vec<u8>, n: usize, records: u64) -> Result<bool> {
    line.clear();
    let read = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)
        .with_context(|| format!("capture line {n}: unreadable (read {records} records before it)"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if read > MAX_LINE {
        bail!(
            "capture line {n}: longer than {} MiB, not a record (read {records} records before it)",
            MAX_LINE >> 20
        );
    }
    Ok(read > 0)
}

/// Reads every record of `input`, handing each to `each` with its line
/// number. Returns how many were read, or the damage and how far it got.
pub fn for_each_record(
    mut input: Box<dyn BufRead>,
    mut each: impl FnMut(usize, serde_json::Value) -> Result<()>,
) -> Result<u64> {
    let mut records = 0u64;
    let mut line = Vec::new();
    for n in 1.. {
        if !read_line(&mut *input, &mut line, n, records)? {
            break;
        }
        let line = std::str::from_utf8(&line).with_context(|| {
            format!("capture line {n}: not UTF-8, so not a record (read {records} records before it)")
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!("capture line {n}: not a JSON record (read {records} records before it)")
        })?;
        if !value.is_object() || value.get("kind").is_none() {
            bail!("capture line {n}: not a tracer record (no kind)");
        }
        records += 1;
        each(n, value)?;
    }
    Ok(records)
}

/// Classifies every record of `input`, writing classification records to
/// `out` (and host.summary records, if asked for). Returns (records read,
/// classification records), or the damage and how far it got.
pub fn classify(
    input: Box<dyn BufRead>,
    classifier: &mut Classifier,
    out: &mut dyn std::io::Write,
) -> Result<(u64, u64)> {
    let mut verdicts = 0u64;
    let records = for_each_record(input, |_, value| {
        for written in classifier.observe(&value) {
            serde_json::to_writer(&mut *out, &written)?;
            out.write_all(b"\n")?;
            verdicts += u64::from(written["kind"] == "classification");
        }
        Ok(())
    })?;
    Ok((records, verdicts))
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    let rules = Rules::load(args.rules.as_deref())?;
    let mut classifier = Classifier::new(rules).with_summaries(args.summary_interval);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = classify(open(&args.capture)?, &mut classifier, &mut out);
    out.flush()?;
    let (records, verdicts) = result?;
    eprintln!("replay: {records} records, {verdicts} classification records");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = include_str!("../../tests/fixtures/captures/mining-xmrig-login.capture.jsonl");

    fn replay(input: Box<dyn BufRead>) -> Result<(u64, u64)> {
        let mut classifier = Classifier::new(Rules::load(None).unwrap());
        classify(input, &mut classifier, &mut std::io::sink())
    }

    /// A pipe's read end as a path (`<(cat capture)` gives the shell's
    /// equivalent), with a thread writing `bytes` into it.
    fn pipe_with(bytes: Vec<u8>) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        let mut fds = [0i32; 2];
        // SAFETY: fds has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is ours alone from here on.
        let mut w = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let writer = std::thread::spawn(move || w.write_all(&bytes).unwrap());
        (Path::new("/proc/self/fd").join(fds[0].to_string()), writer)
    }

    #[test]
    fn a_capture_read_from_a_pipe_loses_nothing() {
        let records = CAPTURE.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        let plain = CAPTURE.as_bytes().to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(CAPTURE.as_bytes()).unwrap();
        for (what, bytes) in [("plain", plain), ("gzip", gz.finish().unwrap())] {
            let (path, writer) = pipe_with(bytes);
            let (read, verdicts) = replay(open(&path).unwrap()).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!((read, verdicts > 0), (records, true), "{what}");
            writer.join().unwrap();
        }
    }

    #[test]
    fn an_overlong_line_is_an_error_naming_it() {
        let first = CAPTURE.lines().next().unwrap();
        let mut text = format!("{first}\n").into_bytes();
        text.resize(text.len() + MAX_LINE + 1024, b'x');
        let e = format!("{:#}", replay(Box::new(std::io::Cursor::new(text))).unwrap_err());
        assert!(e.contains("capture line 2") && e.contains("longer than 16 MiB"), "{e}");
    }

    #[test]
    fn a_line_at_the_limit_is_read() {
        // A record padded with spaces to exactly the limit, newline after it.
        let first = CAPTURE.lines().next().unwrap();
        let mut line = first.as_bytes().to_vec();
        line.resize(MAX_LINE, b' ');
        line.push(b'\n');
        assert_eq!(replay(Box::new(std::io::Cursor::new(line))).unwrap().0, 1);
    }
}
