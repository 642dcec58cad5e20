"""Who takes part in a send: the participant table, and each receiver's row in the report.

Participants are keyed by source IP (one receiver per IP, as udpcast) with a slot number
(clNr) for the REQACK bitmap, and — unlike udpcast, which ANDs everybody's capabilities —
their own capabilities, so one stock receiver does not switch off herdcast's extensions for
the others. A round's table empties when it ends; `reports` keeps every round's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.transfer.result import ReceiverReport
from agent.udpcast.protocol import MAX_CLIENTS, Cap


@dataclass
class Participant:
    """One connected receiver."""

    ip: str
    addr: tuple[str, int]
    slot: int
    caps: int
    rcvbuf: int
    report: ReceiverReport
    silent: int = 0  # consecutive REQACK rounds it did not answer
    finished: bool = False  # OK'd the end slice
    left: bool = False  # said DISCONNECT after finishing
    heard: bool = False  # sent anything since CONNECT_REQ (so it got CONNECT_REPLY)
    digest: tuple[int, bytes] | None = None
    owed_since: float | None = None  # when the oldest request it has not answered went out
    nonce: bytes | None = None  # from its CONNECT_REQ: it wants a signed session

    def answered(self) -> None:
        """Anything it sends proves it alive: its silence counts start again."""
        self.silent = 0
        self.heard = True
        self.owed_since = None

    def asked(self, now: float) -> None:
        """A REQACK it must answer went out (the first unanswered one starts the clock)."""
        if self.owed_since is None:
            self.owed_since = now

    def silent_for(self, now: float) -> float:
        """Seconds since it was first asked something it has not answered (0: owes nothing)."""
        return 0.0 if self.owed_since is None else now - self.owed_since

    @property
    def herdcast(self) -> bool:
        """Whether it speaks herdcast's extensions (digest, late join)."""
        return bool(self.caps & Cap.HERDCAST)


@dataclass
class Table:
    """The participants of the current round, keyed by IP."""

    participants: dict[str, Participant] = field(default_factory=dict)
    reports: dict[str, ReceiverReport] = field(default_factory=dict)  # every round's rows
    # told of every change a receiver's row goes through (send.fleet.Fleet), or None
    observer: object | None = None

    def connect(self, ip: str, addr: tuple[str, int], caps: int, rcvbuf: int,
                nonce: bytes | None = None) -> Participant | None:
        """Add (or refresh) a participant; None when all 1024 slots are taken."""
        p = self.participants.get(ip)
        if p is not None:
            p.addr, p.caps, p.nonce = addr, caps, nonce
            return p
        used = {q.slot for q in self.participants.values()}
        slot = next((i for i in range(MAX_CLIENTS) if i not in used), None)
        if slot is None:
            return None
        report = self.reports.setdefault(ip, ReceiverReport(ip))
        report.status = "ok"
        report.herdcast = bool(caps & Cap.HERDCAST)
        p = Participant(ip, addr, slot, caps, rcvbuf, report, nonce=nonce)
        self.participants[ip] = p
        if self.observer is not None:
            self.observer.on_connect(report)
        return p

    def remove(self, ip: str, status: str) -> Participant | None:
        """Take a participant out of the round, recording why."""
        p = self.participants.pop(ip, None)
        if p is not None:
            p.report.status = status
            if self.observer is not None:
                self.observer.on_verdict(p.report)
        return p

    def min_rcvbuf(self) -> int | None:
        """The smallest receive buffer a participant declared."""
        bufs = [p.rcvbuf for p in self.participants.values() if p.rcvbuf]
        return min(bufs) if bufs else None

    def record_digest(self, ip: str, total_bytes: int, sha256: bytes, agreed: bool) -> None:
        """A receiver's HC_DIGEST (this round's participant or an earlier round's row): its
        byte count, digest and verdict go in its row."""
        p = self.participants.get(ip)
        report = p.report if p is not None else self.reports.get(ip)
        if report is None:
            return
        if p is not None:
            p.digest = (total_bytes, sha256)
        report.digest = sha256.hex()
        report.bytes = total_bytes
        if report.status in ("ok", "no-digest", "digest-mismatch"):
            report.status = "ok" if agreed else "digest-mismatch"
        if self.observer is not None:
            self.observer.on_verdict(report)

    def settle_reports(self) -> None:
        """At a round's end: a herdcast participant that never reported its digest fails
        its row ("no-digest"); the others keep the status their answers gave them."""
        for p in self.participants.values():
            if p.report.status == "ok" and p.herdcast and p.digest is None:
                p.report.status = "no-digest"
            if self.observer is not None:
                self.observer.on_verdict(p.report)


def participants_summary(table: Table) -> str:
    """'3 receiver(s) (2 herdcast, 1 stock)' for log lines."""
    ps: list[Participant] = list(table.participants.values())
    hc = sum(p.herdcast for p in ps)
    return f"{len(ps)} receiver(s) ({hc} herdcast, {len(ps) - hc} stock)"
