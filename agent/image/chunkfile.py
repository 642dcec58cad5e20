"""Stored chunked images (agent.image.chunks): making one from a disk or a stream image,
and reading one back chunk by chunk.

The file: FileHeader (32 bytes: magic, where the manifest is, its length), the payloads in
table order, the manifest. A sender makes one before it serves chunks (`chunk_image`), once
per run; the pass reads each used byte once and compresses it, which is what sending the
current stream costs too, only done ahead, while the nodes boot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from agent.codec import decompressing_writer
from agent.image.beside import written_beside
from agent.image.chunks import (
    CHUNK_BYTES,
    FILE_HEADER_BYTES,
    FILE_MAGIC,
    Chunker,
    ChunkError,
    ChunkTable,
    FileHeader,
    build_manifest,
    data_reader,
    decode_payload,
    parse_manifest,
)
from agent.image.extents import Extent
from agent.image.stream import Decoder, DecodingWriter, encode


def is_chunked(head: bytes) -> bool:
    """Whether a file starts a stored chunked image."""
    return head[:len(FILE_MAGIC)] == FILE_MAGIC


@dataclass
class ChunkedFile:
    """An open stored chunked image: its table and where each payload starts."""

    fd: int
    table: ChunkTable
    starts: list[int]

    @classmethod
    def open(cls, path: str) -> ChunkedFile:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = FileHeader.parse(os.pread(fd, FILE_HEADER_BYTES, 0))
            raw = os.pread(fd, head.manifest_bytes, head.manifest_at)
            if len(raw) != head.manifest_bytes or head.manifest_bytes > 1 << 30:
                raise ValueError("cut short")
            table = parse_manifest(raw)
        except Exception as exc:  # noqa: BLE001 - construct, OS and our own: damaged
            os.close(fd)
            if isinstance(exc, ChunkError):
                raise ChunkError(f"{path}: {exc.what}", exc.fix) from None
            raise ChunkError(f"{path}: not a whole chunked image (its manifest is "
                             "missing or cut short)", "capture it again") from None
        starts, at = [], FILE_HEADER_BYTES
        for c in table.chunks:
            starts.append(at)
            at += c.wire_bytes
        if at != head.manifest_at:
            os.close(fd)
            raise ChunkError(f"{path}: payloads end at {at}, the manifest is at "
                             f"{head.manifest_at}")
        return cls(fd, table, starts)

    def payload(self, index: int) -> bytes:
        """The stored payload of chunk `index`, as the manifest names it."""
        return os.pread(self.fd, self.table.chunks[index].wire_bytes, self.starts[index])

    def decoded(self, index: int) -> bytes:
        """Chunk `index`'s DATA bytes, its payload checked against the manifest first."""
        return decode_payload(self.table.chunks[index], self.payload(index))

    def extents(self) -> list[Extent]:
        """The disk's used ranges (DATA and ZERO), the chunks' edges joined again."""
        out: list[Extent] = []
        for chunk in self.table.chunks:
            for offset, length, _ in chunk.extents:
                if out and out[-1].end == offset:
                    out[-1] = Extent(out[-1].offset, out[-1].length + length)
                else:
                    out.append(Extent(offset, length))
        return out

    def stream(self) -> Iterator[bytes]:
        """The image stream (agent.image.stream) of the disk this image holds: what a
        herdcast receiver that takes no chunks gets, and what stock receivers' raw disk is
        expanded from. The same bytes as the stream of the disk it was captured from."""
        chunk_bytes, by_offset = self.table.chunk_bytes, {}
        for c in self.table.chunks:
            by_offset[c.offset // chunk_bytes] = c
        cache: list = [-1, None]

        def read(length: int, offset: int) -> bytes:
            out, end = bytearray(), offset + length
            for k in range(offset // chunk_bytes, (end - 1) // chunk_bytes + 1):
                chunk = by_offset[k]  # encode reads only used ranges: chunks exist there
                if cache[0] != k:
                    cache[0], cache[1] = k, data_reader(chunk, self.decoded(chunk.index))
                for o, n, _ in chunk.extents:
                    start, stop = max(o, offset), min(o + n, end)
                    if start < stop:
                        out += cache[1](o, n)[start - o:stop - o]
            return bytes(out)

        return encode(None, self.table.disk_size, self.extents(), self.table.meta or None,
                      read=read)

    @property
    def file_bytes(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)


def chunk_image(path: str, out_path: str, *, extents=None, disk_size: int | None = None,
                meta: dict | None = None, codec: str | None = None,
                chunk_bytes: int = CHUNK_BYTES, fd: int | None = None,
                level: int = 3, cancelled=lambda: False) -> ChunkTable:
    """Write the chunked image of `path` to `out_path`: of a disk's used `extents` (with its
    `disk_size` and `meta`), or, without extents, of the stream image stored at `path`
    (compressed with `codec`). Returns its table."""
    with open(out_path, "wb") as out:
        out.write(bytes(FILE_HEADER_BYTES))
        raw = chunk_payloads(path, out.write, extents=extents, disk_size=disk_size, meta=meta,
                             codec=codec, chunk_bytes=chunk_bytes, fd=fd, level=level,
                             cancelled=cancelled)
        at = out.tell()
        out.write(raw)
        out.seek(0)
        out.write(FileHeader.build(dict(manifest_at=at, manifest_bytes=len(raw))))
    return parse_manifest(raw)


def chunk_payloads(path: str, put, *, extents=None, disk_size: int | None = None,
                   meta: dict | None = None, codec: str | None = None,
                   chunk_bytes: int = CHUNK_BYTES, fd: int | None = None,
                   level: int = 3, cancelled=lambda: False) -> bytes:
    """The pass of `chunk_image`: every chunk's payload handed to `put(payload)` in table
    order; returns the manifest (raw)."""
    chunker = Chunker(put, chunk_bytes, level)
    try:
        decoder = Decoder(chunker.data, chunker.zero, lambda offset, length: None)
        if extents is not None:
            own = fd is None
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if own else fd
            try:
                for piece in encode(fd, disk_size, extents, meta):
                    decoder.feed(piece)
                    if cancelled():
                        raise ChunkError("chunking stopped")
            finally:
                if own:
                    os.close(fd)
        else:
            sink = DecodingWriter(decoder)
            with open(path, "rb") as f:
                writer = decompressing_writer(sink, codec) if codec else sink
                while (piece := f.read(1 << 20)) and not cancelled():
                    writer.write(piece)
                writer.close()
        decoder.finish()
        chunks = chunker.finish(decoder.disk_size)
    finally:
        chunker.close()
    return build_manifest(chunk_bytes, decoder.disk_size, decoder.meta, chunks)


def describe_chunked(path: str, description: str) -> None:
    """A stored chunked image's description (its manifest's metadata) set: the payloads
    copied as they are beside the file, the new manifest after them, renamed over it."""
    stored = ChunkedFile.open(path)
    try:
        t = stored.table
        meta = dict(t.meta, description=description)
        raw = build_manifest(t.chunk_bytes, t.disk_size, meta, list(t.chunks))
        at = stored.starts[-1] + t.chunks[-1].wire_bytes if t.chunks else FILE_HEADER_BYTES
        with written_beside(path) as tmp, open(tmp, "wb") as new:
            new.write(FileHeader.build(dict(manifest_at=at, manifest_bytes=len(raw))))
            pos = FILE_HEADER_BYTES
            while pos < at:
                piece = os.pread(stored.fd, min(1 << 20, at - pos), pos)
                new.write(piece)
                pos += len(piece)
            new.write(raw)
    finally:
        stored.close()
