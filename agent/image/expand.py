"""The raw disk a stored image stands for, read front to back without a temporary file.

Stock udp-receivers of a stored image get every byte of the disk it was captured from:
the image's DATA in place and zeros for ZERO records and blank space, exactly what a
herdcast receiver with blank=zero leaves on its disk. The file is decompressed through
the codec's bounded reader and decoded as it is read, so each round costs one pass over
the file and memory of one piece, never a copy of the disk.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

from agent.codec import decompressing_reader
from agent.image.stream import Decoder

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


class ExpandingReader(io.RawIOBase):
    """read() gives the disk image `raw` (a stored image, compressed with `codec` or not)
    expands to; the image is checked whole (trailer and all) before the last byte."""

    def __init__(self, raw: BinaryIO, codec: str | None) -> None:
        super().__init__()
        self._raw = raw
        self._plain = decompressing_reader(raw, codec) if codec else raw
        self._queue: deque[bytes | int] = deque()  # data, or a count of zero bytes
        self._decoder = Decoder(lambda offset, data: self._queue.append(bytes(data)),
                                lambda offset, length: self._queue.append(length),
                                lambda offset, length: self._queue.append(length))
        self._items = self._decoded()
        self._pending: memoryview | int = 0

    def _decoded(self) -> Iterator[bytes | int]:
        while chunk := self._plain.read(CHUNK):
            self._decoder.feed(chunk)
            while self._queue:
                yield self._queue.popleft()
        self._decoder.finish()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._pending:
            item = next(self._items, None)
            if item is None:
                return 0
            self._pending = memoryview(item) if isinstance(item, bytes) else item
        if isinstance(self._pending, int):
            n = min(len(b), self._pending, CHUNK)
            b[:n] = _ZEROS[:n]
            self._pending -= n
            return n
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            if self._plain is not self._raw:
                self._plain.close()
            self._raw.close()
        super().close()
