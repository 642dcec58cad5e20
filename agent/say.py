"""The one output path for what herdcast tells its user: `say(line)`.

Status and error lines go to stderr (stdout may carry the image, as with udp-receiver
without `--file`), flushed at once so a console shows them as they happen. `--log FILE`
(udpcast's option) tees the same lines into a file for the length of a transfer, through
`log_to`, instead of a module-global handle that every writer must remember to check.
A log file outlives the terminal that watched it, so each of its lines starts with the local
time (ISO 8601, to the second, with the UTC offset); the console's lines stay as they are.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

_tees: list[TextIO] = []


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
def log_to(path: str | None) -> Iterator[None]:
    """While the block runs, every `say()` line is appended to `path` too (None: nothing)."""
    if path is None:
        yield
        return
    with open(path, "a", encoding="utf-8", errors="replace") as stream:
        _tees.append(stream)
        try:
            yield
        finally:
            _tees.remove(stream)
