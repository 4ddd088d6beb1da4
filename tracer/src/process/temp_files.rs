//! Files written under a temporary name and renamed into place, seen with
//! no syscall hook: safetensors' `save_file` (and so Hugging Face training
//! checkpoints) writes `.tmpXXXXXX` and renames it to `model.safetensors`.
//! The kernel reports the temporary file when it is first written, with
//! its inode, device and ancestor directories (tracer-ebpf/src/model_files.rs);
//! here the directory is found through the mounts of that device, and at
//! the next activity report its entries are searched for the inode: the
//! name it has then is the one it was renamed to. A file still under its
//! temporary name may say what it is by its content already (a Chia
//! plotter writes its plot's header first, into `NAME.plot.2.tmp`).

use std::{
    collections::BTreeMap,
    os::unix::{ffi::OsStrExt as _, fs::DirEntryExt as _},
    path::{Path, PathBuf},
};

use tracer_common::{TEMP_DIR_NAME, TEMP_DIRS, TempFile};

/// What the kernel said of a temporarily named file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempWrite {
    pub ino: u64,
    /// The kernel's dev_t (major << 20 | minor).
    pub dev: u32,
    pub name: Vec<u8>,
    /// Ancestor directory names, the parent first, as far as the kernel went.
    pub dirs: Vec<Vec<u8>>,
    /// The ancestors reach the file system's root.
    pub complete: bool,
}

impl TempWrite {
    /// From a TEMP_WRITTEN event's name and `old_path` bytes; None when they
    /// are too short to hold a TempFile.
    pub fn decode(name: &[u8], place: &[u8]) -> Option<Self> {
        if place.len() < std::mem::size_of::<TempFile>() {
            return None;
        }
        let ino = u64::from_ne_bytes(place[0..8].try_into().ok()?);
        let dev = u32::from_ne_bytes(place[8..12].try_into().ok()?);
        let depth = usize::from(u16::from_ne_bytes(place[12..14].try_into().ok()?));
        let complete = u16::from_ne_bytes(place[14..16].try_into().ok()?) == 1;
        let dirs = (0..depth.min(TEMP_DIRS))
            .map(|i| {
                let slot = &place[16 + i * TEMP_DIR_NAME..16 + (i + 1) * TEMP_DIR_NAME];
                slot[..slot.iter().position(|&b| b == 0).unwrap_or(slot.len())].to_vec()
            })
            .collect();
        Some(Self { ino, dev, name: name.to_vec(), dirs, complete })
    }

    /// The directory's path inside its file system ("/" for its root), or
    /// None when the kernel did not reach the root or a name filled its slot.
    pub fn fs_dir(&self) -> Option<PathBuf> {
        if !self.complete || self.dirs.iter().any(|d| d.is_empty() || d.len() >= TEMP_DIR_NAME - 1) {
            return None;
        }
        let mut path = PathBuf::from("/");
        for d in self.dirs.iter().rev() {
            path.push(std::ffi::OsStr::from_bytes(d));
        }
        Some(path)
    }
}

