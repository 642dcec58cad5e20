"""Image files on a server: capturing a disk into one, restoring one onto a disk.

Both take the same care as the network paths: a restore runs the receiver's disk guard
(agent.hw.disk: not mounted read-write or read-only, not swap, not held, big enough) before
the target is even opened for writing, and a capture of a disk with a read-write mounted
filesystem warns as `herdcast send` does. A capture is written beside its file and renamed
over it only once complete, so a failed re-capture leaves the previous image as it was. A
restore that fails after its first write says the target is now incomplete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, NoReturn

from agent.codec import CodecError, compressing_reader, decompressing_reader, sniff
from agent.errors import HerdcastError
from agent.hw.disk import check_receive_target, send_source_warnings
from agent.image.beside import written_beside
from agent.image.catalogue import metadata
from agent.image.chunkfile import ChunkedFile, chunk_image, is_chunked
from agent.image.chunks import FILE_MAGIC, ChunkError
from agent.image.chunksink import ChunkSink
from agent.image.sink import DiskSink
from agent.image.store import ImageFileError, damaged
from agent.image.stream import (
    HEADER_SIZE,
    Header,
    StreamError,
    StreamReader,
    encode,
    is_image,
)
from agent.image.usedmap import used_map
from agent.say import say

CHUNK = 1 << 20


def check_input(path: str, what: str) -> None:
    """An input path that is missing or a directory is one line naming it."""
    if os.path.isdir(path):
        raise ImageFileError(f"{what} {path}: is a directory", f"give the {what}'s path")
    if not os.path.exists(path):
        raise ImageFileError(f"{what} {path}: no such file or device", "check the path")


def capture(disk: str, path: str, codec: str | None, description: str | None = None) -> int:
    """DISK's used blocks into the image file `path`; returns the file's size. With zstd
    (the default) the file is a chunked image (agent.image.chunkfile): a sender serves its
    chunks as they are; with another `codec` (or none) it is the image stream."""
    check_input(disk, "disk")
    if os.path.isdir(path):
        raise ImageFileError(f"image {path}: is a directory", "give the image file's path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ImageFileError(f"image {path}: directory {directory} does not exist",
                             "create it, or give another path")
    for line in send_source_warnings(disk):
        say(line)
    umap = used_map(disk)
    for line in umap.describe():
        say(line)
    meta = metadata(disk, umap, description)
    fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # only a complete image replaces the previous one
        with written_beside(path, 0o644) as tmp:
            if codec == "zstd":
                chunk_image(disk, tmp, extents=umap.extents, disk_size=umap.disk_size,
                            meta=meta, fd=fd)
            else:
                stream: BinaryIO = StreamReader(encode(fd, umap.disk_size, umap.extents,
                                                       meta))
                source = compressing_reader(stream, codec) if codec else stream
                with open(tmp, "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
    finally:
        os.close(fd)
    return os.path.getsize(path)


@dataclass(frozen=True)
class Restored:
    written: int  # image data bytes
    cleared: int  # bytes made zero (ZERO records; free space with blank=zero/discard)


def restore(path: str, disk: str, blank: str) -> Restored:
    """The image file `path` onto `disk` (a device, or a disk image file made or replaced)."""
    check_input(path, "image")
    if os.path.isdir(disk):
        raise ImageFileError(f"disk {disk}: is a directory", "give a disk device or file")
    with open(path, "rb") as f:
        if is_chunked(f.read(len(FILE_MAGIC))):
            return _restore_chunks(path, disk, blank)
        f.seek(0)
        codec = sniff(f.read(64))
        f.seek(0)
        plain: BinaryIO = decompressing_reader(f, codec) if codec else f
        head = plain.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or not is_image(head):
            raise ImageFileError(f"{path}: not a herdcast image", "restore a file made by "
                                 "herdcast image capture or herdcast receive -f")
        check_receive_target(disk, Header.parse(head).disk_size)  # before the first write
        fd = _open_target(disk)
        sink = DiskSink(fd, disk, blank)
        try:
            sink.write(head)
            while chunk := plain.read(CHUNK):
                sink.write(chunk)
            sink.close()
            os.fsync(fd)
        except (OSError, HerdcastError) as exc:
            _failed(path, disk, sink, exc, (StreamError, CodecError))
        finally:
            sink.close_direct()
            os.close(fd)
    return Restored(sink.written, sink.cleared)


def _failed(path: str, disk: str, sink, exc: BaseException,
            damage: tuple[type[BaseException], ...]) -> NoReturn:
    """Raise for a restore that failed (called in its except block): once anything was
    written, that the target is now incomplete; before, a damaged image (`damage`: its
    format's errors) as such; else the error itself, again."""
    if sink.written or sink.cleared:
        raise ImageFileError(f"restoring {path} onto {disk} failed after {sink.written} "
                             f"bytes: {exc}; {disk} is now incomplete",
                             f"restore a complete image onto {disk} before using it") from exc
    if isinstance(exc, damage):
        raise damaged(path, exc) from exc
    raise  # the caller's exception, still being handled


def _open_target(disk: str) -> int:
    is_file = not os.path.exists(disk) or os.path.isfile(disk)
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if is_file else 0)
    return os.open(disk, flags, 0o644)


def _restore_chunks(path: str, disk: str, blank: str) -> Restored:
    """A stored chunked image onto `disk`, each chunk checked against its manifest."""
    try:
        stored = ChunkedFile.open(path)
    except ChunkError as exc:  # it names the file
        raise ImageFileError(f"image {exc.what}", exc.fix) from exc
    try:
        check_receive_target(disk, stored.table.disk_size)  # before the first write
        fd = _open_target(disk)
        sink = ChunkSink(fd, disk, stored.table, blank)
        try:
            for chunk in stored.table.chunks:
                sink.put(chunk, stored.decoded(chunk.index))
            sink.blank_space()
            sink.sync()
        except (OSError, HerdcastError) as exc:
            _failed(path, disk, sink, exc, (ChunkError,))
        finally:
            sink.close()
            os.close(fd)
    finally:
        stored.close()
    return Restored(sink.written, sink.cleared)
