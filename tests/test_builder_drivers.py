"""Every NIC and disk controller qemu can emulate finds its driver in the initrd.

qemu's list stands in for a fleet's hardware: real Intel, AMD, Realtek, LSI, Adaptec and
VMware devices, virtio, and the buses of VMware and Hyper-V guests. Each PCI device of
qemu's "Network devices" and "Storage devices" (`-device help`) is started in a paused VM,
its PCI IDs read back over QMP (query-pci), and its modalias must match an alias of a
module in the generic driver set (the set `make initrd` ships; its modules.alias is the
full kernel's lines for those modules). Virtio devices must also find their virtio driver.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import shutil
import subprocess

import pytest
from conftest import cached_kernel

from builder import kernel, modules

QEMU = "qemu-system-x86_64"

#: Devices of those categories that are no NIC or disk controller of a node, and why.
NOT_A_NODE_CONTROLLER = {
    "pvrdma": "RDMA adapter (a VMware guest's Ethernet is its vmxnet3)",
    "rocker": "a switch model for switchdev development; Debian's kernel has no driver",
    "cxl-type3": "CXL persistent memory, not a disk controller",
    "virtio-9p-pci": "file sharing with the host, not a disk",
    "virtio-9p-pci-non-transitional": "file sharing with the host, not a disk",
    "virtio-9p-pci-transitional": "file sharing with the host, not a disk",
    "vhost-user-fs-pci": "virtiofs, file sharing with the host, not a disk",
}
#: vhost-* are host-side back ends of the virtio devices (the guest sees virtio-scsi/blk).
_HOST_BACKEND = re.compile(r"^vhost-")
#: Properties a device cannot start without.
NEEDS = {"nvme": ["-device", "nvme,serial=hc0,id=dut"]}
_DRIVE = ["-drive", "if=none,id=d0,driver=null-co"]
#: Virtio PCI device IDs: transitional 0x1000 + n, modern 0x1040 + virtio device ID.
_TRANSITIONAL = {0x1000: 1, 0x1001: 2, 0x1004: 8, 0x1009: 9}


def _real_kernel() -> kernel.Kernel | None:
    return cached_kernel()


pytestmark = [
    pytest.mark.skipif(shutil.which(QEMU) is None, reason="qemu not installed"),
    pytest.mark.skipif(_real_kernel() is None, reason="Debian kernel not in the cache yet "
                       "(python -m builder initrd downloads it)"),
]


def qemu_controllers() -> list[str]:
    """PCI devices qemu lists under Network devices and Storage devices."""
    text = subprocess.run([QEMU, "-device", "help"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    found = []
    for section in ("Network devices", "Storage devices"):
        block = text.split(f"{section}:\n", 1)[1].split("\n\n", 1)[0]
        found += re.findall(r'^name "([^"]+)", bus PCI', block, re.MULTILINE)
    return found


def pci_ids(device: str) -> dict:
    """query-pci's entry for `device`, started alone in a paused q35 VM."""
    extra = NEEDS.get(device) or ["-device", f"{device},id=dut"
                                  + (",drive=d0" if "-blk-" in device else "")]
    commands = "".join(json.dumps({"execute": c}) + "\n"
                       for c in ("qmp_capabilities", "query-pci", "quit"))
    proc = subprocess.run([QEMU, "-machine", "q35", "-accel", "tcg", "-nodefaults",
                           "-display", "none", "-S", "-qmp", "stdio", *_DRIVE, *extra],
                          input=commands, capture_output=True, text=True, timeout=60)
    for line in proc.stdout.splitlines():
        reply = json.loads(line).get("return")
        if isinstance(reply, list):
            for bus in reply:
                for dev in bus["devices"]:
                    if dev.get("qdev_id") == "dut":
                        return dev
    raise AssertionError(f"{device}: not on the PCI bus: {proc.stderr[-500:]}")


