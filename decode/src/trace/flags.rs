//! Names of the flag sets and enumerations that syscall arguments carry, for trace events.
//!
//! Each table is a slice of `(value, name)` with the Linux uapi values (checked against Debian's
//! `linux-libc-dev` headers: `asm-generic/fcntl.h`, `linux/*.h`, `bits/*.h`). The tables are
//! data, in a fixed order that is the order names come out in, so the same call always renders
//! the same way. In flag tables a composite value comes before its parts (`O_SYNC` before
//! `O_DSYNC`, `O_TMPFILE` before `O_DIRECTORY`) so that it claims its bits first, and a zero
//! entry (`PROT_NONE`) names only the value 0. Where x86_64 and aarch64 differ the function takes
//! an [`Arch`].

use std::borrow::Cow;

use crate::syscalls::Arch;

/// A flag set or an enumeration: `(value, name)` pairs in output order.
pub type Names = [(u64, &'static str)];

/// The names of the flags set in `value`, in `table` order, then `0x<rest>` for bits no entry
/// names, so that nothing the caller passed is hidden. An entry matches when all its bits are
/// still unclaimed; a zero entry matches only when `value` is 0. Empty for 0 without such entry.
pub fn flag_names(table: &Names, value: u64) -> Vec<Cow<'static, str>> {
    let mut names = Vec::new();
    let mut rest = value;
    for &(bits, name) in table {
        let matches = if bits == 0 {
            value == 0
        } else {
            rest & bits == bits
        };
        if matches {
            names.push(Cow::Borrowed(name));
            rest &= !bits;
        }
    }
    if rest != 0 {
        names.push(Cow::Owned(format!("0x{rest:x}")));
    }
    names
}

/// The name of `value` in the enumeration `table`, if it has one.
pub fn enum_name(table: &Names, value: u64) -> Option<&'static str> {
    table
        .iter()
        .find(|&&(v, _)| v == value)
        .map(|&(_, name)| name)
}

/// The name of `value` in `table`, or its decimal value: an unknown command or request still
/// shows, distinguishable, as a string like the names.
pub fn enum_or_number(table: &Names, value: u64) -> Cow<'static, str> {
    match enum_name(table, value) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(value.to_string()),
    }
}

/// `open`'s access modes, the low two bits (`O_ACCMODE`), an enumeration rather than flags:
/// `O_RDONLY` is 0.
pub const O_ACCESS_MODES: &Names = &[
    (0, "O_RDONLY"),
    (1, "O_WRONLY"),
    (2, "O_RDWR"),
    (3, "O_ACCMODE"),
];

/// Mask of the access mode in open flags.
const O_ACCMODE: u64 = 3;

/// `open` flags above the access mode on x86_64 (`asm-generic/fcntl.h`).
pub const O_FLAGS_X86_64: &Names = &[
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o4010000, "O_SYNC"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o20200000, "O_TMPFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
];

/// `open` flags above the access mode on aarch64, whose `O_DIRECTORY`, `O_NOFOLLOW`,
/// `O_DIRECT` and `O_LARGEFILE` differ (`arch/arm64/include/uapi/asm/fcntl.h`).
pub const O_FLAGS_AARCH64: &Names = &[
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o4010000, "O_SYNC"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o200000, "O_DIRECT"),
    (0o400000, "O_LARGEFILE"),
    (0o20040000, "O_TMPFILE"),
    (0o40000, "O_DIRECTORY"),
    (0o100000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
];

/// `open` flags of `arch`: the access mode's name first (`O_RDONLY` when it is 0), then the
/// flags in [`O_FLAGS_X86_64`] / [`O_FLAGS_AARCH64`] order.
pub fn open_flags(arch: Arch, value: u64) -> Vec<Cow<'static, str>> {
    let table = match arch {
        Arch::X86_64 => O_FLAGS_X86_64,
        Arch::Aarch64 => O_FLAGS_AARCH64,
    };
    let mut names = vec![enum_or_number(O_ACCESS_MODES, value & O_ACCMODE)];
    names.extend(flag_names(table, value & !O_ACCMODE));
    names
}

/// The value of `AT_FDCWD`: "relative to the current directory" as a directory fd.
pub const AT_FDCWD: i32 = -100;

/// `*at` flags (`linux/fcntl.h`). 0x200 means `AT_REMOVEDIR` for `unlinkat` and `AT_EACCESS`
/// for `faccessat`; see [`AT_UNLINK_FLAGS`] and [`AT_ACCESS_FLAGS`].
pub const AT_FLAGS: &Names = &[
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
    (0x2000, "AT_STATX_FORCE_SYNC"),
    (0x4000, "AT_STATX_DONT_SYNC"),
    (0x8000, "AT_RECURSIVE"),
];

/// `unlinkat` flags.
pub const AT_UNLINK_FLAGS: &Names = &[(0x200, "AT_REMOVEDIR")];

/// `faccessat`/`faccessat2` flags.
pub const AT_ACCESS_FLAGS: &Names = &[
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x200, "AT_EACCESS"),
    (0x1000, "AT_EMPTY_PATH"),
];

/// `access` modes (`unistd.h`): `F_OK` is 0.
pub const ACCESS_MODES: &Names = &[(0, "F_OK"), (4, "R_OK"), (2, "W_OK"), (1, "X_OK")];

