"""End to end, issue 10 item 2: a disk that fails a write fails the node, never SUCCESS.

Two BIOS receivers PXE-boot; the lab's server (the namespace, at the bridge's address) sends
them a 16 MiB raw image with `herdcast send --min-receivers 2`, default options. One
receiver's virtio disk runs through qemu's blkdebug: every write that covers the sector at
8 MiB fails with EIO, as a drive with a bad spot does. The guest kernel writes back its page
cache and logs the I/O error; the agent hears it at fsync. That node must say FAILED (and
power off, onfail=poweroff in the lab), the sender's table must not say its digest agreed,
and the other receiver must finish with the image on its disk.
"""

import re
import sys
import time

import pytest
from conftest import ROOT, ensure_tftpboot

from builder.lab.disks import make_junk_disk
from builder.lab.tftp import lab_default, node_config
from builder.lab.vms import PxeLab, console_text, write_eio_rules

pytestmark = [pytest.mark.slow, pytest.mark.netns]

MIB = 1024 * 1024
BAD_SECTOR = 8 * MIB // 512


def _address(text: str) -> str | None:
    m = re.search(r"herdcast: network: \S+ \(\S+\) (\d+\.\d+\.\d+\.\d+)/", text)
    return m.group(1) if m else None


def test_a_disk_that_fails_a_write_fails_the_node(tmp_path):
    tftpboot = ensure_tftpboot()
    work = tmp_path / "lab"
    work.mkdir()
    image = work / "image.raw"  # no partition table: sent raw, every sector written
    make_junk_disk(image, 16, seed=7)
    good_disk, bad_disk = work / "good.img", work / "bad.img"
    make_junk_disk(good_disk, 16, seed=8)
    make_junk_disk(bad_disk, 16, seed=9)
    rules = write_eio_rules(work / "eio.cfg", BAD_SECTOR)
    with PxeLab(tftpboot, work) as lab:
        lab_default(lab.tftp, lab.http_url)
        good = lab.add_node("good", "virtio-net-pci", "virtio", good_disk)
        bad = lab.add_node("bad", "virtio-net-pci", "virtio", bad_disk, fault=rules)
        for node in (good, bad):
            node_config(lab.tftp, node.mac, {"disk": node.guest_disk})
        server = lab.serve("send", [sys.executable, "-m", "agent", "send", "-f", str(image),
                                    "-i", "br0", "--min-receivers", "2", "--max-wait", "240",
                                    "--nokbd", "--no-progress"], cwd=ROOT)
        lab.boot(good)
        lab.boot(bad)
        finished = lab.wait(300)
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        rc = server.poll()
    table = (work / "send.log").read_text(errors="replace")
    good_text, bad_text = console_text(good), console_text(bad)
    report = (f"--- server send (exit {rc})\n{table}\n--- good\n{good_text[-2500:]}\n"
              f"--- bad\n{bad_text[-2500:]}")
    assert finished, f"a VM did not power off:\n{report}"
    assert "starting (" in table and "herdcast image" not in table, report  # a raw round
    # the faulty disk: the kernel saw EIO, the node failed, never SUCCESS
    assert re.search(r"I/O error, dev vda, sector \d+ op 0x1:\(WRITE\)", bad_text), report
    assert "herdcast: FAILED" in bad_text and "SUCCESS" not in bad_text, report
    # the other receiver finished with the image on its disk
    assert "herdcast: SUCCESS: received 16777216 bytes" in good_text, report
    assert good_disk.read_bytes() == image.read_bytes(), report
    # the sender's table: the good one agreed, the bad one did not; the send failed
    good_ip, bad_ip = _address(good_text), _address(bad_text)
    assert good_ip and bad_ip, report
    rows = {line.split()[0]: line for line in table.splitlines()
            if line.startswith("  10.99.0.")}
    assert "digest agreed" in rows[good_ip], report
    assert bad_ip in rows and "digest agreed" not in rows[bad_ip], report
    assert rc not in (0, None), report
