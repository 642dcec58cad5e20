"""`herdcast receive` against Debian's stock udp-sender (and beside stock udp-receiver), in
network namespaces; plus herdcast-to-herdcast extensions (digest table, late join).

Receivers start first, then the sender with --min-receivers. Every wait has a timeout and
NetLab kills whatever is left at the end, so a hang fails a test instead of holding the run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import (
    ODD_SIZE,
    herdcast_receiver,
    herdcast_sender,
    make_source,
    sha,
    stock_receiver,
    stock_sender,
)

from agent.udpcast.protocol import Op
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150),
              pytest.mark.skipif(shutil.which("udp-sender") is None,
                                 reason="Debian package udpcast not installed")]

def wait(proc: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.args} did not finish in {timeout} s; log:\n{log.read_text()}")


def settle(*logs: Path) -> None:
    """Let receivers bind and send their CONNECT_REQ before the sender starts: each says
    "UDP receiver for ..." (herdcast's and udp-receiver alike) once its sockets are open,
    its first CONNECT_REQ right after; waited for (at most 10 s), then a moment more."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            log.exists() and b"UDP receiver for" in log.read_bytes() for log in logs):
        time.sleep(0.05)
    time.sleep(0.2)


def start_receivers(tmp_path: Path, *specs) -> tuple[list[Path], list[Path], list]:
    """Start one receiver per spec `(launcher, host, name, *extra args)`, writing NAME.bin
    and logging to NAME.log, then let them settle; returns (outputs, logs, processes)."""
    outs, logs, procs = [], [], []
    for launcher, host, name, *extra in specs:
        outs.append(tmp_path / f"{name}.bin")
        logs.append(tmp_path / f"{name}.log")
        procs.append(launcher(host, outs[-1], logs[-1], *extra))
    settle(*logs)
    return outs, logs, procs


def finish(snd: subprocess.Popen, slog: Path, procs: list, logs: list[Path],
           sender_timeout: float = 60, receiver_timeout: float = 20) -> None:
    """The sender, then every receiver, must exit 0 in time; a failure shows its log."""
    assert wait(snd, slog, sender_timeout) == 0, slog.read_text()
    for proc, log in zip(procs, logs, strict=True):
        assert wait(proc, log, receiver_timeout) == 0, log.read_text()


def _wait_for_bytes(path: Path, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size == 0:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.mark.parametrize("mode,both", [([], []), (["--broadcast"], []), ([], ["--ttl", "2"])],
                         ids=["multicast", "broadcast", "ttl2-rdv-224.0.0.1"])
def test_stock_sender_feeds_herdcast_and_stock_receivers(tmp_path, mode, both):
    src = make_source(tmp_path)
    with NetLab(4, net=81) as lab:
        h0, h1, h2, h3 = lab.hosts
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "r0", *both), (herdcast_receiver, h2, "r1", *both),
            (stock_receiver, h3, "r2", *both))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "3", *mode, *both)
        finish(snd, slog, receivers, logs)
    for out in outs:
        assert out.stat().st_size == ODD_SIZE
        assert sha(out) == sha(src)
    text = logs[0].read_text()
    assert "Transfer complete" in text and sha(src) in text  # herdcast prints the sha256
    assert "Transfer complete" in slog.read_text()


@pytest.mark.parametrize("fec", ["8x8/128", None], ids=["fec", "nofec"])
def test_five_percent_loss_on_one_receiver(tmp_path, fec):
    src = make_source(tmp_path)
    with NetLab(3, net=82) as lab:
        h0, h1, h2 = lab.hosts
        h1.drop_udp(5)
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "lossy"), (herdcast_receiver, h2, "clean"))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "2",
                           *(["--fec", fec] if fec else []))
        finish(snd, slog, receivers, logs)
    assert sha(outs[0]) == sha(outs[1]) == sha(src)


def test_async_fec_alone_repairs_loss(tmp_path):
    """No return channel: only FEC packets can fill the 5% holes."""
    src = make_source(tmp_path, 1_000_003)
    with NetLab(2, net=83) as lab:
        h0, h1 = lab.hosts
        h1.drop_udp(5)
        (out,), logs, receivers = start_receivers(tmp_path, (herdcast_receiver, h1, "out"))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--async", "--max-bitrate", "20m", "--fec",
                           "8x16/64", "--autostart", "2")
        finish(snd, slog, receivers, logs)
    assert sha(out) == sha(src)


GARBAGE = r"""
import os, random, socket, sys, time
targets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("0.0.0.0", 9001))  # the sender's port, to get past the port filter
rng = random.Random(5)
end = time.monotonic() + 8
while time.monotonic() < end:
    size = rng.choice([0, 1, 2, 3, 4, 8, 12, 16, 17, 28, 32, 140, 144, 1472, rng.randint(0, 1472)])
    data = bytearray(os.urandom(size))
    if size >= 2 and rng.random() < 0.7:
        op = rng.choice([0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 0x500, 0x4801, 0x4802, 0x4803])
        data[0:2] = op.to_bytes(2, "big")
    for t in targets:
        try:
            s.sendto(bytes(data), (t, 9000))
        except OSError:
            pass
    time.sleep(0.001)
"""


