"""PID 1 itself: start the agent, outlive it, and never exit.

The kernel panics when init exits, and a panicked node tells the admin nothing, so PID 1
keeps running whatever happens:

- Signals. SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are caught, said on the console
  and otherwise ignored (Python's own SIGINT handler would raise KeyboardInterrupt and end
  PID 1).
- Ctrl-Alt-Del. PID 1 turns the kernel's immediate reset off (LINUX_REBOOT_CMD_CAD_OFF), so
  the kernel sends PID 1 a SIGINT instead. While the agent works (drivers, network, the
  transfer: a receiver may be writing its disk) it is ignored, with a line saying why: a
  reset then would leave a half-written disk that may still look bootable. Once the agent
  has its result (it is doing post=/onfail=: waiting, in the rescue shell, or powering off)
  or has died, Ctrl-Alt-Del syncs and reboots cleanly.
- A dying agent. The agent runs in a child (agent.boot.pid1 says why). It tells PID 1 over
  a pipe what to do if it dies (`tell_init`): onfail= once the command line is checked, then
  post= or onfail= with its result. Before it has said anything, PID 1 uses its own reading
  of onfail= (`fallback_action`, which cannot fail; `wait` if in doubt). An agent killed by
  a signal (the OOM killer's SIGKILL), crashing with a traceback or exiting before its result
  is one FAILED line, then that action, done by PID 1.
- A failure before any of this runs (mounting, opening the consoles, a broken import in
  the agent's modules) strands PID 1 in `stranded`: a loop that reaps children and prints
  the reason every REPEAT_SECONDS, so a console looked at later still shows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TextIO

from agent.boot import pid1

CAD_OFF = 0  # LINUX_REBOOT_CMD_CAD_OFF: Ctrl-Alt-Del sends SIGINT to PID 1
IGNORED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
REPEAT_SECONDS = 60.0
CRASH_STATUS = 70  # pid1.run_guarded's status for an exception that escaped the agent


@dataclass
class _Init:
    """What PID 1 knows about its agent."""

    out: TextIO | None = None
    kind: str = "onfail"  # what `action` is: onfail= (no result yet) or post=
    action: str = "wait"  # what to do if the agent dies now
    finished: bool = False  # the agent has its result and is doing `action` itself
    agent: int | None = None  # the agent's PID while it runs
    pipe: int | None = None  # PID 1's end of the agent's pipe
    buffer: bytes = b""


_init = _Init()
_report_fd: int | None = None  # in the agent: its end of the pipe to PID 1


def _say(line: str) -> None:
    """One line on PID 1's console; never raises (a signal may arrive mid-print)."""
    with contextlib.suppress(Exception):
        out = _init.out or sys.stdout
        out.write(f"herdcast: {line}\n")
        out.flush()


def fallback_action(text: str) -> str:
    """onfail= as PID 1 reads it for itself: the last valid one, else `wait`. Never raises:
    the agent checks the command line properly and says what it found."""
    try:
        from agent.boot.tokens import tokens

        given = [v.lower() for k, v in tokens(text) if k.lower() == "onfail" and v]
    except Exception:  # noqa: BLE001 - PID 1 must not fail here
        return "wait"
    return given[-1] if given and given[-1] in pid1.POST_ACTIONS else "wait"


def tell_init(kind: str, action: str, *, finished: bool = False) -> None:
    """In the agent: what PID 1 is to do if the agent dies from now on (`kind` onfail or
    post). `finished`: the agent has its result and is about to do `action` itself, so
    nothing is written any more. Does nothing outside a supervised agent."""
    if kind not in ("onfail", "post") or action not in pid1.POST_ACTIONS:
        return
    if os.getpid() == 1:  # the agent runs in PID 1 itself (fork failed)
        _init.kind, _init.action, _init.finished = kind, action, finished
    elif _report_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_report_fd, f"{'finished' if finished else 'working'} {kind} "
                                 f"{action}\n".encode())


def _drain() -> None:
    """Read what the agent told PID 1 so far; the last line counts."""
    if _init.pipe is None:
        return
    while True:
        try:
            chunk = os.read(_init.pipe, 4096)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            chunk = b""
        if not chunk:
            break
        _init.buffer += chunk
    *lines, _init.buffer = _init.buffer.split(b"\n")
    for line in lines:
        words = line.decode("ascii", "replace").split()
        if (len(words) == 3 and words[0] in ("working", "finished")
                and words[1] in ("onfail", "post") and words[2] in pid1.POST_ACTIONS):
            _init.finished = words[0] == "finished"
            _init.kind, _init.action = words[1], words[2]


def _on_signal(signum: int, frame) -> None:
    with contextlib.suppress(Exception):  # a handler raising would unwind PID 1's work
        _signalled(signum)


def _signalled(signum: int) -> None:
    if signum != signal.SIGINT:
        _say(f"{signal.Signals(signum).name} ignored: PID 1 never exits (post=/onfail= "
             "say what a node does; power it off by hand to stop it)")
        return
    _drain()
    if _init.agent is not None and not _init.finished:
        _say("Ctrl-Alt-Del ignored: the agent is still working, and a reset now could "
             "leave a half-written disk; once it has its result, Ctrl-Alt-Del reboots")
        return
    _say("Ctrl-Alt-Del: nothing is being written; rebooting")
    pid1.power("reboot", _init.out)


