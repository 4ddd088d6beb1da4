//! From a file descriptor of the current task to its `struct file`, and from
//! a socket file to its `struct sock`. Offsets come from BTF (see
//! tracer_common::KernelOffsets); any that is unknown makes these return None.

use crate::common::{config, current_task, read_field};

/// S_IFMT / S_IFSOCK, include/uapi/linux/stat.h.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// `task->files->fdt->fd[fd]` (include/linux/fdtable.h), bounds-checked
/// against `fdt->max_fds`.
#[inline(always)]
pub fn file_of_fd(fd: u64) -> Option<u64> {
    let k = &config().kernel;
    let files: u64 = read_field(current_task(), k.task_files)?;
    let fdt: u64 = read_field(files, k.files_fdt)?;
    let max_fds: u32 = read_field(fdt, k.fdtable_max_fds)?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fds: u64 = read_field(fdt, k.fdtable_fd)?;
    let file: u64 = read_field(fds, (fd * 8) as u32)?;
    (file != 0).then_some(file)
}

/// The `struct sock` behind `fd`, if it is a socket.
#[inline(always)]
pub fn sock_of_fd(fd: u64) -> Option<u64> {
    let k = &config().kernel;
    let file = file_of_fd(fd)?;
    let inode: u64 = read_field(file, k.file_inode)?;
    let mode: u16 = read_field(inode, k.inode_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    // net/socket.c: sock_alloc_file stores the struct socket in private_data.
    let socket: u64 = read_field(file, k.file_private_data)?;
    read_field(socket, k.socket_sk)
}

/// `(sk_type, sk_protocol)` of the socket behind `fd`, if it is one.
#[inline(always)]
pub fn socket_kind(fd: u64) -> Option<(u16, u16)> {
    let k = &config().kernel;
    let sk = sock_of_fd(fd)?;
    Some((read_field(sk, k.sock_type)?, read_field(sk, k.sock_protocol)?))
}
