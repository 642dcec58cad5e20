"""The end of a receive: the output flushed, the digest confirmed, the exit wait.

After the end slice the writer thread empties its queue and the output is flushed, synced
and closed. A failure there (EIO or ENOSPC at fsync or close) fails the receive: the image
is not on the disk. The protocol has no failure message, but a herdcast sender then never
gets this receiver's digest and counts it failed ("no digest"); a stock one cannot know. With a
herdcast sender the digest of what was written is confirmed (HC_DIGEST until HC_DIGEST_ACK);
then it leaves at once: a herdcast sender takes the digest as this receiver's OK for the end
slice, so a lost OK needs no repeating. With a stock sender, as udpcast, repeated REQACKs are
answered until --exit-wait passes without one, so a sender whose OK got lost hears it again
before we go (and more data after the end marker shows that marker was forged).
"""

from __future__ import annotations

import time

from agent.image.stream import is_image
from agent.say import say
from agent.transfer.receive.link import Link
from agent.transfer.receive.output import Output, OutputError, SliceWriter
from agent.transfer.receive.sockets import ReceiveError
from agent.trust.statements import IMAGE, RAW
from agent.udpcast.protocol import Cap

DIGEST_INTERVAL = 0.25
DIGEST_TIMEOUT = 5.0
EXIT_WAIT_CAP = 5.0  # extra bound on the exit wait if REQACKs keep coming
WRITER_TIMEOUT = 120.0


def finish(link: Link, writer: SliceWriter, output: Output) -> str:
    """Flush, confirm the digest with a herdcast sender, exit-wait. Returns the hex digest
    of the received stream; raises OutputError (the disk) or ReceiveError (the sender)."""
    opts, session = link.opts, link.session
    deadline = time.monotonic() + WRITER_TIMEOUT
    writer.queue.put(None)
    while writer.is_alive():  # keep answering REQACK repeats meanwhile
        if time.monotonic() > deadline:
            raise OutputError(f"writing {output.path} did not finish within "
                              f"{WRITER_TIMEOUT:g} s")
        link.pump(0.05)
        writer.join(0.0)
    if writer.error:
        raise OutputError(writer.error)
    output.finish()
    digest = writer.sha256.digest()
    _check_end(link)
    if (session.capabilities & Cap.HERDCAST or link.trust is not None) \
            and not session.passive:
        _confirm_digest(link, writer.bytes, digest, IMAGE if is_image(writer.head) else RAW)
        if session.capabilities & Cap.HERDCAST:
            # the sender answered our digest, which it counts as our OK for the end slice
            # (send.answers): no lost OK to answer again, so no exit wait
            return digest.hex()
    # exit wait: answer repeated REQACKs until --exit-wait ms pass without one
    hard_stop = time.monotonic() + opts.exit_wait / 1000 + EXIT_WAIT_CAP
    quiet_since = time.monotonic()
    while True:
        now = time.monotonic()
        left = min(quiet_since + opts.exit_wait / 1000, hard_stop) - now
        if left <= 0:
            break
        link.pending_answer = False
        link.pump(left)
        if link.pending_answer:
            quiet_since = time.monotonic()
        _check_end(link)
    return digest.hex()


def _check_end(link: Link) -> None:
    """Data from the sender for the end slice or later, after its end marker: that marker
    was not the sender's (forged, or a stray): the image is incomplete. With a stock sender
    this is all there is to check (it announces no length); it catches a forged end only if
    the sender sends more before we go (it keeps sending while it has data)."""
    asm = link.assembler
    if asm is not None and asm.contradicted is not None:
        raise ReceiveError(f"the sender went on with slice {asm.contradicted} after an end "
                           "marker (a forged one?): the image is incomplete")


def _confirm_digest(link: Link, total: int, digest: bytes, kind: int) -> None:
    """HC_DIGEST (with the secret our CONNECT_REPLY told us) every DIGEST_INTERVAL until
    the sender's HC_DIGEST_ACK says it agrees."""
    link.digest_sent, link.digest_ack = (total, digest, kind), None
    give_up = time.monotonic() + DIGEST_TIMEOUT
    while link.digest_ack is None:
        if time.monotonic() >= give_up:
            why = link.trust.last_refusal if link.trust is not None else None
            raise ReceiveError(f"sender did not confirm the digest within "
                               f"{DIGEST_TIMEOUT:g} s"
                               + (f" with a valid signature ({why})" if why else "")
                               + f" (the data was written: {total} bytes, sha256 "
                               f"{digest.hex()})")
        link.send(link.digest_message(total, digest))
        next_send = time.monotonic() + DIGEST_INTERVAL
        while link.digest_ack is None and time.monotonic() < next_send:
            link.pump(max(next_send - time.monotonic(), 0))
    if link.digest_ack.agreed and link.trust is not None:
        say("the sender's signed result names the bytes written here")
    if not link.digest_ack.agreed:
        raise ReceiveError("image digest differs from the sender's: the written data is "
                           f"corrupt ({total} bytes here, "
                           f"{link.digest_ack.total_bytes} at the sender)")