/// `mount` flags (`linux/mount.h`).
pub const MS_FLAGS: &Names = &[
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (16, "MS_SYNCHRONOUS"),
    (32, "MS_REMOUNT"),
    (64, "MS_MANDLOCK"),
    (128, "MS_DIRSYNC"),
    (256, "MS_NOSYMFOLLOW"),
    (1024, "MS_NOATIME"),
    (2048, "MS_NODIRATIME"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (32768, "MS_SILENT"),
    (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 22, "MS_KERNMOUNT"),
    (1 << 23, "MS_I_VERSION"),
    (1 << 24, "MS_STRICTATIME"),
    (1 << 25, "MS_LAZYTIME"),
    (1 << 26, "MS_SUBMOUNT"),
    (1 << 27, "MS_NOREMOTELOCK"),
    (1 << 28, "MS_NOSEC"),
    (1 << 29, "MS_BORN"),
    (1 << 30, "MS_ACTIVE"),
    (1 << 31, "MS_NOUSER"),
];

/// `umount2` flags (`sys/mount.h`).
pub const MNT_FLAGS: &Names = &[
    (1, "MNT_FORCE"),
    (2, "MNT_DETACH"),
    (4, "MNT_EXPIRE"),
    (8, "UMOUNT_NOFOLLOW"),
];

/// Socket types, the low four bits of `socket`'s `type` (`SOCK_TYPE_MASK`).
pub const SOCK_TYPES: &Names = &[
    (1, "SOCK_STREAM"),
    (2, "SOCK_DGRAM"),
    (3, "SOCK_RAW"),
    (4, "SOCK_RDM"),
    (5, "SOCK_SEQPACKET"),
    (6, "SOCK_DCCP"),
    (10, "SOCK_PACKET"),
];

/// Flags above the socket type (also `accept4`'s flags).
pub const SOCK_FLAGS: &Names = &[(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")];

/// Mask of the type in `socket`'s `type`.
const SOCK_TYPE_MASK: u64 = 0xf;

/// `socket`'s `type`: the type's name (or its number), then [`SOCK_FLAGS`].
pub fn sock_type(value: u64) -> Vec<Cow<'static, str>> {
    let mut names = vec![enum_or_number(SOCK_TYPES, value & SOCK_TYPE_MASK)];
    names.extend(flag_names(SOCK_FLAGS, value & !SOCK_TYPE_MASK));
    names
}

/// Address families (`bits/socket.h`).
pub const AF_FAMILIES: &Names = &[
    (0, "AF_UNSPEC"),
    (1, "AF_UNIX"),
    (2, "AF_INET"),
    (3, "AF_AX25"),
    (4, "AF_IPX"),
    (5, "AF_APPLETALK"),
    (6, "AF_NETROM"),
    (7, "AF_BRIDGE"),
    (8, "AF_ATMPVC"),
    (9, "AF_X25"),
    (10, "AF_INET6"),
    (11, "AF_ROSE"),
    (12, "AF_DECnet"),
    (13, "AF_NETBEUI"),
    (14, "AF_SECURITY"),
    (15, "AF_KEY"),
    (16, "AF_NETLINK"),
    (17, "AF_PACKET"),
    (18, "AF_ASH"),
    (19, "AF_ECONET"),
    (20, "AF_ATMSVC"),
    (21, "AF_RDS"),
    (22, "AF_SNA"),
    (23, "AF_IRDA"),
    (24, "AF_PPPOX"),
    (25, "AF_WANPIPE"),
    (26, "AF_LLC"),
    (27, "AF_IB"),
    (28, "AF_MPLS"),
    (29, "AF_CAN"),
    (30, "AF_TIPC"),
    (31, "AF_BLUETOOTH"),
    (32, "AF_IUCV"),
    (33, "AF_RXRPC"),
    (34, "AF_ISDN"),
    (35, "AF_PHONET"),
    (36, "AF_IEEE802154"),
    (37, "AF_CAIF"),
    (38, "AF_ALG"),
    (39, "AF_NFC"),
    (40, "AF_VSOCK"),
    (41, "AF_KCM"),
    (42, "AF_QIPCRTR"),
    (43, "AF_SMC"),
    (44, "AF_XDP"),
    (45, "AF_MCTP"),
];

/// IP protocols (`netinet/in.h`), for `socket`'s `protocol` in `AF_INET`/`AF_INET6`.
pub const IPPROTO: &Names = &[
    (0, "IPPROTO_IP"),
    (1, "IPPROTO_ICMP"),
    (2, "IPPROTO_IGMP"),
    (4, "IPPROTO_IPIP"),
    (6, "IPPROTO_TCP"),
    (8, "IPPROTO_EGP"),
    (12, "IPPROTO_PUP"),
    (17, "IPPROTO_UDP"),
    (22, "IPPROTO_IDP"),
    (29, "IPPROTO_TP"),
    (33, "IPPROTO_DCCP"),
    (41, "IPPROTO_IPV6"),
    (46, "IPPROTO_RSVP"),
    (47, "IPPROTO_GRE"),
    (50, "IPPROTO_ESP"),
    (51, "IPPROTO_AH"),
    (58, "IPPROTO_ICMPV6"),
    (92, "IPPROTO_MTP"),
    (94, "IPPROTO_BEETPH"),
    (98, "IPPROTO_ENCAP"),
    (103, "IPPROTO_PIM"),
    (108, "IPPROTO_COMP"),
    (115, "IPPROTO_L2TP"),
    (132, "IPPROTO_SCTP"),
    (136, "IPPROTO_UDPLITE"),
    (137, "IPPROTO_MPLS"),
    (143, "IPPROTO_ETHERNET"),
    (255, "IPPROTO_RAW"),
    (262, "IPPROTO_MPTCP"),
];

/// `send`/`recv` flags (`bits/socket.h`).
pub const MSG_FLAGS: &Names = &[
    (0x1, "MSG_OOB"),
    (0x2, "MSG_PEEK"),
    (0x4, "MSG_DONTROUTE"),
    (0x8, "MSG_CTRUNC"),
    (0x10, "MSG_PROXY"),
    (0x20, "MSG_TRUNC"),
    (0x40, "MSG_DONTWAIT"),
    (0x80, "MSG_EOR"),
    (0x100, "MSG_WAITALL"),
    (0x200, "MSG_FIN"),
    (0x400, "MSG_SYN"),
    (0x800, "MSG_CONFIRM"),
    (0x1000, "MSG_RST"),
    (0x2000, "MSG_ERRQUEUE"),
    (0x4000, "MSG_NOSIGNAL"),
    (0x8000, "MSG_MORE"),
    (0x10000, "MSG_WAITFORONE"),
    (0x40000, "MSG_BATCH"),
    (0x4000000, "MSG_ZEROCOPY"),
    (0x20000000, "MSG_FASTOPEN"),
    (0x40000000, "MSG_CMSG_CLOEXEC"),
];

/// `inotify_add_watch` mask (`linux/inotify.h`).
pub const IN_FLAGS: &Names = &[
    (0x1, "IN_ACCESS"),
    (0x2, "IN_MODIFY"),
    (0x4, "IN_ATTRIB"),
    (0x8, "IN_CLOSE_WRITE"),
    (0x10, "IN_CLOSE_NOWRITE"),
    (0x20, "IN_OPEN"),
    (0x40, "IN_MOVED_FROM"),
    (0x80, "IN_MOVED_TO"),
    (0x100, "IN_CREATE"),
    (0x200, "IN_DELETE"),
    (0x400, "IN_DELETE_SELF"),
    (0x800, "IN_MOVE_SELF"),
    (0x2000, "IN_UNMOUNT"),
    (0x4000, "IN_Q_OVERFLOW"),
    (0x8000, "IN_IGNORED"),
    (0x1000000, "IN_ONLYDIR"),
    (0x2000000, "IN_DONT_FOLLOW"),
    (0x4000000, "IN_EXCL_UNLINK"),
    (0x10000000, "IN_MASK_CREATE"),
    (0x20000000, "IN_MASK_ADD"),
    (0x40000000, "IN_ISDIR"),
    (0x80000000, "IN_ONESHOT"),
];

/// `timerfd_create` flags (`linux/timerfd.h`).
pub const TFD_CREATE_FLAGS: &Names = &[(0o4000, "TFD_NONBLOCK"), (0o2000000, "TFD_CLOEXEC")];

/// `timerfd_settime` flags.
pub const TFD_SETTIME_FLAGS: &Names = &[(1, "TFD_TIMER_ABSTIME"), (2, "TFD_TIMER_CANCEL_ON_SET")];

/// Clocks (`linux/time.h`), for `timerfd_create` and `clock_nanosleep`.
pub const CLOCKS: &Names = &[
    (0, "CLOCK_REALTIME"),
    (1, "CLOCK_MONOTONIC"),
    (2, "CLOCK_PROCESS_CPUTIME_ID"),
    (3, "CLOCK_THREAD_CPUTIME_ID"),
    (4, "CLOCK_MONOTONIC_RAW"),
    (5, "CLOCK_REALTIME_COARSE"),
    (6, "CLOCK_MONOTONIC_COARSE"),
    (7, "CLOCK_BOOTTIME"),
    (8, "CLOCK_REALTIME_ALARM"),
    (9, "CLOCK_BOOTTIME_ALARM"),
    (11, "CLOCK_TAI"),
];

/// `clock_nanosleep` flags.
pub const TIMER_FLAGS: &Names = &[(1, "TIMER_ABSTIME")];

/// `clone` flags (`linux/sched.h`), above the exit signal in the low byte (`CSIGNAL`).
pub const CLONE_FLAGS: &Names = &[
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
    (0x100000000, "CLONE_CLEAR_SIGHAND"),
    (0x200000000, "CLONE_INTO_CGROUP"),
];

/// Mask of the exit signal in `clone` flags.
const CSIGNAL: u64 = 0xff;

/// `clone`'s flags: [`CLONE_FLAGS`], then the exit signal's name if there is one.
pub fn clone_flags(value: u64) -> Vec<Cow<'static, str>> {
    let mut names = flag_names(CLONE_FLAGS, value & !CSIGNAL);
    if value & CSIGNAL != 0 {
        names.push(signal_name(value & CSIGNAL));
    }
    names
}

/// `unshare`/`setns` namespace flags: [`CLONE_FLAGS`] plus `CLONE_NEWTIME`, which only these
/// take (in `clone` its bit belongs to the exit signal).
pub fn namespace_flags(value: u64) -> Vec<Cow<'static, str>> {
    const CLONE_NEWTIME: u64 = 0x80;
    let mut names = flag_names(CLONE_FLAGS, value & !CLONE_NEWTIME);
    if value & CLONE_NEWTIME != 0 {
        names.insert(0, Cow::Borrowed("CLONE_NEWTIME"));
    }
    names
}

