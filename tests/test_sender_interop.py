"""`herdcast send` against Debian's stock udp-receiver (and herdcast receive) in namespaces.

Each test starts the receivers first, then the sender with --min-receivers, and checks every
output byte for byte, the sender's exit code and its receivers table. Sizes stay small and
every wait has a timeout, so a hang fails the test instead of holding the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import (
    HERDCAST,
    ODD_SIZE,
    ROOT,
    herdcast_receiver,
    herdcast_sender,
    logs,
    make_source,
    sha,
    stock_receiver,
    wait,
)

from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

needs_udpcast = pytest.mark.skipif(shutil.which("udp-receiver") is None,
                                   reason="Debian package udpcast not installed")




def run_session(lab, tmp_path: Path, src: Path, *send_args: str, herdcast_hosts=(),
                recv_args=()) -> tuple[int, str, list[Path], list[int]]:
    """Receivers on hosts 1.., sender on host 0; returns (sender rc, its log, outputs, rcs)."""
    outs, procs = [], []
    for i, host in enumerate(lab.hosts[1:], start=1):
        out = tmp_path / f"out{i}.bin"
        log = tmp_path / f"recv{i}.log"
        start = herdcast_receiver if i in herdcast_hosts else stock_receiver
        procs.append(start(host, out, log, *recv_args))
        outs.append(out)
    time.sleep(0.3)
    slog = tmp_path / "send.log"
    snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", str(len(outs)), "-f", str(src),
                          *send_args)
    rc = wait(snd)
    # a sender that refused to start leaves the receivers waiting for nothing: don't wait
    rcs = [wait(p, 30 if rc == 0 else 1) for p in procs]
    return rc, logs(tmp_path), outs, rcs


@needs_udpcast
@pytest.mark.parametrize("mode", [[], ["--broadcast"]], ids=["multicast", "broadcast"])
def test_stock_and_herdcast_receivers_get_identical_bytes(tmp_path, mode):
    src = make_source(tmp_path)
    hc = (3,)
    with NetLab(4, net=81) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src, *mode, herdcast_hosts=hc)
    assert rc == 0, log
    assert rcs == [0, 0, 0], log
    for out in outs:
        assert out.stat().st_size == ODD_SIZE
        assert sha(out) == sha(src), out
    assert "complete, no digest (stock receiver)" in log
    assert "Transfer started: first data from the sender" in log  # herdcast's receiver
    if mode:
        assert "data to 10.81.0.255" in log


@needs_udpcast
def test_jumbo_frames_carry_bigger_blocks_to_stock_and_herdcast_receivers(tmp_path):
    """At MTU 9000 the sender fills each frame (8956-byte blocks, a sixth of the packets)
    and stock udp-receiver takes them as well as herdcast's."""
    src = make_source(tmp_path, 3_000_017)
    with NetLab(3, net=103, mtu=9000) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src, herdcast_hosts=(2,))
    assert rc == 0 and rcs == [0, 0], log
    assert "in 8956-byte blocks" in log
    for out in outs:
        assert sha(out) == sha(src), out


@needs_udpcast
def test_a_block_bigger_than_the_mtu_is_refused_with_the_fix(tmp_path):
    src = make_source(tmp_path, 10_000)
    with NetLab(2, net=104) as lab:
        rc, log, _, _ = run_session(lab, tmp_path, src, "--blocksize", "2000")
    assert rc != 0
    assert "--blocksize 2000" in log and "MTU 1500" in log and "--blocksize 1456" in log


@needs_udpcast
def test_single_receiver_gets_data_point_to_point(tmp_path):
    src = make_source(tmp_path, 200_003)
    with NetLab(2, net=82) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src)
    assert rc == 0 and rcs == [0], log
    assert "data to 10.82.0.11" in log
    assert sha(outs[0]) == sha(src)


