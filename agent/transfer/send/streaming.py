"""`herdcast send --async`: udpcast's one-way mode, for networks without a return channel.

Receivers that see CAP_ASYNC in HELLO go passive: nobody acknowledges, nothing is
retransmitted, so the sender paces every packet at --max-bitrate (mandatory) and relies on
--fec to repair losses. The stream ends as udpcast ends it: with FEC, one round of FEC
packets whose slice size is 0; without, an empty-slice REQACK sent twice. There is no
receivers table: a one-way sender cannot know who got what.
"""

from __future__ import annotations

import time

from agent.transfer.progress import Progress
from agent.transfer.result import SendStats
from agent.transfer.send.fec import send_fec_block
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.reader import EOF, SliceReader
from agent.transfer.send.session import SendSession
from agent.udpcast.protocol import BITMAP_BYTES, Op, build


def _paced(pacer: Pacer, want: int) -> int:
    """Block until the pacer lets some of `want` packets go; returns how many."""
    while True:
        n = pacer.grant(want, time.monotonic())
        if n:
            return n
        time.sleep(pacer.wait(want))


def send_async(session: SendSession, reader: SliceReader, progress: Progress,
               stats: SendStats) -> tuple[int, bytes]:
    """Send the whole stream one way; returns (bytes, sha256)."""
    net, opts, dest = session.net, session.opts, session.data_address
    pacer = Pacer(session.blocksize, opts.max_bitrate)
    slice_no = 0
    while True:
        item = None
        while item is None:
            item = reader.next_slice(timeout=0.5)
        if item is EOF:
            break
        buf, nbytes, fec_blocks = item
        nblocks = buf.prepare(slice_no, nbytes)
        sent = 0
        while sent < nblocks:
            n = _paced(pacer, nblocks - sent)
            sent += net.blocks.send(buf, sent, n)
        stats.data_packets += nblocks
        stats.bytes_sent += nbytes
        for fec_no, payload in fec_blocks or ():
            _paced(pacer, 1)
            send_fec_block(net.main, dest, opts.fec.stripes, slice_no, nbytes, fec_no,
                           payload)
            stats.fec_packets += 1
        reader.release(buf)
        slice_no += 1
        progress.update(stats.bytes_sent, sent=stats.data_packets)
    if opts.fec is not None:
        empty = bytes(session.blocksize)
        for fec_no in range(opts.fec.stripes * opts.fec.redundancy):
            _paced(pacer, 1)
            send_fec_block(net.main, dest, opts.fec.stripes, slice_no, 0, fec_no, empty)
    else:
        end = build(Op.REQACK, slice_no=slice_no, slice_bytes=0, rxmit=0,
                    ready_set=bytes(BITMAP_BYTES))
        for _ in range(2):
            net.send(end, dest)
            time.sleep(0.01)
    return reader.total, reader.sha.digest()
