"""What a transfer ends with: the sender's and the receiver's common report."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import HerdcastError


@dataclass
class ReceiverReport:
    """One row of the sender's final table."""

    address: str
    bytes: int = 0
    retransmissions: int = 0
    digest: str | None = None  # hex sha256 the receiver reported, None for stock peers
    status: str = "ok"  # ok | digest-mismatch | no-digest | dropped | disconnected | interrupted
    herdcast: bool = False  # speaks herdcast's extensions (reports a digest)
    mac: str | None = None  # from the sender's neighbour table, when known
    hostname: str | None = None  # from /etc/hosts or the DHCP server's leases, when known
    round: int = 0  # the round it was served in (0 is the first)
    started: float | None = None  # wall-clock time its round started sending (epoch seconds)
    ended: float | None = None  # when its verdict was known


@dataclass
class SendStats:
    """The sender's counters, for the progress line, the final report and the benchmark."""

    data_packets: int = 0
    rexmit_packets: int = 0
    reqacks: int = 0
    bytes_sent: int = 0  # payload bytes of first passes
    fec_packets: int = 0
    pace_wait: float = 0.0  # HERDCAST_DEBUG only: seconds waited for the pacer,
    reader_wait: float = 0.0  # for the reader thread,
    ack_wait: float = 0.0  # and for answers with the ring full
    send_time: float = 0.0  # in sendmmsg


@dataclass
class TransferResult:
    """How a send or receive ended. `ok` False always comes with `error`: the HerdcastError
    that ended it, what failed and the fix, for whoever shows it (the command's last line,
    the node's FAILED line, the JSON report), never flattened into text on the way."""

    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    sha256: str | None = None  # hex digest of the stream on the wire (after --compress)
    error: HerdcastError | None = None
    receivers: list[ReceiverReport] = field(default_factory=list)
    stats: SendStats | None = None  # the sender's counters (None on the receiving side)
