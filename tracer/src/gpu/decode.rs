//! Names and classes of GPU driver ioctls.
//!
//! Sources (checked against ../shared/reference/gpu-ioctls-and-fingerprints.md):
//! - NVIDIA: open-gpu-kernel-modules `kernel-open/common/inc/nv-ioctl-numbers.h`,
//!   `src/nvidia/arch/nvalloc/unix/include/nv_escape.h`, `src/common/sdk/nvidia/inc/nvos.h`,
//!   `class/clXXXX.h`; UVM `kernel-open/nvidia-uvm/uvm_ioctl.h`, `uvm_linux_ioctl.h`.
//! - AMD KFD: `include/uapi/linux/kfd_ioctl.h`; amdgpu `include/uapi/drm/amdgpu_drm.h`.
//! - Intel: `include/uapi/drm/i915_drm.h`, `xe_drm.h`; DRM core `drm.h`.
//!
//! A command not in these tables is kept under its raw number.

use tracer_common::gpu_vendor;

/// What an operation says about the work, for the per-process summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// A compute engine, queue or context was created.
    ComputeContext,
    /// Memory allocated or mapped (bytes counted where the argument says).
    MemoryAlloc,
    MemoryFree,
    /// Work handed to the GPU through the kernel.
    Submission,
    /// Waiting for the GPU.
    Wait,
    /// Session, device and capability set-up, queries, controls.
    Control,
    Other,
}

/// The decoded name and class of one (command, sub-operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub name: String,
    pub class: OpClass,
}

fn op(name: impl Into<String>, class: OpClass) -> Op {
    Op { name: name.into(), class }
}

pub fn ioc_nr(cmd: u32) -> u32 {
    cmd & 0xff
}
pub fn ioc_type(cmd: u32) -> u32 {
    (cmd >> 8) & 0xff
}

/// NVIDIA RM class names (class/clXXXX.h) for RM_ALLOC.
pub fn nvidia_class(class: u32) -> (String, OpClass) {
    let named = match class {
        0x41 => Some(("NV01_ROOT_CLIENT", OpClass::Control)),
        0x80 => Some(("NV01_DEVICE_0", OpClass::Control)),
        0x2080 => Some(("NV20_SUBDEVICE_0", OpClass::Control)),
        0x90f1 => Some(("FERMI_VASPACE_A", OpClass::Control)),
        0xa06c => Some(("KEPLER_CHANNEL_GROUP_A", OpClass::ComputeContext)),
        0x9067 => Some(("FERMI_CONTEXT_SHARE_A", OpClass::ComputeContext)),
        0x40 => Some(("NV01_MEMORY_LOCAL_USER", OpClass::MemoryAlloc)),
        0x3e => Some(("NV01_MEMORY_SYSTEM", OpClass::MemoryAlloc)),
        0x71 => Some(("NV01_MEMORY_SYSTEM_OS_DESCRIPTOR", OpClass::MemoryAlloc)),
        0x50a0 => Some(("NV50_MEMORY_VIRTUAL", OpClass::MemoryAlloc)),
        0xf8 => Some(("NV_MEMORY_FABRIC", OpClass::MemoryAlloc)),
        0xfd => Some(("NV_MEMORY_MULTICAST_FABRIC", OpClass::MemoryAlloc)),
        0x79 => Some(("NV01_EVENT_OS_EVENT", OpClass::Wait)),
        0xc3c0 => Some(("VOLTA_COMPUTE_A", OpClass::ComputeContext)),
        0xc5c0 => Some(("TURING_COMPUTE_A", OpClass::ComputeContext)),
        0xc6c0 => Some(("AMPERE_COMPUTE_A", OpClass::ComputeContext)),
        0xc7c0 => Some(("AMPERE_COMPUTE_B", OpClass::ComputeContext)),
        0xc9c0 => Some(("ADA_COMPUTE_A", OpClass::ComputeContext)),
        0xcbc0 => Some(("HOPPER_COMPUTE_A", OpClass::ComputeContext)),
        0xcdc0 => Some(("BLACKWELL_COMPUTE_A", OpClass::ComputeContext)),
        0xcec0 => Some(("BLACKWELL_COMPUTE_B", OpClass::ComputeContext)),
        0xc36f => Some(("VOLTA_CHANNEL_GPFIFO_A", OpClass::ComputeContext)),
        0xc46f => Some(("TURING_CHANNEL_GPFIFO_A", OpClass::ComputeContext)),
        0xc56f => Some(("AMPERE_CHANNEL_GPFIFO_A", OpClass::ComputeContext)),
        0xc86f => Some(("HOPPER_CHANNEL_GPFIFO_A", OpClass::ComputeContext)),
        0xc96f => Some(("BLACKWELL_CHANNEL_GPFIFO_A", OpClass::ComputeContext)),
        0xca6f => Some(("BLACKWELL_CHANNEL_GPFIFO_B", OpClass::ComputeContext)),
        0xc461 => Some(("TURING_USERMODE_A", OpClass::Control)),
        0xc561 => Some(("AMPERE_USERMODE_A", OpClass::Control)),
        0xc661 => Some(("HOPPER_USERMODE_A", OpClass::Control)),
        0xc761 => Some(("BLACKWELL_USERMODE_A", OpClass::Control)),
        _ => None,
    };
    if let Some((name, class)) = named {
        return (name.to_string(), class);
    }
    // Families by low byte (see the class headers): compute 0xC0, channel
    // 0x6F, 3D 0x97, copy engine 0xB5, video encode 0xB7 / decode 0xB0.
    match class & 0xff {
        0xc0 => (format!("COMPUTE_{class:#x}"), OpClass::ComputeContext),
        0x6f => (format!("CHANNEL_GPFIFO_{class:#x}"), OpClass::ComputeContext),
        0x97 => (format!("3D_{class:#x}"), OpClass::ComputeContext),
        0xb5 => (format!("DMA_COPY_{class:#x}"), OpClass::ComputeContext),
        0xb7 => (format!("VIDEO_ENCODER_{class:#x}"), OpClass::ComputeContext),
        0xb0 => (format!("VIDEO_DECODER_{class:#x}"), OpClass::ComputeContext),
        _ => (format!("class {class:#x}"), OpClass::Other),
    }
}

