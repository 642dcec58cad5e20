"""The one output path for what herdcast tells its user: `say(line)`.

Status and error lines go to stderr (stdout may carry the image, as with udp-receiver
without `--file`), flushed at once so a console shows them as they happen. `--log FILE`
(udpcast's option) tees the same lines into a file for the rest of the command, through
`log_to`, instead of a module-global handle that every writer must remember to check: the
dispatcher runs each command in `one_command()`, so the log also gets the command's last
line, the error the dispatcher prints, and is closed after it. A log file outlives the
terminal that watched it, so each of its lines starts with the local time (ISO 8601, to the
second, with the UTC offset); the console's lines stay as they are.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from agent.errors import HerdcastError

_tees: list[TextIO] = []
_command: contextlib.ExitStack | None = None


class LogError(HerdcastError):
    """--log FILE cannot be opened for appending."""


def say(line: str) -> None:
    """One line to the user: stderr (looked up now, so tests' capture sees it) and any tee."""
    print(line, file=sys.stderr, flush=True)
    if not _tees:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    stamped = "".join(f"{now} {part}\n" for part in line.splitlines() or [""])
    for stream in _tees:
        with contextlib.suppress(OSError, ValueError):
            stream.write(stamped)
            stream.flush()


@contextlib.contextmanager
def one_command() -> Iterator[None]:
    """The length of one command: the logs `log_to` opens in it close when it ends."""
    global _command
    outer = _command
    with contextlib.ExitStack() as stack:
        _command = stack
        try:
            yield
        finally:
            _command = outer


def log_to(path: str | None) -> None:
    """From now to the end of the command (`one_command`), every `say()` line is appended to
    `path` too (None: nothing). Outside a command it stays until the process ends."""
    if path is None:
        return
    try:
        stream = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise LogError(f"--log {path}: {exc.strerror or exc}",
                       "give a file in a writable directory") from exc
    _tees.append(stream)
    if _command is not None:
        _command.callback(_close, stream)


def _close(stream: TextIO) -> None:
    _tees.remove(stream)
    stream.close()
