//! Offline classification of a capture: the classifier reads the records
//! exactly as live, so the verdicts are the same. A damaged capture is read
//! up to the damage; the error names the line.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write as _},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    classify::{Classifier, rules::Rules},
    cli::ReplayArgs,
};

/// Opens a capture, gunzipping it when it starts with the gzip magic.
pub fn open(path: &std::path::Path) -> Result<Box<dyn BufRead>> {
    let mut file = File::open(path).with_context(|| format!("opening capture {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Classifies every record of `input`, writing classification records to
/// `out`. Returns (records read, verdicts), or the damage and how far it got.
pub fn classify(
    input: Box<dyn BufRead>,
    classifier: &mut Classifier,
    out: &mut dyn std::io::Write,
) -> Result<(u64, u64)> {
    let (mut records, mut verdicts) = (0u64, 0u64);
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line =
            line.with_context(|| format!("capture line {n}: unreadable (read {records} records before it)"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line).with_context(|| {
            format!("capture line {n}: not a JSON record (read {records} records before it)")
        })?;
        if !value.is_object() || value.get("kind").is_none() {
            bail!("capture line {n}: not a tracer record (no kind)");
        }
        records += 1;
        for verdict in classifier.observe(&value) {
            serde_json::to_writer(&mut *out, &verdict)?;
            out.write_all(b"\n")?;
            verdicts += 1;
        }
    }
    Ok((records, verdicts))
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    let rules = Rules::load(args.rules.as_deref())?;
    let mut classifier = Classifier::new(rules);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = classify(open(&args.capture)?, &mut classifier, &mut out);
    out.flush()?;
    let (records, verdicts) = result?;
    eprintln!("replay: {records} records, {verdicts} classification records");
    Ok(())
}