/// Memory protections (`asm-generic/mman-common.h`).
pub const PROT_FLAGS: &Names = &[
    (0, "PROT_NONE"),
    (0x1, "PROT_READ"),
    (0x2, "PROT_WRITE"),
    (0x4, "PROT_EXEC"),
    (0x8, "PROT_SEM"),
    (0x1000000, "PROT_GROWSDOWN"),
    (0x2000000, "PROT_GROWSUP"),
];

/// Mapping types, the low four bits of `mmap`'s flags (`MAP_TYPE`).
pub const MAP_TYPES: &Names = &[
    (1, "MAP_SHARED"),
    (2, "MAP_PRIVATE"),
    (3, "MAP_SHARED_VALIDATE"),
];

/// `mmap` flags above the mapping type (x86_64 and aarch64 agree; `MAP_32BIT` is x86_64's).
pub const MAP_FLAGS: &Names = &[
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x40, "MAP_32BIT"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
    (0x4000000, "MAP_UNINITIALIZED"),
];

/// Mask of the mapping type in `mmap` flags.
const MAP_TYPE: u64 = 0xf;

/// `mmap`'s flags: the mapping type's name (or its number), then [`MAP_FLAGS`].
pub fn mmap_flags(value: u64) -> Vec<Cow<'static, str>> {
    let mut names = vec![enum_or_number(MAP_TYPES, value & MAP_TYPE)];
    names.extend(flag_names(MAP_FLAGS, value & !MAP_TYPE));
    names
}

