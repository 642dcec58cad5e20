"""Where a carousel receiver's whole chunks go: one thread decompresses each, another writes
it onto the disk, while the receiving thread goes on taking pieces off the socket
(zstandard, hashlib and pwrite release the GIL). A direct write waits for the device
(agent.image.direct), so decompressing the next chunk meanwhile keeps both busy; one writer
keeps the disk's writes in the order chunks completed. The receiving thread waits only when
PENDING bytes of chunks are queued: a writer behind for a moment must not stop the socket
being read (its buffer overflows, and the sender slows for everybody). Then the end: the
disk read back (--verify readback) and the digest confirmed with the sender.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from agent.image.chunks import Chunk, ChunkError, decompress_payload
from agent.image.chunksink import ChunkSink
from agent.image.pieces import HASH_BYTES, counts
from agent.say import say
from agent.transfer.receive.link import Link
from agent.transfer.receive.readback import ReadbackError
from agent.transfer.receive.sockets import ReceiveError
from agent.trust.statements import CHUNKS
from agent.udpcast.protocol import Op, parse

DIGEST_INTERVAL, DIGEST_TIMEOUT = 0.25, 5.0
PENDING = 64 << 20  # used bytes of chunks queued at most; beyond, the receiving thread waits


class Landing:
    """Chunks handed over land on `sink`."""

    def __init__(self, sink: ChunkSink) -> None:
        self.sink = sink
        self._inflate = ThreadPoolExecutor(1, thread_name_prefix="herdcast-inflate")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="herdcast-land")
        self._pending: deque[tuple[Chunk, Future]] = deque()
        self._queued = 0  # used bytes of the chunks pending

    def submit(self, chunk: Chunk, payload: bytearray) -> list[Chunk]:
        """Hand a whole, checked payload over; returns chunks that failed meanwhile."""
        data = self._inflate.submit(decompress_payload, chunk, payload)
        self._pending.append((chunk, self._pool.submit(self._land, chunk, data)))
        self._queued += chunk.used_bytes
        return self.reap(wait=self._queued > PENDING)

    def _land(self, chunk: Chunk, data: Future) -> None:
        """The payload came whole, every piece matching the hash its signed offer names,
        and zstd expands it to exactly the size its extents say: the bytes written are the
        chunk's, so the manifest's content hash stands for them (the image digest is made
        of those). Not hashing them again saves a fifth of a receiver's CPU; --verify
        readback hashes what the disk returns instead (ChunkSink.read_back)."""
        self.sink.put(chunk, data.result())

    def reap(self, wait: bool = False) -> list[Chunk]:
        """Chunks landed so far; those whose payload did not decode (a sender's bug: every
        piece matched) are returned to be asked for again. A disk error is raised."""
        failed = []
        while self._pending and (wait or self._pending[0][1].done()):
            chunk, future = self._pending.popleft()
            self._queued -= chunk.used_bytes
            wait = False
            try:
                future.result()
            except ChunkError:
                failed.append(chunk)
        return failed

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def drain(self) -> list[Chunk]:
        failed = []
        while self._pending:
            failed += self.reap(wait=True)
        return failed

    def close(self) -> None:
        self._inflate.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)


class Partial:
    """A chunk being assembled (receive.carousel): its payload, the pieces got, its list
    pieces got, before it lands."""

    def __init__(self, chunk: Chunk, blocksize: int) -> None:
        self.count, self.nlists = counts(chunk.wire_bytes, blocksize)
        self.per = blocksize // HASH_BYTES  # data pieces per list piece
        self.payload = bytearray(chunk.wire_bytes)
        self.hashes = bytearray(self.nlists * blocksize)
        self.got = self.lists = self.have = 0


def read_back(sink: ChunkSink, path: str) -> list[bytes]:
    """--verify readback: the disk read back after the flush, each chunk against the
    manifest's content hash; returns the hashes read (the digest confirmed is then of what
    the disk returned)."""
    started, table = time.monotonic(), sink.table
    try:
        hashes, bad = sink.read_back()
    except OSError as exc:
        raise ReadbackError(f"{path}: reading back failed: {exc.strerror}",
                            "the disk is failing; replace it") from exc
    if bad:
        raise ReadbackError(f"{path}: {len(bad)} of {len(hashes)} chunks read back differ "
                            f"from the manifest (first at byte {table.chunks[bad[0]].offset})",
                            "the disk is failing; replace it")
    say(f"chunks: read back {table.used_bytes} bytes in {time.monotonic() - started:.1f} s: "
        "every chunk is the manifest's")
    return hashes


def confirm(link: Link, datagrams, total: int, digest: bytes) -> None:
    """HC_DIGEST until the sender's HC_DIGEST_ACK agrees (signed, in a signed session);
    `datagrams(timeout)` yields (op, view) of what the sender sends meanwhile."""
    trust = link.trust
    give_up = time.monotonic() + DIGEST_TIMEOUT
    why = None
    while time.monotonic() < give_up:
        link.send(link.digest_message(total, digest))
        until = time.monotonic() + DIGEST_INTERVAL
        while time.monotonic() < until:
            for op, view in datagrams(max(0.0, until - time.monotonic())):
                if op != Op.HC_DIGEST_ACK:
                    continue
                parsed = parse(view)
                if parsed is None or parsed[1].total_bytes != total:
                    continue
                agreed = bool(parsed[1].agreed)
                if trust is not None:
                    why, same = trust.result_problem(view, total, digest, CHUNKS)
                    if why is not None:
                        continue  # not the key holder's verdict
                    agreed = agreed and same
                    say("the sender's signed result names the chunks on this disk")
                if not agreed:
                    raise ReceiveError("image digest differs from the sender's: the "
                                       f"disk's chunks are not the image ({total} bytes)")
                return
    raise ReceiveError(f"sender did not confirm the digest within {DIGEST_TIMEOUT:g} s"
                       + (f" with a valid signature ({why})" if why else "")
                       + f" (the image is on the disk: sha256 {digest.hex()})")
