"""agent.boot.pid1 and agent.boot.console: init duties, and never powering off outside init."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import needs_loop

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


def test_pid1_reads_onfail_itself_and_never_fails():
    from agent.boot.supervisor import fallback_action

    assert fallback_action("umode=rcv onfail=shell") == "shell"
    assert fallback_action("ONFAIL=Reboot onfail=poweroff") == "poweroff"
    assert fallback_action("onfail=beep") == "wait", "a bad onfail= is the agent's to report"
    assert fallback_action('onfail="shell') == "shell"
    assert fallback_action("") == fallback_action("onfail") == "wait"
    assert fallback_action(None) == "wait"  # type: ignore[arg-type]


def test_a_wait_status_in_words():
    assert pid1.describe_status(9) == "killed by SIGKILL (signal 9)"
    assert pid1.describe_status(3 << 8) == "exit status 3"


needs_pid_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="needs root for a private PID namespace")
PREAMBLE = textwrap.dedent("""
    import os, subprocess, sys, time
    from agent.boot import pid1, supervisor
    assert os.getpid() == 1, "refusing: not PID 1 of a private PID namespace"
    CMDLINE = lambda: sys.argv[1]  # never the host's /proc/cmdline: its console= is real
""")


def _start_pid1(script: str, cmdline: str, log: Path) -> subprocess.Popen:
    """`script` as PID 1 of a private PID+mount namespace (never the real init)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            ["unshare", "--pid", "--mount", "--propagation", "private", "--kill-child",
             sys.executable, "-c", PREAMBLE + textwrap.dedent(script), cmdline],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent)


