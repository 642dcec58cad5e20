"""`verify=readback` (`--verify readback`): after the disk said the data landed (fsync), read
it back from the device and compare.

The wire digest proves what arrived; this proves what the disk now returns, which catches a
disk that acknowledges writes it then loses or garbles (a failing drive, a bad cable, a
controller cache). A block device is read past the page cache (O_DIRECT, agent.image.direct);
a file's pages are dropped from the cache first (POSIX_FADV_DONTNEED after fsync), so the
read goes to the device. It costs one more read of
everything written: off by default.
"""

from __future__ import annotations

import hashlib

from agent.errors import HerdcastError
from agent.image.direct import reading_back

CHUNK = 1 << 20


class ReadbackError(HerdcastError):
    """What the disk returns is not what was written."""


class Readback:
    """The byte ranges written, in write order, and the sha256 of their bytes."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # [offset, length], merged while contiguous
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def add(self, offset: int, data: memoryview | bytes) -> None:
        if self.ranges and self.ranges[-1][0] + self.ranges[-1][1] == offset:
            self.ranges[-1][1] += len(data)
        else:
            self.ranges.append([offset, len(data)])
        self.sha256.update(data)
        self.bytes += len(data)

    def check(self, fd: int, path: str) -> None:
        """Read every range back from the device; raises ReadbackError on a difference."""
        again = hashlib.sha256()
        reader = reading_back(fd)
        try:
            for offset, length in self.ranges:
                end = offset + length
                while offset < end:
                    chunk = reader.read(min(CHUNK, end - offset), offset)
                    if not chunk:
                        raise ReadbackError(f"{path}: reading back byte {offset} found the "
                                            "end of the disk", "check the disk and image again")
                    again.update(chunk)
                    offset += len(chunk)
        except OSError as exc:
            raise ReadbackError(f"{path}: reading back failed at byte {offset}: "
                                f"{exc.strerror}", "the disk is failing; replace it") from exc
        finally:
            reader.close()
        if again.digest() != self.sha256.digest():
            raise ReadbackError(f"{path}: the {self.bytes} bytes read back differ from those "
                                "written (sha256)", "the disk is failing; replace it")
