"""The chunk carousel: herdcast receivers that can write chunks in place (Cap.CHUNKS) take
the image as chunks (agent.image.chunks) they ask for, instead of a round's slices.

Receivers request, they do not acknowledge (Frisbee): each fetches the manifest directly,
hashes its own disk, then says which chunks it lacks (HC_NEED, a bitmap, sent when it
starts, when a chunk it lacked went by incomplete, and now and then while it lacks
anything). The sender keeps one bitmap, the union of what anybody lacks, and multicasts the
next wanted chunk after the last one sent, clearing its bit: a chunk wanted by a hundred
receivers goes once, and its cost does not grow with them. A receiver may come at any
moment: it keeps every chunk that flies from then on and asks for the ones before, so it is
done after about one image-time. Nobody's answer is awaited, so no receiver holds the
others back; the pace follows the loss the receivers report (send.pacer).

A receiver is finished when its digest (over the content hashes of what its disk holds)
agrees with the manifest's; the carousel ends when every receiver has a verdict, or, under
--serve, goes on taking new receivers until none is left and stops.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import tempfile
import threading
import time
from dataclasses import dataclass

from agent.image.chunkfile import ChunkedFile, chunk_image
from agent.image.chunks import CHUNK_BYTES
from agent.image.level import choose_level
from agent.image.pieces import build_offer, counts, list_index, piece_list
from agent.say import say
from agent.transfer.send.batch import SliceBuffer
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.participants import Table
from agent.transfer.send.record import Receiver, State, Verdict
from agent.transfer.send.session import SendSession
from agent.transfer.send.signing import digest_ack, signer
from agent.udpcast import carousel as wire
from agent.udpcast.protocol import HEADER_SIZE, Cap, LateStatus, Op, build, connect_nonce, parse

IDLE_INTERVAL = 0.25  # nobody lacks anything: say so this often, so lost HC_NEEDs repeat
DROP_SILENCE = 30.0  # a receiver without a verdict that says nothing for this long is dropped
MAX_PIECES = 64  # manifest pieces per HC_MANIFEST_REQ


def takes_chunks(session: SendSession, r: Receiver) -> bool:
    """Whether `r` gets chunks rather than slices (its CONNECT_REPLY said so)."""
    return bool(r.caps & Cap.CHUNKS) and session.offers_chunks


@dataclass
class Prepared:
    """The chunked image a sender serves, its piece lists at the session's block size and
    the offer receivers fetch (agent.image.pieces): made once, served every round."""

    stored: ChunkedFile
    lists: list[bytes]
    offer: bytes

    @classmethod
    def of(cls, stored: ChunkedFile, blocksize: int) -> Prepared:
        lists = [piece_list(stored.payload(c.index), blocksize) for c in stored.table.chunks]
        index = b"".join(list_index(lst, blocksize) for lst in lists)
        return cls(stored, lists, build_offer(stored.table.raw, blocksize, index))

    @property
    def table(self):
        return self.stored.table

    def close(self) -> None:
        self.stored.close()


def prepare(session: SendSession, cancelled=lambda: False) -> Prepared:
    """The chunked image of the input, made once in a temporary file (unlinked at once:
    it goes when the sender does), and its offer."""
    from agent.image.catalogue import metadata

    src, path = session.source, session.opts.file
    started = time.monotonic()
    if src.kind == "chunked":  # stored with its chunks: served as they are
        prepared = Prepared.of(ChunkedFile.open(path), session.blocksize)
        say(f"herdcast send: serving the stored chunks of {path} ("
            f"{len(prepared.table.chunks)} chunks, piece lists made in "
            f"{time.monotonic() - started:.1f} s)")
        return prepared
    fd, tmp = tempfile.mkstemp(prefix="herdcast-chunks-")
    os.close(fd)
    try:
        if src.kind == "used":
            level, why = choose_level(_samples(path, src.umap.extents),
                                      _wire_rate(session), os.cpu_count() or 1)
            say(f"herdcast send: chunks compressed at {why}")
            chunk_image(path, tmp, extents=src.umap.extents, disk_size=src.umap.disk_size,
                        meta=metadata(path, src.umap), level=level, cancelled=cancelled)
        else:
            chunk_image(path, tmp, codec=src.codec, cancelled=cancelled)
        prepared = Prepared.of(ChunkedFile.open(tmp), session.blocksize)
    finally:
        os.unlink(tmp)
    t = prepared.table
    say(f"herdcast send: chunked the image in {time.monotonic() - started:.1f} s: "
        f"{len(t.chunks)} chunks, {t.used_bytes} used bytes in {t.wire_bytes} bytes")
    return prepared


def _samples(path: str, extents, count: int = 8) -> list[bytes]:
    """`count` MiB of the disk's used bytes, spread over its extents (the level's test)."""
    used = sum(e.length for e in extents)
    if not used:
        return []
    wanted, out, fd = [used * i // count for i in range(count)], [], os.open(path, os.O_RDONLY)
    try:
        pos = 0
        for e in extents:
            while wanted and wanted[0] < pos + e.length:
                at = e.offset + wanted.pop(0) - pos
                out.append(os.pread(fd, min(CHUNK_BYTES, e.end - at), at))
            pos += e.length
    finally:
        os.close(fd)
    return out


def _wire_rate(session: SendSession) -> float:
    """Payload bytes per second the wire carries: --max-bitrate, else the link's speed
    (sysfs; 1 Gbit/s when it says nothing, as a veth or a tap does)."""
    bits = session.opts.max_bitrate
    if not bits:
        try:
            with open(f"/sys/class/net/{session.net.nif.name}/speed") as f:
                mbits = int(f.read().strip())
        except (OSError, ValueError):
            mbits = -1
        bits = mbits * 1e6 if mbits > 0 else 1e9
    return bits / 8 * 0.96  # headers: 1456 of 1514 bytes a frame


class Preparing:
    """`prepare` in a thread, begun before the wait for receivers: the sender answers
    CONNECT_REQs at once (a receiver seeing spoofed DATA meanwhile would take the silent
    sender for one that started without it), and the pass overlaps the nodes' boot."""

    def __init__(self, session: SendSession) -> None:
        self._result: Prepared | BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(session,), daemon=True,
                                        name="herdcast-chunking")
        self._thread.start()

    def _run(self, session: SendSession) -> None:
        try:
            self._result = prepare(session, self._cancel.is_set)
        except BaseException as exc:  # noqa: BLE001 - handed to the round that needs it
            self._result = exc

    def result(self) -> Prepared:
        """The prepared image, once made (the first carousel round waits for it)."""
        self._thread.join()
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result

    def close(self) -> None:
        self._cancel.set()  # a sender stopped while chunking stops at the next chunk
        self._thread.join()
        if isinstance(self._result, Prepared):
            self._result.close()


