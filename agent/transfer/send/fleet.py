"""The sender's fleet: every receiver's row as it goes, one line and one event per change.

The participant table (send.participants) tells a `Fleet` when a receiver connects and when
its verdict is known (digest agreed or not, dropped, gone); the send loop tells it when a
round starts and ends, and which receivers asked to join while a round ran. From that the
fleet keeps one `ReceiverReport` per receiver and round served (a node imaged twice under
--serve has two), says one line per finished, failed or dropped receiver as it happens,
writes `--events` JSON lines, and gives the views (send.view) each receiver's state.
The JSON report and its schema are send.jsonreport's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from agent.say import say
from agent.transfer.result import ReceiverReport
from agent.transfer.send.names import Names
from agent.transfer.send.report import describe

STATES = ("waiting", "receiving", "verifying", "done", "failed", "dropped")


def state_of(report: ReceiverReport) -> str:
    """The row's final state from its verdict."""
    if report.status == "ok":
        return "done"
    return "dropped" if report.status == "dropped" else "failed"


def event_of(report: ReceiverReport) -> str:
    """The event a verdict is: finished, failed or dropped."""
    return {"done": "finished"}.get(state_of(report), state_of(report))


def iso(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with milliseconds (None stays None)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass
class RoundInfo:
    """One round: when, what kind of stream, to whom."""

    number: int
    started: float
    kind: str  # "raw" or "image" (herdcast's used-block stream)
    receivers: int
    ended: float | None = None
    bytes: int = 0
    sha256: str | None = None


class FleetObserver(Protocol):
    """Told of each receiver as the fleet sees it (herdcast deploy: its nodes by MAC).
    `connected` may set the row's hostname: the live view and the reports show it."""

    def connected(self, report: ReceiverReport) -> None: ...

    def verdict(self, report: ReceiverReport) -> None: ...


@dataclass
class Fleet:
    """Every receiver seen, its rows, and the rounds; see the module docstring."""

    events: TextIO | None = None  # --events stream
    observer: FleetObserver | None = None
    names: Names = field(default_factory=Names)
    rows: list[ReceiverReport] = field(default_factory=list)  # in order of connection
    waiting: dict[str, ReceiverReport] = field(default_factory=dict)  # asked during a round
    live: dict[str, ReceiverReport] = field(default_factory=dict)  # this round's participants
    verifying: set[str] = field(default_factory=set)  # OK'd the end, digest not yet in
    rounds: list[RoundInfo] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    round_no: int = -1
    in_round: bool = False
    _final: set[int] = field(default_factory=set)  # id() of rows whose verdict was told

    # ------------------------------------------------------------------ the table's calls

    def on_connect(self, report: ReceiverReport) -> None:
        """A new participant (Table.connect): its row, and a `connected` event unless it
        already asked during the round before (then it was connected then)."""
        early = self.waiting.pop(report.address, None)
        if any(r is report for r in self.rows):
            return
        report.mac = report.mac or self.names.mac(report.address)
        report.hostname = self.names.hostname(report.address)
        if self.observer is not None:
            self.observer.connected(report)
        self.rows.append(report)
        if early is None:
            self.emit("connected", report)

    def on_verdict(self, report: ReceiverReport) -> None:
        """Its verdict is known (digest, drop, disconnect, or the round's end): one line and
        one event, once per row."""
        if id(report) in self._final:
            return
        if report.started is None:  # it left before its round started: no row
            self.rows = [r for r in self.rows if r is not report]
            self.emit("dropped", report, reason="left before its round started")
            return
        self._final.add(id(report))
        report.ended = time.time()
        report.mac = report.mac or self.names.mac(report.address)
        self.live.pop(report.address, None)
        self.verifying.discard(report.address)
        name = report.address + (f" ({report.mac})" if report.mac else "")
        say(f"herdcast send: receiver {name} {state_of(report)}: {report.bytes} bytes, "
            f"{report.retransmissions} retransmitted blocks, {describe(report).lower()}")
        self.emit(event_of(report), report, verdict=report.status)
        if self.observer is not None:
            self.observer.verdict(report)

    # ------------------------------------------------------------------ the send loop's

    def on_late(self, ip: str, herdcast: bool) -> None:
        """A receiver asked while a round ran: it waits for the next one."""
        if ip in self.waiting or ip in self.live:
            return
        report = ReceiverReport(ip, herdcast=herdcast, mac=self.names.mac(ip),
                                hostname=self.names.hostname(ip))
        if self.observer is not None:
            self.observer.connected(report)
        self.waiting[ip] = report
        self.emit("connected", report, late=True)

    def on_finished_data(self, ip: str) -> None:
        """It OK'd the end slice; a herdcast receiver now checks its digest."""
        if ip in self.live and self.live[ip].herdcast:
            self.verifying.add(ip)

    def round_started(self, number: int, participants: list[ReceiverReport], kind: str
                      ) -> None:
        """A round starts sending to `participants` (this round's rows)."""
        now = time.time()
        self.round_no, self.in_round = number, True
        self.live = {r.address: r for r in participants}
        self.rounds.append(RoundInfo(number, now, kind, len(participants)))
        self.emit("round_started", None, round=number, kind=kind,
                  receivers=[r.address for r in participants])
        for r in participants:
            r.round, r.started = number, now
            r.mac = r.mac or self.names.mac(r.address)
            self.emit("started", r)

    def round_ended(self, total: int, sha256: str | None) -> None:
        """The round is over (every participant's verdict told by then)."""
        self.in_round = False
        if self.rounds:
            info = self.rounds[-1]
            info.ended, info.bytes, info.sha256 = time.time(), total, sha256
            self.emit("round_ended", None, round=info.number, bytes=total, sha256=sha256,
                      seconds=round(info.ended - info.started, 3))
        self.live = {}
        self.verifying.clear()

    def dropped_unseen(self, ips: set[str]) -> None:
        """Late receivers that did not come back for their round: dropped rows."""
        for ip in sorted(ips):
            report = self.waiting.pop(ip, None) or ReceiverReport(ip)
            report.status = "dropped"
            report.started = report.started or time.time()
            self.rows.append(report)
            self.on_verdict(report)

    def interrupted(self) -> None:
        """Stopped in the middle of a round: its receivers are failed rows."""
        for report in list(self.live.values()):
            if id(report) not in self._final:
                report.status = "interrupted"
                self.on_verdict(report)

    # ------------------------------------------------------------------ reading

    def state(self, report: ReceiverReport) -> str:
        """waiting, receiving, verifying, done, failed or dropped."""
        if id(report) in self._final:
            return state_of(report)
        if report.address in self.live and self.live[report.address] is report:
            return "verifying" if report.address in self.verifying else "receiving"
        return "waiting"

    def all_rows(self) -> list[ReceiverReport]:
        """Every row, the ones waiting for a round included."""
        return self.rows + [r for r in self.waiting.values() if r not in self.rows]

    def counts(self) -> dict[str, int]:
        """How many rows are in each state (states with none left out)."""
        out: dict[str, int] = {}
        for r in self.all_rows():
            s = self.state(r)
            out[s] = out.get(s, 0) + 1
        return out

    def finished_rows(self) -> list[ReceiverReport]:
        """The rows with a verdict (what the final table and the report list)."""
        return [r for r in self.rows if id(r) in self._final]

    # ------------------------------------------------------------------ events

    def emit(self, event: str, report: ReceiverReport | None, **extra) -> None:
        """One JSON line on the --events stream (nothing without one)."""
        if self.events is None:
            return
        line: dict = {"time": iso(time.time()), "event": event}
        if report is not None:
            line.update(address=report.address, mac=report.mac, hostname=report.hostname,
                        round=report.round if report.started is not None else None,
                        herdcast=report.herdcast)
            if event in ("finished", "failed", "dropped"):
                line.update(bytes=report.bytes, retransmissions=report.retransmissions,
                            digest=report.digest)
        line.update(extra)
        try:
            self.events.write(json.dumps(line) + "\n")
            self.events.flush()
        except (OSError, ValueError):
            self.events = None  # a closed pipe: stop writing events, keep serving


def open_events(path: str | None) -> tuple[TextIO | None, bool]:
    """The --events stream and whether we opened it (stdout is not ours to close)."""
    if path is None:
        return None, False
    if path == "-":
        return sys.stdout, False
    return open(path, "a", encoding="utf-8"), True  # noqa: SIM115 - closed by the sender
