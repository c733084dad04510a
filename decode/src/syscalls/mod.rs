//! Syscall numbers, names and the class/group taxonomy, per CPU architecture.
//!
//! The probes key their counters by raw syscall number; everything a user sees (the `syscall`,
//! `class` and `group` labels of the metrics, trace events, `--syscalls` filters) uses names.
//! Numbers differ per architecture, so each architecture has its own table.
//!
//! The tables (`table_x86_64.rs`, `table_aarch64.rs`) are generated data: `cargo xtask
//! gen-syscalls` (`xtask/src/gen_syscalls.rs`) writes them from the pinned inputs in
//! `decode/syscalls/` (the kernel's numbering from a Debian `linux-libc-dev`, and
//! `classes.tbl`, the original swoll's taxonomy extended to every syscall), and
//! `scripts/check-generated.sh` fails when they are stale. Edit the inputs, never the tables.

use std::borrow::Cow;

mod table_aarch64;
mod table_x86_64;

/// CPU architectures whose syscall numbering swoll knows.
///
/// The numbering is per architecture (`openat` is 257 on x86_64 and 56 on aarch64), so decoding a
/// number needs to know whose it is; [`Arch::NATIVE`] is the one the probes run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64, the 64-bit ABI (`arch/x86/entry/syscalls/syscall_64.tbl`).
    X86_64,
    /// aarch64 (arm64), the generic 64-bit numbering of `asm-generic/unistd.h`.
    Aarch64,
}

impl Arch {
    /// The architecture swoll was compiled for: its probes see this architecture's numbers.
    #[cfg(target_arch = "x86_64")]
    pub const NATIVE: Arch = Arch::X86_64;
    /// The architecture swoll was compiled for: its probes see this architecture's numbers.
    #[cfg(target_arch = "aarch64")]
    pub const NATIVE: Arch = Arch::Aarch64;
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "swoll knows the syscall numbers of x86_64 and aarch64 only: add decode/syscalls/<arch>.tbl \
     and a variant of syscalls::Arch"
);

/// The number the probes record for a `sys_exit` that has no syscall number: the kernel's "no
/// syscall" (-1, `NO_SYSCALL` on arm64) in the probes' unsigned 32 bits.
///
/// `rt_sigreturn` ends this way on both architectures: it restores the registers the signal
/// interrupted, and then sets the syscall number to -1 so that the kernel does not take the
/// restored context for a syscall to restart. Its `sys_exit` tracepoint, which reads the number
/// back from the registers, so reports -1 rather than the number it entered with.
/// [`describe`] names it after that syscall. (A call a ptrace tracer cancels, by setting its
/// number to -1 at entry, ends the same way: rare, and indistinguishable here.)
pub const NO_SYSCALL: u32 = u32::MAX;

/// Everything metrics and traces say about one syscall number.
///
/// `name`, `class` and `group` become Prometheus labels rendered on every scrape, so for known
/// syscalls all three borrow static strings: only unknown numbers allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallInfo {
    /// The number described, as given: a syscall number on the architecture it was described
    /// for, or [`NO_SYSCALL`].
    pub nr: u32,
    /// The name with swoll's `sys_` prefix (`sys_openat`), or `sys_unknown_<nr>`.
    pub name: Cow<'static, str>,
    /// The class (`FileSystem`, `Network`, ...), or `Unknown`.
    pub class: &'static str,
    /// The group within the class (`Files`, `Sockets`, ...), or `Unknown`.
    pub group: &'static str,
}

/// Class and group of a syscall numbered beyond the tables (a newer kernel, a bogus number).
const UNKNOWN: &str = "Unknown";

/// A class and one of its groups; the generated tables name each one once as a const.
#[derive(Clone, Copy, Debug)]
struct Group {
    class: &'static str,
    group: &'static str,
}

impl Group {
    const fn new(class: &'static str, group: &'static str) -> Group {
        Group { class, group }
    }
}

