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

/// A model file the process holds: the path and whether it may write it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Held {
    pub path: Vec<u8>,
    pub write: bool,
}

/// The model files among the process's open descriptors, and whether the
/// look stopped at `MAX_FDS`.
pub fn open_model_files(proc_root: &Path, pid: u32) -> (Vec<Held>, bool) {
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
        if !is_model_file(&path) {
            continue;
        }
        let info = std::fs::read_to_string(dir.join("fdinfo").join(fd.file_name())).unwrap_or_default();
        out.push(Held { path, write: access_writes(&info) });
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
        let (held, cut) = open_model_files(Path::new("/proc"), std::process::id());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!cut);
        let mine: Vec<_> =
            held.into_iter().filter(|h| h.path.starts_with(dir.as_os_str().as_encoded_bytes())).collect();
        let bytes = |p: &std::path::Path| p.as_os_str().as_encoded_bytes().to_vec();
        assert_eq!(mine, vec![Held { path: bytes(&w), write: true }, Held { path: bytes(&r), write: false }]);
    }
}
