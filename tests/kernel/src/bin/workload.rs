//! `swoll-workload`: makes an exact, known set of syscalls, optionally from a fresh pid namespace,
//! so kernel tests can assert exact counts.
//!
//! ```text
//! swoll-workload [--new-pidns | --join-pidns PATH] [--threads T] [--repeat-for SECONDS]
//!                [--hold MS] [--cgroup DIR] [--rounds R] [--pause MS] [--spawn-pidns COUNT]
//!                OP N [OP N ...]
//!   OP: openat-missing | getppid | nanosleep-5ms | enosys | sigusr1
//!       | create PATH | connect PORT | exec PATH ARG[,ARG…] | write TEXT N
//! ```
//! `sigusr1 N` installs a SIGUSR1 handler (one `rt_sigaction`) and sends the thread SIGUSR1 N
//! times with `tgkill` (and a `getpid` and a `gettid` each): N signals handled, so N returns
//! from the handler through `rt_sigreturn`.
//! `enosys N` makes one call of each of N syscall numbers no kernel has (1000 and up), each
//! failing with ENOSYS: N distinct keys in the namespace, to fill the agent's map.
//! `create` makes one `openat(AT_FDCWD, PATH, O_CREAT|O_WRONLY, 0644)` (and a `close`);
//! `connect` one TCP `connect` to 127.0.0.1:PORT (after its `socket`; then a `close`); `exec`
//! one `execve(PATH, [ARG…], [])` and must come last (the program it runs must exit 0);
//! `write TEXT N` makes N `write`s of TEXT to `/dev/null` (opened once, before anything else,
//! so the namespace sees only the writes).
//! `--repeat-for` runs the op list again and again until that many seconds have passed (a
//! steady rate for Prometheus `rate()` windows). `--hold` keeps the process (and so its pid
//! namespace) alive that many milliseconds after the ops, sleeping with `nanosleep`.
//! `--rounds` runs the op list exactly R times, `--pause` MS apart (default 100): a known number
//! of calls spread over time. `--spawn-pidns` creates COUNT short-lived pid namespaces one after
//! the other (`clone(CLONE_NEWPID)`): the first process of each runs the op list once and exits,
//! which ends its namespace; it prints nothing but the count it made (`spawned COUNT`).
//! `--cgroup` moves the process into that cgroup (v2) directory first, as a container runtime
//! would, so the namespace's processes are born in it.
//! It prints `pidns <inode>` (the namespace the ops run in) on stdout first. With `--new-pidns`
//! it unshares a pid namespace and forks: the child, the first process of the new namespace,
//! makes the calls, so that namespace sees nothing but them, the child's return from fork and
//! the `statx`/`write` that report the namespace. `--join-pidns PATH` does the same in the pid
//! namespace PATH names (`/proc/<pid>/ns/pid`) instead of a new one, as a second container of a
//! pod that shares its pid namespace starts in the namespace of the first.
//! Every op is a raw `syscall(2)`, so libc adds nothing.
use std::{io::Write as _, os::unix::fs::MetadataExt as _, process::ExitCode};

#[derive(Clone)]
enum Op {
    OpenatMissing,
    Getppid,
    Nanosleep5ms,
    Enosys,
    Sigusr1,
    Create(std::ffi::CString),
    Connect(u16),
    Exec(std::ffi::CString, Vec<std::ffi::CString>),
    /// `/dev/null`'s fd and the bytes to write to it.
    Write(i32, Vec<u8>),
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(plan) => run(&plan),
        Err(msg) => {
            eprintln!("swoll-workload: {msg}");
            ExitCode::from(2)
        }
    }
}

struct Plan {
    new_pidns: bool,
    join_pidns: Option<String>,
    threads: usize,
    repeat_for: Option<std::time::Duration>,
    rounds: Option<u64>,
    pause: std::time::Duration,
    spawn_pidns: Option<u64>,
    hold: std::time::Duration,
    cgroup: Option<String>,
    ops: Vec<(Op, u64)>,
}

