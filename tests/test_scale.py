"""100 receivers, each a host of its own (udpcast keys receivers by IP, one per address), in
network namespaces on one bridge: every copy identical, the sender exits 0 and its report
has 100 agreed rows. A small image keeps it to about a minute on two cores: the cost is
starting 100 Python receivers, not the transfer."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from peers import herdcast_receiver, herdcast_sender, make_source, sha

from agent.transfer.send.jsonreport import validate
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]
RECEIVERS = 100


def wait(proc: subprocess.Popen, timeout: float):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"


def test_a_hundred_receivers_get_identical_disks(tmp_path):
    src = make_source(tmp_path, 2_000_003)
    report = tmp_path / "report.json"
    with NetLab(RECEIVERS + 1, net=122) as lab:
        outs, procs = [], []
        for i, host in enumerate(lab.hosts[1:], start=1):
            outs.append(tmp_path / f"out{i}.bin")
            procs.append(herdcast_receiver(host, outs[-1], tmp_path / f"recv{i}.log"))
        slog = tmp_path / "send.log"
        t0 = time.monotonic()
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", str(RECEIVERS),
                              "--max-wait", "90", "-f", str(src), "--report", str(report))
        rc = wait(snd, 180)
        seconds = time.monotonic() - t0
        rcs = [wait(p, 30) for p in procs]
    log = slog.read_text()
    assert rc == 0, log[-4000:]
    failed = [i for i, r in enumerate(rcs, start=1) if r != 0]
    assert not failed, (failed, (tmp_path / f"recv{failed[0]}.log").read_text()[-2000:])
    want = sha(src)
    assert [i for i, out in enumerate(outs, start=1) if sha(out) != want] == []
    doc = json.loads(report.read_text())
    assert validate(doc) == []
    assert len(doc["receivers"]) == RECEIVERS
    assert {r["verdict"] for r in doc["receivers"]} == {"ok"}
    assert len(doc["rounds"]) == 1 and doc["rounds"][0]["receivers"] == RECEIVERS
    print(f"100 receivers: sender ran {seconds:.1f} s; {log.splitlines()[-RECEIVERS - 2]}")
