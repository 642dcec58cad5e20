"""grow=yes: the last partition extended to the disk's end, and its filesystem grown.

The partition table is changed first (both GPT copies, or the MBR entry), then the
filesystem is grown with its own tool through a loop device over the new extent: ext2/3/4
offline (e2fsck -f -p, which resize2fs demands of a filesystem mounted since its last
check, then resize2fs), xfs and btrfs mounted (they only grow online), NTFS with
ntfsresize. A filesystem herdcast cannot grow (vfat, swap, one whose tool is missing or
fails) is left as it is, and the report says so: the partition is larger, the data intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from agent.image.extents import Extent
from agent.image.filesystems import detect
from agent.image.partitions import (
    MBR_EXTENDED,
    Mbr,
    MbrEntry,
    Partition,
    read_gpt,
    read_partitions,
    write_gpt,
)
from agent.personalize.loop import loop_over
from agent.personalize.mount import mounted

TOOL_TIMEOUT = 1800  # seconds: a multi-terabyte ext4 takes minutes to check
MBR_LIMIT = 0xFFFFFFFF  # an MBR entry counts at most 2^32 - 1 sectors


def grow_partition(fd: int, size: int) -> tuple[Partition | None, str]:
    """Extend the partition that ends last to the end of the disk open on `fd`. Returns
    (the partition as it now is, what was done) or (None, why nothing was)."""
    scheme, parts = read_partitions(fd, size)
    if not parts:
        return None, "grow: no partition table, nothing to grow"
    last = max(parts, key=lambda p: p.extent.end)
    if scheme == "gpt":
        gpt = read_gpt(fd, size)
        entry = gpt.entry(last.number - 1)
        end = gpt.header["last_usable"]
        if entry["last_lba"] >= end:
            return last, f"grow: partition {last.number} already ends at the disk's end"
        old = entry["last_lba"]
        gpt.set_entry(last.number - 1, dict(entry, last_lba=end))
        write_gpt(fd, size, gpt)
        length = (end + 1 - entry["first_lba"]) * gpt.sector
        grown = Partition(last.number, Extent(last.extent.offset, length), last.kind)
        return grown, (f"partition {last.number}: end moved from sector {old} to {end} "
                       f"({_mib(last.extent.length)} -> {_mib(length)})")
    if last.opaque or int(last.kind.removeprefix("mbr:"), 16) in MBR_EXTENDED:
        return None, (f"grow: partition {last.number} is an extended partition: its "
                      "logical partitions are left as they are")
    mbr = Mbr.parse(os.pread(fd, 512, 0))
    entry = mbr.partitions[last.number - 1]
    sectors = min(size // 512, MBR_LIMIT) - entry.lba_first
    if sectors <= entry.sectors:
        return last, f"grow: partition {last.number} already ends at the disk's end"
    raw = bytearray(os.pread(fd, 512, 0))
    at = 446 + 16 * (last.number - 1)
    raw[at:at + 16] = MbrEntry.build(dict(entry, sectors=sectors, chs_last=b"\xfe\xff\xff"))
    os.pwrite(fd, bytes(raw), 0)
    grown = Partition(last.number, Extent(last.extent.offset, sectors * 512), last.kind)
    capped = " (an MBR addresses at most 2 TiB)" if size // 512 > MBR_LIMIT else ""
    return grown, (f"partition {last.number}: {_mib(last.extent.length)} -> "
                   f"{_mib(sectors * 512)}{capped}")


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _run(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return proc.returncode, lines[-1].strip() if lines else f"exit {proc.returncode}"


def _missing(*tools: str) -> str | None:
    return next((t for t in tools if shutil.which(t) is None), None)


def grow_filesystem(disk: str, fd: int, part: Partition) -> tuple[bool, str]:
    """Grow the filesystem of `part` (its new extent) to fill it: (grown, one line of what
    happened); not grown, the line ends "left as is"."""
    fs = detect(fd, part.extent.offset)
    where = f"partition {part.number}"
    tools = {"ext": ("e2fsck", "resize2fs"), "xfs": ("xfs_growfs",),
             "btrfs": ("btrfs",), "ntfs": ("ntfsresize",)}
    if fs not in tools:
        return False, (f"{where}: {fs or 'no known'} filesystem, which herdcast cannot "
                       "grow: left as is")
    if missing := _missing(*tools[fs]):
        return False, f"{where}: {fs} not grown, {missing} is not installed: left as is"
    with loop_over(disk, part.extent.offset, part.extent.length) as dev:
        if fs == "ext":
            rc, msg = _run(["e2fsck", "-f", "-p", dev])
            if rc not in (0, 1):
                return False, (f"{where}: ext not grown, e2fsck -f -p says: {msg} "
                               f"(exit {rc}): left as is")
            rc, msg = _run(["resize2fs", dev])
            tool = "resize2fs"
        elif fs == "ntfs":
            rc, msg = _run(["ntfsresize", "--force", "--no-progress-bar", dev], stdin="y\n")
            tool = "ntfsresize"
        else:
            with mounted(dev, fs) as mnt:
                argv = ["xfs_growfs", str(mnt)] if fs == "xfs" else \
                    ["btrfs", "filesystem", "resize", "max", str(mnt)]
                rc, msg = _run(argv)
                tool = argv[0]
    if rc != 0:
        return False, f"{where}: {fs} not grown, {tool} failed: {msg}: left as is"
    return True, f"{where}: {fs} filesystem grown to fill {_mib(part.extent.length)} ({tool})"
