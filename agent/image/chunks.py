"""Chunked images: the disk cut into fixed, aligned ranges, each compressed on its own and
named by its hash in a manifest, so a receiver can take chunks in any order, keep what its
disk already holds and throw away anything forged (Frisbee's design, Emulab 2003).

    manifest  header (magic, chunk size, disk size, counts), META JSON, the chunk table,
              the extent table                                     (declared below)
    chunk     disk range [k * chunk_bytes, (k+1) * chunk_bytes) that holds used bytes:
              its extents (DATA or ZERO, cut at the chunk's edges), its payload (the DATA
              bytes in disk order, compressed alone), the payload's sha256 and the content
              sha256 (every extent's bytes as the disk must hold them, zeros for ZERO)

Chunks sit on fixed boundaries so two versions of an image cut the same ranges: a disk that
holds last month's image differs from this month's in the chunks that changed, and a
receiver finds those by hashing its own disk at each chunk's extents (agent.image.chunksink).
A payload is checked against its sha256 before it is decompressed (`decode_payload`) and
decompressed to exactly the size its extents say, so a forged chunk costs the time to hash
it, never a byte on a disk. The image digest is the sha256 of the content hashes in table
order: a receiver computes it from what its disk holds, a sender from its manifest.

A stored chunked image is a file: a 32-byte file header (magic, where the manifest lies and
its length), the payloads in table order, then the manifest (written last, as it is known
only once every chunk is compressed). A sender of a disk or a stream image makes one such
file first (`chunk_image`), a pass over the used bytes (see bench/chunks for its cost).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Padding,
    Struct,
    this,
)

from agent.codec.block import compress, decompress
from agent.codec.inflate import CodecError
from agent.errors import HerdcastError
from agent.image.stream import DATA, ZERO
from agent.udpcast.protocol import fast_header

CHUNK_BYTES = 1 << 20  # of disk per chunk (bench/chunks: 1 MiB vs 4 MiB)
MANIFEST_MAGIC = b"HERDCAST-MANIFST"
FILE_MAGIC = b"HERDCAST-CHUNKED"
VERSION = 1
CODEC_NONE, CODEC_ZSTD = 0, 3  # agent.codec wire numbers
_CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd"}
MAX_EXTENTS_PER_CHUNK = 1 << 16
_ZERO = bytes(CHUNK_BYTES)

ManifestHeader = Struct(
    "magic" / Const(MANIFEST_MAGIC),
    "version" / Int16ub,
    "reserved" / Int16ub,
    "chunk_bytes" / Int32ub,
    "disk_size" / Int64ub,
    "chunks" / Int32ub,
    "extents" / Int32ub,
    "meta_bytes" / Int32ub,
    "reserved2" / Int32ub,
)
ChunkEntry = Struct(
    "offset" / Int64ub,  # disk offset of the chunk's range
    "span" / Int32ub,  # bytes of disk it covers (chunk_bytes, less at the disk's end)
    "first_extent" / Int32ub,  # its extents: the extent table's [first, first + count)
    "extent_count" / Int32ub,
    "codec" / Int8ub,  # CODEC_NONE or CODEC_ZSTD
    Padding(3),
    "wire_bytes" / Int32ub,  # the payload's size
    "wire_sha256" / Bytes(32),
    "content_sha256" / Bytes(32),
)
ExtentEntry = Struct("offset" / Int64ub, "length" / Int32ub, "kind" / Int8ub, Padding(3))
Manifest = Struct(
    "header" / ManifestHeader,
    "meta" / Bytes(this.header.meta_bytes),
    "chunks" / Array(this.header.chunks, ChunkEntry),
    "extents" / Array(this.header.extents, ExtentEntry),
)
FileHeader = Struct("magic" / Const(FILE_MAGIC), "manifest_at" / Int64ub,
                    "manifest_bytes" / Int64ub)
# the tables are parsed thousands of entries at a time: the same layouts as struct.Structs
_CHUNK, _EXTENT = fast_header(ChunkEntry), fast_header(ExtentEntry)
HEADER_BYTES, FILE_HEADER_BYTES = ManifestHeader.sizeof(), FileHeader.sizeof()


class ChunkError(HerdcastError):
    """A manifest or chunk that is not what it claims (damaged, truncated, forged)."""


@dataclass(frozen=True)
class Chunk:
    """One row of the chunk table, with its extents as (offset, length, kind)."""

    index: int
    offset: int
    span: int
    codec: int
    wire_bytes: int
    wire_sha256: bytes
    content_sha256: bytes
    extents: tuple[tuple[int, int, int], ...]

    @property
    def data_bytes(self) -> int:
        """What its payload expands to: its DATA extents' bytes."""
        return sum(length for _, length, kind in self.extents if kind == DATA)

    @property
    def used_bytes(self) -> int:
        return sum(length for _, length, _ in self.extents)


