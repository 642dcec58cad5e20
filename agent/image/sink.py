"""Writing an image stream onto a disk: used extents in place, blank space per `blank=`.

- keep (default): blank space is left as it is. What partclone-based tools do, and the
  fastest on every device: the filesystems' own maps say that space is free, so its old
  content is never read as data.
- zero: blank space reads back as zeros afterwards (BLKZEROOUT on a block device, which
  thin and SSD devices do without writing; a sparse hole or zeros in a file).
- discard: the device is told the space is free (BLKDISCARD: SSD trim, thin provisioning);
  where it cannot discard, blank space is kept. Discarded blocks may read back as anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from agent.errors import HerdcastError
from agent.image.direct import ALIGN, Direct, Gatherer
from agent.image.stream import Decoder, DecodingWriter

BLANK_MODES = ("keep", "zero", "discard")
BLKDISCARD = 0x1277  # _IO(0x12, 119)
BLKZEROOUT = 0x127F  # _IO(0x12, 127)
_SECTOR = 512
_ZEROS = bytes(1 << 20)


class SinkError(HerdcastError):
    """Writing the image onto the disk failed (the disk, not the network)."""


class DiskSink(DecodingWriter):
    """A writable stream: image stream bytes in, the disk behind `fd` written in place.
    The caller owns `fd`; `close()` checks the image was complete and flushes nothing else."""

    def __init__(self, fd: int, path: str, blank: str = "keep", readback=None, *,
                 disk_size: int | None = None) -> None:
        """`readback`: told of every image byte written (add(offset, data)), to read back.
        `disk_size`: the disk size the sender announced; an image saying otherwise is
        refused before its first byte lands."""
        if blank not in BLANK_MODES:
            raise SinkError(f"blank={blank}: unknown", f"use one of {', '.join(BLANK_MODES)}")
        self.fd, self.path, self.mode = fd, path, blank
        self.is_block = stat.S_ISBLK(os.fstat(fd).st_mode)
        self.direct = Direct.open(fd, writable=True) if self.is_block else None
        # whole pages that follow one another go out together (Gatherer), in its buffer
        self.gatherer = Gatherer(self.direct) if self.direct is not None else None
        self.readback = readback
        super().__init__(Decoder(self._data, self._zero, self._blank))
        self.expected_size = disk_size
        self.written = 0
        self.cleared = 0  # bytes made zero or discarded: ZERO records, blank=zero|discard
        self._checked_size = False

    def _data(self, offset: int, data: memoryview) -> None:
        self._write(offset, data)
        if self.readback is not None:
            self.readback.add(offset, data)

    def _write(self, offset: int, data: memoryview) -> None:
        """Image data onto the disk."""
        if not self._checked_size:
            self._check_size()
        self._pwrite(offset, data)
        self.written += len(data)

    def _pwrite(self, offset: int, data: memoryview) -> None:
        """Whole pages past the page cache on a block device (agent.image.direct), gathered
        while they follow one another (settle puts them out), the rest buffered."""
        gatherer = self.gatherer
        try:
            if gatherer is not None and not (offset | len(data)) % ALIGN:
                gatherer.write(data, offset)
            elif self.direct is not None and len(data) >= ALIGN:
                self.settle()  # Direct.write passes through the gatherer's buffer
                for at, rest in self.direct.write(offset, memoryview(data)):
                    self._buffered(at, rest)
            else:
                self._buffered(offset, data)
        except OSError as exc:
            raise SinkError(f"disk {self.path}: write at byte {offset} failed: "
                            f"{exc.strerror}") from exc

    def settle(self) -> None:
        """What is gathered onto the disk: before a sync, a read back, the end."""
        gatherer = self.gatherer
        if gatherer is not None and gatherer.fill:
            at = gatherer.at
            try:
                gatherer.flush()
            except OSError as exc:
                raise SinkError(f"disk {self.path}: write at byte {at} failed: "
                                f"{exc.strerror}") from exc

    def _buffered(self, offset: int, data: memoryview) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], offset + done)

    def close(self) -> None:
        """Checks the image was complete; the caller's `fd` stays open."""
        try:
            super().close()
            self.settle()
        finally:
            self.close_direct()

    def close_direct(self) -> None:
        """The direct descriptor closed; anything gathered and not settled is dropped
        (an abort)."""
        self.gatherer = None
        if self.direct is not None:
            self.direct.close()
            self.direct = None

    def _check_size(self) -> None:
        """A disk smaller than the image's is refused before its first byte is written."""
        self._checked_size = True
        if self.expected_size is not None and self.decoder.disk_size != self.expected_size:
            raise SinkError(f"the image is of a {self.decoder.disk_size}-byte disk, the "
                            f"sender announced {self.expected_size} bytes",
                            "a damaged or forged stream: send it again")
        if self.is_block:
            size = os.lseek(self.fd, 0, os.SEEK_END)
            if size < self.decoder.disk_size:
                raise SinkError(f"disk {self.path} holds {size} bytes, the image is "
                                f"{self.decoder.disk_size}", "use a disk at least that big")

    def _blank(self, offset: int, length: int) -> None:
        """Free space: per `blank=`; a file still grows to the disk's size."""
        if not self._checked_size:
            self._check_size()
        if self.mode == "zero":
            self._zero(offset, length)
        elif self.mode == "discard" and self.is_block:
            self._discard(offset, length)
        elif not self.is_block:
            self._grow(offset + length)

    def _zero(self, offset: int, length: int) -> None:
        """Used space that is all zeros, or blank=zero: it must read back as zeros."""
        if not self._checked_size:
            self._check_size()
        if not self.is_block:
            size = os.fstat(self.fd).st_size
            if offset < size:
                self._write_zeros(offset, min(length, size - offset))
            self._grow(offset + length)  # past the end: a sparse hole reads as zeros
            return
        head = min(-offset % _SECTOR, length)  # the ioctl takes whole sectors
        tail = (length - head) % _SECTOR
        self._write_zeros(offset, head)
        self._write_zeros(offset + length - tail, tail)
        middle = length - head - tail
        if middle and self._ioctl(BLKZEROOUT, offset + head, middle):
            self.cleared += middle
        elif middle:
            self._write_zeros(offset + head, middle)

    def _discard(self, offset: int, length: int) -> None:
        head = min(-offset % _SECTOR, length)
        middle = (length - head) - (length - head) % _SECTOR
        if middle and self._ioctl(BLKDISCARD, offset + head, middle):
            self.cleared += middle
        # a device that cannot discard keeps its blank space

    def _ioctl(self, request: int, offset: int, length: int) -> bool:
        """True when the device did it; False when it cannot (the caller falls back)."""
        try:
            fcntl.ioctl(self.fd, request, struct.pack("QQ", offset, length))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                return False
            raise SinkError(f"disk {self.path}: clearing {length} bytes at byte {offset} "
                            f"failed: {exc.strerror}") from exc
        return True

    def _grow(self, size: int) -> None:
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)

    def _write_zeros(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            n = min(len(_ZEROS), end - offset)
            self._pwrite(offset, memoryview(_ZEROS)[:n])
            offset += n
        self.cleared += length
