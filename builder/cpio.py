"""A reproducible cpio "newc" writer: the format the Linux kernel unpacks as an initramfs.

Why our own writer rather than GNU cpio: the archive must be byte-for-byte reproducible
(sorted entries, every mtime = SOURCE_DATE_EPOCH, uid/gid 0, inode numbers by position), and
it must hold device nodes (/dev/console) without root or mknod on the build machine.
The header is declared once, with construct; the writer and the reader below both use it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from construct import Bytes, Const, ExprAdapter, Struct

from builder.errors import BuildError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _hex8(name: str):
    """An unsigned field stored as 8 ASCII hex digits, as newc does for every number."""
    return name / ExprAdapter(
        Bytes(8),
        decoder=lambda raw, ctx: int(raw, 16),
        encoder=lambda value, ctx: b"%08X" % value,
    )


NEWC_HEADER = Struct(
    "magic" / Const(MAGIC),
    _hex8("ino"),
    _hex8("mode"),
    _hex8("uid"),
    _hex8("gid"),
    _hex8("nlink"),
    _hex8("mtime"),
    _hex8("filesize"),
    _hex8("devmajor"),
    _hex8("devminor"),
    _hex8("rdevmajor"),
    _hex8("rdevminor"),
    _hex8("namesize"),
    _hex8("check"),
)
HEADER_SIZE = NEWC_HEADER.sizeof()  # 110


class CpioError(BuildError):
    """An entry cannot be archived; the message names the entry."""


@dataclass(frozen=True)
class Entry:
    """One archive member. `name` is relative ("bin/sh"), `mode` includes the file type bits.

    Regular files carry `data` or a `source` path read when written (so a large tree is not
    held in memory); symlinks carry their target in `data`; device nodes carry `rdev`.
    """

    name: str
    mode: int
    data: bytes = b""
    source: Path | None = None
    rdev: tuple[int, int] = (0, 0)

    def payload(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data=data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, data=target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def entries_from_tree(root: Path) -> list[Entry]:
    """Every directory, file and symlink under `root` (not root itself), with normalised
    permissions (0755 for directories and anything executable, else 0644) so the build
    machine's umask cannot change the archive."""
    root = Path(root)
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(symlink(rel, os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(directory(rel))
            elif stat.S_ISREG(st.st_mode):
                perm = 0o755 if st.st_mode & 0o111 else 0o644
                entries.append(Entry(rel, stat.S_IFREG | perm, source=path))
            else:
                raise CpioError(f"{path}: not a file, directory or symlink; cannot archive it")
    return entries


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(ino: int, entry: Entry, mtime: int, data: bytes) -> bytes:
    name = entry.name.encode() + b"\0"
    header = NEWC_HEADER.build(
        dict(
            ino=ino,
            mode=entry.mode,
            uid=0,
            gid=0,
            nlink=2 if stat.S_ISDIR(entry.mode) else 1,
            mtime=mtime,
            filesize=len(data),
            devmajor=0,
            devminor=0,
            rdevmajor=entry.rdev[0],
            rdevminor=entry.rdev[1],
            namesize=len(name),
            check=0,
        )
    )
    return header + name + _pad(HEADER_SIZE + len(name)) + data + _pad(len(data))


def write_archive(entries: Iterable[Entry], out: BinaryIO, mtime: int = 0) -> int:
    """Write `entries` sorted by name, then the trailer; returns the number of entries.

    Sorting by name also puts every directory before its contents, which the kernel's
    unpacker needs (it does not create missing parents).
    """
    ordered = sorted(entries, key=lambda e: e.name)
    seen: set[str] = set()
    for ino, entry in enumerate(ordered, start=1):
        name = entry.name.strip("/")
        if not name or name in seen or name == TRAILER:
            raise CpioError(f"cpio entry {entry.name!r}: empty, reserved or duplicate name")
        seen.add(name)
        if name != entry.name:
            entry = Entry(name, entry.mode, entry.data, entry.source, entry.rdev)
        data = entry.payload() if (stat.S_ISREG(entry.mode) or stat.S_ISLNK(entry.mode)) else b""
        out.write(_member(ino, entry, mtime, data))
    out.write(_member(0, Entry(TRAILER, 0), 0, b""))
    return len(ordered)


def source_date_epoch(default: int = 0) -> int:
    """The mtime every member gets: $SOURCE_DATE_EPOCH (reproducible-builds.org) or 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return default
    if not value.isdigit():
        raise CpioError(f"SOURCE_DATE_EPOCH={value!r}: must be a whole number of seconds")
    return int(value)


def read_archive(blob: bytes) -> Iterator[tuple[dict, str, bytes]]:
    """(header fields, name, data) for each member, across concatenated archives as the
    kernel reads them (zero padding between them is skipped); trailers are not yielded.
    For tests and for inspecting a built initrd."""
    pos = 0
    while pos < len(blob):
        if blob[pos] == 0:
            pos += 1
            continue
        header = NEWC_HEADER.parse(blob[pos : pos + HEADER_SIZE])
        pos += HEADER_SIZE
        name = blob[pos : pos + header.namesize - 1].decode()
        pos += header.namesize + len(_pad(HEADER_SIZE + header.namesize))
        data = blob[pos : pos + header.filesize]
        pos += header.filesize + len(_pad(header.filesize))
        if name != TRAILER:
            yield dict(header), name, data
