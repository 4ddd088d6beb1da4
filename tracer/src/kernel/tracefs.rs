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
///
/// Several tracers may start at once on a host where tracefs is not mounted
/// yet: each checks, mounts with mount(2) (no `mount` binary needed), and on
/// any failure checks again, since another one may have mounted it between
/// our check and our mount (EBUSY), which is success for us too.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(root) = mounted() {
        return Ok(root);
    }
    let target = CANDIDATES[0];
    let error = mount_tracefs(target).err();
    if let Some(root) = mounted() {
        return Ok(root);
    }
    Err(anyhow!(
        "tracefs is not mounted and mounting it at {target} failed: {}",
        error.map_or_else(|| "it mounted but has no events/ directory".to_string(), |e| e.to_string())
    ))
}

/// The first candidate that is a tracefs with its event directories.
pub fn mounted() -> Option<PathBuf> {
    CANDIDATES.iter().map(Path::new).find(|dir| dir.join("events").is_dir()).map(Path::to_path_buf)
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("no NUL in a constant");
    let (source, target, fstype) = (cstr("nodev"), cstr(target), cstr("tracefs"));
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
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