/// Where a file system's directory `fs_dir` is reachable, by the mounts of
/// device `dev` in `mountinfo` (/proc/self/mountinfo's text).
pub fn candidates(mountinfo: &str, dev: u32, fs_dir: &Path) -> Vec<PathBuf> {
    let (major, minor) = (dev >> 20, dev & 0xfffff);
    let want = format!("{major}:{minor}");
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let mut f = line.split(' ');
        let (Some(_), Some(_), Some(devno), Some(root), Some(point)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if devno != want {
            continue;
        }
        let (root, point) = (unescape(root), unescape(point));
        if let Ok(rest) = fs_dir.strip_prefix(&root) {
            let p = point.join(rest);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// The name the inode `ino` has now in one of `dirs`, with that directory.
pub fn find(dirs: &[PathBuf], ino: u64) -> Option<(PathBuf, Vec<u8>)> {
    dirs.iter().find_map(|d| {
        std::fs::read_dir(d)
            .ok()?
            .flatten()
            .find(|e| e.ino() == ino)
            .map(|e| (d.clone(), e.file_name().as_bytes().to_vec()))
    })
}

/// Temporary files waiting for the name they are renamed to.
pub struct Pending<T> {
    waiting: Vec<Waiting<T>>,
    /// written, renamed_to_model, renamed_other, data_format_written,
    /// unresolved, dropped.
    pub counts: BTreeMap<&'static str, u64>,
}

struct Waiting<T> {
    what: T,
    write: TempWrite,
    dirs: Vec<PathBuf>,
    looks: u32,
    /// When the first look is due (monotonic ns), before any activity
    /// report: a file written and renamed, or given its header, within a
    /// second is seen even if its writer is gone by the next report.
    first_look_ns: Option<u64>,
}

/// Temporary files followed at once; more are counted as dropped.
const MAX_WAITING: usize = 1024;
/// Activity reports a file is looked for before it is given up.
const MAX_LOOKS: u32 = 3;
/// How long after the kernel's report the first look comes.
pub const FIRST_LOOK_NS: u64 = 300_000_000;

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self { waiting: Vec::new(), counts: BTreeMap::new() }
    }
}

/// What one look at a waiting file found.
enum Look {
    Found(PathBuf, PathBuf),
    Waits,
    Done,
}

impl<T> Pending<T> {
    pub fn add(&mut self, what: T, write: TempWrite, now_ns: u64, mountinfo: impl FnOnce() -> String) {
        *self.counts.entry("written").or_default() += 1;
        let dirs = match write.fs_dir() {
            Some(d) => candidates(&mountinfo(), write.dev, &d),
            None => Vec::new(),
        };
        if dirs.is_empty() {
            *self.counts.entry("unresolved").or_default() += 1;
        } else if self.waiting.len() >= MAX_WAITING {
            *self.counts.entry("dropped").or_default() += 1;
        } else {
            let first_look_ns = Some(now_ns + FIRST_LOOK_NS);
            self.waiting.push(Waiting { what, write, dirs, looks: 0, first_look_ns });
        }
    }

    /// Looks for each file; returns those `wanted` accepts, given the
    /// file's path now and whether it was renamed: (what was given with
    /// it, the temporary path, the path now). A renamed file is decided
    /// at once; one still under its temporary name is asked about at each
    /// look, up to MAX_LOOKS.
    pub fn resolve(&mut self, wanted: impl FnMut(&Path, bool) -> bool) -> Vec<(T, PathBuf, PathBuf)> {
        self.looks(wanted, |w| {
            w.looks += 1;
            w.first_look_ns = None;
            true
        })
    }

    /// The first looks that are due by `now_ns` (not counted in MAX_LOOKS).
    pub fn resolve_due(
        &mut self,
        now_ns: u64,
        wanted: impl FnMut(&Path, bool) -> bool,
    ) -> Vec<(T, PathBuf, PathBuf)> {
        if !self.waiting.iter().any(|w| w.first_look_ns.is_some_and(|t| t <= now_ns)) {
            return Vec::new();
        }
        self.looks(wanted, |w| w.first_look_ns.take_if(|t| *t <= now_ns).is_some())
    }

    /// One look at each file `due` picks.
    fn looks(
        &mut self,
        mut wanted: impl FnMut(&Path, bool) -> bool,
        mut due: impl FnMut(&mut Waiting<T>) -> bool,
    ) -> Vec<(T, PathBuf, PathBuf)> {
        let mut found = Vec::new();
        let mut keep = Vec::new();
        for mut w in std::mem::take(&mut self.waiting) {
            if !due(&mut w) {
                keep.push(w);
                continue;
            }
            match self.look(&w, &mut wanted) {
                Look::Found(temp, now) => found.push((w.what, temp, now)),
                Look::Waits => keep.push(w),
                Look::Done => {}
            }
        }
        self.waiting = keep;
        found
    }

    fn look(&mut self, w: &Waiting<T>, wanted: &mut impl FnMut(&Path, bool) -> bool) -> Look {
        let temp_in = |dir: &Path| dir.join(std::ffi::OsStr::from_bytes(&w.write.name));
        match find(&w.dirs, w.write.ino) {
            Some((dir, name)) if name != w.write.name => {
                let now = dir.join(std::ffi::OsStr::from_bytes(&name));
                if wanted(&now, true) {
                    *self.counts.entry("renamed_to_model").or_default() += 1;
                    Look::Found(temp_in(&dir), now)
                } else {
                    *self.counts.entry("renamed_other").or_default() += 1;
                    Look::Done
                }
            }
            Some((dir, _)) if wanted(&temp_in(&dir), false) => {
                *self.counts.entry("data_format_written").or_default() += 1;
                Look::Found(temp_in(&dir), temp_in(&dir))
            }
            // Not renamed yet, or gone from every candidate directory.
            _ if w.looks < MAX_LOOKS => Look::Waits,
            _ => {
                *self.counts.entry("unresolved").or_default() += 1;
                Look::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(ino: u64, dev: u32, dirs: &[&str], complete: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&ino.to_ne_bytes());
        b.extend_from_slice(&dev.to_ne_bytes());
        b.extend_from_slice(&(dirs.len() as u16).to_ne_bytes());
        b.extend_from_slice(&u16::from(complete).to_ne_bytes());
        for i in 0..TEMP_DIRS {
            let mut slot = [0u8; TEMP_DIR_NAME];
            if let Some(d) = dirs.get(i) {
                slot[..d.len()].copy_from_slice(d.as_bytes());
            }
            b.extend_from_slice(&slot);
        }
        b
    }

    #[test]
    fn the_kernels_ancestors_make_a_path_through_the_mounts() {
        let w = TempWrite::decode(b".tmpCIPdap", &place(7, 254 << 20, &["ckpt", "run1"], true)).unwrap();
        assert_eq!(w.fs_dir().unwrap(), PathBuf::from("/run1/ckpt"));
        let mountinfo = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
                         30 22 254:0 /run1 /mnt/runs\\040a rw - ext4 /dev/vda rw\n\
                         40 22 0:25 / /tmp rw - tmpfs tmpfs rw\n";
        assert_eq!(
            candidates(mountinfo, w.dev, &w.fs_dir().unwrap()),
            [PathBuf::from("/run1/ckpt"), PathBuf::from("/mnt/runs a/ckpt")]
        );
        // Deeper than the kernel went, or a name cut at its slot: no path.
        let deep = ["a", "b", "c", "d", "e", "f"];
        assert_eq!(TempWrite::decode(b"x.tmp", &place(7, 1, &deep, false)).unwrap().fs_dir(), None);
        let long = "n".repeat(TEMP_DIR_NAME - 1);
        assert_eq!(TempWrite::decode(b"x.tmp", &place(7, 1, &[&long], true)).unwrap().fs_dir(), None);
        // A file in the file system's root.
        assert_eq!(TempWrite::decode(b"x.tmp", &place(7, 1, &[], true)).unwrap().fs_dir(), Some("/".into()));
        assert_eq!(TempWrite::decode(b"x.tmp", &[0u8; 8]), None);
    }

    #[test]
    fn a_file_renamed_into_place_is_found_by_its_inode() {
        let dir = std::env::temp_dir().join(format!("temp-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let temp = dir.join(".tmpAbC123");
        std::fs::write(&temp, b"weights").unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&temp).unwrap());
        let mut p: Pending<u32> = Pending::default();
        let w = TempWrite { ino, dev: 0, name: b".tmpAbC123".to_vec(), dirs: vec![], complete: true };
        p.waiting.push(Waiting { what: 9, write: w, dirs: vec![dir.clone()], looks: 0, first_look_ns: None });
        let model = |n: &Path, renamed: bool| renamed && n.as_os_str().as_bytes().ends_with(b".safetensors");
        assert!(p.resolve(model).is_empty(), "not renamed yet: waits");
        std::fs::rename(&temp, dir.join("model.safetensors")).unwrap();
        let found = p.resolve(model);
        assert_eq!(found, [(9, temp.clone(), dir.join("model.safetensors"))]);
        assert_eq!(p.counts["renamed_to_model"], 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file still under its temporary name is taken when its content says
    /// what it is (here: when the caller's look at it says so), and given
    /// up after MAX_LOOKS looks when it never does.
    #[test]
    fn a_file_still_written_is_taken_by_what_it_holds() {
        let dir = std::env::temp_dir().join(format!("temp-files-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (plot, other) = (dir.join("archive.plot.2.tmp"), dir.join("bucket.tmp"));
        std::fs::write(&plot, b"").unwrap();
        std::fs::write(&other, b"sorted entries").unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let mut p: Pending<u32> = Pending::default();
        for (what, path) in [(1, &plot), (2, &other)] {
            let name = path.file_name().unwrap().as_bytes().to_vec();
            let w = TempWrite { ino: ino(path), dev: 0, name, dirs: vec![], complete: true };
            p.waiting.push(Waiting { what, write: w, dirs: vec![dir.clone()], looks: 0, first_look_ns: Some(10) });
        }
        let header = |n: &Path, _| std::fs::read(n).is_ok_and(|b| b.starts_with(b"Proof of Space Plot"));
        assert!(p.resolve_due(5, header).is_empty(), "the first look is not due");
        assert!(p.resolve_due(10, header).is_empty(), "nothing written yet: waits");
        assert!(p.resolve_due(20, header).is_empty(), "the first look was taken");
        assert!(p.resolve(header).is_empty(), "still nothing");
        std::fs::write(&plot, b"Proof of Space Plot\x01\x02").unwrap();
        assert_eq!(p.resolve(header), [(1, plot.clone(), plot.clone())]);
        assert_eq!(p.counts["data_format_written"], 1);
        assert!(p.resolve(header).is_empty());
        assert_eq!((p.waiting.len(), p.counts["unresolved"]), (0, 1), "the other file is given up");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
