"""Which partitions of a cloned disk may hold a Linux root, and which cannot be opened.

A root is recognised by what it is, never guessed: a GPT partition of a root type (the
Discoverable Partitions Specification's per-architecture GUIDs), or a Linux filesystem that
holds /etc/os-release. Encrypted (LUKS), LVM and md-RAID members cannot be opened here:
they are named in the report, and nothing inside them is changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.image.extents import Extent
from agent.image.filesystems import detect
from agent.image.partitions import Partition, read_partitions
from agent.personalize.mount import KERNEL_FS

ROOT_TYPES = {  # GPT type GUID -> architecture
    "44479540-f297-41b2-9af7-d131d5f0458a": "x86",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "x86-64",
    "69dad710-2ce4-4e3c-b16c-21a1d49abed3": "arm",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "arm64",
    "72ec70a6-cf74-40e6-bd49-4bda08e8f224": "riscv64",
}
LINUX_DATA = "0fc63daf-8483-4772-8e79-3d69d8477de4"
CLOSED_TYPES = {  # partition types whose content needs more than a mount
    "gpt:e6d6d379-f507-44c2-a23c-238f2a3df928": "LVM",
    "gpt:ca7d7ccb-63ed-4c53-861c-1742536059cc": "LUKS",
    "gpt:a19d880f-05fc-4d3b-a006-743f0f84911e": "md RAID",
    "mbr:8e": "LVM",
    "mbr:fd": "md RAID",
}
LUKS_MAGIC = b"LUKS\xba\xbe"
LVM_LABEL = b"LABELONE"


@dataclass(frozen=True)
class Volume:
    """A partition (or a whole disk that is one filesystem) that may be a root."""

    partition: Partition
    fs: str  # agent.image.filesystems' name: ext, xfs, btrfs
    root_type: str | None  # the architecture of a GPT root type, else None

    @property
    def label(self) -> str:
        return name_of(self.partition)


def name_of(part: Partition) -> str:
    return f"partition {part.number}" if part.number else "the whole disk"


def _closed(fd: int, part: Partition) -> str | None:
    """What keeps this partition closed (LUKS, LVM, md RAID), by its magic or its type."""
    head = os.pread(fd, 1024, part.extent.offset)
    if head[:6] == LUKS_MAGIC:
        return "LUKS"
    if LVM_LABEL in (head[512:520], head[:8]):
        return "LVM"
    return CLOSED_TYPES.get(part.kind)


def survey(fd: int, size: int) -> tuple[list[Volume], list[str]]:
    """(volumes to look into for a root, one note per partition that cannot be opened)."""
    scheme, parts = read_partitions(fd, size)
    if scheme == "none":
        parts = [Partition(0, Extent(0, size), "none")]
    volumes, notes = [], []
    for part in parts:
        if part.opaque:
            continue
        guid = part.kind.removeprefix("gpt:") if part.kind.startswith("gpt:") else None
        root_type = ROOT_TYPES.get(guid or "")
        closed = _closed(fd, part)
        if closed:
            notes.append(f"{name_of(part)}: {closed}, cannot be opened here: "
                         "not looked into, nothing changed in it")
            continue
        fs = detect(fd, part.extent.offset)
        linuxish = root_type or guid == LINUX_DATA or part.kind in ("mbr:83", "none")
        if fs in KERNEL_FS:
            volumes.append(Volume(part, fs, root_type))
        elif root_type or (linuxish and fs is None and part.number):
            notes.append(f"{name_of(part)}: no filesystem herdcast can open "
                         f"({fs or 'none recognised'}): nothing changed in it")
    return volumes, notes