/// `madvise` advice (`asm-generic/mman-common.h`).
pub const MADV: &Names = &[
    (0, "MADV_NORMAL"),
    (1, "MADV_RANDOM"),
    (2, "MADV_SEQUENTIAL"),
    (3, "MADV_WILLNEED"),
    (4, "MADV_DONTNEED"),
    (8, "MADV_FREE"),
    (9, "MADV_REMOVE"),
    (10, "MADV_DONTFORK"),
    (11, "MADV_DOFORK"),
    (12, "MADV_MERGEABLE"),
    (13, "MADV_UNMERGEABLE"),
    (14, "MADV_HUGEPAGE"),
    (15, "MADV_NOHUGEPAGE"),
    (16, "MADV_DONTDUMP"),
    (17, "MADV_DODUMP"),
    (18, "MADV_WIPEONFORK"),
    (19, "MADV_KEEPONFORK"),
    (20, "MADV_COLD"),
    (21, "MADV_PAGEOUT"),
    (22, "MADV_POPULATE_READ"),
    (23, "MADV_POPULATE_WRITE"),
    (24, "MADV_DONTNEED_LOCKED"),
    (25, "MADV_COLLAPSE"),
    (100, "MADV_HWPOISON"),
    (101, "MADV_SOFT_OFFLINE"),
];

/// Signals (`asm-generic/signal.h`; x86_64 and aarch64 agree).
pub const SIGNALS: &Names = &[
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

/// First real-time signal number as the kernel counts them (`SIGRTMIN` in the uapi headers).
const SIGRTMIN: u64 = 32;
/// Last signal number (`_NSIG`).
const SIGRTMAX: u64 = 64;

/// A signal's name: `SIGKILL`, `SIGRTMIN+3` for real-time signals, else the decimal number
/// (`0` is `kill`'s existence check).
pub fn signal_name(value: u64) -> Cow<'static, str> {
    match enum_name(SIGNALS, value) {
        Some(name) => Cow::Borrowed(name),
        None if (SIGRTMIN..=SIGRTMAX).contains(&value) => {
            Cow::Owned(format!("SIGRTMIN+{}", value - SIGRTMIN))
        }
        None => Cow::Owned(value.to_string()),
    }
}

/// The signals in a `sigset_t` (bit `n - 1` is signal `n`), in number order.
pub fn signal_set(mask: u64) -> Vec<Cow<'static, str>> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| signal_name(bit + 1))
        .collect()
}

/// `sigaction` flags (`asm-generic/signal-defs.h`; `SA_RESTORER` from x86_64 and aarch64).
pub const SA_FLAGS: &Names = &[
    (0x1, "SA_NOCLDSTOP"),
    (0x2, "SA_NOCLDWAIT"),
    (0x4, "SA_SIGINFO"),
    (0x400, "SA_UNSUPPORTED"),
    (0x800, "SA_EXPOSE_TAGBITS"),
    (0x4000000, "SA_RESTORER"),
    (0x8000000, "SA_ONSTACK"),
    (0x10000000, "SA_RESTART"),
    (0x40000000, "SA_NODEFER"),
    (0x80000000, "SA_RESETHAND"),
];

/// `fcntl` commands (`asm-generic/fcntl.h`, `linux/fcntl.h`).
pub const FCNTL_CMDS: &Names = &[
    (0, "F_DUPFD"),
    (1, "F_GETFD"),
    (2, "F_SETFD"),
    (3, "F_GETFL"),
    (4, "F_SETFL"),
    (5, "F_GETLK"),
    (6, "F_SETLK"),
    (7, "F_SETLKW"),
    (8, "F_SETOWN"),
    (9, "F_GETOWN"),
    (10, "F_SETSIG"),
    (11, "F_GETSIG"),
    (15, "F_SETOWN_EX"),
    (16, "F_GETOWN_EX"),
    (17, "F_GETOWNER_UIDS"),
    (36, "F_OFD_GETLK"),
    (37, "F_OFD_SETLK"),
    (38, "F_OFD_SETLKW"),
    (1024, "F_SETLEASE"),
    (1025, "F_GETLEASE"),
    (1026, "F_NOTIFY"),
    (1029, "F_CANCELLK"),
    (1030, "F_DUPFD_CLOEXEC"),
    (1031, "F_SETPIPE_SZ"),
    (1032, "F_GETPIPE_SZ"),
    (1033, "F_ADD_SEALS"),
    (1034, "F_GET_SEALS"),
    (1035, "F_GET_RW_HINT"),
    (1036, "F_SET_RW_HINT"),
    (1037, "F_GET_FILE_RW_HINT"),
    (1038, "F_SET_FILE_RW_HINT"),
];

