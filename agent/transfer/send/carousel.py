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
import hmac
import select
import socket
import time
from collections import deque

from agent.image.pieces import counts
from agent.net import netif
from agent.say import say
from agent.transfer.send.answers import note_changed
from agent.transfer.send.batch import SliceBuffer
from agent.transfer.send.chunking import Prepared
from agent.transfer.send.pacer import Pacer, pause
from agent.transfer.send.participants import Table
from agent.transfer.send.record import Receiver, State, Verdict
from agent.transfer.send.session import SendSession
from agent.transfer.send.signing import digest_ack, signer
from agent.trust.statements import CHUNKS
from agent.udpcast import carousel as wire
from agent.udpcast.extensions import connect_nonce, disconnect_secret, said
from agent.udpcast.protocol import HEADER_SIZE, Cap, LateStatus, Op, build, parse

IDLE_INTERVAL = 0.25  # nobody lacks anything: say so this often, so lost HC_NEEDs repeat
DROP_SILENCE = 30.0  # a receiver without a verdict that says nothing for this long is dropped
# every verdict given: this long for the receivers' DISCONNECT (a lost HC_DIGEST_ACK is asked
# again meanwhile), longer while one says it is personalising its clone (HC_CHANGED)
GOODBYE_WAIT = 3.0
MAX_PIECES = 64  # manifest pieces per HC_MANIFEST_REQ
IN_FLIGHT = 0.2  # s: an HC_NEED for a chunk sent this lately was written before it came


def takes_chunks(session: SendSession, r: Receiver) -> bool:
    """Whether `r` gets chunks rather than slices (its CONNECT_REPLY said so)."""
    return bool(r.caps & Cap.CHUNKS) and session.offers_chunks


