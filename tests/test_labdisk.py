"""The PXE lab's disk images: a real MBR + ext4 layout whose files read back."""

import shutil

import pytest

from builder.lab.disks import Mbr, make_junk_disk, make_sender_disk, read_partition_file

pytestmark = pytest.mark.skipif(not shutil.which("mke2fs") or not shutil.which("debugfs"),
                                reason="e2fsprogs not installed (scripts/install-deps)")


def test_sender_disk_layout_and_files(tmp_path):
    disk = tmp_path / "s.img"
    make_sender_disk(disk, 8, {"etc/hostname": b"golden\n"}, part_mib=4)
    raw = disk.read_bytes()
    assert len(raw) == 8 * 1024 * 1024
    part = Mbr.parse(raw[:512]).partitions[0]
    assert (part.type, part.lba_first, part.sectors) == (0x83, 2048, 8192)
    assert read_partition_file(disk, "/etc/hostname") == b"golden\n"
    assert raw[5 * 1024 * 1024:][:4096] != bytes(4096)  # data after the partition


def test_junk_disks_differ(tmp_path):
    make_junk_disk(tmp_path / "a", 1, seed=1)
    make_junk_disk(tmp_path / "b", 1, seed=2)
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()