@needs_udpcast
def test_stock_receiver_unpacks_compressed_stream(tmp_path):
    src = tmp_path / "source.bin"
    src.write_bytes(os.urandom(500_000) + bytes(1_500_001))  # compressible, odd size
    with NetLab(2, net=83) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src, "--compress", "gz",
                                         recv_args=("--pipe", "gzip -dc"))
    assert rc == 0 and rcs == [0], log
    assert sha(outs[0]) == sha(src)


@needs_udpcast
def test_sender_pipe_feeds_the_command_output(tmp_path):
    src = make_source(tmp_path, 400_001)
    with NetLab(2, net=84) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src, "--pipe", "gzip -c -1",
                                         recv_args=("--pipe", "gzip -dc"))
    assert rc == 0 and rcs == [0], log
    assert sha(outs[0]) == sha(src)


@needs_udpcast
def test_five_percent_loss_on_one_link(tmp_path):
    src = make_source(tmp_path, 2_000_001)
    with NetLab(3, net=85) as lab:
        lab.hosts[1].drop_udp(5)
        # the lossy receiver may lose the single HELLO udpcast sends by default: repeat it
        rc, log, outs, rcs = run_session(lab, tmp_path, src, "--rexmit-hello-interval", "200")
    assert rc == 0 and rcs == [0, 0], log
    for out in outs:
        assert sha(out) == sha(src)


@needs_udpcast
def test_thirty_percent_loss_on_every_link(tmp_path):
    src = make_source(tmp_path, 600_001)
    with NetLab(3, net=86) as lab:
        for host in lab.hosts:
            host.drop_udp(30, dport=9000)
        lab.hosts[0].drop_udp(30, dport=9001)
        # a lost HELLO or CONNECT_REQ would stall the start, as with udpcast: repeat HELLO
        rc, log, outs, rcs = run_session(lab, tmp_path, src, "--rexmit-hello-interval", "100")
    assert rc == 0 and rcs == [0, 0], log
    for out in outs:
        assert sha(out) == sha(src)


def test_terminated_receiver_says_disconnect_and_is_dropped_at_once(tmp_path):
    """SIGTERM runs the receiver's Ctrl-C clean-up: it says DISCONNECT, so the sender drops
    it mid-transfer instead of waiting for it, and it exits 143 saying why."""
    src = make_source(tmp_path, 3_000_001)
    with NetLab(3, net=105) as lab:
        outs = [tmp_path / "out1.bin", tmp_path / "out2.bin"]
        rcv = [herdcast_receiver(host, out, tmp_path / f"recv{i}.log")
               for i, (host, out) in enumerate(zip(lab.hosts[1:], outs, strict=True), 1)]
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "2", "-f", str(src),
                              "--max-bitrate", "4m")
        deadline = time.monotonic() + 30
        while not outs[0].exists() or outs[0].stat().st_size == 0:
            assert time.monotonic() < deadline, logs(tmp_path)
            time.sleep(0.1)
        rcv[0].send_signal(signal.SIGTERM)
        assert wait(rcv[0], 10) == 143, logs(tmp_path)
        rc = wait(snd)
        assert wait(rcv[1], 30) == 0, logs(tmp_path)
    log = logs(tmp_path)
    assert "herdcast receive: terminated" in log
    assert "receiver 10.105.0.11 disconnected mid-transfer" in log
    assert rc != 0  # a dropped receiver fails the sender's verdict
    assert sha(outs[1]) == sha(src)


