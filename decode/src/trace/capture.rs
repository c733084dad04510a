//! What the trace probes capture for each syscall: the [`SyscallCapture`] rows userspace
//! writes into the probes' capture table, so that the kernel side knows no syscall by name.
//!
//! The rows are chosen by syscall *name* ([`describe`]), so one list serves every architecture:
//! aarch64, which has only the `*at` forms (no `open`, no `stat`), simply never matches the
//! others. [`super::decode`] reads the captured bytes back through the same rows, so a data
//! slot is described in one place. Captures that depend on `buffer_bytes` (read/write buffers)
//! always come after the others, so the other captures keep their slots whatever it is. Only
//! exec's filename and argv are read at `sys_enter` ([`AT_ENTER`]): everything else is still
//! mapped at exit, and sockaddrs and result buffers are only filled in by then.

use swoll_maps_schema::trace::{
    AT_ENTER, CAPTURE_ARGV, CAPTURE_BUF_LEN, CAPTURE_BUF_RET, CAPTURE_NONE, CAPTURE_SOCKADDR,
    CAPTURE_SOCKADDR_OUT, CAPTURE_STR, CAPTURE_STRUCT, Capture, DATA_BYTES, DATA_SLOTS,
    SyscallCapture, TraceEvent,
};

use crate::syscalls::{Arch, describe};

/// Bytes of a data slot, as the capture tables' `max` (a `u32`); 256 fits.
const SLOT: u32 = DATA_BYTES as u32;

/// Bytes of `struct timespec` and `struct timeval` (two 64-bit fields).
pub const TIMESPEC_BYTES: u32 = 16;
/// Bytes of `struct rlimit` (two 64-bit fields).
pub const RLIMIT_BYTES: u32 = 16;
/// Bytes of `struct itimerspec` (two timespecs).
pub const ITIMERSPEC_BYTES: u32 = 32;
/// Bytes of the kernel's `struct sigaction` on x86_64 and aarch64: handler, flags, restorer and
/// a 64-bit mask.
pub const SIGACTION_BYTES: u32 = 32;

/// Nothing.
const NONE: Capture = Capture {
    kind: CAPTURE_NONE,
    arg: 0,
    len_arg: 0,
    _pad: 0,
    max: 0,
};

/// A capture of `kind` from argument `arg`, with its length in argument `len_arg`.
const fn capture(kind: u8, arg: u8, len_arg: u8, max: u32) -> Capture {
    Capture {
        kind,
        arg,
        len_arg,
        _pad: 0,
        max,
    }
}

/// The path (or other NUL-terminated string) argument `arg`.
const fn path(arg: u8) -> Capture {
    capture(CAPTURE_STR, arg, 0, SLOT)
}

/// A sockaddr passed in argument `arg`, `len_arg` bytes long.
const fn sockaddr(arg: u8, len_arg: u8) -> Capture {
    capture(CAPTURE_SOCKADDR, arg, len_arg, SLOT)
}

/// A sockaddr the kernel fills in at argument `arg`, its length at the `socklen_t *` in
/// `len_arg`.
const fn sockaddr_out(arg: u8, len_arg: u8) -> Capture {
    capture(CAPTURE_SOCKADDR_OUT, arg, len_arg, SLOT)
}

/// The buffer at argument `arg`, as many bytes as the call returned, up to `max`.
const fn buf_ret(arg: u8, max: u32) -> Capture {
    capture(CAPTURE_BUF_RET, arg, 0, max)
}

/// The buffer at argument `arg`, as many bytes as argument `len_arg` says, up to a slot.
const fn buf_len(arg: u8, len_arg: u8) -> Capture {
    capture(CAPTURE_BUF_LEN, arg, len_arg, SLOT)
}

/// A struct of `bytes` bytes at argument `arg`.
const fn structure(arg: u8, bytes: u32) -> Capture {
    capture(CAPTURE_STRUCT, arg, 0, bytes)
}

/// execve's argv at argument `arg`, into the event's argv slots.
const fn argv(arg: u8) -> Capture {
    capture(CAPTURE_ARGV, arg, 0, 0)
}

/// `capture`, read at `sys_enter`: for pointers a successful call invalidates (exec replaces
/// the address space that held its filename and argv).
const fn at_enter(capture: Capture) -> Capture {
    Capture {
        kind: capture.kind | AT_ENTER,
        ..capture
    }
}

