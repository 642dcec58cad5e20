"""Launching udpcast and herdcast peers in lab hosts: one place for the interop tests.

Every launcher runs its program on `eth0` without a keyboard, with stdout discarded and
stderr in `log` (the tests show the logs when an assertion fails).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERDCAST = [sys.executable, "-m", "agent"]
ODD_SIZE = 3_000_001  # not a multiple of the block size: the last block is partial


def sha(path: Path) -> str:
    """sha256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def used_extents_equal(src: Path, dst: Path) -> bool:
    """Every byte of `src`'s used extents (agent.image's map of it) is the same on `dst`."""
    from agent.image.usedmap import used_map

    with open(src, "rb") as a, open(dst, "rb") as b:
        for e in used_map(str(src)).extents:
            a.seek(e.offset)
            b.seek(e.offset)
            if hashlib.sha256(a.read(e.length)).digest() != \
                    hashlib.sha256(b.read(e.length)).digest():
                return False
    return True


def make_source(tmp_path: Path, size: int = ODD_SIZE) -> Path:
    """An incompressible source file of `size` bytes."""
    src = tmp_path / "source.bin"
    src.write_bytes(os.urandom(size))
    return src


def _start(host, argv: list[str], log: Path) -> subprocess.Popen:
    return host.popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=log.open("wb"))


def stock_receiver(host, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """Debian's udp-receiver writing `out`."""
    return _start(host, ["udp-receiver", "--nokbd", "--interface", "eth0", "-f", str(out),
                         *extra], log)


def herdcast_receiver(host, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`herdcast receive` writing `out`."""
    return _start(host, [*HERDCAST, "receive", "--nokbd", "--no-progress", "--interface",
                         "eth0", "-f", str(out), *extra], log)


def stock_sender(host, src: Path, log: Path, *extra: str) -> subprocess.Popen:
    """Debian's udp-sender reading `src`."""
    return _start(host, ["udp-sender", "--nokbd", "--interface", "eth0", "-f", str(src),
                         *extra], log)


def herdcast_sender(host, log: Path, *args: str) -> subprocess.Popen:
    """`herdcast send` with `args` (the input is among them, or stdin)."""
    return _start(host, [*HERDCAST, "send", "--nokbd", "--no-progress", "--interface",
                         "eth0", *args], log)


def wait(proc: subprocess.Popen, timeout: float = 60) -> int | str:
    """The exit code, or "timeout" (the lab kills it) so the assertion shows the logs."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"


def logs(tmp_path: Path, tail: int = 2000) -> str:
    """Every *.log under tmp_path, the last `tail` characters of each, for an assertion."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                     for p in sorted(tmp_path.glob("*.log")))


def wait_log(path: Path, pattern: str, timeout: float = 30) -> re.Match:
    """The first match of `pattern` in the log at `path`, waiting up to `timeout` s for it."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, path.read_text() if path.exists() else "")
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} not in {path}"
        time.sleep(0.05)


def junk(path: Path, size: int) -> Path:
    """`path` filled with `size` bytes of 0x5A: a disk holding nothing of the image."""
    path.write_bytes(bytes([0x5A]) * size)
    return path
