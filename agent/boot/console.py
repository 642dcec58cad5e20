"""What the node says, on every console the admin may be looking at.

The kernel hands init one console, /dev/console, which is the *last* `console=` of the
command line. An admin watching the serial line of `console=ttyS0,115200 console=tty0` would
see nothing, so the node also writes every line to the other `console=` devices.

Only init opens console devices: a test or a server running `herdcast node --cmdline ...`
writes to stdout alone, never to the machine's real serial port.

Every line starts with `herdcast:`; failures say what failed and what to change, on one line,
so a photo of a monitor or a serial log is enough to act on.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from typing import TextIO

from agent.boot.tokens import consoles

PREFIX = "herdcast:"


def _device(console: str) -> str | None:
    """The device of one `console=` value (`ttyS0,115200n8` -> /dev/ttyS0); None for null."""
    name = console.split(",", 1)[0]
    if not name or name == "null":
        return None
    return name if name.startswith("/") else f"/dev/{name}"


def console_devices(cmdline: str) -> list[str]:
    """Device paths of the `console=` entries, in order, each once. The entries are read
    with the kernel's own splitting (agent.boot.tokens.consoles), so a quoted
    `"console=tty0"` counts as the kernel counts it."""
    devices: list[str] = []
    for console in consoles(cmdline):
        path = _device(console)
        if path is not None and path not in devices:
            devices.append(path)
    return devices


class Console(io.TextIOBase):
    """A text stream that tees every write to stdout and to extra console devices."""

    def __init__(self, primary: TextIO | None = None, extra: list[TextIO] | None = None):
        super().__init__()
        self._primary = primary
        self.extra = list(extra or [])

    @property
    def primary(self) -> TextIO:
        # resolved late so pytest's capture (which swaps sys.stdout) sees our lines
        return self._primary if self._primary is not None else sys.stdout

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        for stream in (self.primary, *self.extra):
            with contextlib.suppress(OSError, ValueError):
                stream.write(s)
                stream.flush()
        return len(s)

    def flush(self) -> None:
        for stream in (self.primary, *self.extra):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()

    def say(self, message: str) -> None:
        """One status line: `herdcast: message`."""
        self.write(f"{PREFIX} {message}\n")

    def fail(self, what: str, fix: str | None = None) -> None:
        """One failure line: what failed, and what to change."""
        tail = f" -- {fix}" if fix else ""
        self.write(f"{PREFIX} FAILED: {what}{tail}\n")


def open_consoles(cmdline: str, *, is_init: bool) -> Console:
    """The console for this run: stdout, plus (as init) every console= device but the
    kernel's own.

    The device of the last `console=` already is /dev/console, which init's stdout points
    at (a device named twice is still that one); writing it again would double every line.
    """
    extra: list[TextIO] = []
    named = consoles(cmdline)
    own = _device(named[-1]) if named else None
    if is_init:
        for path in [d for d in console_devices(cmdline) if d != own]:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as exc:
                print(f"{PREFIX} console {path} cannot be opened ({exc.strerror}); "
                      "continuing without it", flush=True)
                continue
            if stat.S_ISBLK(os.fstat(fd).st_mode):  # a disk (maybe the one cloned)
                os.close(fd)
                print(f"{PREFIX} console {path} is a disk, not a console: not written to",
                      flush=True)
                continue
            extra.append(open(fd, "w", buffering=1, encoding="utf-8",  # noqa: SIM115
                              errors="replace"))
    return Console(None, extra)


def tee_std(console: Console) -> None:
    """Send Python's own stdout/stderr (progress lines, tracebacks) to every console."""
    if console.extra:
        primary = console.primary
        console._primary = primary  # pin it: sys.stdout is about to become a tee itself
        sys.stdout = Console(primary, console.extra)  # type: ignore[assignment]
        sys.stderr = sys.stdout  # type: ignore[assignment]
