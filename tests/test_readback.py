"""verify=readback: what the disk returns after the flush is compared with what was written."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from agent.image.extents import Extent
from agent.image.stream import encode
from agent.transfer.options import OptionError, parse_receive_args
from agent.transfer.receive.output import Output, OutputError

MiB = 1 << 20


def _output(path: Path, *extra: str) -> Output:
    return Output(parse_receive_args(["--nokbd", "-f", str(path), "--verify", "readback",
                                      *extra]))


def _garble(path: Path, offset: int) -> None:
    """What a failing disk does: the data changes after it was written (here through
    another descriptor, the same page cache a read-back would see if it were not dropped)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_raw_stream_reads_back_identical(tmp_path):
    out = _output(tmp_path / "disk.img")
    data = random.Random(1).randbytes(3 * MiB + 5)
    out.write(memoryview(data))
    out.finish()
    assert (tmp_path / "disk.img").read_bytes() == data


def test_a_raw_stream_garbled_after_writing_fails(tmp_path):
    out = _output(tmp_path / "disk.img")
    out.write(memoryview(random.Random(2).randbytes(2 * MiB)))
    _garble(tmp_path / "disk.img", MiB + 7)
    with pytest.raises(OutputError, match="read back differ"):
        out.finish()


def test_an_unpacked_image_garbled_after_writing_fails(tmp_path):
    src = tmp_path / "src.img"
    src.write_bytes(random.Random(3).randbytes(4 * MiB))
    fd = os.open(src, os.O_RDONLY)
    stream = b"".join(encode(fd, 4 * MiB, [Extent(0, MiB), Extent(2 * MiB, MiB)]))
    os.close(fd)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4 * MiB))
    good = _output(disk, "--unpack")
    good.write(memoryview(stream))
    good.finish()
    bad = _output(disk, "--unpack")
    bad.write(memoryview(stream))
    _garble(disk, 2 * MiB + 100)
    with pytest.raises(OutputError, match="read back differ"):
        bad.finish()


def test_readback_needs_a_file_to_read():
    with pytest.raises(OptionError, match="--verify readback"):
        parse_receive_args(["--verify", "readback"])
    with pytest.raises(OptionError, match="--verify readback"):
        parse_receive_args(["--verify", "readback", "-f", "/tmp/x", "--pipe", "cat"])


def test_chunks_read_back_against_the_manifest(tmp_path):
    """The chunk path's read-back: each chunk's extents read from the disk after the flush
    and hashed against the manifest; a byte garbled after writing names its chunk."""
    from agent.image.chunkfile import ChunkedFile, chunk_image
    from agent.image.chunksink import ChunkSink

    disk = tmp_path / "src.img"
    disk.write_bytes(random.Random(2).randbytes(3 * MiB) + bytes(MiB) + b"end" * 1000)
    size = disk.stat().st_size
    chunk_image(str(disk), str(tmp_path / "img.chunks"), extents=[Extent(0, size)],
                disk_size=size)
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    target = tmp_path / "target.img"
    fd = os.open(target, os.O_RDWR | os.O_CREAT)
    try:
        sink = ChunkSink(fd, str(target), stored.table)
        for chunk in stored.table.chunks:
            sink.put(chunk, stored.decoded(chunk.index))
        sink.blank_space()
        sink.sync()
        hashes, bad = sink.read_back()
        assert bad == [] and hashes == [c.content_sha256 for c in stored.table.chunks]
        _garble(target, 2 * MiB + 7)
        assert sink.read_back()[1] == [2]
    finally:
        os.close(fd)
        stored.close()