/// `fcntl(F_SETFD)` flags.
pub const FD_FLAGS: &Names = &[(1, "FD_CLOEXEC")];

/// `prctl` options (`linux/prctl.h`).
pub const PRCTL_OPTIONS: &Names = &[
    (1, "PR_SET_PDEATHSIG"),
    (2, "PR_GET_PDEATHSIG"),
    (3, "PR_GET_DUMPABLE"),
    (4, "PR_SET_DUMPABLE"),
    (5, "PR_GET_UNALIGN"),
    (6, "PR_SET_UNALIGN"),
    (7, "PR_GET_KEEPCAPS"),
    (8, "PR_SET_KEEPCAPS"),
    (9, "PR_GET_FPEMU"),
    (10, "PR_SET_FPEMU"),
    (11, "PR_GET_FPEXC"),
    (12, "PR_SET_FPEXC"),
    (13, "PR_GET_TIMING"),
    (14, "PR_SET_TIMING"),
    (15, "PR_SET_NAME"),
    (16, "PR_GET_NAME"),
    (19, "PR_GET_ENDIAN"),
    (20, "PR_SET_ENDIAN"),
    (21, "PR_GET_SECCOMP"),
    (22, "PR_SET_SECCOMP"),
    (23, "PR_CAPBSET_READ"),
    (24, "PR_CAPBSET_DROP"),
    (25, "PR_GET_TSC"),
    (26, "PR_SET_TSC"),
    (27, "PR_GET_SECUREBITS"),
    (28, "PR_SET_SECUREBITS"),
    (29, "PR_SET_TIMERSLACK"),
    (30, "PR_GET_TIMERSLACK"),
    (31, "PR_TASK_PERF_EVENTS_DISABLE"),
    (32, "PR_TASK_PERF_EVENTS_ENABLE"),
    (33, "PR_MCE_KILL"),
    (34, "PR_MCE_KILL_GET"),
    (35, "PR_SET_MM"),
    (36, "PR_SET_CHILD_SUBREAPER"),
    (37, "PR_GET_CHILD_SUBREAPER"),
    (38, "PR_SET_NO_NEW_PRIVS"),
    (39, "PR_GET_NO_NEW_PRIVS"),
    (40, "PR_GET_TID_ADDRESS"),
    (41, "PR_SET_THP_DISABLE"),
    (42, "PR_GET_THP_DISABLE"),
    (43, "PR_MPX_ENABLE_MANAGEMENT"),
    (44, "PR_MPX_DISABLE_MANAGEMENT"),
    (45, "PR_SET_FP_MODE"),
    (46, "PR_GET_FP_MODE"),
    (47, "PR_CAP_AMBIENT"),
    (50, "PR_SVE_SET_VL"),
    (51, "PR_SVE_GET_VL"),
    (52, "PR_GET_SPECULATION_CTRL"),
    (53, "PR_SET_SPECULATION_CTRL"),
    (54, "PR_PAC_RESET_KEYS"),
    (55, "PR_SET_TAGGED_ADDR_CTRL"),
    (56, "PR_GET_TAGGED_ADDR_CTRL"),
    (57, "PR_SET_IO_FLUSHER"),
    (58, "PR_GET_IO_FLUSHER"),
    (59, "PR_SET_SYSCALL_USER_DISPATCH"),
    (60, "PR_PAC_SET_ENABLED_KEYS"),
    (61, "PR_PAC_GET_ENABLED_KEYS"),
    (62, "PR_SCHED_CORE"),
    (63, "PR_SME_SET_VL"),
    (64, "PR_SME_GET_VL"),
    (0x59616d61, "PR_SET_PTRACER"),
];

