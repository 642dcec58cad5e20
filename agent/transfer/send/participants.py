"""Who takes part in a send: this round's participants, and who waits for the next round.

Participants are keyed by source IP (one receiver per IP, as udpcast) with a slot number
(clNr) for the REQACK bitmap, and — unlike udpcast, which ANDs everybody's capabilities —
their own capabilities, so one stock receiver does not switch off herdcast's extensions for
the others. Each is a `Receiver` record (send.record). A receiver that asks while a round
runs waits in `waiting` (at most MAX_WAITING of them: forged CONNECT_REQs cannot grow it
without bound) and takes part in the next round with the same record. A round's table
empties when it ends; its records stay in `served` (the last one per IP) so a repeated
HC_DIGEST is still answered. The fleet (send.fleet) is told of every change through the
`TableEvents` it implements; the default tells nobody.

The start rule (--min-receivers, --serve's) counts `places`, not addresses. A signed
session's nonce is one receive's fresh random number, sent in the clear to the broadcast
address: a forger that sniffs it and sends it from its own address (then leaves, its
signature being of no use to anybody) would otherwise take the place of the receiver it
belongs to, and the round would start without that one. Receivers presenting the same nonce
share one place, counted NONCE_SETTLE seconds after the first of them sent a nonce: its owner
repeats its CONNECT_REQ every second (receive.negotiate.CONNECT_RETRY), so by then it is
connected too. (The time is each address's first nonce, not the nonce's: requests forged
from a receiver's address with ever new nonces do not keep its place from counting.)
A herdcast receiver that connected and then failed before the round (HC_FAIL: its disk too
small, say) keeps its place in `failed`: it came and has its verdict, so --min-receivers
does not wait, up to --max-wait or for ever, for a receiver that will not come back. It
counts by the same rule (a forger failing with a sniffed nonce shares its owner's place).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.transfer.send.record import Receiver, State, Verdict
from agent.udpcast.protocol import MAX_CLIENTS

MAX_WAITING = MAX_CLIENTS  # receivers queued for the next round (a round takes no more)
# seconds from a first nonce to its place counting: two of its owner's repeats (one may be
# lost, or the owner slow to answer a HELLO on a loaded machine)
NONCE_SETTLE = 2.0


class TableEvents:
    """What the table tells of its receivers; this default tells nobody (send.fleet's
    `Fleet` keeps the rows, the lines and the events)."""

    def on_connect(self, receiver: Receiver) -> None:
        """A new participant of the coming round."""

    def on_late(self, receiver: Receiver) -> None:
        """A receiver asked while a round ran: it waits for the next one."""

    def on_finished_data(self, receiver: Receiver) -> None:
        """It OK'd the end slice (a herdcast receiver now checks its digest)."""

    def on_verdict(self, receiver: Receiver) -> None:
        """Its verdict was given."""

    def on_changed(self, receiver: Receiver) -> None:
        """After its digest agreed, it said what personalising changed (or why it failed)."""