fn parse(args: Vec<String>) -> Result<Plan, String> {
    let mut new_pidns = false;
    let mut join_pidns = None;
    let mut threads = 1;
    let mut repeat_for = None;
    let mut rounds = None;
    let mut pause = std::time::Duration::from_millis(100);
    let mut spawn_pidns = None;
    let mut hold = std::time::Duration::ZERO;
    let mut cgroup = None;
    let mut ops = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--new-pidns" => new_pidns = true,
            "--join-pidns" => {
                join_pidns = Some(it.next().ok_or("--join-pidns takes a path")?);
            }
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or("--threads takes a number")?;
            }
            "--rounds" => {
                rounds = Some(
                    it.next()
                        .and_then(|t| t.parse().ok())
                        .ok_or("--rounds takes a number")?,
                );
            }
            "--pause" => {
                let ms = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or("--pause takes milliseconds")?;
                pause = std::time::Duration::from_millis(ms);
            }
            "--spawn-pidns" => {
                spawn_pidns = Some(
                    it.next()
                        .and_then(|t| t.parse().ok())
                        .ok_or("--spawn-pidns takes a count")?,
                );
            }
            "--cgroup" => cgroup = Some(it.next().ok_or("--cgroup takes a directory")?),
            "--hold" => {
                let ms = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or("--hold takes milliseconds")?;
                hold = std::time::Duration::from_millis(ms);
            }
            "--repeat-for" => {
                let secs = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or("--repeat-for takes seconds")?;
                repeat_for = Some(std::time::Duration::from_secs(secs));
            }
            "create" => {
                let path = it.next().ok_or("create takes a path")?;
                ops.push((Op::Create(cstring(path)?), 1));
            }
            "connect" => {
                let port = it
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("connect takes a port")?;
                ops.push((Op::Connect(port), 1));
            }
            "write" => {
                use std::os::fd::IntoRawFd as _;
                let text = it.next().ok_or("write takes a text")?;
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("write takes a count")?;
                let null = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| format!("/dev/null: {e}"))?;
                ops.push((Op::Write(null.into_raw_fd(), text.into_bytes()), n));
            }
            "exec" => {
                let path = it.next().ok_or("exec takes a path")?;
                let args = it.next().ok_or("exec takes arguments")?;
                let argv = args
                    .split(',')
                    .map(|a| cstring(a.to_owned()))
                    .collect::<Result<_, _>>()?;
                ops.push((Op::Exec(cstring(path)?, argv), 1));
            }
            op => {
                let op = match op {
                    "openat-missing" => Op::OpenatMissing,
                    "getppid" => Op::Getppid,
                    "nanosleep-5ms" => Op::Nanosleep5ms,
                    "enosys" => Op::Enosys,
                    "sigusr1" => Op::Sigusr1,
                    other => return Err(format!("unknown op {other}")),
                };
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("each op takes a count")?;
                ops.push((op, n));
            }
        }
    }
    Ok(Plan {
        new_pidns,
        join_pidns,
        threads,
        repeat_for,
        rounds,
        pause,
        spawn_pidns,
        hold,
        cgroup,
        ops,
    })
}

fn cstring(s: String) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(s).map_err(|e| format!("argument with a NUL: {e}"))
}

