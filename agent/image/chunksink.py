"""Writing verified chunks (agent.image.chunks) onto a disk, in whatever order they come.

The disk is written in place, never truncated: what it already holds may be most of the
image (resume, delta). Blank space (no chunk's extent covers it) is handled per `blank=` as
the stream sink does, once every chunk is in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

from agent.image.chunks import Chunk, ChunkTable, content_hash, data_reader
from agent.image.direct import reading, reading_back
from agent.image.sink import DiskSink
from agent.image.stream import DATA, GRANULE


class ChunkSink(DiskSink):
    """A disk (block device or file) that takes chunks of `table` in any order."""

    def __init__(self, fd: int, path: str, table: ChunkTable, blank: str = "keep") -> None:
        super().__init__(fd, path, blank)
        self.table = table
        self.decoder.disk_size = table.disk_size  # what _check_size compares the disk with
        self._check_size()

    def put(self, chunk: Chunk, data: bytes) -> None:
        """A chunk's decoded DATA bytes (decode_payload checked them) onto the disk."""
        read = data_reader(chunk, data)
        for offset, length, kind in chunk.extents:
            if kind == DATA:
                self._write(offset, read(offset, length))
            else:
                self._zero(offset, length)

    def blank_space(self) -> None:
        """Every range no chunk's extent covers, per `blank=`; a file grows to the disk."""
        pos = 0
        for chunk in self.table.chunks:
            for offset, length, _ in chunk.extents:
                if offset > pos:
                    self._blank(pos, offset - pos)
                pos = offset + length
        if pos < self.table.disk_size:
            self._blank(pos, self.table.disk_size - pos)

    def sync(self) -> None:
        """Everything put is on the disk (what is gathered first: see close)."""
        self.settle()
        os.fsync(self.fd)  # the device's inode: what went direct is flushed with the rest

    def close(self) -> None:
        """The sink's own descriptor closed (a chunk sink has no stream to finish). Writes
        still gathered are dropped: the end of a sink that succeeded is `sync`."""
        self.close_direct()

    def read_back(self) -> tuple[list[bytes], list[int]]:
        """verify=readback on chunks: every chunk's extents read back from the device (the
        page cache dropped first, after sync) and hashed. Returns the content hashes read
        and the chunks whose hash is not the manifest's (a disk losing or garbling what it
        acknowledged). The manifest's hashes make the comparison: nothing is kept of what
        was written, and chunks already on the disk (resume, delta) are checked too."""
        reader = reading_back(self.fd)
        try:
            hashes = [content_hash(c.extents, lambda o, n: reader.read(n, o))
                      for c in self.table.chunks]
        finally:
            reader.close()
        bad = [c.index for c, h in zip(self.table.chunks, hashes, strict=True)
               if h != c.content_sha256]
        return hashes, bad


def probe(chunk: Chunk) -> tuple[int, int] | None:
    """(offset, length) of a few bytes of `chunk` that are not all zero in the image: the
    first granule of its first DATA extent (None: it has no DATA). An image never keeps an
    all-zero granule as DATA (agent.image.stream cuts DATA at disk-aligned granules and
    sends all-zero ones as ZERO; chunks are cut at granule multiples), so a disk that reads
    all zero there lacks the chunk, known from one small read instead of the chunk's whole
    span (a new or wiped disk: a receiver's scan reads 4 KiB per chunk, not every used
    byte). The rule can only err towards "lacking" (a chunk sent again), never "holds"."""
    for offset, length, kind in chunk.extents:
        if kind == DATA:
            return offset, min(length, GRANULE - offset % GRANULE)
    return None


def surely_lacking(chunk: Chunk, read: Callable[[int, int], bytes | memoryview]) -> bool:
    """Whether the disk `read` reads lacks `chunk` by its probe alone (reads all zero)."""
    where = probe(chunk)
    if where is None:
        return False
    try:
        got = read(*where)
    except OSError:
        return False
    return len(got) == where[1] and bytes(got) == bytes(where[1])


def target_matches(fd: int, chunk: Chunk) -> bool:
    """Whether the disk on `fd` already holds `chunk` (resume, delta)."""
    return holds(chunk, lambda offset, length: os.pread(fd, length, offset))


def holds(chunk: Chunk, read: Callable[[int, int], bytes | memoryview]) -> bool:
    """Whether the bytes `read(offset, length)` returns are `chunk`'s: a disk reading zero
    at its probe lacks it (surely_lacking: no hashing on a new or wiped disk), else the
    content hash of its extents decides."""
    if not chunk.extents:
        return chunk.content_sha256 == hashlib.sha256().digest()
    if surely_lacking(chunk, read):
        return False
    start = chunk.extents[0][0]
    length = chunk.extents[-1][0] + chunk.extents[-1][1] - start
    try:
        span = read(start, length)
    except OSError:
        return False
    if len(span) != length:
        return False
    view = memoryview(span)
    return content_hash(chunk.extents, lambda offset, n: view[offset - start:
                                                             offset - start + n]) \
        == chunk.content_sha256


WINDOW = 16 << 20  # bytes of disk a scan reads at once


def scan(fd: int, table: ChunkTable) -> Iterator[tuple[Chunk, bool]]:
    """(chunk, whether the disk on `fd` already holds it) for every chunk in table order
    (resume, delta), in windows of up to WINDOW bytes of disk each read with one pread:
    a few hundred reads for a disk, not one per chunk or extent (holds). A window
    whose chunks all read zero at their probes (surely_lacking: a blank disk) is not
    read at all."""
    chunks, at, reader = table.chunks, 0, reading(fd)

    def pread(offset: int, length: int) -> bytes:
        return reader.read(length, offset)

    try:
        while at < len(chunks):
            first, end = chunks[at].offset, chunks[at].offset + chunks[at].span
            last = at + 1
            while last < len(chunks) and chunks[last].offset + chunks[last].span - first \
                    <= WINDOW:
                end = chunks[last].offset + chunks[last].span
                last += 1
            lacking = [surely_lacking(c, pread) for c in chunks[at:last]]
            if all(lacking):
                yield from ((c, False) for c in chunks[at:last])
                at = last
                continue
            try:
                window = memoryview(pread(first, end - first))
            except OSError:
                window = memoryview(b"")

            def read(offset: int, length: int, window=window, first=first) -> memoryview:
                return window[offset - first:offset - first + length]

            for c, lacks in zip(chunks[at:last], lacking, strict=True):
                yield c, not lacks and holds(c, read)
            at = last
    finally:
        reader.close()
