//! A small reader for the kernel's BTF, enough to find struct member offsets.
//!
//! rustc emits no CO-RE relocations, so the probes cannot have the kernel fix up their struct
//! accesses at load time. Instead userspace reads the offsets it needs from the *running*
//! kernel's BTF (`/sys/kernel/btf/vmlinux`) and hands them to the probes in
//! [`swoll_maps_schema::config::KernelOffsets`]. Layouts move between kernels (6.18 added a
//! leading `ns_type` to `struct ns_common`, 7.x moved `__ns_ref` onto its own cache line), so
//! they must never be taken from the build machine.
//!
//! The reader is self-contained: it parses the header, walks the type section once to index the
//! start of every type and the struct/union names, and looks members up on demand, descending
//! into anonymous struct/union members. It never panics, whatever the input.
//!
//! Why not a library (compared against `tests/btf_kernels.rs`' five kernels and 400 corrupted
//! blobs): aya-obj 0.3 keeps struct members crate-private; btfparse 1.3 returns a forward
//! declaration for Debian 5.10's `pt_regs` (it keeps the last type of a name) and hangs or
//! overflows its stack on cyclic BTF; btf-rs 2.0 is right but has no lookup by member name (half
//! of this file would stay), adds five crates, parses 10–40× slower and is LGPL.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use swoll_maps_schema::{config::KernelOffsets, trace::TraceOffsets};

/// Where the running kernel's BTF lives. It exists only on kernels built with
/// `CONFIG_DEBUG_INFO_BTF=y` (Linux 5.8 or later), which swoll needs for its struct offsets.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Why offsets could not be read.
///
/// Every variant says where the problem is (file, struct, member or byte position), because
/// the agent cannot attach its probes without these offsets and the operator has to know why.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The kernel exposes no BTF at all: swoll cannot run on it.
    #[error(
        "{} does not exist: swoll needs a kernel with BTF (Linux 5.8 or later built with \
         CONFIG_DEBUG_INFO_BTF=y) to find the struct offsets its probes use",
        path.display()
    )]
    NoKernelBtf {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying "not found" error.
        #[source]
        source: io::Error,
    },
    /// The BTF file could not be read.
    #[error("cannot read BTF from {}", path.display())]
    Io {
        /// The path that was tried.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The blob does not start with the BTF magic 0xeb9f.
    #[error("not BTF data: magic is {found:#06x}, expected 0xeb9f")]
    BadMagic {
        /// The first two bytes, little-endian.
        found: u16,
    },
    /// A BTF version this reader does not know.
    #[error("unsupported BTF version {version} (only version 1 is known)")]
    UnsupportedVersion {
        /// The header's version byte.
        version: u8,
    },
    /// A part of the blob extends past its section or the end of the data.
    #[error("BTF data truncated: {what} needs bytes up to {end} but only {len} are available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// The end offset it needed.
        end: u64,
        /// How many bytes there were.
        len: u64,
    },
    /// The header or a type is inconsistent.
    #[error("malformed BTF: {reason}")]
    Malformed {
        /// What is wrong, with the type id or offset.
        reason: String,
    },
    /// A type kind this reader does not know, so the types after it cannot be found.
    #[error("BTF type {type_id} has unknown kind {kind}")]
    UnknownKind {
        /// The type's id.
        type_id: u32,
        /// Its kind number.
        kind: u32,
    },
    /// More types than the kernel itself accepts (`BTF_MAX_TYPE`).
    #[error("BTF has more than {limit} types")]
    TooManyTypes {
        /// The limit.
        limit: u32,
    },
    /// No struct (or union) of that name is defined in the BTF.
    #[error("struct {strukt} is not defined in the kernel's BTF")]
    StructNotFound {
        /// The struct name looked up.
        strukt: String,
    },
    /// The struct exists but none of its definitions has that member.
    #[error("struct {strukt} has no member {member} in the kernel's BTF")]
    MemberNotFound {
        /// The struct name looked up.
        strukt: String,
        /// The member name looked up.
        member: String,
    },
    /// The member is a bitfield, so it has no byte offset that could be read as a whole.
    #[error(
        "{strukt}.{member} is a bitfield ({bits} bits at bit {bit_offset}), not a byte-addressable member"
    )]
    Bitfield {
        /// The struct name looked up.
        strukt: String,
        /// The member name looked up.
        member: String,
        /// Its offset in bits from the start of the struct.
        bit_offset: u64,
        /// Its width in bits.
        bits: u32,
    },
    /// swoll does not know where this architecture keeps the syscall number in `pt_regs`.
    #[error("unsupported architecture {arch}: no known pt_regs member holds the syscall number")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
}

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// The kernel refuses BTF with more types than this (`BTF_MAX_TYPE` in `include/uapi/linux/btf.h`).
const MAX_TYPES: u32 = 0x000f_ffff;
/// How deep anonymous members and modifier chains are followed before the BTF is called cyclic.
const MAX_DEPTH: u32 = 64;
/// How many anonymous members one lookup visits at most (vmlinux needs a few dozen).
const MAX_ANON_VISITS: u32 = 10_000;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// The fixed part of a BTF type (`struct btf_type`).
#[derive(Clone, Copy, Debug)]
struct TypeHeader {
    /// This type's id, for error messages.
    id: u32,
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT/ENUM64, else `type`.
    size_or_type: u32,
    /// Offset of the trailing data in the type section.
    data: usize,
}

