"""The README's DHCP recipe (docs/dnsmasq.conf, docs/dnsmasq-proxy.conf) is a working
configuration: dnsmasq accepts both, and the full one, run as it is (only its marked EDIT lines
changed to the lab's), gives a BIOS client pxelinux.0, an x86-64 UEFI client (DHCP option
93 = 7) the signed shim, and a UEFI HTTP Boot client (option 93 = 16, vendor class
HTTPClient) the shim's http:// URL on this server with vendor class HTTPClient in the answer
(which the firmware requires), each with an address from its range; arm64 UEFI clients
(11, and 19 for HTTP Boot) get arm64's shim the same two ways. The client is busybox's
udhcpc in a namespace of the lab; nothing leaves it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from builder.lab.netlab import NetLab

DOCS = ROOT / "docs"
pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq")


@pytest.mark.parametrize("name", ["dnsmasq.conf", "dnsmasq-proxy.conf"])
def test_recipe_passes_dnsmasqs_own_check(name: str):
    proc = subprocess.run(["dnsmasq", "--test", f"--conf-file={DOCS / name}"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    text = (DOCS / name).read_text()
    for key in ("enable-tftp", "tftp-root=", "dhcp-range=", "interface="):
        assert re.search(rf"^{key}", text, re.M), f"{name} lacks {key}"


def _lab_conf(tmp_path: Path, ip: str) -> Path:
    """docs/dnsmasq.conf with its EDIT lines set to the lab's interface, range and root."""
    text = (DOCS / "dnsmasq.conf").read_text()
    net = ip.rsplit(".", 1)[0]
    text = re.sub(r"^interface=.*$", "interface=eth0", text, flags=re.M)
    text = re.sub(r"^dhcp-range=.*$", f"dhcp-range={net}.100,{net}.200,255.255.255.0,1h",
                  text, flags=re.M)
    text = re.sub(r"^tftp-root=.*$", f"tftp-root={tmp_path}", text, flags=re.M)
    text = re.sub(r"http://[0-9.]+/", f"http://{ip}/", text)
    conf = tmp_path / "herdcast.conf"
    conf.write_text(text + f"dhcp-leasefile={tmp_path / 'leases'}\n")
    return conf


#: An HTTP Boot client's vendor class, as OVMF's HttpBootDxe sends it.
HTTP_CLIENT = "HTTPClient:Arch:00016:UNDI:003000"


@pytest.mark.netns
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("arch", "vendor", "boot_file"), [
    (None, None, "pxelinux.0"),
    (7, "PXEClient:Arch:00007:UNDI:003000", "shimx64.efi"),
    (16, HTTP_CLIENT, "http://{server}/shimx64.efi"),
    (11, "PXEClient:Arch:00011:UNDI:003000", "shimaa64.efi"),  # arm64 UEFI
    (19, "HTTPClient:Arch:00019:UNDI:003000", "http://{server}/shimaa64.efi"),
])
def test_recipe_hands_out_the_boot_file_by_architecture(tmp_path, arch, vendor, boot_file):
    script = tmp_path / "udhcpc.script"
    # $vendor: the vendor class the server answered with (option 60, asked for with -O)
    script.write_text(f"#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $boot_file ${{vendor:--}}\" > "
                      f"{tmp_path / 'bound'}\nexit 0\n")
    script.chmod(0o755)
    with NetLab(2, net=91) as lab:
        server, client = lab.hosts
        server.popen(["dnsmasq", "--no-daemon", f"--conf-file={_lab_conf(tmp_path, server.ip)}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client.run("ip", "addr", "flush", "dev", "eth0")
        extra = ["-x", f"0x5d:{arch:04x}"] if arch is not None else []
        extra += ["-V", vendor] if vendor is not None else []
        client.run("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
                   "-O", "60", "-s", str(script), *extra, timeout=40)
    ip, got, vendor_class = (tmp_path / "bound").read_text().split()
    assert got == boot_file.format(server=server.ip)
    assert 100 <= int(ip.rsplit(".", 1)[1]) <= 200
    assert vendor_class == ("HTTPClient" if arch in (16, 19) else "-")
