//! Which device numbers are GPUs: NVIDIA's fixed major 195, the dynamic
//! majors of nvidia-uvm, nvidia-caps and kfd from /proc/devices, DRM nodes
//! (major 226) with their driver from sysfs, and what the operator adds with
//! `--gpu-device`.

use std::{collections::HashMap, fs, os::unix::fs::FileTypeExt as _};

use anyhow::{Context as _, Result, anyhow, bail};
use tracer_common::{ANY_MINOR, gpu_vendor, kernel_dev};

/// kernel-open/common/inc/nv-chardev-numbers.h
pub const NVIDIA_MAJOR: u32 = 195;
/// include/uapi/drm/drm.h via libdrm: DRM_MAJOR
pub const DRM_MAJOR: u32 = 226;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    pub major: u32,
    /// None: every minor of the major.
    pub minor: Option<u32>,
    pub vendor: u32,
    /// Driver as the kernel names it (nvidia, nvidia-uvm, kfd, amdgpu, …).
    pub driver: String,
}

impl GpuDevice {
    /// The `GPU_DEVICES` key.
    pub fn key(&self) -> u32 {
        kernel_dev(self.major, self.minor.unwrap_or(ANY_MINOR))
    }
}

pub fn vendor_name(vendor: u32) -> &'static str {
    match vendor {
        gpu_vendor::NVIDIA => "nvidia",
        gpu_vendor::NVIDIA_UVM => "nvidia-uvm",
        gpu_vendor::AMD_KFD => "amd-kfd",
        gpu_vendor::AMDGPU => "amdgpu",
        gpu_vendor::I915 => "i915",
        gpu_vendor::XE => "xe",
        _ => "other",
    }
}

fn vendor_of_name(name: &str) -> Option<u32> {
    Some(match name {
        "nvidia" => gpu_vendor::NVIDIA,
        "nvidia-uvm" => gpu_vendor::NVIDIA_UVM,
        "amd-kfd" | "kfd" => gpu_vendor::AMD_KFD,
        "amdgpu" => gpu_vendor::AMDGPU,
        "i915" => gpu_vendor::I915,
        "xe" => gpu_vendor::XE,
        "other" => gpu_vendor::OTHER,
        _ => return None,
    })
}

/// Parses the character-device section of /proc/devices.
pub fn parse_proc_devices(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut in_char = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Character devices") {
            in_char = true;
        } else if line.starts_with("Block devices") {
            in_char = false;
        } else if in_char
            && let Some((major, name)) = line.split_once(char::is_whitespace)
            && let Ok(major) = major.parse()
        {
            out.push((major, name.trim().to_string()));
        }
    }
    out
}

/// Devices found from /proc/devices (given as text) and the DRM nodes.
pub fn discover_from(proc_devices: &str, drm: &[(u32, u32, String)]) -> Vec<GpuDevice> {
    let mut out = Vec::new();
    for (major, name) in parse_proc_devices(proc_devices) {
        let vendor = match name.as_str() {
            "nvidia-uvm" => gpu_vendor::NVIDIA_UVM,
            "kfd" => gpu_vendor::AMD_KFD,
            "nvidia-caps" | "nvidia-caps-imex-channels" | "nvidia-nvswitch" | "nvidia-nvlink" => {
                gpu_vendor::OTHER
            }
            n if major == NVIDIA_MAJOR || n == "nvidia" || n == "nvidia-frontend" => gpu_vendor::NVIDIA,
            _ => continue,
        };
        out.push(GpuDevice { major, minor: None, vendor, driver: name });
    }
    if !out.iter().any(|d| d.major == NVIDIA_MAJOR) && proc_devices.contains("nvidia") {
        out.push(GpuDevice {
            major: NVIDIA_MAJOR,
            minor: None,
            vendor: gpu_vendor::NVIDIA,
            driver: "nvidia".into(),
        });
    }
    for (major, minor, driver) in drm {
        let vendor = vendor_of_name(driver).unwrap_or(gpu_vendor::OTHER);
        out.push(GpuDevice { major: *major, minor: Some(*minor), vendor, driver: driver.clone() });
    }
    out
}

