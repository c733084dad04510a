//! Writes swoll's syscall tables, `decode/src/syscalls/table_<arch>.rs`, from the pinned
//! inputs in `decode/syscalls/`: `<arch>.tbl` (`<nr> <name>` a line, the kernel's numbering)
//! and `classes.tbl` (`<name> <Class> <Group>` a line).
//!
//! ```text
//! cargo xtask gen-syscalls                      # rewrite the tables in place
//! cargo xtask gen-syscalls --out-dir DIR     # write them to DIR instead
//! ```
//!
//! The tables are data, not code anyone should edit: regenerating them from inputs that record
//! where they came from keeps them reviewable and lets CI (`scripts/check-generated.sh`) prove
//! they are not stale. Every syscall must have a class (a missing one is an error, not an
//! `Unknown` label discovered on a dashboard), and the output goes through `rustfmt` so that
//! `cargo fmt --check` accepts it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Architectures: input file stem, which is also the output file suffix.
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// Bound on syscall numbers: the tables are dense arrays indexed by number, so a typo such as
/// `4000000` must not silently make one of them huge.
const MAX_NR: u32 = 4095;

const USAGE: &str = "usage: cargo xtask gen-syscalls [--root <decode dir>] [--out-dir <dir>]";

/// Runs the generator with the arguments after `gen-syscalls`.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-syscalls: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: impl Iterator<Item = OsString>) -> Result<(), String> {
    let mut root: Option<PathBuf> = None;
    let mut out_dir: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let slot = match arg.to_str() {
            Some("--root") => &mut root,
            Some("--out-dir") => &mut out_dir,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        };
        let value = args
            .next()
            .ok_or_else(|| format!("{arg:?} needs a value\n{USAGE}"))?;
        *slot = Some(PathBuf::from(value));
    }
    // A binary built by cargo knows where xtask/ is; the decode crate sits beside it.
    let root = root
        .or_else(|| option_env!("CARGO_MANIFEST_DIR").map(|dir| Path::new(dir).join("../decode")))
        .ok_or("cannot tell where the decode crate is: run through cargo or pass --root")?;
    let inputs = root.join("syscalls");
    let out_dir = out_dir.unwrap_or_else(|| root.join("src/syscalls"));

    // Read and check everything before writing anything.
    let classes_path = inputs.join("classes.tbl");
    let classes = parse_classes(&classes_path)?;
    let mut tables = Vec::new();
    for arch in ARCHES {
        tables.push((arch, parse_arch(&inputs.join(format!("{arch}.tbl")))?));
    }
    let mut missing = Vec::new();
    for (arch, syscalls) in &tables {
        for (nr, name) in syscalls {
            if !classes.contains_key(name.as_str()) {
                missing.push(format!("  {name} ({arch} {nr})"));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "these syscalls have no class: add a `<name> <Class> <Group>` line for each to {}\n{}",
            classes_path.display(),
            missing.join("\n")
        ));
    }
    let unused: Vec<&str> = classes
        .keys()
        .filter(|n| !tables.iter().any(|(_, t)| t.values().any(|v| v == **n)))
        .copied()
        .collect();
    if !unused.is_empty() {
        return Err(format!(
            "{} classifies names that no arch table has (a typo, or a syscall that is gone): {}",
            classes_path.display(),
            unused.join(", ")
        ));
    }

    for (arch, syscalls) in &tables {
        let source = rustfmt(&render(arch, syscalls, &classes)?)?;
        let out = out_dir.join(format!("table_{arch}.rs"));
        write_if_changed(&out, &source)?;
        let highest = syscalls.keys().next_back().copied().unwrap_or(0);
        eprintln!(
            "gen-syscalls: {}: {} syscalls, highest {highest}",
            out.display(),
            syscalls.len()
        );
    }
    Ok(())
}

/// A class and one of its groups, as written in classes.tbl.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Group<'a> {
    class: &'a str,
    group: &'a str,
}

