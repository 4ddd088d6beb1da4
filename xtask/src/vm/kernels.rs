//! Debian's own kernels, fetched as packages with a private apt state (the
//! host's sources are left alone) and cached: only `vmlinuz` is kept. The
//! newest build of each series the archive has is used, and named in the
//! report.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::stdout_of;

/// A kernel series of the matrix: Debian release, and the package name's
/// shape (`{}` is where the ABI number goes).
pub struct Series {
    pub name: &'static str,
    pub suite: &'static str,
    prefix: &'static str,
    suffix: &'static str,
}

pub const SERIES: [Series; 3] = [
    Series { name: "5.10", suite: "bullseye", prefix: "linux-image-5.10.0-", suffix: "-amd64-unsigned" },
    Series { name: "6.1", suite: "bookworm", prefix: "linux-image-6.1.0-", suffix: "-amd64-unsigned" },
    Series { name: "6.12", suite: "trixie", prefix: "linux-image-6.12.", suffix: "+deb13-amd64-unsigned" },
];

pub fn series(name: &str) -> Result<&'static Series> {
    SERIES.iter().find(|s| s.name == name).with_context(|| {
        let known: Vec<_> = SERIES.iter().map(|s| s.name).collect();
        format!("unknown kernel {name}: one of {}, or all", known.join(", "))
    })
}

/// A fetched kernel: its release (as `uname -r` prints it) and image.
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
}

pub struct Fetcher {
    dir: PathBuf,
    updated: bool,
}

impl Fetcher {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), updated: false }
    }

    fn apt_options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State={d}/state"),
            format!("-oDir::Cache={d}/cache"),
            "-oAPT::Sandbox::User=root".into(),
            "-qq".into(),
        ]
    }

    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        std::fs::create_dir_all(self.dir.join("state/lists/partial"))?;
        std::fs::create_dir_all(self.dir.join("cache/archives/partial"))?;
        let sources: String = SERIES
            .iter()
            .map(|s| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {} main\n",
                    s.suite
                )
            })
            .collect();
        std::fs::write(self.dir.join("sources.list"), sources)?;
        stdout_of(Command::new("apt-get").args(self.apt_options()).arg("update"))?;
        self.updated = true;
        Ok(())
    }

    /// The newest kernel of the series, downloaded unless cached.
    pub fn fetch(&mut self, series: &Series) -> Result<Kernel> {
        let pin = self.dir.join(format!("{}.release", series.name));
        if let Ok(release) = std::fs::read_to_string(&pin) {
            let release = release.trim().to_string();
            let vmlinuz = self.dir.join(format!("vmlinuz-{release}"));
            if vmlinuz.exists() {
                return Ok(Kernel { release, vmlinuz });
            }
        }
        self.update()?;
        let out =
            stdout_of(Command::new("apt-cache").args(self.apt_options()).args(["pkgnames", series.prefix]))?;
        let package = out
            .lines()
            .filter(|p| p.ends_with(series.suffix))
            .filter_map(|p| {
                let abi = &p[series.prefix.len()..p.len() - series.suffix.len()];
                abi.split('.').map(|n| n.parse::<u32>().ok()).collect::<Option<Vec<_>>>().map(|n| (n, p))
            })
            .max()
            .map(|(_, p)| p.to_string())
            .with_context(|| format!("no {}*{} in Debian {}", series.prefix, series.suffix, series.suite))?;
        let release = package["linux-image-".len()..package.len() - "-unsigned".len()].to_string();
        let debs = self.dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        stdout_of(
            Command::new("apt-get").args(self.apt_options()).args(["download", &package]).current_dir(&debs),
        )?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let unpacked = self.dir.join(format!("unpack-{release}"));
        std::fs::create_dir_all(&unpacked)?;
        stdout_of(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        let vmlinuz = self.dir.join(format!("vmlinuz-{release}"));
        std::fs::copy(unpacked.join(format!("boot/vmlinuz-{release}")), &vmlinuz)
            .with_context(|| format!("no boot/vmlinuz-{release} in {}", deb.display()))?;
        // Only the image is kept: the modules are not needed (loopback,
        // the serial console, tracefs and BTF are built in).
        std::fs::remove_dir_all(&unpacked)?;
        std::fs::remove_file(&deb)?;
        std::fs::write(&pin, &release)?;
        Ok(Kernel { release, vmlinuz })
    }
}
