"""`herdcast receive` options and outputs: bad input fails clearly without touching disk or
network; --start-timeout; --pipe and --compress outputs (in namespaces)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_loop

from agent.cli import main
from agent.transfer.options import parse_receive_args
from agent.transfer.receive.receiver import receive
from builder.lab.loopdev import loop_device, mounted_ext4
from builder.lab.netlab import NetLab

ROOT = Path(__file__).resolve().parent.parent
HERDCAST = [sys.executable, "-m", "agent"]


def test_ignore_lost_data_is_refused_clearly(tmp_path, capsys):
    assert main(["receive", "--nokbd", "-Z", "-f", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herdcast receive: --ignore-lost-data is not supported")
    assert not (tmp_path / "out").exists()


def test_log_file_gets_the_messages_too(tmp_path, capsys):
    log = tmp_path / "receiver.log"
    assert main(["receive", "--nokbd", "--log", str(log), "-f", str(tmp_path / "o"),
                 "--interface", "no-such-if0"]) == 1
    line = next(ln for ln in log.read_text().splitlines() if "no-such-if0" in ln)
    stamp, _, text = line.partition(" ")  # a log outlives its terminal: lines are dated
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", stamp), line
    assert text.startswith("herdcast receive: --interface no-such-if0")
    err = capsys.readouterr().err
    assert "no-such-if0" in err and not re.match(r"^\d{4}-", err)


def test_output_in_missing_directory_fails_before_the_network(tmp_path):
    target = tmp_path / "nope" / "out.bin"
    result = receive(parse_receive_args(["--nokbd", "-f", str(target),
                                         "--interface", "no-such-if0"]))
    assert not result.ok and "directory" in str(result.error)
    assert "does not exist" in str(result.error)
    assert not target.parent.exists()


def test_unknown_interface_is_named(tmp_path):
    result = receive(parse_receive_args(["--nokbd", "-f", str(tmp_path / "o"),
                                         "--interface", "no-such-if0"]))
    assert not result.ok and "--interface no-such-if0" in str(result.error)
    assert not (tmp_path / "o").exists()


def _run(host, argv, log: Path, **kw) -> subprocess.Popen:
    return host.popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=log.open("wb"), **kw)


@pytest.mark.netns
@pytest.mark.timeout(60)
def test_start_timeout_without_sender(tmp_path):
    with NetLab(1, net=94) as lab:
        log = tmp_path / "r.log"
        t0 = time.monotonic()
        proc = _run(lab.hosts[0], [*HERDCAST, "receive", "--nokbd", "--interface", "eth0",
                                   "--start-timeout", "1", "-f", str(tmp_path / "o")], log)
        rc = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    text = log.read_text()
    assert rc == 1, text
    assert "herdcast receive: no sender answered within --start-timeout 1 s" in text
    assert elapsed < 15


@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("udp-sender") is None, reason="udpcast not installed")
def test_pipe_and_compress_outputs(tmp_path):
    """A stock `udp-sender --pipe 'gzip -c'` stream unpacked by --pipe 'gzip -dc' on one
    herdcast receiver and by the in-process --compress gz on another; a third writes the
    compressed stream to stdout."""
    raw = os.urandom(500_000) + bytes(1_000_001)  # compressible, odd size
    src = tmp_path / "src.bin"
    src.write_bytes(raw)
    with NetLab(4, net=95) as lab:
        h0, h1, h2, h3 = lab.hosts
        common = [*HERDCAST, "receive", "--nokbd", "--no-progress", "--interface", "eth0"]
        piped, inproc, stdout = (tmp_path / n for n in ("piped.bin", "inproc.bin", "gz.bin"))
        logs = [tmp_path / f"r{i}.log" for i in range(3)]
        procs = [
            _run(h1, [*common, "--pipe", "gzip -dc", "-f", str(piped)], logs[0]),
            _run(h2, [*common, "--compress", "gz", "-f", str(inproc), "--sync"], logs[1]),
            _run(h3, common, logs[2], stdout=stdout.open("wb")),
        ]
        time.sleep(1)
        slog = tmp_path / "s.log"
        snd = _run(h0, ["udp-sender", "--nokbd", "--interface", "eth0", "--min-receivers",
                        "3", "--pipe", "gzip -c", "-f", str(src)], slog,
                   stdout=subprocess.DEVNULL)
        assert snd.wait(timeout=60) == 0, slog.read_text()
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=20) == 0, log.read_text()
    digest = hashlib.sha256(raw).hexdigest()
    assert hashlib.sha256(piped.read_bytes()).hexdigest() == digest
    assert hashlib.sha256(inproc.read_bytes()).hexdigest() == digest
    assert gzip.decompress(stdout.read_bytes()) == raw
    assert "Transfer complete" in logs[2].read_text()


@pytest.mark.netns
@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("udp-sender") is None, reason="udpcast not installed")
def test_keypress_on_a_terminal_sends_go(tmp_path):
    """Without --nokbd and with a terminal on stdin, a key starts the transfer (GO), as
    udp-receiver does; the stock sender here has no other start trigger."""
    import pty

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(200_003))
    out, log, slog = tmp_path / "out.bin", tmp_path / "r.log", tmp_path / "s.log"
    with NetLab(2, net=97) as lab:
        h0, h1 = lab.hosts
        snd = h0.popen(["udp-sender", "--nokbd", "--interface", "eth0", "-f", str(src)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=slog.open("wb"))
        master, slave = pty.openpty()
        rcv = h1.popen([*HERDCAST, "receive", "--no-progress", "--interface", "eth0", "-f",
                        str(out)], cwd=ROOT, stdin=slave, stdout=subprocess.DEVNULL,
                       stderr=log.open("wb"))
        os.close(slave)
        deadline = time.monotonic() + 20
        while "Press any key" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        assert snd.poll() is None and not (out.exists() and out.stat().st_size)  # no start yet
        os.write(master, b"x")
        assert rcv.wait(timeout=20) == 0, log.read_text()
        assert snd.wait(timeout=20) == 0, slog.read_text()
        os.close(master)
    assert "Sending go signal" in log.read_text()
    assert out.read_bytes() == src.read_bytes()


# --- the end of the output: fsync and close failures are the disk's, and fail the receive


def _written_output(tmp_path):
    from agent.transfer.options import ReceiveOptions
    from agent.transfer.receive.output import Output

    out = Output(ReceiveOptions(file=str(tmp_path / "disk.img")))
    out.write(memoryview(b"image bytes"))
    return out


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_fsync_failure_fails_the_output_naming_the_disk(tmp_path, monkeypatch, err):
    from agent.transfer.receive.output import OutputError

    out = _written_output(tmp_path)

    def fsync(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError, match=f"disk.img: flushing to disk failed: "
                                          f"{os.strerror(err)}"):
        out.finish()
    assert out.fd == -1  # released all the same


def test_close_failure_fails_the_output(tmp_path, monkeypatch):
    from agent.transfer.receive.output import OutputError

    out = _written_output(tmp_path)
    fd, real_close = out.fd, os.close

    def close(n):
        real_close(n)
        if n == fd:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "close", close)
    with pytest.raises(OutputError, match="disk.img: closing failed"):
        out.finish()


def test_fsync_on_a_pipe_is_nothing_to_sync(tmp_path):
    from agent.transfer.options import ReceiveOptions
    from agent.transfer.receive.output import Output

    read, write = os.pipe()
    saved = os.dup(1)
    try:
        os.dup2(write, 1)  # the output is stdout, and stdout is a pipe (fsync: EINVAL)
        out = Output(ReceiveOptions())
        out.write(memoryview(b"x"))
        out.finish()
    finally:
        os.dup2(saved, 1)
        for fd in (saved, write, read):
            os.close(fd)


def test_a_failure_right_after_connecting_still_says_disconnect(tmp_path):
    """From CONNECT_REPLY on the sender counts this receiver in: when the output then fails
    (here a --pipe that cannot run; on a node, a disk too small for the image) the sender
    must hear DISCONNECT, or it waits for an answer that never comes. Loopback only."""
    import socket

    from agent.transfer.receive.link import Session
    from agent.transfer.receive.output import OutputError
    from agent.transfer.receive.receiver import Receiver
    from agent.udpcast.protocol import Cap, Op, parse

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.settimeout(5)
    opts = parse_receive_args(["--nokbd", "-f", str(tmp_path / "out"),
                               "--pipe", "no-such-command-for-herdcast"])
    r = Receiver(opts)
    r.link.ucast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OutputError, match="cannot run"):
            r.transfer(Session(sender.getsockname(), 3, 1456, "0.0.0.0", Cap.STOCK, False))
        r.close()
        assert parse(sender.recv(64))[0] == Op.DISCONNECT
    finally:
        r.link.ucast.close()
        sender.close()


@needs_loop
def test_a_mounted_or_held_device_is_refused_before_the_network(tmp_path):
    """`herdcast receive -f /dev/X` refuses a disk in use as the node does: before any
    network traffic (the interface named here does not even exist), nothing written."""
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    with mounted_ext4(img, tmp_path / "mnt") as dev:
        before = img.read_bytes()
        for target in (dev, str(img)):  # the device, and the file behind it
            result = receive(parse_receive_args(["--nokbd", "-f", target,
                                                 "--interface", "no-such-if0"]))
            assert not result.ok and "mounted on" in str(result.error), result.error
        assert img.read_bytes() == before
    with loop_device(img) as dev:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            result = receive(parse_receive_args(["--nokbd", "-f", dev,
                                                 "--interface", "no-such-if0"]))
            assert not result.ok and "busy" in str(result.error), result.error
        finally:
            os.close(fd)


@needs_loop
def test_sending_a_read_write_mounted_disk_warns(tmp_path, capsys):
    from agent.transfer.options import parse_send_args
    from agent.transfer.send.sender import send

    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    with mounted_ext4(img, tmp_path / "mnt") as dev:
        send(parse_send_args(["--nokbd", "-f", dev, "--interface", "no-such-if0"]))
    err = capsys.readouterr().err
    assert f"herdcast send: warning: {dev}: " in err and "inconsistent" in err


def test_store_is_explicit_and_a_raw_stream_is_written_as_it_came(tmp_path, capsys):
    """-f FILE writes the disk (an image unpacked); only --store keeps an image as it came.
    A raw stream under --store is written as udp-receiver writes it, and says so."""
    from agent.transfer.options import parse_receive_args
    from agent.transfer.receive.output import Output

    assert parse_receive_args(["-f", "x"]).unpack is None  # the default: unpack
    assert parse_receive_args(["-f", "x", "--store"]).unpack is False
    out = tmp_path / "o.bin"
    o = Output(parse_receive_args(["--nokbd", "-f", str(out), "--store"]))
    o.write(memoryview(b"x" * 100))
    o.finish()
    assert out.read_bytes() == b"x" * 100
    assert "--store: " in capsys.readouterr().err


def test_a_sender_silent_mid_transfer_fails_the_receive_after_the_default_silence(
        tmp_path, monkeypatch):
    """Without --receive-timeout, a sender heard once and then never again (its node died,
    the link was cut) fails the receive after DEAD_SENDER_TIMEOUT of silence, saying so, and
    DISCONNECT is said. Driven on a fake clock through Receiver.transfer's own loop: through
    the commands it costs those 30 s (test_drop's link-cut victim gives --receive-timeout)."""
    from agent.transfer.receive import receiver
    from agent.transfer.receive.link import Session
    from agent.transfer.receive.sockets import ReceiveError
    from agent.udpcast.protocol import Cap, Op, parse

    clock = [1000.0]
    monkeypatch.setattr(receiver.time, "monotonic", lambda: clock[0])
    r = receiver.Receiver(parse_receive_args(["--nokbd", "--no-progress", "-f",
                                              str(tmp_path / "out")]))
    heard: list[float] = []
    sent: list[bytes] = []

    def pump(timeout: float) -> bool:
        """The sender's first REQACK is answered; then nothing ever comes."""
        clock[0] += timeout
        if not heard:
            heard.append(clock[0])
            r.link.pending_answer = True
            return True
        assert clock[0] - heard[0] < 120, "still waiting for a silent sender"
        return False

    monkeypatch.setattr(r.link, "pump", pump)
    monkeypatch.setattr(r.link, "attach", lambda session, asm: None)
    monkeypatch.setattr(r.link, "send", lambda data, dest=None: sent.append(data))
    session = Session(("10.9.0.10", 9001), 0, 1456, "233.255.0.10", Cap.STOCK, False)
    try:
        with pytest.raises(ReceiveError, match="sender went silent for 30 s mid-transfer"):
            r.transfer(session)
    finally:
        r.close()
    assert receiver.DEAD_SENDER_TIMEOUT <= clock[0] - heard[0] < receiver.DEAD_SENDER_TIMEOUT + 2
    assert [parse(data)[0] for data in sent] == [Op.DISCONNECT], sent
