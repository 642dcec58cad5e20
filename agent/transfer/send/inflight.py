"""A slice the sender has put on the wire and not yet seen every receiver OK.

Its REQACK passes (send.passes) are tracked here: who answered this pass, which blocks
someone misses (an int bitmap, bit i = block i), the runs of blocks still to resend, and
the FEC blocks still to send after the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.transfer.send.batch import SliceBuffer
from agent.transfer.send.pacer import congested_blocks


@dataclass
class SliceInFlight:
    """A slice sent (or being sent) and not yet complete: its buffer and its passes."""

    buf: SliceBuffer | None  # None for the end slice, which carries no data
    no: int
    nbytes: int
    nblocks: int
    sent: int = 0  # blocks of the first pass sent
    rxmit: int = 0  # pass being asked (udpcast: rxmit)
    ok: int = 0  # bitmap (int) of slots that answered OK
    answered: set = field(default_factory=set)  # IPs that answered the current pass
    missing: int = 0  # union of blocks missing, current pass
    asked_at: float | None = None  # when the current pass's REQACK went out
    runs: list = field(default_factory=list)  # (first, count) still to resend
    timeouts: int = 0
    congested: int = 0  # most blocks one receiver lost in runs, first pass
    fec: list = field(default_factory=list)  # (fecBlockNo, payload) to send after the data
    heard: set = field(default_factory=set)  # IPs that answered any pass of it

    @property
    def end(self) -> bool:
        """The empty slice that ends the stream."""
        return self.nbytes == 0

    def answered_ok(self, slot: int, ip: str) -> None:
        """The receiver in `slot` has the whole slice: it is in every further ready set."""
        self.ok |= 1 << slot
        self.answered.add(ip)
        self.heard.add(ip)

    def answered_missing(self, ip: str, received: bytes) -> int:
        """A RETRANSMIT for the current pass: the blocks its bitmap lacks join the pass's
        union (and, in the first pass, the congestion estimate). Returns them (int)."""
        missing = ~int.from_bytes(received, "little") & ((1 << self.nblocks) - 1)
        self.missing |= missing
        self.answered.add(ip)
        if self.rxmit == 0 and missing:
            self.congested = max(self.congested, congested_blocks(missing, self.nblocks))
        return missing


def runs_of(bits: int, limit: int) -> list[tuple[int, int]]:
    """Runs of set bits below `limit` as (first, count): the blocks to resend, in as few
    sendmmsg calls as possible."""
    out = []
    i = 0
    while i < limit:
        if bits >> i & 1:
            j = i
            while j < limit and bits >> j & 1:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out
