"""Boot build/tftpboot's kernel and initrd in qemu (TCG) with an e1000 NIC, a virtio disk
and no sender anywhere: the agent must load the drivers, find the disk, say clearly that
no sender answered, and power the VM off.

The VM's NIC is a qemu socket netdev on 127.0.0.1 inside a network namespace this test
creates (only `lo` in it), so nothing the guest sends leaves the namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builder.initrd import MARKER

pytestmark = [pytest.mark.slow, pytest.mark.netns]

MAC = "52:54:00:4b:00:01"
CMDLINE = ("console=ttyS0 auto=yes umode=rcv disk=/dev/vda post=poweroff onfail=poweroff "
           "dhcp=no ip=10.77.0.5 netmask=255.255.255.0 port=9000 "
           'udpcparam="--start-timeout 8" hwtimeout=90')
BOOT_TIMEOUT = 300


def _kernel_unavailable(message: str) -> bool:
    return any(s in message for s in ("downloading linux-image", "looking up linux-image",
                                      "apt-get download"))


@pytest.fixture(scope="module")
def tftpboot() -> Path:
    """build/tftpboot as `make initrd` makes it (built once, shared with the PXE test)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (scripts/install-deps)")
    from conftest import ensure_tftpboot

    try:
        return ensure_tftpboot()
    except RuntimeError as exc:
        if _kernel_unavailable(str(exc)):
            pytest.skip(f"Debian's kernel package cannot be downloaded here: {exc}")
        raise


@pytest.fixture(scope="module")
def console(tftpboot, tmp_path_factory) -> str:
    """Boot once with no sender; the serial console's text (qemu exit status appended)."""
    work = tmp_path_factory.mktemp("boot")
    disk = work / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(32 * 2**20)
    log = work / "console.log"
    ns = f"hcboot{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        argv = [
            "ip", "netns", "exec", ns,
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1",
            "-nographic", "-no-reboot", "-monitor", "none", "-serial", f"file:{log}",
            "-netdev", "socket,id=n0,mcast=239.255.77.1:17701,localaddr=127.0.0.1",
            "-device", f"e1000,netdev=n0,mac={MAC}",
            "-drive", f"file={disk},if=virtio,format=raw",
            "-kernel", str(tftpboot / "vmlinuz"), "-initrd", str(tftpboot / "initrd.img"),
            "-append", CMDLINE,
        ]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=BOOT_TIMEOUT)
            status = f"qemu exited {proc.returncode} after {time.monotonic() - started:.0f} s"
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            status = f"qemu still running after {BOOT_TIMEOUT} s: killed"
    finally:
        subprocess.run(["ip", "netns", "delete", ns], timeout=30)
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"{text}\n[test] {status}\n[test] qemu stderr: {err.decode(errors='replace')}"


def _agent_lines(text: str) -> str:
    """The console without kernel log lines, for readable failure messages."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("["))[-4000:]


def test_kernel_unpacks_the_initrd_and_runs_our_init(console):
    assert "Run /init as init process" in console, _agent_lines(console)
    assert MARKER in console, _agent_lines(console)
    assert "Kernel panic" not in console, console[-4000:]


def test_agent_starts_as_pid_1_program(console):
    assert re.search(r"herdcast: herdcast node \S+", console), _agent_lines(console)


def test_pid1_mounts_the_kernel_filesystems_itself(console):
    """/init mounts nothing: PID 1 (agent.boot.pid1.EARLY_MOUNTS) mounts proc, sys and
    devtmpfs, and would say so on the console if one failed."""
    assert not re.search(r"herdcast: mount \S+ on \S+ failed", console), _agent_lines(console)
    assert "modules loaded" in console, _agent_lines(console)  # /sys and /dev were there


def test_agent_loads_the_nic_and_disk_drivers_and_finds_the_disk(console):
    loaded = " ".join(line for line in console.splitlines() if "modules loaded" in line)
    assert re.search(r"\be1000\b", loaded), _agent_lines(console)
    assert re.search(r"\bvirtio_blk\b", loaded), _agent_lines(console)
    assert "/dev/vda" in console
    assert "did not appear" not in console, _agent_lines(console)


def test_missing_sender_is_reported_and_the_node_powers_off(console):
    missing = re.search(r"no sender", console, re.IGNORECASE)
    assert missing, _agent_lines(console)
    power_down = console.find("reboot: Power down")
    assert power_down > missing.start(), _agent_lines(console)  # reported, then powered off
    assert "qemu exited 0" in console, _agent_lines(console)