/// `ptrace` requests (`linux/ptrace.h`, plus x86_64's `asm/ptrace-abi.h`).
pub const PTRACE_REQUESTS: &Names = &[
    (0, "PTRACE_TRACEME"),
    (1, "PTRACE_PEEKTEXT"),
    (2, "PTRACE_PEEKDATA"),
    (3, "PTRACE_PEEKUSER"),
    (4, "PTRACE_POKETEXT"),
    (5, "PTRACE_POKEDATA"),
    (6, "PTRACE_POKEUSER"),
    (7, "PTRACE_CONT"),
    (8, "PTRACE_KILL"),
    (9, "PTRACE_SINGLESTEP"),
    (12, "PTRACE_GETREGS"),
    (13, "PTRACE_SETREGS"),
    (14, "PTRACE_GETFPREGS"),
    (15, "PTRACE_SETFPREGS"),
    (16, "PTRACE_ATTACH"),
    (17, "PTRACE_DETACH"),
    (18, "PTRACE_GETFPXREGS"),
    (19, "PTRACE_SETFPXREGS"),
    (24, "PTRACE_SYSCALL"),
    (25, "PTRACE_GET_THREAD_AREA"),
    (26, "PTRACE_SET_THREAD_AREA"),
    (31, "PTRACE_SYSEMU"),
    (32, "PTRACE_SYSEMU_SINGLESTEP"),
    (33, "PTRACE_SINGLEBLOCK"),
    (0x4200, "PTRACE_SETOPTIONS"),
    (0x4201, "PTRACE_GETEVENTMSG"),
    (0x4202, "PTRACE_GETSIGINFO"),
    (0x4203, "PTRACE_SETSIGINFO"),
    (0x4204, "PTRACE_GETREGSET"),
    (0x4205, "PTRACE_SETREGSET"),
    (0x4206, "PTRACE_SEIZE"),
    (0x4207, "PTRACE_INTERRUPT"),
    (0x4208, "PTRACE_LISTEN"),
    (0x4209, "PTRACE_PEEKSIGINFO"),
    (0x420a, "PTRACE_GETSIGMASK"),
    (0x420b, "PTRACE_SETSIGMASK"),
    (0x420c, "PTRACE_SECCOMP_GET_FILTER"),
    (0x420d, "PTRACE_SECCOMP_GET_METADATA"),
    (0x420e, "PTRACE_GET_SYSCALL_INFO"),
    (0x420f, "PTRACE_GET_RSEQ_CONFIGURATION"),
];

/// Resource limits (`asm-generic/resource.h`; x86_64 and aarch64 agree).
pub const RLIMITS: &Names = &[
    (0, "RLIMIT_CPU"),
    (1, "RLIMIT_FSIZE"),
    (2, "RLIMIT_DATA"),
    (3, "RLIMIT_STACK"),
    (4, "RLIMIT_CORE"),
    (5, "RLIMIT_RSS"),
    (6, "RLIMIT_NPROC"),
    (7, "RLIMIT_NOFILE"),
    (8, "RLIMIT_MEMLOCK"),
    (9, "RLIMIT_AS"),
    (10, "RLIMIT_LOCKS"),
    (11, "RLIMIT_SIGPENDING"),
    (12, "RLIMIT_MSGQUEUE"),
    (13, "RLIMIT_NICE"),
    (14, "RLIMIT_RTPRIO"),
    (15, "RLIMIT_RTTIME"),
];

/// Socket option levels: `SOL_SOCKET` and the protocols' own (`SOL_IP` is `IPPROTO_IP`, …).
pub const SOL_LEVELS: &Names = &[
    (0, "SOL_IP"),
    (1, "SOL_SOCKET"),
    (6, "SOL_TCP"),
    (17, "SOL_UDP"),
    (41, "SOL_IPV6"),
    (58, "SOL_ICMPV6"),
    (132, "SOL_SCTP"),
    (255, "SOL_RAW"),
    (263, "SOL_PACKET"),
    (270, "SOL_NETLINK"),
    (282, "SOL_TLS"),
    (283, "SOL_XDP"),
];

/// The value of `SOL_SOCKET`, the level whose options [`SO_OPTIONS`] names.
pub const SOL_SOCKET: u64 = 1;

/// `SOL_SOCKET` options (`asm-generic/socket.h`), the common ones.
pub const SO_OPTIONS: &Names = &[
    (1, "SO_DEBUG"),
    (2, "SO_REUSEADDR"),
    (3, "SO_TYPE"),
    (4, "SO_ERROR"),
    (5, "SO_DONTROUTE"),
    (6, "SO_BROADCAST"),
    (7, "SO_SNDBUF"),
    (8, "SO_RCVBUF"),
    (9, "SO_KEEPALIVE"),
    (10, "SO_OOBINLINE"),
    (11, "SO_NO_CHECK"),
    (12, "SO_PRIORITY"),
    (13, "SO_LINGER"),
    (14, "SO_BSDCOMPAT"),
    (15, "SO_REUSEPORT"),
    (16, "SO_PASSCRED"),
    (17, "SO_PEERCRED"),
    (18, "SO_RCVLOWAT"),
    (19, "SO_SNDLOWAT"),
    (20, "SO_RCVTIMEO_OLD"),
    (21, "SO_SNDTIMEO_OLD"),
    (25, "SO_BINDTODEVICE"),
    (26, "SO_ATTACH_FILTER"),
    (27, "SO_DETACH_FILTER"),
    (28, "SO_PEERNAME"),
    (29, "SO_TIMESTAMP_OLD"),
    (30, "SO_ACCEPTCONN"),
    (31, "SO_PEERSEC"),
    (32, "SO_SNDBUFFORCE"),
    (33, "SO_RCVBUFFORCE"),
    (34, "SO_PASSSEC"),
    (36, "SO_MARK"),
    (38, "SO_PROTOCOL"),
    (39, "SO_DOMAIN"),
    (46, "SO_BUSY_POLL"),
    (49, "SO_INCOMING_CPU"),
    (50, "SO_ATTACH_BPF"),
    (57, "SO_COOKIE"),
    (60, "SO_ZEROCOPY"),
    (62, "SO_BINDTOIFINDEX"),
    (66, "SO_RCVTIMEO_NEW"),
    (67, "SO_SNDTIMEO_NEW"),
];

/// `epoll_ctl` operations (`linux/eventpoll.h`).
pub const EPOLL_CTL_OPS: &Names = &[
    (1, "EPOLL_CTL_ADD"),
    (2, "EPOLL_CTL_DEL"),
    (3, "EPOLL_CTL_MOD"),
];

