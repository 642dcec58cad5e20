"""What the sender's operator watches: a live fleet table on a terminal, plain lines elsewhere.

On a terminal (stderr is one, and rich imports) a `LiveView` redraws a rich table in place:
one row per receiver with its address, MAC, host name, state, data done (and percent),
rate, retransmitted blocks and ETA, under a line for the round whose ETA is the slowest
row's. Anywhere else (a node's console, a log file, a pipe) a `PlainView` prints today's
progress line every few seconds, with the receivers counted by state. Both are
`Progress`es, so the transfer loop drives them as before, and `tick()` lets the wait
between rounds refresh them too. Percent and ETA count the round's data (progress.Gauge).
rich is imported only here and only for a terminal: a node never loads it.
"""

from __future__ import annotations

import contextlib
import sys
import time

from agent.transfer.progress import Gauge, Progress, _eta, human_bytes
from agent.transfer.send.fleet import Fleet
from agent.transfer.send.record import Receiver

LIVE_INTERVAL = 0.5  # seconds between redraws of the live table
NARROW = 100  # below this many columns the live table leaves out MAC, rate and rexmit


class PlainView(Progress):
    """The progress line, plus how many receivers are in each state. Its bytes, percent and
    ETA count the round's data (`Gauge`): for a used-block image, the disk's used bytes."""

    def __init__(self, fleet: Fleet, total: int | None, enabled: bool) -> None:
        super().__init__("send", total=total, enabled=enabled)
        self.fleet = fleet
        self.base = 0
        self.gauge = Gauge(total)

    def line(self, now: float | None = None) -> str:
        text = super().line(now)
        counts = self.fleet.counts()
        if counts:
            text += " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
        return text

    def new_round(self, gauge: Gauge, base: int) -> None:
        """Counters start again with each round (`base`: bytes sent before it)."""
        self.gauge, self.total, self.start, self.base = gauge, gauge.total, time.monotonic(), base

    def update(self, done_bytes: int, **counters) -> None:
        super().update(self.gauge.data(done_bytes - self.base), **counters)

    def tick(self) -> None:
        """Between rounds nothing is sent: nothing to print."""

    def row(self, r: Receiver, now: float) -> tuple[str, str, str]:
        """A receiver's (data done with its percent, rate, ETA), in the round's data units
        (its acknowledged stream bytes through the gauge), as the live table shows them."""
        elapsed = ((r.ended or now) - r.started) if r.started else 0.0
        done = self.gauge.data(r.bytes) if r.verdict is None else r.bytes
        rate = done / elapsed if elapsed > 0 else 0.0
        total = self.total if r.verdict is None else None
        text = human_bytes(done) if done else ""
        if total and done:
            text += f" {min(100 * done // total, 100)}%"
        eta = _eta((total - done) / rate) if _estimable(done, total) and rate > 0 else ""
        return text, f"{rate / 1e6:.1f} MB/s" if rate else "", eta

    def slowest(self, now: float) -> float | None:
        """Seconds until the slowest receiving row is done (None: none can say)."""
        etas = []
        for r in self.fleet.rows:
            if r.verdict is not None or not r.started or not self.total:
                continue
            done = self.gauge.data(r.bytes)
            elapsed = now - r.started
            if _estimable(done, self.total) and elapsed > 0:
                etas.append((self.total - done) / (done / elapsed))
        return max(etas) if etas else None


def _estimable(done: int, total: int | None) -> bool:
    """An ETA says something once a receiver has done a little (half a percent) and is not
    done: from its first bytes alone it would be a wild guess."""
    return bool(total) and total / 200 <= done < total


class LiveView(PlainView):
    """A rich Live table of the fleet, redrawn in place. Its title's ETA is its slowest
    row's, so the two never disagree; narrower than NARROW columns (a node's console, a
    small terminal) it keeps address, host, state, progress and ETA whole."""

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

    def eta(self, rate: float) -> float | None:
        return self.slowest(time.time())

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
        return fleet_table(self, title, self.console.width)

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


STYLE = {"done": "green", "failed": "bold red", "dropped": "red", "receiving": "cyan",
         "verifying": "yellow", "waiting": "dim"}


def fleet_table(view: PlainView, title: str, width: int):
    """The rich table of `view`'s fleet for a `width`-column screen. Below NARROW columns
    MAC, rate and rexmit are left out, and `changed` unless a clone is being personalised,
    so address, host and state stay whole."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    narrow = width < NARROW
    t = Table(title=escape(title), title_justify="left", expand=False,
              box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, pad_edge=not narrow)
    columns = [("receiver", "left", 15), ("MAC", "left", 17), ("host", "left", None),
               ("state", "left", 9), ("done", "right", None), ("rate", "right", None),
               ("rexmit", "right", None), ("ETA", "right", 5), ("changed", "left", None)]
    personal = any(r.personalised for r in view.fleet.rows)
    keep = [c for c in columns if not narrow or c[0] not in ("MAC", "rate", "rexmit")
            and (c[0] != "changed" or personal)]
    for name, justify, least in keep:
        t.add_column(name, justify=justify, min_width=least, overflow="fold")
    now = time.time()
    for r in view.fleet.rows:
        state = r.state.value
        done, rate, eta = view.row(r, now)
        cells = {"receiver": r.address, "MAC": r.mac or "", "host": escape(r.hostname or ""),
                 "state": f"[{STYLE[state]}]{state}[/]", "done": done, "rate": rate,
                 "rexmit": str(r.retransmissions), "ETA": eta, "changed": _changed(r)}
        t.add_row(*(cells[name] for name, _, _ in keep))
    return t


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
