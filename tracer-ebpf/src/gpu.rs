//! GPU driver ioctls, resolved in the kernel: the fd is walked to its inode's
//! device number, and only ioctls on devices user space registered in
//! `GPU_DEVICES` go further. Those are aggregated per process, device and
//! operation in a per-CPU map (no per-call records); the first one a process
//! makes on a device is also reported through the ring buffer.
//!
//! Constants are from the drivers' public headers; see
//! tracer/src/gpu/decode.rs for their sources.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, LruPerCpuHashMap},
    programs::TracePointContext,
};
use tracer_common::{ANY_MINOR, EventKind, GpuOpenEvent, GpuStat, GpuStatKey, gpu_vendor, table};

use crate::{
    common::{config, fill_header, read_field, reserve, should_trace},
    files::file_of_fd,
    process::read_tp,
};

/// Device number (or `major:ANY_MINOR`) -> `gpu_vendor::*`. Filled by user
/// space before attach.
#[map]
static GPU_DEVICES: HashMap<u32, u32> = HashMap::with_max_entries(256, 0);

/// Per (process, device, command, sub-operation) counters.
#[map]
static GPU_STATS: LruPerCpuHashMap<GpuStatKey, GpuStat> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// (tgid << 32 | rdev) already reported as a first use.
#[map]
static GPU_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(8192, 0);

/// A GPU ioctl between enter and exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoctlCall {
    key: GpuStatKey,
    start_ns: u64,
    /// User pointer of the argument, for the driver status read at exit.
    arg: u64,
    bytes: u64,
    /// Offset of a driver status word in the argument (0: none).
    status_offset: u32,
    _pad: u32,
}

#[map]
static IOCTLS_IN_FLIGHT: LruHashMap<u64, IoctlCall> = LruHashMap::with_max_entries(16384, 0);

const S_IFMT: u16 = 0o170000;
const S_IFCHR: u16 = 0o020000;

// nvidia: kernel-open/common/inc/nv-ioctl-numbers.h, nv_escape.h, nvos.h
const NV_IOCTL_MAGIC: u32 = b'F' as u32;
const NV_ESC_RM_FREE: u32 = 0x29;
const NV_ESC_RM_CONTROL: u32 = 0x2a;
const NV_ESC_RM_ALLOC: u32 = 0x2b;
const NV_ESC_IOCTL_XFER_CMD: u32 = 0xd3;
/// NV01_MEMORY_LOCAL_USER (VRAM) and NV01_MEMORY_SYSTEM: their allocation
/// parameters (NV_MEMORY_ALLOCATION_PARAMS) hold the size at +64.
const NV01_MEMORY_LOCAL_USER: u32 = 0x40;
const NV01_MEMORY_SYSTEM: u32 = 0x3e;
/// nvidia-uvm: UVM_MAP_EXTERNAL_ALLOCATION, length at +8 (uvm_ioctl.h).
const UVM_MAP_EXTERNAL_ALLOCATION: u32 = 33;
// amdkfd: include/uapi/linux/kfd_ioctl.h
const KFD_IOCTL_MAGIC: u32 = b'K' as u32;
const KFD_CREATE_QUEUE: u32 = 0x02;
const KFD_ALLOC_MEMORY_OF_GPU: u32 = 0x16;
// DRM: include/uapi/drm/{drm,amdgpu_drm,i915_drm,xe_drm}.h
const DRM_IOCTL_BASE: u32 = b'd' as u32;
const DRM_AMDGPU_GEM_CREATE: u32 = 0x40;
const DRM_I915_GEM_CREATE: u32 = 0x5b;
const DRM_XE_GEM_CREATE: u32 = 0x41;

#[inline(always)]
fn ioc_nr(cmd: u32) -> u32 {
    cmd & 0xff
}
#[inline(always)]
fn ioc_type(cmd: u32) -> u32 {
    (cmd >> 8) & 0xff
}

fn user<T: Copy>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user validates the address.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    try_enter_ioctl(&ctx);
    0
}

