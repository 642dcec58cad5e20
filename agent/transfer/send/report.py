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
    """`10.0.0.21 dropped, 10.0.0.22 failed (its reason)`: a receiver's own words kept."""
    return ", ".join(f"{r.address} {_failure(r)}" for r in bad)


def _failure(r: Receiver) -> str:
    if r.verdict is Verdict.OK and r.personalised == "failed":
        return "not personalised (its disk holds the master's image, not yet its own)"
    return describe(r).split(' (')[0].lower() + (
        f" ({r.reason})" if r.verdict is Verdict.FAILED and r.reason else "")


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
    service), as long as someone was imaged: a service stopped before any receiver agreed
    imaged nothing, which is no success."""
    bad = [r for r in receivers if r.verdict is not None and _bad(r)
           and (r.verdict.finished or r.verdict is Verdict.FAILED)]
    if bad:
        return False, ReceiversFailed(f"{len(bad)} receiver(s) finished without agreeing: "
                                      f"{_failures(bad)}", REIMAGE)
    if not any(r.verdict is Verdict.OK for r in receivers):  # nothing imaged: no success
        return False, ReceiversFailed(
            "stopped before any receiver was imaged" + (
                f" ({len(receivers)} came: {_failures(receivers)})" if receivers else ""),
            "boot the nodes (umode=rcv) while it serves, on this sender's network")
    return True, None


def format_table(result: TransferResult, stats=None) -> str:
    """The summary, then the receivers table. Summary lines add up: one per round (its
    stream's bytes, its time from start to the last verdict, its rate, its packets) and,
    with several rounds, a total that is their sums (the rate over the time spent sending;
    a service also idles between rounds). Without rounds (--async) one line from `stats`.
    The table keeps each receiver's MAC and host name beside its address."""
    rounds = [r for r in result.rounds if r.ended is not None]
    lines = []
    if not rounds:
        lines.append(_summary("herdcast send:", result.bytes, result.seconds,
                              _packets(stats), stats.rexmit_packets if stats else 0,
                              result.sha256, getattr(stats, "fec_packets", 0)))
    for info in rounds if len(rounds) > 1 else []:
        lines.append(_summary(f"herdcast send: round {info.number} ({info.kind}, "
                              f"{info.receivers} receiver(s)):", info.bytes,
                              info.ended - info.started, info.packets, info.retransmitted,
                              info.sha256, info.fec))
    if rounds:
        single = rounds[0] if len(rounds) == 1 else None
        lines.append(_summary(
            "herdcast send:" if single else f"herdcast send: {len(rounds)} rounds:",
            sum(r.bytes for r in rounds), sum(r.ended - r.started for r in rounds),
            sum(r.packets for r in rounds), sum(r.retransmitted for r in rounds),
            single.sha256 if single else None, sum(r.fec for r in rounds)))
    if result.receivers:
        several = len({r.round for r in result.receivers}) > 1
        host = max([4, *(len(r.hostname or "") for r in result.receivers)])
        lines.append(f"  {'receiver':<15} {'MAC':<17} {'host':<{host}} "
                     + ("round " if several else "") + f"{'bytes':>14} {'rexmit':>8}  verdict")
        for r in result.receivers:
            lines.append(f"  {r.address:<15} {r.mac or '-':<17} {r.hostname or '-':<{host}} "
                         + (f"{r.round:>5} " if several else "")
                         + f"{r.bytes:>14} {r.retransmissions:>8}  {describe(r)}")
            lines += [f"  {'':<15} {label}: {line}" for label, line in _personal(r)]
    return "\n".join(lines)


def _personal(r: Receiver) -> list[tuple[str, str]]:
    """The rows under a receiver's row: what personalising changed on its clone."""
    if r.personalised == "failed":
        return [("NOT personalised", line) for line in r.changes or ["no reason given"]]
    if r.personalised == "working":
        return [("personalising", "stopped reporting before it was done")]
    return [("changed", line) for line in r.changes]


def _packets(stats) -> int:
    if stats is None:
        return 0
    return stats.data_packets + stats.rexmit_packets + getattr(stats, "fec_packets", 0)


def _summary(label: str, size: int, seconds: float, packets: int, rexmit: int,
             sha256: str | None, fec: int = 0) -> str:
    """`LABEL N bytes in S s (R MB/s), P packets (X retransmitted, x%), sha256 ...`"""
    text = (f"{label} {size} bytes in {seconds:.2f} s "
            f"({size / max(seconds, 1e-9) / 1e6:.1f} MB/s)")
    if packets:
        text += (f", {packets} packets ({rexmit} retransmitted, "
                 f"{100 * rexmit / packets:.2f}%" + (f", {fec} FEC blocks" if fec else "") + ")")
    return text + (f", sha256 {sha256}" if sha256 else "")
