"""The herdcast image stream: a disk's used extents and their bytes, nothing else.

    header   magic, version, flags, granule, disk size                     32 bytes
    META     (flag 1) length, then that many bytes of JSON: source host,     4 bytes + JSON
             capture date, description, partitions (agent.image.catalogue)
    DATA     offset, length; then `length` bytes of the disk there          24 bytes + data
    ZERO     offset, length: used bytes that are all zero, no payload        24 bytes
    ...      records in increasing offset order, never overlapping
    END      offset = disk size, length 0; then the trailer                  24 bytes
    trailer  record count, data bytes, zero bytes, disk size (checked)      32 bytes

The map travels as the record headers, in disk order, rather than as one table in front:
the all-zero runs inside used blocks are found while the disk is read, so a table in front
would cost a second pass over the disk. A ZERO record is used space (an inode table, the
unused tail of a partition table) that the receiver must zero; what no record covers is
blank, free space the receiver handles per `blank=`. The same bytes are the wire stream
between herdcast peers and the image file kept on a server, so a stored image is sent as
it is. Images from before META (flags 0) stay readable: they just say nothing of where they
came from.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator

from construct import Const, ConstructError, Int16ub, Int32ub, Int64ub, Struct

from agent.codec.inflate import PiecesReader
from agent.errors import HerdcastError
from agent.image.direct import reading
from agent.image.extents import Extent

MAGIC = b"HERDCAST-IMAGE\x00\x01"
VERSION = 1
GRANULE = 4096  # all-zero runs are dropped in whole, aligned units of this size
CHUNK = 1 << 20  # bytes read per pread, and the largest record's data

Header = Struct(
    "magic" / Const(MAGIC),
    "version" / Int16ub,
    "flags" / Int16ub,  # FLAG_META; a reader refuses bits it does not know
    "granule" / Int32ub,
    "disk_size" / Int64ub,
)
Record = Struct("kind" / Int32ub, "reserved" / Int32ub, "offset" / Int64ub,
                "length" / Int64ub)
Trailer = Struct("records" / Int64ub, "data_bytes" / Int64ub, "zero_bytes" / Int64ub,
                 "disk_size" / Int64ub)
MetaLength = Int32ub
END, DATA, ZERO = 0, 1, 2
FLAG_META = 1
MAX_META = 1 << 20  # a header's JSON is a few hundred bytes; more is a damaged image
HEADER_SIZE, RECORD_SIZE, TRAILER_SIZE = Header.sizeof(), Record.sizeof(), Trailer.sizeof()
_ZERO = bytes(CHUNK)


class StreamError(HerdcastError):
    """The stream is not a well-formed herdcast image (truncated, reordered, forged)."""


def is_image(head: bytes) -> bool:
    """Whether bytes start a herdcast image stream."""
    return head[:len(MAGIC)] == MAGIC


def _record(kind: int, offset: int, length: int) -> bytes:
    return Record.build({"kind": kind, "reserved": 0, "offset": offset, "length": length})


class Position:
    """How many of the disk's used bytes an encoder has read so far (the sender's percent
    of the data to send: the stream's own length is known only at its end)."""

    used = 0


def encode(fd: int | None, disk_size: int, extents: Iterable[Extent],
           meta: dict | None = None, read=None,
           at: Position | None = None) -> Iterator[bytes]:
    """The image stream of the disk open on `fd`: its used `extents` (sorted, disjoint),
    all-zero granules inside them sent as ZERO records, `meta` (JSON-able) in the header.
    Reads each used byte once, counting them in `at`, with `read(length, offset)` when given
    (a stored chunked image, agent.image.chunkfile), else pread on `fd`; reads never cross
    a 1 MiB line. A block device is read past the page cache (agent.image.direct)."""
    if read is not None:
        yield from _encode(disk_size, extents, meta, read, at or Position())
        return
    reader = reading(fd)
    try:
        yield from _encode(disk_size, extents, meta, reader.read, at or Position())
    finally:
        reader.close()


