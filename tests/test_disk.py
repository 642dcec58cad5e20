"""agent.hw.disk: refusals happen before writing, sizes come from the kernel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import needs_loop

from agent.hw.disk import (
    Disk,
    DiskError,
    check_is_disk,
    check_receive_target,
    check_send_source,
    in_use,
    mounted_read_write,
    mounts,
    probe,
    send_source_warnings,
)
from builder.lab.loopdev import loop_device, mounted_ext4

MiB = 1024 * 1024




def _fake_proc(tmp_path: Path, mountinfo: str) -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(mountinfo)
    (proc / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    return str(proc)


def _fake_sys(tmp_path: Path) -> str:
    """/sys with disk sda (8:0) and its partitions sda1 (8:1), sda2 (8:2)."""
    sys = tmp_path / "sys"
    sda = sys / "devices/pci0000:00/ata1/block/sda"
    (sda / "holders").mkdir(parents=True)
    (sda / "dev").write_text("8:0\n")
    for n in (1, 2):
        part = sda / f"sda{n}"
        (part / "holders").mkdir(parents=True)
        (part / "partition").write_text(f"{n}\n")
        (part / "dev").write_text(f"8:{n}\n")
    (sys / "dev/block").mkdir(parents=True)
    (sys / "block").mkdir()
    for name, dev in (("sda", "8:0"), ("sda/sda1", "8:1"), ("sda/sda2", "8:2")):
        (sys / "dev/block" / dev).symlink_to(sda.parent / name)
    return str(sys)


def test_mountinfo_parsing_unescapes_paths(tmp_path):
    proc = _fake_proc(tmp_path, "36 25 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n"
                                "37 25 0:22 / /sys rw - sysfs sysfs rw\n")
    found = mounts(proc)
    assert found[0].dev == (8, 1)
    assert found[0].mountpoint == "/mnt/my disk"
    assert found[0].source == "/dev/sda1"
    assert found[1].dev == (0, 22)


def test_mounted_partition_makes_the_whole_disk_busy(tmp_path):
    proc = _fake_proc(tmp_path, "36 25 8:2 / /home rw - ext4 /dev/sda2 rw\n")
    sys = _fake_sys(tmp_path)
    reasons = in_use(Disk("/dev/sda", 10**9, True, (8, 0)), proc, sys)
    assert reasons == ["sda2 is mounted on /home"]


def test_read_only_mounts_are_told_apart(tmp_path):
    proc = _fake_proc(tmp_path, "36 25 8:1 / /boot ro,relatime - ext4 /dev/sda1 ro\n"
                                "37 25 8:2 / /home rw,relatime - ext4 /dev/sda2 ro\n"
                                "38 25 8:2 / /srv rw,relatime - ext4 /dev/sda2 rw\n")
    assert [m.read_only for m in mounts(proc)] == [True, True, False]
    sda = Disk("/dev/sda", 10**9, True, (8, 0))
    assert mounted_read_write(sda, proc, _fake_sys(tmp_path)) == \
        ["sda2 is mounted read-write on /srv"]


def test_a_read_write_filesystem_on_a_device_built_on_the_disk_counts(tmp_path):
    """LVM or md on sda1, mounted read-write: reading sda reads that filesystem too."""
    proc = _fake_proc(tmp_path, "36 25 253:0 / /var rw - xfs /dev/mapper/vg-var rw\n")
    sys = _fake_sys(tmp_path)
    dm = Path(sys, "devices/virtual/block/dm-0")
    dm.mkdir(parents=True)
    (dm / "dev").write_text("253:0\n")
    (Path(sys, "dev/block/8:1").resolve() / "holders/dm-0").symlink_to(dm)
    sda = Disk("/dev/sda", 10**9, True, (8, 0))
    assert mounted_read_write(sda, proc, sys) == ["dm-0 (on sda1) is mounted read-write on /var"]


def test_unrelated_mount_is_not_in_use(tmp_path):
    proc = _fake_proc(tmp_path, "36 25 8:17 / /srv rw - ext4 /dev/sdb1 rw\n")
    sys = _fake_sys(tmp_path)
    assert in_use(Disk("/dev/sda", 10**9, True, (8, 0)), proc, sys) == []


def test_holders_make_the_disk_busy(tmp_path):
    proc = _fake_proc(tmp_path, "")
    sys = _fake_sys(tmp_path)
    holders = Path(sys, "dev/block/8:1").resolve() / "holders"
    (holders / "dm-0").mkdir()
    assert in_use(Disk("/dev/sda", 10**9, True, (8, 0)), proc, sys) == \
        ["sda1 is held by dm-0"]


def test_swap_makes_the_disk_busy(tmp_path):
    proc = _fake_proc(tmp_path, "")
    Path(proc, "swaps").write_text("Filename Type Size Used Priority\n"
                                   "/dev/sda1 partition 1000 0 -2\n")
    reasons = in_use(Disk("/dev/sda", 10**9, True, (8, 0)), proc, _fake_sys(tmp_path))
    assert reasons == ["/dev/sda1 is in use as swap"]


def test_regular_file_probe_and_free(tmp_path):
    f = tmp_path / "disk.img"
    f.write_bytes(b"x" * 5000)
    disk = probe(str(f))
    assert (disk.size, disk.is_block, disk.dev) == (5000, False, None)
    assert check_receive_target(str(f), 4000).size == 5000


def test_missing_device_names_the_parameter(tmp_path):
    """On a node the fix is a boot parameter; on a server (receive -f, image restore) the
    admin gave a path, and disk= would send them looking for something that is not there."""
    with pytest.raises(DiskError, match="disk="):
        probe("/dev/herdcast-no-such-disk", node=True)
    with pytest.raises(DiskError, match="disk="):
        check_receive_target("/dev/herdcast-no-such-disk", node=True)
    with pytest.raises(DiskError, match=r"no such device \(check the path") as exc:
        check_receive_target("/dev/herdcast-no-such-disk")
    assert "disk=" not in str(exc.value)


def test_new_file_target_is_allowed(tmp_path):
    target = tmp_path / "new.img"
    assert check_receive_target(str(target), 10 * MiB).size == 0
    assert not target.exists(), "checking must not create or write anything"


def test_file_standing_in_for_a_disk_is_too_small(tmp_path):
    f = tmp_path / "small.img"
    f.write_bytes(b"\x55" * 1000)
    with pytest.raises(DiskError, match="smaller than the image"):
        check_receive_target(str(f), 2000, file_is_disk=True)
    assert f.read_bytes() == b"\x55" * 1000
    check_receive_target(str(f), 2000)  # plain `receive -f`: the file just grows


def test_empty_send_source_is_refused(tmp_path):
    f = tmp_path / "empty.img"
    f.write_bytes(b"")
    with pytest.raises(DiskError, match="empty"):
        check_send_source(str(f))


@needs_loop
def test_loop_device_size_from_the_kernel(tmp_path):
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(3 * MiB)
    with loop_device(img) as dev:
        disk = check_send_source(dev)
        assert disk.is_block and disk.size == 3 * MiB


@needs_loop
def test_too_small_block_device_is_refused_untouched(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(b"\xaa" * MiB)
    with loop_device(img) as dev:
        with pytest.raises(DiskError, match="smaller than the image"):
            check_receive_target(dev, 2 * MiB)
        assert check_receive_target(dev, MiB).size == MiB
    assert img.read_bytes() == b"\xaa" * MiB


@needs_loop
def test_mounted_disk_is_refused(tmp_path):
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    with mounted_ext4(img, tmp_path / "mnt") as dev:
        before = img.read_bytes()
        with pytest.raises(DiskError, match="mounted on"):
            check_receive_target(dev, None)
        # the file behind the mounted loop device is just as busy
        with pytest.raises(DiskError, match="mounted on"):
            check_receive_target(str(img), None, file_is_disk=True)
        assert img.read_bytes() == before


@pytest.mark.parametrize("path, kind", [("/dev/null", "a character device"),
                                        ("/dev/zero", "a character device"),
                                        ("/dev/kmsg", "a character device")])
def test_a_character_device_is_not_a_disk(path, kind):
    with pytest.raises(DiskError, match=f"^disk {path}: {kind}, not a block device; set disk="):
        check_is_disk(path)
    with pytest.raises(DiskError, match="not a block device"):
        check_receive_target(path, file_is_disk=True, block_only=True)
    with pytest.raises(DiskError, match="not a block device"):
        check_send_source(path, block_only=True)


def test_files_and_directories_are_not_disks_but_a_missing_path_may_become_one(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(DiskError, match="a regular file, not a block device"):
        check_is_disk(str(tmp_path / "f"))
    with pytest.raises(DiskError, match="a directory, not a block device"):
        check_is_disk(str(tmp_path))
    check_is_disk(str(tmp_path / "not-yet"))  # the driver may still be loading


def test_a_file_target_is_fine_without_block_only(tmp_path):
    """`herdcast receive -f FILE` and the node's --disk test switch keep working."""
    (tmp_path / "f").write_bytes(b"x")
    assert check_receive_target(str(tmp_path / "f"), file_is_disk=True).size == 1


