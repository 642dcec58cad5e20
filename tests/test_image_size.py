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
        send = sender.popen([*herdcast_argv, "send", "--nokbd", "--no-progress", "-f",
                             str(src), "--min-receivers", "2", "--max-wait", "3",
                             "--retries-until-drop", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, small_err = receivers[0].communicate(timeout=60)
        receivers[1].communicate(timeout=60)
        send.communicate(timeout=60)
    assert receivers[0].returncode != 0
    assert "smaller than the image" in small_err, small_err
    assert str(3 * 1024 * 1024 + 1) in small_err
    assert small.read_bytes() == before  # nothing written
    assert receivers[1].returncode == 0
    assert out.read_bytes() == src.read_bytes()
    # The sender's exit code is not asserted: the refusal reaches it before the start (the
    # receiver just leaves) or after (it is dropped), and either way the big one finishes.
