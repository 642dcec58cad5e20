"""Where a node's boot went: one console line with each step's time, since the kernel started.

Power-on to cloned is what an admin waits for (issue 22), and a serial log shows the boot
loaders but not what the agent spent: starting Python, drivers, network, the transfer. The
node marks the end of each step on the boot clock (CLOCK_BOOTTIME: seconds since the kernel
started, suspend included) and says them all on one line at the end, success or not, e.g.

    herdcast: boot phases (s after the kernel started): init 4.1, agent 6.3, hardware +3.2,
    network +1.1, disk +0.1, transfer +3.0, done 13.7

`init` is when the kernel ran /init (PID 1's start), `agent` when the node's own steps began
(the frozen Python started and its first modules imported), then each step's duration.
Run by hand (tests, a server) the clock is the host's: the durations still hold.
"""

from __future__ import annotations

import os
import time


def since_boot() -> float:
    """Seconds since the kernel started."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_start(pid: int = 1, proc_root: str = "/proc") -> float | None:
    """When process `pid` started, in seconds since the kernel started (its /proc stat
    starttime); None if unreadable."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="ascii",
                  errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, IndexError, ValueError):
        return None


class Phases:
    """The node's step marks: created when its steps begin, `mark`ed as each one ends."""

    def __init__(self, init: float | None = None, now: float | None = None) -> None:
        self.init = init
        self.started = since_boot() if now is None else now
        self.marks: list[tuple[str, float]] = []

    def mark(self, step: str, now: float | None = None) -> None:
        """Step `step` has just ended."""
        self.marks.append((step, since_boot() if now is None else now))

    def line(self) -> str:
        """The console line (without its `herdcast:` prefix)."""
        parts = [f"init {self.init:.1f}"] if self.init is not None else []
        parts.append(f"agent {self.started:.1f}")
        last = self.started
        for step, at in self.marks:
            parts.append(f"{step} +{at - last:.1f}")
            last = at
        parts.append(f"done {last:.1f}")
        return "boot phases (s after the kernel started): " + ", ".join(parts)
