"""`herdcast send --serve` in namespaces: no --min-receivers, receivers booting at any time.

The sender serves until SIGTERM; receivers start seconds apart, some while a round is
sending data, one while it is idle, one of them Debian's stock udp-receiver (served in the
next round: udpcast's protocol has no way to tell it it came late). Every output must equal
the source, the report must list every receiver with its round and validate against the
documented schema, and the events must tell the story in order.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from peers import (
    HERDCAST,
    ROOT,
    herdcast_receiver,
    herdcast_sender,
    make_source,
    sha,
    stock_receiver,
)

from agent.transfer.send.jsonreport import validate
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]


def wait(proc: subprocess.Popen, timeout: float):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"


def logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(tmp_path.glob("*.log")))


def grow_past(path: Path, size: int, timeout: float = 20) -> None:
    """Wait until `path` holds more than `size` bytes (data has begun)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never grew past {size} bytes")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_serve_receivers_booting_at_any_time_all_get_the_image(tmp_path):
    src = make_source(tmp_path, 4_000_001)
    stock = shutil.which("udp-receiver") is not None
    report, events = tmp_path / "report.json", tmp_path / "events.jsonl"
    with NetLab(6, net=120) as lab:
        h = lab.hosts
        snd = herdcast_sender(h[0], tmp_path / "send.log", "--serve", "-f", str(src),
                              "--max-bitrate", "8m", "--report", str(report),
                              "--events", str(events))
        time.sleep(0.5)
        outs = {i: tmp_path / f"out{i}.bin" for i in range(1, 6)}
        procs = {1: herdcast_receiver(h[1], outs[1], tmp_path / "r1.log")}
        grow_past(outs[1], 300_000)  # round 0 is sending data: these two come late
        procs[2] = herdcast_receiver(h[2], outs[2], tmp_path / "r2.log")
        if stock:
            procs[5] = stock_receiver(h[5], outs[5], tmp_path / "r5.log")
        time.sleep(2)
        procs[3] = herdcast_receiver(h[3], outs[3], tmp_path / "r3.log")
        rcs = {i: wait(p, 60) for i, p in procs.items()}
        assert set(rcs.values()) == {0}, (rcs, logs(tmp_path))
        time.sleep(1.5)  # idle now: it must not spin
        before = cpu_seconds(snd.pid)
        time.sleep(3)
        idle_cpu = cpu_seconds(snd.pid) - before
        procs[4] = herdcast_receiver(h[4], outs[4], tmp_path / "r4.log")  # boots while idle
        assert wait(procs[4], 30) == 0, logs(tmp_path)
        snd.send_signal(signal.SIGTERM)
        rc = wait(snd, 20)
    log = logs(tmp_path)
    assert rc == 0, log
    for i in procs:
        assert sha(outs[i]) == sha(src), (i, log)
    assert idle_cpu < 0.3, f"idle sender used {idle_cpu:.2f} s of CPU in 3 s"

    doc = json.loads(report.read_text())
    assert validate(doc) == [], validate(doc)
    rows = {r["address"]: r for r in doc["receivers"]}
    assert sorted(rows) == sorted(h[i].ip for i in procs), doc
    assert all(r["verdict"] == "ok" for r in rows.values()), doc
    assert rows[h[1].ip]["round"] == 0
    assert rows[h[2].ip]["round"] >= 1 and rows[h[4].ip]["round"] > rows[h[2].ip]["round"]
    assert rows[h[1].ip]["digest"] == doc["session"]["digest"]  # raw rounds: one stream
    assert all(r["mac"] and len(r["mac"]) == 17 for r in rows.values()), doc
    assert doc["session"]["serve"] is True and doc["session"]["ok"] is True
    assert len(doc["rounds"]) >= 3 and doc["session"]["size"] == 4_000_001

    lines = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds.count("round_started") == kinds.count("round_ended") == len(doc["rounds"])
    for ip in rows:
        mine = [e["event"] for e in lines if e.get("address") == ip]
        assert mine[0] == "connected" and "started" in mine and mine[-1] == "finished", mine
    assert kinds[-1] == "session_ended" and lines[-1]["ok"] is True
    text = (tmp_path / "send.log").read_text()
    assert f"receiver {h[2].ip} joined late" in text
    assert f"receiver {h[1].ip}" in text and " done: 4000001 bytes" in text
    assert "SIGTERM: stopping" in text
    # the summary adds up: a line per round, and a total that is their sums
    figures = r"(\d+) bytes in ([\d.]+) s \(([\d.]+) MB/s\), (\d+) packets \((\d+) retransmitted"
    per_round = [tuple(map(float, m[1:])) for m in
                 re.findall(r"herdcast send: round (\d+)[^:\n]*: " + figures, text)]
    total = re.search(r"herdcast send: (\d+) rounds: " + figures, text)
    assert total and len(per_round) == int(total[1]) == len(doc["rounds"]), text[-3000:]
    sums = [sum(col) for col in zip(*per_round, strict=True)]
    assert sums[0] == int(total[2]) == sum(r["bytes"] for r in doc["rounds"])
    assert abs(sums[1] - float(total[3])) <= 0.01 * len(per_round)
    assert (sums[3], sums[4]) == (int(total[5]), int(total[6]))
    assert abs(float(total[4]) - sums[0] / float(total[3]) / 1e6) <= 0.1
    # the final table keeps each receiver's MAC beside its address
    for ip, row in rows.items():
        assert re.search(rf"^  {re.escape(ip)}\s+{row['mac']}\s", text, re.M), text[-3000:]


