//! Typed, named arguments of a traced syscall, from the raw [`TraceEvent`] the probes send.
//!
//! Each syscall swoll knows has a row of `(name, Kind)` pairs, one per argument in order, named
//! as in its man page; a closed set of `Kind` decoders turns the raw `u64` (and the bytes the
//! probe captured for it) into JSON. Which data slot holds an argument's bytes comes from
//! [`capture_for`], the same rows that told the probe what to capture, so the two cannot
//! disagree. Syscalls without a row, and numbers beyond the tables, get the generic form
//! `{"arg0": "0x…", …, "arg5": "0x…"}`.
//!
//! The event's bytes come from a traced process and the kernel: every length is bounded by the
//! arrays, strings are converted lossily, and nothing here panics, whatever the input.

use serde_json::{Map, Value};
use swoll_maps_schema::trace::{
    ARGV_MORE, AT_ENTER, CAPTURE_BUF_LEN, CAPTURE_BUF_RET, CAPTURE_SOCKADDR, CAPTURE_SOCKADDR_OUT,
    CAPTURE_STR, CAPTURE_STRUCT, Capture, SyscallCapture, TRUNCATED, TraceEvent,
};

use super::capture::{
    ITIMERSPEC_BYTES, RLIMIT_BYTES, SIGACTION_BYTES, TIMESPEC_BYTES, capture_for,
};
use super::flags::{self, Names};
use super::sockaddr;
use crate::syscalls::{Arch, describe};

/// How one argument is decoded. The integer kinds cast the raw register to the C type of the
/// argument, so `-1` of an `int` shows as `-1`, not `4294967295`.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `int`, `pid_t`: signed 32 bits.
    Int,
    /// `unsigned int`, `uid_t`, `socklen_t`: unsigned 32 bits.
    UInt,
    /// `long`, `off_t`, `loff_t`: signed 64 bits.
    Long,
    /// `size_t`, `unsigned long`: unsigned 64 bits.
    ULong,
    /// A pointer (or an opaque value): `0x…`.
    Hex,
    /// A file descriptor (`int`).
    Fd,
    /// A directory fd of an `*at` call: `AT_FDCWD`, else the number.
    DirFd,
    /// A `mode_t`: octal, `0644`.
    Mode,
    /// An `int` flag set, by table.
    Flags(&'static Names),
    /// An `unsigned long` flag set, by table.
    Flags64(&'static Names),
    /// An `int` enumeration, by table: the name or the decimal value.
    Enum(&'static Names),
    /// `open` flags: access mode, then flags, per architecture.
    OpenFlags,
    /// `socket`'s type: the type, then `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    SockType,
    /// `socket`'s protocol: an `IPPROTO_*` name for `AF_INET`/`AF_INET6` (argument 0).
    Protocol,
    /// `setsockopt`'s option: an `SO_*` name at level `SOL_SOCKET` (argument 1).
    SockOpt,
    /// `fcntl`'s third argument, whose type depends on the command (argument 1).
    FcntlArg,
    /// `clone` flags with the exit signal in the low byte.
    CloneFlags,
    /// `setns`/`unshare` namespace flags.
    NamespaceFlags,
    /// `mmap` flags: mapping type, then flags.
    MmapFlags,
    /// A `futex` op: command, then flags.
    FutexOp,
    /// A signal number.
    Signal,
    /// A captured NUL-terminated string (a path, an attribute name); `null` if not captured.
    Str,
    /// A captured buffer that holds text (a link target, a host name); `null` if not captured.
    Text,
    /// A captured data buffer, as base64; left out if not captured.
    Buf,
    /// A captured sockaddr, as a [`sockaddr::SockAddr`]; `null` if not captured.
    SockAddr,
    /// execve's argv, from the event's argv slots.
    Argv,
    /// A captured `struct timespec`: `{sec, nsec}`.
    Timespec,
    /// A captured `struct timeval`: `{sec, usec}`.
    Timeval,
    /// A captured `struct rlimit`: `{cur, max}`, `RLIM_INFINITY` for the maximum.
    Rlimit,
    /// A captured `struct itimerspec`: `{interval, value}`.
    Itimerspec,
    /// A captured kernel `struct sigaction`: `{handler, flags, mask}`.
    Sigaction,
}

use Kind::*;

/// One syscall's arguments, in order: `(name, kind)`.
type Row = &'static [(&'static str, Kind)];

/// A pathname after a directory fd, the usual start of an `*at` call.
const AT: [(&str, Kind); 2] = [("dir_fd", DirFd), ("pathname", Str)];

