"""The receiving end of the chunk carousel (send.carousel): manifest, own disk, requests.

1. The manifest (agent.image.chunks) is fetched from the sender directly and taken only
   when its sha256 is the one the sender named and, in a signed session, that name is
   signed for our nonce (agent.trust.manifest).
2. The disk is hashed at each chunk's extents (image.chunksink.scan: 16 MiB a read; a
   chunk whose probe reads zero is lacking unhashed, unread): a chunk already there (a rebooted
   node, a node holding the previous version of the image) is never asked for.
3. HC_NEED says what is lacking: all of it at once, every NEED_REFRESH and when the sender
   says nobody lacks anything; in between, soon after a chunk we lack went by incomplete
   or failed its hash, that chunk (not what is still on its way); a chunk that went by
   incomplete is asked for by its missing pieces (HC_HOLES): a lost datagram costs a
   datagram. Every chunk that flies and is lacking is kept, whoever asked for it: joining
   mid-stream is free.
4. A piece is kept only once it matches its hash (agent.image.pieces): a forged or
   damaged one is dropped on arrival. A whole chunk is decompressed and written by a
   worker thread (receive.landing) while pieces go on arriving.
5. The digest over the content hashes of what the disk now holds (hashed from the disk
   for chunks found there, the manifest's for chunks received whole and checked, read
   back from the disk under --verify readback) is confirmed with the sender (signed in a
   signed session), as after a round.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

from agent.image.chunks import Chunk, ChunkError, ChunkTable, image_digest
from agent.image.chunksink import ChunkSink, scan
from agent.image.pieces import (
    HASH_BYTES,
    Pieces,
    hash_at,
    parse_offer,
    piece_hash,
)
from agent.say import say
from agent.transfer.progress import Progress
from agent.transfer.receive.landing import Landing, Partial, confirm, read_back
from agent.transfer.receive.link import HC_STOP, Link, Session
from agent.transfer.receive.output import OutputError, check_image_fits
from agent.transfer.receive.sockets import (
    Reads,
    ReceiveError,
    drain,
    enable_gro,
    network_error,
)
from agent.udpcast import carousel as wire
from agent.udpcast.protocol import HEADER_SIZE, Op

REQUEST_INTERVAL = 0.5  # manifest requests, until it is whole (at once when one is in)
WINDOW = 64  # manifest pieces per request (send.carousel's MAX_PIECES)
NEED_REFRESH = 2.0  # HC_NEED while lacking anything, whatever happens
NEED_SOON = 0.05  # how soon after a reason to ask (plus up to as much again, at random)
RE_ASK = 0.5  # s: a chunk asked for that has not come again by then is asked for again, and
# a request for all is followed by one for what the sender has passed (the sender takes no
# ask for a chunk it sent within its IN_FLIGHT, 0.2 s: a receiver joining mid-carousel
# lacks the chunks sent just before)
MAX_PARTIAL = 32  # chunks being assembled at once; the oldest is dropped beyond
DEAD_SENDER = 30.0
IDLE_GRACE = 0.25  # s without a checked piece before HC_IDLE means nothing is in flight


class ChunkReceiver:
    """One carousel receive over `link`, connected to `session`'s sender."""

    def __init__(self, link: Link, session: Session) -> None:
        self.link, self.session, self.opts = link, session, link.opts
        self.partial: dict[int, Partial] = {}
        self.holed: set[int] = set()  # partial chunks that went by incomplete: HC_HOLES
        self.last_piece = 0.0  # when a checked piece last came
        self.received = self.lost = 0  # pieces since the last HC_NEED (the pace signal)
        self.wire_bytes = self.foreign = self.failed = self.forged = self.lost_all = 0
        self.current = -1  # the chunk the sender is sending
        self.need_at = self.refresh_at = 0.0  # the next HC_NEED; the next that says all
        self.went_by = 0  # chunks seen go by incomplete (or failing) since the last HC_NEED
        self.asked: dict[int, float] = {}  # chunks asked for as they went by: when
        self.last_rx = time.monotonic()
        self.idle_seen = False

    # ------------------------------------------------------------------ the receive

    def run(self) -> tuple[str, int]:
        """Receive until the disk holds the image; returns (hex digest, used bytes)."""
        self._attach()  # from here a failure is told to the sender (HC_FAIL, link.fail)
        check_image_fits(self.opts.file, self.session.image_size)  # before any write
        table, self.pieces = self._manifest()
        fd, sink = self._open(), None
        try:
            sink = ChunkSink(fd, self.opts.file, table, self.opts.blank)
            self.table, self.sink = table, sink
            self.hashes = [c.content_sha256 for c in table.chunks]
            started = time.monotonic()
            self.lacking = 0
            for c, there in scan(fd, table):
                if there:
                    continue
                if c.wire_bytes:
                    self.lacking |= 1 << c.index
                else:  # nothing but zeros: made here, nothing to send
                    sink.put(c, b"")
            carried = sum(1 for c in table.chunks if c.wire_bytes)
            have = carried - self.lacking.bit_count()
            say(f"chunks: {have} of {carried} already on {self.opts.file} "
                f"(hashed in {time.monotonic() - started:.1f} s), "
                f"{self.lacking.bit_count()} to receive")
            self._receive()
            sink.blank_space()
            sink.sync()
            if self.opts.verify == "readback":
                self.hashes = read_back(sink, self.opts.file)
        except OSError as exc:
            raise OutputError(f"{self.opts.file}: {exc.strerror or exc}") from exc
        finally:
            if sink is not None:
                sink.close()
            os.close(fd)
        say(f"chunks: received {self.wire_bytes} payload bytes, {self.forged} forged "
            f"piece(s) dropped, {self.failed} chunk(s) failed their hash, {self.foreign} "
            f"bytes not needed, {self.lost_all} pieces lost, {Reads.count} reads")
        digest = image_digest(self.hashes)
        confirm(self.link, self._datagrams, table.used_bytes, digest)
        return digest.hex(), table.used_bytes

    def _attach(self) -> None:
        link, session = self.link, self.session
        link.session, link.disconnect_due = session, True
        link.join_data_group(session.group)
        try:
            for s in link.socks:
                s.connect(session.sender)  # the kernel drops whatever others send
        except OSError as exc:
            raise network_error(f"connecting to the sender {session.sender[0]}", exc) from exc
        link.gro = enable_gro(link.socks)  # the sender is herdcast: its GSO runs come whole
        say(f"Connected to {session.sender[0]}: chunk carousel")

    def _open(self) -> int:
        try:
            return os.open(self.opts.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"--file {self.opts.file}: cannot open for writing: "
                              f"{exc.strerror}") from exc

    def _datagrams(self, timeout: float):
        """(op, view) of each datagram from the sender within `timeout` (receive.sockets:
        a GRO batch read once, split here)."""
        link = self.link
        scratch, mv, gro = link.scratch, link.mv, link.gro
        for key, _ in link.sel.select(timeout):
            if key.data == "kbd":
                continue
            for at, n in drain(key.fileobj, scratch, gro):
                if n >= 4:
                    self.last_rx = time.monotonic()
                    op = scratch[at] << 8 | scratch[at + 1]
                    if op == HC_STOP:
                        link.sender_stops(mv[at:at + n])  # raises if it is the sender's
                    yield op, mv[at:at + n]

    def _silent(self) -> None:
        limit = self.opts.receive_timeout or DEAD_SENDER
        if time.monotonic() - self.last_rx > limit:
            raise ReceiveError(f"nothing from sender {self.session.sender[0]} for {limit:g} s"
                               " mid-transfer: the image is incomplete")

    # ------------------------------------------------------------------ the manifest

    def _manifest(self) -> tuple[ChunkTable, Pieces]:
        """Ask for pieces until the named offer (the manifest and the piece index,
        agent.image.pieces) is whole, and its name signed."""
        trust, bs = self.link.trust, self.session.blocksize
        named: tuple[int, bytes] | None = None
        pieces: dict[int, bytes] = {}
        next_ask, window = 0.0, 0
        self.last_rx = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_ask:
                count = -(-named[0] // bs) if named else 1
                first = next((i for i in range(count) if i not in pieces), 0)
                self.link.send(wire.build(Op.HC_MANIFEST_REQ, first=first, count=WINDOW))
                window = first + WINDOW
                next_ask = now + REQUEST_INTERVAL
            for op, view in self._datagrams(0.1):
                if op == Op.HC_MANIFEST_INFO and named is None:
                    msg = wire.parse(view)
                    if msg is None:
                        continue
                    info = msg[1]
                    if trust is not None:
                        from agent.trust.manifest import verify_manifest

                        if not verify_manifest(trust.key, trust.nonce, info.length,
                                               info.sha256, info.signature):
                            continue  # not signed for us: a forger's
                    named, window = (info.length, info.sha256), WINDOW
                elif op == Op.HC_MANIFEST_PIECE and len(view) > HEADER_SIZE:
                    _, _, piece, length, = wire.PIECE_HEADER.unpack_from(view)
                    if named is None or length != named[0] or piece * bs >= length:
                        continue
                    pieces[piece] = bytes(view[HEADER_SIZE:])
                    if piece + 1 >= window and all(i in pieces for i in range(
                            min(-(-length // bs), window))):
                        next_ask = 0.0  # the window is in: the next one at once
                    if len(pieces) * bs >= length and all(
                            i in pieces for i in range(-(-length // bs))):
                        raw = b"".join(pieces[i] for i in range(-(-length // bs)))
                        if hashlib.sha256(raw).digest() == named[1]:
                            try:
                                return parse_offer(raw, bs)
                            except ChunkError as exc:
                                raise ReceiveError(f"the sender's manifest: {exc.what}") \
                                    from exc
                        pieces.clear()  # a forged piece among them: ask again
                        next_ask = 0.0
            if self.opts.start_timeout and named is None and \
                    time.monotonic() - self.last_rx > self.opts.start_timeout:
                raise ReceiveError(f"sender {self.session.sender[0]} did not start within "
                                   f"--start-timeout {self.opts.start_timeout:g} s")

    # ------------------------------------------------------------------ the chunks

    def _receive(self) -> None:
        total, started = self.lacking.bit_count(), time.monotonic()
        progress = Progress("receive", total=sum(
            c.used_bytes for c in self.table.chunks if self.lacking >> c.index & 1),
            enabled=not self.opts.no_progress)
        done = 0
        self.need_at = time.monotonic()
        self.landing = Landing(self.sink)
        try:
            while self.lacking or self.landing.busy:
                done -= self._failed(self.landing.reap() if self.lacking else
                                     self.landing.drain())
                now = time.monotonic()
                if now >= self.need_at:
                    self._need(now)
                for op, view in self._datagrams(max(0.0, min(0.2, self.need_at - now))):
                    if op == Op.HC_CHUNK:
                        done += self._piece(view)
                    elif op == Op.HC_IDLE:  # unsigned: believed once no piece comes
                        if time.monotonic() - self.last_piece > IDLE_GRACE:
                            self._passed(self.current)
                            self.current = -1
                        self.refresh_at = 0.0  # nothing is wanted: say all we lack
                        self._soon()
                self._silent()
                progress.update(done)
        finally:
            self.landing.close()
            progress.close()
        if total:
            say(f"chunks: all {total} received in {time.monotonic() - started:.2f} s")

    def _need(self, now: float) -> None:
        """HC_HOLES per chunk that went by incomplete and is held (its missing pieces fly
        again); HC_NEED for the other chunks that went by incomplete, and every
        NEED_REFRESH for every chunk lacking behind the one being sent (all of them when
        the sender says nobody wants anything, and at first). Chunks ahead are not asked
        for again: the sender has them from the first request (chunks go in index order),
        and asking again for what is already on its way (in this socket's queue while this
        receiver is behind) would have it sent twice; one lost whole is asked for once the
        sender has passed it, or when it says nobody wants anything. An HC_NEED always
        carries the pieces received and lost since the last (the pacer's signal), with an
        empty bitmap when nothing is asked."""
        full, holed = now >= self.refresh_at, 0
        for index, when in list(self.asked.items()):
            if not self.lacking >> index & 1:
                del self.asked[index]
            elif now - when >= RE_ASK:
                self.went_by |= 1 << index  # not come again: asked for again
        for index in list(self.holed):
            entry = self.partial.get(index)
            if entry is None or not self.lacking >> index & 1:
                self.holed.discard(index)  # done, or dropped for newer ones: all of it
                self.went_by |= (self.lacking >> index & 1) << index
                continue
            holed |= 1 << index
            missing = ~entry.got & ((1 << entry.count) - 1)
            self.link.send(wire.build(Op.HC_HOLES, chunk=index, bitmap=missing.to_bytes(
                wire.HOLE_BYTES, "little")))
        need = self.lacking & ~holed
        if not full:
            need &= self.went_by
        elif self.current >= 0:  # what the sender has passed; what is ahead is still coming
            need &= (1 << self.current) - 1 | self.went_by
        asks = wire.need_bitmaps(need, len(self.table.chunks))
        if not asks and (self.received or self.lost):
            asks = [(0, bytes(wire.NEED_BYTES))]
        for first, bitmap in asks:
            self.link.send(wire.build(Op.HC_NEED, first=first, received=self.received,
                                      lost=self.lost, bitmap=bitmap))
            self.received = self.lost = 0
        went, self.went_by = need & self.went_by, 0
        while went:
            self.asked[(went & -went).bit_length() - 1] = now
            went &= went - 1
        if full:  # after asking for all: soon again for what the sender then had just sent
            self.refresh_at = now + (RE_ASK if self.current < 0 else NEED_REFRESH)
        self.need_at = min([self.refresh_at, *(when + RE_ASK for when in self.asked.values())])

    def _soon(self) -> None:
        self.need_at = min(self.need_at,
                           time.monotonic() + NEED_SOON * (1 + random.random()))

    def _piece(self, view: memoryview) -> int:
        """One HC_CHUNK piece, kept only once checked (agent.image.pieces): a list piece
        against the offer, a data piece against its list piece (dropped while that has not
        come: the chunk flies again). Returns the used bytes of a chunk it completed."""
        if len(view) <= HEADER_SIZE:
            return 0
        _, _, index, piece, kind, wire_bytes = wire.CHUNK_HEADER.unpack_from(view)
        data = view[HEADER_SIZE:]
        if index >= len(self.table.chunks) or not self.lacking >> index & 1:
            self.foreign += len(data)
            return 0
        chunk, bs = self.table.chunks[index], self.session.blocksize
        if wire_bytes != chunk.wire_bytes:
            self.forged += 1
            return 0
        entry = self.partial.get(index)
        if kind == wire.PIECE_LIST:
            if entry is not None and entry.lists >> piece & 1:
                return 0
            if not self.pieces.list_ok(index, piece, data):
                self.forged += 1
                return 0
            self._now_at(index)
            if entry is None:
                if len(self.partial) >= MAX_PARTIAL:
                    del self.partial[next(iter(self.partial))]
                entry = self.partial[index] = Partial(chunk, bs)
            entry.lists |= 1 << piece
            entry.hashes[piece * bs:(piece + 1) * bs] = data
            self.received += 1
            return 0
        if entry is None or not entry.lists >> (piece // entry.per) & 1:
            if not self.went_by >> index & 1:  # its list piece was lost: ask for all of it
                self.went_by |= 1 << index
                self._soon()
            return 0
        if entry.got >> piece & 1:
            return 0  # a repeat
        at = hash_at(piece, bs)
        if piece >= entry.count or len(data) != min(bs, wire_bytes - piece * bs) or \
                piece_hash(data) != entry.hashes[at:at + HASH_BYTES]:
            self.forged += 1
            return 0
        self._now_at(index)
        entry.payload[piece * bs:piece * bs + len(data)] = data
        entry.got |= 1 << piece
        entry.have += 1
        self.received += 1
        self.wire_bytes += len(data)
        if entry.have < entry.count:
            return 0
        del self.partial[index]
        self.lacking &= ~(1 << index)  # every piece matched: it lands
        return chunk.used_bytes - self._failed(self.landing.submit(chunk, entry.payload))

    def _failed(self, chunks: list[Chunk]) -> int:
        """Chunks that did not decode are lacking again; returns their used bytes."""
        for chunk in chunks:
            self.failed += 1
            self.lacking |= 1 << chunk.index
            self.went_by |= 1 << chunk.index
            self._soon()
        return sum(c.used_bytes for c in chunks)

    def _now_at(self, index: int) -> None:  # a checked piece: the sender is sending it
        self.last_piece = time.monotonic()
        if index != self.current:
            self._passed(self.current)
            self.current = index

    def _passed(self, index: int) -> None:  # the sender moved on: incomplete? ask soon
        entry = self.partial.get(index)
        if entry is not None and self.lacking >> index & 1:
            self.lost += entry.count - entry.have
            self.lost_all += entry.count - entry.have
            if entry.count <= 8 * wire.HOLE_BYTES:  # list pieces come with the holes
                self.holed.add(index)
            else:
                self.went_by |= 1 << index
            self._soon()