def protect() -> None:
    """Make PID 1 survive signals and Ctrl-Alt-Del (only PID 1 turns the reset off)."""
    for signum in (signal.SIGINT, *IGNORED):
        signal.signal(signum, _on_signal)
    if os.getpid() == 1:
        pid1._libc().reboot(CAD_OFF)  # in a child PID namespace: EINVAL, and harmless


def stranded(why: str, detail: str = "") -> NoReturn:
    """PID 1's last resort: say why, again every REPEAT_SECONDS, reap, never return."""
    while True:
        try:
            _say(f"FAILED: {why} -- PID 1 is waiting; fix the initramfs, then power the "
                 "node off by hand")
            if detail:
                _say(detail.rstrip().replace("\n", "\nherdcast: "))
                detail = ""
            pid1.reap_all()
            time.sleep(REPEAT_SECONDS)
        except BaseException:  # noqa: BLE001, S110 - nothing may end PID 1
            pass


def _how_it_died(status: int) -> str:
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "was killed by SIGKILL (the kernel's OOM killer, or kill -9)"
    if os.WIFSIGNALED(status):
        return f"was {pid1.describe_status(status)}"
    if os.waitstatus_to_exitcode(status) == CRASH_STATUS:
        return "crashed (an internal error; its traceback is above)"
    return f"ended with {pid1.describe_status(status)}"


def after_agent(status: int) -> NoReturn:
    """The agent is gone: do what it would have done, in PID 1."""
    _drain()
    _init.agent = None
    if _init.finished:
        _say(f"the agent ended ({pid1.describe_status(status)}) while doing "
             f"{_init.kind}={_init.action}; PID 1 does it")
    else:
        _say(f"FAILED: the agent {_how_it_died(status)} before it had a result -- if this "
             "node was receiving, its disk is INCOMPLETE: do not boot from it; image it again")
        _init.kind = "onfail"
    _say(f"{_init.kind}={_init.action}")
    _init.finished = True  # nothing writes any more: Ctrl-Alt-Del reboots
    pid1.post_action(_init.action, _init.out)
    pid1.sleep_forever(_init.out, "waiting")


def _run_agent(agent: Callable[[], int], write_fd: int) -> NoReturn:
    """The forked child: an ordinary process again, that acts as init and tells PID 1."""
    global _report_fd
    try:
        for signum in (signal.SIGINT, *IGNORED):
            signal.signal(signum, signal.SIG_DFL)
        _report_fd = write_fd
        pid1.set_init_mode()
        rc = pid1.run_guarded(agent, _init.out)
        with contextlib.suppress(Exception):
            (_init.out or sys.stdout).flush()
    except BaseException:  # noqa: BLE001 - the child must not return into PID 1's code
        rc = CRASH_STATUS
    os._exit(rc if isinstance(rc, int) and 0 <= rc < 256 else 1)


def supervise(agent: Callable[[], int]) -> NoReturn:
    """Fork the agent, reap every child until it exits, then follow what it said."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        _say(f"fork failed ({exc}); running the agent as PID 1")
        pid1.set_init_mode()
        _init.agent = os.getpid()
        rc = pid1.run_guarded(agent, _init.out)
        after_agent(((rc if isinstance(rc, int) else 1) & 0xFF) << 8)  # as a wait status
    if pid == 0:
        os.close(read_fd)
        _run_agent(agent, write_fd)
    os.close(write_fd)
    fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    _init.pipe, _init.agent = read_fd, pid
    status = pid1.reap_until(pid)
    after_agent(status)


def init_main(agent: Callable[[], int], cmdline: Callable[[], str] | None = None
              ) -> NoReturn:
    """What PID 1 runs: protect itself, mount, open the consoles, read onfail=, then
    supervise `agent`. `cmdline` gives the command line (default /proc/cmdline, read once
    proc is mounted). Never returns, whatever fails."""
    try:
        _init.out = sys.stdout
        protect()
        os.environ.setdefault("PATH", pid1.DEFAULT_PATH)  # the kernel starts init without one
        pid1.mount_early(out=_init.out)
        text = ""
        with contextlib.suppress(Exception, SystemExit):
            text = cmdline() if cmdline else _read("/proc/cmdline")
        _init.action = fallback_action(text)
        from agent.boot.console import open_consoles

        _init.out = open_consoles(text, is_init=True)
    except BaseException as exc:  # noqa: BLE001 - PID 1 must not exit
        stranded(f"PID 1 could not start the agent: {type(exc).__name__}: {exc}",
                 traceback.format_exc())
    try:
        supervise(agent)
    except BaseException as exc:  # noqa: BLE001 - PID 1 must not exit
        stranded(f"PID 1's supervisor failed: {type(exc).__name__}: {exc}",
                 traceback.format_exc())


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
