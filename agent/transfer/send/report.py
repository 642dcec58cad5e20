"""The sender's final table and verdict: which receiver got what, and whether it agreed.

udpcast ends silently and exits 0 even when it dropped a receiver; herdcast names every
receiver with its byte count, retransmissions and digest verdict, and fails if any of them
was dropped, left early, disagreed, or (a herdcast peer) never reported its digest.
"""

from __future__ import annotations

from agent.errors import HerdcastError
from agent.transfer.result import ReceiverReport, TransferResult

STATUS_TEXT = {
    "ok": "digest agreed",
    "digest-mismatch": "DIGEST MISMATCH",
    "no-digest": "NO DIGEST (herdcast receiver never reported one)",
    "dropped": "DROPPED (no answer)",
    "disconnected": "DISCONNECTED mid-transfer",
    "interrupted": "INTERRUPTED (the sender was stopped mid-round)",
}
FINISHED = ("ok", "digest-mismatch", "no-digest")  # reached the end of the stream
REIMAGE = "their disks are incomplete or differ: fix the cause and image them again"


class ReceiversFailed(HerdcastError):
    """The send ran, but not every receiver got the image (or none took part)."""


def describe(r: ReceiverReport) -> str:
    """The verdict column of one row."""
    if r.status == "ok" and r.digest is None:
        return "complete, no digest (stock receiver)"
    return STATUS_TEXT.get(r.status, r.status)


def verdict(reports: list[ReceiverReport]) -> tuple[bool, HerdcastError | None]:
    """(ok, the error) for the whole send."""
    if not reports:
        return False, ReceiversFailed("no receiver took part",
                                      "start the receivers first, on this sender's network")
    bad = [r for r in reports if r.status != "ok"]
    if not bad:
        return True, None
    what = ", ".join(f"{r.address} {describe(r).split(' (')[0].lower()}" for r in bad)
    return False, ReceiversFailed(f"{len(bad)} of {len(reports)} receiver(s) failed: {what}",
                                  REIMAGE)


def serve_verdict(reports: list[ReceiverReport]) -> tuple[bool, HerdcastError | None]:
    """--serve: (ok, error) from the receivers that finished, which must all have agreed;
    dropped, disconnected and interrupted ones are in the table but fail nothing (a node
    switched off while being served is routine for a service)."""
    bad = [r for r in reports if r.status in FINISHED and r.status != "ok"]
    if not bad:
        return True, None
    what = ", ".join(f"{r.address} {describe(r).split(' (')[0].lower()}" for r in bad)
    return False, ReceiversFailed(f"{len(bad)} receiver(s) finished without agreeing: {what}",
                                  REIMAGE)


def format_table(result: TransferResult, stats=None) -> str:
    """The receivers table plus one summary line (rate, retransmitted share)."""
    lines = []
    secs = max(result.seconds, 1e-9)
    summary = f"herdcast send: {result.bytes} bytes in {result.seconds:.2f} s " \
              f"({result.bytes / secs / 1e6:.1f} MB/s)"
    if stats is not None and stats.data_packets:
        share = 100 * stats.rexmit_packets / stats.data_packets
        summary += (f", {stats.data_packets} data packets, {stats.rexmit_packets} "
                    f"retransmitted ({share:.2f}%)")
        if getattr(stats, "fec_packets", 0):
            summary += f", {stats.fec_packets} FEC blocks"

    if result.sha256:
        summary += f", sha256 {result.sha256}"
    lines.append(summary)
    if result.receivers:
        lines.append(f"  {'receiver':<16} {'bytes':>14} {'rexmit':>8}  verdict")
        for r in result.receivers:
            lines.append(f"  {r.address:<16} {r.bytes:>14} {r.retransmissions:>8}  "
                         f"{describe(r)}")
    return "\n".join(lines)