class Carousel:
    """Serves `stored`'s chunks to the table's Cap.CHUNKS participants (and any that come)."""

    def __init__(self, session: SendSession, table: Table, prepared: Prepared, fleet,
                 view, stats, stop) -> None:
        stored = prepared.stored
        self.session, self.table, self.stored = session, table, stored
        self.net, self.opts = session.net, session.opts
        self.fleet, self.view, self.stats, self.stop = fleet, view, stats, stop
        self.chunks = stored.table.chunks
        bs = self.net.blocksize
        self.lists, self.manifest = prepared.lists, prepared.offer
        self.manifest_sha = hashlib.sha256(self.manifest).digest()
        self.digest = stored.table.digest
        self.total = stored.table.used_bytes
        self.wanted = 0  # bit i: somebody lacks chunk i
        self.cursor = 0  # the chunk after the last one sent
        self.sent_chunks = 0
        most = max((sum(counts(c.wire_bytes, bs)) for c in self.chunks), default=0)
        self.buf = SliceBuffer(bs, session.dest, max(1, most))
        self.pacer = Pacer(bs, self.opts.max_bitrate, table.min_rcvbuf())
        self.heard: dict[str, float] = {}
        self._signatures: dict[str, bytes] = {}
        self.poller = select.epoll()
        for s in self.net.sockets:
            self.poller.register(s.fileno(), select.EPOLLIN)
        self._socks = {s.fileno(): s for s in self.net.sockets}
        self._rx = bytearray(2048)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        net, opts = self.net, self.opts
        ip = net.nif.broadcast or net.control if opts.broadcast else net.advertised
        self.session.dest.set(ip, net.port)
        say(f"herdcast send: chunk carousel to {ip}: {len(self.chunks)} chunks, digest "
            f"{self.digest.hex()[:16]}")
        now = time.monotonic()
        for r in self.table.participants.values():
            self.heard[r.address] = now
        next_idle = now
        while not self._over():
            if self.wanted:
                self._send_next()
                self._receive(0)
            else:
                now = time.monotonic()
                if now >= next_idle:
                    net.send(wire.build(Op.HC_IDLE, chunks=len(self.chunks)),
                             self.session.dest.address)
                    next_idle = now + IDLE_INTERVAL
                self._receive(min(0.05, max(0.0, next_idle - now)))
            self._drop_silent()
            self.view.update(self.stats.bytes_sent)
        self.poller.close()

    def _over(self) -> bool:
        if self.stop():
            return True
        return all(r.verdict is not None for r in self.table.participants.values())

    def _drop_silent(self) -> None:
        now = time.monotonic()
        for ip, r in list(self.table.participants.items()):
            if r.verdict is None and now - self.heard.get(ip, now) > DROP_SILENCE:
                say(f"herdcast send: receiver {ip} silent for {DROP_SILENCE:g} s: dropped")
                self.table.remove(ip, Verdict.DROPPED, f"silent for {DROP_SILENCE:g} s")

    def _send_next(self) -> None:
        """The first wanted chunk at or after the cursor: its list pieces, then its
        payload's pieces, paced."""
        ahead = self.wanted >> self.cursor
        index = (ahead & -ahead).bit_length() - 1 + self.cursor if ahead else \
            (self.wanted & -self.wanted).bit_length() - 1
        self.wanted &= ~(1 << index)
        self.cursor = (index + 1) % len(self.chunks)
        chunk, buf = self.chunks[index], self.buf
        payload, lists = self.stored.payload(index), self.lists[index]
        buf.view[:len(lists)] = lists
        buf.view[len(lists):len(lists) + len(payload)] = payload
        pieces = buf.prepare(index, len(lists) + len(payload))
        pack, hv, op = wire.CHUNK_HEADER.pack_into, buf.header_view, int(Op.HC_CHUNK)
        m = len(lists) // self.net.blocksize
        for i in range(m):
            pack(hv, i * HEADER_SIZE, op, 0, index, i, wire.PIECE_LIST, chunk.wire_bytes)
        for i in range(m, pieces):
            pack(hv, i * HEADER_SIZE, op, 0, index, i - m, wire.PIECE_DATA, chunk.wire_bytes)
        first = 0
        while first < pieces:
            now = time.monotonic()
            n = self.pacer.grant(pieces - first, now)
            if not n:
                self._receive(min(0.005, self.pacer.wait(pieces - first)))
                continue
            first += self.net.blocks.send(buf, first, n)
        self.sent_chunks += 1
        self.stats.data_packets += pieces
        self.stats.bytes_sent += len(payload)

    # ------------------------------------------------------------------ what receivers say

    def _receive(self, timeout: float) -> None:
        for fd, _ in self.poller.poll(timeout):
            s = self._socks.get(fd)
            while s is not None:
                try:
                    n, addr = s.recvfrom_into(self._rx, 0, socket.MSG_DONTWAIT)
                except OSError:
                    break
                view = memoryview(self._rx)[:n]
                parsed = wire.parse(view) or parse(view)
                if parsed is not None:
                    self._handle(parsed[0], parsed[1], addr, view)

    def _handle(self, op: Op, msg, addr: tuple[str, int], view: memoryview) -> None:
        ip = addr[0]
        r = self.table.participants.get(ip)
        if op == Op.CONNECT_REQ:
            self._connect(ip, addr, msg, connect_nonce(view))
            return
        if op == Op.HC_DIGEST:
            self._digest(ip, addr, msg)
            return
        if r is None:
            return
        self.heard[ip] = time.monotonic()
        r.answered()
        if op == Op.HC_NEED:
            self.wanted |= wire.need_mask(msg.first, msg.bitmap, len(self.chunks))
            if msg.received or msg.lost:
                self.pacer.feedback(msg.received + msg.lost, msg.lost)
        elif op == Op.HC_MANIFEST_REQ:
            self._manifest(r, addr, msg.first, min(msg.count, MAX_PIECES))
        elif op == Op.DISCONNECT:
            if r.verdict is None:
                say(f"herdcast send: receiver {ip} disconnected mid-transfer")
            self.table.remove(ip, Verdict.DISCONNECTED)

    def _connect(self, ip: str, addr, msg, nonce: bytes | None) -> None:
        """A receiver comes (or repeats itself): a chunk taker joins now, whenever that is;
        any other waits for a round after the carousel."""
        r = self.table.participants.get(ip)
        if r is None and msg.capabilities & Cap.CHUNKS:
            r = self.table.connect(ip, addr, msg.capabilities, msg.rcvbuf, nonce)
            if r is None:
                return
            r.round, r.started, r.state = self.fleet.round_no, time.time(), State.RECEIVING
            self.fleet.emit("started", r)
            say(f"herdcast send: receiver {ip} joins the carousel")
        if r is not None:
            self.heard[ip] = time.monotonic()
            self.session.reply(r, addr)
            return
        if self.table.wait_for_next(ip, addr, msg.capabilities) is not None \
                and msg.capabilities & Cap.HERDCAST:
            self.net.send(build(Op.HC_LATE, status=int(LateStatus.NEXT_ROUND),
                                slice_no=self.sent_chunks), addr)

    def _manifest(self, r: Receiver, addr, first: int, count: int) -> None:
        """HC_MANIFEST_INFO (signed for its nonce in a signed session) and the pieces."""
        signature = self._signatures.get(r.address)
        if signature is None:
            signature = bytes(64)
            if self.opts.sign_key is not None and r.nonce is not None:
                from agent.trust.manifest import sign_manifest

                signature = sign_manifest(signer(self.opts.sign_key), r.nonce,
                                          len(self.manifest), self.manifest_sha)
            self._signatures[r.address] = signature
        self.net.send(wire.build(Op.HC_MANIFEST_INFO, length=len(self.manifest),
                                 sha256=self.manifest_sha, signature=signature), addr)
        bs = self.net.blocksize
        pieces = -(-len(self.manifest) // bs)
        for piece in range(first, min(first + count, pieces)):
            head = wire.PIECE_HEADER.pack(int(Op.HC_MANIFEST_PIECE), 0, piece,
                                          len(self.manifest))
            self.net.send(head + self.manifest[piece * bs:(piece + 1) * bs], addr)

    def _digest(self, ip: str, addr, msg) -> None:
        """A receiver's digest of what its disk holds: agreed when it is the manifest's."""
        r = self.table.find(ip)
        if r is None:
            return
        if self.table.participants.get(ip) is not r:  # a repeat after it left
            if r.verdict is Verdict.OK and r.digest == msg.sha256.hex():
                self.net.send(digest_ack(self.opts.sign_key, r.nonce, True, msg.total_bytes,
                                         msg.sha256), addr)
            return
        self.heard[ip] = time.monotonic()
        agreed = msg.total_bytes == self.total and msg.sha256 == self.digest
        self.net.send(digest_ack(self.opts.sign_key, r.nonce, agreed, self.total,
                                 self.digest), addr)
        self.table.finished_data(r)
        self.table.record_digest(r, msg.total_bytes, msg.sha256, agreed)
