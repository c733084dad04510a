//! swoll's developer tasks, not part of the product: `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`).
//!
//! ```text
//! cargo xtask gen-syscalls [--out-dir DIR]   the syscall tables from decode/syscalls/*.tbl
//! ```
//!
//! Std only, so that `scripts/check-generated.sh` builds it with plain `rustc` in a second.

use std::process::ExitCode;

mod gen_syscalls;

const USAGE: &str = "usage: cargo xtask gen-syscalls [--out-dir <dir>]";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next().as_ref().and_then(|task| task.to_str()) {
        Some("gen-syscalls") => gen_syscalls::main(args),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::FAILURE
        }
    }
}
