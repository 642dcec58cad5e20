"""What a transfer ends with: the sender's and the receiver's common result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.errors import HerdcastError

if TYPE_CHECKING:
    from agent.transfer.send.record import Receiver


@dataclass
class SendStats:
    """The sender's counters, for the progress line, the final report and the benchmark."""

    data_packets: int = 0
    rexmit_packets: int = 0
    reqacks: int = 0
    bytes_sent: int = 0  # payload bytes of first passes
    fec_packets: int = 0


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
    receivers: list[Receiver] = field(default_factory=list)  # the sender's rows
    stats: SendStats | None = None  # the sender's counters (None on the receiving side)
    changes: list[str] | None = None  # a receiver's: what personalising changed on the disk
    rounds: list = field(default_factory=list)  # the sender's rounds (send.fleet.RoundInfo)