fn nvidia_control(cmd: u32) -> String {
    let name = match cmd {
        0xc36f0108 => "GPFIFO_GET_WORK_SUBMIT_TOKEN",
        0xa06c0101 => "GPFIFO_SCHEDULE",
        0x800292 => "GPU_GET_CLASSLIST_V2",
        0x20801201 => "GR_GET_INFO",
        0x2080200a => "PERF_BOOST",
        0x20800301 => "EVENT_SET_NOTIFICATION",
        0x2080018d => "GPU_GET_PIDS",
        0x2080018e => "GPU_GET_PID_INFO",
        0x20800102 => "GPU_GET_INFO_V2",
        0x215 => "GPU_ATTACH_IDS",
        0x214 => "GPU_GET_PROBED_IDS",
        _ => return format!("{cmd:#x}"),
    };
    name.to_string()
}

fn nvidia_frontend(cmd: u32, sub: u32) -> Op {
    if ioc_type(cmd) != u32::from(b'F') {
        return op(format!("ioctl {cmd:#x}"), OpClass::Other);
    }
    match ioc_nr(cmd) {
        0x2b => {
            let (class_name, class) = nvidia_class(sub);
            op(format!("RM_ALLOC {class_name}"), class)
        }
        0x2a => {
            let class =
                if sub == 0xc36f0108 || sub == 0xa06c0101 { OpClass::Submission } else { OpClass::Control };
            op(format!("RM_CONTROL {}", nvidia_control(sub)), class)
        }
        0x27 => op("RM_ALLOC_MEMORY", OpClass::MemoryAlloc),
        0x28 => op("RM_ALLOC_OBJECT", OpClass::Control),
        0x29 => op("RM_FREE", OpClass::MemoryFree),
        0x34 => op("RM_DUP_OBJECT", OpClass::Control),
        0x35 => op("RM_SHARE", OpClass::Control),
        0x41 => op("RM_IDLE_CHANNELS", OpClass::Wait),
        0x4a => op("RM_VID_HEAP_CONTROL", OpClass::MemoryAlloc),
        0x4d => op("RM_ACCESS_REGISTRY", OpClass::Control),
        0x4e => op("RM_MAP_MEMORY", OpClass::MemoryAlloc),
        0x4f => op("RM_UNMAP_MEMORY", OpClass::MemoryFree),
        0x52 => op("RM_GET_EVENT_DATA", OpClass::Wait),
        0x54 => op("RM_ALLOC_CONTEXT_DMA2", OpClass::MemoryAlloc),
        0x57 => op("RM_MAP_MEMORY_DMA", OpClass::MemoryAlloc),
        0x58 => op("RM_UNMAP_MEMORY_DMA", OpClass::MemoryFree),
        0x59 => op("RM_BIND_CONTEXT_DMA", OpClass::Control),
        0x5c => op("RM_EXPORT_OBJECT_TO_FD", OpClass::Control),
        0x5d => op("RM_IMPORT_OBJECT_FROM_FD", OpClass::Control),
        0x5e => op("RM_UPDATE_DEVICE_MAPPING_INFO", OpClass::Control),
        0xc8 => op("CARD_INFO", OpClass::Control),
        0xc9 => op("REGISTER_FD", OpClass::Control),
        0xce => op("ALLOC_OS_EVENT", OpClass::Wait),
        0xcf => op("FREE_OS_EVENT", OpClass::Control),
        0xd1 => op("STATUS_CODE", OpClass::Control),
        0xd2 => op("CHECK_VERSION_STR", OpClass::Control),
        0xd4 => op("ATTACH_GPUS_TO_FD", OpClass::Control),
        0xd5 => op("QUERY_DEVICE_INTR", OpClass::Control),
        0xd6 => op("SYS_PARAMS", OpClass::Control),
        0xd7 => op("NUMA_INFO", OpClass::Control),
        0xd8 => op("SET_NUMA_STATUS", OpClass::Control),
        0xd9 => op("EXPORT_TO_DMABUF_FD", OpClass::Control),
        0xda => op("WAIT_OPEN_COMPLETE", OpClass::Control),
        nr => op(format!("NV_ESC {nr:#x}"), OpClass::Other),
    }
}