/// A parsed BTF blob.
///
/// Holds the raw type and string sections, the start of each type (so a type id is found in
/// O(1)) and an index from struct/union names to their ids, so the many lookups at startup do
/// not rescan the ~130 000 types of a vmlinux BTF.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    big_endian: bool,
    /// `type_starts[id]` is the offset of type `id` in `types`; index 0 (void) is unused.
    type_starts: Vec<u32>,
    /// STRUCT and UNION ids by name, in id order.
    by_name: HashMap<Box<[u8]>, Vec<u32>>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &(self.type_starts.len().saturating_sub(1)))
            .field("type_bytes", &self.types.len())
            .field("string_bytes", &self.strings.len())
            .field("big_endian", &self.big_endian)
            .finish()
    }
}

fn malformed(reason: impl Into<String>) -> BtfError {
    BtfError::Malformed {
        reason: reason.into(),
    }
}

/// Reads a u32 at `off`, or `None` past the end.
fn read_u32(data: &[u8], off: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// The section `[start, start+len)` of `data`, checked.
fn section<'a>(
    data: &'a [u8],
    start: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], BtfError> {
    let end = start.saturating_add(len);
    let total = data.len() as u64;
    if end > total {
        return Err(BtfError::Truncated {
            what,
            end,
            len: total,
        });
    }
    // Both fit in usize: they are at most data.len().
    Ok(&data[start as usize..end as usize])
}

