"""Stored chunked images (agent.image.chunks): making one from a disk or a stream image,
and reading one back chunk by chunk.

The file: FileHeader (32 bytes: magic, where the manifest is, its length), the payloads in
table order, the manifest. A sender makes one before it serves chunks (`chunk_image`), once
per run; the pass reads each used byte once and compresses it, which is what sending the
current stream costs too, only done ahead, while the nodes boot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.codec import decompressing_writer
from agent.image.chunks import (
    CHUNK_BYTES,
    FILE_HEADER_BYTES,
    FILE_MAGIC,
    Chunker,
    ChunkError,
    ChunkTable,
    FileHeader,
    build_manifest,
    parse_manifest,
)
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
            table = parse_manifest(raw)
        except Exception as exc:  # noqa: BLE001 - construct, OS and our own: damaged
            os.close(fd)
            if isinstance(exc, ChunkError):
                raise ChunkError(f"{path}: {exc.what}", exc.fix) from None
            raise ChunkError(f"{path}: not a whole chunked image ({exc})") from None
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

    def close(self) -> None:
        os.close(self.fd)


def chunk_image(path: str, out_path: str, *, extents=None, disk_size: int | None = None,
                meta: dict | None = None, codec: str | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> ChunkTable:
    """Write the chunked image of `path` to `out_path`: of a disk's used `extents` (with its
    `disk_size` and `meta`), or, without extents, of the stream image stored at `path`
    (compressed with `codec`). Returns its table."""
    with open(out_path, "wb") as out:
        out.write(bytes(FILE_HEADER_BYTES))
        chunker = Chunker(out, chunk_bytes)
        decoder = Decoder(chunker.data, chunker.zero, lambda offset, length: None)
        if extents is not None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for piece in encode(fd, disk_size, extents, meta):
                    decoder.feed(piece)
            finally:
                os.close(fd)
        else:
            sink = DecodingWriter(decoder)
            with open(path, "rb") as f:
                writer = decompressing_writer(sink, codec) if codec else sink
                while piece := f.read(1 << 20):
                    writer.write(piece)
                writer.close()
        decoder.finish()
        chunks = chunker.finish(decoder.disk_size)
        raw = build_manifest(chunk_bytes, decoder.disk_size, decoder.meta, chunks)
        at = out.tell()
        out.write(raw)
        out.seek(0)
        out.write(FileHeader.build(dict(manifest_at=at, manifest_bytes=len(raw))))
    return parse_manifest(raw)
