//! Model files and chain or storage data a process holds, found with no
//! syscall hook: open (`/proc/PID/fd`, the access mode from `fdinfo`) or
//! mapped (`/proc/PID/maps`: safetensors and GGUF weights are usually
//! mmapped, and so is an LMDB). Read for the processes that were busy in an
//! interval, with their maps, and once for every other process that did
//! something.
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

/// Files smaller than this are not looked into: weights are megabytes, and
/// a new chain's database (a regtest monerod's data.mdb is 80 KiB) more
/// than this.
const MIN_SNIFFED: u64 = 64 << 10;
/// Bytes read from the end of a file whose start says nothing: the footer
/// of a LevelDB or RocksDB table.
const TAIL_BYTES: usize = 8;
/// Bytes read from the start of a file to tell its format.
const SNIFF_BYTES: usize = 64;

/// A weights file's format from its first bytes, for names that do not say
/// (`pytorch_model.bin`, `model.pth`, a renamed file):
/// - safetensors: a little-endian u64 header length, then the JSON header;
/// - GGUF: the magic `GGUF` (ggml's gguf.md);
/// - PyTorch's zip format (torch.save since 1.6): a zip whose first entry
///   is `<archive>/data.pkl` (the name at offset 30 of the local header);
/// - PyTorch's legacy format: a pickle (protocol 2) whose first object is
///   torch's magic number 0x1950a86a20f9469cfc6c (torch/serialization.py);
/// - ONNX: a protobuf ModelProto, which writers begin with field 1
///   (ir_version, a small varint) and then the producer's name, its
///   version, or the graph (onnx.proto: fields 2, 3, 7).
///
/// and data that nodes and storage farmers keep (fixtures in
/// tests/fixtures/file_heads):
/// - a Chia plot: `Proof of Space Plot` (chiapos's plot header);
/// - an LMDB data file (Monero's blockchain): its first page is a meta page
///   (flag P_META, 0x08, at offset 10) with the magic 0xBEEFC0DE and version
///   1 at offset 16 (lmdb's mdb.c, 64-bit layout);
/// - Bitcoin-family block files (`blk*.dat`): a network's magic, then a
///   block's length (at most 4 MB) — as written before Bitcoin Core 28
///   obfuscated them with a key of their own.
pub fn sniff_format(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"GGUF") {
        return Some("gguf");
    }
    if b.starts_with(b"Proof of Space Plot") {
        return Some("chia-plot");
    }
    if b.len() >= 24
        && b[10] & 0x08 != 0
        && b[16..20] == 0xBEEF_C0DEu32.to_le_bytes()
        && b[20..24] == 1u32.to_le_bytes()
    {
        return Some("lmdb");
    }
    // mainnet, testnet3, testnet4, signet, regtest; Litecoin, Dogecoin.
    const CHAIN_MAGIC: [[u8; 4]; 7] = [
        [0xf9, 0xbe, 0xb4, 0xd9],
        [0x0b, 0x11, 0x09, 0x07],
        [0x1c, 0x16, 0x3f, 0x28],
        [0x0a, 0x03, 0xcf, 0x40],
        [0xfa, 0xbf, 0xb5, 0xda],
        [0xfb, 0xc0, 0xb6, 0xdb],
        [0xc0, 0xc0, 0xc0, 0xc0],
    ];
    if b.len() >= 8 && CHAIN_MAGIC.iter().any(|m| b.starts_with(m)) {
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        // A block is at least its 80-byte header and one transaction.
        if (81..=4_000_000).contains(&len) {
            return Some("bitcoin-blocks");
        }
    }
    if b.starts_with(b"PK\x03\x04") && b.len() >= 30 {
        let name_len = usize::from(u16::from_le_bytes([b[26], b[27]]));
        let name = b.get(30..30 + name_len.min(b.len().saturating_sub(30)))?;
        return name.ends_with(b"data.pkl").then_some("pytorch");
    }
    if is_onnx(b) {
        return Some("onnx");
    }
    const TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if b.starts_with(TORCH_MAGIC) {
        return Some("pytorch");
    }
    let header = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    ((2..=100 << 20).contains(&header) && b[8..].starts_with(b"{\"")).then_some("safetensors")
}

/// An ONNX ModelProto's start: `08 <ir_version 1..=15>`, then a producer
/// name or version of printable text (`12`/`1a <len> <text>`) or the graph
/// (`3a`).
fn is_onnx(b: &[u8]) -> bool {
    let (Some(0x08), Some(1..=15)) = (b.first(), b.get(1)) else { return false };
    match b.get(2) {
        Some(0x12 | 0x1a) => {
            let len = usize::from(b.get(3).copied().unwrap_or(0));
            (1..=64).contains(&len)
                && b.get(4..4 + len.min(b.len().saturating_sub(4)))
                    .is_some_and(|t| !t.is_empty() && t.iter().all(|c| c.is_ascii_graphic() || *c == b' '))
        }
        Some(0x3a) => true,
        _ => false,
    }
}

