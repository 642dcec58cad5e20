"""The sender's final table and verdict: which receiver got what, and whether it agreed.

udpcast ends silently and exits 0 even when it dropped a receiver; herdcast names every
receiver with its byte count, retransmissions and digest verdict, and fails if any of them
was dropped, left early, disagreed, or (a herdcast peer) never reported its digest.
"""

from __future__ import annotations

from agent.errors import HerdcastError
from agent.transfer.result import TransferResult
from agent.transfer.send.record import Receiver, Verdict

VERDICT_TEXT = {
    Verdict.OK: "digest agreed",
    Verdict.DIGEST_MISMATCH: "DIGEST MISMATCH",
    Verdict.NO_DIGEST: "NO DIGEST (herdcast receiver never reported one)",
    Verdict.FAILED: "FAILED",
    Verdict.DROPPED: "DROPPED (no answer)",
    Verdict.DISCONNECTED: "DISCONNECTED mid-transfer",
    Verdict.INTERRUPTED: "INTERRUPTED (the sender was stopped mid-round)",
}
REIMAGE = "their disks are incomplete or differ: fix the cause and image them again"


class ReceiversFailed(HerdcastError):
    """The send ran, but not every receiver got the image (or none took part)."""


def describe(r: Receiver) -> str:
    """The verdict column of one row (with the reason, when one is known)."""
    if r.verdict is None:
        return r.state.value
    if r.verdict is Verdict.OK and r.digest is None:
        return "complete, no digest (stock receiver)"
    text = VERDICT_TEXT[r.verdict]
    if r.reason:
        text = f"{text.split(' (')[0]} ({r.reason})"
    return text


def _failures(bad: list[Receiver]) -> str:
    return ", ".join(f"{r.address} {_failure(r)}" for r in bad)


def _failure(r: Receiver) -> str:
    if r.verdict is Verdict.OK and r.personalised == "failed":
        return "not personalised (its disk holds the master's image, not yet its own)"
    return describe(r).split(' (')[0].lower()


def _bad(r: Receiver) -> bool:
    """A verdict other than ok, or a clone that could not be made its own machine."""
    return r.verdict is not Verdict.OK or r.personalised == "failed"


def verdict(receivers: list[Receiver]) -> tuple[bool, HerdcastError | None]:
    """(ok, the error) for the whole send."""
    if not receivers:
        return False, ReceiversFailed("no receiver took part",
                                      "start the receivers first, on this sender's network")
    bad = [r for r in receivers if _bad(r)]
    if not bad:
        return True, None
    return False, ReceiversFailed(f"{len(bad)} of {len(receivers)} receiver(s) failed: "
                                  f"{_failures(bad)}", REIMAGE)


def serve_verdict(receivers: list[Receiver]) -> tuple[bool, HerdcastError | None]:
    """--serve: (ok, error) from the receivers that finished, which must all have agreed;
    so must those that said why they failed; dropped, disconnected and interrupted ones are
    in the table but fail nothing (a node switched off while being served is routine for a
    service)."""
    bad = [r for r in receivers if r.verdict is not None and _bad(r)
           and (r.verdict.finished or r.verdict is Verdict.FAILED)]
    if not bad:
        return True, None
    return False, ReceiversFailed(f"{len(bad)} receiver(s) finished without agreeing: "
                                  f"{_failures(bad)}", REIMAGE)


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
            lines += [f"  {'':<16} {label}: {line}" for label, line in _personal(r)]
    return "\n".join(lines)


def _personal(r: Receiver) -> list[tuple[str, str]]:
    """The rows under a receiver's row: what personalising changed on its clone."""
    if r.personalised == "failed":
        return [("NOT personalised", line) for line in r.changes or ["no reason given"]]
    if r.personalised == "working":
        return [("personalising", "stopped reporting before it was done")]
    return [("changed", line) for line in r.changes]