fn nvidia_uvm(cmd: u32) -> Op {
    let (name, class) = match cmd {
        0x3000_0001 => ("UVM_INITIALIZE", OpClass::Control),
        0x3000_0002 => ("UVM_DEINITIALIZE", OpClass::Control),
        1 => ("UVM_RESERVE_VA", OpClass::MemoryAlloc),
        2 => ("UVM_RELEASE_VA", OpClass::MemoryFree),
        23 => ("UVM_CREATE_RANGE_GROUP", OpClass::Control),
        24 => ("UVM_DESTROY_RANGE_GROUP", OpClass::Control),
        25 => ("UVM_REGISTER_GPU_VASPACE", OpClass::ComputeContext),
        26 => ("UVM_UNREGISTER_GPU_VASPACE", OpClass::Control),
        27 => ("UVM_REGISTER_CHANNEL", OpClass::ComputeContext),
        28 => ("UVM_UNREGISTER_CHANNEL", OpClass::Control),
        29 => ("UVM_ENABLE_PEER_ACCESS", OpClass::Control),
        30 => ("UVM_DISABLE_PEER_ACCESS", OpClass::Control),
        31 => ("UVM_SET_RANGE_GROUP", OpClass::Control),
        33 => ("UVM_MAP_EXTERNAL_ALLOCATION", OpClass::MemoryAlloc),
        34 => ("UVM_FREE", OpClass::MemoryFree),
        35 => ("UVM_MEM_MAP", OpClass::MemoryAlloc),
        37 => ("UVM_REGISTER_GPU", OpClass::Control),
        38 => ("UVM_UNREGISTER_GPU", OpClass::Control),
        39 => ("UVM_PAGEABLE_MEM_ACCESS", OpClass::Control),
        42 => ("UVM_SET_PREFERRED_LOCATION", OpClass::Control),
        46 => ("UVM_SET_ACCESSED_BY", OpClass::Control),
        51 => ("UVM_MIGRATE", OpClass::Submission),
        53 => ("UVM_MIGRATE_RANGE_GROUP", OpClass::Submission),
        65 => ("UVM_MAP_DYNAMIC_PARALLELISM_REGION", OpClass::MemoryAlloc),
        66 => ("UVM_UNMAP_EXTERNAL", OpClass::MemoryFree),
        68 => ("UVM_ALLOC_SEMAPHORE_POOL", OpClass::MemoryAlloc),
        69 => ("UVM_CLEAN_UP_ZOMBIE_RESOURCES", OpClass::Control),
        70 => ("UVM_PAGEABLE_MEM_ACCESS_ON_GPU", OpClass::Control),
        71 => ("UVM_POPULATE_PAGEABLE", OpClass::MemoryAlloc),
        72 => ("UVM_VALIDATE_VA_RANGE", OpClass::Control),
        73 => ("UVM_CREATE_EXTERNAL_RANGE", OpClass::MemoryAlloc),
        74 => ("UVM_MAP_EXTERNAL_SPARSE", OpClass::MemoryAlloc),
        75 => ("UVM_MM_INITIALIZE", OpClass::Control),
        78 => ("UVM_ALLOC_DEVICE_P2P", OpClass::MemoryAlloc),
        79 => ("UVM_CLEAR_ALL_ACCESS_COUNTERS", OpClass::Control),
        80 => ("UVM_DISCARD", OpClass::MemoryFree),
        2047 => ("UVM_IS_8_SUPPORTED", OpClass::Control),
        56..=64 | 67 | 76 | 77 => return op(format!("UVM_TOOLS {cmd}"), OpClass::Control),
        200..=1999 => return op(format!("UVM_TEST {}", cmd - 200), OpClass::Control),
        _ => return op(format!("UVM {cmd:#x}"), OpClass::Other),
    };
    op(name, class)
}