@needs_udpcast
def test_killed_receiver_is_dropped_and_the_rest_finish(tmp_path):
    src = make_source(tmp_path, 6_000_001)
    with NetLab(4, net=87) as lab:
        outs, procs = [], []
        for i, host in enumerate(lab.hosts[1:], start=1):
            outs.append(tmp_path / f"out{i}.bin")
            procs.append(stock_receiver(host, outs[-1], tmp_path / f"recv{i}.log"))
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "3", "-f", str(src),
                              "--max-bitrate", "40m", "--retries-until-drop", "10")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not outs[1].exists()
                                               or outs[1].stat().st_size < 1_000_000):
            time.sleep(0.05)
        os.kill(procs[1].pid, signal.SIGKILL)  # ip netns exec execs: this is udp-receiver
        rc = wait(snd, 60)
        rcs = [wait(procs[0], 30), wait(procs[2], 30)]
    log = slog.read_text()
    assert rc != 0, log
    assert rcs == [0, 0], log
    assert sha(outs[0]) == sha(src) and sha(outs[2]) == sha(src)
    dropped = [line for line in log.splitlines() if "DROPPED" in line]
    assert len(dropped) == 1 and lab.hosts[2].ip in dropped[0], log


@needs_udpcast
def test_garbage_datagrams_do_not_disturb_a_transfer(tmp_path):
    src = make_source(tmp_path, 4_000_001)
    noise = (
        "import os, random, socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
        "r = random.Random(7); end = time.time() + 3\n"
        "while time.time() < end:\n"
        "    n = r.choice([0, 1, 2, 4, 8, 12, 16, 140, 144, 1472, r.randrange(1500)])\n"
        "    d = bytearray(os.urandom(n))\n"
        "    if n >= 2 and r.random() < 0.5:\n"
        "        d[0:2] = r.choice([0, 1, 2, 4, 6, 8, 9, 0x4801]).to_bytes(2, 'big')\n"
        "    if d[:2] == bytes([0, 3]): d[1] = 5  # a well-formed CONNECT_REQ would join\n"
        "    for a in SENDERS: s.sendto(bytes(d), (a, 9001))\n"
        "    time.sleep(0.0005)\n"
    )
    with NetLab(4, net=88) as lab:
        outs, procs = [], []
        for i, host in enumerate(lab.hosts[1:3], start=1):
            outs.append(tmp_path / f"out{i}.bin")
            procs.append(stock_receiver(host, outs[-1], tmp_path / f"recv{i}.log"))
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "2", "-f", str(src),
                              "--max-bitrate", "20m")
        senders = f"SENDERS = [{lab.hosts[0].ip!r}, '10.88.0.255']\n"
        deadline = time.monotonic() + 20  # garbage during the transfer, not the negotiation
        while time.monotonic() < deadline and "starting" not in slog.read_text():
            time.sleep(0.02)
        junk = lab.hosts[3].popen([sys.executable, "-c", senders + noise])
        rc = wait(snd)
        rcs = [wait(p, 30) for p in procs]
        wait(junk, 10)
    log = slog.read_text()
    assert rc == 0 and rcs == [0, 0], log
    for out in outs:
        assert sha(out) == sha(src)


def test_start_timeout_without_receivers_fails_clearly(tmp_path):
    src = make_source(tmp_path, 1000)
    with NetLab(1, net=89) as lab:
        slog = tmp_path / "send.log"
        t0 = time.monotonic()
        rc = wait(herdcast_sender(lab.hosts[0], slog, "--min-receivers", "1",
                                  "--start-timeout", "1", "-f", str(src)), 20)
        elapsed = time.monotonic() - t0
    log = slog.read_text()
    assert rc == 1, log
    assert "--start-timeout" in log and "herdcast send:" in log
    assert elapsed < 10


@pytest.mark.parametrize("args, word", [
    (["--rate-governor", "x.so"], "--rate-governor"),
    (["--streaming"], "--streaming"),
])
def test_unsupported_options_fail_clearly(tmp_path, args, word):
    src = make_source(tmp_path, 1000)
    with NetLab(1, net=90) as lab:
        proc = lab.hosts[0].run(*HERDCAST, "send", "--nokbd", "-f", str(src), *args,
                                check=False, timeout=20)
    assert proc.returncode in (1, 2)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and word in lines[-1] and "not supported" in lines[-1], proc.stderr