def shipped_aliases() -> list[tuple[str, str]]:
    """(alias pattern, module) of every module in the generic set."""
    kern = _real_kernel()
    assert kern is not None
    names = {modules.module_name(p) for p in modules.select(kern.modules_dir)}
    out = []
    for line in (kern.modules_dir / "modules.alias").read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias" and words[2].replace("-", "_") in names:
            out.append((words[1], words[2]))
    return out


def matching(modalias: str, aliases: list[tuple[str, str]]) -> set[str]:
    bus = modalias.partition(":")[0] + ":"
    return {mod for pattern, mod in aliases
            if pattern.startswith(bus) and _compiled(pattern).match(modalias)}


@functools.cache
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(fnmatch.translate(pattern))


def pci_modalias(dev: dict, prog_if: int) -> str:
    ids, cls = dev["id"], dev["class_info"]["class"]
    return (f"pci:v{ids['vendor']:08X}d{ids['device']:08X}sv{ids['subsystem-vendor']:08X}"
            f"sd{ids['subsystem']:08X}bc{cls >> 8:02X}sc{cls & 0xFF:02X}i{prog_if:02X}")


def drivers_for(dev: dict, aliases: list[tuple[str, str]]) -> set[str]:
    """Modules whose alias matches the device. query-pci does not report the programming
    interface, so every value is tried (the class-based aliases, ahci's i01, nvme's i02,
    name it)."""
    found: set[str] = set()
    for prog_if in range(256):
        found |= matching(pci_modalias(dev, prog_if), aliases)
    return found


def test_the_query_sees_a_known_device():
    dev = pci_ids("e1000")
    assert (dev["id"]["vendor"], dev["id"]["device"]) == (0x8086, 0x100E)
    assert "e1000" in drivers_for(dev, shipped_aliases())


def test_every_qemu_nic_and_disk_controller_has_a_driver_in_the_initrd():
    aliases = shipped_aliases()
    devices = [d for d in qemu_controllers()
               if d not in NOT_A_NODE_CONTROLLER and not _HOST_BACKEND.match(d)]
    assert {"e1000", "vmxnet3", "pvscsi", "mptsas1068", "megasas", "nvme", "ich9-ahci",
            "virtio-net-pci", "virtio-blk-pci", "lsi53c895a", "am53c974"} <= set(devices)
    missing, found = [], {}
    for device in devices:
        dev = pci_ids(device)
        mods = drivers_for(dev, aliases)
        if dev["id"]["vendor"] == 0x1AF4:  # virtio: the PCI transport, then the device
            pci_id = dev["id"]["device"]
            virtio_id = pci_id - 0x1040 if pci_id >= 0x1040 else _TRANSITIONAL.get(pci_id)
            inner = matching(f"virtio:d{virtio_id or 0:08X}v00001AF4", aliases)
            mods = mods & {"virtio_pci"} and inner
        found[device] = mods
        if not mods:
            missing.append(f"{device} ({pci_modalias(dev, 0)[:-3]})")
    assert not missing, f"no driver in the initrd for: {missing}"
    assert "vmxnet3" in found["vmxnet3"] and "vmw_pvscsi" in found["pvscsi"]
    assert "mptsas" in found["mptsas1068"]


def test_usb_and_hypervisor_drivers_a_fleet_needs_are_in():
    """Not PCI devices of qemu's list: USB Ethernet adapters (small PCs and laptops without
    a wired port), Hyper-V and Xen guests' NICs and disks."""
    kern = _real_kernel()
    assert kern is not None
    names = {modules.module_name(p) for p in modules.select(kern.modules_dir)}
    for name in ("r8152", "ax88179_178a", "cdc_ether", "asix", "hv_netvsc", "hv_storvsc",
                 "xen_netfront", "xen_blkfront", "mptspi", "aacraid", "vmd", "usb_storage"):
        assert name in names, name
    for name in ("iwlwifi", "ath10k_pci", "snd_hda_intel", "i915", "amdgpu", "qmi_wwan",
                 "lpfc", "scsi_debug"):
        assert name not in names, name
