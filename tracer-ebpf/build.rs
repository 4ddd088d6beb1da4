fn main() -> anyhow::Result<()> {
    // Rebuild when bpf-linker changes (a new LLVM may emit different code).
    if let Some(path) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("bpf-linker")).find(|p| p.exists()))
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    aya_build::emit_bpf_target_arch_cfg()
}