@needs_loop
def test_block_only_takes_a_block_device(tmp_path):
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    with loop_device(img) as dev:
        assert check_receive_target(dev, block_only=True).is_block
        assert check_send_source(dev, block_only=True).size == MiB


@needs_loop
def test_a_device_held_open_exclusively_is_refused(tmp_path):
    """What `herdcast receive -f /dev/X` on a server needs as much as a node: the kernel's
    own in-use test (O_EXCL) catches holders the mount and swap tables do not show."""
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    with loop_device(img) as dev:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            with pytest.raises(DiskError, match=f"disk {dev}: busy"):
                check_receive_target(dev)
        finally:
            os.close(fd)
        assert check_receive_target(dev).is_block


@needs_loop
def test_sender_refuses_a_read_write_mounted_disk_unless_told(tmp_path):
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    with mounted_ext4(img, tmp_path / "mnt") as dev:
        for path in (dev, str(img)):  # the device, and the file behind the loop device
            with pytest.raises(DiskError, match="read-write mounted filesystem") as err:
                check_send_source(path)
            assert err.value.fix == "unmount it, or set mounted=warn to send it anyway"
            assert check_send_source(path, mounted="warn").size == 8 * MiB
            [warning] = send_source_warnings(path)
            assert warning.startswith(f"warning: {path}: ") and "inconsistent" in warning
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "mnt")], check=True,
                       timeout=20)
        assert check_send_source(dev).size == 8 * MiB
        assert send_source_warnings(dev) == []


def test_send_source_warnings_of_a_free_or_missing_disk(tmp_path):
    f = tmp_path / "disk.img"
    f.write_bytes(b"x" * 4096)
    assert send_source_warnings(str(f)) == []
    assert send_source_warnings(str(tmp_path / "missing")) == []


def test_a_missing_dev_path_is_a_missing_device_but_a_new_file_under_dev_shm_is_fine():
    from agent.hw.disk import names_a_device

    assert names_a_device("/dev/sdz") and names_a_device("/dev/disk/by-id/ata-X")
    assert names_a_device("/dev/mapper/vg-lv")
    assert not names_a_device("/dev/shm/herdcast-image.bin")
    assert not names_a_device("/srv/images/lab.img")
    with pytest.raises(DiskError, match="no such device"):
        check_receive_target("/dev/herdcast-no-such-disk")
    assert not check_receive_target("/dev/shm/herdcast-no-such-file.bin").is_block
