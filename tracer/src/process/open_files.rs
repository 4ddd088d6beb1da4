//! Model files a busy process holds, found with no syscall hook: open
//! (`/proc/PID/fd`, the access mode from `fdinfo`) or mapped
//! (`/proc/PID/maps`: safetensors and GGUF weights are usually mmapped).
//! Read for the processes that were busy in an interval, with their maps.
//! An open too short to span a look is missed: exact open watching is the
//! syscall hooks' (`--syscalls`).

use std::path::Path;

/// The weight and checkpoint formats the open hooks watch (see
/// tracer-ebpf/src/files_watch.rs).
pub const MODEL_SUFFIXES: &[&str] = &[".safetensors", ".gguf", ".pt", ".onnx", ".ckpt"];

/// Descriptors looked at per process and look: a process holding more
/// (a server with every connection open) is looked at in part, counted.
pub const MAX_FDS: usize = 4096;

pub fn is_model_file(path: &[u8]) -> bool {
    MODEL_SUFFIXES.iter().any(|s| path.ends_with(s.as_bytes()))
}

/// A model file the process holds: the path, whether it may write it, and
/// its format when its content rather than its name said so.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Held {
    pub path: Vec<u8>,
    pub write: bool,
    pub format: Option<&'static str>,
}

/// Files smaller than this are not looked into: weights are megabytes.
const MIN_SNIFFED: u64 = 1 << 20;
/// Bytes read from the start of a file to tell its format.
const SNIFF_BYTES: usize = 64;

/// A weights file's format from its first bytes, for names that do not say
/// (`pytorch_model.bin`, `model.pth`, a renamed file):
/// - safetensors: a little-endian u64 header length, then the JSON header;
/// - GGUF: the magic `GGUF` (ggml's gguf.md);
/// - PyTorch's zip format (torch.save since 1.6): a zip whose first entry
///   is `<archive>/data.pkl` (the name at offset 30 of the local header);
/// - PyTorch's legacy format: a pickle (protocol 2) whose first object is
///   torch's magic number 0x1950a86a20f9469cfc6c (torch/serialization.py).
pub fn sniff_format(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"GGUF") {
        return Some("gguf");
    }
    if b.starts_with(b"PK\x03\x04") && b.len() >= 30 {
        let name_len = usize::from(u16::from_le_bytes([b[26], b[27]]));
        let name = b.get(30..30 + name_len.min(b.len().saturating_sub(30)))?;
        return name.ends_with(b"data.pkl").then_some("pytorch");
    }
    const TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if b.starts_with(TORCH_MAGIC) {
        return Some("pytorch");
    }
    let header = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    ((2..=100 << 20).contains(&header) && b[8..].starts_with(b"{\"")).then_some("safetensors")
}

/// The suffix a sniffed format stands for in the rules (`file_suffix`).
pub fn format_suffix(format: &str) -> &'static str {
    match format {
        "gguf" => ".gguf",
        "safetensors" => ".safetensors",
        _ => ".pt",
    }
}

/// Formats already told, by file identity, so a large file is read once,
/// not at every look.
#[derive(Default)]
pub struct Sniffed {
    seen: std::collections::HashMap<(u64, u64, u64), Option<&'static str>>,
}

impl Sniffed {
    const MAX: usize = 16_384;

    /// The format of the file at `path` (an open descriptor's
    /// `/proc/PID/fd/N`, or a mapped file's path), if it is model weights.
    pub fn format_of(&mut self, fd_path: &Path) -> Option<&'static str> {
        use std::{io::Read as _, os::unix::fs::MetadataExt as _};
        let meta = std::fs::metadata(fd_path).ok().filter(|m| m.is_file() && m.len() >= MIN_SNIFFED)?;
        let key = (meta.dev(), meta.ino(), meta.len());
        if let Some(known) = self.seen.get(&key) {
            return *known;
        }
        let mut head = [0u8; SNIFF_BYTES];
        let n = std::fs::File::open(fd_path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
        let format = sniff_format(&head[..n]);
        if self.seen.len() >= Self::MAX {
            // Forgetting only costs a re-read.
            self.seen.clear();
        }
        self.seen.insert(key, format);
        format
    }
}

