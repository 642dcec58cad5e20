"""The chunked image a sender serves with the chunk carousel (send.carousel), made once per
run: from a disk's used blocks or a stream image, a pass that compresses every chunk on
every core at a level chosen for this wire and CPU (agent.image.level), or, for a stored
chunked image, nothing but its piece lists. The pass runs in a thread from the sender's
start, so the sender answers receivers meanwhile and the pass overlaps the nodes' boot.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.hw.memory import available
from agent.image.chunkfile import ChunkedFile, chunk_image, chunk_payloads
from agent.image.chunks import CHUNK_BYTES, ChunkTable, parse_manifest
from agent.image.diskchunks import DiskChunks, PieceIndex
from agent.image.level import choose_level
from agent.image.pieces import build_offer, list_index, piece_lists
from agent.net import netif
from agent.say import say
from agent.transfer.send.session import SendSession


@dataclass
class Prepared:
    """The chunked image a sender serves and the offer receivers fetch (agent.image.pieces):
    made once, served every round. `chunk(index)` gives a chunk's payload and piece list at
    the session's block size: kept from the pass (a stored image, or a scratch in memory),
    or made again from the disk (agent.image.diskchunks)."""

    table: ChunkTable
    offer: bytes
    chunk: Callable[..., tuple[bytes, bytes]]  # (index, ahead=True): see DiskChunks.chunk
    close: Callable[[], None]

    @classmethod
    def of(cls, stored: ChunkedFile, blocksize: int) -> Prepared:
        lists = piece_lists(stored.fd, [(stored.starts[c.index], c.wire_bytes)
                                        for c in stored.table.chunks], blocksize)
        index = b"".join(list_index(lst, blocksize) for lst in lists)
        return cls(stored.table, build_offer(stored.table.raw, blocksize, index),
                   lambda i, ahead=True: (stored.payload(i), lists[i]), stored.close)

    @classmethod
    def of_disk(cls, path: str, raw: bytes, index: PieceIndex, level: int,
                blocksize: int) -> Prepared:
        disk = DiskChunks(path, parse_manifest(raw), level, blocksize)
        return cls(disk.table, build_offer(raw, blocksize, index.index), disk.chunk,
                   disk.close)


def prepare(session: SendSession, cancelled=lambda: False) -> Prepared:
    """The chunked image of the input and its offer: a stored one as it is; a disk's made
    once in memory, or made again from the disk as it is sent where it would not fit
    (agent.image.diskchunks); a stream image's in memory or a temporary file (_kept)."""
    src, path, bs = session.source, session.opts.file, session.blocksize
    started = time.monotonic()
    if src.kind == "chunked":  # stored with its chunks: served as they are
        prepared = Prepared.of(ChunkedFile.open(path), bs)
        say(f"herdcast send: serving the stored chunks of {path} ("
            f"{len(prepared.table.chunks)} chunks, piece lists made in "
            f"{time.monotonic() - started:.1f} s)")
        return prepared
    if src.kind == "used":
        prepared = _chunk_disk(session, cancelled)
    else:
        prepared = _kept(lambda tmp: chunk_image(path, tmp, codec=src.codec,
                                                 cancelled=cancelled),
                         _fits_in_memory(src.disk_size or 1 << 62), bs)
    t = prepared.table
    say(f"herdcast send: chunked the image in {time.monotonic() - started:.1f} s: "
        f"{len(t.chunks)} chunks, {t.used_bytes} used bytes in {t.wire_bytes} bytes")
    return prepared


