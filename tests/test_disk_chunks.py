"""A live disk whose chunks would not fit in the sender's memory: the pass keeps only their
hashes and each chunk is made again from the disk when it is sent (agent.image.diskchunks).
The sender runs in a memory cgroup (builder.lab.memlimit), as under a systemd MemoryMax= or
in a container; a PXE-booted sender is the same case with /tmp in its memory."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

import peers
import pytest
from conftest import needs_loop
from peers import HERDCAST, ROOT, herdcast_receiver, logs, used_extents_equal, wait, wait_log

from builder.lab.fsdisk import Part, make_disk
from builder.lab.memlimit import memory_limited
from builder.lab.netlab import NetLab
from builder.lab.vms import LabError

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180), needs_loop]

MiB = 1 << 20
DISK_MIB = 160
# 120 MB of random files: more than half of what the sender's 200 MiB leave it
PARTS = [Part("ext4", 150, {"a": 50_000_000, "b": 40_000_000, "c": 30_000_000})]
LIMIT = 200 * MiB
MADE_AGAIN = "each chunk is made again from the disk when it is sent"


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diskchunks") / "src.img"
    make_disk(path, DISK_MIB, PARTS)
    return path


def junk(path: Path) -> Path:
    return peers.junk(path, DISK_MIB * MiB)


@contextlib.contextmanager
def sender_memory(name: str):
    """A 200 MiB memory cgroup for the sender; the test is skipped, saying so, on a machine
    where none can be made (no memory controller, or none delegated to us)."""
    with contextlib.ExitStack() as stack:
        try:
            limited = stack.enter_context(memory_limited(LIMIT, name))
        except LabError as exc:
            pytest.skip(f"{exc.what}: {exc.fix}")
        yield limited


def limited_sender(host, log: Path, limited, *args: str) -> subprocess.Popen:
    """`herdcast send` in `host` and the memory cgroup `limited` (builder.lab.memlimit)."""
    argv = [*HERDCAST, "send", "--nokbd", "--no-progress", "--interface", "eth0", *args]
    return host.popen(limited.argv(argv), cwd=ROOT, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def test_a_disk_bigger_than_the_senders_memory_is_sent_from_the_disk_itself(disk, tmp_path):
    outs = [junk(tmp_path / f"out{i}.img") for i in (1, 2)]
    with NetLab(3, net=251) as lab, sender_memory(f"hctest{id(tmp_path)}") as limited:
        h0, h1, h2 = lab.hosts
        rx = [herdcast_receiver(h, out, tmp_path / f"rcv{i}.log")
              for i, (h, out) in enumerate(zip((h1, h2), outs, strict=True), 1)]
        time.sleep(0.3)
        snd = limited_sender(h0, tmp_path / "send.log", limited, "-f", str(disk),
                             "--min-receivers", "2")
        rcs = [wait(snd, 120)] + [wait(r, 30) for r in rx]
    log = logs(tmp_path)
    assert rcs == [0, 0, 0], log
    sent = (tmp_path / "send.log").read_text()
    assert MADE_AGAIN in sent, log
    assert len(re.findall(r"done: .* digest agreed", sent)) == 2, log
    assert all(used_extents_equal(disk, out) for out in outs)


def test_a_disk_changed_after_its_pass_stops_the_send_with_why(disk, tmp_path):
    src = tmp_path / "changing.img"
    src.write_bytes(disk.read_bytes())
    out = junk(tmp_path / "out.img")
    with NetLab(2, net=252) as lab, sender_memory(f"hctest{id(tmp_path)}") as limited:
        h0, h1 = lab.hosts
        h0.shape("100mbit")
        rcv = herdcast_receiver(h1, out, tmp_path / "rcv.log")
        time.sleep(0.3)
        snd = limited_sender(h0, tmp_path / "send.log", limited, "-f", str(src),
                             "--min-receivers", "1")
        wait_log(tmp_path / "send.log", "chunk carousel to")
        # the last file's bytes, sent last, are not what the pass hashed any more
        from agent.image.usedmap import used_map

        last = used_map(str(src)).extents[-1]
        with open(src, "r+b") as f:
            f.seek(last.offset)
            f.write(b"\xa5" * min(last.length, 1 << 20))
        # the receiver is told why at once (HC_STOP), not after its 30 s of silence
        rcs = [wait(snd, 90), wait(rcv, 10)]
    log = logs(tmp_path)
    assert rcs[0] not in (0, "timeout") and rcs[1] not in (0, "timeout"), log
    said = [line for line in (tmp_path / "send.log").read_text().splitlines()
            if "disk changed while it was being sent" in line]
    assert len(said) == 1 and "read-only" in said[0], log
    told = (tmp_path / "rcv.log").read_text()
    assert re.search(r"the sender stopped: chunk \d+ of .* the disk changed", told), log
