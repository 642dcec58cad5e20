"""Which blocks of one partition its filesystem uses.

Recognised by their superblock magic (the same places blkid looks), then mapped by partclone
(`partclone.<fs> --domain` writes a ddrescue map of the used blocks), the engine Clonezilla and
FOG rely on: its block-bitmap readers are mature for every filesystem here, so herdcast
reads its maps rather than parsing five on-disk formats again. Swap needs no tool: only its
header page matters (the rest is scratch the kernel rewrites). A filesystem that is not
recognised, or whose partclone is missing or fails, counts as fully used: a map may send too
much, never too little.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from agent.image.extents import Extent, normalize

# (name, offset, magic): checked in order; ext's magic is the superblock's s_magic at 1080.
_MAGICS = (
    ("xfs", 0, b"XFSB"),
    ("btrfs", 0x10040, b"_BHRfS_M"),
    ("ntfs", 3, b"NTFS    "),
    ("exfat", 3, b"EXFAT   "),
    ("ext", 1080, b"\x53\xef"),
    ("vfat", 0x52, b"FAT32   "),
    ("vfat", 0x36, b"FAT16   "),
    ("vfat", 0x36, b"FAT12   "),
)
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")
SWAP_PAGES = (4096, 8192, 16384, 65536)
PARTCLONE = {"ext": "partclone.extfs", "xfs": "partclone.xfs", "btrfs": "partclone.btrfs",
             "vfat": "partclone.fat", "exfat": "partclone.exfat", "ntfs": "partclone.ntfs"}
# Structures a filesystem keeps outside the clusters partclone maps: NTFS's backup boot
# sector is the partition's last sector (512 bytes, or 4096 on 4Kn disks).
TAIL_BYTES = {"ntfs": 4096}
EXT3_HAS_JOURNAL = 0x4
EXT4_INCOMPAT = 0x40 | 0x80 | 0x200  # extents, 64bit, flex_bg
EXT4_RO_COMPAT = 0x8 | 0x10 | 0x20 | 0x40 | 0x400  # huge_file, gdt_csum, dir_nlink, ...
MAP_TIMEOUT = 600  # seconds: partclone reads every bitmap of the filesystem once


@dataclass(frozen=True)
class FsMap:
    """What one partition sends: `used` extents (disk offsets) and how they were found."""

    fs: str | None  # "ext", "xfs", ..., "swap"; None when not recognised
    used: list[Extent]
    how: str  # "partclone.extfs", "swap header", "whole: <why>"


def detect(fd: int, offset: int) -> str | None:
    """The filesystem at byte `offset` of the disk open on `fd`, by its magic, or None."""
    head = os.pread(fd, 0x10048, offset)
    # Filesystems before swap, as blkid decides: mkswap clears the first 1 KiB and writes
    # its whole first page, so a filesystem magic beside a swap signature is the newer one,
    # while mkfs leaves a signature at a larger page's end (mkswap -p 16384, then mkfs.ntfs)
    for name, at, magic in _MAGICS:
        if head[at:at + len(magic)] == magic:
            return name
    for page in SWAP_PAGES:
        if head[page - 10:page] in SWAP_MAGICS:
            return "swap"
    return None


def fs_name(fd: int, offset: int, fs: str | None) -> str | None:
    """The name people know `fs` by: ext2, ext3 or ext4 from the superblock's feature flags
    (as blkid tells them), the others as detected."""
    if fs != "ext":
        return fs
    sb = os.pread(fd, 0x68, offset + 1024)
    compat, incompat, ro_compat = (int.from_bytes(sb[at:at + 4], "little")
                                   for at in (0x5C, 0x60, 0x64))
    if incompat & EXT4_INCOMPAT or ro_compat & EXT4_RO_COMPAT:
        return "ext4"
    return "ext3" if compat & EXT3_HAS_JOURNAL else "ext2"


def map_partition(fd: int, device: str, part: Extent) -> FsMap:
    """The used extents of the filesystem in `part` of the disk open on `fd`, read through
    `device` (a path partclone can open that holds exactly this partition)."""
    fs = detect(fd, part.offset)
    if fs is None:
        return FsMap(None, [part], "whole: no filesystem recognised")
    if fs == "swap":
        page = next(p for p in SWAP_PAGES
                    if os.pread(fd, 10, part.offset + p - 10) in SWAP_MAGICS)
        return FsMap(fs, [Extent(part.offset, min(page, part.length))], "swap header")
    tool = shutil.which(PARTCLONE[fs])
    if tool is None:
        return FsMap(fs, [part], f"whole: {PARTCLONE[fs]} is not installed")
    with tempfile.TemporaryDirectory(prefix="herdcast-map-") as tmp:
        out, log = os.path.join(tmp, "map"), os.path.join(tmp, "log")
        try:
            # -f 0: partclone's progress thread otherwise sleeps its 2 s refresh before the
            # tool can exit (a send or capture started up to 2 s later, 1 run in 3); it
            # neither spins nor prints more for it (a 2 TB ext4: the same CPU, 7 s)
            proc = subprocess.run([tool, "--domain", "-s", device, "-o", out, "-L", log,
                                   f"--offset_domain={part.offset}", "-f", "0"],
                                  capture_output=True, timeout=MAP_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return FsMap(fs, [part], f"whole: {PARTCLONE[fs]} took over {MAP_TIMEOUT} s")
        if proc.returncode != 0 or not os.path.exists(out):
            return FsMap(fs, [part], f"whole: {PARTCLONE[fs]} failed ({_last_line(log)})")
        with open(out) as f:
            used = parse_domain_map(f.read())
    inside = [Extent(max(e.offset, part.offset), min(e.end, part.end) - max(e.offset, part.offset))
              for e in used if e.end > part.offset and e.offset < part.end]
    tail = min(TAIL_BYTES.get(fs, 0), part.length)
    if tail:
        inside.append(Extent(part.end - tail, tail))
    return FsMap(fs, normalize(inside), PARTCLONE[fs])


def parse_domain_map(text: str) -> list[Extent]:
    """The `+` (used) blocks of a ddrescue map: `pos size status` lines after the
    `current_pos` line, in hex; comments start with `#`."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return normalize(Extent(int(f[0], 16), int(f[1], 16))
                     for f in lines[1:] if len(f) >= 3 and f[2] == "+")


def _last_line(log: str) -> str:
    """partclone's reason, from the last meaningful line of its log."""
    try:
        with open(log, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip() and "exit" not in ln.lower()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no reason given"
