//! What a busy process's memory map says (`/proc/PID/maps`), read only for
//! processes that were CPU-busy or used a GPU in an activity interval: the
//! machine-learning runtimes it mapped, and the footprint a RandomX miner
//! cannot do without — a 256 MiB cache or a ~2080 MiB dataset, often in huge
//! pages, and JIT code in anonymous memory that is writable and executable
//! at once (XMRig maps its JIT read-write-execute per thread).

use serde::Serialize;

/// Libraries that mark a machine-learning runtime.
const ML_LIBRARIES: &[&str] = &[
    "libtorch",
    "libcudart",
    "libnccl",
    "libcublas",
    "libcudnn",
    "libggml",
    "libllama",
    "libonnxruntime",
    "libtensorflow",
    "libjax",
    "libxla",
];

const MIB: u64 = 1 << 20;
/// tevador/RandomX src/configuration.h: RANDOMX_ARGON_MEMORY 262144 KiB.
const RANDOMX_CACHE: u64 = 256 * MIB;
/// RANDOMX_DATASET_BASE_SIZE + RANDOMX_DATASET_EXTRA_SIZE = 2 181 038 016.
const RANDOMX_DATASET: u64 = 2_181_038_016;
/// Allocators round up (to pages, huge pages, or an alignment).
const SLACK: u64 = 8 * MIB;

/// The footprint, when any part of it shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryView {
    /// Anonymous private memory mapped writable and executable at once.
    #[serde(skip_serializing_if = "is_zero")]
    pub anon_exec_kib: u64,
    /// Memory in explicit huge pages (MAP_HUGETLB: `/anon_hugepage`).
    #[serde(skip_serializing_if = "is_zero")]
    pub hugetlb_kib: u64,
    /// A private anonymous mapping the size of RandomX's `cache` (256 MiB)
    /// or `dataset` (2080 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub randomx_sized: Option<&'static str>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl MemoryView {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MapsScan {
    /// Base names, sorted, deduplicated.
    pub ml_libraries: Vec<String>,
    pub memory: MemoryView,
    /// Model weights mapped (see `open_files::MODEL_SUFFIXES`), sorted,
    /// deduplicated.
    pub model_files: Vec<String>,
    /// Other files mapped for data (not executable, 1 MiB or more, outside
    /// the system's library directories): weights whose name does not say
    /// (`pytorch_model.bin` loaded with mmap), for `open_files` to look into.
    pub data_files: Vec<String>,
}

/// Mapped data files under these are the system's (locales, caches of
/// fonts and libraries), never a workload's weights.
const SYSTEM_DIRS: &[&str] = &["/usr/", "/lib", "/etc/", "/var/cache/", "/proc/", "/sys/", "/dev/"];

/// Whether a mapping is RandomX-sized. The kernel merges adjacent
/// anonymous mappings with the same permissions into one: monerod's miner
/// maps the dataset right below the cache, and /proc shows one 2336 MiB
/// mapping (seen with Debian's monero 0.18 mining on regtest).
fn randomx_sized(size: u64, found: &mut Option<&'static str>) {
    let near = |want: u64| (want..want + SLACK).contains(&size);
    if near(RANDOMX_DATASET) || near(RANDOMX_DATASET + RANDOMX_CACHE) {
        *found = Some("dataset");
    } else if near(RANDOMX_CACHE) && found.is_none() {
        *found = Some("cache");
    }
}

pub fn scan(pid: u32) -> MapsScan {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map(|m| parse(&m)).unwrap_or_default()
}

