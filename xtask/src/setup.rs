//! Installs the toolchain that builds the kernel programs, once:
//! - the nightly toolchain's `rust-src` (for `-Z build-std=core`);
//! - Debian's `llvm-22-dev` where apt exists;
//! - `bpf-linker` built against it (feature `llvm-22`), or bpf-linker's
//!   default build where LLVM 22 is not packaged;
//! - for `fuzz` only: `cargo-fuzz`.
//!
//! Every step checks first, so a second run takes seconds.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
pub const NIGHTLY: &str = "nightly";

pub fn ensure_toolchain() -> Result<()> {
    let start = Instant::now();
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    eprintln!("xtask: toolchain ready ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn ensure_rust_src() -> Result<()> {
    let toolchains =
        output("rustup", &["toolchain", "list"]).context("rustup is required (https://rustup.rs)")?;
    if !toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("xtask: installing the {NIGHTLY} toolchain with rust-src");
        return run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    let installed =
        output("rustup", &["component", "list", "--toolchain", NIGHTLY, "--installed"]).unwrap_or_default();
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to {NIGHTLY}");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_version() -> Option<String> {
    let candidates = [PathBuf::from("bpf-linker"), cargo_bin_dir().join("bpf-linker")];
    candidates.iter().find_map(|c| output(c.to_str()?, &["--version"]))
}

fn ensure_bpf_linker() -> Result<()> {
    if let Some(v) = bpf_linker_version()
        && v.contains(BPF_LINKER_VERSION)
    {
        return ensure_on_path();
    }
    let llvm_prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let have_llvm = ensure_llvm_dev()?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--force"]);
    if have_llvm {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (one time, a few minutes)"
        );
        cmd.args(["--no-default-features", "--features", &format!("llvm-{LLVM_MAJOR}")]);
        cmd.env("LLVM_PREFIX", &llvm_prefix);
    } else {
        eprintln!(
            "xtask: LLVM {LLVM_MAJOR} is not packaged here; installing bpf-linker {BPF_LINKER_VERSION} with its \
             default features (needs the LLVM it defaults to)"
        );
    }
    // Built with the host's stable toolchain, whatever the directory pins.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    run(&mut cmd)?;
    ensure_on_path()
}

/// Installs cargo-fuzz (the libFuzzer driver the fuzz task runs) unless
/// `cargo fuzz` already answers.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let bin = cargo_bin_dir().join("cargo-fuzz");
    let installed = [PathBuf::from("cargo-fuzz"), bin]
        .iter()
        .any(|c| c.to_str().and_then(|c| output(c, &["fuzz", "--version"])).is_some());
    if installed {
        return ensure_on_path();
    }
    eprintln!("xtask: installing cargo-fuzz (one time, a minute or two)");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    // Built with the host's stable toolchain, whatever the directory pins.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    run(&mut cmd)?;
    ensure_on_path()
}

/// Installs Debian's llvm-22-dev if apt can. Returns whether LLVM 22's
/// development files (llvm-config and libLLVM.so) are there.
fn ensure_llvm_dev() -> Result<bool> {
    let prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let have = || {
        ["bin/llvm-config", "lib/libLLVM.so"].iter().all(|f| std::path::Path::new(&prefix).join(f).exists())
    };
    if have() {
        return Ok(true);
    }
    if output("apt-get", &["--version"]).is_none() {
        return Ok(false);
    }
    let packages = [
        format!("llvm-{LLVM_MAJOR}-dev"),
        format!("libpolly-{LLVM_MAJOR}-dev"),
        "libzstd-dev".to_string(),
        "zlib1g-dev".to_string(),
    ];
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    let candidate = output("apt-cache", &["policy", &packages[0]]).unwrap_or_default();
    if candidate.contains("Candidate: (none)") || !candidate.contains("Candidate:") {
        return Ok(false);
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(have())
}

/// aya-build invokes `bpf-linker` through PATH; make sure cargo's bin
/// directory is on it for this process and its children.
fn ensure_on_path() -> Result<()> {
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let mut paths: Vec<_> = std::env::split_paths(&path).collect();
        paths.push(bin);
        // SAFETY: single-threaded at this point; children inherit it.
        unsafe { std::env::set_var("PATH", std::env::join_paths(paths)?) };
    }
    Ok(())
}

/// Installs Debian packages that are missing (what the tests, the benchmark
/// and the evaluation run against).
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        // Installed, not merely known: a removed package whose configuration
        // files stay is known to `dpkg -s` too ("deinstall ok config-files").
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.stdout == b"install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {} with apt-get", missing.join(" "));
    let ok = Command::new("apt-get").args(["update", "-q"]).status()?.success()
        && Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("could not install {}", missing.join(" "));
    }
    Ok(())
}
