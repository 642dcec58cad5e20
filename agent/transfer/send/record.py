"""One record per receiver and round served: what the sender knows of it, from its first
CONNECT_REQ to its verdict.

A `Receiver` is created when a receiver first asks (at the start, or while a round runs: it
then waits for the next one), takes part in one round (its slot, capabilities, silence and
progress counters are the protocol's view of it), and ends with one `Verdict`, given once
and never changed: a digest that comes after a mismatch or a missing digest does not turn
the row green. A node imaged twice under --serve has two records. The participant table
(send.participants), the fleet (send.fleet), the views, the final table and the JSON report
all read these records; its `State` is what the live table shows.
"""

from __future__ import annotations

import enum
import hmac
import math
import os
from dataclasses import dataclass, field
from typing import Protocol

from agent.udpcast.protocol import SECRET_BYTES, Cap


class State(enum.Enum):
    """Where a receiver is: waiting for its round, in it, checking its digest, or over."""

    WAITING = "waiting"
    RECEIVING = "receiving"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    DROPPED = "dropped"


class Verdict(enum.StrEnum):
    """How a receiver's round ended (the JSON report's `verdict`)."""

    OK = "ok"  # digest agreed (herdcast) or complete (stock: no digest to compare)
    DIGEST_MISMATCH = "digest-mismatch"
    NO_DIGEST = "no-digest"  # a herdcast receiver that never reported its digest
    FAILED = "failed"  # a herdcast receiver said why it failed (`reason`)
    DROPPED = "dropped"  # no answer, or no progress, for too long
    DISCONNECTED = "disconnected"  # left mid-transfer
    INTERRUPTED = "interrupted"  # the sender was stopped mid-round

    @property
    def state(self) -> State:
        """The final state this verdict shows as."""
        if self is Verdict.OK:
            return State.DONE
        return State.DROPPED if self is Verdict.DROPPED else State.FAILED

    @property
    def finished(self) -> bool:
        """Whether the receiver reached the end of the stream (its digest decided)."""
        return self in (Verdict.OK, Verdict.DIGEST_MISMATCH, Verdict.NO_DIGEST)


# a receiver personalising its clone says so every second (agent.transfer.receive.personal);
# this long without a word from it and the sender stops waiting for what it changed
PERSONAL_SILENCE = 10.0


