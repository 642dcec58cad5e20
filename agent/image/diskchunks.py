"""A disk's chunks made again from the disk when they are sent: the disk is its own scratch.

Why: a sender serving a live disk chunks it once before the first chunk flies
(agent.image.chunkfile) and keeps the payloads, to send any of them again. A node booted
from the network has nowhere to keep them but memory (its /tmp is a tmpfs), and a root of a
few hundred gigabytes compresses to more than any node's memory. Chunk payloads are the
same bytes each time for the same data and level (agent.image.chunks.chunk_payload), so
for such a disk the pass keeps only what the offer needs (the manifest and each chunk's
piece-list hashes, agent.image.pieces), and each chunk is read and compressed again when it
is sent, on every core, a few chunks ahead of the carousel (which sends in disk order).

A payload made again must have the manifest's sha256. If not, the disk changed since the
pass (it is mounted read-write, or failing): the send stops with that, instead of sending
what every receiver would refuse piece by piece.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from agent.image.chunks import DATA, Chunk, ChunkError, ChunkTable, chunk_payload
from agent.image.direct import Direct, Pread, reading
from agent.image.pieces import list_index, piece_list

AHEAD = 4  # chunks made ahead of the one sent, per core


class PieceIndex:
    """The pass's `put` for a disk chunked without a scratch: of each payload it keeps only
    the offer's entry (its piece-list hashes)."""

    def __init__(self, blocksize: int) -> None:
        self.blocksize = blocksize
        self.entries: list[bytes] = []

    def __call__(self, payload: bytes) -> None:
        self.entries.append(list_index(piece_list(payload, self.blocksize), self.blocksize))

    @property
    def index(self) -> bytes:
        return b"".join(self.entries)


class DiskChunks:
    """Chunk payloads and piece lists of `table`, made from the disk at `path` on demand."""

    def __init__(self, path: str, table: ChunkTable, level: int, blocksize: int,
                 workers: int | None = None) -> None:
        self.path, self.table, self.level, self.blocksize = path, table, level, blocksize
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.ahead = AHEAD * (workers or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers or os.cpu_count() or 1,
                                        thread_name_prefix="herdcast-rechunk")
        self._made: dict[int, Future] = {}
        self._local = threading.local()  # a reader per thread: a Direct has one buffer
        self._readers: list[Direct | Pread] = []
        self._lock = threading.Lock()

    def chunk(self, index: int, ahead: bool = True) -> tuple[bytes, bytes]:
        """(payload, piece list) of chunk `index`, and (`ahead`) the next chunks begun on
        the pool. A chunk sent out of turn (the pieces receivers lack of one that went by)
        leaves what is begun alone. Raises ChunkError if the disk no longer holds what was
        chunked."""
        if not ahead:
            future = self._made.get(index)
            return future.result() if future is not None else self._make(index)
        count = len(self.table.chunks)
        future = self._made.pop(index, None)
        following = {(index + k) % count for k in range(1, min(self.ahead, count - 1) + 1)}
        for other in [i for i in self._made if i not in following]:
            self._made.pop(other).cancel()  # the carousel went elsewhere (a late receiver)
        for i in sorted(following - self._made.keys(), key=lambda i: (i - index) % count):
            self._made[i] = self._pool.submit(self._make, i)
        return future.result() if future is not None else self._make(index)

    def _make(self, index: int) -> tuple[bytes, bytes]:
        chunk = self.table.chunks[index]
        try:
            data = self._data(chunk)
        except OSError as exc:
            raise ChunkError(f"reading chunk {index} of {self.path} (bytes {chunk.offset}-"
                             f"{chunk.offset + chunk.span}) failed: {exc.strerror or exc}",
                             "the disk is failing or gone (see dmesg): image it from a "
                             "sound copy") from exc
        payload, codec = chunk_payload(data, self.level)
        if codec != chunk.codec or hashlib.sha256(payload).digest() != chunk.wire_sha256:
            raise ChunkError(
                f"chunk {index} of {self.path} (bytes {chunk.offset}-"
                f"{chunk.offset + chunk.span}) is not what it was when it was chunked: the "
                "disk changed while it was being sent",
                "send a disk nothing writes to (unmounted, or mounted read-only)")
        return payload, piece_list(payload, self.blocksize)

    def _data(self, chunk: Chunk) -> bytes:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = reading(self.fd)
            with self._lock:
                self._readers.append(reader)
        return b"".join(reader.read(length, offset) for offset, length, kind in chunk.extents
                        if kind == DATA)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        for reader in self._readers:
            reader.close()
        os.close(self.fd)
