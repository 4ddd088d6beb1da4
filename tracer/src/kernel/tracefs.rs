//! tracefs: making sure it is mounted, and reading field offsets from the
//! `format` files of the tracepoints the programs read.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at /sys/kernel/tracing if needed.
pub fn ensure_mounted() -> Result<PathBuf> {
    for dir in CANDIDATES {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = CANDIDATES[0];
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", target])
        .status()
        .context("running mount -t tracefs")?;
    if status.success() && Path::new(target).join("events").is_dir() {
        Ok(PathBuf::from(target))
    } else {
        Err(anyhow!("tracefs is not mounted and `mount -t tracefs nodev {target}` failed ({status})"))
    }
}

/// Field name -> byte offset, from `events/<category>/<name>/format`.
pub fn field_offsets(root: &Path, category: &str, name: &str) -> Result<HashMap<String, u32>> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_format(&text))
}

/// Parses lines like `field:__u16 dport; offset:26; size:2; signed:0;` (tab-separated).
pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(decl) = line.strip_prefix("field:") else { continue };
        let mut parts = decl.split(';').map(str::trim);
        let Some(decl) = parts.next() else { continue };
        let Some(offset) = parts.find_map(|p| p.strip_prefix("offset:")) else { continue };
        let Ok(offset) = offset.parse::<u32>() else { continue };
        // The name is the last word of the declaration, less any array suffix.
        let Some(name) = decl.split_whitespace().last() else { continue };
        let name = name.split('[').next().unwrap_or(name);
        out.insert(name.to_string(), offset);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_arrays_and_data_loc() {
        let text = "name: x\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n\nprint fmt: \"x\"";
        let f = parse_format(text);
        assert_eq!(f["common_type"], 0);
        assert_eq!(f["filename"], 8);
        assert_eq!(f["daddr_v6"], 56);
        assert_eq!(f.len(), 3);
    }
}
