"""End to end, issue 20: two nodes cloned from one master in the PXE lab come up as their
own machines.

The master is a 64 MiB GPT disk whose ext4 Linux root holds what an installed system keeps
of its identity (/etc/hostname, the 127.0.1.1 line of /etc/hosts, /etc/machine-id, SSH host
keys: builder.lab.rootdisk). The lab's server sends it (`herdcast send -f master.disk`) to
two BIOS receivers, one with a 64 MiB disk and one with 128 MiB. Each node is named by its
per-MAC file (`python -m builder node MAC hostname=...`), both with grow=yes. Each must end
with its own hostname, an empty machine-id (systemd makes a new one at first boot) and SSH
host keys no other clone (nor the master) has; the bigger one's root partition and ext4 fill
its disk, the GPT valid at the end; fsck clean; the consoles, the server's table and its
JSON report list what was changed on each.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ensure_tftpboot

from agent.image.partitions import read_partitions
from builder.lab.capture import _finish
from builder.lab.rootdisk import fsck, make_master, root_of
from builder.lab.tftp import ROOT, lab_default, node_config
from builder.lab.vms import PxeLab, console_text

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(480)]
MiB = 1 << 20
NAMES = ("web-01", "web-02")
SIZES = (64, 128)


def _identity(disk) -> dict:
    with root_of(disk, "ext4") as root:
        st = os.statvfs(root)
        return {"hostname": (root / "etc/hostname").read_text(),
                "hosts": (root / "etc/hosts").read_text(),
                "machine-id": (root / "etc/machine-id").read_bytes(),
                "keys": {(root / f"etc/ssh/ssh_host_{k}_key.pub").read_text().split()[1]
                         for k in ("ed25519", "ecdsa", "rsa")},
                "fs": st.f_blocks * st.f_frsize}


def _last_end(disk) -> int:
    fd = os.open(disk, os.O_RDONLY)
    try:
        return read_partitions(fd, os.fstat(fd).st_size)[1][-1].extent.end
    finally:
        os.close(fd)


def test_two_clones_come_up_as_their_own_machines(tmp_path):
    tftpboot = ensure_tftpboot()
    work = tmp_path / "lab"
    work.mkdir()
    master = work / "master.disk"
    make_master(master, mib=64)
    before = _identity(master)
    disks = []
    for name, mib in zip(NAMES, SIZES, strict=True):
        disks.append(work / f"{name}.disk")
        with open(disks[-1], "wb") as f:
            f.truncate(mib * MiB)
    report = work / "report.json"
    lines: list[str] = []
    with PxeLab(tftpboot, work) as lab:
        lab_default(lab.tftp, lab.http_url)
        nodes = [lab.add_node(name, "virtio-net-pci", "virtio", disk)
                 for name, disk in zip(NAMES, disks, strict=True)]
        for node in nodes:  # each named by its own per-MAC file, as an admin does
            node_config(lab.tftp, node.mac, {"disk": node.guest_disk, "hostname": node.name,
                                             "grow": "yes"})
        server = lab.serve("send", [
            sys.executable, "-m", "agent", "send", "-f",
            str(master), "-i", "br0", "--min-receivers", "2", "--max-wait", "240",
            "--nokbd", "--no-progress", "--report", str(report)], cwd=ROOT)
        for node in nodes:
            lab.boot(node)
        seconds = _finish(lab, nodes, server, 360, lines.append)
        rc = server.poll()
    send_log = (work / "send.log").read_text(errors="replace")
    consoles = {n.name: console_text(n) for n in nodes}
    shown = "\n".join([*lines, "--- server", send_log[-4000:],
                       *(f"--- {k}\n{v[-3000:]}" for k, v in consoles.items())])
    assert seconds is not None and rc == 0, shown
    after = {node.name: _identity(node.disk) for node in nodes}
    for node in nodes:
        me = after[node.name]
        assert me["hostname"] == f"{node.name}\n", shown
        assert f"127.0.1.1\t{node.name}.lab.example {node.name}\n" in me["hosts"], shown
        assert me["machine-id"] == b"", shown  # systemd makes a new one at first boot
        assert not me["keys"] & before["keys"], shown
        assert fsck(node.disk, "ext4") is None, shown
        text = consoles[node.name]
        assert f"changed: partition 2 (Debian GNU/Linux 12 (bookworm)): /etc/hostname: " \
               f"master -> {node.name}" in text, shown
        assert "herdcast: SUCCESS: received" in text, shown
    assert not after[NAMES[0]]["keys"] & after[NAMES[1]]["keys"], shown
    # the bigger disk grew: its last partition ends at the last usable sector, ext4 fills it
    small, big = disks
    assert _last_end(small) == _last_end(master), shown
    assert _last_end(big) == (SIZES[1] * MiB // 512 - 33) * 512, shown
    assert after[NAMES[0]]["fs"] < 56 * MiB < 100 * MiB < after[NAMES[1]]["fs"], shown
    assert "grow: partition 2 already ends at the disk's end" in consoles[NAMES[0]], shown
    assert "ext filesystem grown" in consoles[NAMES[1]], shown
    gpt = subprocess.run(["sgdisk", "-v", str(big)], capture_output=True, text=True,
                         timeout=30)
    assert "No problems found" in gpt.stdout, gpt.stdout
    # the server's table and report say what was changed on each node
    rows = {r["address"]: r for r in json.loads(report.read_text())["receivers"]}
    assert len(rows) == 2 and all(r["personalised"] == "done" for r in rows.values()), shown
    for name in NAMES:
        assert any(f"/etc/hostname: master -> {name}" in " ".join(r["changes"])
                   for r in rows.values()), shown
        assert f"/etc/hostname: master -> {name}" in send_log, shown