def _wait_for(log: Path, done, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = log.read_text()
    while time.monotonic() < deadline and not done(text):
        time.sleep(0.1)
        text = log.read_text()
    assert done(text), text
    return text


def _children(pid: int) -> list[int]:
    """Host PIDs of the children of `pid` (no /proc/PID/task/PID/children everywhere)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def _pid1(script: str, cmdline: str, log: Path):
    proc = _start_pid1(script, cmdline, log)
    try:
        yield proc
        assert proc.poll() is None, f"init exited: {log.read_text()}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@needs_pid_namespace
def test_supervise_as_pid1_reaps_and_follows_onfail_when_the_agent_returns(tmp_path):
    log = tmp_path / "console.log"
    script = """
        def main():
            print("agent is init mode:", pid1.is_init(), flush=True)
            # an orphan: its parent exits at once, so PID 1 must reap it
            subprocess.run(["sh", "-c", "sleep 0.2 & exit 0"], check=True)
            time.sleep(0.5)
            rc = subprocess.run(["sh", "-c", "exit 7"]).returncode
            print("subprocess rc seen by the agent:", rc, flush=True)
            return 3
        supervisor.init_main(main, CMDLINE)
    """
    with _pid1(script, "umode=rcv onfail=shell", log):
        text = _wait_for(log, lambda t: t.count("starting a rescue shell") >= 2)
    assert "agent is init mode: True" in text
    assert "subprocess rc seen by the agent: 7" in text
    assert "FAILED: the agent ended with exit status 3 before it had a result" in text
    assert "onfail=shell" in text, "PID 1 read onfail= itself: the agent told it nothing"


@needs_pid_namespace
def test_pid1_ignores_sigterm_and_sigint_and_follows_onfail_when_the_agent_is_killed(
        tmp_path):
    """SIGTERM and SIGINT (Ctrl-Alt-Del) leave PID 1 running while the agent works; an agent
    killed with SIGKILL (as the OOM killer does) leads to the onfail= the agent told PID 1
    (shell here, where the command line PID 1 read says wait)."""
    log = tmp_path / "console.log"
    script = """
        def main():
            supervisor.tell_init("onfail", "shell")
            print("agent working", flush=True)
            time.sleep(60)
            return 0
        supervisor.init_main(main, CMDLINE)
    """
    with _pid1(script, "umode=rcv", log) as proc:
        _wait_for(log, lambda t: "agent working" in t)
        [init] = _children(proc.pid)
        [agent] = _children(init)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(init, signum)
        text = _wait_for(log, lambda t: "Ctrl-Alt-Del ignored" in t and "SIGHUP" in t)
        assert "SIGTERM ignored: PID 1 never exits" in text
        assert proc.poll() is None and Path(f"/proc/{init}").exists()
        os.kill(agent, signal.SIGKILL)
        text = _wait_for(log, lambda t: t.count("starting a rescue shell") >= 2)
    failed = [line for line in text.splitlines() if "FAILED" in line]
    assert failed == ["herdcast: FAILED: the agent was killed by SIGKILL (the kernel's OOM "
                      "killer, or kill -9) before it had a result -- if this node was "
                      "receiving, its disk is INCOMPLETE: do not boot from it; image it "
                      "again"], text
    assert "herdcast: onfail=shell" in text


@needs_pid_namespace
def test_an_agent_that_crashes_on_import_follows_onfail(tmp_path):
    log = tmp_path / "console.log"
    script = """
        def main():
            import agent.boot.no_such_module  # noqa: F401 - a module missing from the freeze
        supervisor.init_main(main, CMDLINE)
    """
    with _pid1(script, "umode=rcv onfail=shell", log):
        text = _wait_for(log, lambda t: "starting a rescue shell" in t)
    assert "ModuleNotFoundError" in text and "Traceback" in text
    assert "FAILED: the agent crashed (an internal error; its traceback is above)" in text
    assert "onfail=shell" in text


@needs_pid_namespace
def test_a_failure_before_the_supervisor_keeps_pid1_up_and_says_why(tmp_path):
    log = tmp_path / "console.log"
    script = """
        def broken_mounts(*args, **kwargs):
            raise RuntimeError("no /proc for you")
        pid1.mount_early = broken_mounts
        supervisor.REPEAT_SECONDS = 0.2
        supervisor.init_main(lambda: print("the agent ran", flush=True) or 0, CMDLINE)
    """
    with _pid1(script, "umode=rcv onfail=shell", log) as proc:
        text = _wait_for(log, lambda t: t.count("no /proc for you") >= 3)
        [init] = _children(proc.pid)
        os.kill(init, signal.SIGTERM)
        time.sleep(0.5)
    assert ("herdcast: FAILED: PID 1 could not start the agent: RuntimeError: no /proc for "
            "you -- PID 1 is waiting") in text
    assert "Traceback" in text and "the agent ran" not in text


NODE_AS_INIT = textwrap.dedent("""
    import os, sys
    assert os.getpid() == 1, "refusing: not PID 1 of a private PID namespace"
    from agent.cli import main
    main(["node", *sys.argv[1:]])
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


@pytest.mark.netns
@needs_pid_namespace
def test_node_as_pid1_follows_its_onfail_when_the_agent_is_killed_mid_run(lab3, tmp_path):
    """The node itself as init, in a lab host: its agent waits for Enter (auto=no, stdin
    a pipe nobody writes), is killed with SIGKILL, and PID 1 runs onfail=shell."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 65536)
    log = tmp_path / "console.log"
    cmdline = "console=tty0 umode=rcv auto=no onfail=shell"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            lab3.hosts[1].argv("unshare", "--pid", "--mount", "--propagation", "private",
                               "--kill-child", sys.executable, "-c", NODE_AS_INIT,
                               "--cmdline", cmdline, "--no-hardware", "--no-network",
                               "--disk", str(disk)),
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent)
    try:
        _wait_for(log, lambda t: "press Enter" in t)
        [init] = _children(proc.pid)
        [agent] = _children(init)
        os.kill(init, signal.SIGINT)
        os.kill(agent, signal.SIGKILL)
        text = _wait_for(log, lambda t: "starting a rescue shell" in t)
        assert proc.poll() is None, text
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "Ctrl-Alt-Del ignored" in text
    assert "FAILED: the agent was killed by SIGKILL" in text
    assert "herdcast: onfail=shell" in text


def test_pid1_finds_the_command_line_without_the_nodes_modules(tmp_path):
    from agent.cmd.node import cmdline_of

    assert cmdline_of(["--cmdline", "umode=rcv onfail=shell", "--no-post"]) == \
        "umode=rcv onfail=shell"
    assert cmdline_of(["--no-network", "--cmdline=onfail=reboot"]) == "onfail=reboot"
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("onfail=poweroff\n")
    assert cmdline_of(["--root", str(tmp_path)]) == "onfail=poweroff\n"
    assert cmdline_of([f"--root={tmp_path / 'none'}"]) == ""


@needs_pid_namespace
def test_a_node_that_cannot_be_imported_is_a_crashed_agent_not_a_panic(tmp_path):
    """`herdcast node` as PID 1 imports the node only in the agent: a broken module
    (here: made unimportable) is a traceback, a FAILED line and onfail=, and PID 1 stays."""
    log = tmp_path / "console.log"
    script = """
        sys.modules["agent.boot.node"] = None  # import agent.boot.node now fails
        from agent.cli import main
        main(["node", "--cmdline", sys.argv[1], "--no-hardware"])
    """
    with _pid1(script, "console=tty0 umode=rcv onfail=shell", log):
        text = _wait_for(log, lambda t: "starting a rescue shell" in t)
    assert "ModuleNotFoundError" in text or "ImportError" in text, text
    assert "FAILED: the agent crashed" in text and "herdcast: onfail=shell" in text


@needs_loop
def test_a_console_that_is_a_disk_is_never_written(tmp_path, capsys):
    """Issue 17 item 11: console= naming a disk by a name the kernel command line check does
    not know (a by-path link, a loop device's alias) is opened, found a block device and left
    alone: the node's lines never land on a disk."""
    from builder.lab.loopdev import loop_device

    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\x5a" * (1 << 20))
    with loop_device(backing) as dev:
        alias = tmp_path / "serial0"
        alias.symlink_to(dev)
        con = open_consoles(f"console={alias} console=tty0", is_init=True)
        con.say("digest agreed; powering off")
        assert con.extra == []
    assert backing.read_bytes() == b"\x5a" * (1 << 20)
    assert f"console {alias} is a disk, not a console" in capsys.readouterr().out