def test_digest_table_agreed_with_herdcast_receivers(tmp_path):
    src = make_source(tmp_path, 1_000_003)
    with NetLab(3, net=92) as lab:
        rc, log, outs, rcs = run_session(lab, tmp_path, src, herdcast_hosts=(1, 2))
    assert rc == 0 and rcs == [0, 0], log
    rows = [line for line in log.splitlines() if line.strip().startswith("10.92.0.")]
    assert len(rows) == 2 and all("digest agreed" in row for row in rows), log
    assert all(" 1000003 " in row for row in rows), log
    for out in outs:
        assert sha(out) == sha(src)


def _a_round_and_a_late_receiver(lab, tmp_path: Path, src: Path):
    """A sender at 8 Mbit/s to one receiver, and a second receiver started once the first
    has 500 kB (so it asks while round 0 runs). Returns (sender, its log, first, late)
    processes and the late one's output."""
    first, late = tmp_path / "first.bin", tmp_path / "late.bin"
    p1 = herdcast_receiver(lab.hosts[1], first, tmp_path / "r1.log")
    time.sleep(0.3)
    slog = tmp_path / "send.log"
    snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "1", "-f", str(src),
                          "--max-bitrate", "8m")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not first.exists()
                                           or first.stat().st_size < 500_000):
        time.sleep(0.05)
    assert first.exists() and first.stat().st_size < src.stat().st_size, "started too late"
    p2 = herdcast_receiver(lab.hosts[2], late, tmp_path / "r2.log", "--start-timeout", "30")
    return snd, slog, p1, p2, late


def test_late_receiver_gets_the_whole_image_in_the_next_round(tmp_path):
    src = make_source(tmp_path, 4_000_001)
    with NetLab(3, net=93) as lab:
        snd, slog, p1, p2, late = _a_round_and_a_late_receiver(lab, tmp_path, src)
        rc = wait(snd, 60)
        rcs = [wait(p1, 30), wait(p2, 30)]
    log = slog.read_text()
    assert rc == 0 and rcs == [0, 0], log + (tmp_path / "r2.log").read_text()
    assert "another round" in log
    assert sha(tmp_path / "first.bin") == sha(src) and sha(late) == sha(src)


def test_a_late_round_whose_receiver_leaves_fails_that_receiver_not_the_first_round(tmp_path):
    """The only receiver of a late round leaves in the middle of it: the sender's verdict
    names that receiver as the one that failed; it does not say that every receiver was
    dropped before the end, when the first round's receiver has its image."""
    src = make_source(tmp_path, 4_000_001)
    with NetLab(3, net=96) as lab:
        snd, slog, p1, p2, late = _a_round_and_a_late_receiver(lab, tmp_path, src)
        deadline = time.monotonic() + 40
        while not late.exists() or late.stat().st_size < 500_000:
            assert time.monotonic() < deadline, logs(tmp_path)
            time.sleep(0.05)
        p2.send_signal(signal.SIGTERM)
        assert wait(p2, 10) == 143, logs(tmp_path)
        rc, rc1 = wait(snd, 60), wait(p1, 30)
    log = slog.read_text()
    assert rc1 == 0 and sha(tmp_path / "first.bin") == sha(src), logs(tmp_path)
    assert rc == 1, log
    assert "every receiver was dropped" not in log, log
    assert "1 of 2 receiver(s) failed: 10.96.0.12 disconnected mid-transfer" in log, log


