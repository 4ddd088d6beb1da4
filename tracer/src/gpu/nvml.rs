//! Optional per-process GPU utilisation and memory from NVIDIA's management
//! library, loaded at run time where the driver installed it
//! (libnvidia-ml.so.1). Absent library: `Nvml::open` returns `Ok(None)` and
//! the tracer carries on with ioctl figures alone.
//!
//! Signatures and structs from NVIDIA's public `nvml.h`:
//! - `nvmlProcessUtilizationSample_t { unsigned int pid; unsigned long long
//!   timeStamp; unsigned int smUtil, memUtil, encUtil, decUtil; }`
//! - `nvmlProcessInfo_t` (v2/v3) `{ unsigned int pid; unsigned long long
//!   usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId; }`

use std::{collections::HashMap, ffi::c_void};

use anyhow::{Result, anyhow};
use serde::Serialize;

type Device = *mut c_void;
const NVML_SUCCESS: i32 = 0;
const NVML_ERROR_INSUFFICIENT_SIZE: i32 = 7;
const NVML_ERROR_NOT_FOUND: i32 = 6;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UtilSample {
    pid: u32,
    time_stamp: u64,
    sm_util: u32,
    mem_util: u32,
    enc_util: u32,
    dec_util: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProcessInfo {
    pid: u32,
    used_gpu_memory: u64,
    gpu_instance_id: u32,
    compute_instance_id: u32,
}

/// What NVML says about one process, summed over the GPUs it uses.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NvmlSample {
    /// Percent of SM time over the sampling period, per GPU, summed.
    pub sm_util_pct: u32,
    pub mem_util_pct: u32,
    pub enc_util_pct: u32,
    pub dec_util_pct: u32,
    pub used_memory_bytes: u64,
    pub gpus: u32,
}

pub struct Nvml {
    _lib: libloading::Library,
    devices: Vec<Device>,
    get_util: unsafe extern "C" fn(Device, *mut UtilSample, *mut u32, u64) -> i32,
    get_procs: unsafe extern "C" fn(Device, *mut u32, *mut ProcessInfo) -> i32,
    last_seen_us: u64,
}

// SAFETY: NVML handles are process-wide and NVML is thread-safe (nvml.h).
unsafe impl Send for Nvml {}

impl Nvml {
    /// Loads and initialises NVML, or `Ok(None)` when the library is absent.
    pub fn open() -> Result<Option<Self>> {
        // SAFETY: loading NVIDIA's library runs its initialisers only.
        let lib = match unsafe { libloading::Library::new("libnvidia-ml.so.1") } {
            Ok(lib) => lib,
            Err(_) => return Ok(None),
        };
        // SAFETY: symbol types as declared in nvml.h.
        unsafe {
            let init: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib.get(b"nvmlInit_v2\0")?;
            let rc = init();
            if rc != NVML_SUCCESS {
                return Err(anyhow!("nvmlInit_v2 returned {rc}"));
            }
            let count_fn: libloading::Symbol<unsafe extern "C" fn(*mut u32) -> i32> =
                lib.get(b"nvmlDeviceGetCount_v2\0")?;
            let by_index: libloading::Symbol<unsafe extern "C" fn(u32, *mut Device) -> i32> =
                lib.get(b"nvmlDeviceGetHandleByIndex_v2\0")?;
            let mut count = 0u32;
            if count_fn(&mut count) != NVML_SUCCESS {
                return Err(anyhow!("nvmlDeviceGetCount_v2 failed"));
            }
            let mut devices = Vec::new();
            for i in 0..count {
                let mut d: Device = std::ptr::null_mut();
                if by_index(i, &mut d) == NVML_SUCCESS {
                    devices.push(d);
                }
            }
            let get_util = *lib.get(b"nvmlDeviceGetProcessUtilization\0")?;
            let get_procs = *lib.get(b"nvmlDeviceGetComputeRunningProcesses_v3\0")?;
            Ok(Some(Self { _lib: lib, devices, get_util, get_procs, last_seen_us: 0 }))
        }
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Utilisation since the last call and memory now, per pid.
    pub fn sample(&mut self) -> HashMap<u32, NvmlSample> {
        let mut out: HashMap<u32, NvmlSample> = HashMap::new();
        let mut newest = self.last_seen_us;
        for &dev in &self.devices {
            // SAFETY: buffers sized by the count NVML reports; NVML writes at
            // most `n` entries and updates `n`.
            unsafe {
                let mut n = 0u32;
                let rc = (self.get_util)(dev, std::ptr::null_mut(), &mut n, self.last_seen_us);
                if rc == NVML_ERROR_INSUFFICIENT_SIZE || (rc == NVML_SUCCESS && n > 0) {
                    let mut buf = vec![UtilSample::default(); n as usize];
                    if (self.get_util)(dev, buf.as_mut_ptr(), &mut n, self.last_seen_us) == NVML_SUCCESS {
                        for s in buf.iter().take(n as usize) {
                            let e = out.entry(s.pid).or_default();
                            e.sm_util_pct += s.sm_util;
                            e.mem_util_pct += s.mem_util;
                            e.enc_util_pct += s.enc_util;
                            e.dec_util_pct += s.dec_util;
                            newest = newest.max(s.time_stamp);
                        }
                    }
                } else if rc != NVML_ERROR_NOT_FOUND && rc != NVML_SUCCESS {
                    continue;
                }
                let mut n = 0u32;
                let rc = (self.get_procs)(dev, &mut n, std::ptr::null_mut());
                if rc == NVML_ERROR_INSUFFICIENT_SIZE || (rc == NVML_SUCCESS && n > 0) {
                    // Processes may appear between the two calls: leave room.
                    n += 8;
                    let mut buf = vec![ProcessInfo::default(); n as usize];
                    if (self.get_procs)(dev, &mut n, buf.as_mut_ptr()) == NVML_SUCCESS {
                        for p in buf.iter().take(n as usize) {
                            let e = out.entry(p.pid).or_default();
                            // NVML_VALUE_NOT_AVAILABLE is all ones.
                            if p.used_gpu_memory != u64::MAX {
                                e.used_memory_bytes += p.used_gpu_memory;
                            }
                            e.gpus += 1;
                        }
                    }
                }
            }
        }
        self.last_seen_us = newest;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_nvml_h() {
        assert_eq!(size_of::<UtilSample>(), 32);
        assert_eq!(std::mem::offset_of!(UtilSample, time_stamp), 8);
        assert_eq!(std::mem::offset_of!(UtilSample, dec_util), 28);
        assert_eq!(size_of::<ProcessInfo>(), 24);
        assert_eq!(std::mem::offset_of!(ProcessInfo, used_gpu_memory), 8);
    }

    /// Hosts without NVIDIA's driver: no library, no error.
    #[test]
    fn absent_library_is_not_an_error() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            crate::testing::skip(
                "gpu::nvml::absent_library_is_not_an_error",
                "an NVIDIA driver is loaded here; see loads_where_the_driver_is",
            );
            return;
        }
        assert!(Nvml::open().unwrap().is_none());
    }

    /// Hosts with NVIDIA's driver: the library loads and sees the GPUs.
    #[test]
    fn loads_where_the_driver_is() {
        if !std::path::Path::new("/dev/nvidiactl").exists() {
            crate::testing::skip("gpu::nvml::loads_where_the_driver_is", "no NVIDIA driver on this host");
            return;
        }
        let nvml = Nvml::open().unwrap().expect("/dev/nvidiactl exists but libnvidia-ml.so.1 did not load");
        assert!(nvml.device_count() > 0);
    }
}
