//! The per-CPU logs of CPU slots the context-switch program gave to another
//! process (`EVICTED_SLOTS`, `EVICTED_HEADS`: see `tracer_common::EvictedHead`),
//! mapped into this process and emptied without a system call: a drain
//! reads each CPU's count and only the entries written since the last one.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, maps::Map};
use tracer_common::{CpuSlot, EVICTED_PER_CPU, EvictedHead};

/// Both arrays, mapped shared and writable (user space writes `taken`).
pub struct EvictedLog {
    heads: Mapping,
    slots: Mapping,
    cpus: u32,
}

impl EvictedLog {
    /// Maps the two arrays, sized at load for `cpus` CPU ids.
    pub fn map(ebpf: &Ebpf, cpus: u32) -> Result<Self> {
        let heads = Mapping::of(ebpf, "EVICTED_HEADS", cpus as usize * size_of::<EvictedHead>())?;
        let slots = Mapping::of(
            ebpf,
            "EVICTED_SLOTS",
            cpus as usize * EVICTED_PER_CPU as usize * size_of::<CpuSlot>(),
        )?;
        Ok(Self { heads, slots, cpus })
    }

    /// Calls `f` with every slot logged since the last drain, and marks
    /// them read so the kernel may write over them.
    pub fn drain(&mut self, mut f: impl FnMut(&CpuSlot)) {
        let heads = self.heads.ptr.as_ptr().cast::<EvictedHead>();
        let slots = self.slots.ptr.as_ptr().cast::<CpuSlot>();
        for cpu in 0..self.cpus as usize {
            // SAFETY: inside the mapping (`cpus` heads); the two counters
            // are aligned u64s the kernel and this process share, accessed
            // atomically here.
            let (written, taken) = unsafe {
                let head = heads.add(cpu);
                (AtomicU64::from_ptr(&raw mut (*head).written), AtomicU64::from_ptr(&raw mut (*head).taken))
            };
            // Acquire: the entries before the count are in place.
            let end = written.load(Ordering::Acquire);
            let mut at = taken.load(Ordering::Relaxed);
            while at != end {
                let i = cpu * EVICTED_PER_CPU as usize + (at as usize & (EVICTED_PER_CPU as usize - 1));
                // SAFETY: inside the mapping; the kernel does not write an
                // entry until `taken` has passed it.
                f(&unsafe { slots.add(i).read_volatile() });
                at = at.wrapping_add(1);
            }
            // Release: read before the kernel may reuse them.
            taken.store(end, Ordering::Release);
        }
    }
}

/// A BPF array map mapped into memory (it was created mmapable).
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn of(ebpf: &Ebpf, name: &str, len: usize) -> Result<Self> {
        let Some(Map::Array(data)) = ebpf.map(name) else { bail!("map {name} missing from the object") };
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the length against the map's size.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mapping {name}"));
        }
        let ptr = NonNull::new(ptr.cast()).context("mmap returned null")?;
        Ok(Self { ptr, len })
    }
}

// SAFETY: the memory is the kernel's map, valid until unmapped; what is
// shared with the kernel is accessed atomically or read once as plain data.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