fn amd_kfd(cmd: u32, sub: u32) -> Op {
    if ioc_type(cmd) != u32::from(b'K') {
        return op(format!("ioctl {cmd:#x}"), OpClass::Other);
    }
    let (name, class) = match ioc_nr(cmd) {
        0x01 => ("GET_VERSION", OpClass::Control),
        0x02 => {
            let queue = match sub {
                0 => "COMPUTE",
                1 => "SDMA",
                2 => "COMPUTE_AQL",
                3 => "SDMA_XGMI",
                _ => "type?",
            };
            return op(format!("CREATE_QUEUE {queue}"), OpClass::ComputeContext);
        }
        0x03 => ("DESTROY_QUEUE", OpClass::Control),
        0x04 => ("SET_MEMORY_POLICY", OpClass::Control),
        0x05 => ("GET_CLOCK_COUNTERS", OpClass::Control),
        0x07 => ("UPDATE_QUEUE", OpClass::Control),
        0x08 => ("CREATE_EVENT", OpClass::Control),
        0x0a => ("SET_EVENT", OpClass::Control),
        0x0b => ("RESET_EVENT", OpClass::Control),
        0x0c => ("WAIT_EVENTS", OpClass::Wait),
        0x11 => ("SET_SCRATCH_BACKING_VA", OpClass::Control),
        0x13 => ("SET_TRAP_HANDLER", OpClass::Control),
        0x14 => ("GET_PROCESS_APERTURES_NEW", OpClass::Control),
        0x15 => ("ACQUIRE_VM", OpClass::Control),
        0x16 => {
            let kind = match sub {
                f if f & 1 != 0 => "VRAM",
                f if f & 2 != 0 => "GTT",
                f if f & 4 != 0 => "USERPTR",
                f if f & 8 != 0 => "DOORBELL",
                f if f & 16 != 0 => "MMIO_REMAP",
                _ => "",
            };
            let name = if kind.is_empty() {
                "ALLOC_MEMORY_OF_GPU".into()
            } else {
                format!("ALLOC_MEMORY_OF_GPU {kind}")
            };
            return op(name, OpClass::MemoryAlloc);
        }
        0x17 => ("FREE_MEMORY_OF_GPU", OpClass::MemoryFree),
        0x18 => ("MAP_MEMORY_TO_GPU", OpClass::MemoryAlloc),
        0x19 => ("UNMAP_MEMORY_FROM_GPU", OpClass::MemoryFree),
        0x1a => ("SET_CU_MASK", OpClass::Control),
        0x1c => ("GET_DMABUF_INFO", OpClass::Control),
        0x1d => ("IMPORT_DMABUF", OpClass::MemoryAlloc),
        0x1e => ("ALLOC_QUEUE_GWS", OpClass::ComputeContext),
        0x1f => ("SMI_EVENTS", OpClass::Control),
        0x20 => ("SVM", OpClass::MemoryAlloc),
        0x21 => ("SET_XNACK_MODE", OpClass::Control),
        0x22 => ("CRIU_OP", OpClass::Control),
        0x23 => ("AVAILABLE_MEMORY", OpClass::Control),
        0x24 => ("EXPORT_DMABUF", OpClass::Control),
        0x25 => ("RUNTIME_ENABLE", OpClass::Control),
        0x26 => ("DBG_TRAP", OpClass::Control),
        nr => return op(format!("KFD {nr:#x}"), OpClass::Other),
    };
    op(name, class)
}