impl Btf {
    /// Parses a BTF blob (the contents of `/sys/kernel/btf/vmlinux` or a `.BTF` section).
    ///
    /// Validates the header and walks every type once, so that a blob that parses can be
    /// queried without further bounds surprises. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        if bytes.len() < 4 {
            return Err(BtfError::Truncated {
                what: "BTF header",
                end: HEADER_LEN as u64,
                len: bytes.len() as u64,
            });
        }
        // The blob is in the byte order of the kernel that wrote it: the magic tells which.
        let big_endian = match u16::from_le_bytes([bytes[0], bytes[1]]) {
            MAGIC => false,
            m if m.swap_bytes() == MAGIC => true,
            found => return Err(BtfError::BadMagic { found }),
        };
        let version = bytes[2];
        if version != 1 {
            return Err(BtfError::UnsupportedVersion { version });
        }
        let field = |off: usize| {
            read_u32(bytes, off, big_endian).ok_or(BtfError::Truncated {
                what: "BTF header",
                end: HEADER_LEN as u64,
                len: bytes.len() as u64,
            })
        };
        let hdr_len = field(4)?;
        let type_off = field(8)?;
        let type_len = field(12)?;
        let str_off = field(16)?;
        let str_len = field(20)?;
        if (hdr_len as usize) < HEADER_LEN {
            return Err(malformed(format!(
                "header length {hdr_len} is shorter than the {HEADER_LEN} bytes of the header"
            )));
        }
        let base = u64::from(hdr_len);
        let types = section(
            bytes,
            base + u64::from(type_off),
            u64::from(type_len),
            "type section",
        )?;
        let strings = section(
            bytes,
            base + u64::from(str_off),
            u64::from(str_len),
            "string section",
        )?;
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(malformed(
                "string section does not start with an empty string",
            ));
        }

        let mut btf = Btf {
            types: types.to_vec(),
            strings: strings.to_vec(),
            big_endian,
            type_starts: vec![0],
            by_name: HashMap::new(),
        };
        btf.index()?;
        Ok(btf)
    }

    /// Reads and parses a BTF file.
    ///
    /// A missing [`VMLINUX`] gives [`BtfError::NoKernelBtf`], whose message tells the operator
    /// which kernel option is missing.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound && path == Path::new(VMLINUX) {
                BtfError::NoKernelBtf {
                    path: path.to_owned(),
                    source,
                }
            } else {
                BtfError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Btf::parse(&bytes)
    }

    /// Walks the type section once: records where each type starts and indexes the names of
    /// structs and unions.
    fn index(&mut self) -> Result<(), BtfError> {
        let mut off = 0usize;
        let total = self.types.len();
        while off < total {
            let id = self.type_starts.len() as u32;
            if id > MAX_TYPES {
                return Err(BtfError::TooManyTypes { limit: MAX_TYPES });
            }
            let t = self.header_at(off, id)?;
            let trailing: u64 = match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * u64::from(t.vlen),
                KIND_ENUM | KIND_FUNC_PROTO => 8 * u64::from(t.vlen),
                kind => return Err(BtfError::UnknownKind { type_id: id, kind }),
            };
            let end = t.data as u64 + trailing;
            if end > total as u64 {
                return Err(BtfError::Truncated {
                    what: "type data",
                    end,
                    len: total as u64,
                });
            }
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name_off != 0 {
                let name = self.name(t.name_off, id)?;
                if !name.is_empty() {
                    self.by_name
                        .entry(name.to_vec().into_boxed_slice())
                        .or_default()
                        .push(id);
                }
            }
            self.type_starts.push(off as u32);
            off = end as usize;
        }
        Ok(())
    }

    /// Decodes the `struct btf_type` at `off` in the type section.
    fn header_at(&self, off: usize, id: u32) -> Result<TypeHeader, BtfError> {
        let word = |i: usize| {
            read_u32(&self.types, off + 4 * i, self.big_endian).ok_or(BtfError::Truncated {
                what: "type header",
                end: (off + TYPE_LEN) as u64,
                len: self.types.len() as u64,
            })
        };
        let name_off = word(0)?;
        let info = word(1)?;
        let size_or_type = word(2)?;
        Ok(TypeHeader {
            id,
            name_off,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type,
            data: off + TYPE_LEN,
        })
    }

    /// The type with id `id`.
    fn type_by_id(&self, id: u32) -> Result<TypeHeader, BtfError> {
        match self.type_starts.get(id as usize) {
            Some(&off) if id != 0 => self.header_at(off as usize, id),
            _ => Err(malformed(format!(
                "reference to type {id}, but ids run from 1 to {}",
                self.type_starts.len() - 1
            ))),
        }
    }

    /// The NUL-terminated string at `off` in the string section.
    fn name(&self, off: u32, id: u32) -> Result<&[u8], BtfError> {
        let rest = self.strings.get(off as usize..).ok_or_else(|| {
            malformed(format!(
                "type {id} names string offset {off}, past the {}-byte string section",
                self.strings.len()
            ))
        })?;
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            malformed(format!(
                "string at offset {off} (type {id}) is not NUL-terminated"
            ))
        })?;
        Ok(&rest[..len])
    }

    /// Member `i` of a STRUCT/UNION: (name offset, type id, raw offset word).
    fn member(&self, t: &TypeHeader, i: u32) -> Result<(u32, u32, u32), BtfError> {
        let off = t.data + 12 * i as usize;
        let word = |k: usize| {
            read_u32(&self.types, off + 4 * k, self.big_endian).ok_or(BtfError::Truncated {
                what: "struct member",
                end: (off + 12) as u64,
                len: self.types.len() as u64,
            })
        };
        Ok((word(0)?, word(1)?, word(2)?))
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, TypeHeader), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.type_by_id(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                    if id == 0 {
                        return Ok((0, t));
                    }
                }
                _ => return Ok((id, t)),
            }
        }
        Err(malformed(format!(
            "typedef/modifier chain through type {id} is longer than {MAX_DEPTH}: cyclic?"
        )))
    }

    /// Searches `t` (a STRUCT/UNION) for `member`, descending into anonymous struct/union
    /// members. Returns the bit offset from the start of `t` and the bitfield width (0 if the
    /// member is not a bitfield).
    ///
    /// `budget` bounds the number of anonymous members visited in total, so that a crafted
    /// blob whose anonymous members share types cannot make the search exponential.
    fn find_member(
        &self,
        t: &TypeHeader,
        member: &[u8],
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<(u64, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members of type {} nested deeper than {MAX_DEPTH}: cyclic?",
                t.id
            )));
        }
        let decode = |raw: u32| -> (u64, u32) {
            if t.kind_flag {
                (u64::from(raw & 0x00ff_ffff), raw >> 24)
            } else {
                (u64::from(raw), 0)
            }
        };
        let mut anonymous = Vec::new();
        for i in 0..t.vlen {
            let (name_off, type_id, raw) = self.member(t, i)?;
            let (bit_offset, mut bits) = decode(raw);
            let name = self.name(name_off, t.id)?;
            if name.is_empty() {
                anonymous.push((type_id, bit_offset));
            } else if name == member {
                if bits == 0 {
                    // Without kind_flag, a bitfield is an INT whose encoding is narrower
                    // than its size or starts at a bit offset.
                    let (_, mt) = self.resolve(type_id)?;
                    if mt.kind == KIND_INT {
                        let enc = read_u32(&self.types, mt.data, self.big_endian).unwrap_or(0);
                        let (int_bits, int_off) = (enc & 0xff, (enc >> 16) & 0xff);
                        if int_off != 0 || int_bits != mt.size_or_type.saturating_mul(8) {
                            bits = int_bits;
                        }
                    }
                }
                return Ok(Some((bit_offset, bits)));
            }
        }
        for (type_id, bit_offset) in anonymous {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                malformed(format!(
                    "too many anonymous members below type {}: {MAX_ANON_VISITS} visited",
                    t.id
                ))
            })?;
            let (_, inner) = self.resolve(type_id)?;
            if !matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                continue;
            }
            if let Some((inner_off, bits)) = self.find_member(&inner, member, depth + 1, budget)? {
                return Ok(Some((bit_offset + inner_off, bits)));
            }
        }
        Ok(None)
    }

    /// Byte offset of `member` in `struct strukt`, also when the member sits inside anonymous
    /// struct/union members (as many kernel fields do).
    ///
    /// When several structs share the name, the first one that has the member wins: the
    /// kernel's BTF can hold distinct same-named types and only one of them is the real one.
    /// A bitfield has no byte offset and gives [`BtfError::Bitfield`].
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self.struct_ids(strukt)?;
        for &id in ids {
            let t = self.type_by_id(id)?;
            let mut budget = MAX_ANON_VISITS;
            let found = self.find_member(&t, member.as_bytes(), 0, &mut budget)?;
            let Some((bit_offset, bits)) = found else {
                continue;
            };
            if bits != 0 || bit_offset % 8 != 0 {
                return Err(BtfError::Bitfield {
                    strukt: strukt.to_owned(),
                    member: member.to_owned(),
                    bit_offset,
                    bits,
                });
            }
            return u32::try_from(bit_offset / 8).map_err(|_| {
                malformed(format!(
                    "{strukt}.{member} is at bit {bit_offset}, beyond 4 GiB"
                ))
            });
        }
        Err(BtfError::MemberNotFound {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        })
    }

    /// Size in bytes of `struct strukt` (the first definition of that name).
    pub fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        let id = self.struct_ids(strukt)?[0];
        Ok(self.type_by_id(id)?.size_or_type)
    }

    /// The ids of the structs/unions called `strukt`, never empty.
    fn struct_ids(&self, strukt: &str) -> Result<&[u32], BtfError> {
        match self.by_name.get(strukt.as_bytes()) {
            Some(ids) if !ids.is_empty() => Ok(ids),
            _ => Err(BtfError::StructNotFound {
                strukt: strukt.to_owned(),
            }),
        }
    }
}

