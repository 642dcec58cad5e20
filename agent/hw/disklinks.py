"""/dev/disk/by-id and /dev/disk/by-path, made from sysfs as udev would make them.

The initramfs has no udevd, and devtmpfs creates only the kernel names (/dev/sda, /dev/vda),
which change with the probe order; an admin imaging a room writes `disk=/dev/disk/by-id/...`
or `disk=/dev/disk/by-path/...` to pick the same disk on every node. The names follow udev's
60-persistent-storage.rules for the disks nodes have:

- by-id: `virtio-SERIAL`, `nvme-MODEL_SERIAL` and `nvme-WWID`, `ata-MODEL_SERIAL` (from the
  ATA IDENTIFY data the kernel's SCSI-ATA translation puts in VPD page 89h), `wwn-0xNAA`;
- by-path: `pci-DOMAIN:BUS:SLOT.FN` followed by `-ata-PORT.0` (and the older `-ata-PORT`),
  `-nvme-NSID` or `-scsi-H:C:T:L`; a virtio disk is its PCI function (plus the legacy
  `virtio-pci-...`).

Partitions get the disk's names with `-partN`. Everything takes the sysfs and /dev roots, so
tests run on a fake tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PCI = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_SCSI_ADDRESS = re.compile(r"\d+:\d+:\d+:\d+")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _id_text(text: str) -> str:
    """udev's ID_SERIAL spelling: whitespace runs become one `_`, and characters outside
    a safe set (letters, digits, `#+-.:=@_`) become `_`, so the link is one path component."""
    text = "_".join(text.split())
    return re.sub(r"[^0-9A-Za-z#+\-.:=@_]", "_", text)


def _identify_strings(vpd_pg89: bytes) -> tuple[str, str] | None:
    """(model, serial) from ATA IDENTIFY data in VPD page 89h (60 bytes in): ASCII words
    with the two bytes of each word swapped, serial in words 10-19, model in words 27-46."""
    identify = vpd_pg89[60:60 + 512]
    if len(identify) < 94:
        return None

    def ata_string(first: int, last: int) -> str:
        raw = identify[first * 2:(last + 1) * 2]
        swapped = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
        return swapped.decode("ascii", "replace").strip()

    model, serial = ata_string(27, 46), ata_string(10, 19)
    return (model, serial) if model and serial else None


def _ids(block: Path) -> list[str]:
    """The by-id names of one whole disk (block = /sys/block/NAME)."""
    name, device = block.name, block / "device"
    ids = []
    if name.startswith("vd") and (serial := _read(block / "serial")):
        ids.append(f"virtio-{_id_text(serial)[:20]}")
    elif name.startswith("nvme"):
        model, serial = _read(device / "model"), _read(device / "serial")
        if model and serial:
            ids.append(f"nvme-{_id_text(model)}_{_id_text(serial)}")
        if wwid := _read(block / "wwid"):
            ids.append(f"nvme-{_id_text(wwid)}")
    elif name.startswith("sd"):
        try:
            strings = _identify_strings((device / "vpd_pg89").read_bytes())
        except OSError:
            strings = None
        if strings:
            ids.append(f"ata-{_id_text(strings[0])}_{_id_text(strings[1])}")
        wwid = _read(device / "wwid")
        if wwid.startswith("naa."):
            ids.append(f"wwn-0x{wwid[4:].lower()}")
    return ids


def _paths(block: Path) -> list[str]:
    """The by-path names of one whole disk, from the chain of its sysfs ancestors."""
    try:
        chain = block.resolve(strict=True).parts
    except OSError:
        return []
    pci = [p for p in chain if _PCI.fullmatch(p)]
    if not pci:
        return []
    base = f"pci-{pci[-1]}"
    name = block.name
    if name.startswith("vd"):
        return [base, f"virtio-{base}"]
    if name.startswith("nvme"):
        nsid = _read(block / "nsid") or re.sub(r"^nvme\d+n(\d+).*", r"\1", name)
        return [f"{base}-nvme-{nsid}"]
    ata = [p for p in chain if re.fullmatch(r"ata\d+", p)]
    if ata:
        sysfs = Path(*chain[:chain.index("devices")])
        port = _read(sysfs / "class/ata_port" / ata[-1] / "port_no") or ata[-1][3:]
        return [f"{base}-ata-{port}.0", f"{base}-ata-{port}"]
    scsi = [p for p in chain if _SCSI_ADDRESS.fullmatch(p)]
    if scsi:
        return [f"{base}-scsi-{scsi[-1]}"]
    return []


def disk_links(sys_root: str = "/sys") -> dict[str, str]:
    """{"by-id/NAME" or "by-path/NAME": kernel name} for every disk and partition."""
    links: dict[str, str] = {}
    for block in sorted(Path(sys_root, "block").glob("*")):
        names = [f"by-id/{n}" for n in _ids(block)] + [f"by-path/{n}" for n in _paths(block)]
        parts = sorted((p for p in block.iterdir() if (p / "partition").exists()),
                       key=lambda p: int(_read(p / "partition") or 0)) if names else []
        for link in names:
            links.setdefault(link, block.name)
            for part in parts:
                links.setdefault(f"{link}-part{_read(part / 'partition')}", part.name)
    return links


def make_disk_links(sys_root: str = "/sys", dev_root: str = "/dev") -> list[str]:
    """Create the missing /dev/disk/by-id and by-path symlinks (relative, as udev's:
    `../../sda`); returns the links created. An existing link is left alone."""
    made = []
    for link, target in disk_links(sys_root).items():
        path = Path(dev_root, "disk", link)
        if path.is_symlink() or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(f"../../{target}", path)
        except FileExistsError:
            continue
        made.append(str(path))
    return made