@dataclass(frozen=True)
class ChunkTable:
    """A parsed manifest: the disk, its metadata, its chunks; `raw` the manifest's bytes."""

    chunk_bytes: int
    disk_size: int
    meta: dict
    chunks: tuple[Chunk, ...]
    raw: bytes

    @property
    def digest(self) -> bytes:
        """The image digest: sha256 of the content hashes in table order."""
        return image_digest(c.content_sha256 for c in self.chunks)

    @property
    def used_bytes(self) -> int:
        return sum(c.used_bytes for c in self.chunks)

    @property
    def wire_bytes(self) -> int:
        return sum(c.wire_bytes for c in self.chunks)


def image_digest(content_hashes) -> bytes:
    """sha256 over the chunks' content hashes, in table order."""
    h = hashlib.sha256()
    for digest in content_hashes:
        h.update(digest)
    return h.digest()


def parse_manifest(raw: bytes) -> ChunkTable:
    """A manifest from its bytes; ChunkError for anything malformed or inconsistent (a
    manifest may come from the network: nothing in it is trusted until checked here)."""
    try:
        head = ManifestHeader.parse(raw[:HEADER_BYTES])
    except ConstructError as exc:
        raise ChunkError(f"not a chunked image's manifest ({exc})") from None
    if head.version != VERSION:
        raise ChunkError(f"manifest version {head.version} is newer than this herdcast",
                         "update herdcast")
    size = head.disk_size
    if head.chunk_bytes < 4096 or head.chunk_bytes > 64 << 20 or head.chunks > size // (
            head.chunk_bytes) + 1 or head.extents > head.chunks * MAX_EXTENTS_PER_CHUNK:
        raise ChunkError(f"manifest sizes do not add up ({head.chunks} chunks of "
                         f"{head.chunk_bytes} bytes on a {size}-byte disk)")
    at = HEADER_BYTES + head.meta_bytes
    end = at + head.chunks * _CHUNK.size + head.extents * _EXTENT.size
    if len(raw) != end:
        raise ChunkError(f"manifest is {len(raw)} bytes, its header says {end}")
    try:
        meta = json.loads(raw[HEADER_BYTES:at]) if head.meta_bytes else {}
    except ValueError:
        meta = {}
    extents = list(_EXTENT.iter_unpack(raw[at + head.chunks * _CHUNK.size:end]))
    chunks, last_end = [], 0
    for i, (offset, span, first, count, codec, wire, wsha, csha) in enumerate(
            _CHUNK.iter_unpack(raw[at:at + head.chunks * _CHUNK.size])):
        mine = tuple((o, n, k) for o, n, k in extents[first:first + count])
        bad = (offset % head.chunk_bytes or offset < last_end or span > head.chunk_bytes
               or offset + span > size or first + count > len(extents)
               or codec not in _CODEC_NAMES or wire > 2 * head.chunk_bytes
               or any(k not in (DATA, ZERO) or o < offset or o + n > offset + span or not n
                      for o, n, k in mine))
        if bad:
            raise ChunkError(f"manifest chunk {i} is not a chunk of this disk")
        last_end = offset + span
        chunks.append(Chunk(i, offset, span, codec, wire, wsha, csha, mine))
    return ChunkTable(head.chunk_bytes, size, meta if isinstance(meta, dict) else {},
                      tuple(chunks), bytes(raw))