/// DRM nodes under /sys/class/drm: (major, minor, driver).
fn drm_nodes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = fs::read_dir("/sys/class/drm") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let dev = fs::read_to_string(e.path().join("dev")).ok()?;
            let (major, minor) = dev.trim().split_once(':')?;
            let driver = fs::read_link(e.path().join("device/driver")).ok()?;
            Some((
                major.parse().ok()?,
                minor.parse().ok()?,
                driver.file_name()?.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

pub fn discover() -> Vec<GpuDevice> {
    let proc_devices = fs::read_to_string("/proc/devices").unwrap_or_default();
    discover_from(&proc_devices, &drm_nodes())
}

/// `--gpu-device` values: `MAJOR[:MINOR]=VENDOR` or `/path/to/node=VENDOR`,
/// VENDOR one of nvidia, nvidia-uvm, amd-kfd, amdgpu, i915, xe, other.
pub fn parse_spec(spec: &str) -> Result<GpuDevice> {
    let (target, vendor) = spec
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--gpu-device {spec}: expected MAJOR[:MINOR]=VENDOR or PATH=VENDOR"))?;
    let vendor = vendor_of_name(vendor).ok_or_else(|| {
        anyhow!("--gpu-device {spec}: unknown vendor {vendor} (nvidia, nvidia-uvm, amd-kfd, amdgpu, i915, xe, other)")
    })?;
    let (major, minor) = if target.starts_with('/') {
        let meta = fs::metadata(target).with_context(|| format!("--gpu-device {spec}"))?;
        if !meta.file_type().is_char_device() {
            bail!("--gpu-device {spec}: {target} is not a character device");
        }
        let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
        (libc::major(rdev), Some(libc::minor(rdev)))
    } else {
        let (major, minor) = match target.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (target, None),
        };
        let major = major.parse().with_context(|| format!("--gpu-device {spec}: bad major"))?;
        let minor =
            minor.map(str::parse).transpose().with_context(|| format!("--gpu-device {spec}: bad minor"))?;
        (major, minor)
    };
    Ok(GpuDevice { major, minor, vendor, driver: vendor_name(vendor).to_string() })
}

/// Device numbers to the /dev paths that name them, for records.
pub fn device_paths() -> HashMap<(u32, u32), String> {
    let mut out = HashMap::new();
    for dir in ["/dev", "/dev/dri"] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for e in entries.filter_map(Result::ok) {
            let Ok(meta) = e.metadata() else { continue };
            if meta.file_type().is_char_device() {
                let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
                out.entry((libc::major(rdev), libc::minor(rdev)))
                    .or_insert_with(|| e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_DEVICES: &str = "Character devices:\n  1 mem\n  4 /dev/vc/0\n195 nvidia-frontend\n226 drm\n\
        237 nvidia-uvm\n238 nvidia-caps\n240 kfd\n\nBlock devices:\n  7 loop\n237 not-a-char\n";

    #[test]
    fn dynamic_majors_come_from_proc_devices() {
        let found =
            discover_from(PROC_DEVICES, &[(226, 128, "amdgpu".into()), (226, 0, "virtio_gpu".into())]);
        let by = |major, minor| found.iter().find(|d| d.major == major && d.minor == minor).map(|d| d.vendor);
        assert_eq!(by(195, None), Some(gpu_vendor::NVIDIA));
        assert_eq!(by(237, None), Some(gpu_vendor::NVIDIA_UVM));
        assert_eq!(by(238, None), Some(gpu_vendor::OTHER));
        assert_eq!(by(240, None), Some(gpu_vendor::AMD_KFD));
        assert_eq!(by(226, Some(128)), Some(gpu_vendor::AMDGPU));
        assert_eq!(by(226, Some(0)), Some(gpu_vendor::OTHER));
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(discover_from("Character devices:\n  1 mem\n", &[]).is_empty());
    }

    #[test]
    fn specs() {
        let d = parse_spec("195:255=nvidia").unwrap();
        assert_eq!((d.major, d.minor, d.vendor), (195, Some(255), gpu_vendor::NVIDIA));
        assert_eq!(d.key(), (195 << 20) | 255);
        let d = parse_spec("240=amd-kfd").unwrap();
        assert_eq!(d.key(), (240 << 20) | ANY_MINOR);
        let d = parse_spec("/dev/null=other").unwrap();
        assert_eq!((d.major, d.minor), (1, Some(3)));
        assert!(parse_spec("/etc/passwd=nvidia").is_err());
        assert!(parse_spec("195=cuda").is_err());
        assert!(parse_spec("x:1=nvidia").is_err());
        assert!(parse_spec("195").is_err());
    }
}
