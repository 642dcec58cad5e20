"""What the send loop can tell a developer: a tracer that does nothing unless asked.

The loop calls its tracer at the few points where timing questions get answered (an
answer arrives, a slice completes, the pacer or the reader or the receivers keep it
waiting, sendmmsg runs). `Tracer` is the default and costs a method call; with
HERDCAST_DEBUG set, `DebugTracer` prints those events with timestamps and adds up the
waits, printed at the end of the round.
"""

from __future__ import annotations

import os
import time

from agent.say import say


class Tracer:
    """Does nothing: the default."""

    def round_started(self) -> None:
        """The round's first slice is about to go."""

    def answer(self, ip: str, op, msg, inflight) -> None:
        """An OK or RETRANSMIT arrived from `ip`."""

    def slice_done(self, s, rate: float, answer_time: float) -> None:
        """Slice `s` was OK'd by everybody."""

    def waited(self, what: str, seconds: float) -> None:
        """The loop waited `seconds` for `what` ("pacer", "reader", "answers", "send")."""

    def end(self, stats) -> None:
        """The end slice is done: the round's counters."""


class DebugTracer(Tracer):
    """HERDCAST_DEBUG: every event on the console, and the waits added up."""

    def __init__(self) -> None:
        self.waits: dict[str, float] = {}

    def round_started(self) -> None:
        say(f"round start t={time.monotonic():.3f}")

    def answer(self, ip: str, op, msg, inflight) -> None:
        if msg.slice_no < 4:
            say(f"t={time.monotonic():.4f} {ip} {op.name} slice={msg.slice_no} "
                f"pass={getattr(msg, 'rxmit', '-')} "
                f"inflight={[(x.no, x.rxmit, x.sent) for x in inflight]}")

    def slice_done(self, s, rate: float, answer_time: float) -> None:
        say(f"slice {s.no} done t={time.monotonic():.3f} passes={s.rxmit} "
            f"congested={s.congested} rate={rate / 1e6:.0f}M answer={answer_time * 1000:.1f}ms")

    def waited(self, what: str, seconds: float) -> None:
        self.waits[what] = self.waits.get(what, 0.0) + seconds

    def end(self, stats) -> None:
        waits = ", ".join(f"{k} {v:.3f} s" for k, v in sorted(self.waits.items()))
        say(f"end slice done t={time.monotonic():.3f} {stats}; waited: {waits or 'never'}")


def tracer() -> Tracer:
    """The tracer the environment asks for (HERDCAST_DEBUG: DebugTracer)."""
    return DebugTracer() if os.environ.get("HERDCAST_DEBUG") else Tracer()