class Carousel:
    """Serves `prepared`'s chunks to the table's Cap.CHUNKS participants (and any that come)."""

    def __init__(self, session: SendSession, table: Table, prepared: Prepared, fleet,
                 view, stats, stop) -> None:
        self.session, self.table, self.prepared = session, table, prepared
        self.net, self.opts = session.net, session.opts
        self.fleet, self.view, self.stats, self.stop = fleet, view, stats, stop
        self.chunks = prepared.table.chunks
        bs = self.net.blocksize
        self.manifest = prepared.offer
        self.manifest_sha = hashlib.sha256(self.manifest).digest()
        self.digest = prepared.table.digest
        self.total = prepared.table.used_bytes
        self.wanted = 0  # bit i: somebody lacks chunk i
        self.holes: dict[int, int] = {}  # wanted chunk -> the only data pieces lacked
        self.recent: deque[tuple[float, int]] = deque()  # (when, chunk) sent lately
        self.cursor = 0  # the chunk after the last one sent
        self.sent_chunks = 0
        self.sends = 0  # chunks and hole runs sent: the pacer's sequence (one cut per event)
        self.reported: dict[str, int] = {}  # receiver -> the first send its next report covers
        most = max((sum(counts(c.wire_bytes, bs)) for c in self.chunks), default=0)
        self.buf = SliceBuffer(bs, session.dest, max(1, most))
        self.pacer = Pacer(bs, self.opts.max_bitrate, table.min_rcvbuf(),
                           netif.speed_of(self.net.nif.name))
        self.heard: dict[str, float] = {}
        self._signatures: dict[str, bytes] = {}
        self.poller = select.epoll()
        for s in self.net.sockets:
            self.poller.register(s.fileno(), select.EPOLLIN)
        self._socks = {s.fileno(): s for s in self.net.sockets}
        self._rx = bytearray(2048)
        self.settled_at: float | None = None  # when the last verdict was given

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
        """Stopped, or every receiver has its verdict and has said goodbye (or GOODBYE_WAIT
        passed with none of them personalising its clone)."""
        if self.stop():
            return True
        staying = list(self.table.participants.values())
        if any(r.verdict is None for r in staying):
            self.settled_at = None
            return False
        now = time.monotonic()
        self.settled_at = self.settled_at or now
        staying = [r for r in staying if r.herdcast]
        return not staying or (now - self.settled_at >= GOODBYE_WAIT
                               and not any(r.personalising(now) for r in staying))

    def _drop_silent(self) -> None:
        now = time.monotonic()
        for ip, r in list(self.table.participants.items()):
            if r.verdict is None and now - self.heard.get(ip, now) > DROP_SILENCE:
                say(f"herdcast send: receiver {ip} silent for {DROP_SILENCE:g} s: dropped")
                self.table.remove(ip, Verdict.DROPPED, f"silent for {DROP_SILENCE:g} s")

    def _send_next(self) -> None:
        """The oldest chunk receivers hold all but some pieces of (their holes first, so
        the chunks they keep half-made stay few), else the first wanted chunk at or after
        the cursor: its list pieces, then its payload's pieces, paced."""
        if self.holes:
            index = next(iter(self.holes))
            self.wanted &= ~(1 << index)
            payload, lists = self.prepared.chunk(index, ahead=False)
            self._send_holes(index, payload, lists, self.holes.pop(index))
            return
        ahead = self.wanted >> self.cursor
        index = (ahead & -ahead).bit_length() - 1 + self.cursor if ahead else \
            (self.wanted & -self.wanted).bit_length() - 1
        self.wanted &= ~(1 << index)
        self.cursor = (index + 1) % len(self.chunks)
        chunk, buf = self.chunks[index], self.buf
        payload, lists = self.prepared.chunk(index)
        buf.view[:len(lists)] = lists
        buf.view[len(lists):len(lists) + len(payload)] = payload
        pieces = buf.prepare(index, len(lists) + len(payload))
        pack, hv, op = wire.CHUNK_HEADER.pack_into, buf.header_view, int(Op.HC_CHUNK)
        m = len(lists) // self.net.blocksize
        for i in range(m):
            pack(hv, i * HEADER_SIZE, op, 0, index, i, wire.PIECE_LIST, chunk.wire_bytes)
        for i in range(m, pieces):
            pack(hv, i * HEADER_SIZE, op, 0, index, i - m, wire.PIECE_DATA, chunk.wire_bytes)
        self._paced(pieces)
        self.recent.append((time.monotonic(), index))
        self.sent_chunks += 1
        self.sends += 1
        self.stats.bytes_sent += len(payload)

    def _send_holes(self, index: int, payload: bytes, lists: bytes, holes: int) -> None:
        """Only the data pieces receivers said they lack of a chunk they hold the rest of
        (HC_HOLES), after its list pieces (a few, in case one of those was lost), back to
        back in the buffer."""
        bs, buf, wire_bytes = self.net.blocksize, self.buf, len(payload)
        buf.view[:len(lists)] = lists
        numbers, at = [-1 - j for j in range(len(lists) // bs)], len(lists)
        while holes:
            i = (holes & -holes).bit_length() - 1
            holes &= holes - 1
            piece = payload[i * bs:(i + 1) * bs]
            buf.view[at:at + len(piece)] = piece
            numbers.append(i)
            at += len(piece)
        pieces = buf.prepare(index, at)
        pack, hv, op = wire.CHUNK_HEADER.pack_into, buf.header_view, int(Op.HC_CHUNK)
        for k, i in enumerate(numbers):
            kind, piece = (wire.PIECE_DATA, i) if i >= 0 else (wire.PIECE_LIST, -1 - i)
            pack(hv, k * HEADER_SIZE, op, 0, index, piece, kind, wire_bytes)
        self._paced(pieces)
        self.sends += 1
        self.stats.bytes_sent += at

    def _paced(self, pieces: int) -> None:
        """The buffer's `pieces` out, at the pacer's rate, answering receivers meanwhile."""
        first = 0
        while first < pieces:
            n = self.pacer.grant(pieces - first, time.monotonic())
            if not n:
                pause(min(0.005, self.pacer.wait(pieces - first)), self._receive)
                continue
            first += self.net.blocks.send(self.buf, first, n)
        self.stats.data_packets += pieces

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
        if op == Op.HC_CHANGED:
            note_changed(self.table, self.net, ip, addr, msg)
            return
        if r is None or op == Op.DISCONNECT and not r.leaves(disconnect_secret(view)):
            return  # a DISCONNECT spoofed from a herdcast receiver's address: not its own
        self.heard[ip] = time.monotonic()
        r.answered()
        if op == Op.HC_NEED:
            mask = wire.need_mask(msg.first, msg.bitmap, len(self.chunks))
            now = time.monotonic()
            while self.recent and now - self.recent[0][0] > IN_FLIGHT:
                self.recent.popleft()
            for _, index in self.recent:  # still on its way to whoever asked: not again
                mask &= ~(1 << index)
            self.wanted |= mask
            for index in [i for i in self.holes if mask >> i & 1]:
                del self.holes[index]  # somebody lacks all of it: all of it goes
            self._pace(ip, msg.received, msg.lost, now)
        elif op == Op.HC_HOLES:
            self._holes(msg.chunk, int.from_bytes(msg.bitmap, "little"))
        elif op == Op.HC_MANIFEST_REQ:
            self._manifest(r, addr, msg.first, min(msg.count, MAX_PIECES))
        elif op == Op.HC_FAIL and r.told(msg.secret):  # it stops, and says why
            self.table.remove(ip, Verdict.FAILED, said(msg.reason))
        elif op == Op.DISCONNECT:
            if r.verdict is None:
                say(f"herdcast send: receiver {ip} disconnected mid-transfer")
            self.table.remove(ip, Verdict.DISCONNECTED)

    def _pace(self, ip: str, received: int, lost: int, now: float) -> None:
        """A receiver's counts since its last report to the pacer (send.pacer): ramped by the
        time they cover, and cut once per loss event: a report that covers sends made
        before the last cut (from the send before its previous report on: a piece is
        counted lost only once its chunk went by) tells of the loss that cut answered."""
        since = self.reported.get(ip, 0)
        self.reported[ip] = max(0, self.sends - 1)
        if received or lost:
            self.pacer.feedback(received + lost, lost, since, self.sends, now)

    def _holes(self, index: int, bits: int) -> None:
        """A receiver lacks only these data pieces of chunk `index`: unless the whole chunk
        is to go anyway, they join the pieces it will send."""
        if index >= len(self.chunks):
            return
        bits &= (1 << -(-self.chunks[index].wire_bytes // self.net.blocksize)) - 1
        if bits and not (self.wanted >> index & 1 and index not in self.holes):
            self.holes[index] = self.holes.get(index, 0) | bits
            self.wanted |= 1 << index

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
        """A receiver's digest of what its disk holds: agreed when it is the manifest's.
        Believed only with the secret that receiver alone was told (its CONNECT_REPLY), so
        a digest forged from its address changes nothing; a verdict is given once."""
        r = self.table.find(ip)
        if r is None or r.secret is None or not hmac.compare_digest(msg.secret, r.secret):
            return
        if self.table.participants.get(ip) is not r:  # a repeat after it left
            if r.verdict is Verdict.OK and r.digest == msg.sha256.hex():
                self.net.send(digest_ack(self.opts.sign_key, r.statement, r.secret, True,
                                         msg.total_bytes, msg.sha256, CHUNKS), addr)
            return
        self.heard[ip] = time.monotonic()
        agreed = msg.total_bytes == self.total and msg.sha256 == self.digest
        r.kind = CHUNKS
        self.net.send(digest_ack(self.opts.sign_key, r.statement, r.secret, agreed,
                                 self.total, self.digest, CHUNKS), addr)
        self.table.finished_data(r)
        self.table.record_digest(r, msg.total_bytes, msg.sha256, agreed)