def _encode(disk_size: int, extents: Iterable[Extent], meta: dict | None,
            read: Callable[[int, int], bytes], at: Position) -> Iterator[bytes]:
    yield Header.build({"version": VERSION, "flags": FLAG_META if meta is not None else 0,
                        "granule": GRANULE, "disk_size": disk_size})
    if meta is not None:
        blob = json.dumps(meta, sort_keys=True).encode()
        yield MetaLength.build(len(blob)) + blob
    records = data_bytes = zero_bytes = 0
    zero_at = zero_len = 0  # a pending ZERO record, grown while zero runs touch it
    for extent in extents:
        pos = extent.offset
        while pos < extent.end:
            want = min(CHUNK - pos % CHUNK, extent.end - pos)
            try:
                chunk = read(want, pos)
            except OSError as exc:  # the disk's own error: which bytes, not just "EIO"
                raise StreamError(f"reading the disk's bytes {pos}-{pos + want} failed: "
                                  f"{exc.strerror or exc}", "the disk is failing or gone "
                                  "(see dmesg): image it from a sound copy") from exc
            if len(chunk) != want:
                raise StreamError(f"disk ended at byte {pos + len(chunk)} while reading "
                                  f"{want} bytes at {pos}", "is the disk still attached?")
            for start, end, zero in _runs(chunk, pos):
                if zero:
                    if zero_len and zero_at + zero_len == pos + start:
                        zero_len += end - start
                    else:
                        if zero_len:
                            yield _record(ZERO, zero_at, zero_len)
                            records += 1
                        zero_at, zero_len = pos + start, end - start
                    zero_bytes += end - start
                    continue
                if zero_len:
                    yield _record(ZERO, zero_at, zero_len)
                    records += 1
                    zero_len = 0
                yield _record(DATA, pos + start, end - start)
                yield chunk[start:end]
                records += 1
                data_bytes += end - start
            pos += want
            at.used += want
    if zero_len:
        yield _record(ZERO, zero_at, zero_len)
        records += 1
    yield _record(END, disk_size, 0)
    yield Trailer.build({"records": records, "data_bytes": data_bytes,
                         "zero_bytes": zero_bytes, "disk_size": disk_size})


