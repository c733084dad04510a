//! Names of Linux errno values, as the `err` label of the syscall metrics and the `error` field of
//! trace events show them.
//!
//! The probes report the positive errno of a failed syscall; this module turns it into the
//! kernel's symbolic name (`2` → `ENOENT`) from one static table, so every output spells errors
//! the same way, and a trace filter can turn a name back into the number the kernel reports.
//! x86_64 and aarch64 share these numbers (both use the generic `asm-generic/errno*.h` values).

use std::borrow::Cow;

/// What swoll reports for a syscall that succeeded: the original Go swoll labelled successful
/// calls `OK`, and dashboards filter on it.
const OK: &str = "OK";

/// Names of errno 0..=134, indexed by number: the uapi headers `asm-generic/errno-base.h` (1..=34)
/// and `asm-generic/errno.h` (35..=134) of Linux 7.3. Where the headers give a number two names,
/// the canonical one is kept (`EAGAIN`, not `EWOULDBLOCK`) and the other is in [`ALIASES`].
/// 41 and 58 are unassigned.
const UAPI: [Option<&str>; 135] = [
    Some(OK),
    Some("EPERM"),
    Some("ENOENT"),
    Some("ESRCH"),
    Some("EINTR"),
    Some("EIO"),
    Some("ENXIO"),
    Some("E2BIG"),
    Some("ENOEXEC"),
    Some("EBADF"),
    Some("ECHILD"), // 10
    Some("EAGAIN"),
    Some("ENOMEM"),
    Some("EACCES"),
    Some("EFAULT"),
    Some("ENOTBLK"),
    Some("EBUSY"),
    Some("EEXIST"),
    Some("EXDEV"),
    Some("ENODEV"),
    Some("ENOTDIR"), // 20
    Some("EISDIR"),
    Some("EINVAL"),
    Some("ENFILE"),
    Some("EMFILE"),
    Some("ENOTTY"),
    Some("ETXTBSY"),
    Some("EFBIG"),
    Some("ENOSPC"),
    Some("ESPIPE"),
    Some("EROFS"), // 30
    Some("EMLINK"),
    Some("EPIPE"),
    Some("EDOM"),
    Some("ERANGE"),
    Some("EDEADLK"),
    Some("ENAMETOOLONG"),
    Some("ENOLCK"),
    Some("ENOSYS"),
    Some("ENOTEMPTY"),
    Some("ELOOP"), // 40
    None,
    Some("ENOMSG"),
    Some("EIDRM"),
    Some("ECHRNG"),
    Some("EL2NSYNC"),
    Some("EL3HLT"),
    Some("EL3RST"),
    Some("ELNRNG"),
    Some("EUNATCH"),
    Some("ENOCSI"), // 50
    Some("EL2HLT"),
    Some("EBADE"),
    Some("EBADR"),
    Some("EXFULL"),
    Some("ENOANO"),
    Some("EBADRQC"),
    Some("EBADSLT"),
    None,
    Some("EBFONT"),
    Some("ENOSTR"), // 60
    Some("ENODATA"),
    Some("ETIME"),
    Some("ENOSR"),
    Some("ENONET"),
    Some("ENOPKG"),
    Some("EREMOTE"),
    Some("ENOLINK"),
    Some("EADV"),
    Some("ESRMNT"),
    Some("ECOMM"), // 70
    Some("EPROTO"),
    Some("EMULTIHOP"),
    Some("EDOTDOT"),
    Some("EBADMSG"),
    Some("EOVERFLOW"),
    Some("ENOTUNIQ"),
    Some("EBADFD"),
    Some("EREMCHG"),
    Some("ELIBACC"),
    Some("ELIBBAD"), // 80
    Some("ELIBSCN"),
    Some("ELIBMAX"),
    Some("ELIBEXEC"),
    Some("EILSEQ"),
    Some("ERESTART"),
    Some("ESTRPIPE"),
    Some("EUSERS"),
    Some("ENOTSOCK"),
    Some("EDESTADDRREQ"),
    Some("EMSGSIZE"), // 90
    Some("EPROTOTYPE"),
    Some("ENOPROTOOPT"),
    Some("EPROTONOSUPPORT"),
    Some("ESOCKTNOSUPPORT"),
    Some("EOPNOTSUPP"),
    Some("EPFNOSUPPORT"),
    Some("EAFNOSUPPORT"),
    Some("EADDRINUSE"),
    Some("EADDRNOTAVAIL"),
    Some("ENETDOWN"), // 100
    Some("ENETUNREACH"),
    Some("ENETRESET"),
    Some("ECONNABORTED"),
    Some("ECONNRESET"),
    Some("ENOBUFS"),
    Some("EISCONN"),
    Some("ENOTCONN"),
    Some("ESHUTDOWN"),
    Some("ETOOMANYREFS"),
    Some("ETIMEDOUT"), // 110
    Some("ECONNREFUSED"),
    Some("EHOSTDOWN"),
    Some("EHOSTUNREACH"),
    Some("EALREADY"),
    Some("EINPROGRESS"),
    Some("ESTALE"),
    Some("EUCLEAN"),
    Some("ENOTNAM"),
    Some("ENAVAIL"),
    Some("EISNAM"), // 120
    Some("EREMOTEIO"),
    Some("EDQUOT"),
    Some("ENOMEDIUM"),
    Some("EMEDIUMTYPE"),
    Some("ECANCELED"),
    Some("ENOKEY"),
    Some("EKEYEXPIRED"),
    Some("EKEYREVOKED"),
    Some("EKEYREJECTED"),
    Some("EOWNERDEAD"), // 130
    Some("ENOTRECOVERABLE"),
    Some("ERFKILL"),
    Some("EHWPOISON"),
    Some("EFTYPE"), // 134, new in Linux 7.x
];

