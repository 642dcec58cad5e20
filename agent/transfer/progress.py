"""Progress reporting for send and receive.

One small class both sides share, so that a terminal shows the same live line (bytes, rate,
retransmit share, ETA, receivers) whichever side runs, and a log (a console captured by a
service manager, a PXE node's serial line) gets a plain line every few seconds instead of a
flood of carriage returns. `update` is called from the transfer loop, so it only looks at the
clock and returns until a line is due.
"""

from __future__ import annotations

import bisect
import sys
import time
from typing import TextIO

TTY_INTERVAL = 0.25  # seconds between live-line refreshes on a terminal
LOG_INTERVAL = 5.0  # seconds between plain lines otherwise


def human_bytes(n: float) -> str:
    """Bytes as a short decimal figure (MB/GB as disk vendors and `dd` print them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class Gauge:
    """A round's progress in the units of the data it carries, out of `total`: the bytes of
    a raw stream are the data; a used-block image's stream holds records and drops zero
    runs, so its bytes map to the disk's used bytes through marks (stream bytes read, used
    bytes its encoder had read then: `position`, agent.image.stream.Position), set by the
    reader at each slice. Percent and ETA of the sender's rows and line come from here."""

    def __init__(self, total: int | None = None, position=None) -> None:
        self.total = total
        self.position = position
        self.marks: list[tuple[int, int]] = [(0, 0)]

    def mark(self, stream_bytes: int) -> None:
        """The reader has read `stream_bytes` of the stream (its thread calls this)."""
        if self.position is not None:
            self.marks.append((stream_bytes, self.position.used))

    def data(self, stream_bytes: int) -> int:
        """The data bytes the first `stream_bytes` of the stream carry (between two marks,
        in proportion)."""
        if self.position is None:
            return stream_bytes
        marks = self.marks[:]  # the reader thread appends meanwhile
        i = bisect.bisect_right(marks, stream_bytes, key=lambda m: m[0]) - 1
        at, done = marks[i]
        if i + 1 == len(marks):
            return done
        nxt, more = marks[i + 1]
        return done + (more - done) * (stream_bytes - at) // max(nxt - at, 1)


class Progress:
    """A self rate-limiting progress line.

    `done` counts payload bytes delivered (receiver: written; sender: read and sent once);
    `retransmitted` and `sent` count packets or bytes (any unit, the same for both) so the
    line can show the retransmitted share.
    """

    def __init__(self, label: str, total: int | None = None, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.interval = TTY_INTERVAL if self.tty else LOG_INTERVAL
        self.start = time.monotonic()
        self._next = self.start + self.interval
        self._live = False  # a \r line is on screen and needs a newline before other output
        self.done = 0
        self.retransmitted = 0
        self.sent = 0
        self.receivers: int | None = None

    def update(self, done_bytes: int, *, retransmitted: int = 0, sent: int = 0,
               receivers: int | None = None) -> None:
        """Record the current counters; print a line only when one is due."""
        self.done = done_bytes
        self.retransmitted = retransmitted
        self.sent = sent
        if receivers is not None:
            self.receivers = receivers
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self._emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The current progress text (without line ending)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.label}: {human_bytes(self.done)}"]
        if self.total:
            parts[0] += f" / {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate / 1e6:.1f} MB/s")
        if self.sent:
            parts.append(f"retransmitted {100 * self.retransmitted / self.sent:.1f}%")
        eta = self.eta(rate)
        if eta is not None:
            parts.append(f"ETA {_eta(eta)}")
        if self.receivers is not None:
            parts.append(f"{self.receivers} receiver{'s' if self.receivers != 1 else ''}")
        return ", ".join(parts)

    def eta(self, rate: float) -> float | None:
        """Seconds left at `rate`, when the total is known."""
        if self.total and rate > 0 and self.done < self.total:
            return (self.total - self.done) / rate
        return None

    def _emit(self, text: str) -> None:
        try:
            if self.tty:
                self.stream.write("\r" + text + "\x1b[K")
                self._live = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # stderr gone (closed console): keep transferring silently

    def close(self, final_line: str | None = None) -> None:
        """End the live line; print `final_line` (e.g. the summary) if given."""
        if not self.enabled:
            return
        try:
            if self._live:
                self.stream.write("\n")
                self._live = False
            if final_line:
                self.stream.write(final_line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self.enabled = False