/// `futex` commands (`linux/futex.h`), the op without [`FUTEX_OP_FLAGS`].
pub const FUTEX_CMDS: &Names = &[
    (0, "FUTEX_WAIT"),
    (1, "FUTEX_WAKE"),
    (2, "FUTEX_FD"),
    (3, "FUTEX_REQUEUE"),
    (4, "FUTEX_CMP_REQUEUE"),
    (5, "FUTEX_WAKE_OP"),
    (6, "FUTEX_LOCK_PI"),
    (7, "FUTEX_UNLOCK_PI"),
    (8, "FUTEX_TRYLOCK_PI"),
    (9, "FUTEX_WAIT_BITSET"),
    (10, "FUTEX_WAKE_BITSET"),
    (11, "FUTEX_WAIT_REQUEUE_PI"),
    (12, "FUTEX_CMP_REQUEUE_PI"),
    (13, "FUTEX_LOCK_PI2"),
];

/// Flags of a `futex` op above its command.
pub const FUTEX_OP_FLAGS: &Names = &[(128, "FUTEX_PRIVATE_FLAG"), (256, "FUTEX_CLOCK_REALTIME")];

/// Mask of the command in a `futex` op (`FUTEX_CMD_MASK`).
const FUTEX_CMD_MASK: u64 = 0x7f;

/// A `futex` op: the command's name (or its number), then [`FUTEX_OP_FLAGS`].
pub fn futex_op(value: u64) -> Vec<Cow<'static, str>> {
    let mut names = vec![enum_or_number(FUTEX_CMDS, value & FUTEX_CMD_MASK)];
    names.extend(flag_names(FUTEX_OP_FLAGS, value & !FUTEX_CMD_MASK));
    names
}

/// `seccomp` operations (`linux/seccomp.h`).
pub const SECCOMP_OPS: &Names = &[
    (0, "SECCOMP_SET_MODE_STRICT"),
    (1, "SECCOMP_SET_MODE_FILTER"),
    (2, "SECCOMP_GET_ACTION_AVAIL"),
    (3, "SECCOMP_GET_NOTIF_SIZES"),
];

