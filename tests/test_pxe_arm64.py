"""arm64 nodes end to end, in a mixed fleet: one TFTP root serves x86 and arm64 (`make
initrd` and `make initrd ARCH=arm64`). An arm64 machine (qemu-system-aarch64 -M virt under
TCG, AAVMF with Secure Boot on and Microsoft's keys) PXE-boots as DHCP client-arch 11, is
given shimaa64.efi, whose GRUB (grubaa64.efi) reads the same grub/ menus as x86 nodes and
takes arm64/vmlinuz and arm64/initrd.img; its frozen arm64 agent then receives the disk of
an x86 BIOS sender byte for byte, or sends its own disk to an x86 BIOS receiver."""

import pytest
from conftest import ensure_arm64_tftpboot

from builder.lab.demo import run_lab, table
from builder.lab.vms import leased, tftp_clients
from builder.pxelinux import mac_file_name

pytestmark = [pytest.mark.slow, pytest.mark.netns]

X86 = ("virtio-net-pci", "virtio", "bios")
ARM = ("virtio-net-pci", "virtio", "uefi-arm64")


def _row(name: str, role: str, kind: tuple[str, str, str]) -> tuple[str, str, str, str, str]:
    nic, bus, firmware = kind
    return (name, nic, bus, role, firmware)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fleet", [
    [_row("sender", "snd", X86), _row("rcv-arm64", "rcv", ARM)],
    [_row("sender-arm64", "snd", ARM), _row("rcv-x86", "rcv", X86)],
], ids=["x86-sends-to-arm64", "arm64-sends-to-x86"])
def test_arm64_and_x86_nodes_clone_each_other(tmp_path, fleet):
    tftpboot = ensure_arm64_tftpboot()
    lines: list[str] = []
    work = tmp_path / "lab"
    results = run_lab(tftpboot, work, size_mib=16, timeout=600, show=lines.append,
                      nodes=fleet, urls=False)
    report = "\n".join(lines) + "\n" + table(results, 16)
    sender, receiver = results
    arm = next(r for r in results if r.node.firmware == "uefi-arm64")
    console = (work / f"{arm.node.name}.console.log").read_text(errors="replace")
    for r in results:
        assert r.seconds is not None, f"{r.node.name} never powered off:\n{report}\n" \
            f"{console[-3000:]}"
    assert receiver.sha256 == sender.sha256, f"the disk differs from the sender's:\n{report}"
    assert "-arm64 " in console and "herdcast: SUCCESS" in console, console[-3000:]
    assert arm.secure_boot is True, report  # shimaa64 -> grubaa64 -> kernel, all signed
    ip = leased(work)[arm.node.mac]
    fetched = [p.split("/tftpboot/", 1)[-1] for client, p in tftp_clients(work) if client == ip]
    own = f"grub/grub.cfg-{mac_file_name(arm.node.mac)}"
    for name in ("shimaa64.efi", "grubaa64.efi", "grub/grub.cfg", own, "arm64/vmlinuz",
                 "arm64/initrd.img"):
        assert name in fetched, f"{name} not fetched over TFTP: {fetched}\n{report}"
    assert "vmlinuz" not in fetched and "shimx64.efi" not in fetched, fetched