def test_garbage_datagrams_do_not_break_a_transfer(tmp_path):
    src = make_source(tmp_path)
    with NetLab(4, net=84) as lab:
        h0, h1, h2, h3 = lab.hosts
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "a"), (herdcast_receiver, h2, "b"))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "2", "--max-bitrate", "10m")
        _wait_for_bytes(outs[0], logs[0])
        junk = h3.popen([sys.executable, "-c", GARBAGE, h1.ip, h2.ip, "10.84.0.255",
                         "234.84.0.10"], stderr=subprocess.DEVNULL)
        finish(snd, slog, receivers, logs)
        assert junk.poll() is None, "the garbage generator should still be running"
    assert sha(outs[0]) == sha(outs[1]) == sha(src)


def test_killed_sender_makes_the_receiver_fail_clearly(tmp_path):
    src = make_source(tmp_path, 6_000_001)
    with NetLab(2, net=85) as lab:
        h0, h1 = lab.hosts
        out, log = tmp_path / "out.bin", tmp_path / "r.log"
        rcv = herdcast_receiver(h1, out, log, "--receive-timeout", "3")
        settle(log)
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "1", "--max-bitrate", "8m")
        deadline = time.monotonic() + 20
        while out.exists() is False or out.stat().st_size == 0:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        snd.kill()
        killed = time.monotonic()
        rc = wait(rcv, log, 15)
        elapsed = time.monotonic() - killed
    text = log.read_text()
    assert rc == 1, text
    assert "herdcast receive:" in text and "mid-transfer" in text and "incomplete" in text
    assert elapsed < 10


def test_receiver_started_after_a_stock_sender_says_it_missed_the_start(tmp_path):
    src = make_source(tmp_path, 6_000_001)
    with NetLab(3, net=86) as lab:
        h0, h1, h2 = lab.hosts
        first = stock_receiver(h1, tmp_path / "first.bin", tmp_path / "first.log")
        settle(tmp_path / "first.log")
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "1", "--broadcast",
                           "--max-bitrate", "8m")
        deadline = time.monotonic() + 20
        first_out = tmp_path / "first.bin"
        while not first_out.exists() or first_out.stat().st_size == 0:
            assert time.monotonic() < deadline, slog.read_text()
            time.sleep(0.1)
        late_out, late_log = tmp_path / "late.bin", tmp_path / "late.log"
        late = herdcast_receiver(h2, late_out, late_log)
        rc = wait(late, late_log, 15)
        assert wait(snd, slog, 30) == 0
        assert wait(first, tmp_path / "first.log", 20) == 0
    text = late_log.read_text()
    assert rc == 1, text
    assert "missed" in text and "start" in text
    assert not late_out.exists() or late_out.stat().st_size == 0  # never a partial image


# --- herdcast receive with herdcast send: the capability-gated extensions -------------


def test_herdcast_pair_confirms_digests_in_the_senders_table(tmp_path):
    src = make_source(tmp_path)
    with NetLab(3, net=87) as lab:
        h0, h1, h2 = lab.hosts
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "a"), (herdcast_receiver, h2, "b"))
        slog = tmp_path / "sender.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "2")
        finish(snd, slog, receivers, logs)
    assert sha(outs[0]) == sha(outs[1]) == sha(src)
    table = slog.read_text()
    for host in (h1, h2):
        row = next(line for line in table.splitlines() if host.ip in line and "digest" in line)
        assert "agreed" in row and str(ODD_SIZE) in row


def _late_join(lab, tmp_path: Path, src: Path, *send_args: str, late_wait: float = 20):
    """h1 receives from the start of a slow herdcast send on h0, h2 joins once data flows.
    Returns (late receiver's rc, its output, its log, the first receiver's output)."""
    h0, h1, h2 = lab.hosts
    first_out, first_log = tmp_path / "first.bin", tmp_path / "first.log"
    first = herdcast_receiver(h1, first_out, first_log)
    settle(first_log)
    slog = tmp_path / "sender.log"
    snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "1", "--max-bitrate",
                          "16m", *send_args)
    _wait_for_bytes(first_out, first_log)
    late_out, late_log = tmp_path / "late.bin", tmp_path / "late.log"
    late = herdcast_receiver(h2, late_out, late_log)
    rc = wait(late, late_log, late_wait)
    assert wait(snd, slog, 60) == 0, slog.read_text()
    assert wait(first, first_log, 20) == 0, first_log.read_text()
    return rc, late_out, late_log, first_out


@pytest.mark.parametrize("mode", [[], ["--broadcast"]], ids=["multicast", "broadcast"])
def test_late_receiver_gets_the_whole_image_in_a_next_round(tmp_path, mode):
    src = make_source(tmp_path, 4_000_001)
    with NetLab(3, net=88) as lab:
        rc, late_out, late_log, first_out = _late_join(lab, tmp_path, src, *mode)
    assert rc == 0, late_log.read_text()
    assert "joined late: waiting for the next round" in late_log.read_text()
    assert sha(first_out) == sha(late_out) == sha(src)