@dataclass(eq=False)
class Receiver:
    """One receiver in one round (see the module docstring). Compared by identity."""

    address: str
    bytes: int = 0  # bytes it OK'd (its digest's count once it reports one)
    retransmissions: int = 0  # blocks it asked for again
    digest: str | None = None  # hex sha256 it reported, None for stock receivers
    herdcast: bool = False  # speaks herdcast's extensions (digest, reason, late join)
    mac: str | None = None  # from the sender's neighbour table, when known
    hostname: str | None = None  # from /etc/hosts or the DHCP leases, or herdcast deploy
    round: int = 0  # the service round it was served in (0 is the first)
    state: State = State.WAITING
    verdict: Verdict | None = None  # given once (`conclude`), never changed
    reason: str | None = None  # why it failed, in the receiver's words when it said so
    started: float | None = None  # wall-clock time its round started sending (epoch s)
    ended: float | None = None  # when its verdict was given
    # after its digest agreed, a herdcast receiver personalises the clone (agent.personalize)
    # and says so (HC_CHANGED): "working", then "done" with `changes` or "failed" with why
    personalised: str | None = None
    changes: list[str] = field(default_factory=list)
    personal_at: float = 0.0  # when its last HC_CHANGED came (time.monotonic)
    # --- the protocol's view while it is connected to a round
    addr: tuple[str, int] | None = None  # where its CONNECT_REQ came from
    slot: int = -1  # its bit in REQACK's ready set (clNr)
    caps: int = 0
    rcvbuf: int = 0
    nonce: bytes | None = None  # from its CONNECT_REQ: it wants a signed session
    nonce_since: float | None = None  # when it first sent one (send.participants.places)
    statement: bytes | None = None  # the session statement signed for it (agent.trust)
    kind: int = 0  # its round's stream: agent.trust.statements RAW or IMAGE
    # told only to it (unicast CONNECT_REPLY) and echoed in its HC_DIGEST: a digest
    # without it is someone else's, whatever address it comes from
    secret: bytes = field(default_factory=lambda: os.urandom(SECRET_BYTES))
    silent: int = 0  # consecutive REQACK passes it did not answer
    requests: int = 0  # REQACKs it was asked to answer, this round
    answers: int = 0  # OKs and RETRANSMITs it sent, this round
    heard: bool = False  # sent anything since CONNECT_REQ (so it got CONNECT_REPLY)
    finished: bool = False  # OK'd the end slice
    left: bool = False  # said DISCONNECT after finishing
    owed_since: float | None = None  # when the oldest request it has not answered went out
    progressed_at: float | None = None  # when it last got further (or was first asked)
    holding: dict[int, int] = field(default_factory=dict)  # slice -> most blocks it had
    owing: set[int] = field(default_factory=set)  # slices asked that it has not OK'd

    def join(self, addr: tuple[str, int], caps: int, rcvbuf: int,
             nonce: bytes | None) -> None:
        """Its (repeated) CONNECT_REQ: where to answer and what it speaks."""
        self.addr, self.caps, self.nonce = addr, caps, nonce
        self.rcvbuf = rcvbuf or self.rcvbuf
        self.herdcast = bool(caps & Cap.HERDCAST)

    def told(self, secret: bytes) -> bool:
        """Whether a message echoing `secret` (HC_FAIL) is its own: a stranger spoofing its
        address does not know the secret its unicast CONNECT_REPLY carried."""
        return hmac.compare_digest(bytes(secret), self.secret)

    def leaves(self, secret: bytes | None) -> bool:
        """Whether a DISCONNECT from its address is its own: a herdcast receiver's echoes its
        secret (agent.udpcast.extensions.build_disconnect); a stock one's cannot, and is
        believed as udpcast believes it."""
        return not self.herdcast or (secret is not None and self.told(secret))

    def personalising(self, now: float) -> bool:
        """Still personalising its clone: it said WORKING within PERSONAL_SILENCE."""
        return self.personalised == "working" and now - self.personal_at < PERSONAL_SILENCE

    def conclude(self, verdict: Verdict, reason: str | None = None) -> bool:
        """Give its verdict; False (and nothing changes) when it already has one."""
        if self.verdict is not None:
            return False
        self.verdict, self.state = verdict, verdict.state
        self.reason = self.reason or reason
        return True

    # --- liveness and progress, counted by the send loop

    def answered(self) -> None:
        """Anything it sends proves it alive: its silence counts start again."""
        self.silent = 0
        self.heard = True
        self.owed_since = None

    def asked(self, now: float, slice_no: int) -> None:
        """A REQACK for `slice_no` it must answer went out (the first unanswered one starts
        the silence clock, the first one it owes after owing nothing the progress clock)."""
        self.requests += 1
        if self.owed_since is None:
            self.owed_since = now
        if not self.owing:
            self.progressed_at = now
        self.owing.add(slice_no)

    def silent_for(self, now: float) -> float:
        """Seconds since it was first asked something it has not answered (0: owes nothing)."""
        return 0.0 if self.owed_since is None else now - self.owed_since

    def silence_that_means_gone(self, false_drop: float) -> int:
        """How many requests in a row a live receiver would leave unanswered with a
        probability below `false_drop`, at the answer rate its earlier requests showed
        (Laplace's estimate, so a receiver not yet heard counts as losing half): on a
        clean link 1 or 2, at 30 % loss each way about 14."""
        before = max(0, self.requests - self.silent)
        rate = min(self.answers + 1, before + 1) / (before + 2)
        if rate >= 1.0:
            return 1
        return max(1, math.ceil(math.log(false_drop) / math.log(1.0 - rate)))

    def holds(self, slice_no: int, blocks: int, now: float) -> None:
        """It has `blocks` of slice `slice_no` (from a RETRANSMIT's bitmap): more than it
        had before is progress."""
        if blocks > self.holding.get(slice_no, 0):
            self.holding[slice_no] = blocks
            self.progressed_at = now

    def done_with(self, slice_no: int, now: float) -> None:
        """It OK'd slice `slice_no`: progress, and its counts for that slice are done."""
        self.progressed_at = now
        self.holding.pop(slice_no, None)
        self.owing.discard(slice_no)

    def stuck_for(self, now: float) -> float:
        """Seconds it has owed a slice without getting any further (0: it owes nothing,
        e.g. while the sender waits for its input)."""
        if not self.owing or self.progressed_at is None:
            return 0.0
        return now - self.progressed_at


class ReceiverObserver(Protocol):
    """Told of each receiver as the fleet sees it (herdcast deploy: its nodes by MAC).
    `connected` may set the record's hostname: the live view and the reports show it."""

    def connected(self, receiver: Receiver) -> None: ...

    def verdict(self, receiver: Receiver) -> None: ...


class NoObserver:
    """The default observer: nobody to tell."""

    def connected(self, receiver: Receiver) -> None:
        """Nothing to do."""

    def verdict(self, receiver: Receiver) -> None:
        """Nothing to do."""
