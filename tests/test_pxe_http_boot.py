"""UEFI HTTP Boot end to end: an OVMF node with Secure Boot on (Microsoft's keys) and no PXE
boot option asks DHCP as HTTPClient (option 93 = 16), is given http://SERVER/shimx64.efi by
the lab's dnsmasq (docs/dnsmasq.conf's lines), and fetches shim, GRUB, GRUB's configs, the
kernel and the initrd from the lab's web server, nothing over TFTP; then a BIOS sender
clones its disk. The menus are the plain root's (no --http-url): GRUB reads `/vmlinuz`
from the device it was loaded from, so the same grub.cfg serves PXE and HTTP Boot."""

import pytest
from conftest import ensure_tftpboot

from builder.lab.demo import run_lab, table
from builder.lab.vms import http_fetched, leased, tftp_clients
from builder.pxelinux import mac_file_name

pytestmark = [pytest.mark.slow, pytest.mark.netns]

FLEET = [
    ("sender", "virtio-net-pci", "virtio", "snd", "bios"),
    # virtio-net with romfile= (no iPXE): OVMF's VirtioNetDxe and HttpBootDxe boot it
    ("rcv-http", "virtio-net-pci", "sata", "rcv", "uefi-http"),
]


@pytest.mark.timeout(480)
def test_a_node_boots_by_uefi_http_boot_with_secure_boot_and_is_cloned(tmp_path):
    tftpboot = ensure_tftpboot()
    lines: list[str] = []
    work = tmp_path / "lab"
    results = run_lab(tftpboot, work, size_mib=16, timeout=420, show=lines.append,
                      nodes=FLEET, urls=False)
    report = "\n".join(lines) + "\n" + table(results, 16)
    sender, receiver = results
    for r in results:
        assert r.seconds is not None, f"{r.node.name} never powered off:\n{report}"
    assert receiver.sha256 == sender.sha256, f"the disk differs from the sender's:\n{report}"
    assert receiver.secure_boot is True, report
    ip = leased(work)[receiver.node.mac]
    fetched = [path.lstrip("/") for client, path in http_fetched(work) if client == ip]
    own = f"grub/grub.cfg-{mac_file_name(receiver.node.mac)}"
    for name in ("shimx64.efi", "grubx64.efi", "grub/grub.cfg", own, "vmlinuz",
                 "initrd.img"):
        assert name in fetched, f"{name} not fetched over HTTP: {fetched}\n{report}"
    assert fetched.index("shimx64.efi") < fetched.index("grubx64.efi") < \
        fetched.index("vmlinuz")
    assert [p for client, p in tftp_clients(work) if client == ip] == [], report
