"""The used-block map of a whole disk: which byte ranges a clone must carry.

Outside the partitions, what boot firmware and partitioning tools read: everything before
the first partition (the MBR or protective MBR, the primary GPT, a boot loader's core in the
gap) and, on a GPT disk, its last MiB (the backup GPT). Space between or after partitions
belongs to nobody and is not sent, as partclone-based tools do. Inside each partition, what
its filesystem uses (agent.image.filesystems).
partclone reads a partition through a device of its own: the kernel's partition node for a
block device, a read-only loop device over the byte range for a disk image file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.image.extents import Extent, normalize, total
from agent.image.filesystems import FsMap, map_partition
from agent.image.partitions import Partition, read_partitions


@dataclass(frozen=True)
class UsedMap:
    """A disk's used extents, with the per-partition story for `plan` and the console."""

    disk_size: int
    scheme: str  # "gpt", "mbr", "none"
    partitions: list[tuple[Partition, FsMap]]
    extents: list[Extent]

    @property
    def used_bytes(self) -> int:
        return total(self.extents)

    def describe(self) -> list[str]:
        """One line per partition: number, size, filesystem, bytes used and how known."""
        lines = [f"partition table: {self.scheme}, disk {self.disk_size} bytes, "
                 f"{self.used_bytes} bytes used ({_percent(self.used_bytes, self.disk_size)})"]
        for part, fsmap in self.partitions:
            used = total(fsmap.used)
            lines.append(f"  partition {part.number} ({part.kind}): {part.extent.length} bytes, "
                         f"{fsmap.fs or 'unknown'}, {used} used ({fsmap.how})")
        return lines


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def used_map(path: str) -> UsedMap:
    """Read the partition table and every partition's filesystem map of the disk at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        scheme, parts = read_partitions(fd, size)
        whole = Extent(0, size)
        if not parts:
            return UsedMap(size, scheme, [], [whole] if size else [])
        mapped: list[tuple[Partition, FsMap]] = []
        used = outside_partitions(size, scheme, parts)
        for part in parts:
            extent = Extent(part.extent.offset,
                            max(0, min(part.extent.end, size) - part.extent.offset))
            if part.opaque:
                fsmap = FsMap(None, [extent], "whole: extended partition")
            else:
                with partition_device(path, fd, part.number, extent) as device:
                    fsmap = (map_partition(fd, device, extent) if device
                             else FsMap(None, [extent], "whole: no device to map it through"))
            mapped.append((part, fsmap))
            used.extend(fsmap.used)
        return UsedMap(size, scheme, mapped, normalize(used))
    finally:
        os.close(fd)


GPT_TAIL = 1 << 20  # the backup GPT lies in the last 33 sectors (512 B) or 6 (4 KiB)


def outside_partitions(size: int, scheme: str, parts: list[Partition]) -> list[Extent]:
    """The bytes outside every partition that a clone must carry."""
    first = min(p.extent.offset for p in parts)
    out = [Extent(0, min(first, size))]
    if scheme == "gpt":
        out.append(Extent(max(0, size - GPT_TAIL), min(GPT_TAIL, size)))
    return normalize(out)


@contextlib.contextmanager
def partition_device(path: str, fd: int, number: int, extent: Extent) -> Iterator[str | None]:
    """A device path holding exactly this partition, or None when none can be had."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISBLK(mode):
        yield _kernel_partition(os.fstat(fd).st_rdev, number, extent)
        return
    try:
        proc = subprocess.run(["losetup", "--read-only", "--find", "--show",
                               "--offset", str(extent.offset), "--sizelimit",
                               str(extent.length), path],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    loop = proc.stdout.strip()
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "--detach", loop], capture_output=True, timeout=30,
                       check=False)


def _kernel_partition(rdev: int, number: int, extent: Extent,
                      sysfs: str = "/sys") -> str | None:
    """/dev/<name> of partition `number` of the block device `rdev`, checked against its
    start so a stale table in the kernel is not trusted."""
    disk = Path(sysfs, "dev/block", f"{os.major(rdev)}:{os.minor(rdev)}")
    with contextlib.suppress(OSError):
        for child in disk.resolve().iterdir():
            part_file, start_file = child / "partition", child / "start"
            if not part_file.exists():
                continue
            if (int(part_file.read_text()) == number
                    and int(start_file.read_text()) * 512 == extent.offset):
                device = Path("/dev", child.name)
                return str(device) if device.exists() else None
    return None