/// DRM core ioctls (drm.h), shared by every driver: nr below 0x40.
fn drm_core(cmd: u32) -> Option<Op> {
    let (name, class) = match ioc_nr(cmd) {
        0x00 => ("DRM_VERSION", OpClass::Control),
        0x09 => ("GEM_CLOSE", OpClass::MemoryFree),
        0x0c => ("GET_CAP", OpClass::Control),
        0x2d => ("PRIME_HANDLE_TO_FD", OpClass::Control),
        0x2e => ("PRIME_FD_TO_HANDLE", OpClass::Control),
        0xbf => ("SYNCOBJ_CREATE", OpClass::Control),
        0xc0 => ("SYNCOBJ_DESTROY", OpClass::Control),
        0xc3 => ("SYNCOBJ_WAIT", OpClass::Wait),
        0xca => ("SYNCOBJ_TIMELINE_WAIT", OpClass::Wait),
        _ => return None,
    };
    Some(op(name, class))
}

fn amdgpu(cmd: u32) -> Op {
    let (name, class) = match ioc_nr(cmd).wrapping_sub(0x40) {
        0x00 => ("AMDGPU_GEM_CREATE", OpClass::MemoryAlloc),
        0x01 => ("AMDGPU_GEM_MMAP", OpClass::MemoryAlloc),
        0x02 => ("AMDGPU_CTX", OpClass::ComputeContext),
        0x03 => ("AMDGPU_BO_LIST", OpClass::Control),
        0x04 => ("AMDGPU_CS", OpClass::Submission),
        0x05 => ("AMDGPU_INFO", OpClass::Control),
        0x07 => ("AMDGPU_GEM_WAIT_IDLE", OpClass::Wait),
        0x08 => ("AMDGPU_GEM_VA", OpClass::MemoryAlloc),
        0x09 => ("AMDGPU_WAIT_CS", OpClass::Wait),
        0x10 => ("AMDGPU_GEM_OP", OpClass::Control),
        0x11 => ("AMDGPU_GEM_USERPTR", OpClass::MemoryAlloc),
        0x12 => ("AMDGPU_WAIT_FENCES", OpClass::Wait),
        0x13 => ("AMDGPU_VM", OpClass::Control),
        0x14 => ("AMDGPU_FENCE_TO_HANDLE", OpClass::Control),
        0x15 => ("AMDGPU_SCHED", OpClass::Control),
        0x16 => ("AMDGPU_USERQ", OpClass::ComputeContext),
        0x17 => ("AMDGPU_USERQ_SIGNAL", OpClass::Submission),
        0x18 => ("AMDGPU_USERQ_WAIT", OpClass::Wait),
        _ => return drm_core(cmd).unwrap_or_else(|| op(format!("DRM {cmd:#x}"), OpClass::Other)),
    };
    op(name, class)
}