/// One syscall of a generated table.
#[derive(Clone, Copy, Debug)]
struct Row {
    nr: u32,
    /// With the `sys_` prefix, so [`describe`] can lend it out without formatting.
    name: &'static str,
    group: Group,
}

impl Row {
    const fn new(nr: u32, name: &'static str, group: Group) -> Row {
        Row { nr, name, group }
    }
}

/// Length of the dense table of `rows`: one slot per number up to the highest.
const fn dense_len(rows: &[Row]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < rows.len() {
        let slot = rows[i].nr as usize + 1;
        if slot > len {
            len = slot;
        }
        i += 1;
    }
    len
}

/// Spreads `rows` into an array indexed by number, so that [`describe`] is one bounds-checked
/// index. Runs at compile time: a number given twice fails the build.
const fn dense<const N: usize>(rows: &[Row]) -> [Option<Row>; N] {
    let mut table = [None; N];
    let mut i = 0;
    while i < rows.len() {
        let nr = rows[i].nr as usize;
        assert!(table[nr].is_none(), "a syscall number appears twice");
        table[nr] = Some(rows[i]);
        i += 1;
    }
    table
}

static X86_64: [Option<Row>; dense_len(table_x86_64::ROWS)] = dense(table_x86_64::ROWS);
static AARCH64: [Option<Row>; dense_len(table_aarch64::ROWS)] = dense(table_aarch64::ROWS);

/// The rows of `arch`, in number order.
fn rows(arch: Arch) -> &'static [Row] {
    match arch {
        Arch::X86_64 => table_x86_64::ROWS,
        Arch::Aarch64 => table_aarch64::ROWS,
    }
}

/// The table of `arch`, indexed by number.
fn dense_table(arch: Arch) -> &'static [Option<Row>] {
    match arch {
        Arch::X86_64 => &X86_64,
        Arch::Aarch64 => &AARCH64,
    }
}

/// The syscall whose exit `arch`'s kernel reports as [`NO_SYSCALL`], by its number on `arch`;
/// `None` for an architecture whose kernel keeps every syscall's number to its exit.
///
/// Both set the number to -1 in `rt_sigreturn` once the interrupted registers are restored:
/// x86_64 in `restore_sigcontext` (`regs->orig_ax = -1`, arch/x86/kernel/signal_64.c), arm64 in
/// `restore_sigframe` (`forget_syscall(regs)`, which stores `NO_SYSCALL`,
/// arch/arm64/kernel/signal.c). Both read the `sys_exit` tracepoint's number back from those
/// registers (`syscall_get_nr`: `orig_ax`, `syscallno`).
fn exits_as_no_syscall(arch: Arch) -> Option<u32> {
    match arch {
        Arch::X86_64 => Some(15),
        Arch::Aarch64 => Some(139),
    }
}

/// Describes syscall `nr` of `arch`: `sys_openat`, `FileSystem`, `Files`. [`NO_SYSCALL`] is
/// described as the syscall whose exit the kernel reports that way (`sys_rt_sigreturn`).
///
/// Never fails, whatever the number: a syscall newer than the tables (or a garbage number) becomes
/// `sys_unknown_<nr>` with class and group `Unknown`, so it is still counted and visible rather
/// than dropped or fatal (the original swoll crashed on them). O(1), and allocation-free for
/// known numbers.
pub fn describe(arch: Arch, nr: u32) -> SyscallInfo {
    let index = if nr == NO_SYSCALL {
        exits_as_no_syscall(arch)
    } else {
        Some(nr)
    };
    let row = index
        .and_then(|nr| usize::try_from(nr).ok())
        .and_then(|i| dense_table(arch).get(i))
        .copied()
        .flatten();
    match row {
        Some(row) => SyscallInfo {
            nr,
            name: Cow::Borrowed(row.name),
            class: row.group.class,
            group: row.group.group,
        },
        None => SyscallInfo {
            nr,
            name: Cow::Owned(format!("sys_unknown_{nr}")),
            class: UNKNOWN,
            group: UNKNOWN,
        },
    }
}