def build_manifest(chunk_bytes: int, disk_size: int, meta: dict,
                   chunks: list[Chunk]) -> bytes:
    """The manifest's bytes, as construct's Manifest declaration lays them out: its header
    built by the declaration, the tables packed row by row with the same layouts (_CHUNK,
    _EXTENT; the declaration took 23 s for the million rows of a terabyte disk)."""
    blob = json.dumps(meta, sort_keys=True).encode() if meta else b""
    rows, extents = [], []
    for c in chunks:
        rows.append(_CHUNK.pack(c.offset, c.span, len(extents), len(c.extents), c.codec,
                                c.wire_bytes, c.wire_sha256, c.content_sha256))
        extents += [_EXTENT.pack(o, n, k) for o, n, k in c.extents]
    head = ManifestHeader.build(dict(
        version=VERSION, reserved=0, chunk_bytes=chunk_bytes, disk_size=disk_size,
        chunks=len(rows), extents=len(extents), meta_bytes=len(blob), reserved2=0))
    return b"".join([head, blob, *rows, *extents])


def decode_payload(chunk: Chunk, payload: bytes | memoryview) -> bytes:
    """The DATA bytes of `chunk` from its payload; ChunkError unless the payload is exactly
    the one the manifest names (hashed before it is decompressed)."""
    if len(payload) != chunk.wire_bytes or hashlib.sha256(payload).digest() != \
            chunk.wire_sha256:
        raise ChunkError(f"chunk {chunk.index}: payload does not match the manifest")
    return decompress_payload(chunk, payload)


def decompress_payload(chunk: Chunk, payload: bytes | memoryview) -> bytes:
    """The DATA bytes of a payload already checked (piece by piece, agent.image.pieces)."""
    try:
        return decompress(_CODEC_NAMES[chunk.codec], payload, chunk.data_bytes)
    except CodecError as exc:  # the sender's own bug: its hash named a bad payload
        raise ChunkError(f"chunk {chunk.index}: {exc.what}") from exc


def content_hash(extents, read: Callable[[int, int], bytes | memoryview]) -> bytes:
    """sha256 of the bytes at `extents`, read with `read(offset, length)`."""
    h = hashlib.sha256()
    for offset, length, _ in extents:
        h.update(read(offset, length))
    return h.digest()


def data_reader(chunk: Chunk, data: bytes) -> Callable[[int, int], memoryview]:
    """`read(offset, length)` over a chunk's decoded DATA bytes (zeros for ZERO extents)."""
    view, at = memoryview(data), {}
    pos = 0
    for offset, length, kind in chunk.extents:
        if kind == DATA:
            at[offset] = pos
            pos += length
    return lambda offset, length: (view[at[offset]:at[offset] + length] if offset in at
                                   else memoryview(_ZERO)[:length])