def _chunk_disk(session: SendSession, cancelled) -> Prepared:
    """A disk's used blocks chunked at a level chosen for this wire and CPU; the payloads
    kept in memory where even the used bytes uncompressed fit in half of what is free, else
    only their hashes (a node booted from the network has no disk to keep them on)."""
    from agent.image.catalogue import metadata

    src, path, bs = session.source, session.opts.file, session.blocksize
    level, why = choose_level(_samples(path, src.umap.extents), _wire_rate(session),
                              os.cpu_count() or 1)
    mapped = dict(extents=src.umap.extents, disk_size=src.umap.disk_size,
                  meta=metadata(path, src.umap), level=level, cancelled=cancelled)
    if not _fits_in_memory(src.umap.used_bytes):
        say(f"herdcast send: chunks compressed at {why}; the used bytes are more than half "
            "the free memory, so each chunk is made again from the disk when it is sent")
        index = PieceIndex(bs)
        raw = chunk_payloads(path, index, **mapped)
        return Prepared.of_disk(path, raw, index, level, bs)
    say(f"herdcast send: chunks compressed at {why}")
    return _kept(lambda tmp: chunk_image(path, tmp, **mapped), True, bs)


def _kept(make: Callable[[str], object], in_memory: bool, blocksize: int) -> Prepared:
    """The chunked image `make(path)` writes, kept in memory or a temporary file (_scratch;
    unlinked at once: it goes when the sender does)."""
    scratch, tmp = _scratch(in_memory)
    try:
        make(tmp)
        return Prepared.of(ChunkedFile.open(tmp), blocksize)
    finally:
        if scratch is None:
            os.unlink(tmp)
        else:
            os.close(scratch)  # the ChunkedFile holds its own descriptor of it


def _fits_in_memory(most: int) -> bool:
    """Whether chunks of at most `most` bytes (no compression at all) fit in half of what
    this process may still take (agent.hw.memory: MemAvailable, under its cgroup's limit)."""
    return most <= available() // 2


def _scratch(in_memory: bool) -> tuple[int | None, str]:
    """Where the pass writes the chunks: (memfd, its path) in memory when they fit there
    (_fits_in_memory), so that a sender whose temporary directory is on a disk does not
    write them out (and read them back) during the transfer; else (None, a new temporary
    file's path)."""
    if in_memory:
        fd = os.memfd_create("herdcast-chunks", os.MFD_CLOEXEC)
        return fd, f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(prefix="herdcast-chunks-")
    os.close(fd)
    return None, path


def _samples(path: str, extents, count: int = 8) -> list[bytes]:
    """`count` MiB of the disk's used bytes, spread over its extents (the level's test)."""
    used = sum(e.length for e in extents)
    if not used:
        return []
    wanted, out, fd = [used * i // count for i in range(count)], [], os.open(path, os.O_RDONLY)
    try:
        pos = 0
        for e in extents:
            while wanted and wanted[0] < pos + e.length:
                at = e.offset + wanted.pop(0) - pos
                out.append(os.pread(fd, min(CHUNK_BYTES, e.end - at), at))
            pos += e.length
    finally:
        os.close(fd)
    return out


def _wire_rate(session: SendSession) -> float:
    """Payload bytes per second the wire carries: --max-bitrate, else the link's speed
    (sysfs; 1 Gbit/s when it says nothing, as a veth or a tap does)."""
    bits = session.opts.max_bitrate or netif.speed_of(session.net.nif.name) or 1e9
    return bits / 8 * 0.96  # headers: 1456 of 1514 bytes a frame


class Preparing:
    """`prepare` in a thread, begun before the wait for receivers: the sender answers
    CONNECT_REQs at once (a receiver seeing spoofed DATA meanwhile would take the silent
    sender for one that started without it), and the pass overlaps the nodes' boot."""

    def __init__(self, session: SendSession) -> None:
        self._result: Prepared | BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(session,), daemon=True,
                                        name="herdcast-chunking")
        self._thread.start()

    def _run(self, session: SendSession) -> None:
        try:
            self._result = prepare(session, self._cancel.is_set)
        except BaseException as exc:  # noqa: BLE001 - handed to the round that needs it
            self._result = exc

    def result(self) -> Prepared:
        """The prepared image, once made (the first carousel round waits for it)."""
        self._thread.join()
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result

    def close(self) -> None:
        self._cancel.set()  # a sender stopped while chunking stops at the next chunk
        self._thread.join()
        if isinstance(self._result, Prepared):
            self._result.close()
