"""arm64 nodes end to end: one TFTP root serves x86 and arm64 (`make initrd` and `make
initrd ARCH=arm64`). An arm64 machine (qemu-system-aarch64 -M virt under TCG, AAVMF with
Secure Boot on and Microsoft's keys) PXE-boots as DHCP client-arch 11, is given
shimaa64.efi, whose GRUB (grubaa64.efi) reads the same grub/ menus as x86 nodes and takes
arm64/vmlinuz and arm64/initrd.img; its frozen arm64 agent then receives the disk of an
x86 BIOS sender, byte for byte."""

import pytest
from conftest import ensure_arm64_tftpboot

from builder.lab.demo import run_lab, table
from builder.lab.vms import leased, tftp_clients
from builder.pxelinux import mac_file_name

pytestmark = [pytest.mark.slow, pytest.mark.netns]

FLEET = [
    ("sender", "virtio-net-pci", "virtio", "snd", "bios"),
    ("rcv-arm64", "virtio-net-pci", "virtio", "rcv", "uefi-arm64"),
]


@pytest.mark.timeout(900)
def test_an_arm64_node_is_cloned_from_an_x86_sender(tmp_path):
    tftpboot = ensure_arm64_tftpboot()
    lines: list[str] = []
    work = tmp_path / "lab"
    results = run_lab(tftpboot, work, size_mib=16, timeout=600, show=lines.append,
                      nodes=FLEET, urls=False)
    report = "\n".join(lines) + "\n" + table(results, 16)
    sender, receiver = results
    console = (work / "rcv-arm64.console.log").read_text(errors="replace")
    for r in results:
        assert r.seconds is not None, f"{r.node.name} never powered off:\n{report}\n" \
            f"{console[-3000:]}"
    assert receiver.sha256 == sender.sha256, f"the disk differs from the sender's:\n{report}"
    assert "-arm64 " in console and "herdcast: SUCCESS" in console, console[-3000:]
    assert receiver.secure_boot is True, report  # shimaa64 -> grubaa64 -> kernel, signed
    ip = leased(work)[receiver.node.mac]
    fetched = [p.split("/tftpboot/", 1)[-1] for client, p in tftp_clients(work) if client == ip]
    own = f"grub/grub.cfg-{mac_file_name(receiver.node.mac)}"
    for name in ("shimaa64.efi", "grubaa64.efi", "grub/grub.cfg", own, "arm64/vmlinuz",
                 "arm64/initrd.img"):
        assert name in fetched, f"{name} not fetched over TFTP: {fetched}\n{report}"
    assert "vmlinuz" not in fetched and "shimx64.efi" not in fetched, fetched