/// First number of the kernel-internal errno values.
const INTERNAL_BASE: u32 = 512;

/// Kernel-internal errno values 512..=531 (`include/linux/errno.h`). User space should never see
/// them, but the probes read the raw return value at syscall exit, where some do appear (a
/// syscall interrupted by a signal exits with `ERESTARTSYS` before the restart logic rewrites
/// it), so they get names instead of looking like garbage. 520 is unassigned.
const INTERNAL: [Option<&str>; 20] = [
    Some("ERESTARTSYS"), // 512
    Some("ERESTARTNOINTR"),
    Some("ERESTARTNOHAND"),
    Some("ENOIOCTLCMD"),
    Some("ERESTART_RESTARTBLOCK"),
    Some("EPROBE_DEFER"),
    Some("EOPENSTALE"),
    Some("ENOPARAM"),
    None, // 520
    Some("EBADHANDLE"),
    Some("ENOTSYNC"),
    Some("EBADCOOKIE"),
    Some("ENOTSUPP"),
    Some("ETOOSMALL"),
    Some("ESERVERFAULT"),
    Some("EBADTYPE"),
    Some("EJUKEBOX"),
    Some("EIOCBQUEUED"),
    Some("ERECALLCONFLICT"),
    Some("ENOGRACE"), // 531
];

/// Second names of a number, accepted by [`number`] so a filter written with either spelling
/// works; [`name`] never returns them. `ENOTSUP` is the C library's name for `EOPNOTSUPP` (95),
/// not the kernel-internal `ENOTSUPP` (524).
const ALIASES: [(&str, u32); 5] = [
    ("EWOULDBLOCK", 11),
    ("EDEADLOCK", 35),
    ("EFSBADCRC", 74),
    ("ENOTSUP", 95),
    ("EFSCORRUPTED", 117),
];

/// The table entry for `errno`, if it has a name.
fn lookup(errno: u32) -> Option<&'static str> {
    let (table, index): (&[Option<&'static str>], u32) = if errno >= INTERNAL_BASE {
        (&INTERNAL, errno - INTERNAL_BASE)
    } else {
        (&UAPI, errno)
    };
    table.get(usize::try_from(index).ok()?).copied().flatten()
}

/// The symbolic name of a positive errno value: `0` → `OK`, `2` → `ENOENT`, `512` →
/// `ERESTARTSYS`. A number without a name renders as `E<n>` (e.g. `E9999`), so a new or bogus
/// value still shows up, distinguishable, instead of being dropped. Known names are borrowed
/// from a static table: metrics render this label for every series on every scrape.
pub fn name(errno: u32) -> Cow<'static, str> {
    match lookup(errno) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{errno}")),
    }
}

