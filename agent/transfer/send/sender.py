"""`herdcast send`: udp-sender's behaviour, plus a digest table and late-join rounds.

The pieces, all in this package: session (what the run found: interface, block size, image
size, data address) over network (sockets), participants (who takes part), start (the wait
for the start triggers), reader (input, pipe, compression, slice reader thread), rounds
(slices, REQACK rounds, retransmissions), pacer (pacing), batch (sendmmsg), streaming
(--async) and report (the final table). This module strings them together into rounds: the
first for the receivers present at the start, then one more for each batch of receivers
that asked to join while a round was running (when the input can be read again).
"""

from __future__ import annotations

import socket
import sys
import time

from agent.net import netif
from agent.say import log_to, say
from agent.transfer.options import SendOptions
from agent.transfer.progress import Progress
from agent.transfer.result import ReceiverReport, SendStats, TransferResult
from agent.transfer.send.batch import SliceBuffer
from agent.transfer.send.fec import slice_encoder
from agent.transfer.send.network import SendError
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.participants import Table, participants_summary
from agent.transfer.send.reader import Input, InputError, SliceReader, open_input
from agent.transfer.send.report import format_table, verdict
from agent.transfer.send.rounds import Transfer
from agent.transfer.send.session import SendSession
from agent.transfer.send.start import wait_for_start
from agent.transfer.send.streaming import send_async

LATE_HELLO_INTERVAL = 0.5
LATE_CONNECT_WAIT = 10.0
MAX_ROUNDS = 16
SO_SNDBUFFORCE = 32


