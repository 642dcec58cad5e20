"""End to end: four VMs PXE-boot build/tftpboot and clone the sender's disk, no prompt.

One fleet of every firmware kind: BIOS (pxelinux), UEFI (GRUB) and UEFI with Secure Boot
on (shim -> Debian's signed GRUB -> Debian's signed kernel), mixing NIC models
(virtio-net-pci, e1000, vmxnet3) and disk buses (virtio, AHCI/SATA, NVMe). Every node boots its own
per-MAC file (`python -m builder node`: pxelinux.cfg/01-<mac> for BIOS, its GRUB twin
grub/grub.cfg-01-<mac> for UEFI), the sender's makes it the sender. Every VM powers off by
itself; every receiver's disk must hold the sender's used extents (the partition table,
what ext4 uses, the data after the partition), a file reads back from a
receiver's ext4 partition, and the Secure Boot node's kernel says Secure Boot was on.
"""

import time

import pytest
from conftest import ensure_tftpboot

from builder.lab.demo import GOLDEN_FILES, run_lab, table
from builder.lab.disks import read_partition_file
from builder.lab.vms import console_text
from builder.pxelinux import mac_file_name

pytestmark = [pytest.mark.slow, pytest.mark.netns]


@pytest.mark.timeout(480)  # above the lab's own 400 s, so a stuck node fails with consoles
def test_fleet_clones_over_pxe(tmp_path):
    tftpboot = ensure_tftpboot()
    lines: list[str] = []
    results = run_lab(tftpboot, tmp_path / "lab", size_mib=64, timeout=400,
                      show=lines.append)
    report = "\n".join(lines) + "\n" + table(results, 64)
    assert {r.node.firmware for r in results} == {"bios", "uefi", "uefi-secure"}
    for r in results:
        assert r.seconds is not None, (f"{r.node.name} never powered off:\n{report}\n--- its "
                                       f"console:\n{console_text(r.node)[-3000:]}")
    golden = results[0].sha256
    for r in results[1:]:
        assert r.sha256 == golden, f"{r.node.name} disk differs from the sender's:\n{report}"
    # the sender mapped its disk (partclone in the initrd) and sent used blocks, not every byte
    sent = console_text(results[0].node)
    assert "partition 1 (mbr:83)" in sent and "(partclone.extfs)" in sent, report
    # ... as herdcast's image: the chunk carousel (the default to herdcast receivers since
    # the carousel came) or a round's image stream; a raw send prints neither
    assert "chunk carousel to" in sent or ", herdcast image" in sent, report
    receiver = results[1].node.disk
    assert read_partition_file(receiver, "/etc/hostname") == GOLDEN_FILES["etc/hostname"]
    for r in results:
        name = mac_file_name(r.node.mac)
        expected = f"pxelinux.cfg/{name}" if r.node.firmware == "bios" else f"grub/grub.cfg-{name}"
        assert r.menu == expected, f"{r.node.name} did not boot its own file:\n{report}"
        if r.node.firmware != "bios":
            assert r.secure_boot == (r.node.firmware == "uefi-secure"), report


def test_a_node_boots_the_plain_tftp_root(tmp_path):
    """Without --http-url everything comes over TFTP, as on most admins' networks: one VM
    loads vmlinuz and initrd.img through pxelinux.0 and starts the agent."""
    from builder.initrd import MARKER
    from builder.lab.disks import make_junk_disk
    from builder.lab.tftp import lab_default
    from builder.lab.vms import PxeLab, console_text

    tftpboot = ensure_tftpboot()
    disk = tmp_path / "disk.img"
    make_junk_disk(disk, 8, seed=1)
    with PxeLab(tftpboot, tmp_path / "lab", http=False) as lab:
        lab_default(lab.tftp)
        assert "http://" not in (lab.tftp / "pxelinux.cfg" / "default").read_text()
        node = lab.add_node("tftp-only", "e1000", "sata", disk)
        lab.boot(node)
        deadline = time.monotonic() + 240
        while MARKER not in console_text(node) and time.monotonic() < deadline:
            assert node.proc.poll() is None, console_text(node)[-2000:]
            time.sleep(1)
        text = console_text(node)
    assert MARKER in text, text[-2000:]
    # pxelinux names what it loads; TFTP names are relative, HTTP ones are URLs
    assert "Loading vmlinuz" in text and "Loading initrd.img" in text
    assert "Loading http://" not in text