/// The format of a table file from its last bytes: LevelDB's table magic
/// (0xdb4775248b80fb57, little-endian; Bitcoin Core's block index and
/// chainstate, CometBFT's stores) or RocksDB's block-based one
/// (0x88e241b785f4cff7).
pub fn sniff_tail(b: &[u8]) -> Option<&'static str> {
    let tail: [u8; 8] = b.get(b.len().checked_sub(8)?..)?.try_into().ok()?;
    match u64::from_le_bytes(tail) {
        0xdb47_7524_8b80_fb57 => Some("leveldb"),
        0x88e2_41b7_85f4_cff7 => Some("rocksdb"),
        _ => None,
    }
}

/// The suffix a sniffed weights format stands for in the rules
/// (`file_suffix`); None for data that is not model weights.
pub fn format_suffix(format: &str) -> Option<&'static str> {
    match format {
        "gguf" => Some(".gguf"),
        "safetensors" => Some(".safetensors"),
        "pytorch" => Some(".pt"),
        "onnx" => Some(".onnx"),
        _ => None,
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
    /// `/proc/PID/fd/N`, or a mapped file's path), if it is model weights or
    /// one of the data formats above.
    pub fn format_of(&mut self, fd_path: &Path) -> Option<&'static str> {
        self.format_at_least(fd_path, MIN_SNIFFED)
    }

    /// The same for a file of any size of at least `min` bytes: one a
    /// process is writing, whose header is there before its bulk.
    pub fn format_at_least(&mut self, fd_path: &Path, min: u64) -> Option<&'static str> {
        use std::{io::Read as _, os::unix::fs::MetadataExt as _};
        let meta = std::fs::metadata(fd_path).ok().filter(|m| m.is_file() && m.len() >= min)?;
        let key = (meta.dev(), meta.ino(), meta.len());
        if let Some(known) = self.seen.get(&key) {
            return *known;
        }
        let format = std::fs::File::open(fd_path).ok().and_then(|mut f| {
            use std::io::{Seek as _, SeekFrom};
            let mut head = [0u8; SNIFF_BYTES];
            let n = f.read(&mut head).unwrap_or(0);
            sniff_format(&head[..n]).or_else(|| {
                let mut tail = [0u8; TAIL_BYTES];
                f.seek(SeekFrom::End(-(TAIL_BYTES as i64))).ok()?;
                f.read_exact(&mut tail).ok()?;
                sniff_tail(&tail)
            })
        });
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

    fn file_head(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/fixtures/file_heads/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn chain_and_storage_data_are_told_from_real_files() {
        assert_eq!(sniff_format(&file_head("chiapos-2.0.12-k18-plot.head")), Some("chia-plot"));
        assert_eq!(sniff_format(&file_head("onnx-1.23.2-matmul-model.head")), Some("onnx"));
        // torch.onnx.export's start: ir_version 8, producer "pytorch".
        assert_eq!(sniff_format(b"\x08\x08\x12\x07pytorch\x1a\x052.5.1"), Some("onnx"));
        for b in [&b"\x08\x00\x12\x01a"[..], b"\x08\x08\x12\x05ab\x00\x01\x02", b"\x08\x08\x99", b"\x08"] {
            assert_eq!(sniff_format(b), None, "{b:?}");
        }
        assert_eq!(sniff_format(&file_head("monerod-0.18-regtest-data.mdb.head")), Some("lmdb"));
        let table = file_head("plyvel-1.5.1-leveldb-table.ldb.tail");
        assert_eq!(sniff_format(&table), None, "a table's start says nothing");
        assert_eq!(sniff_tail(&table), Some("leveldb"));
        let mut rocks = vec![0u8; 40];
        rocks.extend_from_slice(&0x88e2_41b7_85f4_cff7u64.to_le_bytes());
        assert_eq!(sniff_tail(&rocks), Some("rocksdb"));
        // Bitcoin Core's regtest block file: magic, a 285-byte genesis block.
        let mut blk = vec![0xfa, 0xbf, 0xb5, 0xda];
        blk.extend_from_slice(&285u32.to_le_bytes());
        blk.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(sniff_format(&blk), Some("bitcoin-blocks"));
        // None of them is model weights.
        for f in ["chia-plot", "lmdb", "leveldb", "bitcoin-blocks"] {
            assert_eq!(format_suffix(f), None);
        }
        // Look-alikes and hostile bytes: an LMDB meta page without its
        // flag, a magic with an absurd length, short tails.
        let mut lmdb = file_head("monerod-0.18-regtest-data.mdb.head");
        lmdb[10] = 0;
        assert_eq!(sniff_format(&lmdb), None);
        let mut huge = vec![0xf9, 0xbe, 0xb4, 0xd9];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(sniff_format(&huge), None);
        for b in [&b""[..], b"\x57\xfb\x80\x8b\x24\x75\x47"] {
            assert_eq!(sniff_tail(b), None);
        }
    }
}