class Chunker:
    """Takes an image's records in disk order (the agent.image.stream Decoder callbacks
    `data`, `zero`) and hands chunk payloads to `put` as each chunk's range is passed.
    Chunks are compressed on `workers` threads (zstandard and hashlib release the GIL), a
    few ahead of the one being written, so reading, compressing and writing overlap.
    `put(payload)` takes each chunk's payload, in table order (a file's write, or what
    keeps only the payload's piece hashes: agent.image.diskchunks)."""

    def __init__(self, put: Callable[[bytes], object], chunk_bytes: int = CHUNK_BYTES,
                 level: int = 3, workers: int | None = None) -> None:
        self.put, self.chunk_bytes, self.level = put, chunk_bytes, level
        self.chunks: list[Chunk] = []
        self._index: int | None = None  # the chunk being collected
        self._extents: list[list[int]] = []
        self._data = bytearray()
        self.disk_size = 0
        self._workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="herdcast-zstd")
        self._pending: deque = deque()  # (offset, extents, content sha256, future)

    def data(self, offset: int, view: memoryview) -> None:
        for at, piece in self._cut(offset, len(view)):
            self._extend(at, piece, DATA)
            self._data += view[at - offset:at - offset + piece]

    def zero(self, offset: int, length: int) -> None:
        for at, piece in self._cut(offset, length):
            self._extend(at, piece, ZERO)

    def _cut(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """(offset, length) pieces of a range, cut at chunk edges, the chunk entered."""
        end = offset + length
        while offset < end:
            index = offset // self.chunk_bytes
            if index != self._index:
                self._flush()
                self._index = index
            piece = min(end, (index + 1) * self.chunk_bytes) - offset
            yield offset, piece
            offset += piece

    def _extend(self, offset: int, length: int, kind: int) -> None:
        last = self._extents[-1] if self._extents else None
        if last is not None and last[2] == kind and last[0] + last[1] == offset:
            last[1] += length
        else:
            self._extents.append([offset, length, kind])

    def _flush(self) -> None:
        if self._index is None or not self._extents:
            return
        extents = tuple(tuple(e) for e in self._extents)
        future = self._pool.submit(_compressed, self._data, extents, self.level)
        self._pending.append((self._index * self.chunk_bytes, extents, future))
        self._extents, self._data = [], bytearray()
        while len(self._pending) > 2 * self._workers:
            self._write()

    def _write(self) -> None:
        offset, extents, future = self._pending.popleft()
        payload, codec, wire_sha, content = future.result()
        self.put(payload)
        self.chunks.append(Chunk(len(self.chunks), offset, self.chunk_bytes, codec,
                                 len(payload), wire_sha, content, extents))

    def finish(self, disk_size: int) -> list[Chunk]:
        """The last chunk out; every chunk's span cut to the disk's end."""
        self._flush()
        self._index = None
        while self._pending:
            self._write()
        self._pool.shutdown()
        self.chunks = [c if c.offset + c.span <= disk_size else Chunk(
            c.index, c.offset, disk_size - c.offset, *_rest(c)) for c in self.chunks]
        return self.chunks

    def close(self) -> None:
        """Stop the compressing threads (after finish, or on an error)."""
        self._pool.shutdown(cancel_futures=True)


def chunk_payload(data: bytes | bytearray, level: int) -> tuple[bytes, int]:
    """(payload, codec) of one chunk's DATA bytes: zstd at `level`, or the bytes as they are
    where zstd would not make them smaller. The same bytes each time for the same data and
    level (one-shot zstd, one thread): a sender may make a payload again from the disk
    (agent.image.diskchunks) and find the manifest's hash."""
    payload = compress("zstd", data, level)
    if len(payload) >= len(data):
        return bytes(data), CODEC_NONE
    return payload, CODEC_ZSTD


def _compressed(data: bytearray, extents, level: int) -> tuple[bytes, int, bytes, bytes]:
    """(payload, codec, payload sha256, content sha256) of one chunk's DATA bytes at its
    extents, on a worker thread."""
    payload, codec = chunk_payload(data, level)
    view, at, content = memoryview(data), 0, hashlib.sha256()
    for _, length, kind in extents:
        if kind == DATA:
            content.update(view[at:at + length])
            at += length
        else:
            content.update(memoryview(_ZERO)[:length])
    return payload, codec, hashlib.sha256(payload).digest(), content.digest()


def _rest(c: Chunk) -> tuple:
    return c.codec, c.wire_bytes, c.wire_sha256, c.content_sha256, c.extents
