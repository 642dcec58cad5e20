"""Disk images for the PXE lab: a sender disk that looks like a real installed node (MBR, an
ext4 partition with known files, data after it) and receivers full of junk.

The MBR is the one agent.image.partitions declares with construct: built here, read back
there and by the tests.
"""

from __future__ import annotations

import hashlib
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
                     part_mib: int | None = None, seed: int = 1, tail: bool = True) -> None:
    """An MBR disk: partition 1 (ext4, starting at 1 MiB) holding `files`, then patterned
    data after the partition up to the end, so a clone must carry every byte. `tail=False`
    leaves the space after the partition zero (a disk whose data is its files)."""
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
            if tail:
                disk.write(_pattern(seed, (size_mib - 1 - part_mib) * 1024 * 1024))


def make_junk_disk(path: Path, size_mib: int, seed: int) -> None:
    """A receiver's disk before imaging: junk everywhere, so a partial clone shows."""
    Path(path).write_bytes(_pattern(seed, size_mib * 1024 * 1024))


def used_extents(disk: Path) -> list[tuple[int, int]]:
    """(offset, length) of every byte range a used-block clone of `disk` must carry, as the
    sender maps it (agent.image.usedmap: the partition table, partclone's map of each
    filesystem). Reads the partition through a read-only loop device: needs root."""
    from agent.image.usedmap import used_map

    return [(e.offset, e.length) for e in used_map(str(disk)).extents]


def differing_extents(golden: Path, clone: Path,
                      extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The extents whose bytes differ between two disk images (empty: a good clone)."""
    bad = []
    with open(golden, "rb") as a, open(clone, "rb") as b:
        for offset, length in extents:
            a.seek(offset)
            b.seek(offset)
            if a.read(length) != b.read(length):
                bad.append((offset, length))
    return bad


def used_digest(disk: Path, extents: list[tuple[int, int]]) -> str:
    """sha256 of the bytes of `disk` in `extents`, in order: equal on the sender and a
    receiver when the receiver holds everything a used-block clone carries."""
    digest = hashlib.sha256()
    with open(disk, "rb") as f:
        for offset, length in extents:
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()


def read_partition_file(disk: Path, name: str, partition: int = 0) -> bytes:
    """Read a file from an ext4 partition of a disk image with debugfs (no mount)."""
    raw = Path(disk).read_bytes()
    entry = Mbr.parse(raw[:SECTOR]).partitions[partition]
    start, length = entry.lba_first * SECTOR, entry.sectors * SECTOR
    with tempfile.NamedTemporaryFile(suffix=".img") as part:
        part.write(raw[start:start + length])
        part.flush()
        return _run(["debugfs", "-R", f"cat {name}", part.name])
