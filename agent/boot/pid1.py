"""The duties of an initramfs init, which the kernel leaves to whoever is PID 1.

- Mount proc, sys, devtmpfs, run and tmp: nothing else will.
- Reap children: orphans are re-parented to PID 1, and zombies pile up otherwise.
- Never exit: the kernel panics when init exits, and a panicked node tells the admin nothing.

PID 1 forks, the child runs the agent, and PID 1 does nothing but wait for any child
(agent.boot.supervisor). A SIGCHLD handler reaping in the agent's own process would steal the
exit status of the agent's subprocesses (modprobe, lzop) from `subprocess`, which then
reports them as successful.

Powering off happens only in init mode. Anything else (tests, a server running
`herdcast node --cmdline ...`) prints what it would do and returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn, TextIO

MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
RB_AUTOBOOT = 0x01234567  # LINUX_REBOOT_CMD_RESTART
RB_POWER_OFF = 0x4321FEDC  # LINUX_REBOOT_CMD_POWER_OFF

# (source, target, fstype, flags, data): what an initramfs needs before anything else.
EARLY_MOUNTS = [
    ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
    ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
]

POST_ACTIONS = ("poweroff", "reboot", "shell", "wait")
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

_init_mode = False


def is_init() -> bool:
    """True in PID 1 and in the agent process PID 1 forked: the only ones that power off."""
    return _init_mode or os.getpid() == 1


def set_init_mode() -> None:
    """In the agent PID 1 forked: act as init (power off, open the console devices)."""
    global _init_mode
    _init_mode = True


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_early(mounts=EARLY_MOUNTS, out: TextIO | None = None) -> list[str]:
    """Mount what is not mounted yet; returns the targets mounted. Failures are reported,
    not raised: a node without /run can still image its disk."""
    out = out or sys.stdout
    libc = _libc()
    done = []
    for source, target, fstype, flags, data in mounts:
        if os.path.ismount(target):
            continue
        if fstype == "tmpfs" and os.path.isdir(target) and os.listdir(target):
            continue  # never hide files: an initramfs has these empty
        os.makedirs(target, exist_ok=True)
        rc = libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                        data.encode() if data else None)
        if rc != 0:
            err = ctypes.get_errno()
            print(f"herdcast: mount {fstype} on {target} failed: {os.strerror(err)}",
                  file=out, flush=True)
        else:
            done.append(target)
    return done


def find_shell() -> list[str] | None:
    """The rescue shell: busybox's sh (the initramfs has busybox), else any sh."""
    for candidate in ("/bin/sh", "/usr/bin/sh"):
        if os.access(candidate, os.X_OK):
            return [candidate]
    busybox = shutil.which("busybox")
    if busybox:
        return [busybox, "sh"]
    sh = shutil.which("sh")
    return [sh] if sh else None


def sleep_forever(out: TextIO | None = None, message: str | None = None) -> NoReturn:
    """What init does when nothing else is left: stay alive (the console stays readable).
    PID 1 itself keeps reaping orphans meanwhile."""
    if message:
        print(f"herdcast: {message}", file=out or sys.stdout, flush=True)
    while True:
        if os.getpid() == 1:
            reap_all()
            time.sleep(10)
        else:
            time.sleep(3600)


def reap_all() -> None:
    """Reap every child that has exited, without waiting for the others."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return


def rescue_shell(out: TextIO | None = None) -> NoReturn:
    """A shell on the console for the admin, started again when it exits; never returns."""
    out = out or sys.stdout
    shell = find_shell()
    if shell is None:
        sleep_forever(out, "no shell in this initramfs; waiting (power the node off by hand)")
    while True:
        print("herdcast: starting a rescue shell (exit it to get a new one)", file=out,
              flush=True)
        try:
            proc = subprocess.Popen(shell)
        except OSError as exc:
            sleep_forever(out, f"rescue shell {shell[0]} failed ({exc}); waiting")
        reap_until(proc.pid)  # PID 1 keeps reaping orphans while the admin works
        proc.returncode = 0  # reaped above; keeps Popen from waiting for it again
        time.sleep(1)  # a shell that dies at once must not spin the CPU


def power(action: str, out: TextIO | None = None) -> None:
    """poweroff or reboot the machine in init mode; elsewhere only say so and return."""
    out = out or sys.stdout
    if action not in ("poweroff", "reboot"):
        raise ValueError(f"power action {action!r}: use poweroff or reboot")
    if not is_init():
        print(f"herdcast: {action}: not init (PID {os.getpid()}), so not doing it",
              file=out, flush=True)
        return
    print(f"herdcast: {'powering off' if action == 'poweroff' else 'rebooting'}", file=out,
          flush=True)
    os.sync()
    rc = _libc().reboot(RB_POWER_OFF if action == "poweroff" else RB_AUTOBOOT)
    err = ctypes.get_errno()
    print(f"herdcast: {action} failed (rc={rc}: {os.strerror(err)}); waiting", file=out,
          flush=True)


def post_action(action: str, out: TextIO | None = None) -> None:
    """Do what post= (after success) or onfail= (after a failure) says. Returns only when
    not init: tests and servers get the exit status instead."""
    out = out or sys.stdout
    if action in ("poweroff", "reboot"):
        power(action, out)
        if not is_init():
            return
        sleep_forever(out)
    if not is_init():
        print(f"herdcast: {action}: not init, so returning instead", file=out, flush=True)
        return
    if action == "shell":
        rescue_shell(out)
    sleep_forever(out, "waiting (wait): power the node off when you like")


def run_guarded(main: Callable[[], int], out: TextIO | None = None) -> int:
    """main(), with any exception printed as a failure instead of escaping."""
    out = out or sys.stdout
    try:
        return main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - init must survive everything
        print(f"herdcast: FAILED: internal error {type(exc).__name__}: {exc} -- this is a "
              "herdcast bug; the traceback follows", file=out, flush=True)
        traceback.print_exc(file=out)
        out.flush()
        return 70


def reap_until(pid: int) -> int:
    """Reap every child (orphans included) until `pid` exits; returns its wait status."""
    while True:
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if child == pid:
            return status


def describe_status(status: int) -> str:
    """A wait status in words: `killed by SIGKILL (signal 9)`, `exit status 3`."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            return f"killed by signal {number}"
        return f"killed by {name} (signal {number})"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
