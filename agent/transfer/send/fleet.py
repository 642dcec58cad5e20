"""The sender's fleet: every receiver's row as it goes, one line and one event per change.

The participant table (send.participants) tells a `Fleet` when a receiver connects or asks
to join while a round runs, when it OK'd the end, and when its verdict is given; the send
loop tells it when a round starts and ends. The rows are the receivers' records
(send.record: a node imaged twice under --serve has two), in order of connection. The fleet
says one line per finished, failed or dropped receiver as it happens, writes `--events`
JSON lines, and tells its observer (herdcast deploy) of each receiver. Rows of receivers that
never answered anything (a forged CONNECT_REQ, a machine switched off at once) are kept up
to MAX_UNHEARD_ROWS and counted beyond, so a flood of forgeries cannot grow the report
without bound. The JSON report and its schema are send.jsonreport's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from agent.say import say
from agent.transfer.send.names import Names
from agent.transfer.send.participants import TableEvents
from agent.transfer.send.record import NoObserver, Receiver, ReceiverObserver, State, Verdict
from agent.transfer.send.report import describe

MAX_UNHEARD_ROWS = 64  # rows of receivers that never answered, before they are only counted


def event_of(r: Receiver) -> str:
    """The event a verdict is: finished, failed or dropped."""
    return {State.DONE: "finished", State.DROPPED: "dropped"}.get(r.state, "failed")


def iso(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with milliseconds (None stays None)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass
class RoundInfo:
    """One service round: when, what kind of stream, to whom, and what it sent."""

    number: int
    started: float
    kind: str  # "raw" or "image" (herdcast's used-block stream)
    receivers: int
    ended: float | None = None
    bytes: int = 0  # the stream's bytes
    sha256: str | None = None
    packets: int = 0  # data, retransmitted and FEC packets of the round
    retransmitted: int = 0
    fec: int = 0  # FEC blocks among them


@dataclass
class Fleet(TableEvents):
    """Every receiver seen, its rows, and the rounds; see the module docstring."""

    events: TextIO | None = None  # --events stream
    observer: ReceiverObserver = field(default_factory=NoObserver)
    names: Names = field(default_factory=Names)
    rows: list[Receiver] = field(default_factory=list)  # in order of connection
    rounds: list[RoundInfo] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    round_no: int = -1
    in_round: bool = False
    unheard_left_out: int = 0  # rows of never-heard receivers not kept (MAX_UNHEARD_ROWS)

    # ------------------------------------------------------------------ the table's calls

    def _listed(self, r: Receiver) -> bool:
        return any(row is r for row in self.rows)

    def _add(self, r: Receiver, late: bool) -> None:
        if self._listed(r):
            return
        r.mac = r.mac or self.names.mac(r.address)
        r.hostname = r.hostname or self.names.hostname(r.address)
        self.observer.connected(r)
        self.rows.append(r)
        self.emit("connected", r, **({"late": True} if late else {}))

    def on_connect(self, r: Receiver) -> None:
        """A new participant (Table.connect): its row and a `connected` event, unless it
        asked during the round before (it has its row since then)."""
        self._add(r, late=False)

    def on_late(self, r: Receiver) -> None:
        """A receiver asked while a round ran: its row waits for the next one."""
        say(f"herdcast send: receiver {r.address} joined late: it gets the next round")
        self._add(r, late=True)

    def on_verdict(self, r: Receiver) -> None:
        """Its verdict was given (digest, drop, disconnect, or the round's end): one line
        and one event."""
        if r.started is None and r.verdict is not Verdict.FAILED:  # left before its round
            # started: no row (one that failed and said why keeps its row: the reason)
            self.rows = [row for row in self.rows if row is not r]
            self.emit("dropped", r, reason="left before its round started")
            return
        r.ended = time.time()
        r.mac = r.mac or self.names.mac(r.address)
        if not r.heard:
            self._bound_unheard()
        name = r.address + (f" ({r.mac})" if r.mac else "")
        verdict, _, reason = describe(r).partition(" (")
        say(f"herdcast send: receiver {name} {r.state.value}: {r.bytes} bytes, "
            f"{r.retransmissions} retransmitted blocks, {verdict.lower()}"
            + (f" ({reason}" if reason else ""))
        self.emit(event_of(r), r, verdict=str(r.verdict), reason=r.reason)
        self.observer.verdict(r)

    def on_changed(self, r: Receiver) -> None:
        """What personalising changed on its clone (or why it failed): lines and an event."""
        name = r.address + (f" ({r.hostname})" if r.hostname else "")
        if r.personalised == "failed":
            say(f"herdcast send: receiver {name} not personalised: "
                f"{'; '.join(r.changes) or 'no reason given'}")
        else:
            say(f"herdcast send: receiver {name} personalised, {len(r.changes)} change(s)")
            for line in r.changes:
                say(f"herdcast send:   {r.address} changed: {line}")
        self.emit("personalised", r, status=r.personalised, changes=r.changes)

    def _bound_unheard(self) -> None:
        """Keep at most MAX_UNHEARD_ROWS rows of receivers that never answered."""
        unheard = [row for row in self.rows if not row.heard and row.verdict is not None]
        if len(unheard) > MAX_UNHEARD_ROWS:
            drop = unheard[0]
            self.rows = [row for row in self.rows if row is not drop]
            self.unheard_left_out += 1

    # ------------------------------------------------------------------ the send loop's

    def round_started(self, number: int, participants: list[Receiver], kind: str) -> None:
        """A round starts sending to `participants` (this round's rows)."""
        now = time.time()
        self.round_no, self.in_round = number, True
        self.rounds.append(RoundInfo(number, now, kind, len(participants)))
        self.emit("round_started", None, round=number, kind=kind,
                  receivers=[r.address for r in participants])
        for r in participants:
            r.round, r.started, r.state = number, now, State.RECEIVING
            r.mac = r.mac or self.names.mac(r.address)
            self.emit("started", r)

    def round_ended(self, total: int, sha256: str | None, packets: int = 0,
                    retransmitted: int = 0, fec: int = 0) -> None:
        """The round is over (every participant's verdict given by then)."""
        self.in_round = False
        if self.rounds:
            info = self.rounds[-1]
            info.ended, info.bytes, info.sha256 = time.time(), total, sha256
            info.packets, info.retransmitted, info.fec = packets, retransmitted, fec
            self.emit("round_ended", None, round=info.number, bytes=total, sha256=sha256,
                      seconds=round(info.ended - info.started, 3))

    def dropped_unseen(self, waiting: list[Receiver]) -> None:
        """Late receivers that did not come back for their round: dropped rows."""
        for r in sorted(waiting, key=lambda r: r.address):
            r.started = r.started or time.time()
            self._add(r, late=True)
            if r.conclude(Verdict.DROPPED, "did not come back for its round"):
                self.on_verdict(r)

    def interrupted(self, participants: list[Receiver]) -> None:
        """Stopped in the middle of a round: its receivers are failed rows."""
        for r in participants:
            if r.started is not None and r.conclude(Verdict.INTERRUPTED):
                self.on_verdict(r)

    # ------------------------------------------------------------------ reading

    def counts(self) -> dict[str, int]:
        """How many rows are in each state (states with none left out)."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.state.value] = out.get(r.state.value, 0) + 1
        return out

    def finished_rows(self) -> list[Receiver]:
        """The rows with a verdict (what the final table and the report list)."""
        return [r for r in self.rows if r.verdict is not None]

    # ------------------------------------------------------------------ events

    def emit(self, event: str, r: Receiver | None, **extra) -> None:
        """One JSON line on the --events stream (nothing without one)."""
        if self.events is None:
            return
        line: dict = {"time": iso(time.time()), "event": event}
        if r is not None:
            line.update(address=r.address, mac=r.mac, hostname=r.hostname,
                        round=r.round if r.started is not None else None,
                        herdcast=r.herdcast)
            if event in ("finished", "failed", "dropped"):
                line.update(bytes=r.bytes, retransmissions=r.retransmissions,
                            digest=r.digest)
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