/// What the probes capture for syscall `nr` of `arch`; `buffer_bytes` is how much of the data
/// buffers of `read`, `write`, `pread64`, `pwrite64`, `sendto` and `recvfrom` to capture (0:
/// none, the default, since buffers are often secrets; at most a slot, [`DATA_BYTES`]).
/// Syscalls with nothing worth reading, and unknown numbers, capture nothing.
pub fn capture_for(arch: Arch, nr: u32, buffer_bytes: u32) -> SyscallCapture {
    let info = describe(arch, nr);
    let name = info.name.strip_prefix("sys_").unwrap_or(&info.name);
    let buf = buffer_bytes.min(SLOT);
    let data = |arg: u8| if buf > 0 { buf_ret(arg, buf) } else { NONE };
    let captures: [Capture; DATA_SLOTS] = match name {
        // A path in argument 0.
        "open" | "creat" | "access" | "stat" | "lstat" | "statfs" | "truncate" | "unlink"
        | "mkdir" | "mknod" | "rmdir" | "chdir" | "chroot" | "chmod" | "chown" | "lchown"
        | "acct" | "swapon" | "swapoff" | "umount2" | "uselib" | "utime" | "utimes"
        | "listxattr" | "llistxattr" => [path(0), NONE],
        // A path in argument 1, after a directory fd.
        "openat" | "openat2" | "faccessat" | "faccessat2" | "newfstatat" | "statx" | "unlinkat"
        | "mkdirat" | "mknodat" | "fchmodat" | "fchmodat2" | "fchownat" | "utimensat"
        | "futimesat" | "inotify_add_watch" | "name_to_handle_at" | "open_tree"
        | "open_tree_attr" | "fspick" | "mount_setattr" | "listxattrat" => [path(1), NONE],
        // Two paths.
        "rename" | "link" | "symlink" | "pivot_root" | "mount" => [path(0), path(1)],
        "renameat" | "renameat2" | "linkat" | "move_mount" => [path(1), path(3)],
        "symlinkat" => [path(0), path(2)],
        // A path and an attribute name.
        "setxattr" | "lsetxattr" | "getxattr" | "lgetxattr" | "removexattr" | "lremovexattr" => {
            [path(0), path(1)]
        }
        "setxattrat" | "getxattrat" | "removexattrat" => [path(1), path(3)],
        "fsetxattr" | "fgetxattr" | "fremovexattr" => [path(1), NONE],
        // Other names.
        "memfd_create" | "mq_open" | "mq_unlink" | "fsopen" => [path(0), NONE],
        // A link's target, as many bytes as the call returned.
        "readlink" => [path(0), buf_ret(1, SLOT)],
        "readlinkat" => [path(1), buf_ret(2, SLOT)],
        "execve" => [at_enter(path(0)), at_enter(argv(1))],
        "execveat" => [at_enter(path(1)), at_enter(argv(2))],
        "sethostname" | "setdomainname" => [buf_len(0, 1), NONE],
        // Socket addresses.
        "connect" | "bind" => [sockaddr(1, 2), NONE],
        "sendto" => [sockaddr(4, 5), data(1)],
        "accept" | "accept4" | "getpeername" | "getsockname" => [sockaddr_out(1, 2), NONE],
        "recvfrom" => [sockaddr_out(4, 5), data(1)],
        // Structs.
        "nanosleep" => [structure(0, TIMESPEC_BYTES), NONE],
        "clock_nanosleep" => [structure(2, TIMESPEC_BYTES), NONE],
        "select" | "pselect6" => [structure(4, TIMESPEC_BYTES), NONE],
        "setrlimit" | "getrlimit" => [structure(1, RLIMIT_BYTES), NONE],
        "prlimit64" => [structure(2, RLIMIT_BYTES), structure(3, RLIMIT_BYTES)],
        "timerfd_settime" => [
            structure(2, ITIMERSPEC_BYTES),
            structure(3, ITIMERSPEC_BYTES),
        ],
        "rt_sigaction" => [structure(1, SIGACTION_BYTES), structure(2, SIGACTION_BYTES)],
        // Data buffers, only when asked for.
        "read" | "write" | "pread64" | "pwrite64" => [data(1), NONE],
        _ => [NONE; DATA_SLOTS],
    };
    SyscallCapture { captures }
}