fn i915(cmd: u32) -> Op {
    let (name, class) = match ioc_nr(cmd) {
        0x69 => ("I915_GEM_EXECBUFFER2", OpClass::Submission),
        0x5b => ("I915_GEM_CREATE", OpClass::MemoryAlloc),
        0x7c => ("I915_GEM_CREATE_EXT", OpClass::MemoryAlloc),
        0x6d => ("I915_GEM_CONTEXT_CREATE", OpClass::ComputeContext),
        0x6c => ("I915_GEM_WAIT", OpClass::Wait),
        0x79 => ("I915_QUERY", OpClass::Control),
        _ => return drm_core(cmd).unwrap_or_else(|| op(format!("DRM {cmd:#x}"), OpClass::Other)),
    };
    op(name, class)
}

fn xe(cmd: u32) -> Op {
    let (name, class) = match ioc_nr(cmd).wrapping_sub(0x40) {
        0x00 => ("XE_DEVICE_QUERY", OpClass::Control),
        0x01 => ("XE_GEM_CREATE", OpClass::MemoryAlloc),
        0x03 => ("XE_VM_CREATE", OpClass::Control),
        0x05 => ("XE_VM_BIND", OpClass::MemoryAlloc),
        0x06 => ("XE_EXEC_QUEUE_CREATE", OpClass::ComputeContext),
        0x09 => ("XE_EXEC", OpClass::Submission),
        0x0a => ("XE_WAIT_USER_FENCE", OpClass::Wait),
        _ => return drm_core(cmd).unwrap_or_else(|| op(format!("DRM {cmd:#x}"), OpClass::Other)),
    };
    op(name, class)
}

