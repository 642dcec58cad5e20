"""What a sender sends from its `--file`: a raw stream, the used blocks of a disk, or an
image file kept on a server, and the byte streams for each.

- raw: anything that is not a disk with a partition table (a plain file, stdin, a pipe),
  or `--blocks all`: every byte, as udpcast sends.
- used: a disk (device or image file) with a partition table: herdcast receivers get the
  image stream of its used blocks, stock receivers the raw disk.
- stored: a herdcast image file (`herdcast receive -f` into a file): herdcast receivers
  get it as it is, stock receivers the disk it expands to, decoded as it is sent
  (agent.image.expand).
- chunked: a stored chunked image (`herdcast image capture`, agent.image.chunkfile):
  chunk takers get its chunks as stored, other herdcast receivers its image stream, stock
  receivers the disk it expands to.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from agent.codec import codec as codec_entry
from agent.codec import decompressing_reader, sniff
from agent.errors import HerdcastError
from agent.image.catalogue import metadata
from agent.image.chunkfile import ChunkedFile, is_chunked
from agent.image.expand import ExpandingReader
from agent.image.stream import HEADER_SIZE, Header, Position, StreamReader, encode, is_image
from agent.image.usedmap import UsedMap, used_map
from agent.say import say


@dataclass(frozen=True)
class Source:
    """How a sender's input will be sent, found once before the first round."""

    kind: str  # "raw", "used", "stored", "chunked"
    disk_size: int | None = None  # what a receiver's disk must hold (used, stored)
    umap: UsedMap | None = None
    codec: str | None = None  # a stored image's compression

    def describe(self, compress: str | None = None) -> list[str]:
        """Lines saying what is sent; `compress`: --compress, which a stored image's raw
        disk gets for stock receivers."""
        if self.kind == "used" and self.umap is not None:
            return [*self.umap.describe(), f"to herdcast receivers: the {self.umap.used_bytes}"
                    f" used bytes of {self.umap.disk_size} (all-zero runs not sent); to stock"
                    " udp-receivers: every byte"]
        if self.kind == "raw" and self.umap is not None:
            return [*self.umap.describe(), "sending every byte: no filesystem on this disk "
                    "could be mapped (see the partitions above)"]
        if self.kind == "chunked":
            return [f"a chunked herdcast image of a {self.disk_size}-byte disk: its chunks "
                    "as stored to herdcast receivers writing disks, its image stream to other "
                    "herdcast receivers, expanded for stock udp-receivers"]
        if self.kind == "stored":
            stock = (f"compressed with {compress} (--compress: give them --pipe)" if compress
                     else "uncompressed (--compress CODEC compresses it for their --pipe)")
            return [f"a herdcast image of a {self.disk_size}-byte disk, compression "
                    f"{self.codec or 'none'}: sent as it is to herdcast receivers; to stock "
                    f"udp-receivers: the raw disk it expands to, {stock}"]
        return []


def inspect_source(path: str | None, blocks: str = "used") -> Source:
    """Decide how `path` is sent; never raises for an unreadable input (the reader reports
    that itself), it is then raw."""
    if path is None:
        return Source("raw")
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return Source("raw")
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return Source("raw")
    if is_chunked(head):
        try:
            stored_chunks = ChunkedFile.open(path)
        except HerdcastError as exc:
            say(f"{exc.what}: sending every byte")
            return Source("raw")
        stored_chunks.close()
        return Source("chunked", stored_chunks.table.disk_size)
    try:
        stored = _stored_header(path, head)
    except Exception:  # noqa: BLE001 - zstd, gzip and OS errors alike: a damaged file
        stored = None  # is sent as it is, byte for byte
    if stored is not None:
        return stored
    if blocks != "used":
        return Source("raw")
    try:
        umap = used_map(path)
    except (OSError, HerdcastError) as exc:
        say(f"used blocks of {path} unknown ({exc}): sending every byte")
        return Source("raw")
    if umap.scheme == "none":
        return Source("raw")
    if umap.used_bytes >= umap.disk_size:  # no filesystem could be mapped: say so
        return Source("raw", umap.disk_size, umap)
    return Source("used", umap.disk_size, umap)


def _stored_header(path: str, head: bytes) -> Source | None:
    codec = sniff(head)
    if codec is None:
        plain = head[:HEADER_SIZE]
    elif codec_entry(codec).inflater is None:
        return None  # lzop: a receiver could not tell it an image; it goes as a raw file
    else:
        with open(path, "rb") as f:
            plain = decompressing_reader(f, codec).read(HEADER_SIZE)
    if not is_image(plain) or len(plain) < HEADER_SIZE:
        return None
    return Source("stored", Header.parse(plain).disk_size, codec=codec)


def image_stream(path: str, source: Source) -> BinaryIO:
    """The image stream herdcast receivers get (before the wire's compression for `used`;
    as stored, compression included, for `stored`)."""
    if source.kind == "stored":
        return open(path, "rb", buffering=0)  # noqa: SIM115 - the caller's Input closes it
    if source.kind == "chunked":
        stored = ChunkedFile.open(path)
        return _ClosingReader(StreamReader(stored.stream()), stored.fd)
    assert source.umap is not None
    meta = metadata(path, source.umap)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    at = Position()
    return _ClosingReader(StreamReader(encode(fd, source.umap.disk_size, source.umap.extents,
                                              meta, at=at), at), fd)


def expanded_stream(path: str, source: Source) -> BinaryIO:
    """The raw disk a stored image stands for, for stock receivers, decoded as it is read
    (free space reads as zeros)."""
    if source.kind == "chunked":
        return ExpandingReader(image_stream(path, source), None)
    return ExpandingReader(open(path, "rb"), source.codec)  # noqa: SIM115 - closes it


class _ClosingReader(io.RawIOBase):
    """A reader that closes the disk's descriptor with itself."""

    def __init__(self, inner: StreamReader, fd: int) -> None:
        super().__init__()
        self._inner, self._fd = inner, fd
        self.position = inner.position

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._inner.readinto(b)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

