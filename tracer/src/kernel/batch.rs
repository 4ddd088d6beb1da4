//! Reads a whole hash map in a few syscalls (BPF_MAP_LOOKUP_BATCH, Linux
//! 5.6) instead of two per key: the final snapshot of a host with thousands
//! of processes took over a second key by key, and a walk of a busy LRU by
//! next-key restarts from the start whenever the current key is evicted.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use aya::maps::MapData;

/// include/uapi/linux/bpf.h
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`, the member of the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: attr is a bpf_attr member whose pointers the caller set to
    // buffers of the sizes the kernel reported for the map.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), std::mem::size_of::<T>() as libc::c_uint)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `union bpf_attr`, the `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked for per call: the buffers stay small on hosts with many
/// CPUs (a per-CPU value is stored once per possible CPU).
const CHUNK: usize = 1024;

/// What a walk calls for each entry: its key, and its value (one per
/// possible CPU for a per-CPU map).
type Visit<'a> = dyn FnMut(&[u8], &mut dyn Iterator<Item = &[u8]>) + 'a;

/// A second handle on a hash-family map, for batched reads.
pub struct BatchReader {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes of one entry's value as the kernel copies it out: for per-CPU
    /// maps, each CPU's value rounded up to 8 bytes, for every possible CPU.
    value_size: usize,
    per_cpu_stride: Option<usize>,
}

impl BatchReader {
    pub fn new(map: &MapData, per_cpu: bool) -> io::Result<Self> {
        let info = map.info().map_err(io::Error::other)?;
        let fd = map.fd().as_fd().try_clone_to_owned()?;
        let value = info.value_size() as usize;
        let (value_size, per_cpu_stride) = if per_cpu {
            let stride = value.div_ceil(8) * 8;
            (stride * super::possible_cpus() as usize, Some(stride))
        } else {
            (value, None)
        };
        Ok(Self { fd, key_size: info.key_size() as usize, value_size, per_cpu_stride })
    }

    /// Calls `f(key, values)` for every entry, `values` holding one value
    /// per possible CPU for a per-CPU map and one otherwise.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &mut dyn Iterator<Item = &[u8]>)) -> io::Result<()> {
        if self.batched(&mut f)? {
            return Ok(());
        }
        self.key_by_key(&mut f)
    }

    /// The walk of kernels without batch lookups: next key, then its value.
    fn key_by_key(&self, f: &mut Visit<'_>) -> io::Result<()> {
        let mut key = vec![0u8; self.key_size];
        let mut next = vec![0u8; self.key_size];
        let mut value = vec![0u8; self.value_size];
        let mut first = true;
        loop {
            let mut attr = ElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                key: if first { 0 } else { key.as_ptr() as u64 },
                value_or_next_key: next.as_mut_ptr() as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                r => r?,
            }
            first = false;
            std::mem::swap(&mut key, &mut next);
            let mut attr = ElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                key: key.as_ptr() as u64,
                value_or_next_key: value.as_mut_ptr() as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                // Removed between the two calls.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                r => r?,
            }
            match self.per_cpu_stride {
                Some(stride) => f(&key, &mut value.chunks(stride)),
                None => f(&key, &mut std::iter::once(&value[..])),
            }
        }
    }

    /// `Ok(false)`: this kernel has no batch lookup for the map (before
    /// 5.6), nothing was read.
    fn batched(&self, f: &mut Visit<'_>) -> io::Result<bool> {
        let mut chunk = CHUNK;
        let mut keys = vec![0u8; chunk * self.key_size];
        let mut values = vec![0u8; chunk * self.value_size];
        // The position token: a bucket index for hash maps (u32).
        let mut token = [0u64; 1];
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { token.as_ptr() as u64 },
                out_batch: token.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // The buffers hold `count` keys and values; the token buffer is
            // 8 bytes, more than the 4 a hash map writes.
            let err = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr).err();
            match err.as_ref().and_then(io::Error::raw_os_error) {
                None | Some(libc::ENOENT) => {}
                // A bucket holds more entries than asked for: ask for more.
                Some(libc::ENOSPC) if attr.count == 0 => {
                    chunk *= 2;
                    keys.resize(chunk * self.key_size, 0);
                    values.resize(chunk * self.value_size, 0);
                    continue;
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOTSUP) | Some(524) if first => {
                    return Ok(false);
                }
                Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
            }
            first = false;
            for i in 0..attr.count as usize {
                let key = &keys[i * self.key_size..(i + 1) * self.key_size];
                let value = &values[i * self.value_size..(i + 1) * self.value_size];
                match self.per_cpu_stride {
                    Some(stride) => f(key, &mut value.chunks(stride)),
                    None => f(key, &mut std::iter::once(value)),
                }
            }
            if err.is_some() {
                // ENOENT: that was the last batch.
                return Ok(true);
            }
        }
    }

    /// Entries in the map now.
    pub fn len(&self) -> io::Result<u64> {
        let mut n = 0u64;
        self.for_each(|_, _| n += 1)?;
        Ok(n)
    }
}

/// Reads a plain value out of bytes the kernel copied.
pub fn pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>(), "entry shorter than its type");
    // SAFETY: length checked; T is plain data (aya::Pod), any bytes are valid.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}