fn try_enter_ioctl(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    if !crate::common::control(tracer_common::control::GPU_DEVICES) {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let fd: u64 = read_tp(ctx, cfg.tp.ioctl_fd)?;
    // Cheapest test first: is this fd a character device we registered?
    let file = file_of_fd(fd)?;
    let inode: u64 = read_field(file, cfg.kernel.file_inode)?;
    let mode: u16 = read_field(inode, cfg.kernel.inode_mode)?;
    if mode & S_IFMT != S_IFCHR {
        return None;
    }
    let rdev: u32 = read_field(inode, cfg.kernel.inode_rdev)?;
    // SAFETY: plain lookups of u32 values.
    let vendor =
        unsafe { GPU_DEVICES.get(&rdev).or_else(|| GPU_DEVICES.get(&((rdev & !0xfffff) | ANY_MINOR))) }
            .copied()?;
    if !should_trace(tgid) {
        return None;
    }
    let mut cmd = read_tp::<u64>(ctx, cfg.tp.ioctl_cmd)? as u32;
    let mut arg: u64 = read_tp(ctx, cfg.tp.ioctl_arg)?;
    let mut sub = 0u32;
    let mut bytes = 0u64;
    let mut status_offset = 0u32;
    match vendor {
        gpu_vendor::NVIDIA if ioc_type(cmd) == NV_IOCTL_MAGIC => {
            if ioc_nr(cmd) == NV_ESC_IOCTL_XFER_CMD {
                // nv.c: nvidia_ioctl unwraps {NvU32 cmd; NvU32 size; NvP64 ptr}.
                let inner_nr: u32 = user(arg)?;
                let inner_size: u32 = user(arg + 4)?;
                arg = user(arg + 8)?;
                cmd = 0xc000_0000 | ((inner_size & 0x3fff) << 16) | (NV_IOCTL_MAGIC << 8) | (inner_nr & 0xff);
            }
            let size = (cmd >> 16) & 0x3fff;
            match ioc_nr(cmd) {
                NV_ESC_RM_ALLOC => {
                    // NVOS21 (32 B) and NVOS64 (48 B): hClass @12,
                    // pAllocParms @16; status @28 or @40.
                    sub = user(arg + 12).unwrap_or(0);
                    status_offset = if size >= 48 { 40 } else { 28 };
                    if sub == NV01_MEMORY_LOCAL_USER || sub == NV01_MEMORY_SYSTEM {
                        let params: u64 = user(arg + 16).unwrap_or(0);
                        bytes = user(params + 64).unwrap_or(0);
                    }
                }
                NV_ESC_RM_CONTROL => {
                    // NVOS54: cmd @8, status @28.
                    sub = user(arg + 8).unwrap_or(0);
                    status_offset = 28;
                }
                // NVOS00: status @12.
                NV_ESC_RM_FREE => status_offset = 12,
                _ => {}
            }
        }
        gpu_vendor::NVIDIA_UVM => {
            if cmd == UVM_MAP_EXTERNAL_ALLOCATION {
                bytes = user(arg + 8).unwrap_or(0);
            }
        }
        gpu_vendor::AMD_KFD if ioc_type(cmd) == KFD_IOCTL_MAGIC => match ioc_nr(cmd) {
            // kfd_ioctl_create_queue_args.queue_type @40.
            KFD_CREATE_QUEUE => sub = user(arg + 40).unwrap_or(0),
            // kfd_ioctl_alloc_memory_of_gpu_args: size @8, flags @36.
            KFD_ALLOC_MEMORY_OF_GPU => {
                bytes = user(arg + 8).unwrap_or(0);
                sub = user::<u32>(arg + 36).unwrap_or(0) & 0x1f;
            }
            _ => {}
        },
        // drm_amdgpu_gem_create_in.bo_size @0; drm_i915_gem_create.size @0;
        // drm_xe_gem_create.size @8.
        gpu_vendor::AMDGPU if ioc_type(cmd) == DRM_IOCTL_BASE && ioc_nr(cmd) == DRM_AMDGPU_GEM_CREATE => {
            bytes = user(arg).unwrap_or(0)
        }
        gpu_vendor::I915 if ioc_type(cmd) == DRM_IOCTL_BASE && ioc_nr(cmd) == DRM_I915_GEM_CREATE => {
            bytes = user(arg).unwrap_or(0)
        }
        gpu_vendor::XE if ioc_type(cmd) == DRM_IOCTL_BASE && ioc_nr(cmd) == DRM_XE_GEM_CREATE => {
            bytes = user(arg + 8).unwrap_or(0)
        }
        _ => {}
    }

    let seen_key = ((tgid as u64) << 32) | rdev as u64;
    // SAFETY: presence check only.
    // Marked only once its record is in the ring: a dropped gpu.open (ring
    // full) is tried again at the next call, or user space would never
    // learn the process uses the GPU and never write its final account.
    if unsafe { GPU_SEEN.get(&seen_key) }.is_none() {
        if let Some(mut entry) = reserve::<GpuOpenEvent>(EventKind::GpuOpen) {
            upsert!(GPU_SEEN, table::GPU_SEEN, &seen_key, &1);
            // SAFETY: reservation sized for GpuOpenEvent; all fields written.
            let event = unsafe { &mut *entry.as_mut_ptr() };
            fill_header(&mut event.header, EventKind::GpuOpen);
            event.rdev = rdev;
            event.vendor = vendor;
            event.fd = fd as i32;
            event.cmd = cmd;
            event.sub = sub;
            event._pad = 0;
            crate::common::submit(entry);
        }
    }

    let call = IoctlCall {
        key: GpuStatKey { tgid, rdev, cmd, sub },
        // SAFETY: helper with no arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        arg,
        bytes,
        status_offset,
        _pad: 0,
    };
    upsert!(IOCTLS_IN_FLIGHT, table::IOCTLS_IN_FLIGHT, &pid_tgid, &call);
    Some(())
}

#[tracepoint(category = "syscalls", name = "sys_exit_ioctl")]
pub fn sys_exit_ioctl(ctx: TracePointContext) -> u32 {
    try_exit_ioctl(&ctx);
    0
}

fn try_exit_ioctl(ctx: &TracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let call = unsafe { IOCTLS_IN_FLIGHT.get(&pid_tgid) }.copied()?;
    remove_counted!(IOCTLS_IN_FLIGHT, table::IOCTLS_IN_FLIGHT, &pid_tgid);
    // SAFETY: helper with no arguments.
    let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(call.start_ns);
    let ret: i64 = read_tp(ctx, config().tp.ioctl_ret).unwrap_or(0);
    let failed = ret < 0
        || (call.status_offset != 0 && user::<u32>(call.arg + call.status_offset as u64).unwrap_or(0) != 0);

    let stat = match GPU_STATS.get_ptr_mut(&call.key) {
        Some(p) => p,
        None => {
            let zero = GpuStat { calls: 0, errors: 0, total_ns: 0, bytes: 0, bytes_requested: 0 };
            // Lost a race with another CPU creating it: that is fine.
            insert_new!(GPU_STATS, table::GPU_STATS, &call.key, &zero);
            GPU_STATS.get_ptr_mut(&call.key)?
        }
    };
    // SAFETY: this CPU's slot of a per-CPU value.
    unsafe {
        (*stat).calls += 1;
        (*stat).total_ns += elapsed;
        (*stat).bytes_requested += call.bytes;
        if failed {
            (*stat).errors += 1;
        } else {
            (*stat).bytes += call.bytes;
        }
    }
    Some(())
}
