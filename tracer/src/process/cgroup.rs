//! cgroup ids to paths and container ids.
//!
//! The kernel reports the cgroup v2 id, which is the inode number of the
//! cgroup's directory in the cgroup2 mount; walking that mount maps ids back
//! to paths. Container ids are the 64-hex-digit names container runtimes give
//! their cgroups (docker-<id>.scope, cri-containerd-<id>.scope, libpod-<id>,
//! /docker/<id>, …), found in the v2 path or in /proc/PID/cgroup (v1 hosts).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where cgroup2 is mounted, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 id of a cgroup directory (its inode number).
pub fn id_of_path(path: &Path) -> std::io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// The depth of a cgroup directory below the cgroup2 root (the root is 0),
/// or None when it is not a directory of that mount (a v1 path, a typo).
pub fn level_of_path(mount: &Path, path: &Path) -> Option<u32> {
    let (mount, path) = (fs::canonicalize(mount).ok()?, fs::canonicalize(path).ok()?);
    let same_fs = fs::metadata(&mount).ok()?.dev() == fs::metadata(&path).ok()?.dev();
    let rel = path.strip_prefix(&mount).ok().filter(|_| same_fs)?;
    Some(rel.components().count() as u32)
}

/// The depth of the cgroup with this id, found by walking the mount.
pub fn level_of_id(mount: &Path, id: u64) -> Option<u32> {
    let mut found = None;
    walk(mount, &mut |dir, ino| {
        if ino == id {
            found = dir.strip_prefix(mount).ok().map(|rel| rel.components().count() as u32);
        }
    });
    found
}

/// Calls `f(directory, inode)` for every cgroup under `mount`, itself too.
fn walk(mount: &Path, f: &mut dyn FnMut(&Path, u64)) {
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            f(&dir, meta.ino());
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

/// The first 64-hex-digit run in `text`, the shape of container ids.
pub fn container_id(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if bytes[start].is_ascii_hexdigit() {
            let end =
                bytes[start..].iter().position(|b| !b.is_ascii_hexdigit()).map_or(bytes.len(), |n| start + n);
            if end - start == 64 {
                return Some(text[start..end].to_ascii_lowercase());
            }
            start = end;
        } else {
            start += 1;
        }
    }
    None
}

/// Maps cgroup ids to paths relative to the cgroup2 mount, rescanning the
/// tree (at most every RESCAN_EVERY) when an id is not known yet.
pub struct CgroupResolver {
    mount: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// Ids a scan did not find (a cgroup already removed, one outside our
    /// cgroup namespace), and when: they do not cause another walk of the
    /// whole tree for a minute.
    misses: HashMap<u64, Instant>,
    pub scans: u64,
}

/// How often an unknown id may cause a walk of the tree: a new container's
/// first records come milliseconds after its cgroup.
const RESCAN_EVERY: Duration = Duration::from_millis(100);

/// How long an id a scan did not find stops causing scans.
const MISS_TTL: Duration = Duration::from_secs(60);

impl CgroupResolver {
    pub fn new() -> Self {
        let mut this = Self {
            mount: cgroup2_mount(),
            paths: HashMap::new(),
            last_scan: None,
            misses: HashMap::new(),
            scans: 0,
        };
        this.rescan();
        this
    }

    /// Walks the tree anew; removed cgroups leave the map with it.
    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        let Some(mount) = self.mount.clone() else { return };
        self.paths.clear();
        let paths = &mut self.paths;
        walk(&mount, &mut |dir, ino| {
            let rel = dir.strip_prefix(&mount).map(|p| format!("/{}", p.display())).unwrap_or_default();
            paths.insert(ino, rel);
        });
    }

    /// Cgroup paths known, for the health record.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id)
            && self.misses.get(&id).is_none_or(|t| t.elapsed() > MISS_TTL)
            && self.last_scan.is_none_or(|t| t.elapsed() > RESCAN_EVERY)
        {
            self.rescan();
            if !self.paths.contains_key(&id) {
                self.misses.retain(|_, t| t.elapsed() <= MISS_TTL);
                self.misses.insert(id, Instant::now());
            }
        }
        self.paths.get(&id).map(String::as_str)
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_runtime_paths() {
        let id = "3f4e5d6c7b8a99001122334455667788990011223344556677889900aabbccdd";
        assert_eq!(container_id(&format!("/system.slice/docker-{id}.scope")).as_deref(), Some(id));
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1234/cri-containerd-{id}.scope")).as_deref(),
            Some(id)
        );
        assert_eq!(container_id(&format!("12:memory:/docker/{id}\n")).as_deref(), Some(id));
        assert_eq!(container_id("/user.slice/user-1000.slice/session-2.scope"), None);
        // 65 hex digits is not a container id.
        assert_eq!(container_id(&format!("/x/{id}a")), None);
    }

    #[test]
    fn an_unknown_id_does_not_rescan_every_second() {
        let mut r = CgroupResolver::new();
        let before = r.scans;
        for _ in 0..3 {
            r.last_scan = Some(Instant::now() - Duration::from_secs(2));
            assert_eq!(r.path(u64::MAX - 7), None);
        }
        assert_eq!(r.scans - before, 1, "one walk for an id that is not there, not one per second");
    }

    #[test]
    fn levels_count_from_the_cgroup2_root() {
        let mount = cgroup2_mount().expect("a cgroup2 mount");
        assert_eq!(level_of_path(&mount, &mount), Some(0));
        assert_eq!(level_of_id(&mount, id_of_path(&mount).unwrap()), Some(0));
        // Not a cgroup2 directory at all.
        assert_eq!(level_of_path(&mount, Path::new("/tmp")), None);
        let dir = mount.join(format!("tracer-level-test-{}", std::process::id()));
        let child = dir.join("child");
        fs::create_dir_all(&child).expect("creating a cgroup (the suite runs as root)");
        let found = (level_of_path(&mount, &child), level_of_id(&mount, id_of_path(&child).unwrap()));
        fs::remove_dir(&child).unwrap();
        fs::remove_dir(&dir).unwrap();
        assert_eq!(found, (Some(2), Some(2)));
    }

    #[test]
    fn root_cgroup_resolves() {
        let Some(mount) = cgroup2_mount() else {
            crate::testing::skip("process::cgroup::root_cgroup_resolves", "no cgroup2 mount on this host");
            return;
        };
        let mut r = CgroupResolver::new();
        let id = id_of_path(&mount).unwrap();
        assert_eq!(r.path(id), Some("/"));
    }
}
