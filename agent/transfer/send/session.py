"""One `herdcast send`'s run-time facts, found once at the start and read by every round.

The options stay what the user wrote. What the run finds out lives here instead: the
interface actually chosen and the block size its MTU allows (`net`), the size of the image
a receiver will write, the blocks per slice, and the data address (`dest`, aimed at the
start of each round: the group, the broadcast address, or the one receiver point-to-point).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field

from agent.codec import wire_index
from agent.image.source import Source, inspect_source
from agent.transfer.options import SendOptions
from agent.transfer.send.allow import AllowList, probe
from agent.transfer.send.batch import Destination
from agent.transfer.send.names import Names
from agent.transfer.send.network import Network
from agent.transfer.send.participants import Table
from agent.transfer.send.record import Receiver
from agent.transfer.send.signing import sign_reply
from agent.trust import statements
from agent.udpcast.extensions import build_connect_reply
from agent.udpcast.protocol import Cap, Op, build

SLICE_BYTES = 1024 * 1456  # udpcast's default slice: 1024 Ethernet-sized blocks


def input_size(opts: SendOptions) -> int | None:
    """Bytes of the input file or block device (None for stdin or --pipe): what a receiver
    writes (before --compress), so herdcast receivers can check their disk is big enough."""
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


def slice_blocks(opts: SendOptions, blocksize: int | None = None) -> int:
    """Blocks per slice for `blocksize` (default: --blocksize)."""
    if opts.fec is not None:  # udpcast: stripes x stripe size, at most 1024
        return min(1024, opts.fec.stripes * opts.fec.stripesize)
    if opts.async_:
        return 1024
    if opts.default_slice_size:
        return max(opts.min_slice_size, min(opts.default_slice_size, opts.max_slice_size))
    # Automatic: slices of udpcast's ~1.5 MB whatever the block size. Jumbo-frame blocks
    # would otherwise make 9 MB slices, and the pace (send.pacer) is adjusted once per
    # slice: a 64 MiB image would give it 7 chances to find the receivers' speed.
    blocksize = blocksize or opts.blocksize
    return max(opts.min_slice_size, min(opts.max_slice_size, SLICE_BYTES // blocksize))


def image_identity(opts: SendOptions, source: Source) -> bytes:
    """What a signed session names as its image: the input's path, size, change time and
    inode, and how it is sent; random for stdin or --pipe (a stream that is never the same
    twice)."""
    if opts.file is None or opts.pipe:
        return os.urandom(statements.IMAGE_ID_BYTES)
    try:
        st = os.stat(opts.file)
    except OSError:
        return os.urandom(statements.IMAGE_ID_BYTES)
    text = (f"{os.path.realpath(opts.file)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
            f"\0{st.st_dev}:{st.st_ino}\0{source.kind}\0{opts.compress}")
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True)
class SendSession:
    """What one send runs with: the options, the network it opened and what it measured."""

    opts: SendOptions
    net: Network  # the interface chosen, its sockets, the block size its MTU allows
    image_size: int | None  # bytes a receiver will write, None when unknown (stdin, pipe)
    slice_blocks: int
    dest: Destination  # the data address every prepared DATA message points at
    source: Source = Source("raw")  # or a disk's used blocks, or a stored image
    codec: str | None = None  # the compression on the wire: --compress, or a stored image's
    image_id: bytes = bytes(statements.IMAGE_ID_BYTES)  # signed sessions name it
    allow: AllowList | None = None  # --allow: who is answered (None: everybody)
    names: Names = field(default_factory=Names)  # MACs for --allow

    @classmethod
    def open(cls, opts: SendOptions) -> SendSession:
        """Look at the input, then open the network (raises SendError)."""
        source = inspect_source(opts.file, opts.blocks) if not opts.pipe else Source("raw")
        codec = source.codec if source.kind == "stored" else opts.compress
        net = Network(opts)
        size = source.disk_size if source.kind in ("stored", "chunked") else input_size(opts)
        return cls(opts, net, size, slice_blocks(opts, net.blocksize), Destination(),
                   source, codec, image_identity(opts, source), AllowList.parse(opts.allow))

    def admits(self, ip: str) -> bool:
        """Whether a receiver at `ip` is answered (--allow); an address whose MAC decides
        and is not known yet is probed, and answered when it asks again."""
        if self.allow is None:
            return True
        verdict = self.allow.admits(ip, self.names.mac)
        if verdict is None:
            probe(ip, self.net.port)
        return bool(verdict)

    def image_round(self, table: Table) -> bool:
        """Whether this round sends the image stream: a disk or stored image, and every
        receiver a herdcast one (a stock udp-receiver needs the raw disk)."""
        return self.source.kind != "raw" and bool(table.participants) and all(
            r.herdcast for r in table.participants.values())

    def round_codec(self, as_image: bool) -> str | None:
        """The compression of a round's stream: a stored image goes as it is (its own
        compression, which herdcast receivers were told); the raw disk it expands to, for a
        round with stock receivers, only as --compress asks (a stock udp-receiver writes
        what it gets, so compressed bytes would be a wrong disk without its --pipe)."""
        if self.source.kind == "stored" and not as_image:
            return self.opts.compress
        return self.codec

    @property
    def offers_chunks(self) -> bool:
        """Whether receivers that can take chunks get the chunk carousel (send.carousel):
        an image (a disk's used blocks, a stored image), not --async, not turned off with
        --chunks no (benchmarks compare both)."""
        return (self.source.kind != "raw" and not self.opts.async_
                and self.opts.chunks != "no")

    @property
    def blocksize(self) -> int:
        """The block size in use: --blocksize, or the largest the interface's MTU carries."""
        return self.net.blocksize

    @property
    def data_address(self) -> tuple[str, int]:
        """Where DATA, FEC and REQACK go this round."""
        return self.dest.address

    def aim(self, table: Table) -> str:
        """Point the data address for a round at the broadcast address, the one receiver
        (point-to-point), or the group; returns the IP."""
        net, opts = self.net, self.opts
        if opts.broadcast:
            ip = net.nif.broadcast or net.control
        elif len(table.participants) == 1 and opts.pointopoint is not False \
                and not opts.async_:
            ip = next(iter(table.participants.values())).address
        else:
            ip = net.advertised
        self.dest.set(ip, net.port)
        return ip

    def reply(self, r: Receiver | None, addr: tuple[str, int]) -> None:
        """CONNECT_REPLY: the slot (-1 when the table is full), block size, caps and group;
        herdcast receivers also learn the image size, the codec and their secret, and one
        that sent a nonce gets the session signed for it (kept in its record)."""
        net = self.net
        chunks = r is not None and r.caps & Cap.CHUNKS and self.offers_chunks
        fields = dict(client_number=r.slot if r else -1, blocksize=net.blocksize,
                      capabilities=net.caps | (Cap.CHUNKS if chunks else 0),
                      mcast_addr=net.advertised)
        if r is not None and r.herdcast:
            reply = build_connect_reply(image_size=self.image_size or 0, codec=self.codec,
                                        secret=r.secret, **fields)
            signed = None
            if r.nonce is not None:
                signed = statements.Session(
                    r.nonce, addr[0], net.nif.ip, net.port + 1, net.advertised, net.blocksize,
                    self.image_size or 0, wire_index(self.codec), self.image_id)
            reply, r.statement = sign_reply(self.opts.sign_key, reply, signed)
            net.send(reply, addr)
        else:
            net.send(build(Op.CONNECT_REPLY, **fields), addr)