/// The `pt_regs` member that holds the syscall number on the architecture swoll runs on.
fn pt_regs_syscall_nr() -> Result<&'static str, BtfError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("orig_ax"),
        "aarch64" => Ok("syscallno"),
        arch => Err(BtfError::UnsupportedArch { arch }),
    }
}

/// The offsets the probes need to walk `task->thread_pid->numbers[pid->level].ns->ns.inum`
/// and to read the syscall number from `pt_regs`, read from `btf` (the running kernel's).
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        task_thread_pid: btf.member_offset("task_struct", "thread_pid")?,
        pid_level: btf.member_offset("pid", "level")?,
        pid_numbers: btf.member_offset("pid", "numbers")?,
        upid_size: btf.struct_size("upid")?,
        upid_ns: btf.member_offset("upid", "ns")?,
        pid_ns_inum: btf
            .member_offset("pid_namespace", "ns")?
            .checked_add(btf.member_offset("ns_common", "inum")?)
            .ok_or_else(|| malformed("pid_namespace.ns + ns_common.inum overflows"))?,
        regs_syscall_nr: btf.member_offset("pt_regs", pt_regs_syscall_nr()?)?,
        task_start_time: btf.member_offset("task_struct", "start_time")?,
    })
}

/// The `pt_regs` members that hold the six syscall arguments at `sys_enter`, as
/// (member, extra bytes): x86_64's registers by name; aarch64's `orig_x0` and `regs[1..6]`.
fn pt_regs_args() -> Result<[(&'static str, u32); 6], BtfError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok([
            ("di", 0),
            ("si", 0),
            ("dx", 0),
            ("r10", 0),
            ("r8", 0),
            ("r9", 0),
        ]),
        "aarch64" => Ok([
            ("orig_x0", 0),
            ("regs", 8),
            ("regs", 16),
            ("regs", 24),
            ("regs", 32),
            ("regs", 40),
        ]),
        arch => Err(BtfError::UnsupportedArch { arch }),
    }
}

