//! Reading what a traced call's arguments point to, as userspace's capture table
//! (`SWOLL_TRACE_SYSCALLS`) describes it for the syscall: the kernel side knows no syscall by
//! name. Everything is read with `bpf_probe_read_user*`, which fails cleanly (and is counted in
//! the event's flags) on a bad pointer.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_probe_read_user, bpf_probe_read_user_str};
use swoll_maps_schema::trace::{
    ARGV_BYTES, ARGV_MORE, ARGV_SLOTS, AT_ENTER, CAPTURE_ARGV, CAPTURE_BUF_LEN, CAPTURE_BUF_RET,
    CAPTURE_SOCKADDR, CAPTURE_SOCKADDR_OUT, CAPTURE_STR, CAPTURE_STRUCT, Capture, Captured,
    DATA_BYTES, DATA_SLOTS, READ_FAILED, SyscallCapture, TRUNCATED,
};

/// Which captures to run: those read at `sys_enter`, or the others at `sys_exit`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// [`AT_ENTER`] captures only.
    Enter,
    /// Captures without [`AT_ENTER`] only.
    Exit,
}

/// Runs the captures of `table` that belong to `when`, into `tail`.
///
/// # Safety
/// `args` must point to six readable `u64`s and `tail` to a writable [`Captured`], both in
/// memory the verifier knows (a map value or a ring buffer record).
#[inline(always)]
pub unsafe fn run(
    table: &SyscallCapture,
    when: When,
    args: *const [u64; 6],
    ret: i64,
    tail: *mut Captured,
) {
    for slot in 0..DATA_SLOTS {
        let c = table.captures[slot];
        if (c.kind & AT_ENTER != 0) != (when == When::Enter) {
            continue;
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { one(&c, slot, args, ret, tail) };
    }
}

/// The value of argument `i` (clamped to 0..6).
///
/// # Safety
/// As [`run`].
#[inline(always)]
unsafe fn arg(args: *const [u64; 6], i: u8) -> u64 {
    let i = usize::from(i).min(5);
    // SAFETY: `i < 6` and `args` points to six `u64`s.
    unsafe { (*args)[i] }
}

/// Captures `c` into data slot `slot` (or the argv slots).
///
/// # Safety
/// As [`run`]; `slot < DATA_SLOTS`.
#[inline(always)]
unsafe fn one(c: &Capture, slot: usize, args: *const [u64; 6], ret: i64, tail: *mut Captured) {
    // SAFETY: the caller's contract: `args` and `tail` are valid, `slot` in range; every
    // user-memory read goes through a helper that fails cleanly.
    unsafe {
        let ptr = arg(args, c.arg) as *const c_void;
        if ptr.is_null() {
            return;
        }
        let max = bounded(u64::from(c.max).min(DATA_BYTES as u64));
        let data = (*tail).data[slot].as_mut_ptr().cast::<c_void>();
        let wanted = match c.kind & !AT_ENTER {
            CAPTURE_STR => {
                let n = bpf_probe_read_user_str(data, max as u32, ptr);
                if n < 0 {
                    (*tail).flags |= READ_FAILED;
                } else {
                    (*tail).data_len[slot] = n as u16;
                    if n as u64 == max {
                        (*tail).flags |= TRUNCATED;
                    }
                }
                return;
            }
            CAPTURE_ARGV => return argv(ptr.cast(), tail),
            CAPTURE_SOCKADDR | CAPTURE_BUF_LEN => arg(args, c.len_arg),
            CAPTURE_SOCKADDR_OUT => {
                let len_ptr = arg(args, c.len_arg) as *const c_void;
                let mut len: u32 = 0;
                if ret < 0
                    || len_ptr.is_null()
                    || bpf_probe_read_user((&raw mut len).cast(), 4, len_ptr) != 0
                {
                    return;
                }
                u64::from(len)
            }
            CAPTURE_BUF_RET if ret > 0 => ret as u64,
            CAPTURE_STRUCT => max,
            _ => return,
        };
        let n = bounded(wanted.min(max));
        if n == 0 {
            return;
        }
        if bpf_probe_read_user(data, n as u32, ptr) != 0 {
            (*tail).flags |= READ_FAILED;
            return;
        }
        (*tail).data_len[slot] = n as u16;
        if wanted > n {
            (*tail).flags |= TRUNCATED;
        }
    }
}

/// `n` (at most [`DATA_BYTES`] already) with a bound the verifier sees: 5.10's does not carry
/// the bound of a `min` over to the register passed as a read size. The mask keeps any slot's
/// read inside its record (the event's and the scratch's), and changes no value at most
/// `DATA_BYTES`; the volatile read keeps LLVM, which knows the mask changes nothing, from
/// dropping it.
#[inline(always)]
fn bounded(n: u64) -> u64 {
    // SAFETY: a read of a local.
    let opaque = unsafe { core::ptr::read_volatile(&raw const n) };
    opaque & (2 * DATA_BYTES as u64 - 1)
}

/// Captures a NULL-terminated array of string pointers (execve's argv) into the argv slots.
///
/// # Safety
/// As [`run`].
#[inline(always)]
unsafe fn argv(argv: *const u64, tail: *mut Captured) {
    // SAFETY: as in `one`; `i < ARGV_SLOTS` bounds every slot index.
    unsafe {
        for i in 0..ARGV_SLOTS {
            let mut p: u64 = 0;
            if bpf_probe_read_user((&raw mut p).cast(), 8, argv.wrapping_add(i).cast()) != 0 {
                (*tail).flags |= READ_FAILED;
                return;
            }
            if p == 0 {
                return;
            }
            let dst = (*tail).argv[i].as_mut_ptr().cast::<c_void>();
            let n = bpf_probe_read_user_str(dst, ARGV_BYTES as u32, p as *const c_void);
            if n < 0 {
                (*tail).flags |= READ_FAILED;
                return;
            }
            (*tail).argv_len[i] = n as u8;
            (*tail).argc = i as u8 + 1;
            if n as usize == ARGV_BYTES {
                (*tail).flags |= TRUNCATED;
            }
        }
        let mut next: u64 = 0;
        if bpf_probe_read_user(
            (&raw mut next).cast(),
            8,
            argv.wrapping_add(ARGV_SLOTS).cast(),
        ) == 0
            && next != 0
        {
            (*tail).flags |= ARGV_MORE;
        }
    }
}

/// Zeroes `len` bytes at `p`, eight at a time: every byte of a record is written for each event.
///
/// # Safety
/// `p` must be 8-byte aligned and valid for `len` bytes of writes; `len` a multiple of 8.
#[inline(always)]
pub unsafe fn zero(p: *mut u8, len: usize) {
    let words = p.cast::<u64>();
    for i in 0..len / 8 {
        // SAFETY: the caller's contract; volatile so the loop is not turned into a `memset`
        // call, which BPF does not have.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}
