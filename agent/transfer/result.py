"""What a transfer ends with: the sender's and the receiver's common report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReceiverReport:
    """One row of the sender's final table."""

    address: str
    bytes: int = 0
    retransmissions: int = 0
    digest: str | None = None  # hex sha256 the receiver reported, None for stock peers
    status: str = "ok"  # ok | digest-mismatch | no-digest | dropped | disconnected


@dataclass
class TransferResult:
    """How a send or receive ended. `ok` False always comes with a one-line `error`."""

    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    sha256: str | None = None  # hex digest of the stream on the wire (after --compress)
    error: str | None = None
    receivers: list[ReceiverReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 on success, 1 otherwise (udpcast's convention)."""
        return 0 if self.ok else 1