/// The offsets trace mode needs besides [`kernel_offsets`]: the syscall arguments in
/// `pt_regs`, the thread group leader, `upid.nr`, and the UTS and mount namespaces' inodes
/// through `task->nsproxy`.
pub fn trace_offsets(btf: &Btf) -> Result<TraceOffsets, BtfError> {
    let inum = btf.member_offset("ns_common", "inum")?;
    let ns_inum = |strukt: &str| -> Result<u32, BtfError> {
        btf.member_offset(strukt, "ns")?
            .checked_add(inum)
            .ok_or_else(|| malformed(format!("{strukt}.ns + ns_common.inum overflows")))
    };
    let mut regs_args = [0; 6];
    for (slot, (member, extra)) in regs_args.iter_mut().zip(pt_regs_args()?) {
        *slot = btf.member_offset("pt_regs", member)? + extra;
    }
    Ok(TraceOffsets {
        regs_args,
        task_group_leader: btf.member_offset("task_struct", "group_leader")?,
        upid_nr: btf.member_offset("upid", "nr")?,
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_uts_ns: btf.member_offset("nsproxy", "uts_ns")?,
        nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
        uts_ns_inum: ns_inum("uts_namespace")?,
        mnt_ns_inum: ns_inum("mnt_namespace")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds tiny BTF blobs: header + types + strings, little-endian.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// Appends a type with raw trailing words; returns its id.
        fn raw(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: u32,
            size_or_type: u32,
            trailing: &[u32],
        ) -> u32 {
            let name_off = self.str(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for w in [name_off, info, size_or_type].iter().chain(trailing) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, KIND_INT, false, 0, size, &[size * 8])
        }

        fn ptr(&mut self, target: u32) -> u32 {
            self.raw("", KIND_PTR, false, 0, target, &[])
        }

        fn modifier(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.raw(name, kind, false, 0, target, &[])
        }

        /// A STRUCT/UNION; members are (name, type, raw offset word).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut words = Vec::new();
            for &(n, ty, off) in members {
                words.extend([self.str(n), ty, off]);
            }
            self.raw(name, kind, kind_flag, members.len() as u32, size, &words)
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_STRUCT, name, size, false, members)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let words = [
                u32::from(MAGIC) | (1 << 16),
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A kernel-like blob: the 6.18 layouts of the structs [`kernel_offsets`] reads, with
    /// `ns_common.inum` reached through an anonymous union of an anonymous struct.
    fn kernel_like() -> Builder {
        let mut b = Builder::new();
        let uint = b.int("unsigned int", 4);
        let ulong = b.int("long unsigned int", 8);
        let u32_t = b.modifier(KIND_TYPEDEF, "u32", uint);
        let u32_t2 = b.modifier(KIND_TYPEDEF, "__u32", u32_t);
        let cu32 = b.modifier(KIND_CONST, "", u32_t2);
        let inner = b.strukt("", 8, &[("inum", cu32, 0), ("count", uint, 32)]);
        let union = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("", inner, 0), ("rcu", ulong, 0)],
        );
        let vol_union = b.modifier(KIND_VOLATILE, "", union);
        let ns_common = b.strukt(
            "ns_common",
            32,
            &[
                ("ns_type", uint, 0),
                ("stashed", ulong, 64),
                ("", vol_union, 192),
            ],
        );
        let pid_ns = b.strukt(
            "pid_namespace",
            344,
            &[("level", uint, 512), ("ns", ns_common, 896)],
        );
        let pid_ns_ptr = b.ptr(pid_ns);
        let upid = b.strukt("upid", 16, &[("nr", uint, 0), ("ns", pid_ns_ptr, 64)]);
        let arr = b.raw("", KIND_ARRAY, false, 0, 0, &[upid, uint, 0]);
        let pid = b.strukt("pid", 144, &[("level", uint, 32), ("numbers", arr, 1152)]);
        let pid_ptr = b.ptr(pid);
        b.composite(
            KIND_STRUCT,
            "task_struct",
            3264,
            true,
            &[
                ("flags", uint, (1 << 24) | 3),
                ("thread_pid", pid_ptr, 10944),
                ("start_time", ulong, 11008),
            ],
        );
        b.strukt(
            "pt_regs",
            168,
            &[("orig_ax", ulong, 960), ("syscallno", uint, 1024)],
        );
        b
    }

    #[test]
    fn btf_kernel_like_offsets() {
        let btf = Btf::parse(&kernel_like().build()).unwrap();
        let off = kernel_offsets(&btf).unwrap();
        assert_eq!(off.task_thread_pid, 1368);
        assert_eq!(off.pid_level, 4);
        assert_eq!(off.pid_numbers, 144);
        assert_eq!(off.upid_size, 16);
        assert_eq!(off.upid_ns, 8);
        assert_eq!(off.pid_ns_inum, 112 + 24);
        assert_eq!(off.task_start_time, 1376);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(off.regs_syscall_nr, 120);
        }
    }

    /// One case: build a blob, look something up, expect a value or an error.
    type Case = (
        &'static str,
        fn() -> Vec<u8>,
        &'static str,
        &'static str,
        Result<u32, &'static str>,
    );

    #[test]
    fn btf_table() {
        let cases: &[Case] = &[
            (
                "nested anonymous union",
                || kernel_like().build(),
                "ns_common",
                "inum",
                Ok(24),
            ),
            (
                "nested anonymous struct 2nd",
                || kernel_like().build(),
                "ns_common",
                "count",
                Ok(28),
            ),
            (
                "member of anonymous union",
                || kernel_like().build(),
                "ns_common",
                "rcu",
                Ok(24),
            ),
            (
                "plain member",
                || kernel_like().build(),
                "pid_namespace",
                "ns",
                Ok(112),
            ),
            (
                "kind_flag non-bitfield",
                || kernel_like().build(),
                "task_struct",
                "thread_pid",
                Ok(1368),
            ),
            (
                "kind_flag bitfield",
                || kernel_like().build(),
                "task_struct",
                "flags",
                Err("Bitfield"),
            ),
            (
                "missing struct",
                || kernel_like().build(),
                "no_such_struct",
                "x",
                Err("StructNotFound"),
            ),
            (
                "missing member",
                || kernel_like().build(),
                "pid",
                "nope",
                Err("MemberNotFound"),
            ),
            (
                "kind_flag bitfield size in high bits is masked off",
                || {
                    let mut b = Builder::new();
                    let u = b.int("unsigned int", 4);
                    // A 3-bit field at bit 35, then a plain member at byte 8.
                    b.composite(
                        KIND_STRUCT,
                        "s",
                        16,
                        true,
                        &[("bf", u, (3 << 24) | 35), ("x", u, 64)],
                    );
                    b.build()
                },
                "s",
                "x",
                Ok(8),
            ),
            (
                "int-encoded bitfield without kind_flag",
                || {
                    let mut b = Builder::new();
                    let bf = b.raw("unsigned int", KIND_INT, false, 0, 4, &[3]);
                    b.strukt("s", 4, &[("bf", bf, 8)]);
                    b.build()
                },
                "s",
                "bf",
                Err("Bitfield"),
            ),
            (
                "typedef chain into anonymous member",
                || {
                    let mut b = Builder::new();
                    let u = b.int("int", 4);
                    let anon = b.strukt("", 8, &[("a", u, 0), ("b", u, 32)]);
                    let t1 = b.modifier(KIND_TYPEDEF, "t1", anon);
                    let t2 = b.modifier(KIND_CONST, "", t1);
                    let t3 = b.modifier(KIND_TYPEDEF, "t3", t2);
                    let t4 = b.modifier(KIND_TYPE_TAG, "tag", t3);
                    b.strukt("outer", 24, &[("x", u, 0), ("", t4, 128)]);
                    b.build()
                },
                "outer",
                "b",
                Ok(20),
            ),
            (
                "named struct member is not descended into",
                || {
                    let mut b = Builder::new();
                    let u = b.int("int", 4);
                    let inner = b.strukt("inner", 4, &[("deep", u, 0)]);
                    b.strukt("outer", 8, &[("named", inner, 32)]);
                    b.build()
                },
                "outer",
                "deep",
                Err("MemberNotFound"),
            ),
            (
                "duplicate names: first with the member wins, forward skipped",
                || {
                    let mut b = Builder::new();
                    let u = b.int("int", 4);
                    b.raw("dup", KIND_FWD, false, 0, 0, &[]);
                    b.strukt("dup", 4, &[("a", u, 0)]);
                    b.strukt("dup", 8, &[("a", u, 0), ("b", u, 32)]);
                    b.build()
                },
                "dup",
                "b",
                Ok(4),
            ),
            (
                "every kind skipped with its trailing data",
                || {
                    let mut b = Builder::new();
                    let u = b.int("int", 4); // 1: INT, 4 bytes
                    b.ptr(u); // PTR
                    b.raw("", KIND_ARRAY, false, 0, 0, &[u, u, 4]); // ARRAY
                    b.composite(KIND_UNION, "un", 4, false, &[("a", u, 0)]); // UNION
                    b.raw("e", KIND_ENUM, false, 2, 4, &[0, 0, 0, 1]); // ENUM, 8/entry
                    b.raw("fw", KIND_FWD, true, 0, 0, &[]); // FWD
                    b.modifier(KIND_TYPEDEF, "td", u);
                    b.modifier(KIND_VOLATILE, "", u);
                    b.modifier(KIND_CONST, "", u);
                    b.modifier(KIND_RESTRICT, "", u);
                    let proto = b.raw("", KIND_FUNC_PROTO, false, 2, u, &[0, u, 0, u]); // 8/param
                    b.raw("f", KIND_FUNC, false, 0, proto, &[]);
                    let var = b.raw("v", KIND_VAR, false, 0, u, &[1]); // VAR, 4 bytes
                    b.raw(".data", KIND_DATASEC, false, 1, 4, &[var, 0, 4]); // 12/var
                    b.raw("double", KIND_FLOAT, false, 0, 8, &[]);
                    b.raw("tag", KIND_DECL_TAG, false, 0, var, &[0xffff_ffff]); // 4 bytes
                    b.raw("ttag", KIND_TYPE_TAG, false, 0, u, &[]);
                    b.raw("e64", KIND_ENUM64, true, 2, 8, &[0, 1, 2, 0, 3, 4]); // 12/entry
                    b.strukt("last", 8, &[("a", u, 0), ("z", u, 32)]);
                    b.build()
                },
                "last",
                "z",
                Ok(4),
            ),
            ("empty blob", Vec::new, "s", "x", Err("Truncated")),
            (
                "truncated header",
                || kernel_like().build()[..10].to_vec(),
                "s",
                "x",
                Err("Truncated"),
            ),
            (
                "truncated blob",
                || {
                    let mut v = kernel_like().build();
                    v.truncate(v.len() - 7);
                    v
                },
                "s",
                "x",
                Err("Truncated"),
            ),
            (
                "bad magic",
                || {
                    let mut v = kernel_like().build();
                    v[0] = 0x7f;
                    v
                },
                "s",
                "x",
                Err("BadMagic"),
            ),
            (
                "bad version",
                || {
                    let mut v = kernel_like().build();
                    v[2] = 2;
                    v
                },
                "s",
                "x",
                Err("UnsupportedVersion"),
            ),
            (
                "header length too short",
                || {
                    let mut v = kernel_like().build();
                    v[4..8].copy_from_slice(&8u32.to_le_bytes());
                    v
                },
                "s",
                "x",
                Err("Malformed"),
            ),
            (
                "section offsets overflow u32",
                || {
                    let mut v = kernel_like().build();
                    v[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                    v[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
                    v
                },
                "s",
                "x",
                Err("Truncated"),
            ),
            (
                "member count beyond the section",
                || {
                    let mut b = Builder::new();
                    let u = b.int("int", 4);
                    b.raw("s", KIND_STRUCT, false, 0xffff, 4, &[0, u, 0]);
                    b.build()
                },
                "s",
                "x",
                Err("Truncated"),
            ),
            (
                "type count overflow",
                || {
                    let mut b = Builder::new();
                    for _ in 0..=MAX_TYPES {
                        b.raw("", KIND_PTR, false, 0, 0, &[]);
                    }
                    b.build()
                },
                "s",
                "x",
                Err("TooManyTypes"),
            ),
            (
                "unknown kind",
                || {
                    let mut b = Builder::new();
                    b.raw("", 31, false, 0, 0, &[]);
                    b.build()
                },
                "s",
                "x",
                Err("UnknownKind"),
            ),
            (
                "name offset past strings",
                || {
                    let mut b = Builder::new();
                    b.raw("", KIND_STRUCT, false, 0, 4, &[]);
                    let mut v = b.build();
                    v[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&999u32.to_le_bytes());
                    v
                },
                "s",
                "x",
                Err("Malformed"),
            ),
            (
                "dangling member type id",
                || {
                    let mut b = Builder::new();
                    b.strukt("s", 8, &[("", 77, 0)]);
                    b.build()
                },
                "s",
                "x",
                Err("Malformed"),
            ),
            (
                "cyclic typedef",
                || {
                    let mut b = Builder::new();
                    // 1 -> 2 -> 1
                    b.modifier(KIND_TYPEDEF, "a", 2);
                    b.modifier(KIND_TYPEDEF, "b", 1);
                    b.strukt("s", 8, &[("", 1, 0)]);
                    b.build()
                },
                "s",
                "x",
                Err("Malformed"),
            ),
            (
                "self-containing anonymous struct",
                || {
                    let mut b = Builder::new();
                    // type 1 is an anonymous struct whose only member is itself.
                    b.strukt("", 8, &[("", 1, 0)]);
                    b.strukt("s", 8, &[("", 1, 0)]);
                    b.build()
                },
                "s",
                "x",
                Err("Malformed"),
            ),
            (
                "anonymous members sharing types (exponential search)",
                || {
                    let mut b = Builder::new();
                    // Type k+1 has two anonymous members of type k: 2^60 paths to the leaf.
                    let mut prev = b.strukt("", 4, &[]);
                    for _ in 0..60 {
                        prev = b.strukt("", 4, &[("", prev, 0), ("", prev, 0)]);
                    }
                    b.strukt("s", 4, &[("", prev, 0)]);
                    b.build()
                },
                "s",
                "x",
                Err("Malformed"),
            ),
        ];
        for (what, blob, strukt, member, want) in cases {
            let got = Btf::parse(&blob()).and_then(|btf| btf.member_offset(strukt, member));
            match (&got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v, w, "{what}"),
                (Err(e), Err(w)) => {
                    let name = format!("{e:?}");
                    assert!(name.starts_with(w), "{what}: want {w}, got {e}");
                    assert!(!e.to_string().is_empty());
                }
                _ => panic!("{what}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn btf_struct_size() {
        let btf = Btf::parse(&kernel_like().build()).unwrap();
        assert_eq!(btf.struct_size("upid").unwrap(), 16);
        assert_eq!(btf.struct_size("pid_namespace").unwrap(), 344);
        assert!(matches!(
            btf.struct_size("nope"),
            Err(BtfError::StructNotFound { .. })
        ));
    }

    #[test]
    fn btf_big_endian() {
        // Byte-swap every u32 of a little-endian blob (header, types, strings are bytes).
        let b = kernel_like();
        let le = b.build();
        let mut be = Vec::new();
        for chunk in le[..HEADER_LEN + b.types.len()].chunks(4) {
            let w = u32::from_le_bytes(chunk.try_into().unwrap());
            be.extend_from_slice(&w.to_be_bytes());
        }
        // The header's first word is magic(u16), version, flags: not one u32.
        be[0..4].copy_from_slice(&[0xeb, 0x9f, 1, 0]);
        be.extend_from_slice(&le[HEADER_LEN + b.types.len()..]);
        let btf = Btf::parse(&be).unwrap();
        assert_eq!(btf.member_offset("ns_common", "inum").unwrap(), 24);
    }

    #[test]
    fn btf_missing_vmlinux_names_the_kernel_option() {
        let err = Btf::from_file(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(matches!(err, BtfError::Io { .. }), "{err:?}");
        // The message for the real path, as an operator would see it.
        let err = BtfError::NoKernelBtf {
            path: VMLINUX.into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF=y"), "{err}");
    }

    /// A struct's size and its direct members' byte offsets, by name.
    type StructLayout = (u32, HashMap<String, u32>);

    /// Member byte offsets and struct sizes from `bpftool btf dump ... format raw`: an
    /// independent parser (libbpf's). First STRUCT of each name, direct members only.
    fn bpftool_layout(path: &str) -> Option<HashMap<String, StructLayout>> {
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", path, "format", "raw"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        // `value=N` out of a line such as `[1] STRUCT 'x' size=8 vlen=1`.
        let num = |line: &str, key: &str| -> Option<u32> {
            line.split(key).nth(1)?.split(' ').next()?.parse().ok()
        };
        let mut structs: HashMap<String, StructLayout> = HashMap::new();
        // The struct whose member lines follow, unless an earlier one had its name.
        let mut current: Option<&mut StructLayout> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('\t') {
                if let Some((_, members)) = current.as_mut() {
                    let name = rest.split('\'').nth(1)?.to_owned();
                    members.insert(name, num(rest, "bits_offset=")? / 8);
                }
                continue;
            }
            current = None;
            let mut words = line.split_whitespace();
            let (_, kind, name) = (words.next()?, words.next()?, words.next()?);
            let name = name.trim_matches('\'');
            if kind == "STRUCT" && name != "(anon)" && !structs.contains_key(name) {
                let layout = (num(line, "size=")?, HashMap::new());
                current = Some(structs.entry(name.to_owned()).or_insert(layout));
            }
        }
        Some(structs)
    }

    #[test]
    fn btf_host_vmlinux() {
        // CI's machines have BTF and bpftool (scripts/setup.sh --test): there a missing one is a
        // failure, not a skip.
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let path = Path::new(VMLINUX);
        if !path.exists() {
            assert!(!in_ci, "{VMLINUX} is absent under CI=true");
            eprintln!("skipped: {VMLINUX} is absent (kernel without CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let start = std::time::Instant::now();
        let btf = Btf::from_file(path).unwrap();
        eprintln!("parsed {VMLINUX} in {:?}: {btf:?}", start.elapsed());
        let off = kernel_offsets(&btf).unwrap();
        eprintln!("{off:?}");
        assert_eq!(off.upid_size, 16);
        assert!(off.pid_numbers > off.pid_level);
        for v in [
            off.task_thread_pid,
            off.pid_numbers,
            off.upid_ns,
            off.pid_ns_inum,
            off.regs_syscall_nr,
        ] {
            assert_ne!(v, 0, "{off:?}");
        }
        let Some(raw) = bpftool_layout(VMLINUX) else {
            assert!(
                !in_ci,
                "bpftool failed under CI=true: no independent comparison"
            );
            eprintln!("bpftool unavailable: independent comparison skipped");
            return;
        };
        let m = |s: &str, f: &str| raw[s].1[f];
        assert_eq!(off.task_thread_pid, m("task_struct", "thread_pid"));
        assert_eq!(off.pid_level, m("pid", "level"));
        assert_eq!(off.pid_numbers, m("pid", "numbers"));
        assert_eq!(off.upid_size, raw["upid"].0);
        assert_eq!(off.upid_ns, m("upid", "ns"));
        // `inum` is a direct member of ns_common on 5.10 through 7.3.
        assert_eq!(
            off.pid_ns_inum,
            m("pid_namespace", "ns") + m("ns_common", "inum")
        );
        assert_eq!(btf.struct_size("ns_common").unwrap(), raw["ns_common"].0);
        assert_eq!(
            btf.struct_size("task_struct").unwrap(),
            raw["task_struct"].0
        );
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(off.regs_syscall_nr, m("pt_regs", "orig_ax"));
        }
        let t = trace_offsets(&btf).unwrap();
        assert_eq!(t.task_group_leader, m("task_struct", "group_leader"));
        assert_eq!(t.task_nsproxy, m("task_struct", "nsproxy"));
        assert_eq!(t.upid_nr, m("upid", "nr"));
        assert_eq!(t.nsproxy_uts_ns, m("nsproxy", "uts_ns"));
        assert_eq!(t.nsproxy_mnt_ns, m("nsproxy", "mnt_ns"));
        assert_eq!(
            t.mnt_ns_inum,
            m("mnt_namespace", "ns") + m("ns_common", "inum")
        );
        if std::env::consts::ARCH == "x86_64" {
            let regs = ["di", "si", "dx", "r10", "r8", "r9"].map(|r| m("pt_regs", r));
            assert_eq!(t.regs_args, regs);
        }
    }
}