/// Decodes one aggregated key. Never fails: unknown commands keep their
/// raw number.
pub fn decode(vendor: u32, cmd: u32, sub: u32) -> Op {
    match vendor {
        gpu_vendor::NVIDIA => nvidia_frontend(cmd, sub),
        gpu_vendor::NVIDIA_UVM => nvidia_uvm(cmd),
        gpu_vendor::AMD_KFD => amd_kfd(cmd, sub),
        gpu_vendor::AMDGPU if ioc_type(cmd) == u32::from(b'd') => amdgpu(cmd),
        gpu_vendor::I915 if ioc_type(cmd) == u32::from(b'd') => i915(cmd),
        gpu_vendor::XE if ioc_type(cmd) == u32::from(b'd') => xe(cmd),
        _ if ioc_type(cmd) == u32::from(b'd') => {
            drm_core(cmd).unwrap_or_else(|| op(format!("DRM {cmd:#x}"), OpClass::Other))
        }
        _ => op(format!("ioctl {cmd:#x}"), OpClass::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, type, nr, size)` as include/uapi/asm-generic/ioctl.h builds it.
    const fn ioc(dir: u32, ty: u8, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | ((ty as u32) << 8) | nr
    }
    const RW: u32 = 3;
    const W: u32 = 1;
    const R: u32 = 2;

    #[test]
    fn nvidia_escapes_match_the_header_encoding() {
        // Full commands from the reference table, rebuilt from nr and size.
        assert_eq!(ioc(RW, b'F', 0x2a, 32), 0xc020462a);
        assert_eq!(ioc(RW, b'F', 0x2b, 32), 0xc020462b);
        assert_eq!(ioc(RW, b'F', 0x2b, 48), 0xc030462b);
        assert_eq!(ioc(RW, b'F', 0xc8, 72), 0xc04846c8);
        assert_eq!(ioc(RW, b'F', 0xd3, 16), 0xc01046d3);
        assert_eq!(decode(gpu_vendor::NVIDIA, 0xc020462a, 0x20800102).name, "RM_CONTROL GPU_GET_INFO_V2");
        assert_eq!(decode(gpu_vendor::NVIDIA, 0xc00446c9, 0).name, "REGISTER_FD");
        assert_eq!(decode(gpu_vendor::NVIDIA, 0xc0104629, 0).class, OpClass::MemoryFree);
    }

    #[test]
    fn rm_alloc_both_argument_sizes_decode_the_class() {
        for cmd in [0xc020462b, 0xc030462b] {
            let o = decode(gpu_vendor::NVIDIA, cmd, 0xcbc0);
            assert_eq!(o, Op { name: "RM_ALLOC HOPPER_COMPUTE_A".into(), class: OpClass::ComputeContext });
            assert_eq!(decode(gpu_vendor::NVIDIA, cmd, 0x41).name, "RM_ALLOC NV01_ROOT_CLIENT");
            assert_eq!(decode(gpu_vendor::NVIDIA, cmd, 0x40).class, OpClass::MemoryAlloc);
        }
        // Unknown compute class still recognised by its family byte.
        assert_eq!(decode(gpu_vendor::NVIDIA, 0xc030462b, 0xd1c0).class, OpClass::ComputeContext);
        assert_eq!(decode(gpu_vendor::NVIDIA, 0xc030462b, 0x1234).name, "RM_ALLOC class 0x1234");
    }

    #[test]
    fn uvm_raw_numbers() {
        assert_eq!(decode(gpu_vendor::NVIDIA_UVM, 0x3000_0001, 0).name, "UVM_INITIALIZE");
        assert_eq!(decode(gpu_vendor::NVIDIA_UVM, 75, 0).name, "UVM_MM_INITIALIZE");
        assert_eq!(decode(gpu_vendor::NVIDIA_UVM, 51, 0).class, OpClass::Submission);
        assert_eq!(decode(gpu_vendor::NVIDIA_UVM, 205, 0).name, "UVM_TEST 5");
        assert_eq!(decode(gpu_vendor::NVIDIA_UVM, 0x9999, 0).name, "UVM 0x9999");
    }

    #[test]
    fn kfd_commands_match_the_header() {
        assert_eq!(ioc(RW, b'K', 0x02, 88), 0xc0584b02);
        assert_eq!(ioc(RW, b'K', 0x16, 40), 0xc0284b16);
        assert_eq!(ioc(RW, b'K', 0x0c, 24), 0xc0184b0c);
        assert_eq!(ioc(R, b'K', 0x01, 8), 0x80084b01);
        assert_eq!(decode(gpu_vendor::AMD_KFD, 0xc0584b02, 2).name, "CREATE_QUEUE COMPUTE_AQL");
        assert_eq!(decode(gpu_vendor::AMD_KFD, 0xc0284b16, 1).name, "ALLOC_MEMORY_OF_GPU VRAM");
        assert_eq!(decode(gpu_vendor::AMD_KFD, 0xc0184b0c, 0).class, OpClass::Wait);
        assert_eq!(decode(gpu_vendor::AMD_KFD, 0xc0084b7f, 0).name, "KFD 0x7f");
    }

    #[test]
    fn drm_drivers_share_nr_space_and_are_told_apart_by_driver() {
        assert_eq!(ioc(RW, b'd', 0x44, 24), 0xc0186444);
        assert_eq!(ioc(W, b'd', 0x69, 64), 0x40406469);
        assert_eq!(ioc(W, b'd', 0x49, 56), 0x40386449);
        assert_eq!(decode(gpu_vendor::AMDGPU, 0xc0186444, 0).name, "AMDGPU_CS");
        assert_eq!(decode(gpu_vendor::I915, 0x40406469, 0).class, OpClass::Submission);
        assert_eq!(decode(gpu_vendor::XE, 0x40386449, 0).name, "XE_EXEC");
        // The same nr means different things per driver.
        assert_eq!(decode(gpu_vendor::XE, 0xc0206449, 0).name, "XE_EXEC");
        assert_eq!(decode(gpu_vendor::AMDGPU, 0xc0206449, 0).name, "AMDGPU_WAIT_CS");
        assert_eq!(decode(gpu_vendor::AMDGPU, 0xc02864c3, 0).name, "SYNCOBJ_WAIT");
        assert_eq!(decode(gpu_vendor::OTHER, 0x1234, 0).name, "ioctl 0x1234");
    }
}
