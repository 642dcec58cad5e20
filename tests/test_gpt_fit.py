"""A GPT written onto a larger disk is fitted to it: backup header and entries at the end,
the protective MBR sized to the disk (agent.image.partitions.fit_gpt), checked by sgdisk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agent.image.partitions import Mbr, read_gpt, read_partitions

MiB = 1 << 20


def _gpt_disk(path: Path, mib: int = 64) -> None:
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    subprocess.run(["sgdisk", "-n1:0:+8M", "-t1:ef00", "-n2:0:0", "-t2:8304", str(path)],
                   check=True, capture_output=True, timeout=30)


def mbr_sector(parts: list[tuple[int, int, int]]) -> bytes:
    """An MBR with (type, first sector, sectors) entries, as fdisk writes one."""
    entries = [{"status": 0, "chs_first": bytes(3), "type": t, "chs_last": bytes(3),
                "lba_first": first, "sectors": n} for t, first, n in parts]
    entries += [{"status": 0, "chs_first": bytes(3), "type": 0, "chs_last": bytes(3),
                 "lba_first": 0, "sectors": 0}] * (4 - len(entries))
    return Mbr.build({"bootstrap": bytes(446), "partitions": entries, "signature": None})


def _verify(path: Path) -> str:
    proc = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True,
                          timeout=30)
    return proc.stdout + proc.stderr


def _fit(path: Path) -> str | None:
    from agent.image.partitions import fit_gpt

    fd = os.open(path, os.O_RDWR)
    try:
        return fit_gpt(fd)
    finally:
        os.close(fd)


def test_a_64_mib_gpt_on_a_128_mib_disk_is_fitted(tmp_path):
    disk = tmp_path / "disk"
    _gpt_disk(disk)
    with open(disk, "r+b") as f:
        f.truncate(128 * MiB)  # the image written onto a disk twice its size
    assert "No problems found" not in _verify(disk)  # what issue 20 measured
    fd = os.open(disk, os.O_RDONLY)
    before = read_partitions(fd, 128 * MiB)
    os.close(fd)

    said = _fit(disk)
    assert said is not None and "from sector 131071 to 262143" in said
    assert "No problems found" in _verify(disk)
    fd = os.open(disk, os.O_RDONLY)
    try:
        gpt = read_gpt(fd, 128 * MiB)
        assert gpt.header["backup_lba"] == 262143
        assert gpt.header["last_usable"] == 262143 - 32 - 1
        assert read_partitions(fd, 128 * MiB) == before  # the partitions are untouched
        protective = Mbr.parse(os.pread(fd, 512, 0)).partitions[0]
        assert (protective.type, protective.lba_first, protective.sectors) == \
            (0xEE, 1, 262143)
        assert os.pread(fd, 8, 131071 * 512) == bytes(8)  # the stale backup is gone
    finally:
        os.close(fd)
    assert _fit(disk) is None  # fitted already: nothing more is written


def test_a_disk_of_the_images_size_is_left_alone(tmp_path):
    disk = tmp_path / "disk"
    _gpt_disk(disk)
    before = disk.read_bytes()
    assert _fit(disk) is None
    assert disk.read_bytes() == before


def test_mbr_and_damaged_gpts_are_not_rewritten(tmp_path):
    mbr = tmp_path / "mbr"
    with open(mbr, "wb") as f:
        f.truncate(64 * MiB)
    with open(mbr, "r+b") as f:
        f.write(mbr_sector([(0x83, 2048, 64 * 2048 - 2048)]))
        f.truncate(128 * MiB)
    before = mbr.read_bytes()
    assert _fit(mbr) is None and mbr.read_bytes() == before

    bad = tmp_path / "bad"
    _gpt_disk(bad)
    with open(bad, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"\x01")  # the primary header's first usable LBA: its CRC now fails
        f.truncate(128 * MiB)
    before = bad.read_bytes()
    assert _fit(bad) is None and bad.read_bytes() == before