/// `seccomp(SECCOMP_SET_MODE_FILTER)` flags.
pub const SECCOMP_FILTER_FLAGS: &Names = &[
    (1, "SECCOMP_FILTER_FLAG_TSYNC"),
    (2, "SECCOMP_FILTER_FLAG_LOG"),
    (4, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
    (8, "SECCOMP_FILTER_FLAG_NEW_LISTENER"),
    (16, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH"),
    (32, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
];

/// `lseek` whence (`linux/fs.h`).
pub const SEEK_WHENCE: &Names = &[
    (0, "SEEK_SET"),
    (1, "SEEK_CUR"),
    (2, "SEEK_END"),
    (3, "SEEK_DATA"),
    (4, "SEEK_HOLE"),
];

/// `membarrier` commands (`linux/membarrier.h`).
pub const MEMBARRIER_CMDS: &Names = &[
    (0, "MEMBARRIER_CMD_QUERY"),
    (1, "MEMBARRIER_CMD_GLOBAL"),
    (2, "MEMBARRIER_CMD_GLOBAL_EXPEDITED"),
    (4, "MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED"),
    (8, "MEMBARRIER_CMD_PRIVATE_EXPEDITED"),
    (16, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED"),
    (32, "MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE"),
    (64, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE"),
    (128, "MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ"),
    (256, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ"),
    (512, "MEMBARRIER_CMD_GET_REGISTRATIONS"),
];

/// `syslog` actions (`SYSLOG_ACTION_*`, `include/linux/syslog.h`).
pub const SYSLOG_ACTIONS: &Names = &[
    (0, "SYSLOG_ACTION_CLOSE"),
    (1, "SYSLOG_ACTION_OPEN"),
    (2, "SYSLOG_ACTION_READ"),
    (3, "SYSLOG_ACTION_READ_ALL"),
    (4, "SYSLOG_ACTION_READ_CLEAR"),
    (5, "SYSLOG_ACTION_CLEAR"),
    (6, "SYSLOG_ACTION_CONSOLE_OFF"),
    (7, "SYSLOG_ACTION_CONSOLE_ON"),
    (8, "SYSLOG_ACTION_CONSOLE_LEVEL"),
    (9, "SYSLOG_ACTION_SIZE_UNREAD"),
    (10, "SYSLOG_ACTION_SIZE_BUFFER"),
];

/// `mlock2` flags.
pub const MLOCK_FLAGS: &Names = &[(1, "MLOCK_ONFAULT")];

/// `eventfd2`/`signalfd4`/`pipe2`/`dup3`/`epoll_create1`/`inotify_init1` style flags: the
/// `O_NONBLOCK` and `O_CLOEXEC` bits, which these all take.
pub const NONBLOCK_CLOEXEC: &Names = &[(0o4000, "O_NONBLOCK"), (0o2000000, "O_CLOEXEC")];

/// `renameat2` flags (`linux/fs.h`).
pub const RENAME_FLAGS: &Names = &[
    (1, "RENAME_NOREPLACE"),
    (2, "RENAME_EXCHANGE"),
    (4, "RENAME_WHITEOUT"),
];

/// `shutdown`'s `how` (`sys/socket.h`).
pub const SHUT_HOW: &Names = &[(0, "SHUT_RD"), (1, "SHUT_WR"), (2, "SHUT_RDWR")];

/// `mlockall` flags (`asm-generic/mman-common.h`).
pub const MCL_FLAGS: &Names = &[(1, "MCL_CURRENT"), (2, "MCL_FUTURE"), (4, "MCL_ONFAULT")];

/// `setxattr` flags (`linux/xattr.h`).
pub const XATTR_FLAGS: &Names = &[(1, "XATTR_CREATE"), (2, "XATTR_REPLACE")];

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<Cow<'static, str>>) -> Vec<String> {
        v.into_iter().map(Cow::into_owned).collect()
    }

    #[test]
    fn flags_open_order_is_stable() {
        // O_CREAT | O_WRONLY | O_CLOEXEC, in whatever order the bits were or'ed.
        let value = 0o2000000 | 0o100 | 1;
        assert_eq!(
            names(open_flags(Arch::X86_64, value)),
            ["O_WRONLY", "O_CREAT", "O_CLOEXEC"]
        );
        assert_eq!(names(open_flags(Arch::X86_64, 0)), ["O_RDONLY"]);
        assert_eq!(names(open_flags(Arch::X86_64, 3)), ["O_ACCMODE"]);
    }

    #[test]
    fn flags_open_composites_and_arch() {
        let cases: [(Arch, u64, &[&str]); 7] = [
            (Arch::X86_64, 0o4010002, &["O_RDWR", "O_SYNC"]),
            (Arch::X86_64, 0o10000, &["O_RDONLY", "O_DSYNC"]),
            (Arch::X86_64, 0o20200002, &["O_RDWR", "O_TMPFILE"]),
            (Arch::X86_64, 0o200000, &["O_RDONLY", "O_DIRECTORY"]),
            (Arch::Aarch64, 0o40000, &["O_RDONLY", "O_DIRECTORY"]),
            (Arch::X86_64, 0o40000, &["O_RDONLY", "O_DIRECT"]),
            (Arch::Aarch64, 0o20040000, &["O_RDONLY", "O_TMPFILE"]),
        ];
        for (arch, value, want) in cases {
            assert_eq!(names(open_flags(arch, value)), want, "{arch:?} {value:#o}");
        }
    }

    #[test]
    fn flags_unknown_bits_come_last() {
        assert_eq!(
            names(flag_names(MNT_FLAGS, 2 | 0x100 | 0x8000)),
            ["MNT_DETACH", "0x8100"]
        );
        assert_eq!(names(flag_names(PROT_FLAGS, 0)), ["PROT_NONE"]);
        assert_eq!(names(flag_names(PROT_FLAGS, 5)), ["PROT_READ", "PROT_EXEC"]);
        assert!(flag_names(MNT_FLAGS, 0).is_empty());
    }

    #[test]
    fn flags_compound_values() {
        assert_eq!(
            names(sock_type(1 | 0o2000000)),
            ["SOCK_STREAM", "SOCK_CLOEXEC"]
        );
        assert_eq!(names(sock_type(0xf)), ["15"]);
        assert_eq!(
            names(clone_flags(0x100 | 0x10000 | 17)),
            ["CLONE_VM", "CLONE_THREAD", "SIGCHLD"]
        );
        assert_eq!(
            names(namespace_flags(0x80 | 0x20000)),
            ["CLONE_NEWTIME", "CLONE_NEWNS"]
        );
        assert_eq!(
            names(mmap_flags(2 | 0x20)),
            ["MAP_PRIVATE", "MAP_ANONYMOUS"]
        );
        assert_eq!(
            names(futex_op(128 | 9)),
            ["FUTEX_WAIT_BITSET", "FUTEX_PRIVATE_FLAG"]
        );
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(34), "SIGRTMIN+2");
        assert_eq!(signal_name(0), "0");
        assert_eq!(names(signal_set(1 << 8 | 1 << 16)), ["SIGKILL", "SIGCHLD"]);
    }

    #[test]
    fn flags_tables_have_unique_names_and_values() {
        let tables: &[&Names] = &[
            O_ACCESS_MODES,
            O_FLAGS_X86_64,
            O_FLAGS_AARCH64,
            AT_FLAGS,
            ACCESS_MODES,
            MS_FLAGS,
            MNT_FLAGS,
            SOCK_TYPES,
            SOCK_FLAGS,
            AF_FAMILIES,
            IPPROTO,
            MSG_FLAGS,
            IN_FLAGS,
            CLOCKS,
            CLONE_FLAGS,
            PROT_FLAGS,
            MAP_TYPES,
            MAP_FLAGS,
            MADV,
            SIGNALS,
            SA_FLAGS,
            FCNTL_CMDS,
            PRCTL_OPTIONS,
            PTRACE_REQUESTS,
            RLIMITS,
            SOL_LEVELS,
            SO_OPTIONS,
            FUTEX_CMDS,
            SECCOMP_OPS,
            SECCOMP_FILTER_FLAGS,
            SEEK_WHENCE,
            MEMBARRIER_CMDS,
            SYSLOG_ACTIONS,
            RENAME_FLAGS,
            SHUT_HOW,
            MCL_FLAGS,
            XATTR_FLAGS,
        ];
        for table in tables {
            for (i, (v, n)) in table.iter().enumerate() {
                for (v2, n2) in &table[i + 1..] {
                    assert_ne!(v, v2, "{n} and {n2}");
                    assert_ne!(n, n2);
                }
            }
        }
    }
}