/// Cuts the data buffers of `ev` (a call of `arch`) down to what a trace that asked for
/// `buffer_bytes` gets: the kernel captures for the trace of all running ones that asked for the
/// most, and one event serves every trace of its mask, so each trace's copy is trimmed here,
/// before anything of it leaves the agent. A buffer slot the trace did not ask for is emptied
/// (its bytes zeroed, not only hidden); paths, sockaddrs and structs do not depend on
/// `buffer_bytes` and are left as they are.
pub fn limit_buffers(arch: Arch, ev: &mut TraceEvent, buffer_bytes: u32) {
    let full = capture_for(arch, ev.nr, u32::MAX).captures;
    let asked = capture_for(arch, ev.nr, buffer_bytes).captures;
    let captured = &mut ev.captured;
    for (slot, (full, asked)) in full.iter().zip(asked).enumerate() {
        if *full == asked {
            continue;
        }
        let keep = if asked.kind == CAPTURE_NONE {
            0
        } else {
            u16::try_from(asked.max).unwrap_or(u16::MAX)
        };
        if captured.data_len[slot] > keep {
            captured.data_len[slot] = keep;
        }
        captured.data[slot][usize::from(keep).min(DATA_BYTES)..].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::{max_nr, number};

    fn for_name(arch: Arch, name: &str, buffer_bytes: u32) -> [Capture; DATA_SLOTS] {
        let nr = number(arch, name).unwrap_or(u32::MAX);
        capture_for(arch, nr, buffer_bytes).captures
    }

    #[test]
    fn capture_paths_by_name_on_both_arches() {
        assert_eq!(for_name(Arch::X86_64, "openat", 0), [path(1), NONE]);
        assert_eq!(for_name(Arch::Aarch64, "openat", 0), [path(1), NONE]);
        assert_eq!(for_name(Arch::X86_64, "open", 0), [path(0), NONE]);
        assert_eq!(for_name(Arch::X86_64, "renameat2", 0), [path(1), path(3)]);
        assert_eq!(
            for_name(Arch::X86_64, "execve", 0),
            [at_enter(path(0)), at_enter(argv(1))]
        );
        assert_eq!(for_name(Arch::X86_64, "init_module", 0), [NONE; DATA_SLOTS]);
        assert_eq!(for_name(Arch::X86_64, "getpid", 64), [NONE; DATA_SLOTS]);
    }

    #[test]
    fn capture_buffers_only_when_asked() {
        assert_eq!(for_name(Arch::X86_64, "read", 0), [NONE; DATA_SLOTS]);
        assert_eq!(for_name(Arch::X86_64, "read", 64), [buf_ret(1, 64), NONE]);
        assert_eq!(
            for_name(Arch::X86_64, "write", 100_000),
            [buf_ret(1, SLOT), NONE]
        );
        assert_eq!(
            for_name(Arch::Aarch64, "recvfrom", 0),
            [sockaddr_out(4, 5), NONE]
        );
        assert_eq!(
            for_name(Arch::Aarch64, "recvfrom", 32),
            [sockaddr_out(4, 5), buf_ret(1, 32)]
        );
        assert_eq!(
            for_name(Arch::X86_64, "connect", 32),
            [sockaddr(1, 2), NONE]
        );
    }

    /// A `nr` call of `arch` whose slot `slot` captured `bytes`.
    fn captured(arch: Arch, name: &str, slot: usize, bytes: &[u8]) -> TraceEvent {
        let mut ev = TraceEvent::zeroed();
        ev.nr = number(arch, name).unwrap_or(u32::MAX);
        ev.captured.data[slot][..bytes.len()].copy_from_slice(bytes);
        ev.captured.data_len[slot] = u16::try_from(bytes.len()).unwrap_or(0);
        ev
    }

    #[test]
    fn buffers_are_cut_to_what_each_trace_asked_for() {
        let secret = [b's'; 200];
        let ev = captured(Arch::X86_64, "write", 0, &secret);
        let mut none = ev;
        limit_buffers(Arch::X86_64, &mut none, 0);
        assert_eq!(none.captured.data(0), b"");
        assert!(
            none.captured.data[0].iter().all(|&b| b == 0),
            "zeroed, not hidden"
        );
        let mut some = ev;
        limit_buffers(Arch::X86_64, &mut some, 64);
        assert_eq!(some.captured.data(0), &secret[..64]);
        assert!(some.captured.data[0][64..].iter().all(|&b| b == 0));
        let mut all = ev;
        limit_buffers(Arch::X86_64, &mut all, 256);
        assert_eq!(all, ev, "asked for a slot: nothing cut");
        // recvfrom: the sockaddr in slot 0 stays, the buffer in slot 1 goes.
        let mut ev = captured(Arch::Aarch64, "recvfrom", 0, &[2, 0, 0, 80]);
        ev.captured.data[1][..5].copy_from_slice(b"hello");
        ev.captured.data_len[1] = 5;
        limit_buffers(Arch::Aarch64, &mut ev, 0);
        assert_eq!(ev.captured.data(0), [2, 0, 0, 80]);
        assert_eq!(ev.captured.data(1), b"");
        // A path is not a buffer: kept whatever the trace asked for.
        let path = captured(Arch::X86_64, "openat", 0, b"/etc/passwd\0");
        let mut kept = path;
        limit_buffers(Arch::X86_64, &mut kept, 0);
        assert_eq!(kept, path);
    }

    #[test]
    fn capture_rows_are_within_bounds() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for nr in 0..=max_nr(arch) + 10 {
                for buffer_bytes in [0, 1, 64, SLOT, u32::MAX] {
                    for c in capture_for(arch, nr, buffer_bytes).captures {
                        assert!(c.max as usize <= DATA_BYTES, "{arch:?} {nr}");
                        assert!(c.arg <= 5 && c.len_arg <= 5, "{arch:?} {nr}");
                        let kind = c.kind & !AT_ENTER;
                        assert!(kind <= CAPTURE_ARGV, "{arch:?} {nr}");
                        assert!(kind == CAPTURE_NONE || kind == CAPTURE_ARGV || c.max > 0);
                        if c.kind & AT_ENTER != 0 {
                            assert!(kind == CAPTURE_STR || kind == CAPTURE_ARGV, "{arch:?} {nr}");
                        }
                    }
                }
            }
        }
    }
}