/// The errno value of a name, the inverse of [`name`], for filters that users write by name.
/// Case-insensitive; also accepts the aliases of the headers (`EWOULDBLOCK`, `EDEADLOCK`, ...) and
/// the `E<n>` form that [`name`] gives unnamed numbers, so `number(&name(n)) == Some(n)` for every
/// `n`. Returns `None` for anything else.
pub fn number(name: &str) -> Option<u32> {
    let named = UAPI
        .iter()
        .zip(0..)
        .chain(INTERNAL.iter().zip(INTERNAL_BASE..))
        .find_map(|(entry, n)| entry.filter(|e| e.eq_ignore_ascii_case(name)).map(|_| n));
    if named.is_some() {
        return named;
    }
    if let Some(&(_, n)) = ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) {
        return Some(n);
    }
    let digits = name.strip_prefix(['E', 'e'])?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every number that has a name.
    fn known() -> impl Iterator<Item = u32> {
        (0..=1024).filter(|&n| lookup(n).is_some())
    }

    #[test]
    fn errno_names() {
        assert_eq!(name(0), "OK");
        assert_eq!(name(1), "EPERM");
        assert_eq!(name(2), "ENOENT");
        assert_eq!(name(11), "EAGAIN");
        assert_eq!(name(35), "EDEADLK");
        assert_eq!(name(95), "EOPNOTSUPP");
        assert_eq!(name(110), "ETIMEDOUT");
        assert_eq!(name(133), "EHWPOISON");
        assert_eq!(name(512), "ERESTARTSYS");
        assert_eq!(name(516), "ERESTART_RESTARTBLOCK");
        assert_eq!(name(524), "ENOTSUPP");
        assert_eq!(name(531), "ENOGRACE");
    }

    #[test]
    fn errno_known_names_are_borrowed() {
        for n in known() {
            assert!(matches!(name(n), Cow::Borrowed(_)), "{n}");
        }
    }

    #[test]
    fn errno_unknown_numbers() {
        assert_eq!(name(9999), "E9999");
        assert_eq!(name(41), "E41");
        assert_eq!(name(58), "E58");
        assert_eq!(name(520), "E520");
        assert_eq!(name(135), "E135");
        assert_eq!(name(532), "E532");
        assert_eq!(name(u32::MAX), format!("E{}", u32::MAX));
    }

    #[test]
    fn errno_covers_uapi_and_internal_ranges() {
        for n in (1..=134).chain(512..=531) {
            let expect_gap = matches!(n, 41 | 58 | 520);
            assert_eq!(lookup(n).is_none(), expect_gap, "{n}");
        }
        assert_eq!(known().count(), 135 - 2 + 20 - 1);
    }

    #[test]
    fn errno_number_is_the_inverse_of_name() {
        for n in known().chain([41, 520, 9999, u32::MAX]) {
            assert_eq!(number(&name(n)), Some(n), "{n}");
        }
    }

    #[test]
    fn errno_names_are_unique() {
        let mut names: Vec<&str> = known().filter_map(lookup).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
        for (alias, _) in ALIASES {
            assert!(!names.contains(&alias), "{alias} is also a canonical name");
        }
    }

    #[test]
    fn errno_number_accepts_aliases_and_any_case() {
        assert_eq!(number("enoent"), Some(2));
        assert_eq!(number("EWOULDBLOCK"), Some(11));
        assert_eq!(number("EDEADLOCK"), Some(35));
        assert_eq!(number("ENOTSUP"), Some(95));
        assert_eq!(number("ENOTSUPP"), Some(524));
        assert_eq!(number("ok"), Some(0));
    }

    #[test]
    fn errno_number_rejects_garbage() {
        for bad in [
            "",
            "E",
            "E-1",
            "E+1",
            "E1x",
            "ENOPE",
            "2",
            "E99999999999",
            "sys_read",
        ] {
            assert_eq!(number(bad), None, "{bad:?}");
        }
    }
}
