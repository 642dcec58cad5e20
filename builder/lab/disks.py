"""Disk images for the PXE lab: a sender disk that looks like a real installed node (MBR, an
ext4 partition with known files, data after it) and receivers full of junk.

The MBR is the one agent.image.partitions declares with construct: built here, read back
there and by the tests.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from pathlib import Path

from agent.image.partitions import Mbr
from builder.lab.vms import LabError

SECTOR = 512

_EMPTY = {"status": 0, "chs_first": bytes(3), "type": 0, "chs_last": bytes(3),
          "lba_first": 0, "sectors": 0}


def _run(argv: list[str]) -> bytes:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{argv[0]}: {exc}", "run scripts/install-deps (as root)") from None
    if proc.returncode:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise LabError(f"{' '.join(argv[:2])} ...: exit {proc.returncode}: {last}")
    return proc.stdout


def _pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_sender_disk(path: Path, size_mib: int, files: dict[str, bytes],
                     part_mib: int | None = None, seed: int = 1) -> None:
    """An MBR disk: partition 1 (ext4, starting at 1 MiB) holding `files`, then patterned
    data after the partition up to the end, so a clone must carry every byte."""
    part_mib = part_mib or size_mib // 2
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "root"
        src.mkdir()
        for name, content in files.items():
            target = src / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        fs = Path(tmp) / "part.img"
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), "-E", "root_owner=0:0",
              str(fs), f"{part_mib}M"])
        entry = dict(_EMPTY, status=0x80, type=0x83, lba_first=2048,
                     sectors=part_mib * 1024 * 1024 // SECTOR)
        mbr = Mbr.build({"bootstrap": bytes(446),
                         "partitions": [entry, _EMPTY, _EMPTY, _EMPTY]})
        with open(path, "wb") as disk:
            disk.truncate(size_mib * 1024 * 1024)
            disk.write(mbr)
            disk.seek(1024 * 1024)
            disk.write(fs.read_bytes())
            tail = (size_mib - 1 - part_mib) * 1024 * 1024
            disk.write(_pattern(seed, tail))


def make_junk_disk(path: Path, size_mib: int, seed: int) -> None:
    """A receiver's disk before imaging: junk everywhere, so a partial clone shows."""
    Path(path).write_bytes(_pattern(seed, size_mib * 1024 * 1024))


def read_partition_file(disk: Path, name: str, partition: int = 0) -> bytes:
    """Read a file from an ext4 partition of a disk image with debugfs (no mount)."""
    raw = Path(disk).read_bytes()
    entry = Mbr.parse(raw[:SECTOR]).partitions[partition]
    start, length = entry.lba_first * SECTOR, entry.sectors * SECTOR
    with tempfile.NamedTemporaryFile(suffix=".img") as part:
        part.write(raw[start:start + length])
        part.flush()
        return _run(["debugfs", "-R", f"cat {name}", part.name])
