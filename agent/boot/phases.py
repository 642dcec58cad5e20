"""Where a node's boot went: one console line with each step's time, since the kernel started.

Power-on to cloned is what an admin waits for (issue 22), and a serial log shows the boot
loaders but not what the agent spent: starting Python, drivers, network, the transfer. The
node marks the end of each step on the boot clock (CLOCK_BOOTTIME: seconds since the kernel
started, suspend included) and says them all on one line at the end, success or not, e.g.

    herdcast: boot phases (s after the kernel started): python 5.2, agent 6.3, hardware +3.2,
    network +1.1, disk +0.1, transfer +3.0, done 13.7

`python` is when PID 1's Python began running herdcast's code (the kernel's own "Run /init"
line says when /init started), `agent` when the node's own steps began (PID 1 set up, the
agent forked, its modules imported), then each step's duration. Run by hand (tests, a
server) the clock is the host's and there is no `python` mark: the durations still hold.
"""

from __future__ import annotations

import time

#: When PID 1's Python reached herdcast's code (python_started); the forked agent inherits it.
_python_started: float | None = None


def since_boot() -> float:
    """Seconds since the kernel started."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def python_started() -> None:
    """PID 1 calls this first thing: its Python is up and running herdcast's code."""
    global _python_started
    _python_started = since_boot()


class Phases:
    """The node's step marks: created when its steps begin, `mark`ed as each one ends."""

    def __init__(self, python: float | None = None, now: float | None = None) -> None:
        self.python = python if python is not None else _python_started
        self.started = since_boot() if now is None else now
        self.marks: list[tuple[str, float]] = []

    def mark(self, step: str, now: float | None = None) -> None:
        """Step `step` has just ended."""
        self.marks.append((step, since_boot() if now is None else now))

    def line(self) -> str:
        """The console line (without its `herdcast:` prefix)."""
        parts = [f"python {self.python:.1f}"] if self.python is not None else []
        parts.append(f"agent {self.started:.1f}")
        last = self.started
        for step, at in self.marks:
            parts.append(f"{step} +{at - last:.1f}")
            last = at
        parts.append(f"done {last:.1f}")
        return "boot phases (s after the kernel started): " + ", ".join(parts)
