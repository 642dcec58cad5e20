"""The stream codecs, one entry each: name, wire index, magic, and how to read, write and
sniff their streams.

Everything that compresses or decompresses asks this table: the options' `--compress`
choices and the boot parameter `compr=` (`NAMES`), the sender's CONNECT_REPLY extension
(`wire`, agent.udpcast.protocol), a stored image's compression (`sniff`, from its first
bytes), the sender's compressed stream (`reader`), the receiver's and the image commands'
decompression (`writer`, `unreader`) and the receiver's look at a stream's first bytes
(`inflater`). The formats are the stock ones, so a stock `udp-receiver --pipe 'gzip -dc'`
(or `lzop -dc`, `zstd -dc`) reads what herdcast sends:

- gz: a real gzip member (zlib with wbits=31), as `gzip -c` writes it;
- zstd: zstd frames from the zstandard package (imported only when a zstd stream is made);
- lzop: the `lzop` program (or busybox's applet) in a child process: no well-kept Python
  binding writes lzop's container format.

Decompression is bounded: a few KiB of hostile input can stand for terabytes, so every
decompressor here hands out its output in pieces of at most `PIECE` bytes, and takes a
`limit` past which the stream is refused (a decompression bomb is one line, never an
allocation of its whole output). The module sits below every package that uses it and
imports nothing of herdcast but the error family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from agent.codec import inflate, process
from agent.codec.inflate import PIECE, CodecError, Inflater

GZIP_LEVEL = inflate.GZIP_LEVEL
ZSTD_LEVEL = inflate.ZSTD_LEVEL


@dataclass(frozen=True)
class Codec:
    """One compression format, everything herdcast does with it."""

    name: str  # --compress NAME, compr=NAME
    wire: int  # its number in the sender's CONNECT_REPLY (0 is no compression)
    magic: bytes  # the first bytes of every stream of it
    reader: Callable[[BinaryIO], BinaryIO]  # raw -> a file reading raw's content compressed
    unreader: Callable[[BinaryIO, int | None], BinaryIO]  # compressed -> reads it expanded
    writer: Callable[[BinaryIO, int | None], BinaryIO]  # write() compressed, raw gets it
    inflater: Callable[[], Inflater] | None  # bounded in-process decompressor; None: none


CODECS: tuple[Codec, ...] = (
    Codec("gz", 1, b"\x1f\x8b", inflate.gz_reader, inflate.gz_unreader, inflate.gz_writer,
          inflate.gz_inflater),
    Codec("lzop", 2, b"\x89LZO\x00", process.lzop_reader, process.lzop_unreader,
          process.lzop_writer, None),
    Codec("zstd", 3, b"\x28\xb5\x2f\xfd", inflate.zstd_reader, inflate.zstd_unreader,
          inflate.zstd_writer, inflate.zstd_inflater),
)
NAMES = tuple(c.name for c in CODECS)
NONE_WIRE = 0
_BY_NAME = {c.name: c for c in CODECS}
_BY_WIRE = {c.wire: c for c in CODECS}


def codec(name: str) -> Codec:
    """The entry for `name`; an unknown name is one line naming the choices."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise CodecError(f"compression {name!r} unknown",
                         f"use one of: {', '.join(NAMES)}, or none") from None


def wire_index(name: str | None) -> int:
    """The number the sender announces for `name` (None or "none": no compression)."""
    return NONE_WIRE if name in (None, "none") else codec(name).wire


def from_wire(index: int) -> str | None:
    """The codec name a sender announced ("none" for none); None for a number no codec has
    (a newer or a forged sender)."""
    if index == NONE_WIRE:
        return "none"
    entry = _BY_WIRE.get(index)
    return entry.name if entry else None


def sniff(head: bytes) -> str | None:
    """The codec a stream starts with, from its first bytes; None for an uncompressed one."""
    for entry in CODECS:
        if head.startswith(entry.magic):
            return entry.name
    return None


def compressing_reader(raw: BinaryIO, name: str) -> BinaryIO:
    """A file whose read() returns `raw`'s content compressed with `name` (sender side)."""
    return codec(name).reader(raw)


def decompressing_reader(raw: BinaryIO, name: str, limit: int | None = None) -> BinaryIO:
    """A file whose read() returns `raw`'s content expanded (a stored image on a server);
    more than `limit` expanded bytes is refused."""
    return codec(name).unreader(raw, limit)


def decompressing_writer(raw: BinaryIO, name: str, limit: int | None = None) -> BinaryIO:
    """A file whose write() takes `name`-compressed bytes and writes them expanded to `raw`
    (which stays open); close() raises CodecError if the stream was truncated or corrupt,
    and any write that would take the output past `limit` bytes raises at once."""
    return codec(name).writer(raw, limit)


__all__ = ["CODECS", "NAMES", "PIECE", "Codec", "CodecError", "Inflater", "codec",
           "compressing_reader", "decompressing_reader", "decompressing_writer",
           "from_wire", "sniff", "wire_index"]