@dataclass
class Table:
    """The participants of the current round (by IP), the ones waiting for the next."""

    participants: dict[str, Receiver] = field(default_factory=dict)
    waiting: dict[str, Receiver] = field(default_factory=dict)
    served: dict[str, Receiver] = field(default_factory=dict)  # last round's record per IP
    refuse_late: set[str] = field(default_factory=set)  # imaged: told they missed it
    failed: dict[str, Receiver] = field(default_factory=dict)  # told HC_FAIL before the round
    observer: TableEvents = field(default_factory=TableEvents)

    def connect(self, ip: str, addr: tuple[str, int], caps: int, rcvbuf: int,
                nonce: bytes | None = None, now: float | None = None) -> Receiver | None:
        """Add (or refresh) a participant; None when all 1024 slots are taken. `now` (the
        monotonic clock by default) dates its first nonce."""
        r = self.participants.get(ip)
        if r is not None:
            r.join(addr, caps, rcvbuf, nonce)
        else:
            used = {q.slot for q in self.participants.values()}
            slot = next((i for i in range(MAX_CLIENTS) if i not in used), None)
            if slot is None:
                return None
            r = self.waiting.pop(ip, None) or Receiver(ip)
            r.join(addr, caps, rcvbuf, nonce)
            r.slot = slot
            self.participants[ip] = r
            self.observer.on_connect(r)
        if nonce is not None and r.nonce_since is None:
            r.nonce_since = time.monotonic() if now is None else now
        return r

    def places(self, now: float) -> int:
        """How many receivers the start rule counts (see the module docstring): one per
        participant without a nonce, one per nonce however many addresses present it, once
        NONCE_SETTLE seconds have passed since the first of them sent one. A receiver that
        failed before the round (`failed`) keeps its place."""
        plain, since = 0, {}
        for r in [*self.participants.values(), *self.failed_before()]:
            if r.nonce is None:
                plain += 1
            else:
                first = now if r.nonce_since is None else r.nonce_since
                since[r.nonce] = min(since.get(r.nonce, now), first)
        return plain + sum(now - t >= NONCE_SETTLE for t in since.values())

    def failed_before(self) -> list[Receiver]:
        """The receivers that failed before this round and have not connected again."""
        return [r for ip, r in self.failed.items() if ip not in self.participants]

    def wait_for_next(self, ip: str, addr: tuple[str, int], caps: int) -> Receiver | None:
        """A CONNECT_REQ while a round runs: queue it for the next round. Returns its
        record; None when MAX_WAITING receivers already wait."""
        r = self.waiting.get(ip)
        if r is None:
            if len(self.waiting) >= MAX_WAITING:
                return None
            r = self.waiting[ip] = Receiver(ip)
            r.join(addr, caps, 0, None)
            self.observer.on_late(r)
        else:
            r.join(addr, caps, 0, None)
        return r

    def remove(self, ip: str, verdict: Verdict, reason: str | None = None
               ) -> Receiver | None:
        """Take a participant out of the round with its verdict."""
        r = self.participants.pop(ip, None)
        if r is not None:
            self.served[ip] = r
            self.conclude(r, verdict, reason)
        return r

    def conclude(self, r: Receiver, verdict: Verdict, reason: str | None = None) -> None:
        """Give `r` its verdict (once) and tell the observer."""
        if r.conclude(verdict, reason):
            self.observer.on_verdict(r)

    def finished_data(self, r: Receiver) -> None:
        """`r` OK'd the end slice."""
        if not r.finished:
            r.finished = True
            if r.herdcast and r.verdict is None:
                r.state = State.VERIFYING
            self.observer.on_finished_data(r)

    def find(self, ip: str) -> Receiver | None:
        """This round's record of `ip`, or the last round's."""
        return self.participants.get(ip) or self.served.get(ip)

    def min_rcvbuf(self) -> int | None:
        """The smallest receive buffer a participant declared."""
        bufs = [r.rcvbuf for r in self.participants.values() if r.rcvbuf]
        return min(bufs) if bufs else None

    def record_digest(self, r: Receiver, total_bytes: int, sha256: bytes,
                      agreed: bool) -> None:
        """`r`'s HC_DIGEST (its secret checked): its byte count and digest go in its row,
        and the verdict, unless it has one already (a verdict never improves)."""
        if r.verdict is None:
            r.digest, r.bytes = sha256.hex(), total_bytes
        self.conclude(r, Verdict.OK if agreed else Verdict.DIGEST_MISMATCH)

    def settle(self) -> None:
        """At a round's end: a herdcast participant that never reported its digest fails
        ("no-digest"); a stock one that got the end is complete. Then the table empties."""
        for ip, r in self.participants.items():
            self.conclude(r, Verdict.NO_DIGEST if r.herdcast else Verdict.OK)
            self.served[ip] = r
        self.participants, self.failed = {}, {}
        latest = max((r.round for r in self.served.values()), default=0)
        self.served = {ip: r for ip, r in self.served.items() if r.round == latest}


def participants_summary(table: Table) -> str:
    """'3 receiver(s) (2 herdcast, 1 stock)' for log lines."""
    rs = list(table.participants.values())
    hc = sum(r.herdcast for r in rs)
    return f"{len(rs)} receiver(s) ({hc} herdcast, {len(rs) - hc} stock)"
