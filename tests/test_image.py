"""Used-block images: maps of real filesystems, the stream format, capture and restore."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_loop

from agent.image.extents import Extent, normalize, subtract, total
from agent.image.filesystems import parse_domain_map
from agent.image.sink import DiskSink
from agent.image.store import read_info
from agent.image.stream import Decoder, StreamError, StreamReader, encode
from agent.image.usedmap import used_map
from builder.lab.fsdisk import Part, file_digests, fsck, make_disk

MiB = 1 << 20
PARTS = [Part("vfat", 33, {"bootx64.efi": 300_000}), Part("ext4", 64, {"a": 6_000_000}),
         Part("swap", 16), Part("ntfs", 32, {"c.bin": 3_000_000}),
         Part("xfs", 300, {"d": 2_000_000}), Part("btrfs", 128, {"e": 1_500_000}),
         Part("exfat", 16, {"f": 1_000_000})]


def test_extent_algebra():
    assert normalize([Extent(10, 5), Extent(0, 10), Extent(20, 0), Extent(12, 1)]) == \
        [Extent(0, 15)]
    assert subtract(Extent(0, 100), [Extent(10, 10), Extent(50, 60)]) == \
        [Extent(0, 10), Extent(20, 30)]
    assert total([Extent(0, 3), Extent(9, 4)]) == 7


def test_domain_map_takes_used_blocks_only():
    text = ("# Domain logfile\n0x04000000     ?\n#      pos        size  status\n"
            "0x00000000  0x00448400  +\n0x00448400  0x003B8000  ?\n0x00800400  0x00040800  +\n")
    assert parse_domain_map(text) == [Extent(0, 0x448400), Extent(0x800400, 0x40800)]


def _roundtrip(data: bytes, extents: list[Extent]) -> tuple[bytes, bytes]:
    """(stream, what a sink makes of it on a file of junk of the same size)."""
    src = Path(f"/tmp/herdcast-img-src-{os.getpid()}")
    dst = Path(f"/tmp/herdcast-img-dst-{os.getpid()}")
    try:
        src.write_bytes(data)
        dst.write_bytes(b"\xee" * len(data))
        fd = os.open(src, os.O_RDONLY)
        stream = b"".join(encode(fd, len(data), extents))
        os.close(fd)
        out = os.open(dst, os.O_RDWR)
        sink = DiskSink(out, str(dst), "zero")
        for i in range(0, len(stream), 1000):  # in pieces that split headers
            sink.write(stream[i:i + 1000])
        sink.close()
        os.close(out)
        return stream, dst.read_bytes()
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


def test_stream_carries_used_extents_and_drops_zero_runs():
    rng = random.Random(1)
    data = bytearray(rng.randbytes(3 * MiB))
    data[MiB:MiB + 64 * 1024] = bytes(64 * 1024)  # a zero run inside a used extent
    extents = [Extent(0, 2 * MiB), Extent(2 * MiB + 4096, 8192)]
    stream, out = _roundtrip(bytes(data), extents)
    expect = bytearray(3 * MiB)  # blank=zero: what no extent covers reads back as zeros
    expect[:2 * MiB] = data[:2 * MiB]
    expect[2 * MiB + 4096:2 * MiB + 4096 + 8192] = data[2 * MiB + 4096:2 * MiB + 4096 + 8192]
    assert out == bytes(expect)
    assert len(stream) < 2 * MiB + 8192 - 60 * 1024  # the zero run did not travel


def test_decoder_refuses_reordered_truncated_or_forged_streams():
    data = random.Random(2).randbytes(64 * 1024)
    src = Path(f"/tmp/herdcast-img-fx-{os.getpid()}")
    src.write_bytes(data)
    fd = os.open(src, os.O_RDONLY)
    pieces = list(encode(fd, len(data), [Extent(0, 8192), Extent(32768, 4096)]))
    os.close(fd)
    src.unlink()
    nothing = (lambda *a: None, lambda *a: None, lambda *a: None)
    good = b"".join(pieces)
    d = Decoder(*nothing)
    d.feed(good)
    d.finish()
    truncated = Decoder(*nothing)
    truncated.feed(good[:-5])
    with pytest.raises(StreamError, match="truncated"):
        truncated.finish()
    header, data = pieces[0], [p for p in pieces[1:] if len(p) != 24]
    records = [p for p in pieces[1:-2] if len(p) == 24]
    swapped = header + records[1] + data[1] + records[0] + data[0] + b"".join(pieces[-2:])
    with pytest.raises(StreamError, match="out of order"):
        Decoder(*nothing).feed(swapped)
    forged = bytearray(good)
    forged[-32:-24] = (99).to_bytes(8, "big")  # trailer's record count
    with pytest.raises(StreamError, match="trailer"):
        Decoder(*nothing).feed(bytes(forged))


def test_stream_reader_reads_like_a_file():
    reader = StreamReader(iter([b"abc", b"", b"defg"]))
    assert reader.read(2) == b"ab" and reader.read(10) == b"c" and reader.read() == b"defg"


@needs_loop
def test_real_filesystems_capture_restore(tmp_path: Path):
    """A GPT disk with every filesystem herdcast maps: the image holds about the data, the
    restored disk's filesystems pass fsck, every file matches, used extents byte-identical."""
    src, img, dst = tmp_path / "src.img", tmp_path / "lab.hcimg", tmp_path / "dst.img"
    digests = make_disk(src, 640, PARTS)
    umap = used_map(str(src))
    kinds = {fsmap.fs: fsmap.how for _, fsmap in umap.partitions}
    assert kinds == {"vfat": "partclone.fat", "ext": "partclone.extfs", "swap": "swap header",
                     "ntfs": "partclone.ntfs", "xfs": "partclone.xfs",
                     "btrfs": "partclone.btrfs", "exfat": "partclone.exfat"}
    assert umap.used_bytes < 160 * MiB  # of a 640 MiB disk
    herdcast = [sys.executable, "-m", "agent", "image"]
    subprocess.run([*herdcast, "capture", str(src), str(img)], check=True, timeout=300,
                   capture_output=True)
    info = read_info(str(img))
    assert info.disk_size == 640 * MiB and info.codec == "zstd"
    assert info.data_bytes <= umap.used_bytes
    junk = random.Random(3).randbytes(MiB)
    with open(dst, "wb") as f:  # a receiver's disk before imaging: junk everywhere
        for i in range(640):
            f.write(i.to_bytes(4, "big") + junk[4:])
    subprocess.run([*herdcast, "restore", str(img), str(dst)], check=True, timeout=300,
                   capture_output=True)
    with open(src, "rb") as a, open(dst, "rb") as b:  # before any mount: xfs and btrfs
        for e in umap.extents:                          # write their superblocks even ro
            a.seek(e.offset)
            b.seek(e.offset)
            assert hashlib.sha256(a.read(e.length)).digest() == \
                hashlib.sha256(b.read(e.length)).digest(), e
    assert fsck(dst, PARTS) == []
    assert file_digests(dst, PARTS) == digests


