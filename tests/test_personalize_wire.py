"""Issue 20 over the wire: `herdcast receive --hostname/--grow` personalises each clone after
its digest agreed, and the sender's lines, final table and JSON report list what was
changed on each receiver (HC_CHANGED); a wish that cannot be honoured fails the receiver
and the sender's row says why."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import needs_loop
from peers import herdcast_receiver, herdcast_sender, logs, wait

from agent.transfer.send.jsonreport import validate
from builder.lab.loopdev import loop_device
from builder.lab.netlab import NetLab
from builder.lab.rootdisk import fsck, make_master, root_of

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240), needs_loop]
MiB = 1 << 20


def blank(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    return path


@pytest.mark.parametrize("path", ["chunks", "stream"])
def test_receivers_personalise_and_the_sender_lists_what_changed(tmp_path, path):
    """On both paths a disk takes: the chunk carousel (the default for receivers writing in
    place) and a round's stream (--chunks no on the sender)."""
    chunks = ("--chunks", "yes" if path == "chunks" else "no")
    master = tmp_path / "master.disk"
    make_master(master, mib=64)
    disks = [blank(tmp_path / "node1.disk", 64), blank(tmp_path / "node2.disk", 96),
             blank(tmp_path / "bare.disk", 64)]
    report = tmp_path / "report.json"
    with NetLab(4, net=189) as lab, loop_device(disks[0]) as dev1, \
            loop_device(disks[1]) as dev2:
        # block devices, as a node's disks (a regular file is cut to the image's size)
        procs = [herdcast_receiver(lab.hosts[1], Path(dev1), tmp_path / "recv1.log",
                                   "--hostname", "node1"),
                 herdcast_receiver(lab.hosts[2], Path(dev2), tmp_path / "recv2.log",
                                   "--hostname", "node2", "--grow")]
        time.sleep(0.3)
        snd = herdcast_sender(lab.hosts[0], tmp_path / "send.log", "--min-receivers", "2",
                              "--report", str(report), "-f", str(master), *chunks)
        rcs = [wait(p, 120) for p in procs]
        rc = wait(snd, 120)
        # a disk with no partition table and no filesystem: hostname= cannot be honoured
        bare = herdcast_receiver(lab.hosts[3], disks[2], tmp_path / "recv3.log",
                                 "--unpack", "--hostname", "nothing-here")
        time.sleep(0.3)
        snd = herdcast_sender(lab.hosts[0], tmp_path / "send2.log", "--min-receivers", "1",
                              "-f", str(blank(tmp_path / "empty.disk", 64)))
        rcs.append(wait(bare, 120))
        rc2 = wait(snd, 120)
    log = logs(tmp_path)
    assert (rc, rcs, rc2) == (0, [0, 0, 1], 1), log
    doc = json.loads(report.read_text())
    assert validate(doc) == []
    rows = {r["address"]: r for r in doc["receivers"]}
    node1, node2 = (rows[lab.hosts[i].ip] for i in (1, 2))
    assert node1["personalised"] == node2["personalised"] == "done"
    assert "/etc/hostname: master -> node1" in " ".join(node1["changes"])
    assert "/etc/hostname: master -> node2" in " ".join(node2["changes"])
    assert any("end moved from sector 131038 to 196574" in c for c in node2["changes"])
    assert any("filesystem grown" in c for c in node2["changes"])
    assert not any("grown" in c for c in node1["changes"])
    sender = (tmp_path / "send.log").read_text()
    assert ("chunk carousel" in sender) == (path == "chunks"), sender
    assert f"{lab.hosts[2].ip} changed: partition 2: ext filesystem grown" in sender
    assert "changed: partition 2 (Debian GNU/Linux 12 (bookworm)): /etc/hostname: " \
           "master -> node1" in sender  # the final table, under node1's row
    assert "NOT personalised: " in (tmp_path / "send2.log").read_text()
    assert "no Linux root found" in (tmp_path / "recv3.log").read_text()
    ids, keys, sizes = [], [], []
    for disk, name in zip(disks[:2], ("node1", "node2"), strict=True):
        assert fsck(disk, "ext4") is None
        with root_of(disk, "ext4") as root:
            assert (root / "etc/hostname").read_text() == f"{name}\n"
            ids.append((root / "etc/machine-id").read_bytes())
            st = os.statvfs(root)
            sizes.append(st.f_blocks * st.f_frsize)
            keys.append((root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1])
    assert ids == [b"", b""] and keys[0] != keys[1]
    assert sizes[0] < 56 * MiB < 75 * MiB < sizes[1]  # node2's root fills its 96 MiB disk
