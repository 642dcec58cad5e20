"""`herdcast node` end to end, without a VM: nodes in namespaces, disks backed by files.

Every node runs as its own process (`python -m agent node --cmdline ... --no-hardware
--no-network --disk FILE`) inside a NetLab host, as the initramfs would run it, except that
it is not PID 1 and so never powers anything off.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import needs_loop

from builder.lab.loopdev import loop_device, mounted_ext4

MiB = 1024 * 1024
TEST_SWITCHES = ["--no-hardware", "--no-network"]



def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image(path: Path, size: int) -> Path:
    """A disk image: incompressible and repetitive parts, not a multiple of the block size."""
    half = size // 2
    path.write_bytes(os.urandom(half) + (b"herdcast node test " * (size // 19 + 1))[
        : size - half])
    return path


def node_argv(herdcast_argv, cmdline: str, disk: Path | str, *extra: str) -> list[str]:
    return [*herdcast_argv, "node", "--cmdline", cmdline, *TEST_SWITCHES, "--disk",
            str(disk), *extra]


def run_node(host, argv, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(host.argv(*argv), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "FAILED" in line]


# ------------------------------------------------------------------------- no network needed


@pytest.mark.parametrize("bad, parameter", [
    ("umode=xmit", "umode=xmit"),
    ("umode=rcv compr=rar", "compr=rar"),
    ("umode=rcv port=99999", "port=99999"),
    ("umode=rcv port=abc", "port=abc"),
    ("umode=rcv disk=", "disk="),
    ("umode=rcv dhcp=maybe", "dhcp=maybe"),
    ("auto=yes", "umode"),
    ("umode=rcv udpcparam=--portbase=9002", "udpcparam"),
    ("umode=rcv udpcparam=--ignore-lost-data", "udpcparam=--ignore-lost-data"),
])
def test_bad_cmdline_is_one_line_and_touches_no_disk(tmp_path, herdcast_argv, bad, parameter):
    disk = image(tmp_path / "disk.img", 64 * 1024)
    before = (digest(disk), disk.stat().st_mtime_ns)
    proc = subprocess.run(node_argv(herdcast_argv, f"quiet {bad} auto=yes", disk),
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    lines = failed_lines(proc.stdout + proc.stderr)
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert parameter in lines[0]
    assert "onfail=wait" in proc.stdout, "the documented failure action is followed"
    assert (digest(disk), disk.stat().st_mtime_ns) == before


@pytest.mark.parametrize("umode", ["rcv", "snd"])
@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/kmsg"])
def test_disk_must_be_a_block_device(herdcast_argv, umode, device):
    """Without the --disk test switch, disk= is the node's disk: a character device is
    refused with one line before drivers, network or transfer."""
    proc = subprocess.run([*herdcast_argv, "node", "--cmdline",
                           f"umode={umode} auto=yes disk={device}", *TEST_SWITCHES, "--no-post"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    lines = failed_lines(proc.stdout + proc.stderr)
    assert lines == [f"herdcast: FAILED: disk {device}: a character device, not a block "
                     "device; set disk= to the node's disk, e.g. disk=/dev/sda or "
                     "disk=/dev/disk/by-id/..."], proc.stdout + proc.stderr
    assert "network:" not in proc.stdout and "sending" not in proc.stdout \
        and "receiving" not in proc.stdout


def test_node_help_lists_the_test_switches(herdcast_argv):
    proc = subprocess.run([*herdcast_argv, "node", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for switch in ("--cmdline", "--root", "--disk", "--no-hardware", "--no-network",
                   "--no-post"):
        assert switch in proc.stdout


def test_node_console_warns_of_misspelled_parameters(herdcast_argv):
    """The kernel line carries foreign keys, so the node warns (and goes on): here it then
    stops at its disk, a character device."""
    proc = subprocess.run([*herdcast_argv, "node", "--cmdline",
                           "quiet umode=rcv auto=yes disk=/dev/null verfiy=readback",
                           *TEST_SWITCHES, "--no-post"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    warning = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "verfiy=readback" in warning[0] \
        and "did you mean verify=?" in warning[0], proc.stdout
    assert "character device" in failed_lines(proc.stdout + proc.stderr)[0]


def test_cmdline_read_under_root(tmp_path, herdcast_argv):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("console=ttyS0 umode=bogus\n")
    proc = subprocess.run([*herdcast_argv, "node", "--root", str(tmp_path), *TEST_SWITCHES],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "umode=bogus" in failed_lines(proc.stdout)[0]


# ------------------------------------------------------------------------- in a namespace lab


@pytest.mark.netns
@needs_loop
def test_receiver_refuses_a_mounted_disk(lab3, tmp_path, herdcast_argv):
    disk = tmp_path / "fs.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MiB)
    with mounted_ext4(disk, tmp_path / "mnt") as dev:
        before = digest(disk)
        for target in (str(disk), dev):
            proc = run_node(lab3.hosts[1], node_argv(
                herdcast_argv, "umode=rcv auto=yes udpcparam=--start-timeout=5", target))
            assert proc.returncode != 0
            lines = failed_lines(proc.stdout)
            assert len(lines) == 1 and "mounted on" in lines[0], proc.stdout
            assert "receiving" not in proc.stdout, "refused before the transfer"
        assert digest(disk) == before


@pytest.mark.netns
@needs_loop
def test_sender_refuses_a_read_write_mounted_disk_unless_mounted_warn(lab3, tmp_path,
                                                                      herdcast_argv):
    disk = tmp_path / "fs.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MiB)
    with mounted_ext4(disk, tmp_path / "mnt") as dev:
        proc = run_node(lab3.hosts[0], node_argv(herdcast_argv, "umode=snd auto=yes", dev))
        assert proc.returncode != 0
        lines = failed_lines(proc.stdout)
        assert len(lines) == 1 and "mounted read-write on" in lines[0] \
            and "set mounted=warn" in lines[0], proc.stdout
        assert "sending" not in proc.stdout, "refused before the transfer"
        # mounted=warn: one warning, then the transfer starts (stopped there: no receiver)
        argv = node_argv(herdcast_argv, "umode=snd auto=yes mounted=warn", dev, "--no-post")
        sender = subprocess.Popen(lab3.hosts[0].argv(*argv), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                  text=True)
        out = ""
        watchdog = threading.Timer(30, sender.kill)  # never hang on a silent node
        watchdog.start()
        try:
            for line in sender.stdout:
                out += line
                if "sending" in line or "FAILED" in line:
                    break
        finally:
            watchdog.cancel()
            sender.kill()
            sender.wait(timeout=10)
        warning = [line for line in out.splitlines() if "warning:" in line]
        assert len(warning) == 1 and "may be inconsistent" in warning[0], out
        assert "herdcast: sending" in out and "FAILED" not in out, out


@pytest.mark.netns
def test_auto_no_without_a_console_refuses(lab3, tmp_path, herdcast_argv):
    disk = image(tmp_path / "disk.img", 4096)
    before = digest(disk)
    proc = run_node(lab3.hosts[1], node_argv(herdcast_argv, "umode=rcv auto=no", disk))
    assert proc.returncode != 0
    assert "set auto=yes" in failed_lines(proc.stdout)[0]
    assert "receiving" not in proc.stdout
    assert digest(disk) == before


def _clone(lab, tmp_path, herdcast_argv, compr: str = "none", size: int = 3 * MiB + 77):
    """One sender node and two receiver nodes; returns (sender, receivers) results."""
    src = image(tmp_path / "src.img", size)
    dst = [tmp_path / f"dst{i}.img" for i in (1, 2)]
    common = f"auto=yes compr={compr} port=9400"
    receivers = [lab.hosts[i].popen(
        node_argv(herdcast_argv, f"umode=rcv {common} udpcparam=--start-timeout=60",
                  dst[i - 1]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL) for i in (1, 2)]
    sender = run_node(lab.hosts[0], node_argv(
        herdcast_argv,
        f'umode=snd {common} udpcparam="--min-receivers 2 --max-wait 30 --nokbd"', src),
        timeout=120)
    outs = []
    for proc in receivers:
        out, _ = proc.communicate(timeout=120)
        outs.append((proc.returncode, out))
    return src, dst, sender, outs


@pytest.mark.netns
@pytest.mark.parametrize("compr", ["none", "gz", "zstd"])
def test_one_sender_two_receivers_identical_disks(lab3, tmp_path, herdcast_argv, compr):
    src, dst, sender, outs = _clone(lab3, tmp_path, herdcast_argv, compr)
    assert sender.returncode == 0, sender.stdout + sender.stderr + str(outs)
    sent = [line for line in sender.stdout.splitlines() if "SUCCESS: sent" in line]
    assert len(sent) == 1, sender.stdout
    wire_digest = sent[0].split()[-1]  # the image's, or the compressed stream's with compr=
    if compr == "none":
        assert f"sent {src.stat().st_size} bytes" in sent[0]
        assert wire_digest == digest(src)
    for (rc, out), path in zip(outs, dst, strict=True):
        assert rc == 0, out
        assert digest(path) == digest(src)
        success = [line for line in out.splitlines() if "SUCCESS: received" in line]
        assert len(success) == 1 and success[0].endswith(wire_digest), out
        assert "poweroff: not init" in out, "post=poweroff is announced, never done"
    # each node says where its time went, step by step (bench/pxe reads it off consoles)
    for out in [sender.stdout] + [out for _, out in outs]:
        said = [line for line in out.splitlines() if "boot phases" in line]
        assert len(said) == 1, out
        assert re.search(r"agent [\d.]+, network \+[\d.]+, disk \+[\d.]+, transfer "
                         r"\+[\d.]+, done [\d.]+$", said[0]), said[0]


@pytest.mark.netns
@pytest.mark.skipif(not shutil.which("udp-receiver"), reason="needs udpcast")
def test_stock_udp_receiver_reads_a_gz_node_image(lab3, tmp_path, herdcast_argv):
    """A stock `udp-receiver --pipe 'gzip -dc'` reads what a compr=gz node sends."""
    src = image(tmp_path / "src.img", 2 * MiB + 5)
    out = tmp_path / "stock.img"
    stock = lab3.hosts[1].popen(
        ["udp-receiver", "--file", str(out), "--pipe", "gzip -dc", "--portbase", "9400",
         "--nokbd", "--start-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    sender = run_node(lab3.hosts[0], node_argv(
        herdcast_argv, 'umode=snd auto=yes compr=gz port=9400 '
        'udpcparam="--min-receivers 1 --max-wait 30"', src), timeout=120)
    stock_out, _ = stock.communicate(timeout=60)
    assert sender.returncode == 0, sender.stdout + sender.stderr + stock_out
    assert stock.returncode == 0, stock_out
    assert digest(out) == digest(src)


@pytest.mark.netns
@needs_loop
def test_too_small_disk_fails_and_never_looks_finished(lab3, tmp_path, herdcast_argv):
    """A receiver disk smaller than the image: FAILED, never SUCCESS, onfail= followed. It
    fails before the round, and the sender, told why, does not wait for it: with
    --min-receivers 2 the round starts as soon as the other receiver connects, not at
    --max-wait (the failed one takes the place it came for)."""
    src = image(tmp_path / "src.img", 3 * MiB + 77)
    backing = tmp_path / "small.img"
    with open(backing, "wb") as f:
        f.truncate(1 * MiB)
    common = "auto=yes port=9400"
    with loop_device(backing) as small:
        sender = lab3.hosts[0].popen(node_argv(
            herdcast_argv, f'umode=snd {common} udpcparam="--min-receivers 2 --max-wait 30"',
            src), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        failed = run_node(lab3.hosts[1], node_argv(
            herdcast_argv, f"umode=rcv {common} udpcparam=--start-timeout=60", small))
    big = tmp_path / "big.img"
    other = run_node(lab3.hosts[2], node_argv(
        herdcast_argv, f"umode=rcv {common} udpcparam=--start-timeout=60", big))
    out, err = sender.communicate(timeout=60)
    assert failed.returncode != 0, failed.stdout
    assert "SUCCESS" not in failed.stdout
    lines = failed_lines(failed.stdout)
    assert len(lines) == 1 and "INCOMPLETE" in lines[0], failed.stdout
    assert "onfail=wait" in failed.stdout
    assert other.returncode == 0 and digest(big) == digest(src), other.stdout
    assert "starting (1 receiver(s) connected, 1 failed before the start)" in err, err
    assert sender.returncode != 0 and "1 of 2 receiver(s) failed" in out, out + err


@pytest.mark.netns
def test_lossy_network_still_clones_identically(lab3, tmp_path, herdcast_argv):
    lab3.hosts[1].drop_udp(5, dport=9400)
    src, dst, sender, outs = _clone(lab3, tmp_path, herdcast_argv, size=2 * MiB + 3)
    assert sender.returncode == 0, sender.stdout + sender.stderr + str(outs)
    for (rc, out), path in zip(outs, dst, strict=True):
        assert rc == 0, out
        assert digest(path) == digest(src)


@pytest.mark.netns
def test_sender_killed_mid_transfer_leaves_receivers_failed(lab3, tmp_path, herdcast_argv):
    """The sender node dies: each receiver node says FAILED/INCOMPLETE, never SUCCESS."""
    src = image(tmp_path / "src.img", 24 * MiB)
    lab3.hosts[0].shape("20mbit")  # ~10 s of transfer: time to pull the plug
    dst = [tmp_path / f"dst{i}.img" for i in (1, 2)]
    receivers = [lab3.hosts[i].popen(
        node_argv(herdcast_argv, "umode=rcv auto=yes port=9400 "
                  'udpcparam="--start-timeout 60 --receive-timeout 3"', dst[i - 1]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL) for i in (1, 2)]
    sender = lab3.hosts[0].popen(
        node_argv(herdcast_argv, 'umode=snd auto=yes port=9400 '
                  'udpcparam="--min-receivers 2 --max-wait 30"', src),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            p.stat().st_size > 2 * MiB for p in dst if p.exists()):
        time.sleep(0.1)
    sender.kill()
    sender.communicate(timeout=30)
    for proc, path in zip(receivers, dst, strict=True):
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0, out
        assert "SUCCESS" not in out
        lines = failed_lines(out)
        assert len(lines) == 1 and "INCOMPLETE" in lines[0], out
        assert path.stat().st_size < src.stat().st_size