/// The model files among the process's open descriptors, and whether the
/// look stopped at `MAX_FDS`.
pub fn open_model_files(proc_root: &Path, pid: u32, sniffed: &mut Sniffed) -> (Vec<Held>, bool) {
    let dir = proc_root.join(pid.to_string());
    let Ok(fds) = std::fs::read_dir(dir.join("fd")) else { return (Vec::new(), false) };
    let mut out = Vec::new();
    let mut cut = false;
    for (i, fd) in fds.flatten().enumerate() {
        if i >= MAX_FDS {
            cut = true;
            break;
        }
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let path = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
        // Sockets, pipes and anonymous inodes are not files to look into.
        let format = match is_model_file(&path) {
            true => None,
            false if path.starts_with(b"/") => match sniffed.format_of(&fd.path()) {
                Some(f) => Some(f),
                None => continue,
            },
            false => continue,
        };
        let info = std::fs::read_to_string(dir.join("fdinfo").join(fd.file_name())).unwrap_or_default();
        out.push(Held { path, write: access_writes(&info), format });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.write.cmp(&b.write)));
    out.dedup();
    (out, cut)
}

/// `flags:` in fdinfo is the open flags in octal; O_WRONLY 1, O_RDWR 2.
fn access_writes(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|flags| flags & 3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_mode_comes_from_fdinfo() {
        assert!(access_writes("pos:\t0\nflags:\t0100001\nmnt_id:\t25\n"));
        assert!(access_writes("flags:\t02\n"));
        assert!(!access_writes("pos:\t0\nflags:\t0100000\n"));
        assert!(!access_writes("garbage"));
    }

    #[test]
    fn a_model_file_this_process_holds_is_found() {
        let dir = std::env::temp_dir().join(format!("tracer-open-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, r, other) = (dir.join("ckpt.pt"), dir.join("model.gguf"), dir.join("notes.txt"));
        std::fs::write(&r, b"GGUF").unwrap();
        let _writing = std::fs::File::create(&w).unwrap();
        let _reading = std::fs::File::open(&r).unwrap();
        let _other = std::fs::File::create(&other).unwrap();
        let (held, cut) = open_model_files(Path::new("/proc"), std::process::id(), &mut Sniffed::default());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!cut);
        let mine: Vec<_> =
            held.into_iter().filter(|h| h.path.starts_with(dir.as_os_str().as_encoded_bytes())).collect();
        let bytes = |p: &std::path::Path| p.as_os_str().as_encoded_bytes().to_vec();
        assert_eq!(
            mine,
            vec![
                Held { path: bytes(&w), write: true, format: None },
                Held { path: bytes(&r), write: false, format: None }
            ]
        );
    }

    #[test]
    fn weights_are_told_by_their_content_whatever_their_name() {
        let mut safetensors = 80u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{\"w\":{\"dtype\":\"F32\"");
        assert_eq!(sniff_format(&safetensors), Some("safetensors"));
        assert_eq!(sniff_format(b"GGUF\x03\x00\x00\x00"), Some("gguf"));
        // torch.save's zip: the first entry is archive/data.pkl.
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&[0; 22]);
        zip.extend_from_slice(&16u16.to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip.extend_from_slice(b"archive/data.pkl");
        assert_eq!(sniff_format(&zip), Some("pytorch"));
        // Any other zip (a .docx, a .jar) is not.
        let mut other = zip[..30].to_vec();
        other.extend_from_slice(b"[Content_Types].xml");
        other[26] = 19;
        assert_eq!(sniff_format(&other), None);
        assert_eq!(
            sniff_format(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"),
            Some("pytorch")
        );
        // Hostile or ordinary bytes: nothing, never a panic.
        for b in [&b""[..], b"PK\x03\x04", b"\x00\x00\x00\x00\x00\x00\x00\x00{\"", b"SQLite format 3\0"] {
            assert_eq!(sniff_format(b), None);
        }
    }
}