/// The meaningful lines of a table file, with their 1-based line numbers: `#` starts a comment.
fn lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let fields: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        (!fields.is_empty()).then_some((i + 1, fields))
    })
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn is_syscall_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_label(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `<nr> <name>` lines: number → name, with no number or name twice.
fn parse_arch(path: &Path) -> Result<BTreeMap<u32, String>, String> {
    let text = read(path)?;
    let mut by_nr = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (line, fields) in lines(&text) {
        let at = || format!("{}:{line}", path.display());
        let [nr, name] = fields[..] else {
            return Err(format!("{}: expected `<nr> <name>`", at()));
        };
        let nr: u32 = nr
            .parse()
            .map_err(|_| format!("{}: `{nr}` is not a syscall number", at()))?;
        if nr > MAX_NR {
            return Err(format!("{}: {nr} is above {MAX_NR}: a typo?", at()));
        }
        if !is_syscall_name(name) {
            return Err(format!(
                "{}: `{name}` is not a syscall name ([a-z0-9_]+)",
                at()
            ));
        }
        if !names.insert(name) {
            return Err(format!("{}: {name} appears twice", at()));
        }
        if let Some(other) = by_nr.insert(nr, name.to_owned()) {
            return Err(format!("{}: {nr} is both {other} and {name}", at()));
        }
    }
    if by_nr.is_empty() {
        return Err(format!("{} has no syscalls", path.display()));
    }
    Ok(by_nr)
}

/// `<name> <Class> <Group>` lines: name → group, with no name twice.
fn parse_classes(path: &Path) -> Result<BTreeMap<&'static str, Group<'static>>, String> {
    // Leaked once: the generator is a short-lived process and this keeps the borrows simple.
    let text: &'static str = read(path)?.leak();
    let mut classes = BTreeMap::new();
    let mut class_of_group: BTreeMap<&str, &str> = BTreeMap::new();
    for (line, fields) in lines(text) {
        let at = || format!("{}:{line}", path.display());
        let [name, class, group] = fields[..] else {
            return Err(format!("{}: expected `<name> <Class> <Group>`", at()));
        };
        if !is_syscall_name(name) {
            return Err(format!(
                "{}: `{name}` is not a syscall name ([a-z0-9_]+)",
                at()
            ));
        }
        if !is_label(class) || !is_label(group) {
            return Err(format!("{}: class and group are CamelCase words", at()));
        }
        // Each group becomes one const in the tables, named after the group alone.
        if let Some(other) = class_of_group.insert(group, class).filter(|c| *c != class) {
            return Err(format!(
                "{}: group {group} is in class {other} already",
                at()
            ));
        }
        if classes.insert(name, Group { class, group }).is_some() {
            return Err(format!("{}: {name} is classified twice", at()));
        }
    }
    Ok(classes)
}

/// `POSIXClocks` → `POSIX_CLOCKS`, `MiscellaneousPM` → `MISCELLANEOUS_PM`.
fn const_name(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let boundary = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(char::is_ascii_lowercase))
            });
        if boundary {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The Rust source of one table (rustfmt runs on it afterwards).
fn render(
    arch: &str,
    syscalls: &BTreeMap<u32, String>,
    classes: &BTreeMap<&str, Group>,
) -> Result<String, String> {
    let mut groups: Vec<Group> = syscalls
        .values()
        .filter_map(|n| classes.get(n.as_str()).copied())
        .collect();
    groups.sort();
    groups.dedup();

    let mut s = format!(
        "//! Generated by `cargo xtask gen-syscalls` from decode/syscalls/*.tbl. Do not edit.
//!
//! The {arch} syscalls of `decode/syscalls/{arch}.tbl`, with their class and group from
//! `decode/syscalls/classes.tbl`.

use super::{{Group, Row}};

"
    );
    for g in &groups {
        let (name, class, group) = (const_name(g.group), g.class, g.group);
        s += &format!("const {name}: Group = Group::new({class:?}, {group:?});\n");
    }
    s += &format!(
        "\n/// Every {arch} syscall, in number order.\npub(super) const ROWS: &[Row] = &[\n"
    );
    for (nr, name) in syscalls {
        let group = classes
            .get(name.as_str())
            .ok_or_else(|| format!("{name} has no class"))?;
        s += &format!(
            "    Row::new({nr}, \"sys_{name}\", {}),\n",
            const_name(group.group)
        );
    }
    s += "];\n";
    Ok(s)
}

/// Formats `source` with rustfmt (`$RUSTFMT`, else `rustfmt` on the PATH).
fn rustfmt(source: &str) -> Result<String, String> {
    let program = std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into());
    let mut child = Command::new(&program)
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install it with `rustup component add rustfmt`)",
                program.to_string_lossy()
            )
        })?;
    let mut stdin = child.stdin.take().ok_or("rustfmt has no stdin")?;
    stdin
        .write_all(source.as_bytes())
        .map_err(|e| format!("writing to rustfmt: {e}"))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for rustfmt: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rustfmt failed ({}) on the generated source",
            output.status
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("rustfmt wrote invalid UTF-8: {e}"))
}

/// Writes `contents` unless the file already holds them, so an up-to-date table keeps its mtime
/// and cargo does not rebuild for nothing.
fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
