"""A disk's bytes pass the page cache by (agent.image.direct): what a restore or a receive
writes onto a block device is on the device, not held by the kernel, and comes back
byte-exact whatever the alignment of the ranges written and read."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_loop
from peers import herdcast_receiver, stock_sender

from agent.image import direct
from agent.image.direct import ALIGN, BUFFER, Direct, reading
from agent.image.sink import DiskSink
from builder.lab.loopdev import loop_device
from builder.lab.netlab import NetLab

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def cached_pages(dev: str, length: int) -> int:
    """Pages of the first `length` bytes of block device `dev` in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(dev, os.O_RDONLY)
    try:
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = (ctypes.c_ubyte * (length // mmap.PAGESIZE))()
            assert libc.mincore(addr, length, vec) == 0, ctypes.get_errno()
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(addr, length)
    finally:
        os.close(fd)


@needs_loop
def test_a_restore_writes_the_device_past_the_page_cache(tmp_path):
    """`herdcast image restore` onto a block device: every byte lands, and the 24 MiB it
    wrote are not left in the kernel's cache (written buffered, they all would be)."""
    src, img = tmp_path / "src.bin", tmp_path / "src.img"
    data = os.urandom(24 * MiB)
    src.write_bytes(data + bytes(8 * MiB))
    image = [sys.executable, "-m", "agent", "image"]
    subprocess.run([*image, "capture", str(src), str(img)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    backing = tmp_path / "disk.bin"
    backing.write_bytes(b"\xee" * (32 * MiB))
    with loop_device(backing) as dev, open(dev, "rb") as held:
        # held open: the device's last close would drop its cache whatever was written
        subprocess.run([*image, "restore", str(img), dev], cwd=ROOT, check=True,
                       capture_output=True, timeout=120)
        assert cached_pages(dev, 32 * MiB) < 64  # a few headers' worth at most, not 6,144
        assert held.read(24 * MiB) == data


@needs_loop
@pytest.mark.parametrize("offset,length", [
    (0, 3 * MiB), (100, ALIGN), (ALIGN - 1, 2 * ALIGN + 7), (5 * ALIGN, BUFFER + 3 * ALIGN),
    (12345, BUFFER + 777), (7, 5)])
def test_any_range_is_written_and_read_back_exactly(tmp_path, offset, length):
    """Unaligned heads and tails go buffered, whole pages direct, and nothing is torn at
    the seams either way; a read of any range past the cache returns exactly it."""
    backing = tmp_path / "disk.bin"
    backing.write_bytes(b"\x5a" * (16 * MiB))
    data = os.urandom(length)
    with loop_device(backing) as dev:
        fd = os.open(dev, os.O_RDWR)
        try:
            sink = DiskSink(fd, dev)
            assert sink.direct is not None
            sink._pwrite(offset, memoryview(data))
            sink.settle()
            sink.close_direct()
            os.fsync(fd)
            reader = reading(fd)
            assert isinstance(reader, Direct)
            try:
                assert reader.read(length, offset) == data
                if offset >= 3:
                    assert reader.read(3, offset - 3) == b"\x5a" * 3
                assert reader.read(9, offset + length) == b"\x5a" * 9
                assert reader.read(4 * ALIGN, 16 * MiB - ALIGN) == b"\x5a" * ALIGN  # the end
            finally:
                reader.close()
        finally:
            os.close(fd)
        assert backing.read_bytes()[offset:offset + length] == data


@needs_loop
def test_writes_that_follow_one_another_go_out_together(tmp_path, monkeypatch):
    """An image's writes come a chunk's extent at a time (a megabyte at most): those that
    follow one another reach the device as one request of up to BUFFER bytes, one that
    does not puts out what was gathered first, and every byte lands where it belongs;
    what is still gathered goes out at sync."""
    from agent.image.chunks import CODEC_NONE, Chunk, ChunkTable
    from agent.image.chunksink import ChunkSink
    from agent.image.stream import DATA

    backing = tmp_path / "disk.bin"
    backing.write_bytes(b"\x5a" * (16 * MiB))
    pieces = [(at * MiB, os.urandom(MiB)) for at in (0, 1, 2, 3, 4, 9)]
    chunks = [Chunk(i, at, MiB, CODEC_NONE, MiB, b"", b"", ((at, MiB, DATA),))
              for i, (at, _) in enumerate(pieces)]
    table = ChunkTable(MiB, 16 * MiB, {}, tuple(chunks), b"")
    calls: list[tuple[int, int]] = []
    real = os.pwrite

    def pwrite(fd, data, offset):
        calls.append((offset, len(data)))
        return real(fd, data, offset)

    with loop_device(backing) as dev:
        fd = os.open(dev, os.O_RDWR)
        try:
            sink = ChunkSink(fd, dev, table)
            monkeypatch.setattr(direct.os, "pwrite", pwrite)
            for chunk, (_, data) in zip(chunks, pieces, strict=True):
                sink.put(chunk, data)
            # four in one, the fifth put out when the sixth did not follow it
            assert calls == [(0, BUFFER), (4 * MiB, MiB)]
            sink.sync()  # the sixth
            assert calls == [(0, BUFFER), (4 * MiB, MiB), (9 * MiB, MiB)]
            sink.close()
        finally:
            os.close(fd)
    disk = backing.read_bytes()
    for at, data in pieces:
        assert disk[at:at + MiB] == data
    assert disk[5 * MiB:9 * MiB] == b"\x5a" * (4 * MiB)


def test_a_file_is_read_and_written_through_the_cache(tmp_path):
    """O_DIRECT is for block devices: a file (tmpfs refuses it) gets plain pread/pwrite."""
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(ALIGN * 4))
    fd = os.open(path, os.O_RDWR)
    try:
        assert Direct.open(fd, writable=True) is None
        assert DiskSink(fd, str(path)).direct is None
        assert reading(fd).read(5, 3) == bytes(5)
    finally:
        os.close(fd)


@needs_loop
def test_a_device_refusing_direct_writes_is_written_buffered(tmp_path, monkeypatch):
    """A kernel or driver that takes the O_DIRECT open but refuses the write (EINVAL) gets
    the same bytes through the cache: the image still lands whole."""
    backing = tmp_path / "disk.bin"
    backing.write_bytes(bytes(8 * MiB))
    data = os.urandom(2 * MiB + 100)
    real = os.pwrite
    with loop_device(backing) as dev:
        fd = os.open(dev, os.O_RDWR)
        try:
            sink = DiskSink(fd, dev)
            refusing = sink.direct.dfd

            def pwrite(to: int, buf, at: int) -> int:
                if to == refusing:
                    raise OSError(errno.EINVAL, "Invalid argument")
                return real(to, buf, at)

            monkeypatch.setattr(direct.os, "pwrite", pwrite)
            sink._pwrite(ALIGN, memoryview(data))
            sink.close_direct()
            os.fsync(fd)
        finally:
            os.close(fd)
    assert backing.read_bytes()[ALIGN:ALIGN + len(data)] == data


def test_image_sized_blocks_are_reused_not_faulted_in_again(tmp_path):
    """Every command keeps freed megabyte blocks for reuse (agent.image.heap): chunking
    64 MiB of a disk faults in a fraction of the pages it does with glibc's defaults, which
    give each block back to the kernel after its free."""
    disk = tmp_path / "disk.bin"
    with disk.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB // 2) + bytes(MiB // 2))
    probe = (
        "import resource, sys\n"
        "from agent.image.heap import keep_freed_blocks\n"
        "if sys.argv[1] == 'kept': assert keep_freed_blocks()\n"
        "from agent.image.chunkfile import chunk_image\n"
        "from agent.image.extents import Extent\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "chunk_image(sys.argv[2], sys.argv[3], extents=[Extent(0, 64 << 20)],\n"
        "            disk_size=64 << 20, level=1)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    faults = {how: int(subprocess.run(
        [sys.executable, "-c", probe, how, str(disk), str(tmp_path / f"{how}.chunks")],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120).stdout)
        for how in ("kept", "default")}
    assert faults["kept"] * 2 < faults["default"], faults


@needs_loop
@pytest.mark.netns
@pytest.mark.skipif(shutil.which("udp-sender") is None, reason="Debian's udpcast not installed")
def test_a_raw_disk_from_a_stock_sender_lands_past_the_page_cache(tmp_path):
    """udpcast's own case, a stock udp-sender's raw disk to `herdcast receive -f DEVICE`:
    the device holds every byte, the unaligned end included, and the rest as it was; the
    kernel's cache holds none of it (written buffered, all 2,049 pages would be there)."""
    src = tmp_path / "disk.raw"
    src.write_bytes(os.urandom(8 * MiB + 1001))
    backing = tmp_path / "target.bin"
    backing.write_bytes(b"\xee" * (16 * MiB))
    with loop_device(backing) as dev, open(dev, "rb") as held, NetLab(2, net=246) as lab:
        rlog, slog = tmp_path / "receiver.log", tmp_path / "sender.log"
        receiver = herdcast_receiver(lab.hosts[1], Path(dev), rlog)
        time.sleep(1.0)  # its CONNECT_REQ first
        sender = stock_sender(lab.hosts[0], src, slog, "--min-receivers", "1")
        assert sender.wait(timeout=60) == 0, slog.read_text()
        assert receiver.wait(timeout=30) == 0, rlog.read_text()
        assert cached_pages(dev, 16 * MiB) < 16
        assert held.read(16 * MiB) == src.read_bytes() + b"\xee" * (8 * MiB - 1001)


@needs_loop
def test_a_device_read_as_a_file_gives_every_byte_in_any_read_size(tmp_path):
    """The raw disk a sender streams (DirectFile): read in odd sizes from the start, it is
    the device byte for byte, its end included, and nothing is left in the cache."""
    backing = tmp_path / "disk.bin"
    data = os.urandom(6 * MiB + 512)  # a device ends on a sector, not a page
    backing.write_bytes(data)
    with loop_device(backing) as dev, open(dev, "rb") as held:
        f = direct.DirectFile.open(dev)
        try:
            assert isinstance(f, direct.DirectFile)
            got, size = bytearray(), 1
            while chunk := f.read(size):
                got += chunk
                size = size * 7 % (5 * MiB) + 1  # 1, 8, 57, ... up past BUFFER
        finally:
            f.close()
        assert bytes(got) == data
        assert cached_pages(dev, 6 * MiB) < 16
        assert held.read(1) == data[:1]


@needs_loop
def test_reading_back_sees_the_device_through_a_write_only_descriptor(tmp_path):
    """verify=readback's reader (direct.reading_back): from a descriptor open only for
    writing, a block device is read past the cache and a file through a descriptor of its
    own; both give the bytes written, and closing leaves no descriptor behind."""
    data = os.urandom(MiB + 300)
    backing = tmp_path / "disk.bin"
    backing.write_bytes(bytes(2 * MiB))
    plain = tmp_path / "file.bin"
    with loop_device(backing) as dev:
        for target in (dev, str(plain)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT)
            try:
                os.pwrite(fd, data, 4096)
                os.fsync(fd)
                before = len(os.listdir("/proc/self/fd"))
                reader = direct.reading_back(fd)
                assert isinstance(reader, Direct) == (target == dev)
                assert reader.read(len(data), 4096) == data
                reader.close()
                assert len(os.listdir("/proc/self/fd")) == before
            finally:
                os.close(fd)
