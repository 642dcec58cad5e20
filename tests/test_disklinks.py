"""/dev/disk/by-id and by-path made from a fake sysfs tree, with udev's names."""

from __future__ import annotations

import os
from pathlib import Path

from agent.hw.disklinks import disk_links, make_disk_links
from agent.hw.drivers import disk_present


def _ata_string(text: str, length: int) -> bytes:
    """An ATA IDENTIFY string: space padded, the two bytes of each word swapped."""
    raw = text.ljust(length).encode()
    return bytes(b for i in range(0, length, 2) for b in (raw[i + 1], raw[i]))


def _vpd_pg89(model: str, serial: str) -> bytes:
    identify = bytearray(512)
    identify[20:40] = _ata_string(serial, 20)
    identify[54:94] = _ata_string(model, 40)
    return bytes(60) + bytes(identify)


def _disk(sys: Path, device_dir: str, name: str, partitions: int = 0,
          attrs: dict[str, str | bytes] | None = None) -> Path:
    """A block device at sys/devices/DEVICE_DIR/block/NAME, linked from sys/block/NAME;
    attrs are files relative to that block directory (device/... for the device's)."""
    block = sys / "devices" / device_dir / "block" / name
    block.mkdir(parents=True)
    for rel, value in (attrs or {}).items():
        path = block / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value) if isinstance(value, bytes) else path.write_text(value + "\n")
    for n in range(1, partitions + 1):
        part = block / f"{name}{'p' if name[-1].isdigit() else ''}{n}"
        part.mkdir()
        (part / "partition").write_text(f"{n}\n")
    (sys / "block").mkdir(exist_ok=True)
    (sys / "block" / name).symlink_to(os.path.relpath(block, sys / "block"))
    return block


def _machine(tmp_path: Path) -> Path:
    sys = tmp_path / "sys"
    _disk(sys, "pci0000:00/0000:00:04.0/virtio2", "vda", 2, {"serial": "node-disk-1"})
    _disk(sys, "pci0000:00/0000:00:1d.0/0000:01:00.0/nvme/nvme0", "nvme0n1", 1,
          {"device/model": "Samsung SSD 970 EVO Plus 500GB ", "device/serial": "S4EVNX0R12345",
           "wwid": "eui.0025388b71b0f2d4", "nsid": "1"})
    _disk(sys, "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0", "sda", 1,
          {"device/vpd_pg89": _vpd_pg89("QEMU HARDDISK", "QM00005"),
           "device/wwid": "naa.5000C500A1B2C3D4"})
    (sys / "class/ata_port/ata3").mkdir(parents=True)
    (sys / "class/ata_port/ata3/port_no").write_text("3\n")
    _disk(sys, "pci0000:00/0000:00:05.0/virtio3/host4/target4:0:1/4:0:1:0", "sdb")
    _disk(sys, "virtual/block", "loop0")
    return sys


def test_udevs_names_from_sysfs(tmp_path):
    links = disk_links(str(_machine(tmp_path)))
    assert links == {
        "by-id/virtio-node-disk-1": "vda",
        "by-id/virtio-node-disk-1-part1": "vda1",
        "by-id/virtio-node-disk-1-part2": "vda2",
        "by-path/pci-0000:00:04.0": "vda",
        "by-path/pci-0000:00:04.0-part1": "vda1",
        "by-path/pci-0000:00:04.0-part2": "vda2",
        "by-path/virtio-pci-0000:00:04.0": "vda",
        "by-path/virtio-pci-0000:00:04.0-part1": "vda1",
        "by-path/virtio-pci-0000:00:04.0-part2": "vda2",
        "by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EVNX0R12345": "nvme0n1",
        "by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EVNX0R12345-part1": "nvme0n1p1",
        "by-id/nvme-eui.0025388b71b0f2d4": "nvme0n1",
        "by-id/nvme-eui.0025388b71b0f2d4-part1": "nvme0n1p1",
        "by-path/pci-0000:01:00.0-nvme-1": "nvme0n1",
        "by-path/pci-0000:01:00.0-nvme-1-part1": "nvme0n1p1",
        "by-id/ata-QEMU_HARDDISK_QM00005": "sda",
        "by-id/ata-QEMU_HARDDISK_QM00005-part1": "sda1",
        "by-id/wwn-0x5000c500a1b2c3d4": "sda",
        "by-id/wwn-0x5000c500a1b2c3d4-part1": "sda1",
        "by-path/pci-0000:00:1f.2-ata-3.0": "sda",
        "by-path/pci-0000:00:1f.2-ata-3.0-part1": "sda1",
        "by-path/pci-0000:00:1f.2-ata-3": "sda",
        "by-path/pci-0000:00:1f.2-ata-3-part1": "sda1",
        "by-path/pci-0000:00:05.0-scsi-4:0:1:0": "sdb",
    }


def test_links_are_made_relative_and_existing_ones_kept(tmp_path):
    sys, dev = _machine(tmp_path), tmp_path / "dev"
    (dev / "disk/by-id").mkdir(parents=True)
    (dev / "disk/by-id/virtio-node-disk-1").symlink_to("../../vdz")
    made = make_disk_links(str(sys), str(dev))
    assert str(dev / "disk/by-path/pci-0000:00:1f.2-ata-3.0-part1") in made
    assert os.readlink(dev / "disk/by-path/pci-0000:00:1f.2-ata-3.0-part1") == "../../sda1"
    assert os.readlink(dev / "disk/by-id/virtio-node-disk-1") == "../../vdz"
    assert make_disk_links(str(sys), str(dev)) == []


def test_the_hardware_step_finds_disk_by_id_without_udev(tmp_path):
    sys, dev = _machine(tmp_path), tmp_path / "dev"
    dev.mkdir()
    (dev / "sda").write_text("")  # devtmpfs made the kernel name
    disk = str(dev / "disk/by-id/ata-QEMU_HARDDISK_QM00005")
    assert not disk_present(disk, str(sys))  # not asked to make links: udevd's job
    assert disk_present(disk, str(sys), str(dev))
    assert os.path.realpath(disk) == str(dev / "sda")
