"""agent.boot.pid1 and agent.boot.console: init duties, and never powering off outside init."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agent.boot import pid1
from agent.boot.console import Console, console_devices, open_consoles


def test_console_devices_from_cmdline():
    cmdline = "root=/dev/ram0 console=ttyS0,115200n8 quiet console=tty0 console=ttyS0,9600"
    assert console_devices(cmdline) == ["/dev/ttyS0", "/dev/tty0"]
    assert console_devices("quiet") == []


def test_console_devices_split_as_the_kernel_does():
    assert console_devices('quiet "console=ttyS1,115200" console=null console=') == \
        ["/dev/ttyS1"]


def test_the_kernels_own_console_is_not_opened_again(tmp_path):
    """A device named twice is the kernel's console when it is named last: opening it
    again would double every line there, and the other device would be left out."""
    serial, vga = tmp_path / "ttyS9", tmp_path / "tty9"
    serial.write_text("")
    vga.write_text("")
    con = open_consoles(f"console={serial} console={vga} console={serial}", is_init=True)
    con.say("once")
    assert serial.read_text() == "" and vga.read_text() == "herdcast: once\n"


def test_console_tees_every_line():
    a, b = io.StringIO(), io.StringIO()
    con = Console(a, [b])
    con.say("loaded virtio_net")
    con.fail("no NIC with carrier", "plug the cable or set BOOTIF=")
    expected = ("herdcast: loaded virtio_net\n"
                "herdcast: FAILED: no NIC with carrier -- plug the cable or set BOOTIF=\n")
    assert a.getvalue() == expected
    assert b.getvalue() == expected


def test_broken_console_does_not_stop_the_others():
    class Broken(io.StringIO):
        def write(self, s):
            raise OSError(5, "I/O error")

    good = io.StringIO()
    Console(good, [Broken()]).say("still here")
    assert good.getvalue() == "herdcast: still here\n"


def test_only_init_opens_console_devices(tmp_path):
    fake = tmp_path / "ttyFAKE"
    fake.write_text("")
    con = open_consoles(f"console={fake} console=tty0", is_init=False)
    assert con.extra == []
    con = open_consoles(f"console={fake} console=tty0", is_init=True)
    con.say("hello serial")
    assert fake.read_text() == "herdcast: hello serial\n"


def test_not_init_never_powers_off():
    assert not pid1.is_init()
    out = io.StringIO()
    pid1.post_action("poweroff", out)
    pid1.post_action("reboot", out)
    pid1.post_action("shell", out)
    pid1.post_action("wait", out)
    text = out.getvalue()
    assert "poweroff: not init" in text
    assert "reboot: not init" in text
    assert "shell: not init" in text
    assert "powering off" not in text


def test_run_guarded_turns_a_crash_into_a_failure_line():
    out = io.StringIO()

    def crash() -> int:
        raise KeyError("boom")

    assert pid1.run_guarded(crash, out) == 70
    assert "herdcast: FAILED: internal error KeyError" in out.getvalue()
    assert "Traceback" in out.getvalue()
    assert pid1.run_guarded(lambda: 0, out) == 0


def test_find_shell():
    shell = pid1.find_shell()
    assert shell is not None and os.access(shell[0], os.X_OK)


SUPERVISED = textwrap.dedent("""
    import os, subprocess, sys, time
    from agent.boot import pid1
    assert os.getpid() == 1, "refusing: not PID 1 of a private PID namespace"
    def main():
        print("agent is init mode:", pid1.is_init(), flush=True)
        # an orphan: its parent exits at once, so PID 1 must reap it
        subprocess.run(["sh", "-c", "sleep 0.2 & exit 0"], check=True)
        time.sleep(0.5)
        rc = subprocess.run(["sh", "-c", "exit 7"]).returncode
        print("subprocess rc seen by the agent:", rc, flush=True)
        return 3
    pid1.supervise(main)
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root for a private PID namespace")
def test_supervise_as_pid1_reaps_and_never_exits(tmp_path):
    """Run supervise as PID 1 of a private PID+mount namespace (never the real init)."""
    log = tmp_path / "console.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--propagation", "private", "--kill-child",
             sys.executable, "-c", SUPERVISED],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = ""
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and text.count("starting a rescue shell") < 2:
            time.sleep(0.1)
            text = log.read_text()
        assert proc.poll() is None, f"init exited: {text}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "agent is init mode: True" in text
    assert "subprocess rc seen by the agent: 7" in text
    assert "the agent ended (exit status 3)" in text
    assert text.count("starting a rescue shell") >= 2, text


NODE_AS_INIT = textwrap.dedent("""
    import os, sys
    assert os.getpid() == 1, "refusing: not PID 1 of a private PID namespace"
    from agent.boot.node import main
    main(sys.argv[1:])
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root for a private PID namespace")
def test_node_as_pid1_reports_a_bad_cmdline_on_every_console_and_stays_up():
    """As init: one FAILED line on stdout (/dev/console) and on the other console=, then
    onfail=wait keeps the node up instead of the kernel panicking."""
    serial = Path("/dev/shm") / f"hc-console-{uuid.uuid4().hex[:8]}"  # survives our /tmp mount
    serial.write_text("")
    cmdline = f"console={serial} console=tty0 umode=xmit auto=yes"
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--propagation", "private", "--kill-child",
             sys.executable, "-c", NODE_AS_INIT, "--cmdline", cmdline, "--no-hardware",
             "--no-network"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent)
        text = ""
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "waiting" not in text:
                time.sleep(0.1)
                out.seek(0)
                text = out.read()
            time.sleep(0.5)
            assert proc.poll() is None, f"init exited: {text}"
        finally:
            proc.kill()
            proc.wait(timeout=10)
            on_serial = serial.read_text()
            serial.unlink()
    failed = [line for line in text.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "umode=xmit" in failed[0], text
    assert "onfail=wait" in text
    assert failed[0] in on_serial.splitlines(), on_serial