def test_late_receiver_is_told_it_missed_when_the_input_cannot_be_reread(tmp_path):
    """The image comes down a pipe (stdin): a receiver that asks once data flows is told it
    missed the start. The test holds the rest of the image back until the late receiver has
    had its answer, so the transfer is still running however slow its start."""
    src = make_source(tmp_path, 3_000_001)
    data = src.read_bytes()
    with NetLab(3, net=94) as lab:
        first, late = tmp_path / "first.bin", tmp_path / "late.bin"
        p1 = herdcast_receiver(lab.hosts[1], first, tmp_path / "r1.log")
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = lab.hosts[0].popen([*HERDCAST, "send", "--nokbd", "--no-progress", "--interface",
                                  "eth0", "--min-receivers", "1"], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=slog.open("wb"))
        try:
            snd.stdin.write(data[:1_000_000])  # returns once the sender has read most of it
            snd.stdin.flush()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and b"starting (" not in slog.read_bytes():
                time.sleep(0.05)
            p2 = herdcast_receiver(lab.hosts[2], late, tmp_path / "r2.log",
                                   "--start-timeout", "30")
            rc2 = wait(p2, 30)
            snd.stdin.write(data[1_000_000:])
        finally:
            snd.stdin.close()
        rc = wait(snd, 60)
        rc1 = wait(p1, 30)
    assert rc == 0 and rc1 == 0, slog.read_text()
    assert rc2 == 1
    assert "restart the sender" in (tmp_path / "r2.log").read_text()
    assert sha(first) == sha(src)


@needs_udpcast
def test_fec_blocks_repair_losses_for_stock_and_herdcast_receivers(tmp_path):
    src = make_source(tmp_path, 2_500_001)
    hc = (2,)
    with NetLab(3, net=98) as lab:
        lab.hosts[1].drop_udp(3)
        rc, log, outs, rcs = run_session(lab, tmp_path, src, "--fec", "8x4/128",
                                         "--rexmit-hello-interval", "200", herdcast_hosts=hc)
    assert rc == 0 and rcs == [0, 0], log
    for out in outs:
        assert sha(out) == sha(src)
    assert "FEC" in log


@needs_udpcast
def test_go_from_any_host_starts_the_transfer(tmp_path):
    src = make_source(tmp_path, 300_001)
    with NetLab(3, net=99) as lab:
        out = tmp_path / "out1.bin"
        rcv = stock_receiver(lab.hosts[1], out, tmp_path / "recv1.log")
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "-f", str(src), "--start-timeout", "20")
        time.sleep(1.0)
        assert snd.poll() is None, "started without a trigger"
        assert not out.exists() or out.stat().st_size == 0
        go = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              f"s.sendto(bytes([0, 2, 0, 0]), ({lab.hosts[0].ip!r}, 9001))")
        lab.hosts[2].run(sys.executable, "-c", go)
        rc, rrc = wait(snd, 30), wait(rcv, 30)
    assert rc == 0 and rrc == 0, logs(tmp_path)
    assert "starting (GO)" in logs(tmp_path)
    assert sha(out) == sha(src)


@needs_udpcast
def test_autostart_and_half_duplex(tmp_path):
    src = make_source(tmp_path, 1_500_001)
    with NetLab(2, net=100) as lab:
        out = tmp_path / "out1.bin"
        rcv = stock_receiver(lab.hosts[1], out, tmp_path / "recv1.log")
        time.sleep(0.3)
        snd = herdcast_sender(lab.hosts[0], tmp_path / "send.log", "-f", str(src),
                              "--autostart", "1", "--half-duplex",
                              "--rexmit-hello-interval", "300")
        rc, rrc = wait(snd, 30), wait(rcv, 30)
    assert rc == 0 and rrc == 0, logs(tmp_path)
    assert "starting (--autostart)" in logs(tmp_path)
    assert sha(out) == sha(src)


@needs_udpcast
def test_input_from_stdin(tmp_path):
    src = make_source(tmp_path, 700_001)
    with NetLab(2, net=101) as lab:
        out = tmp_path / "out1.bin"
        rcv = stock_receiver(lab.hosts[1], out, tmp_path / "recv1.log")
        time.sleep(0.3)
        with src.open("rb") as stdin:
            snd = lab.hosts[0].popen([*HERDCAST, "send", "--nokbd", "--no-progress",
                                      "--interface", "eth0", "--min-receivers", "1"],
                                     cwd=ROOT, stdin=stdin, stdout=subprocess.DEVNULL,
                                     stderr=(tmp_path / "send.log").open("wb"))
            rc, rrc = wait(snd, 30), wait(rcv, 30)
    assert rc == 0 and rrc == 0, logs(tmp_path)
    assert sha(out) == sha(src)