/// The argument row of the syscall called `name` on `arch`, if swoll decodes it.
fn row(arch: Arch, name: &str) -> Option<Row> {
    let row: Row = match name {
        // Files.
        "read" | "write" => &[("fd", Fd), ("buf", Buf), ("count", ULong)],
        "pread64" | "pwrite64" => &[("fd", Fd), ("buf", Buf), ("count", ULong), ("offset", Long)],
        "open" => &[("pathname", Str), ("flags", OpenFlags), ("mode", Mode)],
        "openat" => &[AT[0], AT[1], ("flags", OpenFlags), ("mode", Mode)],
        "openat2" => &[AT[0], AT[1], ("how", Hex), ("size", ULong)],
        "creat" => &[("pathname", Str), ("mode", Mode)],
        "close" | "fsync" | "fdatasync" | "fchdir" | "syncfs" => &[("fd", Fd)],
        "stat" | "lstat" => &[("pathname", Str), ("statbuf", Hex)],
        "fstat" => &[("fd", Fd), ("statbuf", Hex)],
        "newfstatat" => &[
            AT[0],
            AT[1],
            ("statbuf", Hex),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "statx" => &[
            AT[0],
            AT[1],
            ("flags", Flags(flags::AT_FLAGS)),
            ("mask", Hex),
            ("statxbuf", Hex),
        ],
        "statfs" => &[("path", Str), ("buf", Hex)],
        "fstatfs" => &[("fd", Fd), ("buf", Hex)],
        "access" => &[("pathname", Str), ("mode", Flags(flags::ACCESS_MODES))],
        "faccessat" => &[AT[0], AT[1], ("mode", Flags(flags::ACCESS_MODES))],
        "faccessat2" => &[
            AT[0],
            AT[1],
            ("mode", Flags(flags::ACCESS_MODES)),
            ("flags", Flags(flags::AT_ACCESS_FLAGS)),
        ],
        "unlink" | "rmdir" => &[("pathname", Str)],
        "unlinkat" => &[AT[0], AT[1], ("flags", Flags(flags::AT_UNLINK_FLAGS))],
        "mkdir" => &[("pathname", Str), ("mode", Mode)],
        "mkdirat" => &[AT[0], AT[1], ("mode", Mode)],
        "mknod" => &[("pathname", Str), ("mode", Mode), ("dev", ULong)],
        "mknodat" => &[AT[0], AT[1], ("mode", Mode), ("dev", ULong)],
        "chdir" | "chroot" => &[("path", Str)],
        "link" | "rename" => &[("oldpath", Str), ("newpath", Str)],
        "linkat" => &[
            ("olddir_fd", DirFd),
            ("oldpath", Str),
            ("newdir_fd", DirFd),
            ("newpath", Str),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "renameat" => &[
            ("olddir_fd", DirFd),
            ("oldpath", Str),
            ("newdir_fd", DirFd),
            ("newpath", Str),
        ],
        "renameat2" => &[
            ("olddir_fd", DirFd),
            ("oldpath", Str),
            ("newdir_fd", DirFd),
            ("newpath", Str),
            ("flags", Flags(flags::RENAME_FLAGS)),
        ],
        "symlink" => &[("target", Str), ("linkpath", Str)],
        "symlinkat" => &[("target", Str), ("newdir_fd", DirFd), ("linkpath", Str)],
        "readlink" => &[("pathname", Str), ("buf", Text), ("bufsiz", ULong)],
        "readlinkat" => &[AT[0], AT[1], ("buf", Text), ("bufsiz", ULong)],
        "chmod" => &[("pathname", Str), ("mode", Mode)],
        "fchmod" => &[("fd", Fd), ("mode", Mode)],
        "fchmodat" => &[AT[0], AT[1], ("mode", Mode)],
        "chown" | "lchown" => &[("pathname", Str), ("owner", UInt), ("group", UInt)],
        "fchown" => &[("fd", Fd), ("owner", UInt), ("group", UInt)],
        "fchownat" => &[
            AT[0],
            AT[1],
            ("owner", UInt),
            ("group", UInt),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "truncate" => &[("path", Str), ("length", Long)],
        "ftruncate" => &[("fd", Fd), ("length", Long)],
        "utimensat" => &[
            AT[0],
            AT[1],
            ("times", Hex),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "lseek" => &[
            ("fd", Fd),
            ("offset", Long),
            ("whence", Enum(flags::SEEK_WHENCE)),
        ],
        "getdents" | "getdents64" => &[("fd", Fd), ("dirp", Hex), ("count", UInt)],
        "getcwd" => &[("buf", Hex), ("size", ULong)],
        "fcntl" => &[
            ("fd", Fd),
            ("cmd", Enum(flags::FCNTL_CMDS)),
            ("arg", FcntlArg),
        ],
        "ioctl" => &[("fd", Fd), ("request", Hex), ("arg", Hex)],
        "dup" => &[("oldfd", Fd)],
        "dup2" => &[("oldfd", Fd), ("newfd", Fd)],
        "dup3" => &[
            ("oldfd", Fd),
            ("newfd", Fd),
            ("flags", Flags(flags::NONBLOCK_CLOEXEC)),
        ],
        "pipe" => &[("pipefd", Hex)],
        "pipe2" => &[("pipefd", Hex), ("flags", Flags(flags::NONBLOCK_CLOEXEC))],
        "umask" => &[("mask", Mode)],
        "inotify_add_watch" => &[
            ("fd", Fd),
            ("pathname", Str),
            ("mask", Flags(flags::IN_FLAGS)),
        ],
        "inotify_init1" | "epoll_create1" => &[("flags", Flags(flags::NONBLOCK_CLOEXEC))],
        "eventfd2" => &[("initval", UInt), ("flags", Flags(flags::NONBLOCK_CLOEXEC))],
        "memfd_create" => &[("name", Str), ("flags", Hex)],
        "setxattr" | "lsetxattr" => &[
            ("path", Str),
            ("name", Str),
            ("value", Hex),
            ("size", ULong),
            ("flags", Flags(flags::XATTR_FLAGS)),
        ],
        "getxattr" | "lgetxattr" => &[
            ("path", Str),
            ("name", Str),
            ("value", Hex),
            ("size", ULong),
        ],
        "listxattr" | "llistxattr" => &[("path", Str), ("list", Hex), ("size", ULong)],
        "removexattr" | "lremovexattr" => &[("path", Str), ("name", Str)],
        "fsetxattr" => &[
            ("fd", Fd),
            ("name", Str),
            ("value", Hex),
            ("size", ULong),
            ("flags", Flags(flags::XATTR_FLAGS)),
        ],
        "fgetxattr" => &[("fd", Fd), ("name", Str), ("value", Hex), ("size", ULong)],
        "fremovexattr" => &[("fd", Fd), ("name", Str)],
        "setxattrat" | "getxattrat" => &[
            AT[0],
            ("path", Str),
            ("at_flags", Flags(flags::AT_FLAGS)),
            ("name", Str),
            ("args", Hex),
            ("size", ULong),
        ],
        "removexattrat" => &[
            AT[0],
            ("path", Str),
            ("at_flags", Flags(flags::AT_FLAGS)),
            ("name", Str),
        ],
        "listxattrat" => &[
            AT[0],
            ("path", Str),
            ("at_flags", Flags(flags::AT_FLAGS)),
            ("list", Hex),
            ("size", ULong),
        ],
        "fchmodat2" => &[
            AT[0],
            AT[1],
            ("mode", Mode),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "utime" | "utimes" => &[("filename", Str), ("times", Hex)],
        "futimesat" => &[AT[0], AT[1], ("times", Hex)],
        "uselib" => &[("library", Str)],
        "name_to_handle_at" => &[
            AT[0],
            AT[1],
            ("handle", Hex),
            ("mount_id", Hex),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "mq_open" => &[
            ("name", Str),
            ("oflag", OpenFlags),
            ("mode", Mode),
            ("attr", Hex),
        ],
        "mq_unlink" => &[("name", Str)],
        "lookup_dcookie" => &[("cookie", ULong), ("buffer", Hex), ("len", ULong)],
        // File systems.
        "mount" => &[
            ("source", Str),
            ("target", Str),
            ("filesystemtype", Hex),
            ("mountflags", Flags64(flags::MS_FLAGS)),
            ("data", Hex),
        ],
        "umount2" => &[("target", Str), ("flags", Flags(flags::MNT_FLAGS))],
        "pivot_root" => &[("new_root", Str), ("put_old", Str)],
        "acct" => &[("filename", Str)],
        "swapon" => &[("path", Str), ("swapflags", Hex)],
        "swapoff" => &[("path", Str)],
        "open_tree" | "fspick" => &[AT[0], ("path", Str), ("flags", Hex)],
        "open_tree_attr" | "mount_setattr" => &[
            AT[0],
            ("path", Str),
            ("flags", Hex),
            ("attr", Hex),
            ("size", ULong),
        ],
        "move_mount" => &[
            ("from_dir_fd", DirFd),
            ("from_path", Str),
            ("to_dir_fd", DirFd),
            ("to_path", Str),
            ("flags", Hex),
        ],
        "fsopen" => &[("fsname", Str), ("flags", Hex)],
        // Processes.
        "execve" => &[("pathname", Str), ("argv", Argv), ("envp", Hex)],
        "execveat" => &[
            AT[0],
            AT[1],
            ("argv", Argv),
            ("envp", Hex),
            ("flags", Flags(flags::AT_FLAGS)),
        ],
        "clone" => match arch {
            Arch::X86_64 => &[
                ("flags", CloneFlags),
                ("stack", Hex),
                ("parent_tid", Hex),
                ("child_tid", Hex),
                ("tls", Hex),
            ],
            Arch::Aarch64 => &[
                ("flags", CloneFlags),
                ("stack", Hex),
                ("parent_tid", Hex),
                ("tls", Hex),
                ("child_tid", Hex),
            ],
        },
        "clone3" => &[("cl_args", Hex), ("size", ULong)],
        "exit" | "exit_group" => &[("status", Int)],
        "kill" | "tkill" => &[("pid", Int), ("sig", Signal)],
        "tgkill" => &[("tgid", Int), ("tid", Int), ("sig", Signal)],
        "getpid" | "getppid" | "gettid" | "getuid" | "geteuid" | "getgid" | "getegid"
        | "getpgrp" | "setsid" | "fork" | "vfork" | "pause" | "sync" | "sched_yield"
        | "munlockall" | "inotify_init" => &[],
        "setuid" => &[("uid", UInt)],
        "setgid" => &[("gid", UInt)],
        "setns" => &[("fd", Fd), ("nstype", NamespaceFlags)],
        "unshare" => &[("flags", NamespaceFlags)],
        "prctl" => &[
            ("option", Enum(flags::PRCTL_OPTIONS)),
            ("arg2", Hex),
            ("arg3", Hex),
            ("arg4", Hex),
            ("arg5", Hex),
        ],
        "ptrace" => &[
            ("request", Enum(flags::PTRACE_REQUESTS)),
            ("pid", Int),
            ("addr", Hex),
            ("data", Hex),
        ],
        "seccomp" => &[
            ("operation", Enum(flags::SECCOMP_OPS)),
            ("flags", Flags(flags::SECCOMP_FILTER_FLAGS)),
            ("args", Hex),
        ],
        "prlimit64" => &[
            ("pid", Int),
            ("resource", Enum(flags::RLIMITS)),
            ("new_limit", Rlimit),
            ("old_limit", Rlimit),
        ],
        "getrlimit" | "setrlimit" => &[("resource", Enum(flags::RLIMITS)), ("rlim", Rlimit)],
        "init_module" => &[("module_image", Hex), ("len", ULong), ("param_values", Hex)],
        "finit_module" => &[("fd", Fd), ("param_values", Hex), ("flags", Hex)],
        "syslog" => &[
            ("type", Enum(flags::SYSLOG_ACTIONS)),
            ("bufp", Hex),
            ("len", Int),
        ],
        "sethostname" | "setdomainname" => &[("name", Text), ("len", ULong)],
        "alarm" => &[("seconds", UInt)],
        // Memory.
        "brk" => &[("addr", Hex)],
        "mmap" => &[
            ("addr", Hex),
            ("length", ULong),
            ("prot", Flags(flags::PROT_FLAGS)),
            ("flags", MmapFlags),
            ("fd", Fd),
            ("offset", Long),
        ],
        "munmap" => &[("addr", Hex), ("length", ULong)],
        "mprotect" => &[
            ("addr", Hex),
            ("len", ULong),
            ("prot", Flags(flags::PROT_FLAGS)),
        ],
        "madvise" => &[
            ("addr", Hex),
            ("length", ULong),
            ("advice", Enum(flags::MADV)),
        ],
        "mincore" => &[("addr", Hex), ("length", ULong), ("vec", Hex)],
        "mlock" | "munlock" => &[("addr", Hex), ("len", ULong)],
        "mlock2" => &[
            ("addr", Hex),
            ("len", ULong),
            ("flags", Flags(flags::MLOCK_FLAGS)),
        ],
        "mlockall" => &[("flags", Flags(flags::MCL_FLAGS))],
        "membarrier" => &[
            ("cmd", Enum(flags::MEMBARRIER_CMDS)),
            ("flags", UInt),
            ("cpu_id", Int),
        ],
        // Sockets.
        "socket" => &[
            ("domain", Enum(flags::AF_FAMILIES)),
            ("type", SockType),
            ("protocol", Protocol),
        ],
        "connect" | "bind" => &[("sockfd", Fd), ("addr", SockAddr), ("addrlen", UInt)],
        "accept" | "getpeername" | "getsockname" => {
            &[("sockfd", Fd), ("addr", SockAddr), ("addrlen", Hex)]
        }
        "accept4" => &[
            ("sockfd", Fd),
            ("addr", SockAddr),
            ("addrlen", Hex),
            ("flags", Flags(flags::SOCK_FLAGS)),
        ],
        "listen" => &[("sockfd", Fd), ("backlog", Int)],
        "shutdown" => &[("sockfd", Fd), ("how", Enum(flags::SHUT_HOW))],
        "sendto" => &[
            ("sockfd", Fd),
            ("buf", Buf),
            ("len", ULong),
            ("flags", Flags(flags::MSG_FLAGS)),
            ("dest_addr", SockAddr),
            ("addrlen", UInt),
        ],
        "recvfrom" => &[
            ("sockfd", Fd),
            ("buf", Buf),
            ("len", ULong),
            ("flags", Flags(flags::MSG_FLAGS)),
            ("src_addr", SockAddr),
            ("addrlen", Hex),
        ],
        "sendmsg" | "recvmsg" => &[
            ("sockfd", Fd),
            ("msg", Hex),
            ("flags", Flags(flags::MSG_FLAGS)),
        ],
        "setsockopt" => &[
            ("sockfd", Fd),
            ("level", Enum(flags::SOL_LEVELS)),
            ("optname", SockOpt),
            ("optval", Hex),
            ("optlen", UInt),
        ],
        "getsockopt" => &[
            ("sockfd", Fd),
            ("level", Enum(flags::SOL_LEVELS)),
            ("optname", SockOpt),
            ("optval", Hex),
            ("optlen", Hex),
        ],
        // Waiting.
        "poll" => &[("fds", Hex), ("nfds", ULong), ("timeout", Int)],
        "ppoll" => &[
            ("fds", Hex),
            ("nfds", ULong),
            ("tmo_p", Hex),
            ("sigmask", Hex),
            ("sigsetsize", ULong),
        ],
        "select" => &[
            ("nfds", Int),
            ("readfds", Hex),
            ("writefds", Hex),
            ("exceptfds", Hex),
            ("timeout", Timeval),
        ],
        "pselect6" => &[
            ("nfds", Int),
            ("readfds", Hex),
            ("writefds", Hex),
            ("exceptfds", Hex),
            ("timeout", Timespec),
            ("sigmask", Hex),
        ],
        "epoll_wait" => &[
            ("epfd", Fd),
            ("events", Hex),
            ("maxevents", Int),
            ("timeout", Int),
        ],
        "epoll_pwait" => &[
            ("epfd", Fd),
            ("events", Hex),
            ("maxevents", Int),
            ("timeout", Int),
            ("sigmask", Hex),
            ("sigsetsize", ULong),
        ],
        "epoll_ctl" => &[
            ("epfd", Fd),
            ("op", Enum(flags::EPOLL_CTL_OPS)),
            ("fd", Fd),
            ("event", Hex),
        ],
        "futex" => &[
            ("uaddr", Hex),
            ("futex_op", FutexOp),
            ("val", UInt),
            ("timeout", Hex),
            ("uaddr2", Hex),
            ("val3", UInt),
        ],
        "nanosleep" => &[("req", Timespec), ("rem", Hex)],
        "clock_nanosleep" => &[
            ("clockid", Enum(flags::CLOCKS)),
            ("flags", Flags(flags::TIMER_FLAGS)),
            ("request", Timespec),
            ("remain", Hex),
        ],
        "timerfd_create" => &[
            ("clockid", Enum(flags::CLOCKS)),
            ("flags", Flags(flags::TFD_CREATE_FLAGS)),
        ],
        "timerfd_settime" => &[
            ("fd", Fd),
            ("flags", Flags(flags::TFD_SETTIME_FLAGS)),
            ("new_value", Itimerspec),
            ("old_value", Itimerspec),
        ],
        "rt_sigaction" => &[
            ("signum", Signal),
            ("act", Sigaction),
            ("oldact", Sigaction),
            ("sigsetsize", ULong),
        ],
        _ => return None,
    };
    Some(row)
}

/// The syscall's argument row, by number.
fn row_for(arch: Arch, nr: u32) -> Option<Row> {
    let info = describe(arch, nr);
    row(arch, info.name.strip_prefix("sys_").unwrap_or(&info.name))
}

/// The typed, named arguments of the call in `ev`, a syscall of `arch`: `{"dir_fd":
/// "AT_FDCWD", "pathname": "/tmp/x", "flags": ["O_WRONLY", "O_CREAT"], "mode": "0644"}` for
/// an `openat`, the generic `{"arg0": "0x…", …}` for a syscall swoll has no row for. Never
/// panics, whatever the event's bytes.
pub fn args(arch: Arch, ev: &TraceEvent) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(row) = row_for(arch, ev.nr) else {
        for (i, raw) in ev.args.iter().enumerate() {
            out.insert(format!("arg{i}"), hex(*raw));
        }
        return out;
    };
    let layout = capture_for(arch, ev.nr, u32::MAX);
    let decoder = Decoder { arch, ev, layout };
    for (i, &(name, kind)) in row.iter().enumerate() {
        decoder.arg(&mut out, name, i, kind);
    }
    out
}

/// The arguments on one line, `name=value, name=value`, in argument order, for the CLI: flags
/// joined with `|`, sockaddrs as their `decoded` form, strings quoted only when they need it.
pub fn cli_args(arch: Arch, ev: &TraceEvent) -> String {
    let mut map = args(arch, ev);
    let mut parts = Vec::with_capacity(map.len());
    for &(name, _) in row_for(arch, ev.nr).unwrap_or_default() {
        for key in [name.to_owned(), format!("{name}_truncated")] {
            if let Some(value) = map.remove(&key) {
                parts.push(format!("{key}={}", cli_value(&key, &value)));
            }
        }
    }
    // Whatever no row names (the generic form's arg0..arg5, in order).
    for (key, value) in &map {
        parts.push(format!("{key}={}", cli_value(key, value)));
    }
    parts.join(", ")
}

/// One value of [`cli_args`].
fn cli_value(key: &str, value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => cli_str(s),
        Value::Array(items) if key != "argv" && items.iter().all(Value::is_string) => {
            if items.is_empty() {
                return "0".to_owned();
            }
            let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            names.join("|")
        }
        Value::Object(fields) => match fields.get("decoded") {
            Some(Value::String(s)) => cli_str(s),
            _ => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// A string for the CLI: bare if it reads unambiguously, else JSON-quoted.
fn cli_str(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '=' | '"' | '\\'));
    if plain {
        s.to_owned()
    } else {
        Value::from(s).to_string()
    }
}

/// Decodes the arguments of one event.
struct Decoder<'a> {
    arch: Arch,
    ev: &'a TraceEvent,
    /// What the probe was told to capture for this syscall, with buffers on, to find slots.
    layout: SyscallCapture,
}

impl Decoder<'_> {
    /// Raw argument `i` (0 beyond the six).
    fn raw(&self, i: usize) -> u64 {
        self.ev.args.get(i).copied().unwrap_or(0)
    }

    /// The data slot capturing argument `arg` as one of `kinds`, and its capture.
    fn slot(&self, arg: usize, kinds: &[u8]) -> Option<(usize, Capture)> {
        self.layout
            .captures
            .iter()
            .enumerate()
            .find(|(_, c)| usize::from(c.arg) == arg && kinds.contains(&(c.kind & !AT_ENTER)))
            .map(|(slot, c)| (slot, *c))
    }

    /// The bytes captured for argument `arg` as one of `kinds` (empty if none).
    fn bytes(&self, arg: usize, kinds: &[u8]) -> &[u8] {
        self.slot(arg, kinds)
            .map_or(&[][..], |(slot, _)| self.ev.captured.data(slot))
    }

    /// Decodes argument `i` of `kind` into `out` under `name`, with its companions
    /// (`<name>_truncated`, `argv_truncated`).
    fn arg(&self, out: &mut Map<String, Value>, name: &str, i: usize, kind: Kind) {
        let raw = self.raw(i);
        let value = match kind {
            Int | Fd => Value::from(raw as i32),
            UInt => Value::from(raw as u32),
            Long => Value::from(raw as i64),
            ULong => Value::from(raw),
            Hex => hex(raw),
            DirFd => match raw as i32 {
                flags::AT_FDCWD => Value::from("AT_FDCWD"),
                fd => Value::from(fd),
            },
            Mode => Value::from(format!("{:04o}", raw as u32)),
            Flags(table) => names(flags::flag_names(table, u64::from(raw as u32))),
            Flags64(table) => names(flags::flag_names(table, raw)),
            Enum(table) => Value::from(flags::enum_or_number(table, u64::from(raw as u32))),
            OpenFlags => names(flags::open_flags(self.arch, u64::from(raw as u32))),
            SockType => names(flags::sock_type(u64::from(raw as u32))),
            Protocol => self.protocol(raw),
            SockOpt => self.sockopt(raw),
            FcntlArg => self.fcntl_arg(raw),
            CloneFlags => names(flags::clone_flags(raw)),
            NamespaceFlags => names(flags::namespace_flags(u64::from(raw as u32))),
            MmapFlags => names(flags::mmap_flags(raw)),
            FutexOp => names(flags::futex_op(u64::from(raw as u32))),
            Signal => Value::from(flags::signal_name(u64::from(raw as u32))),
            Str => {
                let Some((slot, capture)) = self.slot(i, &[CAPTURE_STR]) else {
                    return;
                };
                let bytes = self.ev.captured.data(slot);
                if bytes.is_empty() {
                    Value::Null
                } else {
                    let filled = bytes.len() >= capture.max as usize;
                    if filled && self.ev.captured.flags & TRUNCATED != 0 {
                        out.insert(format!("{name}_truncated"), Value::Bool(true));
                    }
                    Value::from(text(bytes))
                }
            }
            Text => match self.bytes(i, &[CAPTURE_BUF_RET, CAPTURE_BUF_LEN]) {
                [] => Value::Null,
                bytes => Value::from(text(bytes)),
            },
            Buf => match self.bytes(i, &[CAPTURE_BUF_RET, CAPTURE_BUF_LEN]) {
                [] => return,
                bytes => Value::from(base64(bytes)),
            },
            SockAddr => self.sockaddr(i),
            Argv => {
                let argv: Vec<Value> = self
                    .ev
                    .captured
                    .argv()
                    .map(|a| Value::from(text(a)))
                    .collect();
                out.insert(name.to_owned(), Value::Array(argv));
                if self.ev.captured.flags & ARGV_MORE != 0 {
                    out.insert(format!("{name}_truncated"), Value::Bool(true));
                }
                return;
            }
            Timespec => self.structure(i, TIMESPEC_BYTES, |b| timespec(b, "nsec")),
            Timeval => self.structure(i, TIMESPEC_BYTES, |b| timespec(b, "usec")),
            Rlimit => self.structure(i, RLIMIT_BYTES, rlimit),
            Itimerspec => self.structure(i, ITIMERSPEC_BYTES, |b| {
                let mut m = Map::new();
                m.insert("interval".into(), timespec(b, "nsec"));
                let value = b.get(TIMESPEC_BYTES as usize..).unwrap_or_default();
                m.insert("value".into(), timespec(value, "nsec"));
                Value::Object(m)
            }),
            Sigaction => self.structure(i, SIGACTION_BYTES, sigaction),
        };
        out.insert(name.to_owned(), value);
    }

    /// The sockaddr captured for argument `i`, or `null` (not captured, or the call failed
    /// before the kernel filled it in).
    fn sockaddr(&self, i: usize) -> Value {
        let Some((slot, capture)) = self.slot(i, &[CAPTURE_SOCKADDR, CAPTURE_SOCKADDR_OUT]) else {
            return Value::Null;
        };
        let bytes = self.ev.captured.data(slot);
        if bytes.is_empty() || (capture.kind == CAPTURE_SOCKADDR_OUT && self.ev.ret < 0) {
            return Value::Null;
        }
        serde_json::to_value(sockaddr::decode(bytes)).unwrap_or(Value::Null)
    }

    /// The struct of `size` bytes captured for argument `i`, decoded by `decode`, or `null` if
    /// fewer bytes were captured (a NULL or bad pointer).
    fn structure(&self, i: usize, size: u32, decode: impl Fn(&[u8]) -> Value) -> Value {
        match self.bytes(i, &[CAPTURE_STRUCT]) {
            bytes if bytes.len() >= size as usize => decode(bytes),
            _ => Value::Null,
        }
    }

    /// `socket`'s protocol, by the domain in argument 0.
    fn protocol(&self, raw: u64) -> Value {
        const AF_INET: u32 = 2;
        const AF_INET6: u32 = 10;
        let protocol = u64::from(raw as u32);
        match self.raw(0) as u32 {
            AF_INET | AF_INET6 => Value::from(flags::enum_or_number(flags::IPPROTO, protocol)),
            _ => Value::from(raw as i32),
        }
    }

    /// A socket option's name, by the level in argument 1.
    fn sockopt(&self, raw: u64) -> Value {
        let optname = u64::from(raw as u32);
        if u64::from(self.raw(1) as u32) == flags::SOL_SOCKET {
            Value::from(flags::enum_or_number(flags::SO_OPTIONS, optname))
        } else {
            Value::from(raw as i32)
        }
    }

    /// `fcntl`'s argument, by the command in argument 1: flags for `F_SETFL`/`F_SETFD`, a
    /// signal for `F_SETSIG`, a pointer for the lock and owner commands, else a number.
    fn fcntl_arg(&self, raw: u64) -> Value {
        match self.raw(1) as u32 {
            2 => names(flags::flag_names(flags::FD_FLAGS, u64::from(raw as u32))),
            4 => names(flags::open_flags(self.arch, u64::from(raw as u32))),
            10 => Value::from(flags::signal_name(u64::from(raw as u32))),
            5..=7 | 12..=17 | 36..=38 | 1035..=1038 => hex(raw),
            _ => Value::from(raw as i64),
        }
    }
}

/// A list of names as a JSON array.
fn names(names: Vec<std::borrow::Cow<'static, str>>) -> Value {
    Value::Array(names.into_iter().map(Value::from).collect())
}

/// A raw value as `0x…`.
fn hex(raw: u64) -> Value {
    Value::from(format!("{raw:#x}"))
}

/// Captured string bytes up to the first NUL, lossily as UTF-8.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `i`-th native-endian 64-bit word of `bytes` (0 if it is short).
fn word(bytes: &[u8], i: usize) -> u64 {
    bytes
        .get(i * 8..i * 8 + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// A `struct timespec` (`nsec`) or `struct timeval` (`usec`) at the start of `bytes`.
fn timespec(bytes: &[u8], fraction: &str) -> Value {
    let mut m = Map::new();
    m.insert("sec".into(), Value::from(word(bytes, 0) as i64));
    m.insert(fraction.into(), Value::from(word(bytes, 1) as i64));
    Value::Object(m)
}

/// A `struct rlimit`; `RLIM_INFINITY` (all ones) by name.
fn rlimit(bytes: &[u8]) -> Value {
    let limit = |v: u64| {
        if v == u64::MAX {
            Value::from("RLIM_INFINITY")
        } else {
            Value::from(v)
        }
    };
    let mut m = Map::new();
    m.insert("cur".into(), limit(word(bytes, 0)));
    m.insert("max".into(), limit(word(bytes, 1)));
    Value::Object(m)
}

/// The kernel's `struct sigaction`: handler, flags, restorer (not shown), mask.
fn sigaction(bytes: &[u8]) -> Value {
    let handler = match word(bytes, 0) {
        0 => Value::from("SIG_DFL"),
        1 => Value::from("SIG_IGN"),
        h => hex(h),
    };
    let mut m = Map::new();
    m.insert("handler".into(), handler);
    m.insert(
        "flags".into(),
        names(flags::flag_names(flags::SA_FLAGS, word(bytes, 1))),
    );
    m.insert("mask".into(), names(flags::signal_set(word(bytes, 3))));
    Value::Object(m)
}

/// Standard base64 with padding (RFC 4648), for captured buffers.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use swoll_maps_schema::trace::{ARGV_BYTES, ARGV_SLOTS, CAPTURE_NONE, DATA_BYTES, DATA_SLOTS};

    use super::*;
    use crate::syscalls::{max_nr, number};

    /// An event of syscall `name` (x86_64) with `args`.
    fn event(name: &str, args: [u64; 6]) -> TraceEvent {
        let mut ev = TraceEvent::zeroed();
        ev.nr = number(Arch::X86_64, name).unwrap_or(u32::MAX);
        ev.args = args;
        ev
    }

    /// Puts `bytes` in data slot `slot`.
    fn put(ev: &mut TraceEvent, slot: usize, bytes: &[u8]) {
        ev.captured.data[slot][..bytes.len()].copy_from_slice(bytes);
        ev.captured.data_len[slot] = bytes.len() as u16;
    }

    fn decode(ev: &TraceEvent) -> Value {
        Value::Object(args(Arch::X86_64, ev))
    }

    const AT_FDCWD: u64 = -100i64 as u64;

    #[test]
    fn decode_openat() {
        let flags = 0o100 | 1 | 0o2000000;
        let mut ev = event("openat", [AT_FDCWD, 0x7ffd_0000, flags, 0o644, 0, 0]);
        put(&mut ev, 0, b"/tmp/x\0");
        assert_eq!(
            decode(&ev),
            json!({
                "dir_fd": "AT_FDCWD",
                "pathname": "/tmp/x",
                "flags": ["O_WRONLY", "O_CREAT", "O_CLOEXEC"],
                "mode": "0644",
            })
        );
        assert_eq!(
            cli_args(Arch::X86_64, &ev),
            "dir_fd=AT_FDCWD, pathname=/tmp/x, flags=O_WRONLY|O_CREAT|O_CLOEXEC, mode=0644"
        );
        // The same call on aarch64, where openat is 56.
        ev.nr = 56;
        assert_eq!(
            Value::Object(args(Arch::Aarch64, &ev))["pathname"],
            "/tmp/x"
        );
    }

    #[test]
    fn decode_openat_fd_and_truncated_path() {
        let mut ev = event("openat", [3, 0, 0, 0, 0, 0]);
        put(&mut ev, 0, &[b'a'; DATA_BYTES]);
        ev.captured.flags = TRUNCATED;
        let got = decode(&ev);
        assert_eq!(got["dir_fd"], 3);
        assert_eq!(got["flags"], json!(["O_RDONLY"]));
        assert_eq!(got["pathname"].as_str().map(str::len), Some(DATA_BYTES));
        assert_eq!(got["pathname_truncated"], true);
    }

    #[test]
    fn decode_connect_ipv4() {
        let mut ev = event("connect", [3, 0x1000, 16, 0, 0, 0]);
        let mut addr = 2u16.to_ne_bytes().to_vec();
        addr.extend(8080u16.to_be_bytes());
        addr.extend([127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut ev, 0, &addr);
        assert_eq!(
            decode(&ev),
            json!({
                "sockfd": 3,
                "addr": {
                    "family": "AF_INET",
                    "address": "127.0.0.1",
                    "port": 8080,
                    "decoded": "ipv4:127.0.0.1:8080",
                },
                "addrlen": 16,
            })
        );
        assert_eq!(
            cli_args(Arch::X86_64, &ev),
            "sockfd=3, addr=ipv4:127.0.0.1:8080, addrlen=16"
        );
    }

    #[test]
    fn decode_accept_ipv6_and_failed_accept() {
        let mut ev = event("accept4", [3, 0x1000, 0x2000, 0o2000000, 0, 0]);
        let mut addr = 10u16.to_ne_bytes().to_vec();
        addr.extend(443u16.to_be_bytes());
        addr.extend([0; 4]);
        addr.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        addr.extend([0; 4]);
        put(&mut ev, 0, &addr);
        ev.ret = 4;
        let got = decode(&ev);
        assert_eq!(got["addr"]["decoded"], "ipv6:[::1]:443");
        assert_eq!(got["addr"]["port"], 443);
        assert_eq!(got["flags"], json!(["SOCK_CLOEXEC"]));
        ev.ret = -11;
        assert_eq!(decode(&ev)["addr"], Value::Null);
    }

    #[test]
    fn decode_bind_unix_path_and_abstract() {
        let mut ev = event("bind", [3, 0x1000, 20, 0, 0, 0]);
        let mut addr = 1u16.to_ne_bytes().to_vec();
        addr.extend(b"/run/a.sock\0");
        put(&mut ev, 0, &addr);
        assert_eq!(decode(&ev)["addr"]["decoded"], "unix:/run/a.sock");
        let mut addr = 1u16.to_ne_bytes().to_vec();
        addr.extend(b"\0abstract");
        put(&mut ev, 0, &addr);
        assert_eq!(decode(&ev)["addr"]["decoded"], "unix:@abstract");
        assert_eq!(decode(&ev)["addr"]["address"], "@abstract");
    }

    #[test]
    fn decode_execve_argv() {
        let mut ev = event("execve", [0x1000, 0x2000, 0x3000, 0, 0, 0]);
        put(&mut ev, 0, b"/bin/echo\0");
        for (i, a) in [b"a\0", b"b\0", b"c\0"].iter().enumerate() {
            ev.captured.argv[i][..2].copy_from_slice(*a);
            ev.captured.argv_len[i] = 2;
        }
        ev.captured.argc = 3;
        assert_eq!(
            decode(&ev),
            json!({"pathname": "/bin/echo", "argv": ["a", "b", "c"], "envp": "0x3000"})
        );
        assert_eq!(
            cli_args(Arch::X86_64, &ev),
            r#"pathname=/bin/echo, argv=["a","b","c"], envp=0x3000"#
        );
        ev.captured.flags = ARGV_MORE;
        assert_eq!(decode(&ev)["argv_truncated"], true);
    }

    #[test]
    fn decode_buffers_structs_and_signals() {
        let mut ev = event("write", [1, 0x1000, 5, 0, 0, 0]);
        assert_eq!(decode(&ev), json!({"fd": 1, "count": 5}));
        put(&mut ev, 0, b"hello");
        assert_eq!(decode(&ev)["buf"], "aGVsbG8=");

        let mut ev = event("prlimit64", [0, 7, 0x1000, 0, 0, 0]);
        let mut lim = 1024u64.to_ne_bytes().to_vec();
        lim.extend(u64::MAX.to_ne_bytes());
        put(&mut ev, 0, &lim);
        assert_eq!(
            decode(&ev),
            json!({
                "pid": 0,
                "resource": "RLIMIT_NOFILE",
                "new_limit": {"cur": 1024, "max": "RLIM_INFINITY"},
                "old_limit": null,
            })
        );

        let mut ev = event("nanosleep", [0x1000, 0, 0, 0, 0, 0]);
        let mut ts = 1u64.to_ne_bytes().to_vec();
        ts.extend(500u64.to_ne_bytes());
        put(&mut ev, 0, &ts);
        assert_eq!(decode(&ev)["req"], json!({"sec": 1, "nsec": 500}));

        let ev = event("kill", [-1i64 as u64, 9, 0, 0, 0, 0]);
        assert_eq!(decode(&ev), json!({"pid": -1, "sig": "SIGKILL"}));
        assert_eq!(cli_args(Arch::X86_64, &ev), "pid=-1, sig=SIGKILL");
    }

    #[test]
    fn decode_unknown_syscalls_are_generic() {
        let mut ev = event("getpid", [1, 2, 3, 0xff, 0, u64::MAX]);
        assert_eq!(decode(&ev), json!({}));
        ev.nr = 5000;
        assert_eq!(
            decode(&ev),
            json!({
                "arg0": "0x1", "arg1": "0x2", "arg2": "0x3",
                "arg3": "0xff", "arg4": "0x0", "arg5": "0xffffffffffffffff",
            })
        );
        assert_eq!(
            cli_args(Arch::X86_64, &ev),
            "arg0=0x1, arg1=0x2, arg2=0x3, arg3=0xff, arg4=0x0, arg5=0xffffffffffffffff"
        );
    }

    #[test]
    fn decode_base64() {
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), want);
        }
    }

    /// Whether `kind` decodes bytes the probe captured.
    fn captured(kind: Kind) -> bool {
        matches!(
            kind,
            Str | Text
                | Buf
                | SockAddr
                | Argv
                | Timespec
                | Timeval
                | Rlimit
                | Itimerspec
                | Sigaction
        )
    }

    /// xorshift64: deterministic pseudo-random bytes without a crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// An event whose every byte is from `next`.
    fn random_event(mut next: impl FnMut() -> u8) -> TraceEvent {
        let mut ev = TraceEvent::zeroed();
        ev.args = std::array::from_fn(|_| u64::from_ne_bytes(std::array::from_fn(|_| next())));
        ev.ret = i64::from_ne_bytes(std::array::from_fn(|_| next()));
        ev.captured.data_len = std::array::from_fn(|_| u16::from_ne_bytes([next(), next()]));
        ev.captured.flags = u16::from_ne_bytes([next(), next()]);
        ev.captured.argc = next();
        ev.captured.argv_len = std::array::from_fn(|_| next());
        ev.captured.data = std::array::from_fn(|_| std::array::from_fn(|_| next()));
        ev.captured.argv = std::array::from_fn(|_| std::array::from_fn(|_| next()));
        ev
    }

    #[test]
    fn decode_never_panics() {
        let mut events = vec![TraceEvent::zeroed(), random_event(|| 0xff)];
        let mut full = TraceEvent::zeroed();
        full.captured.data_len = [DATA_BYTES as u16; DATA_SLOTS];
        full.captured.argv_len = [ARGV_BYTES as u8; ARGV_SLOTS];
        full.captured.argc = ARGV_SLOTS as u8;
        full.captured.flags = u16::MAX;
        full.ret = -1;
        events.push(full);
        for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 42, 0xdead_beef] {
            let mut state = seed;
            events.push(random_event(|| xorshift(&mut state) as u8));
        }
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for nr in 0..=max_nr(arch) + 10 {
                for buffer_bytes in [0, 64, u32::MAX] {
                    for c in capture_for(arch, nr, buffer_bytes).captures {
                        assert!(c.max as usize <= DATA_BYTES && c.arg <= 5 && c.len_arg <= 5);
                    }
                }
                for ev in &mut events {
                    ev.nr = nr;
                    let map = args(arch, ev);
                    if row_for(arch, nr).is_none() {
                        assert_eq!(map.len(), 6, "{arch:?} {nr}");
                    }
                    let _ = cli_args(arch, ev);
                }
            }
        }
    }

    #[test]
    fn decode_rows_are_within_bounds() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for nr in 0..=max_nr(arch) {
                let layout = capture_for(arch, nr, u32::MAX);
                let Some(row) = row_for(arch, nr) else {
                    // What the probe captures is decoded, never dropped by the generic form.
                    assert_eq!(layout, SyscallCapture::default(), "{arch:?} {nr}");
                    continue;
                };
                assert!(row.len() <= 6, "{arch:?} {nr}");
                // Every argument decoded from captured bytes has a capture.
                for (i, &(name, kind)) in row.iter().enumerate() {
                    if captured(kind) {
                        let found = (layout.captures.iter())
                            .any(|c| c.kind != CAPTURE_NONE && usize::from(c.arg) == i);
                        assert!(found, "{arch:?} {nr}: {name} is not captured");
                    }
                }
                // Every capture belongs to an argument the row decodes from its bytes.
                for c in layout.captures.iter().filter(|c| c.kind != CAPTURE_NONE) {
                    let kind = row.get(usize::from(c.arg)).map(|&(_, k)| k);
                    assert!(
                        kind.is_some_and(captured),
                        "{arch:?} {nr}: capture of argument {} decoded as {kind:?}",
                        c.arg
                    );
                }
            }
        }
    }

    #[test]
    fn decode_covers_the_original_list() {
        let names = "kill acct alarm brk close access openat open connect execve unlink unlinkat \
            epoll_wait faccessat statx syslog fcntl fdatasync fstatfs fstat statfs fsync \
            ftruncate getcwd getdents getdents64 inotify_add_watch listen lookup_dcookie lseek \
            madvise membarrier mkdir mkdirat mknod mlock pivot_root poll prctl rmdir chdir \
            fchdir chroot link linkat symlink symlinkat bind socket setns prlimit64 mount \
            umount2 recvmsg setuid recvfrom sendto ptrace readlink readlinkat getpeername \
            getsockname accept accept4 mprotect setsockopt getsockopt creat init_module \
            seccomp stat sethostname clone clone3 read write ioctl rename renameat renameat2 \
            timerfd_settime timerfd_create mincore nanosleep clock_nanosleep rt_sigaction \
            futex select pselect6 exit exit_group newfstatat openat2 execveat getppid getpid";
        for name in names.split_whitespace() {
            assert!(row(Arch::X86_64, name).is_some(), "{name}");
            assert!(number(Arch::X86_64, name).is_some(), "{name}");
        }
    }

    /// The README says how many syscalls have their arguments decoded, per architecture: this
    /// keeps the claim true when rows are added.
    #[test]
    fn decoded_syscall_counts_match_the_readme() {
        let decoded = |arch| {
            (0..=crate::syscalls::max_nr(arch))
                .filter(|&nr| row_for(arch, nr).is_some())
                .count()
        };
        assert_eq!((decoded(Arch::X86_64), decoded(Arch::Aarch64)), (184, 152));
    }
}