/// [`describe`] for the architecture swoll runs on, whose numbers the probes report.
pub fn describe_native(nr: u32) -> SyscallInfo {
    describe(Arch::NATIVE, nr)
}

/// The number of the syscall called `name` on `arch`, for filters users write by name. Accepts
/// the bare kernel name (`openat`) and swoll's prefixed one (`sys_openat`), as the original's
/// trace specs did. `None` if `arch` has no such syscall. A linear scan: filters are parsed once,
/// not per event.
pub fn number(arch: Arch, name: &str) -> Option<u32> {
    let bare = name.strip_prefix("sys_").unwrap_or(name);
    rows(arch)
        .iter()
        .find(|row| row.name.strip_prefix("sys_") == Some(bare))
        .map(|row| row.nr)
}

/// The highest syscall number `arch` has in swoll's table: numbers above it describe as
/// unknown. Useful to size per-syscall arrays and to iterate over every syscall.
pub fn max_nr(arch: Arch) -> u32 {
    rows(arch).iter().map(|row| row.nr).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Arch::{Aarch64, X86_64};
    use super::*;

    #[track_caller]
    fn check(arch: Arch, nr: u32, name: &str, class_group: &str) {
        let info = describe(arch, nr);
        let got = (
            info.nr,
            &*info.name,
            format!("{}/{}", info.class, info.group),
        );
        assert_eq!(got, (nr, name, class_group.to_owned()), "{arch:?} {nr}");
    }

    #[test]
    fn both_tables_have_the_calls_that_never_return() {
        // The loader hands these to the probes, which keep no start time for them.
        assert_eq!(number(X86_64, "exit"), Some(60));
        assert_eq!(number(X86_64, "exit_group"), Some(231));
        assert_eq!(number(Aarch64, "exit"), Some(93));
        assert_eq!(number(Aarch64, "exit_group"), Some(94));
    }

    #[test]
    fn syscalls_x86_64_spot_checks() {
        check(X86_64, 257, "sys_openat", "FileSystem/Files");
        check(X86_64, 0, "sys_read", "FileSystem/ReadWrite");
        check(X86_64, 42, "sys_connect", "Network/Sockets");
        check(X86_64, 202, "sys_futex", "IPC/Futex");
        check(X86_64, 321, "sys_bpf", "Network/Filtering");
        check(X86_64, 250, "sys_keyctl", "FileSystem/ExtendedAttributes");
        check(X86_64, 308, "sys_setns", "ProcessManagement/Namespace");
        check(X86_64, 165, "sys_mount", "System/PrivlidgedFileSystem");
        check(X86_64, 137, "sys_statfs", "System/UnprivledgedFileSystem");
        check(X86_64, 156, "sys__sysctl", "System/MiscellaneousSystem");
    }

    #[test]
    fn syscalls_aarch64_spot_checks() {
        check(Aarch64, 56, "sys_openat", "FileSystem/Files");
        check(Aarch64, 203, "sys_connect", "Network/Sockets");
        check(Aarch64, 98, "sys_futex", "IPC/Futex");
        check(Aarch64, 280, "sys_bpf", "Network/Filtering");
        check(Aarch64, 63, "sys_read", "FileSystem/ReadWrite");
        // The __NR3264_* slots of asm-generic/unistd.h, under their 64-bit names.
        check(Aarch64, 62, "sys_lseek", "FileSystem/ReadWrite");
        check(Aarch64, 79, "sys_newfstatat", "FileSystem/BasicAttributes");
        check(Aarch64, 222, "sys_mmap", "ProcessManagement/VirtualMemory");
    }

    #[test]
    fn syscalls_newer_than_the_original_are_classified() {
        for (nr, name) in [(334, "sys_rseq"), (435, "sys_clone3"), (437, "sys_openat2")] {
            let info = describe(X86_64, nr);
            assert_eq!(info.name, name);
            assert_ne!(info.class, UNKNOWN, "{name}");
            assert_ne!(info.group, UNKNOWN, "{name}");
        }
        check(X86_64, 435, "sys_clone3", "ProcessManagement/Execution");
        check(Aarch64, 435, "sys_clone3", "ProcessManagement/Execution");
    }

    #[test]
    fn syscalls_describe_never_panics() {
        for arch in [X86_64, Aarch64] {
            for nr in (0..=max_nr(arch) + 1000).chain([u32::MAX - 1, u32::MAX]) {
                let info = describe(arch, nr);
                assert_eq!(info.nr, nr);
                assert!(info.name.starts_with("sys_"));
            }
        }
    }

    #[test]
    fn syscalls_no_syscall_is_rt_sigreturn_on_both_architectures() {
        for arch in [X86_64, Aarch64] {
            check(arch, NO_SYSCALL, "sys_rt_sigreturn", "Signals/RealTime");
            let entered = number(arch, "rt_sigreturn").expect("rt_sigreturn");
            assert_eq!(exits_as_no_syscall(arch), Some(entered), "{arch:?}");
            let (exit, enter) = (describe(arch, NO_SYSCALL), describe(arch, entered));
            assert_eq!(
                (exit.name, exit.class, exit.group),
                (enter.name, enter.class, enter.group),
                "{arch:?}"
            );
            assert!(matches!(describe(arch, NO_SYSCALL).name, Cow::Borrowed(_)));
            // Only -1 is the kernel's "no syscall": its neighbours stay unknown.
            check(
                arch,
                NO_SYSCALL - 1,
                &format!("sys_unknown_{}", NO_SYSCALL - 1),
                "Unknown/Unknown",
            );
        }
        assert_eq!(number(X86_64, "rt_sigreturn"), Some(15));
        assert_eq!(number(Aarch64, "rt_sigreturn"), Some(139));
    }

    #[test]
    fn syscalls_unknown_numbers() {
        for arch in [X86_64, Aarch64] {
            check(arch, 999_999, "sys_unknown_999999", "Unknown/Unknown");
            let above = max_nr(arch) + 1;
            check(
                arch,
                above,
                &format!("sys_unknown_{above}"),
                "Unknown/Unknown",
            );
        }
        // x86_64 leaves 337..=423 unassigned (the 32-bit time64 calls of other ABIs).
        check(X86_64, 400, "sys_unknown_400", "Unknown/Unknown");
        assert_eq!(describe(X86_64, 400).name, "sys_unknown_400");
    }

    #[test]
    fn syscalls_known_names_are_borrowed() {
        for arch in [X86_64, Aarch64] {
            for row in rows(arch) {
                assert!(matches!(describe(arch, row.nr).name, Cow::Borrowed(_)));
            }
        }
    }

    #[test]
    fn syscalls_number_by_name() {
        assert_eq!(number(X86_64, "openat"), Some(257));
        assert_eq!(number(X86_64, "sys_openat"), Some(257));
        assert_eq!(number(Aarch64, "openat"), Some(56));
        assert_eq!(number(X86_64, "_sysctl"), Some(156));
        assert_eq!(number(X86_64, "sys__sysctl"), Some(156));
        // open(2) exists on x86_64 only; aarch64 has just openat.
        assert_eq!(number(X86_64, "open"), Some(2));
        assert_eq!(number(Aarch64, "open"), None);
        for bad in [
            "",
            "sys_",
            "sys_sys_openat",
            "OPENAT",
            "sys_unknown_400",
            "nope",
        ] {
            assert_eq!(number(X86_64, bad), None, "{bad:?}");
        }
        for arch in [X86_64, Aarch64] {
            for row in rows(arch) {
                assert_eq!(number(arch, row.name), Some(row.nr), "{}", row.name);
            }
        }
    }

    #[test]
    fn syscalls_max_nr() {
        // Both tables come from Linux 7.3, whose last syscall is fchroot (472).
        assert_eq!(max_nr(X86_64), 472);
        assert_eq!(max_nr(Aarch64), 472);
        assert_eq!(describe(X86_64, max_nr(X86_64)).name, "sys_fchroot");
    }

    #[test]
    fn syscalls_tables_are_sorted_and_unique() {
        for arch in [X86_64, Aarch64] {
            let rows = rows(arch);
            assert!(rows.windows(2).all(|w| w[0].nr < w[1].nr), "{arch:?}");
            let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), rows.len(), "{arch:?}");
        }
    }

    /// Every class/group pair of the original swoll (inventory §5.3). Dashboards filter on these
    /// strings: a typo in classes.tbl would silently start a new series.
    const VOCABULARY: &[(&str, &[&str])] = &[
        (
            "FileSystem",
            &[
                "Files",
                "Directories",
                "Links",
                "BasicAttributes",
                "ExtendedAttributes",
                "Descriptors",
                "ReadWrite",
                "SynchronizedIO",
                "AsynchronousIO",
                "MultiplexedIO",
                "Monitoring",
                "MiscellaneousFiles",
            ],
        ),
        ("Network", &["Sockets", "IO", "Naming", "Filtering"]),
        (
            "Time",
            &[
                "TimeOfDay",
                "POSIXClocks",
                "ClockTimers",
                "SysTimers",
                "FileDescriptorTimers",
                "MiscellaneousTime",
            ],
        ),
        (
            "System",
            &[
                "Kernel",
                "Accounting",
                "PrivlidgedFileSystem",
                "UnprivledgedFileSystem",
                "MiscellaneousSystem",
            ],
        ),
        (
            "Signals",
            &[
                "Standard",
                "RealTime",
                "FileDescriptor",
                "MiscellaneousSignals",
            ],
        ),
        (
            "IPC",
            &[
                "Pipes",
                "SharedMemory",
                "Semaphore",
                "Futex",
                "MessageQueues",
            ],
        ),
        (
            "ProcessManagement",
            &[
                "Execution",
                "Process",
                "Session",
                "Group",
                "User",
                "Namespace",
                "Scheduling",
                "Resources",
                "VirtualMemory",
                "Threading",
                "MiscellaneousPM",
            ],
        ),
    ];

    #[test]
    fn syscalls_use_the_original_vocabulary() {
        for arch in [X86_64, Aarch64] {
            for row in rows(arch) {
                let Group { class, group } = row.group;
                let known = VOCABULARY
                    .iter()
                    .any(|(c, groups)| *c == class && groups.contains(&group));
                assert!(known, "{arch:?} {}: {class}/{group}", row.name);
            }
        }
    }

    /// `<nr> <name>` pairs of a vendored arch table.
    fn vendored(text: &str) -> Vec<(u32, String)> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (nr, name) = l.split_once(' ').expect("`<nr> <name>`");
                (
                    nr.parse().expect("a number"),
                    format!("sys_{}", name.trim()),
                )
            })
            .collect()
    }

    /// A cheap stand-in for scripts/check-generated.sh inside `cargo test`: the generated
    /// tables hold exactly the vendored numbers and names, with the class of classes.tbl.
    #[test]
    fn syscalls_tables_match_the_vendored_inputs() {
        let classes: Vec<(String, &str, &str)> = include_str!("../../syscalls/classes.tbl")
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [name, class, group] => Some((format!("sys_{name}"), class, group)),
                _ => None,
            })
            .collect();
        for (arch, text) in [
            (X86_64, include_str!("../../syscalls/x86_64.tbl")),
            (Aarch64, include_str!("../../syscalls/aarch64.tbl")),
        ] {
            let vendored = vendored(text);
            assert_eq!(vendored.len(), rows(arch).len(), "{arch:?}");
            for (nr, name) in vendored {
                let info = describe(arch, nr);
                assert_eq!(info.name, name, "{arch:?} {nr}");
                let (_, class, group) = classes
                    .iter()
                    .find(|(n, ..)| *n == name)
                    .expect("classes.tbl has every syscall");
                assert_eq!((info.class, info.group), (*class, *group), "{name}");
            }
        }
    }
}
