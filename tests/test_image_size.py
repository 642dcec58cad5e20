"""herdcast's image-size extension: a herdcast sender tells herdcast receivers the image
size in CONNECT_REPLY, and a receiver refuses a disk too small for it before writing."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import needs_loop

from builder.lab.loopdev import loop_device

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


@needs_loop
def test_receiver_refuses_a_too_small_disk_before_writing(lab3, herdcast_argv, tmp_path):
    sender, small_host, big_host = lab3.hosts
    src = tmp_path / "image"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    small = tmp_path / "small.img"
    small.write_bytes(b"\xa5" * (1024 * 1024))
    before = small.read_bytes()
    out = tmp_path / "big.out"
    with loop_device(small) as dev:
        receivers = [
            small_host.popen([*herdcast_argv, "receive", "--nokbd", "--no-progress", "-f", dev,
                              "--start-timeout", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            big_host.popen([*herdcast_argv, "receive", "--nokbd", "--no-progress", "-f",
                            str(out), "--start-timeout", "30"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        ]
        report = tmp_path / "report.json"
        send = sender.popen([*herdcast_argv, "send", "--nokbd", "--no-progress", "-f",
                             str(src), "--min-receivers", "2", "--max-wait", "3",
                             "--retries-until-drop", "10", "--report", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, small_err = receivers[0].communicate(timeout=60)
        receivers[1].communicate(timeout=60)
        send_out, send_err = send.communicate(timeout=60)
    assert receivers[0].returncode != 0
    assert "smaller than the image" in small_err, small_err
    assert str(3 * 1024 * 1024 + 1) in small_err
    assert small.read_bytes() == before  # nothing written
    assert receivers[1].returncode == 0
    assert out.read_bytes() == src.read_bytes()
    # The sender learns why (HC_FAIL): its log line, final table and report say it, and
    # the send fails (one of two receivers has no image).
    small_ip = small_host.ip
    reason = f"disk {dev}: 1048576 bytes is smaller than the image"
    assert send.returncode == 1, send_err
    line = [x for x in send_err.splitlines() if f"receiver {small_ip}" in x and "failed" in x]
    assert line and reason in line[0] and "disconnected" not in line[0], send_err
    row = [x for x in send_err.splitlines() if x.strip().startswith(small_ip)]
    assert row and f"FAILED ({reason}" in row[0], send_err
    import json

    doc = json.loads(report.read_text())
    (rec,) = [r for r in doc["receivers"] if r["address"] == small_ip]
    assert rec["verdict"] == "failed" and rec["reason"].startswith(reason)