@pytest.mark.parametrize("columns", [140, 80])
def test_serve_shows_the_live_table_on_a_terminal(tmp_path, columns):
    """On a terminal the default is rich's live table: a row per receiver and its state;
    at 80 columns (a small terminal, a node's console) address and state stay whole."""
    src = make_source(tmp_path, 500_003)
    master, slave = pty.openpty()
    with NetLab(2, net=121) as lab:
        env = dict(os.environ, COLUMNS=str(columns), LINES="40", TERM="xterm")
        snd = lab.hosts[0].popen([*HERDCAST, "send", "--nokbd", "--interface", "eth0",
                                  "--serve", "-f", str(src)], cwd=ROOT, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=slave)
        os.close(slave)
        screen = bytearray()

        def drain() -> None:  # read as a terminal does: a pty nobody reads fills up, and
            # the sender's next redraw blocks (17 KB of table did, SIGINT waiting behind it)
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                screen.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        out = tmp_path / "out.bin"
        rcv = herdcast_receiver(lab.hosts[1], out, tmp_path / "r1.log")
        assert wait(rcv, 30) == 0, logs(tmp_path)
        time.sleep(1)
        snd.send_signal(signal.SIGINT)
        rc = wait(snd, 20)
        reader.join(timeout=10)
        os.close(master)
    text = screen.decode(errors="replace")
    assert rc == 0, text[-3000:]
    assert sha(out) == sha(src)
    wide = ("MAC", "rate") if columns >= 100 else ()
    for word in ("receiver", "state", "ETA", lab.hosts[1].ip, "done", *wide):
        assert word in text, (word, text[-3000:])
    assert "…" not in text, text[-3000:]
    assert "\x1b[" in text  # redrawn in place


def test_serve_stopped_before_anyone_was_imaged_fails(tmp_path):
    """Nothing imaged is no success: exit 1, the report's ok false with the reason."""
    src = make_source(tmp_path, 100_003)
    report = tmp_path / "serve.json"
    with NetLab(1, net=131) as lab:
        snd = herdcast_sender(lab.hosts[0], tmp_path / "send.log", "--serve", "-f", str(src),
                              "--report", str(report))
        deadline = time.monotonic() + 20
        while "announcing to" not in (tmp_path / "send.log").read_text():
            assert time.monotonic() < deadline and snd.poll() is None, logs(tmp_path)
            time.sleep(0.1)
        snd.send_signal(signal.SIGTERM)
        rc = wait(snd, 20)
    text = (tmp_path / "send.log").read_text()
    assert rc == 1, text
    assert "stopped before any receiver was imaged" in text
    doc = json.loads(report.read_text())
    assert doc["session"]["ok"] is False and doc["rounds"] == [] and doc["receivers"] == []
    assert doc["session"]["error"].startswith("stopped before any receiver was imaged")
