#!/usr/bin/env python3
"""Extract the uncompressed ELF vmlinux from an x86 bzImage (xz, zstd, gzip, lzma or lz4 payload),
or the uncompressed arm64 Image from Debian's arm64 vmlinuz (a gzip file, or since 6.12 an EFI
zboot image: a PE file whose payload is gzip- or zstd-compressed).

Usage: extract-vmlinux.py BZIMAGE OUT

Booting the ELF vmlinux (QEMU's PVH entry) skips the bzImage decompressor, which takes 1.5-6 s under
QEMU TCG. The payload is found through the boot protocol header (payload_offset/payload_length,
boot protocol >= 2.08); if that fails, the file is scanned for compression magics as the kernel's
scripts/extract-vmlinux does.
"""
import gzip
import io
import lzma
import os
import shutil
import struct
import subprocess
import sys

MAGICS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x02\x21\x4c\x18", "lz4"),
)


def external(cmd, data):
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} is not installed")
    # These tools stop at the end of the stream and may complain about the kernel's
    # appended 4-byte size: keep their output, whatever their exit code.
    return subprocess.run(cmd, input=data, capture_output=True).stdout


def decompress(kind, data):
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
    if kind == "gzip":
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            try:
                shutil.copyfileobj(f, out)
            except (EOFError, OSError):
                pass  # trailing bytes after the stream
        return out.getvalue()
    if kind == "zstd":
        return external(["zstd", "-dc"], data)
    if kind == "lz4":
        return external(["lz4", "-dc"], data)
    raise ValueError(kind)


def from_header(d):
    """Yields (kind, payload) from the bzImage setup header, if it has one."""
    if len(d) < 0x250 or d[0x202:0x206] != b"HdrS":
        return
    version = struct.unpack_from("<H", d, 0x206)[0]
    if version < 0x208:
        return
    setup_sects = d[0x1F1] or 4
    offset, length = struct.unpack_from("<II", d, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = d[start : start + length]
    for magic, kind in MAGICS:
        if payload.startswith(magic):
            yield kind, payload, start


def from_scan(d):
    for magic, kind in MAGICS:
        i = d.find(magic)
        while i >= 0:
            yield kind, d[i:], i
            i = d.find(magic, i + 1)


def is_arm64_image(d):
    """The arm64 boot protocol's Image header: magic "ARM\\x64" at offset 56."""
    return d[56:60] == b"ARM\x64"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        d = f.read()
    if d[:4] == b"\x7fELF" or is_arm64_image(d):
        shutil.copyfile(src, dst)
        print(f"{src} is already uncompressed: copied to {dst}")
        return
    for candidates in (from_header(d), from_scan(d)):
        for kind, payload, at in candidates:
            try:
                out = decompress(kind, payload)
            except Exception:  # a false magic match: try the next one
                continue
            if out[:4] == b"\x7fELF" or is_arm64_image(out):
                tmp = dst + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(out)
                os.replace(tmp, dst)
                print(f"{kind} payload at {at}: wrote {len(out)} bytes to {dst}")
                return
    sys.exit(f"{src}: no ELF or arm64 Image payload found")


if __name__ == "__main__":
    main()