fn run(plan: &Plan) -> ExitCode {
    if let Some(dir) = &plan.cgroup {
        let procs = std::path::Path::new(dir).join("cgroup.procs");
        if let Err(err) = std::fs::write(&procs, std::process::id().to_string()) {
            eprintln!("swoll-workload: {}: {err}", procs.display());
            return ExitCode::from(3);
        }
    }
    if let Some(count) = plan.spawn_pidns {
        return spawn_pidns(plan, count);
    }
    if let Some(path) = &plan.join_pidns {
        let joined = std::fs::File::open(path).and_then(|ns| {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns on an fd we own, naming a pid namespace: only the pid namespace of
            // this process's future children changes.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        if let Err(err) = joined {
            eprintln!("swoll-workload: joining the pid namespace {path}: {err}");
            return ExitCode::from(3);
        }
    } else if !plan.new_pidns {
        return report_pid_ns().map_or(ExitCode::from(3), |()| work(plan));
    } else {
        // SAFETY: unshare takes a flag word and touches no memory of ours.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            eprintln!(
                "swoll-workload: unshare(CLONE_NEWPID): {}",
                std::io::Error::last_os_error()
            );
            return ExitCode::from(3);
        }
    }
    // SAFETY: this process is single-threaded here, so the child may do anything after fork.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("swoll-workload: fork: {}", std::io::Error::last_os_error());
            ExitCode::from(3)
        }
        0 => {
            // The first process of the new namespace: it dies with this one (a test that kills
            // the workload it spawned must not leave a namespace still making calls into the
            // next test; the kernel's signal reaches a namespace's init from its parent's
            // namespace), reports the namespace (statx and write, calls no test asserts on) and
            // then makes the calls.
            // SAFETY: prctl with integer arguments touches no memory of ours.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = match report_pid_ns() {
                Ok(()) if work(plan) == ExitCode::SUCCESS => 0,
                _ => 1,
            };
            // SAFETY: leave without running atexit handlers (stdout was flushed).
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for our own child, writing only `status`.
            if unsafe { libc::waitpid(child, &mut status, 0) } != child
                || !libc::WIFEXITED(status)
                || libc::WEXITSTATUS(status) != 0
            {
                eprintln!("swoll-workload: the child failed (status {status:#x})");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
    }
}

/// Creates `count` pid namespaces one after the other; the first process of each makes the
/// ops once and exits, ending its namespace.
fn spawn_pidns(plan: &Plan, count: u64) -> ExitCode {
    for _ in 0..count {
        // SAFETY: a fork-like clone (no new stack: the child runs on a copy of ours) into a new
        // pid namespace; this process is single-threaded, so the child may do anything.
        let child = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWPID | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        };
        match child {
            -1 => {
                eprintln!(
                    "swoll-workload: clone(CLONE_NEWPID): {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::from(3);
            }
            0 => {
                let code = i32::from(!plan.ops.iter().all(|(op, n)| make(op, *n)));
                // SAFETY: leave at once, as the first process of a namespace ends it.
                unsafe { libc::_exit(code) }
            }
            child => {
                let child = libc::pid_t::try_from(child).unwrap_or(-1);
                let mut status = 0;
                // SAFETY: waits for our own child, writing only `status`.
                if unsafe { libc::waitpid(child, &mut status, 0) } != child
                    || !libc::WIFEXITED(status)
                    || libc::WEXITSTATUS(status) != 0
                {
                    eprintln!("swoll-workload: a namespace's process failed ({status:#x})");
                    return ExitCode::from(1);
                }
            }
        }
    }
    println!("spawned {count}");
    ExitCode::SUCCESS
}

/// Prints `pidns <inode>` of the calling process's pid namespace.
fn report_pid_ns() -> Result<(), ()> {
    let ino = std::fs::metadata("/proc/self/ns/pid")
        .map_err(|err| eprintln!("swoll-workload: /proc/self/ns/pid: {err}"))?
        .ino();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "pidns {ino}")
        .and_then(|()| stdout.flush())
        .map_err(|err| eprintln!("swoll-workload: stdout: {err}"))
}

