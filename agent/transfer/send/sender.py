"""`herdcast send`: udp-sender's behaviour, plus a digest table and late-join rounds.

The pieces, all in this package: session (sockets, participants, start triggers), reader
(input, pipe, compression, slice reader thread), rounds (slices, REQACK rounds,
retransmissions), pacer (pacing), batch (sendmmsg) and report (the final table). This
module strings them together into rounds: the first for the receivers present at the
start, then one more for each batch of receivers that asked to join while a round was
running (when the input can be read again).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import sys
import time

from agent.net import netif
from agent.transfer.options import SendOptions
from agent.transfer.result import TransferResult
from agent.transfer.send.batch import Destination, SliceBuffer
from agent.transfer.send.fec import slice_encoder
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.reader import Input, InputError, SliceReader, open_input
from agent.transfer.send.report import format_table, verdict
from agent.transfer.send.rounds import Stats, Transfer, participants_summary
from agent.transfer.send.session import Network, SendError, Table, wait_for_start
from agent.transfer.send.streaming import send_async

LATE_HELLO_INTERVAL = 0.5
LATE_CONNECT_WAIT = 10.0
MAX_ROUNDS = 16
SO_SNDBUFFORCE = 32


def _progress(opts: SendOptions, total: int | None):
    try:
        from agent.transfer.progress import Progress
    except ImportError:  # pragma: no cover - progress.py is another engineer's module
        class Progress:  # type: ignore[no-redef]
            def __init__(self, *a, **k) -> None:
                pass

            def update(self, *a, **k) -> None:
                pass

            def close(self, final_line=None) -> None:
                if final_line:
                    print(final_line, file=sys.stderr)
    return Progress("send", total=total, enabled=not opts.no_progress)


def _unsupported(opts: SendOptions) -> str | None:
    if opts.async_ and opts.fec is None:
        print("herdcast send: warning: --async without --fec: any lost packet corrupts the "
              "receivers' copy (add --fec 8x8/128)", file=sys.stderr)
    return None


def _input_size(opts: SendOptions) -> int | None:
    """Bytes of the input file or block device (None for stdin or --pipe)."""
    if opts.file is None or opts.pipe:
        return None
    try:
        st = os.stat(opts.file)
        if stat.S_ISBLK(st.st_mode):
            with open(opts.file, "rb") as f:
                return f.seek(0, os.SEEK_END)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _data_address(net: Network, table: Table, opts: SendOptions) -> str:
    """Where DATA and REQACK go: broadcast, one receiver point-to-point, or the group."""
    if opts.broadcast:
        return net.nif.broadcast or net.control
    if len(table.participants) == 1 and opts.pointopoint is not False and not opts.async_:
        return next(iter(table.participants.values())).ip
    return net.advertised


def _size_send_buffer(net: Network, table: Table, opts: SendOptions) -> None:
    """Without --sendbuf: when every receiver has a big socket buffer (herdcast's 4 MiB),
    let more packets be in flight so a receiver descheduled for a moment does not stall the
    sender (each multicast packet holds send-buffer room until every receiver read it)."""
    smallest = table.min_rcvbuf()
    if opts.sendbuf is None and smallest and smallest >= 1 << 20:
        netif.set_buffer(net.main, socket.SO_SNDBUF, SO_SNDBUFFORCE, min(2 << 20, smallest // 4))


SLICE_BYTES = 1024 * 1456  # udpcast's default slice: 1024 Ethernet-sized blocks


def _slice_blocks(opts: SendOptions) -> int:
    if opts.fec is not None:  # udpcast: stripes x stripe size, at most 1024
        return min(1024, opts.fec.stripes * opts.fec.stripesize)
    if opts.async_:
        return 1024
    if opts.default_slice_size:
        return max(opts.min_slice_size, min(opts.default_slice_size, opts.max_slice_size))
    # Automatic: slices of udpcast's ~1.5 MB whatever the block size. Jumbo-frame blocks
    # would otherwise make 9 MB slices, and the pace (send.pacer) is adjusted once per
    # slice: a 64 MiB image would give it 7 chances to find the receivers' speed.
    return max(opts.min_slice_size, min(opts.max_slice_size, SLICE_BYTES // opts.blocksize))


def send(opts: SendOptions) -> TransferResult:
    """Send opts.file (or stdin) to the receivers that connect; never raises on bad input,
    a dead network or a receiver's fault: the result says what went wrong."""
    started = time.monotonic()
    problem = _unsupported(opts)
    if problem:
        return TransferResult(ok=False, error=problem)
    try:
        net = Network(opts)
    except SendError as exc:
        return TransferResult(ok=False, error=str(exc))
    opts = dataclasses.replace(opts, blocksize=net.blocksize)  # what the MTU allows
    inp: Input | None = None
    table = Table()
    stats = Stats()
    result = TransferResult(ok=False)
    try:
        inp = open_input(opts.file, opts.pipe, opts.compress)
        # what a receiver writes (decompressed): herdcast receivers check their disk with it
        net.image_size = _input_size(opts)
        keyboard = (not opts.nokbd and opts.file is not None and sys.stdin is not None
                    and sys.stdin.isatty())
        print(f"herdcast send: {net.nif.name} {net.nif.ip}, port {net.port}, announcing to "
              f"{net.control}", file=sys.stderr, flush=True)
        # buffers are built while waiting, so the first packet leaves right at the start
        dest = Destination()
        blocks = _slice_blocks(opts)
        ring = 1 if opts.duplex == "half" else 2
        buffers = [SliceBuffer(opts.blocksize, dest, blocks) for _ in range(ring + 1)]
        why = wait_for_start(net, table, opts, keyboard=keyboard)
        started = time.monotonic()  # the rate in the table is the transfer's, not the wait's
        progress = _progress(opts, None if opts.compress else net.image_size)
        late: dict = {}
        served: set[str] = set()
        for round_no in range(MAX_ROUNDS):
            data_ip = _data_address(net, table, opts)
            dest.set(data_ip, net.port)
            net.dest = dest.address
            print(f"herdcast send: starting ({why}): {participants_summary(table)}, data to "
                  f"{data_ip} in {opts.blocksize}-byte blocks", file=sys.stderr, flush=True)
            _size_send_buffer(net, table, opts)
            pacer = Pacer(opts.blocksize, opts.max_bitrate, table.min_rcvbuf())
            encoder = slice_encoder(opts.fec, opts.blocksize) if opts.fec else None
            reader = SliceReader(inp.stream, buffers, blocks * opts.blocksize, encoder)
            if opts.async_:
                try:
                    total, digest = send_async(net, opts, reader, progress, stats)
                finally:
                    reader.stop()
                progress.close()
                result.bytes, result.sha256 = total, digest.hex()
                result.ok = True
                result.seconds = time.monotonic() - started
                result.stats = stats  # type: ignore[attr-defined]
                return result
            transfer = Transfer(net, table, opts, reader, pacer, progress, stats, late,
                                inp.rereadable)
            try:
                transfer.run()
                transfer.wait_digests()
            finally:
                reader.stop()
            transfer.finish_reports()
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
            inp = open_input(opts.file, opts.pipe, opts.compress)
            # a fresh reader needs the old one's buffers back
            buffers = [SliceBuffer(opts.blocksize, dest, blocks) for _ in range(ring + 1)]
            table.participants = {}
            print(f"herdcast send: another round for {len(expected)} late receiver(s): "
                  f"{', '.join(sorted(expected))}", file=sys.stderr, flush=True)
            why = wait_for_start(net, table, opts, keyboard=False, expect=expected,
                                 on_other=lambda ip, e=expected, s=served: ip in e or ip not in s,
                                 hello_interval=LATE_HELLO_INTERVAL,
                                 give_up=LATE_CONNECT_WAIT)
            if not table.participants:
                for ip in expected:
                    table.reports.setdefault(ip, _missing_report(ip))
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
    result.stats = stats  # type: ignore[attr-defined]
    return result


def _missing_report(ip: str):
    from agent.transfer.result import ReceiverReport

    return ReceiverReport(ip, status="dropped")


def run_sender(opts: SendOptions) -> int:
    """The `herdcast send` command: send, print the receivers table, return the exit code."""
    result = send(opts)
    stats = getattr(result, "stats", None)
    if result.receivers or stats is not None and stats.data_packets:
        print(format_table(result, stats), file=sys.stderr, flush=True)
    if not result.ok:
        print(f"herdcast send: {result.error}", file=sys.stderr, flush=True)
    return result.exit_code
