"""The in-process codecs (gz through zlib, zstd through zstandard): compressing readers,
and decompression that never holds more than a bounded piece of output.

zlib bounds its output itself (`max_length`, the rest of the input kept as
`unconsumed_tail`). zstandard's incremental decompressor returns all the output of what it
is given, so it is given the input `ZSTD_IN` bytes at a time: a zstd block expands to at
most 128 KiB and takes at least 4 bytes, so one call yields at most 32 MiB. Concatenated
members or frames are followed (`cat a.gz b.gz | gzip -dc` works too), and a stream that
stops in the middle of one is an error: a truncated image must never look like a whole one.
None of these close the stream they wrap: the caller opened it, the caller closes it.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import BinaryIO

from agent.errors import HerdcastError

CHUNK = 1 << 20  # bytes read from a source at a time
PIECE = 1 << 20  # the largest piece of output one decompression step hands out
ZSTD_IN = 1024  # zstd input per call: at most 32 MiB of output (see above)
GZIP_LEVEL = 6  # gzip's own default: fast enough to keep up with a gigabit link
ZSTD_LEVEL = 3


class CodecError(HerdcastError, OSError):
    """A stream could not be (de)compressed: the message says which codec and why."""


class Inflater:
    """Bounded incremental decompression of one codec's stream (members concatenated)."""

    name = ""

    def __init__(self) -> None:
        self.started = False  # bytes of the current member seen
        self.ended = False  # the current member is complete

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """The expanded form of `data`, in pieces of at most PIECE bytes."""
        try:
            yield from self._feed(memoryview(data))
        except (zlib.error, ValueError, RuntimeError) as exc:  # each library's "corrupt"
            raise CodecError(f"compression {self.name}: the stream is corrupt ({exc})",
                             f"is it {self.name}-compressed? (the sender's --compress, or "
                             "the file's own)") from exc

    def _feed(self, data: memoryview) -> Iterator[bytes]:
        raise NotImplementedError

    def finish(self) -> None:
        """At the end of the input: the last member must be complete."""
        if self.started and not self.ended:
            raise CodecError(f"compression {self.name}: the stream ended in the middle "
                             "(truncated)", "transfer or capture it again")


class _GzInflater(Inflater):
    name = "gz"

    def __init__(self) -> None:
        super().__init__()
        self._z = zlib.decompressobj(31)

    def _feed(self, data: memoryview) -> Iterator[bytes]:
        pending: bytes | memoryview = data
        while pending:
            if self.ended:  # a new member follows the last one
                self._z, self.ended = zlib.decompressobj(31), False
            self.started = True
            out = self._z.decompress(pending, PIECE)
            if out:
                yield out
            if self._z.eof:
                self.ended, pending = True, self._z.unused_data
                continue
            pending = self._z.unconsumed_tail
            while len(out) == PIECE and not pending:  # output still held inside zlib
                out = self._z.decompress(b"", PIECE)
                if out:
                    yield out
                if self._z.eof:
                    self.ended, pending = True, self._z.unused_data
                    break
                pending = self._z.unconsumed_tail


class _ZstdInflater(Inflater):
    name = "zstd"

    def __init__(self) -> None:
        super().__init__()
        import zstandard

        self._ctx = zstandard.ZstdDecompressor()
        self._z = self._ctx.decompressobj()

    def _feed(self, data: memoryview) -> Iterator[bytes]:
        import zstandard

        pos = 0
        while pos < len(data):
            if self.ended:
                self._z, self.ended = self._ctx.decompressobj(), False
            piece = data[pos:pos + ZSTD_IN]
            pos += len(piece)
            self.started = True
            try:
                out = self._z.decompress(piece)
            except zstandard.ZstdError as exc:
                raise ValueError(str(exc)) from exc
            for at in range(0, len(out), PIECE):
                yield out[at:at + PIECE]
            if self._z.eof:
                self.ended = True
                rest = self._z.unused_data
                if rest:  # the next frame began inside this piece: take it up again
                    pos -= len(rest)


def gz_inflater() -> Inflater:
    return _GzInflater()


def zstd_inflater() -> Inflater:
    return _ZstdInflater()


class Limit:
    """Counts expanded bytes; past `limit` the stream is refused at once."""

    def __init__(self, name: str, limit: int | None) -> None:
        self.name, self.limit, self.total = name, limit, 0

    def add(self, n: int) -> None:
        self.total += n
        if self.limit is not None and self.total > self.limit:
            raise CodecError(f"compression {self.name}: the stream expands past "
                             f"{self.limit} bytes, the size of the image it is for",
                             "refused as a decompression bomb or a damaged stream: check "
                             "the sender or the file")


class _InflatingWriter(io.RawIOBase):
    """write() takes compressed bytes and writes their expanded form to `raw`."""

    def __init__(self, raw: BinaryIO, inflater: Inflater, limit: int | None) -> None:
        super().__init__()
        self._raw, self._inflater = raw, inflater
        self._limit = Limit(inflater.name, limit)

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = len(b)
        for piece in self._inflater.feed(b):
            self._limit.add(len(piece))
            self._raw.write(piece)
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._inflater.finish()
            self._raw.flush()
        finally:
            super().close()


class PiecesReader(io.RawIOBase):
    """A readable file over an iterator of byte pieces, so a generator (an expanding
    codec, agent.image's stream encoder) is read as a disk is: in any read size, with
    nothing held but the piece being handed out."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        super().__init__()
        self._pieces = pieces
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _InflatingReader(PiecesReader):
    """read() yields `raw`'s content expanded, a bounded piece at a time."""

    def __init__(self, raw: BinaryIO, inflater: Inflater, limit: int | None) -> None:
        super().__init__(self._expand(raw, inflater, Limit(inflater.name, limit)))

    @staticmethod
    def _expand(raw: BinaryIO, inflater: Inflater, limit: Limit) -> Iterator[bytes]:
        while chunk := raw.read(CHUNK):
            for piece in inflater.feed(chunk):
                limit.add(len(piece))
                yield piece
        inflater.finish()


def _writer(make: Callable[[], Inflater], raw: BinaryIO, limit: int | None = None) -> BinaryIO:
    return _InflatingWriter(raw, make(), limit)


def _unreader(make: Callable[[], Inflater], raw: BinaryIO,
              limit: int | None = None) -> BinaryIO:
    return io.BufferedReader(_InflatingReader(raw, make(), limit), CHUNK)


gz_writer = partial(_writer, gz_inflater)
zstd_writer = partial(_writer, zstd_inflater)
gz_unreader = partial(_unreader, gz_inflater)
zstd_unreader = partial(_unreader, zstd_inflater)


class _CompressingReader(io.RawIOBase):
    """read() yields the compressed form of `raw`'s content, produced chunk by chunk."""

    def __init__(self, raw: BinaryIO, compress, flush) -> None:
        super().__init__()
        self._raw, self._compress, self._flush = raw, compress, flush
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = len(b)
        while len(self._buf) < want and not self._eof:
            chunk = self._raw.read(CHUNK)
            if chunk:
                self._buf += self._compress(chunk)
            else:
                self._buf += self._flush()
                self._eof = True
        n = min(want, len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


def gz_reader(raw: BinaryIO) -> BinaryIO:
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return io.BufferedReader(_CompressingReader(raw, z.compress, z.flush), CHUNK)


def zstd_reader(raw: BinaryIO) -> BinaryIO:
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    return io.BufferedReader(_CompressingReader(raw, z.compress, z.flush), CHUNK)