def test_space_outside_partitions_is_sent_only_where_boot_code_and_gpt_live():
    """Before the first partition (MBR, GPT, a boot loader's core) and the backup GPT in the
    disk's last MiB are sent; unallocated space between or after partitions is not, as
    partclone-based tools do."""
    from agent.image.partitions import Partition
    from agent.image.usedmap import outside_partitions

    parts = [Partition(1, Extent(MiB, 10 * MiB), "gpt:x"),
             Partition(2, Extent(20 * MiB, 10 * MiB), "gpt:y")]
    assert outside_partitions(100 * MiB, "gpt", parts) == [Extent(0, MiB),
                                                           Extent(99 * MiB, MiB)]
    assert outside_partitions(100 * MiB, "mbr", parts) == [Extent(0, MiB)]


@needs_loop
def test_a_disk_nothing_could_be_mapped_on_says_so_and_is_sent_whole(tmp_path):
    from agent.image.source import inspect_source

    src = tmp_path / "raw.img"
    make_disk(src, 8, [Part("raw", 6)])
    source = inspect_source(str(src))
    assert source.kind == "raw"
    lines = source.describe()
    assert lines[0].startswith("partition table: gpt") and "sending every byte" in lines[-1]


def test_image_info_on_a_missing_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agent", "image", "info",
                           str(tmp_path / "none.img")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr.lower()
