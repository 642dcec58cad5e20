"""What the sender's operator watches: a live fleet table on a terminal, plain lines elsewhere.

On a terminal (stderr is one, and rich imports) a `LiveView` redraws a rich table in place:
one row per receiver with its address, MAC, host name, state, bytes, rate, retransmitted
blocks and ETA, under a line for the round. Anywhere else (a node's console, a log file, a
pipe) a `PlainView` prints today's progress line every few seconds, with the receivers
counted by state. Both are `Progress`es, so the transfer loop drives them as before, and
`tick()` lets the wait between rounds refresh them too. rich is imported only here and only
for a terminal: a node never loads it.
"""

from __future__ import annotations

import contextlib
import sys
import time

from agent.transfer.progress import Progress, _eta, human_bytes
from agent.transfer.send.fleet import Fleet
from agent.transfer.send.record import Receiver

LIVE_INTERVAL = 0.5  # seconds between redraws of the live table


class PlainView(Progress):
    """The progress line, plus how many receivers are in each state."""

    def __init__(self, fleet: Fleet, total: int | None, enabled: bool) -> None:
        super().__init__("send", total=total, enabled=enabled)
        self.fleet = fleet
        self.base = 0

    def line(self, now: float | None = None) -> str:
        text = super().line(now)
        counts = self.fleet.counts()
        if counts:
            text += " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
        return text

    def new_round(self, total: int | None, base: int) -> None:
        """Counters start again with each round (`base`: bytes sent before it)."""
        self.total, self.start, self.base = total, time.monotonic(), base

    def update(self, done_bytes: int, **counters) -> None:
        super().update(done_bytes - self.base, **counters)

    def tick(self) -> None:
        """Between rounds nothing is sent: nothing to print."""


class LiveView(PlainView):
    """A rich Live table of the fleet, redrawn in place."""

    def __init__(self, fleet: Fleet, total: int | None, enabled: bool) -> None:
        super().__init__(fleet, total, enabled)
        from rich.console import Console
        from rich.live import Live

        self.interval = LIVE_INTERVAL
        self._next = 0.0
        self.console = Console(file=sys.stderr)
        self.live = Live(console=self.console, auto_refresh=False, transient=False,
                         redirect_stderr=True, redirect_stdout=False)
        self.live.start()

    def _emit(self, text: str) -> None:
        try:
            self.live.update(self.table(text), refresh=True)
        except (OSError, ValueError):
            self.enabled = False

    def tick(self) -> None:
        if self.enabled and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            self._emit(self.line() if self.fleet.in_round else "waiting for receivers")

    def table(self, title: str):
        from rich.table import Table

        t = Table(title=title, title_justify="left", expand=False)
        for name, justify in (("receiver", "left"), ("MAC", "left"), ("host", "left"),
                              ("state", "left"), ("bytes", "right"), ("rate", "right"),
                              ("rexmit", "right"), ("ETA", "right"), ("changed", "left")):
            t.add_column(name, justify=justify)
        now = time.time()
        style = {"done": "green", "failed": "bold red", "dropped": "red",
                 "receiving": "cyan", "verifying": "yellow", "waiting": "dim"}
        for r in self.fleet.rows:
            state = r.state.value
            elapsed = ((r.ended or now) - r.started) if r.started else 0.0
            rate = r.bytes / elapsed if elapsed > 0 else 0.0
            eta = ""
            if state == "receiving" and self.total and rate > 0 and r.bytes < self.total:
                eta = _eta((self.total - r.bytes) / rate)
            t.add_row(r.address, r.mac or "", r.hostname or "",
                      f"[{style[state]}]{state}[/]", human_bytes(r.bytes) if r.bytes else "",
                      f"{rate / 1e6:.1f} MB/s" if rate else "", str(r.retransmissions), eta,
                      _changed(r))
        return t

    def close(self, final_line: str | None = None) -> None:
        if self.enabled:
            self.tick()
            self._next = 0.0
            self._emit(self.line())
        self.enabled = False
        with contextlib.suppress(OSError, ValueError):
            self.live.stop()
        if final_line:
            print(final_line, file=sys.stderr)


def _changed(r: Receiver) -> str:
    """The live table's word for what personalising did to a receiver's clone."""
    if r.personalised == "done":
        return f"{len(r.changes)} change(s)"
    return {"working": "[yellow]personalising[/]", "failed": "[bold red]failed[/]"}.get(
        r.personalised or "", "")


def make_view(fleet: Fleet, total: int | None, *, enabled: bool, live: bool | None
              ) -> PlainView:
    """The live table when asked (`live`: True) or by default on a terminal, else plain."""
    want = live if live is not None else _stderr_is_terminal()
    if enabled and want:
        try:
            return LiveView(fleet, total, enabled)
        except ImportError:  # a frozen node without rich: plain lines
            pass
    return PlainView(fleet, total, enabled)


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False
