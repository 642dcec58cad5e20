"""A sender that cuts a transfer tells each herdcast receiver why (HC_STOP): the node stops at
once with the sender's reason on its console, instead of waiting out its silence limit.
(The carousel's case, a disk changed under the sender: test_disk_chunks; a forged HC_STOP is
refused: test_carousel's forger.)"""

from __future__ import annotations

import re
import signal
import time

import pytest
from conftest import needs_loop
from peers import herdcast_receiver, herdcast_sender, logs, make_source, wait

from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120), needs_loop]


@pytest.mark.parametrize("serve", [True, False], ids=["serve-twice", "ctrl-c"])
def test_a_sender_stopped_mid_round_tells_its_receivers_why(tmp_path, serve):
    src = make_source(tmp_path, 40_000_000)  # 3.2 s at 100 Mbit/s: cut after 1 s
    with NetLab(2, net=253) as lab:
        h0, h1 = lab.hosts
        h0.shape("100mbit")
        rcv = herdcast_receiver(h1, tmp_path / "out.bin", tmp_path / "rcv.log")
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(src),
                              *(["--serve"] if serve else ["--min-receivers", "1"]))
        deadline = time.monotonic() + 30
        while "starting" not in (tmp_path / "send.log").read_text():
            assert time.monotonic() < deadline and snd.poll() is None, logs(tmp_path)
            time.sleep(0.05)
        time.sleep(1.0)
        snd.send_signal(signal.SIGINT)  # --serve: stop after this round; else Ctrl-C
        if serve:
            time.sleep(0.3)
            snd.send_signal(signal.SIGINT)  # again: stop now, the round cut
        rcs = [wait(snd, 20), wait(rcv, 10)]  # the receiver's own limit would be 30 s
    log = logs(tmp_path)
    sent = (tmp_path / "send.log").read_text()
    assert not serve or "SIGINT again: stopping now" in sent, log
    assert rcs[0] not in (0, "timeout") and rcs[1] not in (0, "timeout"), log
    assert re.search(r"the sender stopped: it was stopped by a signal",
                     (tmp_path / "rcv.log").read_text()), log
    # its last word is about this run: a plain send is not told to keep serving
    assert "1 of 1 receiver(s) failed" in sent or serve, log
    assert "while it serves" in sent or not serve, log