/// Runs the ops on `plan.threads` threads; each thread makes all of them (`--rounds` times,
/// `--pause` apart; or repeatedly with `--repeat-for`, pausing 100 ms between rounds).
fn work(plan: &Plan) -> ExitCode {
    let started = std::time::Instant::now();
    let once = || plan.ops.iter().all(|(op, n)| make(op, *n));
    let thread = || match (plan.repeat_for, plan.rounds) {
        (None, None) => once(),
        (_, Some(rounds)) => (0..rounds).all(|round| {
            if round > 0 {
                std::thread::sleep(plan.pause);
            }
            once()
        }),
        (Some(limit), None) => {
            while started.elapsed() < limit {
                if !once() {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            true
        }
    };
    let ok = std::thread::scope(|s| {
        let handles: Vec<_> = (0..plan.threads).map(|_| s.spawn(thread)).collect();
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    });
    std::thread::sleep(plan.hold);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

thread_local! {
    /// SIGUSR1s the handler ran for on this thread, so that `sigusr1` can check each of its
    /// signals was handled (per thread: with `--threads` each thread signals itself). A const
    /// initializer and no destructor: a plain thread-local word, safe to touch in a handler.
    static SIGUSR1_HANDLED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGUSR1_HANDLED.with(|n| n.set(n.get() + 1));
}

/// Installs [`on_sigusr1`] for SIGUSR1 (libc's `sigaction` adds the `rt_sigreturn` restorer).
fn handle_sigusr1() -> bool {
    // SAFETY: a zeroed sigaction is valid (an empty mask, no flags); the handler is an
    // async-signal-safe function that only adds to a thread-local word, and lives for the whole program.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) == 0
    }
}

/// Makes `n` calls of `op`, checking each returns what it must.
fn make(op: &Op, n: u64) -> bool {
    const MISSING: &[u8] = b"/swoll-workload/does/not/exist\0";
    /// The first syscall number of `enosys`: above every table of every architecture.
    const NO_SUCH_SYSCALL: libc::c_long = 1000;
    if matches!(op, Op::Sigusr1) && !handle_sigusr1() {
        return false;
    }
    for i in 0..n {
        // SAFETY: raw syscalls with valid arguments: a NUL-terminated path, a timespec on our
        // stack; none retains a pointer.
        let ok = unsafe {
            match op {
                Op::OpenatMissing => {
                    let ret = libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        MISSING.as_ptr(),
                        libc::O_RDONLY,
                    );
                    ret == -1 && *libc::__errno_location() == libc::ENOENT
                }
                Op::Getppid => libc::syscall(libc::SYS_getppid) >= 0,
                Op::Enosys => {
                    let nr = NO_SUCH_SYSCALL + libc::c_long::try_from(i).unwrap_or(0);
                    libc::syscall(nr) == -1 && *libc::__errno_location() == libc::ENOSYS
                }
                Op::Sigusr1 => {
                    // The signal is for this thread, so it is handled before tgkill returns.
                    let handled = SIGUSR1_HANDLED.with(std::cell::Cell::get);
                    libc::syscall(
                        libc::SYS_tgkill,
                        libc::syscall(libc::SYS_getpid),
                        libc::syscall(libc::SYS_gettid),
                        libc::SIGUSR1,
                    ) == 0
                        && SIGUSR1_HANDLED.with(std::cell::Cell::get) == handled + 1
                }
                Op::Nanosleep5ms => {
                    let ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 5_000_000,
                    };
                    libc::syscall(
                        libc::SYS_nanosleep,
                        &ts,
                        std::ptr::null_mut::<libc::timespec>(),
                    ) == 0
                }
                Op::Create(path) => {
                    let fd = libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY,
                        0o644,
                    );
                    fd >= 0 && libc::syscall(libc::SYS_close, fd) == 0
                }
                Op::Connect(port) => {
                    let fd = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
                    let addr = libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: port.to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                        },
                        sin_zero: [0; 8],
                    };
                    let len = std::mem::size_of::<libc::sockaddr_in>();
                    fd >= 0
                        && libc::syscall(libc::SYS_connect, fd, &raw const addr, len) == 0
                        && libc::syscall(libc::SYS_close, fd) == 0
                }
                Op::Write(fd, bytes) => {
                    let ret = libc::syscall(libc::SYS_write, *fd, bytes.as_ptr(), bytes.len());
                    usize::try_from(ret) == Ok(bytes.len())
                }
                Op::Exec(path, args) => {
                    let mut argv: Vec<*const libc::c_char> =
                        args.iter().map(|a| a.as_ptr()).collect();
                    argv.push(std::ptr::null());
                    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                    libc::syscall(
                        libc::SYS_execve,
                        path.as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                    );
                    // execve returns only on failure.
                    false
                }
            }
        };
        if !ok {
            return false;
        }
    }
    true
}