def test_late_receiver_told_clearly_when_no_next_round(tmp_path):
    src = make_source(tmp_path, 4_000_001)
    with NetLab(3, net=89) as lab:
        rc, late_out, late_log, _ = _late_join(lab, tmp_path, src, "--no-late-join",
                                               late_wait=15)
    text = late_log.read_text()
    assert rc == 1, text
    assert "herdcast receive: the transfer started without this receiver" in text
    assert not late_out.exists() or late_out.stat().st_size == 0


def test_thirty_percent_loss_on_every_link_from_a_stock_sender(tmp_path):
    """A lost CONNECT_REPLY must not leave a receiver behind: herdcast repeats its
    CONNECT_REQ, and a receiver that answered the HELLO follows the transfer when the reply
    never comes. HELLO is repeated (udpcast's own advice): a receiver that never hears of
    the sender cannot know the data group."""
    src = make_source(tmp_path, 200_001)  # udpcast's REQACK timeouts grow to 1 s: keep it short
    with NetLab(3, net=90) as lab:
        h0, h1, h2 = lab.hosts
        for host in (h1, h2):
            host.drop_udp(30)
        h0.drop_udp(30, dport=9001)
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "a"), (herdcast_receiver, h2, "b"))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "2", "--rexmit-hello-interval",
                           "100")
        finish(snd, slog, receivers, logs, sender_timeout=110, receiver_timeout=30)
    assert sha(outs[0]) == sha(outs[1]) == sha(src)


def test_a_lost_connect_reply_still_ends_in_an_agreed_digest(tmp_path):
    """The sender's CONNECT_REPLY to a herdcast receiver is lost once: the receiver follows
    the transfer the sender counts it in (as udpcast's does), asks again until the reply
    comes, and with the secret it carries has its digest agreed. (It used to send a digest
    with no secret, which the sender rightly did not believe: the sender ended on "never
    reported one" and the receiver asked until it was killed.)"""
    src = make_source(tmp_path)
    with NetLab(2, net=248) as lab:
        h0, h1 = lab.hosts
        h1.drop_first(int(Op.CONNECT_REPLY))
        outs, logs, receivers = start_receivers(tmp_path, (herdcast_receiver, h1, "r"))
        slog = tmp_path / "sender.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "1")
        finish(snd, slog, receivers, logs)
    text = logs[0].read_text()
    assert "no CONNECT_REPLY" in text and "CONNECT_REPLY came again" in text, text
    assert "digest agreed" in slog.read_text(), slog.read_text()
    assert sha(outs[0]) == sha(src)


def test_herdcast_fec_with_loss_and_a_stock_receiver_beside(tmp_path):
    src = make_source(tmp_path)
    with NetLab(3, net=99) as lab:
        h0, h1, h2 = lab.hosts
        h1.drop_udp(5)
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "lossy"), (stock_receiver, h2, "stock"))
        slog = tmp_path / "sender.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "2", "--fec", "8x8/128")
        finish(snd, slog, receivers, logs)
    assert sha(outs[0]) == sha(outs[1]) == sha(src)
    assert "FEC blocks" in slog.read_text()


@pytest.mark.parametrize("answers_lost", [0, 30], ids=["clean", "answers-lossy"])
def test_receiver_leaves_once_a_herdcast_sender_acked_its_digest(tmp_path, answers_lost):
    """A herdcast sender takes a receiver's digest as its OK for the end slice, so the
    receiver has no lost OK to repeat: it leaves at once instead of lingering its
    --exit-wait (two minutes here, far past the wait below). With 30% of the answers lost,
    some end-slice OKs never arrive: the digests stand in for them."""
    src = make_source(tmp_path, 400_001)
    with NetLab(3, net=243) as lab:
        h0, h1, h2 = lab.hosts
        if answers_lost:
            h0.drop_udp(answers_lost, dport=9001)
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "a", "--exit-wait", "120000"),
            (herdcast_receiver, h2, "b", "--exit-wait", "120000"))
        slog = tmp_path / "sender.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "2")
        finish(snd, slog, receivers, logs, receiver_timeout=30)
    assert sha(outs[0]) == sha(outs[1]) == sha(src)
    assert slog.read_text().count("digest agreed") >= 2, slog.read_text()


def test_receiver_lingers_its_exit_wait_with_a_stock_sender(tmp_path):
    """udp-sender knows nothing of digests: a lost OK for its end slice is asked again, so
    the herdcast receiver stays --exit-wait after the end, as udp-receiver does."""
    src = make_source(tmp_path, 400_001)
    with NetLab(2, net=244) as lab:
        h0, h1 = lab.hosts
        outs, logs, receivers = start_receivers(
            tmp_path, (herdcast_receiver, h1, "a", "--exit-wait", "8000"))
        slog = tmp_path / "sender.log"
        snd = stock_sender(h0, src, slog, "--min-receivers", "1")
        assert wait(snd, slog, 60) == 0, slog.read_text()
        assert receivers[0].poll() is None, logs[0].read_text()  # still in its exit wait
        assert wait(receivers[0], logs[0], 30) == 0, logs[0].read_text()
    assert sha(outs[0]) == sha(src)