def _runs(chunk: bytes, base: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, all_zero) runs of `chunk`, cut at granules aligned to the disk (`base`
    is the chunk's disk offset)."""
    if chunk == _ZERO[:len(chunk)]:
        yield 0, len(chunk), True
        return
    view = memoryview(chunk)
    edge = -base % GRANULE or GRANULE
    start, pos, current = 0, 0, None
    while pos < len(chunk):
        end = min(pos + edge, len(chunk))
        zero = view[pos:end] == _ZERO[:end - pos]
        if current is not None and zero != current:
            yield start, pos, current
            start = pos
        current, pos, edge = zero, end, GRANULE
    yield start, len(chunk), bool(current)


class Decoder:
    """Parses an image stream fed in arbitrary pieces; calls, in disk order,
    `write(offset, data)` for each DATA range, `zero(offset, length)` for each ZERO range and
    `blank(offset, length)` for each range no record covers. Refuses anything out of order,
    past the disk, or a trailer that disagrees."""

    def __init__(self, write: Callable[[int, memoryview], None],
                 zero: Callable[[int, int], None], blank: Callable[[int, int], None]) -> None:
        self._write, self._zero, self._blank = write, zero, blank
        self._buf = bytearray()
        self._need, self._state = HEADER_SIZE, "header"
        self.disk_size = 0
        self._pos = 0  # end of the last record: everything before it is written or blank
        self._data_left = 0
        self._data_at = 0
        self.records = self.data_bytes = self.zero_bytes = 0
        self.meta: dict = {}  # what the header's META says; {} for an older image
        self.done = False

    @property
    def used_done(self) -> int:
        """Used bytes of the disk written so far (data and zero records): the receiver's
        progress against the metadata's `used_bytes`."""
        return self.data_bytes + self.zero_bytes - self._data_left

    @property
    def state(self) -> str:
        """Where the parse is: "header", "meta length", "meta", "record", "data", ..."""
        return self._state

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._state == "data":
                n = min(self._data_left, len(view))
                self._write(self._data_at, view[:n])
                self._data_at += n
                self._data_left -= n
                view = view[n:]
                if not self._data_left:
                    self._state, self._need = "record", RECORD_SIZE
                continue
            if self._state == "done":
                raise StreamError(f"{len(view)} bytes after the image's end")
            take = min(self._need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self._need:
                piece = bytes(self._buf)
                self._buf.clear()
                self._parsed(piece)

    def _parsed(self, piece: bytes) -> None:
        try:
            if self._state == "header":
                header = Header.parse(piece)
                if header.version != VERSION or header.flags & ~FLAG_META:
                    raise StreamError(f"image version {header.version} flags {header.flags:#x}"
                                      " is newer than this herdcast", "update herdcast")
                self.disk_size = header.disk_size
                self._state, self._need = "record", RECORD_SIZE
                if header.flags & FLAG_META:
                    self._state, self._need = "meta length", MetaLength.sizeof()
            elif self._state == "meta length":
                length = MetaLength.parse(piece)
                if length > MAX_META:
                    raise StreamError(f"image header's metadata is {length} bytes (at most "
                                      f"{MAX_META})")
                self._state, self._need = "meta", length
                if not length:
                    self._state, self._need = "record", RECORD_SIZE
            elif self._state == "meta":
                self._meta(piece)
            elif self._state == "record":
                self._record(Record.parse(piece))
            else:
                self._trailer(Trailer.parse(piece))
        except ConstructError as exc:
            raise StreamError(f"not a herdcast image ({self._state}: {exc})") from None

    def _meta(self, piece: bytes) -> None:
        try:
            meta = json.loads(piece)
        except ValueError as exc:
            raise StreamError(f"image header's metadata is not JSON ({exc})") from None
        self.meta = meta if isinstance(meta, dict) else {}
        self._state, self._need = "record", RECORD_SIZE

    def _record(self, rec) -> None:
        if rec.kind == END:
            if rec.offset != self.disk_size or rec.length:
                raise StreamError(f"end record at {rec.offset}, disk is {self.disk_size} bytes")
            if self._pos < self.disk_size:
                self._blank(self._pos, self.disk_size - self._pos)
            self._state, self._need = "trailer", TRAILER_SIZE
            return
        if rec.kind not in (DATA, ZERO) or rec.length == 0:
            raise StreamError(f"record kind {rec.kind} length {rec.length} is not an image's")
        if rec.offset < self._pos or rec.offset + rec.length > self.disk_size:
            raise StreamError(f"record {rec.offset}+{rec.length} out of order or past the "
                              f"disk's {self.disk_size} bytes")
        if rec.offset > self._pos:
            self._blank(self._pos, rec.offset - self._pos)
        self._pos = rec.offset + rec.length
        self.records += 1
        if rec.kind == ZERO:
            self.zero_bytes += rec.length
            self._zero(rec.offset, rec.length)
            return
        self.data_bytes += rec.length
        self._data_at, self._data_left, self._state = rec.offset, rec.length, "data"

    def _trailer(self, trailer) -> None:
        mine = (self.records, self.data_bytes, self.zero_bytes, self.disk_size)
        theirs = (trailer.records, trailer.data_bytes, trailer.zero_bytes, trailer.disk_size)
        if mine != theirs:
            raise StreamError(f"trailer says {theirs[0]} records / {theirs[1]} data bytes, "
                              f"the stream had {mine[0]} / {mine[1]}")
        self._state, self.done = "done", True

    def finish(self) -> None:
        """At the end of the input: the image must have been complete."""
        if not self.done:
            raise StreamError(f"image stream truncated ({self._state}, {self.data_bytes} "
                              "data bytes so far)")


class DecodingWriter(io.RawIOBase):
    """A writable file over a Decoder, so a decompressor can write an image stream into
    it; `close()` checks the stream was complete."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.decoder.feed(b)
        return len(b)

    def close(self) -> None:
        if not self.closed:
            try:
                self.decoder.finish()
            finally:
                super().close()


class StreamReader(PiecesReader):
    """The image stream as a readable file, so compression and the sender's slice reader
    take it as they take a disk."""

    def __init__(self, pieces: Iterator[bytes], position: Position | None = None) -> None:
        super().__init__(pieces)
        self.position = position  # the encoder's, when the pieces are encode()'s
