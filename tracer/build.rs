//! Builds the kernel programs (tracer-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker; the object is embedded in the binary.
//! Without the `ebpf` feature (the fuzz targets) there is nothing to build.
//! The rules' data files are embedded encoded (src/embedded.rs).
use anyhow::{Context as _, anyhow};

/// The data files the binary embeds, XOR-encoded (src/embedded.rs).
fn encode_data_files() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for name in ["default.toml", "miner-strings.txt"] {
        let path = format!("../rules/{name}");
        println!("cargo:rerun-if-changed={path}");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        let encoded: Vec<u8> = bytes.iter().map(|b| b ^ 0xa5).collect();
        std::fs::write(out.join(format!("{name}.x")), encoded)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    encode_data_files()?;
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("package tracer-ebpf not found in the workspace"))?;
    let root =
        package.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: root.as_str(), ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
