//! Kernel struct offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). Rust BPF programs carry no CO-RE relocations,
//! so the few fields the programs read are located here and handed to them
//! as globals. A field that cannot be found disables the enrichment that
//! needs it and is reported; it never stops the tracer.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, BtfType as _, Type};
use tracer_common::{KernelOffsets, NO_OFFSET};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets resolved, plus the fields that were not found and why.
pub struct ResolvedOffsets {
    pub offsets: KernelOffsets,
    pub missing: Vec<String>,
}

pub fn resolve(path: &Path) -> Result<ResolvedOffsets> {
    let btf = Btf::from_file(path).with_context(|| format!("reading BTF from {}", path.display()))?;
    let mut missing = Vec::new();
    let mut field = |ty: &str, path: &str| match byte_offset(&btf, ty, path) {
        Ok(off) => off,
        Err(e) => {
            missing.push(format!("{ty}.{path}: {e:#}"));
            NO_OFFSET
        }
    };
    let offsets = KernelOffsets {
        task_pid: field("task_struct", "pid"),
        task_tgid: field("task_struct", "tgid"),
        task_real_parent: field("task_struct", "real_parent"),
        task_group_leader: field("task_struct", "group_leader"),
        task_start_boottime: field("task_struct", "start_boottime"),
        task_mm: field("task_struct", "mm"),
        task_exit_code: field("task_struct", "exit_code"),
        mm_arg_start: field("mm_struct", "arg_start"),
        mm_arg_end: field("mm_struct", "arg_end"),
        task_files: field("task_struct", "files"),
        files_fdt: field("files_struct", "fdt"),
        fdtable_max_fds: field("fdtable", "max_fds"),
        fdtable_fd: field("fdtable", "fd"),
        file_inode: field("file", "f_inode"),
        file_private_data: field("file", "private_data"),
        inode_mode: field("inode", "i_mode"),
        socket_sk: field("socket", "sk"),
        sock_type: field("sock", "sk_type"),
        sock_protocol: field("sock", "sk_protocol"),
        inode_rdev: field("inode", "i_rdev"),
        sk_family: field("sock", "__sk_common.skc_family"),
        sk_dport: field("sock", "__sk_common.skc_dport"),
        sk_daddr: field("sock", "__sk_common.skc_daddr"),
        sk_v6_daddr: field("sock", "__sk_common.skc_v6_daddr"),
        task_sum_exec_runtime: field("task_struct", "se.sum_exec_runtime"),
        task_start_time: field("task_struct", "start_time"),
        fpu_fpstate: NO_OFFSET,
        fpu_mxcsr: NO_OFFSET,
        sk_err: field("sock", "sk_err"),
        task_signal: field("task_struct", "signal"),
        signal_pids: field("signal_struct", "pids"),
        pid_numbers: field("pid", "numbers"),
        task_flags: field("task_struct", "flags"),
        inode_dentries: field("inode", "i_dentry"),
        dentry_alias: field("dentry", "d_u"),
        dentry_name: field("dentry", "d_name"),
        mapping_host: field("address_space", "host"),
        inode_size: field("inode", "i_size"),
        dentry_parent: field("dentry", "d_parent"),
        inode_ino: field("inode", "i_ino"),
        inode_sb: field("inode", "i_sb"),
        sb_dev: field("super_block", "s_dev"),
        task_prev_sum_exec_runtime: field("task_struct", "se.prev_sum_exec_runtime"),
        task_policy: field("task_struct", "policy"),
    };
    let mut offsets = offsets;
    // The FPU layout changed in 5.16 (struct fpstate behind a pointer).
    match (byte_offset(&btf, "fpu", "fpstate"), byte_offset(&btf, "fpstate", "regs.xsave.i387.mxcsr")) {
        (Ok(ptr), Ok(mxcsr)) => (offsets.fpu_fpstate, offsets.fpu_mxcsr) = (ptr, mxcsr),
        (new_ptr, _) => match byte_offset(&btf, "fpu", "state.xsave.i387.mxcsr") {
            Ok(mxcsr) => offsets.fpu_mxcsr = mxcsr,
            Err(old) => missing.push(format!(
                "fpu.fpstate / fpstate.regs.xsave.i387.mxcsr ({}) nor fpu.state.xsave.i387.mxcsr: {old:#}",
                new_ptr.err().map_or("found".into(), |e| format!("{e:#}"))
            )),
        },
    }
    Ok(ResolvedOffsets { offsets, missing })
}

/// Byte offset of `field` (dotted path allowed) in `struct ty`, looking
/// through anonymous structs and unions as C does.
pub fn byte_offset(btf: &Btf, ty: &str, field: &str) -> Result<u32> {
    let root = btf
        .resolve_types_by_name(ty)
        .with_context(|| format!("no type named {ty}"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(|| anyhow!("no struct {ty} with members"))?;
    let mut current = root;
    let mut total_bits = 0u32;
    for part in field.split('.') {
        let (bits, ty) = find_member(btf, &current, part)?.ok_or_else(|| anyhow!("no member {part}"))?;
        total_bits += bits;
        current = ty;
    }
    if !total_bits.is_multiple_of(8) {
        bail!("{field} is a bitfield");
    }
    Ok(total_bits / 8)
}

/// Finds a member by name in a struct/union, descending into anonymous
/// members. Returns its bit offset and its (typedef-resolved) type.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        other => bail!("{} is not a struct or union", other.name()),
    };
    for member in members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_ty = strip_modifiers(btf, btf.resolve_type_by_id(member.get_type_id()?)?)?;
        if member_name == name {
            if member.bitfield_size().is_some_and(|bits| bits != 0) {
                bail!("{name} is a bitfield");
            }
            return Ok(Some((member.bit_offset(), member_ty)));
        }
        if member_name.is_empty()
            && matches!(member_ty, Type::Struct(_) | Type::Union(_))
            && let Some((inner, t)) = find_member(btf, &member_ty, name)?
        {
            return Ok(Some((member.bit_offset() + inner, t)));
        }
    }
    Ok(None)
}

fn strip_modifiers(btf: &Btf, mut ty: Type) -> Result<Type> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) => btf.resolve_chained_type(t)?,
            Type::Volatile(t) => btf.resolve_chained_type(t)?,
            Type::Restrict(t) => btf.resolve_chained_type(t)?,
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the host's BTF where it exists; the offsets the programs
    /// need must all resolve on the kernels we support.
    #[test]
    fn resolves_every_field_on_this_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            crate::testing::skip(
                "kernel::btf::resolves_every_field_on_this_kernel",
                &format!("no {VMLINUX_BTF}"),
            );
            return;
        }
        let resolved = resolve(path).unwrap();
        assert!(resolved.missing.is_empty(), "{:?}", resolved.missing);
        let o = resolved.offsets;
        // mm_struct keeps arg_start/arg_end inside an anonymous struct.
        assert!(o.mm_arg_end == o.mm_arg_start + 8, "{o:?}");
        assert_ne!(o.task_pid, o.task_tgid);
        // fxregs_state: cwd, swd, twd, fop (2 each), rip, rdp (8 each), then mxcsr.
        assert_eq!(o.fpu_mxcsr % 64, 24, "{o:?}");
    }
}
