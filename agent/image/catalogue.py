"""What a stored image says about itself, and the catalogue of a directory of them.

An image records, in its header's metadata (agent.image.stream's META), the host it was
captured from, when, an optional description, and its partitions as the source disk had
them; `herdcast image list DIR` shows that per image, in units people read, so an admin picks
the right file without restoring it. Images from before the metadata are listed with what
their header holds (the disk size) and say that the rest is not recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from agent.codec import compressing_reader, decompressing_reader, sniff
from agent.errors import HerdcastError
from agent.image.beside import written_beside
from agent.image.chunkfile import ChunkedFile, describe_chunked
from agent.image.chunks import FILE_MAGIC as CHUNKED_MAGIC
from agent.image.filesystems import fs_name
from agent.image.partitions import type_name
from agent.image.stream import (
    FLAG_META,
    HEADER_SIZE,
    MAX_META,
    Decoder,
    Header,
    MetaLength,
    StreamError,
    StreamReader,
    is_image,
)
from agent.image.usedmap import UsedMap

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(n: int) -> str:
    """`n` bytes in binary units: 512 bytes, 64.0 MiB, 1.5 TiB."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} bytes" if unit == 0 else f"{value:.1f} {UNITS[unit]}"


def metadata(path: str, umap: UsedMap, description: str | None = None) -> dict:
    """The header metadata of an image of the disk at `path`: this host, now, the
    description, and each partition with its type and filesystem."""
    parts = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for part, fsmap in umap.partitions:
            try:
                fs = fs_name(fd, part.extent.offset, fsmap.fs)
            except OSError:
                fs = fsmap.fs
            parts.append({"number": part.number, "offset": part.extent.offset,
                          "size": part.extent.length, "type": part.kind, "fs": fs})
    finally:
        os.close(fd)
    meta = {"host": socket.gethostname(),
            "captured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scheme": umap.scheme, "partitions": parts,
            "used_bytes": umap.used_bytes}  # a receiver's percent of the data
    if description:
        meta["description"] = description
    return meta


@dataclass(frozen=True)
class Entry:
    """One stored image as the catalogue shows it."""

    path: str
    file_bytes: int
    codec: str | None
    disk_size: int
    meta: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        m = self.meta
        when = m.get("captured", "date not recorded").replace("T", " ").replace("Z", " UTC")
        out = [f"{os.path.basename(self.path)}: from {m.get('host', '(host not recorded)')}, "
               f"{when}, disk {human(self.disk_size)}, file {human(self.file_bytes)} "
               f"({self.codec or 'uncompressed'})"]
        if m.get("description"):
            out.append(f"  {m['description']}")
        parts = m.get("partitions")
        if parts is None:
            out.append("  partitions not recorded (an image from before herdcast kept them)")
        else:
            out.append(f"  partition table: {m.get('scheme', 'unknown')}")
        for p in parts or ():
            out.append(f"  {p.get('number', '?'):>3}  {type_name(str(p.get('type', '?'))):<22}"
                       f" {human(int(p.get('size', 0))):>10}  {p.get('fs') or 'unknown'}")
        return out


def read_entry(path: str) -> Entry | None:
    """The catalogue entry of the image at `path`; None when it is no herdcast image. Only
    the header is expanded, through the codec's bounded reader."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(CHUNKED_MAGIC):
            return _chunked_entry(path)
        codec = sniff(head)
        f.seek(0)
        src = decompressing_reader(f, codec) if codec else f
        decoder = Decoder(lambda o, d: None, lambda o, n: None, lambda o, n: None)
        try:
            plain = src.read(HEADER_SIZE)
            if not is_image(plain):
                return None
            decoder.feed(plain)
            while decoder.state in ("meta length", "meta"):
                more = src.read(min(MAX_META, 1 << 16))
                if not more:
                    break
                decoder.feed(more)
        except StreamError:
            pass  # a damaged tail is image info's to report; the header was read
        finally:
            if src is not f:
                src.close()
    return Entry(path, os.path.getsize(path), codec, decoder.disk_size, decoder.meta)


def _chunked_entry(path: str) -> Entry | None:
    try:
        stored = ChunkedFile.open(path)
    except HerdcastError:
        return None
    stored.close()
    return Entry(path, os.path.getsize(path), "zstd chunks", stored.table.disk_size,
                 stored.table.meta)


def catalogue(directory: str) -> list[Entry]:
    """Every herdcast image directly in `directory`, by name."""
    entries = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            try:
                entry = read_entry(path)
            except OSError:
                continue
            if entry is not None:
                entries.append(entry)
    return entries


def set_description(path: str, description: str) -> None:
    """Give the stored image at `path` a description (an older image gains the metadata
    block that holds it). The file is rewritten beside itself, in its own compression, and
    renamed over the old one once whole."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(CHUNKED_MAGIC):
            describe_chunked(path, description)
            return
        codec = sniff(head)
        f.seek(0)
        plain: BinaryIO = decompressing_reader(f, codec) if codec else f
        head = plain.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or not is_image(head):
            raise StreamError(f"{path}: not a herdcast image", "give an image file")
        header = Header.parse(head)
        meta: dict = {}
        if header.flags & FLAG_META:
            length = MetaLength.parse(plain.read(MetaLength.sizeof()))
            if length > MAX_META:
                raise StreamError(f"{path}: the header's metadata is {length} bytes")
            with contextlib.suppress(ValueError):
                meta = json.loads(plain.read(length))
        meta["description"] = description
        blob = json.dumps(meta, sort_keys=True).encode()
        fresh = Header.build({"version": header.version, "flags": header.flags | FLAG_META,
                              "granule": header.granule, "disk_size": header.disk_size})

        def pieces() -> Iterator[bytes]:
            yield fresh + MetaLength.build(len(blob)) + blob
            while chunk := plain.read(1 << 20):
                yield chunk

        stream: BinaryIO = StreamReader(pieces())
        out = compressing_reader(stream, codec) if codec else stream
        with written_beside(path) as tmp, open(tmp, "wb") as new:
            while chunk := out.read(1 << 20):
                new.write(chunk)