def _size_send_buffer(session: SendSession, table: Table) -> None:
    """Without --sendbuf: when every receiver has a big socket buffer (herdcast's 4 MiB),
    let more packets be in flight so a receiver descheduled for a moment does not stall the
    sender (each multicast packet holds send-buffer room until every receiver read it)."""
    smallest = table.min_rcvbuf()
    if session.opts.sendbuf is None and smallest and smallest >= 1 << 20:
        netif.set_buffer(session.net.main, socket.SO_SNDBUF, SO_SNDBUFFORCE,
                         min(2 << 20, smallest // 4))


def send(opts: SendOptions) -> TransferResult:
    """Send opts.file (or stdin) to the receivers that connect; never raises on bad input,
    a dead network or a receiver's fault: the result says what went wrong."""
    started = time.monotonic()
    if opts.async_ and opts.fec is None:
        say("herdcast send: warning: --async without --fec: any lost packet corrupts the "
            "receivers' copy (add --fec 8x8/128)")
    if opts.sign_key is not None:
        from agent.transfer.send.signing import signer
        from agent.trust.keys import KeyFileError

        try:
            signer(opts.sign_key)
        except KeyFileError as exc:
            return TransferResult(ok=False, error=str(exc))
    if opts.file is not None:
        from agent.hw.disk import send_source_warnings

        for line in send_source_warnings(opts.file):  # a disk mounted read-write
            say(f"herdcast send: {line}")
    try:
        session = SendSession.open(opts)
    except SendError as exc:
        return TransferResult(ok=False, error=str(exc))
    net, blocksize = session.net, session.blocksize
    inp: Input | None = None
    table = Table()
    stats = SendStats()
    result = TransferResult(ok=False, stats=stats)
    source, codec = session.source, session.codec
    for line in source.describe():
        say(f"herdcast send: {line}")
    try:
        # a disk's image stream is cheap to open: the round reopens it raw if it must
        opened_as_image = source.kind != "raw"
        inp = open_input(opts.file, opts.pipe, codec, source, opened_as_image)
        keyboard = (not opts.nokbd and opts.file is not None and sys.stdin is not None
                    and sys.stdin.isatty())
        say(f"herdcast send: {net.nif.name} {net.nif.ip}, port {net.port}, announcing to "
            f"{net.control}")
        # buffers are built while waiting, so the first packet leaves right at the start
        ring = 1 if opts.duplex == "half" else 2
        buffers = _buffers(session, ring)
        why = wait_for_start(session, table, keyboard=keyboard)
        started = time.monotonic()  # the rate in the table is the transfer's, not the wait's
        # the image size counts decompressed bytes; with --compress fewer go on the wire
        progress = Progress("send", total=None if codec or source.kind != "raw"
                            else session.image_size, enabled=not opts.no_progress)
        late: dict = {}
        served: set[str] = set()
        for round_no in range(MAX_ROUNDS):
            data_ip = session.aim(table)
            as_image = session.image_round(table)
            if as_image != opened_as_image:
                inp.close()
                inp = open_input(opts.file, opts.pipe, codec, source, as_image)
                opened_as_image = as_image
            say(f"herdcast send: starting ({why}): {participants_summary(table)}, data to "
                f"{data_ip} in {blocksize}-byte blocks"
                + (", herdcast image" if as_image else ""))
            _size_send_buffer(session, table)
            pacer = Pacer(blocksize, opts.max_bitrate, table.min_rcvbuf())
            encoder = slice_encoder(opts.fec, blocksize) if opts.fec else None
            reader = SliceReader(inp.stream, buffers, session.slice_blocks * blocksize, encoder)
            if opts.async_:
                try:
                    total, digest = send_async(session, reader, progress, stats)
                finally:
                    reader.stop()
                progress.close()
                result.bytes, result.sha256 = total, digest.hex()
                result.ok = True
                result.seconds = time.monotonic() - started
                return result
            transfer = Transfer(session, table, reader, pacer, progress, stats, late,
                                inp.rereadable)
            try:
                transfer.run()
                transfer.wait_digests()
            finally:
                reader.stop()
            table.settle_reports()
            if round_no == 0:
                result.bytes = transfer.total
                result.sha256 = transfer.digest.hex() if transfer.digest else None
            served |= set(table.participants)
            if not late:
                break
            # another round for the receivers that asked while this one ran
            expected = set(late) - served
            late.clear()
            if not expected:
                break
            inp.close()
            inp = open_input(opts.file, opts.pipe, codec, source, opened_as_image)
            # a fresh reader needs the old one's buffers back
            buffers = _buffers(session, ring)
            table.participants = {}
            say(f"herdcast send: another round for {len(expected)} late receiver(s): "
                f"{', '.join(sorted(expected))}")
            why = wait_for_start(session, table, keyboard=False, expect=expected,
                                 admit=lambda ip, e=expected, s=served: ip in e or ip not in s,
                                 hello_interval=LATE_HELLO_INTERVAL,
                                 give_up=LATE_CONNECT_WAIT)
            if not table.participants:
                for ip in expected:
                    table.reports.setdefault(ip, ReceiverReport(ip, status="dropped"))
                break
        progress.close()
        result.seconds = time.monotonic() - started
        result.receivers = list(table.reports.values())
        result.ok, result.error = verdict(result.receivers)
    except (SendError, InputError, OSError) as exc:
        result.ok = False
        result.error = str(exc)
        result.receivers = list(table.reports.values())
        result.seconds = time.monotonic() - started
    finally:
        if inp is not None:
            inp.close()
        net.close()
    return result


def _buffers(session: SendSession, ring: int) -> list[SliceBuffer]:
    """The slice buffers of one round: the ring in flight plus one the reader fills."""
    return [SliceBuffer(session.blocksize, session.dest, session.slice_blocks)
            for _ in range(ring + 1)]


def run_sender(opts: SendOptions) -> int:
    """The `herdcast send` command: send, print the receivers table, return the exit code.
    With --log every line also goes to that file, as udp-sender's does."""
    try:
        with log_to(opts.log):
            result = send(opts)
            stats = result.stats
            if result.receivers or stats is not None and stats.data_packets:
                say(format_table(result, stats))
            if not result.ok:
                say(f"herdcast send: {result.error}")
            return result.exit_code
    except OSError as exc:  # only opening --log: send() itself never raises
        say(f"herdcast send: --log {opts.log}: {exc.strerror or exc}")
        return 1