/// `start-end perms offset dev inode [path]` per line (proc(5)).
pub fn parse(maps: &str) -> MapsScan {
    let mut out = MapsScan::default();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let path = fields.nth(3);
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else {
            continue;
        };
        let size = end.saturating_sub(start);
        let private_rw = perms.starts_with("rw") && perms.ends_with('p');
        match path {
            None if private_rw && perms.as_bytes().get(2) == Some(&b'x') => {
                out.memory.anon_exec_kib += size / 1024
            }
            None if private_rw => {
                randomx_sized(size, &mut out.memory.randomx_sized);
            }
            Some(p) if p.starts_with("/anon_hugepage") => {
                out.memory.hugetlb_kib += size / 1024;
                randomx_sized(size, &mut out.memory.randomx_sized);
            }
            Some(p) => {
                if let Some(name) = p.rsplit('/').next()
                    && ML_LIBRARIES.iter().any(|m| name.starts_with(m))
                {
                    out.ml_libraries.push(name.to_string());
                }
                if p.starts_with('/') && super::open_files::is_model_file(p.as_bytes()) {
                    out.model_files.push(p.to_string());
                } else if p.starts_with('/')
                    && !perms.contains('x')
                    && size >= MIB
                    && !SYSTEM_DIRS.iter().any(|d| p.starts_with(d))
                    && !p.ends_with(" (deleted)")
                {
                    out.data_files.push(p.to_string());
                }
            }
            None => {}
        }
    }
    out.ml_libraries.sort();
    out.ml_libraries.dedup();
    out.model_files.sort();
    out.model_files.dedup();
    out.data_files.sort();
    out.data_files.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomx_footprint_and_libraries() {
        let maps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/python3.11
7f0000000000-7f0010000000 rw-p 00000000 00:00 0 
7f0010000000-7f0010040000 rwxp 00000000 00:00 0 
7f0020000000-7f00a0000000 rw-p 00000000 00:1a 99 /anon_hugepage (deleted)
7f00b0000000-7f00b0200000 r-xp 00000000 08:01 77 /opt/torch/lib/libtorch_cpu.so
7f00c0000000-7f00c0001000 rwxp 00000000 08:01 78 /tmp/jit.bin
7f00d0000000-7f00e0000000 r--s 00000000 08:01 79 /models/llama-7b.Q4_K_M.gguf
7f00e0000000-7f00f0000000 r--s 00000000 08:01 79 /models/llama-7b.Q4_K_M.gguf
";
        let s = parse(maps);
        assert_eq!(s.model_files, vec!["/models/llama-7b.Q4_K_M.gguf"]);
        assert_eq!(s.ml_libraries, vec!["libtorch_cpu.so"]);
        assert_eq!(s.memory.anon_exec_kib, 256);
        assert_eq!(s.memory.hugetlb_kib, 2 * 1024 * 1024);
        assert_eq!(s.memory.randomx_sized, Some("cache"));
    }

    #[test]
    fn a_dataset_in_huge_pages() {
        // 1041 huge pages of 2 MiB: the dataset rounded up.
        let end = 0x7f00_0000_0000u64 + 1041 * 2 * MIB;
        let maps = format!("7f0000000000-{end:x} rw-p 00000000 00:1a 5 /anon_hugepage (deleted)\n");
        assert_eq!(parse(&maps).memory.randomx_sized, Some("dataset"));
        // monerod's dataset and cache, merged into one mapping by the kernel
        // (its /proc/PID/maps line, mining on regtest).
        let merged = "7fd5b5ffe000-7fd648000000 rw-p 00000000 00:00 0 \n";
        assert_eq!(parse(merged).memory.randomx_sized, Some("dataset"));
    }

    #[test]
    fn ordinary_maps_show_nothing() {
        let maps = "\
7f0000000000-7f0004000000 rw-p 00000000 00:00 0 
7f0004000000-7f0008000000 ---p 00000000 00:00 0 
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
garbage line
";
        let s = parse(maps);
        assert!(s.memory.is_empty() && s.ml_libraries.is_empty(), "{s:?}");
    }

    #[test]
    fn this_process_can_be_scanned() {
        let s = scan(std::process::id());
        assert_eq!(s.memory.randomx_sized, None);
    }
}
