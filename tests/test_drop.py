"""A dead receiver costs the others seconds; a slow one is never dropped. Default options
only (--min-receivers just says how many to wait for): the defaults are what is tested.

udpcast drops a receiver after --retries-until-drop 200 unanswered rounds, minutes in which
every other receiver waits. herdcast also drops one that answered nothing for --drop-after
seconds (5 by default) while asked, and its receiver keeps answering while its disk stalls.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from peers import herdcast_receiver, herdcast_sender, logs, make_source, sha, wait

from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]


def _wait_size(path: Path, size: int, tmp_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size < size:
        assert time.monotonic() < deadline, logs(tmp_path)
        time.sleep(0.02)


def _cut_link(host) -> None:
    """Pull the cable: every packet in or out of the host dropped."""
    host.run("nft", "add table inet hccut")
    for hook in ("input", "output"):
        host.run("nft", f"add chain inet hccut {hook} {{ type filter hook {hook} priority 0 ; "
                        "policy drop ; }")


@pytest.mark.parametrize("death", ["sigkill", "link-cut"])
def test_a_dead_receiver_is_dropped_within_seconds_and_the_others_finish(tmp_path, death):
    src = make_source(tmp_path, 64 << 20)
    with NetLab(4, net=140 + (death == "link-cut")) as lab:
        outs = [tmp_path / f"out{i}.bin" for i in (1, 2, 3)]
        # The victim (host 2) of a cut link finds the sender gone after --receive-timeout:
        # this test is about the sender dropping it, not about the receiver's default
        # silence (30 s, test_receiver's test_a_sender_silent_mid_transfer_... has it).
        victim_args = ["--receive-timeout", "5"] if death == "link-cut" else []
        procs = [herdcast_receiver(host, out, tmp_path / f"recv{i}.log",
                                   *(victim_args if i == 2 else []))
                 for i, (host, out) in enumerate(zip(lab.hosts[1:], outs, strict=True), 1)]
        time.sleep(0.5)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "3", "-f", str(src))
        _wait_size(outs[1], 8 << 20, tmp_path)
        victim = lab.hosts[2]
        if death == "sigkill":
            os.kill(procs[1].pid, signal.SIGKILL)  # ip netns exec execs: this is the receiver
        else:
            _cut_link(victim)
        died = time.monotonic()
        rc = wait(snd, 60)
        after = time.monotonic() - died
        rcs = [wait(procs[0], 30), wait(procs[2], 30)]
        if death == "link-cut":
            assert wait(procs[1], 60) == 1  # it finds the sender gone, never SUCCESS
            assert "mid-transfer" in (tmp_path / "recv2.log").read_text(), logs(tmp_path)
    log = slog.read_text()
    assert rc == 1, logs(tmp_path)  # a dropped receiver fails the send's verdict
    assert rcs == [0, 0], logs(tmp_path)
    assert sha(outs[0]) == sha(outs[2]) == sha(src)
    dropped = [line for line in log.splitlines() if "DROPPED" in line]
    assert len(dropped) == 1 and victim.ip in dropped[0], log
    m = re.search(rf"dropping receiver {re.escape(victim.ip)}: no answer for ([\d.]+) s", log)
    assert m and float(m.group(1)) < 10, log
    assert after < 30, f"the sender took {after:.1f} s after the death\n{log}"


SLOW_PIPE = """
import sys, time
seen, stalled = 0, False
while True:
    chunk = sys.stdin.buffer.read(1 << 16)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
    seen += len(chunk)
    if not stalled and seen >= 2 << 20:
        stalled = True
        sys.stdout.buffer.flush()
        time.sleep(STALL)  # the disk stalls far longer than --drop-after
    elif seen < 8 << 20:
        time.sleep(0.01)  # then crawls: ~6 MB/s
"""


def test_a_receiver_whose_disk_stalls_is_slow_not_dead(tmp_path):
    """A receiver whose output stops taking data for twice --drop-after, then crawls, is
    waited for: it keeps answering, and ends with the same bytes as the fast one."""
    src = make_source(tmp_path, 24 << 20)
    script = tmp_path / "slowdisk.py"
    script.write_text("STALL = 12\n" + SLOW_PIPE)
    with NetLab(3, net=142) as lab:
        fast, slow = tmp_path / "fast.bin", tmp_path / "slow.bin"
        procs = [herdcast_receiver(lab.hosts[1], fast, tmp_path / "fast.log"),
                 herdcast_receiver(lab.hosts[2], slow, tmp_path / "slow.log", "--pipe",
                                   f"{sys.executable} {script}")]
        time.sleep(0.5)
        slog = tmp_path / "send.log"
        t0 = time.monotonic()
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "2", "-f", str(src))
        rc = wait(snd, 120)
        elapsed = time.monotonic() - t0
        rcs = [wait(p, 30) for p in procs]
    log = logs(tmp_path)
    assert rc == 0 and rcs == [0, 0], log
    assert "dropping" not in log and "DROPPED" not in log
    assert elapsed > 12  # it really stalled longer than --drop-after
    assert sha(fast) == sha(slow) == sha(src)