@needs_udpcast
def test_async_with_fec_reaches_passive_stock_receivers(tmp_path):
    src = make_source(tmp_path, 1_200_001)
    with NetLab(3, net=102) as lab:
        outs, procs = [], []
        for i, host in enumerate(lab.hosts[1:], start=1):
            outs.append(tmp_path / f"out{i}.bin")
            procs.append(stock_receiver(host, outs[-1], tmp_path / f"recv{i}.log"))
        time.sleep(0.3)
        snd = herdcast_sender(lab.hosts[0], tmp_path / "send.log", "-f", str(src), "--async",
                              "--max-bitrate", "100m", "--fec", "8x8/128", "--autostart", "5",
                              "--rexmit-hello-interval", "200")
        rc = wait(snd, 30)
        rcs = [wait(p, 30) for p in procs]
    assert rc == 0 and rcs == [0, 0], logs(tmp_path)
    for out in outs:
        assert sha(out) == sha(src)


@needs_udpcast
def test_a_stock_receiver_not_heard_for_six_seconds_at_the_start_is_not_dropped(tmp_path):
    """The CI flake of test_thirty_percent_loss_on_every_link: a stock udp-receiver whose
    first REQACKs were all lost was dropped once --drop-after's 5 s passed, after as few as
    five requests, though heavy loss explains that many. Here every REQACK to it is lost for
    its first 6 s: it is waited for (a receiver never heard from must miss about 14 requests
    in a row), answers once they get through, and gets the image."""
    src = make_source(tmp_path, 600_001)
    with NetLab(3, net=238) as lab:
        stock = lab.hosts[1]
        stock.run("nft", "add table inet hcmute")
        stock.run("nft", "add chain inet hcmute input { type filter hook input priority 0 ; }")
        stock.run("nft", "add rule inet hcmute input udp dport 9000 @th,64,16 0x0006 drop")
        outs = [tmp_path / "out1.bin", tmp_path / "out2.bin"]
        procs = [stock_receiver(stock, outs[0], tmp_path / "recv1.log"),
                 herdcast_receiver(lab.hosts[2], outs[1], tmp_path / "recv2.log")]
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(lab.hosts[0], slog, "--min-receivers", "2", "-f", str(src))
        deadline = time.monotonic() + 20
        while "starting" not in slog.read_text():
            assert time.monotonic() < deadline, logs(tmp_path)
            time.sleep(0.05)
        time.sleep(6)
        stock.run("nft", "delete table inet hcmute")
        rc = wait(snd)
        rcs = [wait(p, 30) for p in procs]
    log = logs(tmp_path)
    assert rc == 0 and rcs == [0, 0], log
    assert "dropping" not in log
    for out in outs:
        assert sha(out) == sha(src)


def test_a_shaper_on_the_senders_link_drops_nothing(tmp_path):
    """The sender holds its link's rate (a tbf shaper here, 200 Mbit/s) instead of its
    pacer's first guess: nothing queues past the shaper's limit, so the shaper drops no
    packet, and nothing needs retransmitting on its account."""
    src = make_source(tmp_path, 16_000_001)
    with NetLab(3, net=245) as lab:
        lab.hosts[0].shape("200mbit")
        rc, text, outs, rcs = run_session(lab, tmp_path, src, herdcast_hosts=(1, 2))
        stats = lab.hosts[0].run("tc", "-s", "qdisc", "show", "dev", "eth0").stdout
    assert rc == 0 and rcs == [0, 0], text
    assert sha(outs[0]) == sha(outs[1]) == sha(src)
    assert "(dropped 0," in stats, stats
