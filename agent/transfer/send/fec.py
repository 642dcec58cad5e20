"""FEC blocks for `herdcast send --fec SxR/Z`, in udpcast's wire format.

After a slice's data the sender adds R redundancy blocks per stripe (agent.udpcast.fec, the
codec the receiver decodes with too: Rizzo's Cauchy code, as stock udp-receiver), numbered
s + r*S, each a FEC packet: header (op 9, stripes, slice, fecBlockNo, slice bytes) plus a
full block. They are computed by the reader thread as soon as a slice is read, so the
network thread only sends them; like udpcast, they are never retransmitted — lost data
blocks that FEC cannot cover are retransmitted as usual.
"""

from __future__ import annotations

import contextlib
import socket

from agent.transfer.options import FecSpec
from agent.transfer.send.batch import SliceBuffer
from agent.udpcast import fec
from agent.udpcast.protocol import FEC_HEADER, Op


def slice_encoder(spec: FecSpec, blocksize: int):
    """A function (buffer, nbytes) -> [(fecBlockNo, payload)] for the slice reader."""

    def encode(buf: SliceBuffer, nbytes: int) -> list[tuple[int, bytes]]:
        nblocks = -(-nbytes // blocksize)
        blocks = [buf.view[i * blocksize:min(nbytes, (i + 1) * blocksize)]
                  for i in range(nblocks)]
        return fec.encode_slice(blocks, spec.stripes, spec.redundancy, blocksize)

    return encode


def send_fec_block(sock: socket.socket, dest: tuple[str, int], stripes: int, slice_no: int,
                   nbytes: int, fec_no: int, payload: bytes) -> None:
    """One FEC packet to the data address."""
    header = FEC_HEADER.pack(int(Op.FEC), stripes, slice_no, fec_no, 0, nbytes)
    with contextlib.suppress(BlockingIOError, InterruptedError):  # UDP: a lost block
        sock.sendmsg([header, payload], [], 0, dest)
